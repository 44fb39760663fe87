"""Tiny models and a naive one-point-at-a-time reference for the evaluator tests."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


class TinyBNCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(6 * 4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        x = F.adaptive_avg_pool2d(x, 2)
        return self.fc(self.drop(torch.flatten(x, 1)))


class TinyMLP(nn.Module):
    def __init__(self, d: int = 48) -> None:
        super().__init__()
        self.fc1 = nn.Linear(d, 32)
        self.fc2 = nn.Linear(32, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


class TinyLM(nn.Module):
    def __init__(self, vocab: int = 11) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, 8)
        self.rnn = nn.LSTM(8, 12, batch_first=True)
        self.decoder = nn.Linear(12, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(x))
        return self.decoder(out)


def perturbed_states(model: nn.Module, n: int, seed: int = 0, scale: float = 0.3) -> list[dict]:
    """n state dicts of ``model``'s architecture: weights and BN statistics moved at random."""
    g = torch.Generator().manual_seed(seed)
    states = []
    for _ in range(n):
        sd = {}
        for k, v in model.state_dict().items():
            if not v.is_floating_point():
                sd[k] = v.clone()
            elif k.endswith("running_var"):
                sd[k] = v + torch.rand(v.shape, generator=g)
            else:
                sd[k] = v + scale * torch.randn(v.shape, generator=g)
        states.append(sd)
    return states


def combine(anchors: list[dict], c, policy: str) -> dict:
    sd = {}
    for k, v in anchors[0].items():
        stat = k.endswith("running_mean") or k.endswith("running_var")
        if v.is_floating_point() and (policy == "interpolate" or not stat):
            sd[k] = sum(float(ci) * a[k] for ci, a in zip(c, anchors))
        else:
            sd[k] = v.clone()
    return sd


def naive_logits(model, state, x, policy="interpolate", bn_x=None, bn_batch=128, batch=256):
    """What peers do: load the weights into a copy, eval mode, plain forwards."""
    m = copy.deepcopy(model)
    m.load_state_dict(state)
    m.eval()
    bns = [b for b in m.modules() if isinstance(b, _BatchNorm)]
    with torch.no_grad():
        if policy == "recompute" and bns:
            for b in bns:
                b.reset_running_stats()
                b.momentum = None
                b.train()
            for i in range(0, len(bn_x), bn_batch):
                m(bn_x[i: i + bn_batch])
            for b in bns:
                b.eval()
        if policy == "batch":
            for b in bns:
                b.train()
                b.track_running_stats = False
                b.running_mean = b.running_var = None
        return torch.cat([m(x[i: i + batch]) for i in range(0, len(x), batch)])


def naive_metrics(model, anchors, coefficients, x, y, policy="interpolate", bn_x=None, batch=256):
    losses, accs = [], []
    for c in coefficients:
        logits = naive_logits(model, combine(anchors, c, policy), x, policy, bn_x, batch=batch)
        flat, t = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        losses.append(F.cross_entropy(flat, t).item())
        accs.append((flat.argmax(-1) == t).double().mean().item())
    return losses, accs
