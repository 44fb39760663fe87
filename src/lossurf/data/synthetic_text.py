"""A small, learnable language-model corpus sampled from a seeded probabilistic grammar.

The grammar has number agreement, which gives an LSTM something beyond bigrams to learn:

    S      -> NP[n] VP[n]                       n = singular (0.6) | plural (0.4)
    NP[n]  -> Det[n] (Adj (Adj)) Noun[n] (PP)   one adjective p 0.3, two p 0.1, PP p 0.2
    VP[n]  -> Vi[n] | Vt[n] NP[m]               0.35 / 0.65, object number m drawn afresh
              (Adv) (PP)                        p 0.25 and 0.2
    PP     -> Prep NP[m]                        nesting stops at depth 2

Words inside a category follow Zipf weights 1/rank, so frequent words dominate as in real text.
Each sentence ends with ``<eos>`` and the splits go through the same BPTT batching as PTB. The
vocabulary is the whole lexicon (``<eos>`` first, then the grammar's word lists in order), so
every token of every split is in it and its size does not depend on the sample. Sampling uses
Python's ``random.Random`` seeded by a string, whose stream is stable across Python versions.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import random

import torch

from lossurf.config import DataSpec
from lossurf.data.base import Dataset
from lossurf.data.text import EOS, encode, language_model_dataset
from lossurf.errors import LossurfError

__all__ = ["OPTIONS", "Grammar", "load_synthetic_text", "generate_sentences"]

#: Keys of ``spec.options`` this loader understands.
OPTIONS = frozenset({"num_sentences", "test_sentences", "vocab_size", "seed"})

DEFAULT_NUM_SENTENCES = 3000
DEFAULT_VOCAB_SIZE = 100

_DET_SG = ["the", "a", "every", "this", "that", "one"]
_DET_PL = ["the", "some", "these", "those", "many", "two", "all"]
_PREPOSITIONS = ["near", "with", "behind", "under", "beside", "above", "across", "inside"]
_ADVERBS = ["slowly", "often", "quietly", "again", "quickly", "never", "today", "together"]
_NOUNS = [
    ("dog", "dogs"), ("cat", "cats"), ("child", "children"), ("teacher", "teachers"),
    ("bird", "birds"), ("farmer", "farmers"), ("king", "kings"), ("woman", "women"),
    ("man", "men"), ("student", "students"), ("horse", "horses"), ("doctor", "doctors"),
    ("friend", "friends"), ("soldier", "soldiers"), ("baker", "bakers"), ("queen", "queens"),
    ("river", "rivers"), ("city", "cities"), ("house", "houses"), ("garden", "gardens"),
    ("book", "books"), ("song", "songs"), ("tree", "trees"), ("ship", "ships"),
    ("village", "villages"), ("mountain", "mountains"), ("letter", "letters"),
    ("story", "stories"), ("painter", "painters"), ("stranger", "strangers"),
    ("wolf", "wolves"), ("fox", "foxes"), ("sailor", "sailors"), ("road", "roads"),
    ("lamp", "lamps"), ("window", "windows"), ("bridge", "bridges"), ("forest", "forests"),
]
_INTRANSITIVE = [
    ("sleeps", "sleep"), ("runs", "run"), ("laughs", "laugh"), ("sings", "sing"),
    ("waits", "wait"), ("falls", "fall"), ("smiles", "smile"), ("arrives", "arrive"),
    ("dances", "dance"), ("works", "work"), ("rests", "rest"), ("wanders", "wander"),
]
_TRANSITIVE = [
    ("sees", "see"), ("likes", "like"), ("finds", "find"), ("follows", "follow"),
    ("knows", "know"), ("helps", "help"), ("watches", "watch"), ("carries", "carry"),
    ("reads", "read"), ("builds", "build"), ("visits", "visit"), ("paints", "paint"),
    ("remembers", "remember"), ("chases", "chase"),
]
_ADJECTIVES = [
    "old", "young", "small", "big", "red", "green", "quiet", "happy", "tall", "dark",
    "bright", "strange", "little", "brave", "gentle", "famous",
]


@functools.cache
def _zipf(n: int) -> list[float]:
    """Cumulative Zipf weights 1, 1 + 1/2, ... for ``n`` ranks."""
    return list(itertools.accumulate(1.0 / (rank + 1) for rank in range(n)))


class Grammar:
    """The lexicon (scaled to about ``vocab_size`` words) and a sampler of sentences.

    Closed classes (determiners, prepositions, adverbs) are always complete; nouns, verbs and
    adjectives keep the same share of their full lists, at least two entries each.
    """

    def __init__(self, vocab_size: int = DEFAULT_VOCAB_SIZE) -> None:
        closed = len(set(_DET_SG + _DET_PL)) + len(_PREPOSITIONS) + len(_ADVERBS) + 1  # + <eos>
        open_full = 2 * (len(_NOUNS) + len(_INTRANSITIVE) + len(_TRANSITIVE)) + len(_ADJECTIVES)
        share = (vocab_size - closed) / open_full

        def keep(items: list) -> list:
            return items[: max(2, round(share * len(items)))]

        self.nouns, self.adjectives = keep(_NOUNS), keep(_ADJECTIVES)
        self.intransitive, self.transitive = keep(_INTRANSITIVE), keep(_TRANSITIVE)
        words = [EOS, *_DET_SG, *_DET_PL, *(w for pair in self.nouns for w in pair)]
        words += [w for pair in self.intransitive + self.transitive for w in pair]
        words += [*self.adjectives, *_PREPOSITIONS, *_ADVERBS]
        self.vocab = list(dict.fromkeys(words))  # drop the repeated "the", keep order

    @staticmethod
    def limits() -> tuple[int, int]:
        """Smallest and largest vocabulary size the lexicon supports."""
        closed = len(set(_DET_SG + _DET_PL)) + len(_PREPOSITIONS) + len(_ADVERBS) + 1
        full = 2 * (len(_NOUNS) + len(_INTRANSITIVE) + len(_TRANSITIVE)) + len(_ADJECTIVES)
        return closed + 2 * 2 * 3 + 2, closed + full

    def sentence(self, rng: random.Random) -> list[str]:
        """One sentence (without ``<eos>``)."""
        plural = rng.random() < 0.4
        return self._noun_phrase(rng, plural, 0) + self._verb_phrase(rng, plural)

    @staticmethod
    def _pick(rng: random.Random, items: list):
        cumulative = _zipf(len(items))
        return items[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]

    def _noun_phrase(self, rng: random.Random, plural: bool, depth: int) -> list[str]:
        words = [self._pick(rng, _DET_PL if plural else _DET_SG)]
        if rng.random() < 0.3:
            words.append(self._pick(rng, self.adjectives))
            if rng.random() < 1 / 3:  # a second adjective: 0.1 overall
                words.append(self._pick(rng, self.adjectives))
        words.append(self._pick(rng, self.nouns)[int(plural)])
        if depth < 2 and rng.random() < 0.2:
            words += self._prep_phrase(rng, depth + 1)
        return words

    def _verb_phrase(self, rng: random.Random, plural: bool) -> list[str]:
        if rng.random() < 0.35:
            words = [self._pick(rng, self.intransitive)[int(plural)]]
        else:
            words = [self._pick(rng, self.transitive)[int(plural)]]
            words += self._noun_phrase(rng, rng.random() < 0.4, 1)
        if rng.random() < 0.25:
            words.append(self._pick(rng, _ADVERBS))
        if rng.random() < 0.2:
            words += self._prep_phrase(rng, 1)
        return words

    def _prep_phrase(self, rng: random.Random, depth: int) -> list[str]:
        return [self._pick(rng, _PREPOSITIONS), *self._noun_phrase(rng, rng.random() < 0.4, depth)]


def generate_sentences(grammar: Grammar, count: int, seed: int, split: str) -> list[str]:
    """``count`` sentences of ``split`` as one token list, each sentence ending in ``<eos>``.

    Each split has its own stream (seeded by the string ``"{seed}:{split}"``), so the training
    text does not change when the test size does.
    """
    rng = random.Random(f"lossurf-synthetic-text:{seed}:{split}")
    tokens: list[str] = []
    for _ in range(count):
        tokens += grammar.sentence(rng)
        tokens.append(EOS)
    return tokens


def _int_option(spec: DataSpec, key: str, default: int, low: int, high: int) -> int:
    value = spec.options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LossurfError(
            f"synthetic-text option {key}={value!r} is invalid; give an integer in "
            f"[{low}, {high}] (default {default})"
        )
    return value


def load_synthetic_text(spec: DataSpec) -> Dataset:
    """Generate the grammar corpus and batch it like PTB.

    Args:
        spec: ``bptt``, ``max_train``/``max_test``; options ``num_sentences`` (training
            sentences, default 3000), ``test_sentences`` (each of valid and test, default
            ``num_sentences // 6``), ``vocab_size`` (default 100), ``seed`` (default
            ``split_seed``).

    Returns:
        A ``language_model`` :class:`Dataset`; validation in ``meta["valid_x"]``/``["valid_y"]``.
    """
    low, high = Grammar.limits()
    vocab_size = _int_option(spec, "vocab_size", DEFAULT_VOCAB_SIZE, low, high)
    num_sentences = _int_option(spec, "num_sentences", DEFAULT_NUM_SENTENCES, 1, 10**7)
    test_sentences = _int_option(
        spec, "test_sentences", max(1, num_sentences // 6), 1, 10**7
    )
    seed = _int_option(spec, "seed", spec.split_seed, -(2**63), 2**63 - 1)
    grammar = Grammar(vocab_size)
    counts = {"train": num_sentences, "valid": test_sentences, "test": test_sentences}
    streams: dict[str, torch.Tensor] = {
        split: encode(generate_sentences(grammar, n, seed, split), grammar.vocab, split)
        for split, n in counts.items()
    }
    meta = {"seed": seed, "sentences": counts}
    return language_model_dataset("synthetic-text", streams, grammar.vocab, spec, meta)
