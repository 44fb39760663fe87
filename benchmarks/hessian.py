"""Hessian-vector products and the top eigenvalue on the digits CNN, against PyHessian.

1. One HVP against one gradient of the same mean loss (512 training digits, one batch, BN in
   eval mode), for both HVP implementations (forward-over-reverse = ``torch.func.jvp`` of
   ``torch.func.grad``; double backward = Pearlmutter's trick), and for double backward with the
   gradient's graph kept between products (the default for a one-batch subset; its one-off cost
   is one gradient with ``create_graph``). Target: at most 3x a gradient.
2. The top Hessian eigenvalue by lossurf (Lanczos, full reorthogonalization) and by PyHessian's
   ``hessian(...).eigenvalues()`` (power iteration) on the same model, weights, data and
   tolerance 1e-3, in one process; PyHessian's time includes its constructor, which computes the
   gradient graph it then reuses. A tight Lanczos run (tol 1e-8) is the reference value.
   Target: lossurf at least as fast, same value to 1e-3 relative.

The model is ``cnn-small`` with batch norm on digits, trained a few epochs with SGD here so the
Hessian is that of a (near-)minimum. Timings alternate between the contenders for several rounds
and keep the best of each (the machine is shared).

    pip install -r benchmarks/requirements-hessian.txt
    python benchmarks/hessian.py [--rounds 5] [--threads 1] [--subset 512]

Measured on the shared 2-core CPU (1 thread, torch 2.13, pyhessian 0.1; three runs under varying
load): one HVP = 2.7-3.6 gradients by double backward, 2.7-5.0 by forward-over-reverse, 1.2-1.8
with the gradient's graph reused (the default here); top eigenvalue 2.696724 by Lanczos (6 HVPs,
7.8e-7 from the tol-1e-8 reference) against PyHessian's 2.695359 (5.1e-4 from it), lossurf taking
0.66-0.78 of PyHessian's time.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from lossurf.config import DataSpec, ModelSpec
from lossurf.data import load
from lossurf.hessian.hvp import HessianOperator
from lossurf.hessian.lanczos import lanczos_top
from lossurf.models import build
from lossurf.surface.evaluate import EvalData


def trained_cnn(epochs: int) -> tuple[torch.nn.Module, EvalData]:
    """cnn-small (batch norm) trained ``epochs`` epochs of SGD on digits; all training data."""
    data = load(DataSpec(name="digits"))
    torch.manual_seed(0)
    model = build(ModelSpec(name="cnn-small", options={"batch_norm": True}), seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(data.train_x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(data.train_x[idx]), data.train_y[idx]).backward()
            opt.step()
    return model.eval(), EvalData(data.train_x, data.train_y, "classification")


def best_time(fn, rounds: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(rounds):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subset", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--tol", type=float, default=1e-3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, full = trained_cnn(args.epochs)
    data = EvalData(full.x[: args.subset], full.y[: args.subset], "classification")
    weights = model.state_dict()
    ops = {m: HessianOperator(model, weights, data, batch_size=args.subset, method=m,
                              cache_graph=False)
           for m in ("forward-over-reverse", "double-backward")}
    # the default on a one-batch subset: the gradient's graph is built once, then reused
    ops["double-backward, cached"] = HessianOperator(model, weights, data, batch_size=args.subset)
    n = ops["double-backward"].n
    print(f"cnn-small + BN on {args.subset} digits, {n} parameters, {args.threads} thread(s)")

    # 1. one HVP vs one gradient (interleaved rounds)
    v = torch.randn(n, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    times = {"gradient": float("inf"), **{m: float("inf") for m in ops}}
    for _ in range(args.rounds):
        times["gradient"] = min(times["gradient"], best_time(ops["double-backward"].gradient, 1)[0])
        for m, op in ops.items():
            times[m] = min(times[m], best_time(lambda: op.hvp(v), 1)[0])
    hv = {m: op.hvp(v) for m, op in ops.items()}
    agree = float((hv["forward-over-reverse"] - hv["double-backward"]).norm() / hv["double-backward"].norm())
    print(f"gradient                    {times['gradient'] * 1e3:8.2f} ms")
    for m in ops:
        print(f"HVP {m:<24}{times[m] * 1e3:8.2f} ms   {times[m] / times['gradient']:.2f}x a gradient")
    print(f"the two HVPs agree to {agree:.1e} (relative)")

    # 2. top eigenvalue: lossurf Lanczos vs PyHessian power iteration
    op = HessianOperator(model, weights, data, batch_size=args.subset)
    reference = lanczos_top(op.hvp, n, k=1, tol=1e-8, max_iter=300).eigenvalues[0]
    try:
        from pyhessian import hessian as PyHessian
    except ImportError:
        print("PyHessian is not installed: pip install -r benchmarks/requirements-hessian.txt")
        return

    def ours():
        o = HessianOperator(model, weights, data, batch_size=args.subset)
        return lanczos_top(o.hvp, o.n, k=1, tol=args.tol, max_iter=300, seed=0)

    def theirs():
        net = build(ModelSpec(name="cnn-small", options={"batch_norm": True}))
        net.load_state_dict(weights)
        torch.manual_seed(0)
        h = PyHessian(net, torch.nn.CrossEntropyLoss(), data=(data.x, data.y), cuda=False)
        return h.eigenvalues(maxIter=300, tol=args.tol, top_n=1)[0][0]

    t_ours, t_theirs = float("inf"), float("inf")
    for _ in range(args.rounds):
        t, result = best_time(ours, 1)
        t_ours = min(t_ours, t)
        t, value = best_time(theirs, 1)
        t_theirs = min(t_theirs, t)
    print(f"top eigenvalue, reference (Lanczos tol 1e-8): {reference:.6f}")
    print(f"lossurf Lanczos  tol {args.tol:g}: {result.eigenvalues[0]:.6f} "
          f"(rel. error {abs(result.eigenvalues[0] - reference) / abs(reference):.1e}), "
          f"{result.iterations} HVPs, {t_ours * 1e3:.0f} ms")
    print(f"PyHessian power  tol {args.tol:g}: {value:.6f} "
          f"(rel. error {abs(value - reference) / abs(reference):.1e}), {t_theirs * 1e3:.0f} ms")
    print(f"lossurf / PyHessian time: {t_ours / t_theirs:.2f}; values differ by "
          f"{abs(result.eigenvalues[0] - value) / abs(value):.1e} (relative)")


if __name__ == "__main__":
    main()
