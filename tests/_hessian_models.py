"""Tiny float64 models and a dense Hessian reference for the Hessian tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lossurf.surface.evaluate import EvalData


def tiny_model(batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 14)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(14))
    layers += [nn.Tanh(), nn.Dropout(0.5), nn.Linear(14, 4)]
    model = nn.Sequential(*layers).double()
    if batch_norm:  # non-trivial running statistics, so eval mode differs from batch mode
        bn = model[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.2, 0.2)
    return model


def tiny_data(n: int = 90) -> EvalData:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g)
    return EvalData(x, y, "classification")


def dense_hessian(model: nn.Module, data: EvalData) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full Hessian of the mean loss (eval mode, all examples in one pass), loss and gradient."""
    model = model.eval()
    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    shapes = [params[k].shape for k in names]
    sizes = [params[k].numel() for k in names]
    theta = torch.cat([params[k].detach().reshape(-1) for k in names])

    def loss(flat):
        pieces = {k: p.reshape(s) for k, p, s in zip(names, torch.split(flat, sizes), shapes)}
        return F.cross_entropy(functional_call(model, {**pieces, **buffers}, (data.x,)), data.y)

    h = torch.autograd.functional.hessian(loss, theta)
    g = torch.autograd.functional.jacobian(loss, theta)
    return h, loss(theta).detach(), g
