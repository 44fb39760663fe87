"""Error of each surface precision against float64, on CPU, for W1 and W3.

For each workload (W1 at its initial weights and after 5 epochs of Adam, W3 at its initial
weights on random data), a 5x5 barycentric plane between three weight vectors is evaluated by
``lossurf.surface.plane`` at ``fp32``, ``tf32`` and ``bf16`` (BN ``recompute``), and by an
independent float64 loop (the model and weights in float64, the same statistics batches).
Prints the largest relative error of the loss and the largest accuracy difference over the
plane; docs/precision.md quotes the result.

    python benchmarks/precision.py [--device cuda]
"""

from __future__ import annotations

import argparse
import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.modules.batchnorm import _BatchNorm

import lossurf.surface as surface
from lossurf.config import DataSpec, ModelSpec
from lossurf.data import load
from lossurf.models import build
from lossurf.surface.evaluate import EvalData
from lossurf.surface.plane import barycentric_grid


def float64_plane(model, anchors, coeffs, data: EvalData, bn_batch: int = 128):
    """Loss and accuracy at each point, everything in float64 (statistics re-estimated)."""
    m = copy.deepcopy(model).double().eval()
    bns = [b for b in m.modules() if isinstance(b, _BatchNorm)]
    x, bn_x = data.x.double(), data.bn_x.double() if data.bn_x is not None else None
    losses, accs = [], []
    with torch.no_grad():
        for c in coeffs:
            sd = {k: (sum(float(ci) * a[k].double() for ci, a in zip(c, anchors))
                      if v.is_floating_point() else v) for k, v in anchors[0].items()}
            m.load_state_dict(sd)
            if bns:
                for b in bns:
                    b.reset_running_stats()
                    b.momentum = None
                    b.train()
                for i in range(0, len(bn_x), bn_batch):
                    m(bn_x[i: i + bn_batch])
                for b in bns:
                    b.eval()
            logits = torch.cat([m(x[i: i + 512]) for i in range(0, len(x), 512)])
            losses.append(F.cross_entropy(logits, data.y).item())
            accs.append((logits.argmax(-1) == data.y).double().mean().item())
    return np.array(losses), np.array(accs)


def trained(spec: ModelSpec, seed: int, x: torch.Tensor, y: torch.Tensor, epochs: int = 5):
    """A state dict of ``spec`` trained briefly with Adam (a surface near real minima)."""
    model = build(spec, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=g).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.state_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="where lossurf evaluates (cpu, cuda)")
    device = parser.parse_args().device
    g = torch.Generator().manual_seed(0)
    mlp = EvalData(torch.randn(10_000, 784, generator=g),
                   torch.randint(0, 10, (10_000,), generator=g), "classification",
                   torch.randn(1024, 784, generator=g))
    digits = load(DataSpec(name="digits"))
    cnn = ModelSpec(name="cnn-small", options={"batch_norm": True})
    cases = [("W1 small BN CNN, digits, initial weights", cnn, digits, None),
             ("W1 small BN CNN, digits, trained 5 epochs", cnn, digits, "train"),
             ("W3 MLP 784-512-256", ModelSpec(name="mlp", options={"in_features": 784,
                                                                  "hidden": [512, 256]}), mlp,
              None)]
    print("workload | precision | max rel. loss error | max accuracy difference")
    print("--- | --- | --- | ---")
    for name, spec, source, how in cases:
        model = build(spec, seed=0)
        if how == "train":
            anchors = [trained(spec, s, source.train_x, source.train_y) for s in (1, 2, 3)]
        else:
            anchors = [build(spec, seed=s).state_dict() for s in (1, 2, 3)]
        data, _ = surface.eval_data(source)
        for precision in ("fp32", "tf32", "bf16"):
            ds = surface.plane(model, anchors, source, steps=5, precision=precision,
                               progress=False, compile=False, device=device)
            coeffs = barycentric_grid(steps=5).flat_coefficients()  # the plane's points
            want_loss, want_acc = float64_plane(model, anchors, coeffs, data)
            got_loss = ds.loss.values.reshape(-1)
            got_acc = ds.accuracy.values.reshape(-1)
            rel = np.max(np.abs(got_loss - want_loss) / np.abs(want_loss))
            print(f"{name} | {precision} | {rel:.2e} | {np.max(np.abs(got_acc - want_acc)):.2e}",
                  flush=True)


if __name__ == "__main__":
    main()
