"""Training at bare-loop speed: device-resident data, epoch-wide augmentation, losses read once
per epoch, timing columns, and the training precision (issue 10, items 2 and 3).

References are independent: the per-batch augmentation the loop used before (one call of
``random_crop_flip`` per batch), a naive step loop that reads every loss, and runs of the same
config trained without interruption.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

import lossurf
from lossurf import models, optim
from lossurf.config import DataSpec, ModelSpec, parse_config
from lossurf.data import load
from lossurf.data import placement
from lossurf.data.cifar10 import CropFlip, random_crop_flip
from lossurf.data.placement import PlacedData, place
from lossurf.engine import train_experiment
from lossurf.errors import LossurfError
from lossurf.runs import ExperimentLayout, MetricsLog, metrics_columns, read_json
from lossurf.train import derive_seed, epoch_batches, epoch_order, evaluate_split, train_epoch
from tests.test_data_cifar10 import _make_images, _write_bin

CPU = torch.device("cpu")
TIMINGS = ["wall_time", "eval_time", "checkpoint_time"]


class Kill(Exception):
    pass


def kill_after(run: str, epoch: int):
    def report(name, done, epochs, row):
        if name == run and done == epoch:
            raise Kill

    return report


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cifar")
    _write_bin(folder, _make_images())  # 100 training, 20 test images in the binary format
    return folder


def cifar_config(data_dir: Path, **overrides):
    raw = {
        "name": "cifar-shaped",
        "data": {"name": "cifar10", "data_dir": str(data_dir), "augment": {"flip": True, "crop": True}},
        "model": {"name": "cnn-small", "options": {"batch_norm": True}},
        "epochs": 3, "batch_size": 16, "eval_subset": 40, "checkpoint_every": 2, "threads": 1,
        "runs": [{"optimizer": "sgdm", "lr": 0.05},
                 {"optimizer": "rk2-heun", "lr": 0.1, "options": {"minibatch": "next"}, "name": "heun-next"}],
    }
    raw.update(overrides)
    return parse_config(raw)


def digits_config(**overrides):
    raw = {
        "name": "tiny", "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "mlp"}, "epochs": 2, "batch_size": 32, "eval_subset": 64,
        "threads": 1, "runs": [{"optimizer": "sgd", "lr": 0.1}],
    }
    raw.update(overrides)
    return parse_config(raw)


def digest(tensors) -> str:
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def same_weights(a: Path, b: Path, run: str) -> bool:
    wa = lossurf.load_experiment(a).weights(run, "final")
    wb = lossurf.load_experiment(b).weights(run, "final")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def metrics_without_timings(root: Path, run: str):
    return lossurf.load_experiment(root).metrics(run).drop(columns=TIMINGS)


# --- augmentation drawn per epoch --------------------------------------------------------------


@pytest.mark.parametrize(("crop", "flip"), [(True, True), (True, False), (False, True)])
def test_epoch_draw_gives_the_per_batch_augmentation(crop, flip):
    # The reference: what the loop did before, one random_crop_flip call per batch on one
    # generator. Drawn for the whole epoch at once, the batches are bitwise those.
    x = torch.randn(100, 3, 32, 32)
    sizes = [32, 32, 32, 4]
    generator = torch.Generator().manual_seed(5)
    expected, start = [], 0
    for size in sizes:
        expected.append(random_crop_flip(x[start:start + size], generator, crop=crop, flip=flip))
        start += size
    augment = CropFlip(crop=crop, flip=flip)
    params = augment.draw(sizes, torch.Generator().manual_seed(5))
    assert params.shape == (100, 3) and params.dtype == torch.int16
    got = [augment.apply(x[s:s + n], params[s:s + n]) for s, n in zip((0, 32, 64, 96), sizes)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert not torch.equal(torch.cat(got), x)  # it did augment


def _cifar(cifar_dir: Path, augment=None):
    return load(DataSpec(name="cifar10", data_dir=cifar_dir, augment=augment or {"flip": True, "crop": True}))


def test_batches_depend_only_on_seed_and_epoch(cifar_dir):
    data = _cifar(cifar_dir)
    order = epoch_order(3, 2, len(data.train_x))
    seed = derive_seed("augment", 3, 2)
    first = [digest(b) for b in epoch_batches(data, order, 16, augment_seed=seed, device=CPU)]
    # Another epoch's batches in between (a run resumed elsewhere has drawn nothing before).
    list(epoch_batches(data, epoch_order(3, 1, len(data.train_x)), 16,
                       augment_seed=derive_seed("augment", 3, 1), device=CPU))
    again = [digest(b) for b in epoch_batches(data, order, 16, augment_seed=seed, device=CPU)]
    assert first == again and len(first) == math.ceil(100 / 16)
    other = [digest(b) for b in epoch_batches(data, order, 16, augment_seed=seed + 1, device=CPU)]
    assert other != first


def test_resident_and_host_batches_are_identical(cifar_dir, monkeypatch):
    # The host path gathers each batch and copies it; the resident one gathers on the device.
    # On the CPU the two meet: the batches must be bitwise equal, augmented or not.
    gathered = []
    real = placement.gather_batch
    monkeypatch.setattr("lossurf.train.gather_batch",
                        lambda *a: gathered.append(1) or real(*a))
    for augment in ({"flip": True, "crop": True}, {"flip": True, "crop": False}):
        data = _cifar(cifar_dir, augment)
        resident = place(data, CPU)
        assert resident.train_resident
        host = PlacedData(data.train_x, data.train_y, data.test_x, data.test_y, device=CPU,
                          train_resident=False, test_resident=False)
        order = epoch_order(0, 1, len(data.train_x))
        kwargs = dict(augment_seed=derive_seed("augment", 0, 1), device=CPU)
        a = list(epoch_batches(data, order, 16, placed=resident, **kwargs))
        before = len(gathered)
        b = list(epoch_batches(data, order, 16, placed=host, **kwargs))
        assert len(gathered) - before == 2 * len(b)  # x and y of every batch took the host path
        assert len(a) == len(b) == 7
        assert all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b))


def test_a_user_augment_callable_still_gets_host_batches_and_the_generator(cifar_dir):
    seen = []

    def augment(x, generator):
        seen.append((x.device.type, type(generator)))
        return x + torch.rand(x.shape, generator=generator)

    data = dataclasses.replace(_cifar(cifar_dir), augment=augment)
    order = epoch_order(0, 1, len(data.train_x))
    batches = list(epoch_batches(data, order, 32, augment_seed=9, device=CPU))
    # Reference: the callable applied batch by batch on one generator seeded the same way.
    generator = torch.Generator().manual_seed(9)
    expected = [data.train_x[order[s:s + 32]] + torch.rand((min(32, 100 - s), 3, 32, 32), generator=generator)
                for s in range(0, 100, 32)]
    assert all(torch.equal(x, e) for (x, _), e in zip(batches, expected))
    assert seen and all(s == ("cpu", torch.Generator) for s in seen)


def test_data_is_placed_once_per_dataset_and_device(cifar_dir):
    data = _cifar(cifar_dir)
    assert place(data, "cpu") is place(data, CPU)  # cached
    other = _cifar(cifar_dir)
    assert place(other, CPU) is not place(data, CPU)
    # On the CPU nothing is copied.
    assert place(data, CPU).train_x.data_ptr() == data.train_x.data_ptr()


def test_resident_only_under_a_quarter_of_free_memory(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4000, 8000))
    cuda = torch.device("cuda", 0)
    assert placement.fits_on_device(999, cuda)
    assert not placement.fits_on_device(1000, cuda)
    assert placement.fits_on_device(10**12, CPU)


# --- losses read once per epoch; divergence ----------------------------------------------------


def test_divergence_found_at_the_first_non_finite_step():
    # A linear model on large inputs with a huge learning rate: the logits overflow after a
    # step (the loss is inf, and later finite again: the first one counts). The reference is
    # a naive loop that reads every step's loss.
    torch.manual_seed(0)
    x = torch.randn(64, 8) * 1e4
    y = torch.randint(0, 3, (64,))
    from lossurf.data.base import Dataset

    data = Dataset("toy", "classification", x, y, x[:8], y[:8], num_classes=3)
    order = torch.arange(64)

    def fresh():
        torch.manual_seed(1)
        model = torch.nn.Linear(8, 3)
        return model, optim.build("sgd", list(model.parameters()), lr=1e30)

    model, opt = fresh()
    naive, first_bad = [], None
    for step, start in enumerate(range(0, 64, 4)):
        opt.zero_grad()
        loss = F.cross_entropy(model(x[start:start + 4]), y[start:start + 4])
        loss.backward()
        opt.step()
        naive.append(loss.item())
        if first_bad is None and not math.isfinite(naive[-1]):
            first_bad = step
    assert first_bad is not None and first_bad > 0
    model, opt = fresh()
    stats = train_epoch(model, opt, data, order, 4, augment_seed=0, device=CPU)
    assert stats.diverged
    assert stats.gradient_evaluations == first_bad + 1
    assert not math.isfinite(stats.mean_batch_loss)


def test_mean_batch_loss_is_the_mean_of_every_step():
    torch.manual_seed(0)
    x, y = torch.randn(50, 8), torch.randint(0, 3, (50,))
    from lossurf.data.base import Dataset

    data = Dataset("toy", "classification", x, y, x[:8], y[:8], num_classes=3)
    torch.manual_seed(1)
    model = torch.nn.Linear(8, 3)
    reference = torch.nn.Linear(8, 3)
    reference.load_state_dict(model.state_dict())
    losses = []
    opt = optim.build("sgd", list(reference.parameters()), lr=0.1)
    for start in range(0, 50, 16):
        opt.zero_grad()
        loss = F.cross_entropy(reference(x[start:start + 16]), y[start:start + 16])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    seen = []
    stats = train_epoch(model, optim.build("sgd", list(model.parameters()), lr=0.1), data,
                        torch.arange(50), 16, augment_seed=0, device=CPU, on_batch=seen.append)
    assert not stats.diverged and stats.gradient_evaluations == 4
    assert seen == losses and stats.mean_batch_loss == sum(losses) / 4
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_divergence_is_still_recorded_by_the_engine(tmp_path):
    config = digits_config(runs=[{"optimizer": "sgd", "lr": 1000, "name": "wild"}],
                           model={"name": "mlp", "init": {"scheme": "normal", "std": 1000}})
    status = train_experiment(config, tmp_path)["wild"]
    assert status["status"] == "diverged" and status["diverged_epoch"] == 1
    table = lossurf.load_experiment(tmp_path).metrics("wild")
    assert list(table["epoch"]) == [0, 1]
    assert math.isnan(table["train_loss"].iloc[1]) and not math.isfinite(table["batch_loss"].iloc[1])
    assert 1 <= table["gradient_evaluations"].iloc[1] <= 4  # up to the diverging step


# --- resume of an augmented CIFAR-shaped run ----------------------------------------------------


def test_cifar_kill_and_resume_is_bitwise_a_clean_run(cifar_dir, tmp_path, monkeypatch):
    seen: dict[str, list[list[str]]] = {"clean": [], "resumed": []}
    label = ["clean"]
    real = epoch_batches

    def recording(*args, **kwargs):
        batches = []
        seen[label[0]].append(batches)
        for batch in real(*args, **kwargs):
            batches.append(digest(batch))
            yield batch

    monkeypatch.setattr("lossurf.train.epoch_batches", recording)
    config = cifar_config(cifar_dir)
    train_experiment(config, tmp_path / "clean")
    label[0] = "resumed"
    with pytest.raises(Kill):
        train_experiment(config, tmp_path / "killed", report=kill_after("sgdm", 1))
    placement._CACHE.clear()  # as in a new process
    statuses = train_experiment(config, tmp_path / "killed")
    assert all(s["status"] == "finished" for s in statuses.values())
    # Each saw 6 epochs (3 per run), the killed one epoch 1 of sgdm before the kill and
    # epochs 2 and 3 after the resume: every epoch's batches are those of the clean run.
    assert len(seen["clean"]) == 6 and seen["resumed"] == seen["clean"]
    # Both runs of the seed see the same batches (the protocol), each epoch its own.
    assert seen["clean"][:3] == seen["clean"][3:]
    assert len({batch for epoch in seen["clean"] for batch in epoch}) == 3 * 7
    for run in ("sgdm", "heun-next"):
        assert same_weights(tmp_path / "clean", tmp_path / "killed", run)
        assert metrics_without_timings(tmp_path / "clean", run).equals(
            metrics_without_timings(tmp_path / "killed", run))


# --- metrics columns ----------------------------------------------------------------------------


def test_timing_and_precision_columns(tmp_path):
    train_experiment(digits_config(), tmp_path)
    table = lossurf.load_experiment(tmp_path).metrics("sgd")
    assert list(table.columns) == metrics_columns()
    for column in TIMINGS:
        assert (table[column] >= 0).all() and table[column].dtype.kind == "f"
    assert table["wall_time"].is_monotonic_increasing  # cumulative training-step time
    assert table["checkpoint_time"].iloc[0] == 0  # epoch 0 writes no checkpoint
    assert list(table["precision"]) == ["tf32"] * 3
    assert read_json(ExperimentLayout(tmp_path).run_info("sgd"))["precision"] == "tf32"


def test_a_metrics_file_without_the_new_columns_still_loads(tmp_path):
    train_experiment(digits_config(), tmp_path)
    layout = ExperimentLayout(tmp_path)
    log = MetricsLog.read(layout.metrics("sgd"))
    legacy = metrics_columns(legacy=True)
    old = MetricsLog(layout.metrics("sgd"), legacy, [{c: r[c] for c in legacy} for r in log.rows])
    old.write()
    status = read_json(layout.status("sgd"))
    from lossurf.runs import write_json

    write_json(layout.status("sgd"), {**status, "metrics_sha256": old.sha256})
    table = lossurf.load_experiment(tmp_path).metrics("sgd")
    assert list(table.columns) == legacy and len(table) == 3
    assert table["train_loss"].tolist() == [r["train_loss"] for r in log.rows]


# --- precision ----------------------------------------------------------------------------------


def test_fp32_and_tf32_are_bitwise_equal_on_cpu(tmp_path):
    train_experiment(digits_config(precision="fp32"), tmp_path / "fp32")
    train_experiment(digits_config(), tmp_path / "tf32")
    assert same_weights(tmp_path / "fp32", tmp_path / "tf32", "sgd")
    a = metrics_without_timings(tmp_path / "fp32", "sgd")
    b = metrics_without_timings(tmp_path / "tf32", "sgd")
    assert list(a["precision"]) == ["fp32"] * 3
    assert a.drop(columns="precision").equals(b.drop(columns="precision"))


def test_bf16_reaches_training_and_evaluation_forwards():
    seen = []

    class Recording(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(8, 3)

        def forward(self, x):
            seen.append((self.training, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
            return self.linear(x)

    from lossurf.data.base import Dataset

    x, y = torch.randn(32, 8), torch.randint(0, 3, (32,))
    data = Dataset("toy", "classification", x, y, x, y, num_classes=3)
    model = Recording()
    opt = optim.build("rk2-heun", list(model.parameters()), lr=0.1)
    train_epoch(model, opt, data, torch.arange(32), 16, augment_seed=0, device=CPU, precision="bf16")
    evaluate_split(model, x, y, batch_size=16, device=CPU, precision="bf16")
    assert seen == [(True, True, torch.bfloat16)] * 4 + [(False, True, torch.bfloat16)] * 2
    seen.clear()
    train_epoch(model, opt, data, torch.arange(32), 16, augment_seed=0, device=CPU, precision="tf32")
    assert [enabled for _, enabled, _ in seen] == [False] * 4
    assert not torch.is_autocast_enabled("cpu")  # nothing leaks out


def test_bf16_runs_differ_from_fp32_by_a_bf16_sized_amount(tmp_path):
    train_experiment(digits_config(epochs=1), tmp_path / "fp32")
    train_experiment(digits_config(epochs=1, precision="bf16"), tmp_path / "bf16")
    a = lossurf.load_experiment(tmp_path / "fp32").metrics("sgd")
    b = lossurf.load_experiment(tmp_path / "bf16").metrics("sgd")
    assert list(b["precision"]) == ["bf16"] * 2
    for column in ("train_loss", "test_loss", "batch_loss"):
        rel = abs(b[column].iloc[-1] - a[column].iloc[-1]) / abs(a[column].iloc[-1])
        assert 1e-6 < rel < 5e-2, (column, rel)  # bf16 keeps 8 bits of mantissa: ~4e-3


def test_a_directory_written_before_precision_existed_resumes(tmp_path):
    config = digits_config(epochs=3)
    train_experiment(config, tmp_path / "clean")
    out = tmp_path / "old"
    with pytest.raises(Kill):
        train_experiment(config, out, report=kill_after("sgd", 1))
    layout = ExperimentLayout(out)
    path = layout.config
    raw = yaml.safe_load(path.read_text())
    del raw["precision"]  # as written before the field existed
    old_text = yaml.safe_dump(raw, sort_keys=False)
    path.write_text(old_text)
    # Its metrics rows (in the resume state and metrics.csv) lack the new columns too.
    legacy = metrics_columns(legacy=True)
    state = torch.load(layout.resume_state("sgd"), weights_only=True)
    state["rows"] = [{c: r[c] for c in legacy} for r in state["rows"]]
    torch.save(state, layout.resume_state("sgd"))
    MetricsLog(layout.metrics("sgd"), legacy, state["rows"]).write()
    statuses = train_experiment(config, out)
    assert statuses["sgd"]["status"] == "finished"
    assert path.read_text() == old_text  # left as it was
    assert same_weights(tmp_path / "clean", out, "sgd")
    table = lossurf.load_experiment(out).metrics("sgd")
    assert list(table["precision"]) == ["", "", "tf32", "tf32"]  # rows before the resume: unknown
    assert table["eval_time"].isna().tolist() == [True, True, False, False]
    assert table.drop(columns=[*TIMINGS, "precision"]).equals(
        metrics_without_timings(tmp_path / "clean", "sgd").drop(columns="precision"))
    # Another precision is another experiment.
    with pytest.raises(LossurfError, match="already holds a different experiment"):
        train_experiment(digits_config(epochs=3, precision="bf16"), out)


def test_an_unknown_precision_names_the_field_and_the_choices():
    with pytest.raises(LossurfError, match=r"precision: unknown precision 'fp16'; use one of: fp32, tf32, bf16"):
        digits_config(precision="fp16")


# --- on a GPU -----------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_batches_equal_cpu_batches_and_steps_do_not_synchronise(cifar_dir):
    cuda = torch.device("cuda")
    data = _cifar(cifar_dir)
    placed = place(data, cuda)
    assert placed.train_resident and placed.train_x.is_cuda
    order = epoch_order(0, 1, len(data.train_x))
    kwargs = dict(augment_seed=derive_seed("augment", 0, 1))
    on_cpu = list(epoch_batches(data, order, 16, device=CPU, **kwargs))
    on_gpu = list(epoch_batches(data, order, 16, device=cuda, **kwargs))
    assert all(torch.equal(a.cpu(), b) and torch.equal(ya.cpu(), yb)
               for (a, ya), (b, yb) in zip(on_gpu, on_cpu))

    def synchronisations(n: int) -> int:
        spec = ModelSpec(name="cnn-small", options=models.resolve_options("cnn-small", data.model_options()))
        model = models.build(spec, seed=0).to(cuda)
        opt = optim.build("sgdm", list(model.parameters()), lr=0.01)
        order = torch.arange(n) % len(data.train_x)
        with pytest.warns(UserWarning) as record:
            torch.cuda.set_sync_debug_mode("warn")
            try:
                train_epoch(model, opt, data, order, 16, augment_seed=1, device=cuda)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return sum("synchroniz" in str(w.message) for w in record)

    synchronisations(32)  # warm-up (cuDNN autotuning, allocator)
    assert synchronisations(32) == synchronisations(320)  # per epoch, not per step
