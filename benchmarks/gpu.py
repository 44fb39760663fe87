"""One benchmark for a GPU: surfaces, a training epoch, runs at once, and the cifar10 projection.

In one process (plus the worker processes of the concurrency part), within ``--budget``
seconds (default 290), it prints:

1. **Rates**: the card's float32 (TF32 off), TF32 and bfloat16 matrix-product rates.
2. **Surfaces** on the workloads of ``benchmarks/surface.py`` (W1 small BN CNN on digits, W2
   VGG-BN w=0.5 on 2,048 CIFAR-shaped inputs, W3 MLP on 10,000 inputs), planes of 144-256
   points, each call a whole ``lossurf.surface.plane`` as a user makes it (fresh evaluator,
   planning and compilation included), rounds interleaved, medians: lossurf's default (and the
   strategy it chose), the loop, vmap with K=32, ``interpolate``, a naive per-point loop
   (``torch.func.functional_call`` on the whole batch) and loss-landscapes 3.0.6, all at strict
   float32 (the peer too: TF32 is switched off globally for it); the default's share of the
   fp32 matrix rate (forward FLOPs counted by ``torch.utils.flop_counter``); and the error
   against float64 of ``fp32``, ``tf32`` and ``bf16`` on a line between two anchors.
3. **Training**: one epoch of the ``cifar10`` preset's NIN (batch 128, flip augmentation, SGD,
   TF32 as the preset trains) of ``lossurf.train.train_epoch`` against a bare PyTorch loop with
   the data already on the device, the same minibatch order and the same flips
   (``benchmarks/train_overhead.py``'s comparison); and the engine's evaluation time per epoch.
4. **Runs at once**: the training throughput of N worker processes sharing the device (what
   ``lossurf train --jobs N`` does) against one, timed between a barrier and the last step; with
   NVIDIA MPS too where ``nvidia-cuda-mps-control`` exists; and, for comparison, two designs
   in one process: N models trained with ``torch.func.stack_module_state`` + ``vmap``, and N
   runs whose steps are CUDA graphs replayed on one stream each (plain SGD, no augmentation).
5. **Projection**: the wall time of ``lossurf run all --preset cifar10``'s training from the
   measured epoch times, run by run (Runge-Kutta methods cost two gradients a step).

It runs on CPU too (``--device cpu``, small sizes with ``--quick``), where the parts that only
mean something on a GPU (concurrency) are skipped. On a GPU machine with PyTorch but no package
index, the extra wheels in :data:`WHEELS` travel along: ``bash benchmarks/gpu.sh fetch`` here
downloads them, ``bash benchmarks/gpu.sh run`` there installs them beside the machine's torch
and runs this script.

    python benchmarks/gpu.py [--device cuda] [--budget 290] [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))  # run from a checkout without installing
sys.path.insert(0, str(HERE))

from train_overhead import cifar_shaped, compare_epochs, timed  # noqa: E402 - needs the path

#: What a GPU machine that has PyTorch, numpy, pandas, scikit-learn, matplotlib, typer, rich,
#: PyYAML and safetensors still needs: the pins of requirements.lock (xarray for pandas>=2.2,
#: typing_extensions for pydantic), for CPython 3.12 on x86-64.
WHEELS = [
    "pydantic==2.14.4", "pydantic_core==2.50.5", "annotated-types==0.8.0",
    "typing-inspection==0.4.5", "typing_extensions==4.16.0", "zarr==3.1.6",
    "numcodecs==0.16.6", "donfig==0.8.1.post1", "google-crc32c==1.9.0", "xarray==2026.9.0",
    "loss-landscapes==3.0.6",
]

RESULTS: dict = {}


class Budget:
    """Seconds left of ``--budget``; parts that would start too late are skipped and said so."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def allows(self, seconds: float, what: str) -> bool:
        if self.left() >= seconds:
            return True
        print(f"  (skipped {what}: {self.left():.0f} s of the budget left, it needs ~{seconds:.0f})")
        return False


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def strict_fp32(on: bool = True) -> None:
    """TF32 off (strict float32) or on, for matmuls and cuDNN convolutions."""
    torch.backends.cuda.matmul.allow_tf32 = not on
    torch.backends.cudnn.allow_tf32 = not on


# ---------------------------------------------------------------- 1. rates


def matmul_rate(device: torch.device, dtype: torch.dtype, tf32: bool, n: int) -> float:
    """FLOP/s of an n x n x n matrix product (median of 5 after 2 warm-ups)."""
    strict_fp32(not tf32)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    times = [timed(lambda: a @ b, device) for _ in range(5)]
    strict_fp32(True)
    return 2 * n**3 / statistics.median(times)


def rates(device: torch.device, quick: bool) -> dict[str, float]:
    n = 1024 if (quick or device.type == "cpu") else 8192
    out = {"fp32": matmul_rate(device, torch.float32, False, n)}
    if device.type == "cuda":
        out["tf32"] = matmul_rate(device, torch.float32, True, n)
        out["bf16"] = matmul_rate(device, torch.bfloat16, False, n)
    print("matrix-product rates (TFLOP/s): " + ", ".join(f"{k} {v / 1e12:.1f}" for k, v in out.items()))
    return out


# ---------------------------------------------------------------- 2. surfaces


def peer_plane(spec, anchors, x, y, steps: int, device: torch.device) -> None:
    """loss-landscapes, as its README calls it, with models and data on ``device``."""
    import loss_landscapes
    from loss_landscapes.metrics import Loss

    from lossurf.models import build

    models = []
    for sd in anchors:
        m = build(spec, seed=0)
        m.load_state_dict(sd)
        models.append(m.to(device).eval())
    loss_landscapes.planar_interpolation(*models, Loss(F.cross_entropy, x, y), steps=steps,
                                         deepcopy_model=True)


def naive_plane(model, anchors, x, y, steps: int, device: torch.device) -> torch.Tensor:
    """One point at a time: the barycentric combination of every floating tensor (BN buffers
    interpolated), then one eval-mode forward over the whole batch."""
    from torch.func import functional_call

    model = model.to(device).eval()
    keys = [k for k, v in anchors[0].items() if v.is_floating_point()]
    stacks = {k: torch.stack([a[k] for a in anchors]).to(device) for k in keys}
    fixed = {k: v.to(device) for k, v in anchors[0].items() if not v.is_floating_point()}
    out = torch.empty(steps, steps)
    with torch.no_grad():
        for i, a in enumerate(torch.linspace(0, 1, steps)):
            for j, b in enumerate(torch.linspace(0, 1, steps)):
                c = torch.tensor([1 - a - b, a, b], device=device)
                state = {k: torch.tensordot(c, s, dims=1) for k, s in stacks.items()} | fixed
                out[i, j] = F.cross_entropy(functional_call(model, state, (x,)), y)
    return out


def stats_seconds(model, data, device: torch.device, batch: int = 128) -> float:
    """Seconds of one point's BN statistics passes done plainly: the eager network in
    cumulative-statistics mode over ``bn_x`` in batches of 128 (best of 3). An upper bound of
    what ``recompute`` must add to ``interpolate``."""
    from lossurf.surface.batchnorm import batchnorm_modules, begin_recompute, end_recompute

    model = model.to(device).eval()
    bns = batchnorm_modules(model)
    if not bns or data.bn_x is None:
        return 0.0
    bn_x = data.bn_x.to(device)

    def passes() -> None:
        begin_recompute(bns)
        for start in range(0, len(bn_x), batch):
            model(bn_x[start:start + batch])
        end_recompute(bns)

    with torch.no_grad():
        passes()
        return min(timed(passes, device) for _ in range(3))


def precision_errors(model, anchors, source, data, device) -> dict[str, float]:
    """Max |loss - float64 loss| over a 5-point line between two anchors, BN interpolated."""
    import copy

    import lossurf.surface as surface
    from torch.func import functional_call

    reference = copy.deepcopy(model).double().to(device).eval()
    x, y = data.x.double().to(device), data.y.to(device)
    alphas = torch.linspace(0, 1, 5)
    exact = []
    with torch.no_grad():
        for a in alphas:
            state = {k: (1 - a) * v0.double() + a * anchors[1][k].double()
                     if v0.is_floating_point() else v0 for k, v0 in anchors[0].items()}
            state = {k: v.to(device) for k, v in state.items()}
            exact.append(float(F.cross_entropy(functional_call(reference, state, (x,)), y)))
    errors = {}
    for precision in ("fp32", "tf32", "bf16"):
        ds = surface.line(model, anchors[0], anchors[1], source, alphas=alphas.tolist(), bn="interpolate", device=device,
                          progress=False, precision=precision)
        values = ds["loss"].values.ravel()
        errors[precision] = max(abs(float(v) - e) for v, e in zip(values, exact))
    return errors


def surfaces(device: torch.device, quick: bool, rounds: int, rate: float, budget: Budget) -> list[dict]:
    import surface as bench  # benchmarks/surface.py: the workloads

    import lossurf.surface as surface
    from lossurf.models import build

    strict_fp32(True)
    rows = []
    gpu_steps = {"W1": 16, "W2": 12, "W3": 16}
    for key, name, spec, source, cpu_steps in bench.workloads(quick):
        if not budget.allows(25, f"surface {key}"):
            break
        steps = cpu_steps if (quick or device.type == "cpu") else gpu_steps[key]
        points = steps * steps
        model = build(spec, seed=0)
        anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
        data, _ = surface.eval_data(source)
        x, y = data.x.to(device), data.y.to(device)
        attrs: dict = {}

        def ours(label: str, **options) -> None:
            ds = surface.plane(model, anchors, source, steps=steps, device=device,
                               progress=False, **options)
            attrs[label] = dict(ds.attrs)

        calls = {
            "loss-landscapes": lambda: peer_plane(spec, anchors, x, y, steps, device),
            "naive loop": lambda: naive_plane(build(spec, seed=0), anchors, x, y, steps, device),
            "lossurf default": lambda: ours("default"),
            "loop": lambda: ours("loop", strategy="loop"),
            "vmap K=32": lambda: ours("vmap", strategy="vmap", points_per_pass=32),
            "interpolate": lambda: ours("interpolate", bn="interpolate"),
        }
        times: dict[str, list[float]] = {label: [] for label in calls}
        for r in range(rounds):
            for label, call in calls.items():
                if not budget.allows(5, f"{key} {label}"):
                    continue
                try:
                    times[label].append(timed(call, device))
                except Exception as error:  # noqa: BLE001 - a benchmark reports and goes on
                    print(f"  {key} {label} failed: {type(error).__name__}: {error}"[:300])
            print(f"  {key} round {r + 1}: " + ", ".join(
                f"{label} {points / t[-1]:.4g}" for label, t in times.items() if t) + " pts/s",
                flush=True)
        pts = {label: points / statistics.median(t) for label, t in times.items() if t}
        chosen = attrs.get("default", {})
        flops = bench.counted_flops(build(spec, seed=0).to(device).eval(), x[:64], len(x))
        row = {"key": key, "workload": name, "points": points, "pts_per_s": pts,
               "strategy": f"{chosen.get('strategy', '?')} K={chosen.get('strategy_k', '?')}",
               "strategy_reason": chosen.get("strategy_reason", ""),
               "compile": chosen.get("compile"),
               "default_vs_peer": pts.get("lossurf default", math.nan) / pts.get("loss-landscapes", math.nan),
               "fp32_share_interpolate": flops * pts.get("interpolate", math.nan) / rate}
        try:
            if device.type == "cpu" and chosen:  # the loop's statistics graph, as the API ran it
                stats = bench.stats_seconds(build(spec, seed=0), data, anchors, chosen)
                row["stats_timing"] = "as the API ran them"
            else:  # an upper bound: the eager network over bn_x (makes the ratio a lower bound)
                stats = stats_seconds(build(spec, seed=0), data, device)
                row["stats_timing"] = "eager upper bound"
            interp = 1 / pts["interpolate"]
            row["recompute_over_interp_plus_stats"] = (1 / pts["lossurf default"]) / (interp + stats)
        except Exception as error:  # noqa: BLE001
            print(f"  {key} statistics timing failed: {type(error).__name__}: {error}"[:300])
        if budget.allows(15, f"{key} precision errors"):
            try:
                row["error_vs_float64"] = precision_errors(build(spec, seed=0), anchors, source, data, device)
            except Exception as error:  # noqa: BLE001
                print(f"  {key} precision errors failed: {type(error).__name__}: {error}"[:300])
        rows.append(row)
    labels = ["loss-landscapes", "naive loop", "lossurf default", "loop", "vmap K=32", "interpolate"]
    print("\n| workload | points | " + " | ".join(f"{l} pts/s" for l in labels)
          + " | default/peer | chosen | recompute/(interp+stats) | interpolate % of fp32 rate"
          " | error vs float64 (fp32, tf32, bf16) |")
    print("|" + "---|" * (len(labels) + 7))
    for r in rows:
        err = r.get("error_vs_float64", {})
        print(f"| {r['key']} {r['workload']} | {r['points']} | "
              + " | ".join(f"{r['pts_per_s'].get(l, math.nan):.4g}" for l in labels)
              + f" | {r['default_vs_peer']:.2f}x | {r['strategy']} | "
              f"{r.get('recompute_over_interp_plus_stats', math.nan):.2f}x "
              f"({r.get('stats_timing', '-')}) | "
              f"{100 * r['fp32_share_interpolate']:.1f} % | "
              + ", ".join(f"{err.get(p, math.nan):.1e}" for p in ("fp32", "tf32", "bf16")) + " |")
    for r in rows:
        print(f"  {r['key']} chose {r['strategy']} (compile {r['compile']}): {r['strategy_reason']}")
    return rows


# ---------------------------------------------------------------- 3. training


def nin_spec():
    from lossurf.config import ModelSpec

    return ModelSpec(name="nin", options={"batch_norm": True, "num_classes": 10, "in_channels": 3})


def lossurf_epochs(dataset, device: torch.device, epochs: int, eval_subset: int) -> dict:
    """Per-epoch training, evaluation and checkpoint seconds of ``lossurf.train_experiment``."""
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    config = parse_config({
        "name": "gpu-bench", "data": {"name": "cifar10"}, "model": nin_spec().model_dump(),
        "epochs": epochs, "batch_size": 128, "eval_subset": eval_subset,
        "checkpoint_every": epochs, "device": str(device),
        "runs": [{"optimizer": "sgd", "lr": 0.1}],
    })
    import lossurf

    with tempfile.TemporaryDirectory() as out:
        train_experiment(config, out, dataset=dataset)
        metrics = lossurf.load_experiment(out).metrics("sgd")
    train = metrics["wall_time"].diff().iloc[1:].tolist()
    result = {"train": train}
    for column in ("eval_time", "checkpoint_time"):
        if column in metrics:
            result[column] = metrics[column].iloc[1:].tolist()
    return result


def training(device: torch.device, quick: bool, budget: Budget) -> dict:
    """A NIN epoch of ``train_epoch`` against the bare loop (``train_overhead.compare_epochs``:
    the same order and flips, interleaved), and the engine's evaluation time per epoch."""
    if not budget.allows(40, "the training epoch (and the projection)"):
        return {}
    n_train = 512 if quick else 50_000
    dataset = cifar_shaped(n_train, "flip", n_test=256 if quick else 10_000)
    times = compare_epochs("nin", dataset, device, optimizer="sgd", precision="tf32",
                           repeats=2, rk=False)
    ours = lossurf_epochs(dataset, device, 2, eval_subset=256 if quick else 10_000)
    bare_epoch, our_epoch = min(times["bare"]), min(times["lossurf"])
    result = {"examples": n_train, "bare_epoch_s": bare_epoch, "lossurf_train_epoch_s": our_epoch,
              "ratio": our_epoch / bare_epoch,
              "eval_epoch_s": min(ours.get("eval_time", [math.nan])[1:] or [math.nan]),
              "bare_all": times["bare"], "lossurf_all": times["lossurf"], "engine": ours}
    print(f"\ntraining epoch, NIN+BN, {n_train:,} CIFAR-shaped examples, batch 128, flips, SGD, TF32:")
    print(f"  bare loop {bare_epoch:.3f} s, lossurf {our_epoch:.3f} s "
          f"({result['ratio']:.2f}x the bare loop); lossurf's evaluation "
          f"{result['eval_epoch_s']:.3f} s per epoch (train subset + test set)")
    return result


# ---------------------------------------------------------------- 4. runs at once


def _worker(rank: int, steps: int, device: str, barrier, queue) -> None:
    """Train one NIN with lossurf's epoch loop for ``steps`` minibatches after a barrier."""
    try:
        from lossurf import optim
        from lossurf.models import build
        from lossurf.train import train_epoch

        dev = torch.device(device)
        strict_fp32(False)
        dataset = cifar_shaped(max(steps, 10) * 128, "flip", n_test=16)
        model = build(nin_spec(), seed=rank).to(dev)
        optimizer = optim.build("sgd", list(model.parameters()), lr=0.1)
        warm = torch.arange(10 * 128)
        train_epoch(model, optimizer, dataset, warm, 128, augment_seed=rank, device=dev)
        sync(dev)
        barrier.wait(timeout=300)
        start = time.time()
        order = torch.randperm(steps * 128, generator=torch.Generator().manual_seed(rank))
        train_epoch(model, optimizer, dataset, order, 128, augment_seed=rank, device=dev)
        sync(dev)
        queue.put((rank, start, time.time(), None))
    except Exception as error:  # noqa: BLE001 - reported by the parent
        queue.put((rank, 0.0, 0.0, f"{type(error).__name__}: {error}"))


def processes_throughput(n: int, steps: int, device: str, timeout: float = 240.0) -> float:
    """Examples per second of ``n`` processes each training ``steps`` minibatches at once;
    workers not done within ``timeout`` seconds (a hung MPS client, say) are killed."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, steps, device, barrier, queue)) for r in range(n)]
    for p in procs:
        p.start()
    results = []
    deadline = time.monotonic() + timeout
    try:
        for _ in range(n):
            results.append(queue.get(timeout=max(1.0, deadline - time.monotonic())))
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    errors = [r[3] for r in results if r[3]]
    if errors:
        raise RuntimeError(errors[0])
    span = max(r[2] for r in results) - min(r[1] for r in results)
    return n * steps * 128 / span


def vmap_throughput(n: int, steps: int, device: torch.device) -> float:
    """Examples per second of ``n`` NINs trained in one process as one vmapped model (BN in
    batch-statistics mode, plain SGD on the stacked parameters): the alternative we measured."""
    import copy

    from torch.func import functional_call, grad, stack_module_state, vmap

    from lossurf.models import build

    strict_fp32(False)
    models = [build(nin_spec(), seed=r).to(device) for r in range(n)]
    for m in models:
        torch.func.replace_all_batch_norm_modules_(m)
    params, buffers = stack_module_state(models)
    params = {k: v.detach() for k, v in params.items()}  # torch.func.grad needs no autograd leaves
    base = copy.deepcopy(models[0]).to("meta")
    x = torch.randn(n, 128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (n, 128), device=device)

    def loss(p, b, xb, yb):
        return F.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

    step = vmap(grad(loss), in_dims=(0, 0, 0, 0), randomness="different")  # NIN has dropout

    def run(k: int) -> None:
        for _ in range(k):
            grads = step(params, buffers, x, y)
            torch._foreach_add_(list(params.values()), [grads[k] for k in params], alpha=-0.1)

    run(3)
    seconds = timed(lambda: run(steps), device)
    strict_fp32(True)
    return n * steps * 128 / seconds


def graphs_throughput(n: int, steps: int, device: torch.device) -> float:
    """Examples per second of ``n`` NINs trained in one process, each run's whole step (batch
    gather, forward, backward, SGD) captured once as a CUDA graph and replayed on the run's own
    stream: one process with no launch overhead and kernels of all runs side by side, the
    design to weigh against worker processes (with or without MPS)."""
    from lossurf.models import build

    strict_fp32(False)
    x = torch.randn(max(steps, 10) * 128, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (len(x),), device=device)
    runs = []
    for r in range(n):
        model = build(nin_spec(), seed=r).to(device).train()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        index = torch.arange(128, device=device)
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(r)).to(device)
        stream = torch.cuda.Stream(device)

        def step(model=model, opt=opt, index=index) -> None:
            F.cross_entropy(model(x[index]), y[index]).backward()
            opt.step()

        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):  # warm-up off the default stream, as capture asks
            for _ in range(3):
                opt.zero_grad(set_to_none=True)
                step()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=True)  # the gradients are allocated by the captured backward
        with torch.cuda.graph(graph):
            step()
        runs.append((graph, index, order, stream))

    def run(k: int) -> None:
        for i in range(k):
            for graph, index, order, stream in runs:
                with torch.cuda.stream(stream):
                    index.copy_(order[i * 128: (i + 1) * 128])
                    graph.replay()
        torch.cuda.synchronize(device)

    run(2)
    seconds = timed(lambda: run(steps), device)
    strict_fp32(True)
    return n * steps * 128 / seconds


def concurrency(device: torch.device, quick: bool, budget: Budget, n: int) -> dict:
    steps = 20 if quick else 150
    result: dict = {}
    if device.type != "cuda":
        print("\nruns at once: skipped (no GPU: on a CPU the processes would only share its cores)")
        return result
    print(f"\nruns at once: NIN+BN, batch 128, {steps} steps each, TF32")
    for label, count in (("1 process", 1), (f"{n} processes", n)):
        if not budget.allows(45, label):
            return result
        result[label] = processes_throughput(count, steps, str(device), timeout=budget.left())
        print(f"  {label}: {result[label]:,.0f} examples/s", flush=True)
    result["gain"] = result[f"{n} processes"] / result["1 process"]
    print(f"  {n} processes give {result['gain']:.2f}x the throughput of one")
    if budget.allows(30, "vmap over runs"):
        try:
            one, many = vmap_throughput(1, steps // 3, device), vmap_throughput(n, steps // 3, device)
            result["vmap gain"] = many / one
            print(f"  vmap over {n} models in one process: {many:,.0f} examples/s, "
                  f"{result['vmap gain']:.2f}x one model through the same code")
        except Exception as error:  # noqa: BLE001
            print(f"  vmap over runs failed: {type(error).__name__}: {error}"[:300])
    if budget.allows(30, "CUDA graphs on streams"):
        try:
            one, many = graphs_throughput(1, steps, device), graphs_throughput(n, steps, device)
            result["graphs 1 run"], result[f"graphs {n} runs"] = one, many
            result["graphs gain"] = many / result["1 process"]
            print(f"  one run as a CUDA graph: {one:,.0f} examples/s "
                  f"({one / result['1 process']:.2f}x the eager process); {n} runs as graphs on "
                  f"{n} streams in one process: {many:,.0f} examples/s, "
                  f"{result['graphs gain']:.2f}x the eager process, {many / one:.2f}x one graph")
        except Exception as error:  # noqa: BLE001
            print(f"  CUDA graphs on streams failed: {type(error).__name__}: {error}"[:300])
    mps = shutil.which("nvidia-cuda-mps-control")
    if mps and os.geteuid() == 0 and budget.allows(50, "MPS"):
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps-pipe", "CUDA_MPS_LOG_DIRECTORY": "/tmp/mps-log"}
        os.makedirs("/tmp/mps-pipe", exist_ok=True)
        os.makedirs("/tmp/mps-log", exist_ok=True)
        try:
            subprocess.run([mps, "-d"], env=env, check=True, timeout=20)
            os.environ.update({k: env[k] for k in ("CUDA_MPS_PIPE_DIRECTORY", "CUDA_MPS_LOG_DIRECTORY")})
            result[f"{n} processes, MPS"] = processes_throughput(n, steps, str(device),
                                                                timeout=budget.left())
            result["mps gain"] = result[f"{n} processes, MPS"] / result["1 process"]
            print(f"  {n} processes under MPS: {result[f'{n} processes, MPS']:,.0f} examples/s, "
                  f"{result['mps gain']:.2f}x one")
        except Exception as error:  # noqa: BLE001
            print(f"  MPS failed: {type(error).__name__}: {error}"[:300])
        finally:
            subprocess.run([mps], input=b"quit\n", env=env, timeout=20)
    elif not mps:
        print("  (no nvidia-cuda-mps-control here: MPS not measured)")
    return result


# ---------------------------------------------------------------- 5. projection


def preset_run_epochs(name: str = "cifar10") -> list[tuple[str, str, int, int]]:
    """``(experiment, run, epochs, gradients per step)`` of every run ``lossurf run all
    --preset NAME`` trains, each once (recipes share runs of equal configs)."""
    from lossurf.experiments.common import Context
    from lossurf.presets import load_preset

    preset = load_preset(name)
    with tempfile.TemporaryDirectory() as out:
        ctx = Context(preset, Path(out), "plan", progress=False)
        wanted: set[tuple[str, str, int, int]] = set()

        def add(config, bases, seeds=None) -> None:
            for run_name, spec, seed in config.iter_runs():
                if spec.base_name() in bases and (seeds is None or seed in seeds):
                    names = [spec.optimizer] + ([spec.switch.to] if spec.switch else [])
                    stages = 2 if any("rk2" in o for o in names) else 1
                    wanted.add((config.name, run_name, config.epochs, stages))

        main = ctx.config("main")
        seed = preset.seeds[:1]
        add(main, set(preset.optimizers.methods) | set(preset.restarts.methods))
        add(main, set(preset.runge_kutta.methods), seed)
        add(main, {r.base_name() for r in main.runs if r.switch is not None}
            | {m for pair in preset.switching.pairs for m in pair}, seed)
        if preset.batchnorm is not None:
            for bn in (True, False):
                add(ctx.config(f"bn{bn}", batch_norm=bn), set(preset.batchnorm.methods))
        for init in preset.init.inits:
            for bn in (True, False):
                add(ctx.config("init", batch_norm=bn, init=init, methods=[preset.init.method],
                               seeds=seed, epochs=preset.init.epochs), {preset.init.method}, seed)
    return sorted(wanted)


def projection(train: dict, runs_at_once: dict, n: int) -> dict:
    runs = preset_run_epochs("cifar10")
    step_epochs = sum(epochs * stages for _, _, epochs, stages in runs)
    run_epochs = sum(epochs for _, _, epochs, _ in runs)
    # Measured on 50,000 examples when not --quick; scale a quick measurement to CIFAR-10.
    scale = 50_000 / train["examples"]
    epoch_train = train["lossurf_train_epoch_s"] * scale
    epoch_eval = train["eval_epoch_s"] if not math.isnan(train["eval_epoch_s"]) else 0.0
    serial = step_epochs * epoch_train + run_epochs * epoch_eval
    gain = max(runs_at_once.get("gain", 1.0), runs_at_once.get("mps gain", 1.0))
    result = {"runs": len(runs), "run_epochs": run_epochs, "gradient_epochs": step_epochs,
              "serial_hours": serial / 3600, "concurrent_hours": serial / gain / 3600, "gain": gain}
    print(f"\nprojection, lossurf run all --preset cifar10 (training only): {len(runs)} runs, "
          f"{run_epochs:,} run-epochs ({step_epochs:,} counting two gradients per Runge-Kutta step); "
          f"{epoch_train:.2f} s training + {epoch_eval:.2f} s evaluation per epoch: "
          f"{result['serial_hours']:.1f} h one run at a time, {result['concurrent_hours']:.1f} h "
          f"with {n} runs at once ({gain:.2f}x)")
    return result


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--budget", type=float, default=290.0, help="seconds for the whole run")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--runs-at-once", type=int, default=8)
    parser.add_argument("--only", default="rates,surfaces,training,concurrency,projection")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--print-wheels", action="store_true", help="print the extra wheels and exit")
    args = parser.parse_args()
    if args.print_wheels:
        print("\n".join(WHEELS))
        return
    device = torch.device(args.device)
    parts = set(args.only.split(","))
    budget = Budget(args.budget)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; load average {os.getloadavg()}; "
          f"CPU threads {torch.get_num_threads()}", flush=True)
    RESULTS["device"] = name

    def part(key: str, fn, *a):
        if key not in parts:
            return None
        try:
            RESULTS[key] = fn(*a)
        except Exception:  # noqa: BLE001 - one failed part must not hide the others
            print(f"{key} failed:\n{traceback.format_exc()[-2000:]}", flush=True)
        return RESULTS.get(key)

    rate = part("rates", rates, device, args.quick) or {"fp32": math.nan}
    part("surfaces", surfaces, device, args.quick, args.rounds, rate["fp32"], budget)
    train = part("training", training, device, args.quick, budget)
    at_once = part("concurrency", concurrency, device, args.quick, budget, args.runs_at_once) or {}
    if train:
        part("projection", projection, train, at_once, args.runs_at_once)
    if args.json:
        Path(args.json).write_text(json.dumps(RESULTS, indent=1, default=str))
    print(f"\nbudget left: {budget.left():.0f} s")


if __name__ == "__main__":
    main()
