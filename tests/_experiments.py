"""A small trained experiment shared by the CLI tests of surfaces, directions and the Hessian."""

from __future__ import annotations


def train_tiny_experiment(out, epochs: int = 2):
    """Train the suite's small CLI experiment (digits, cnn-small, sgd and adam, a checkpoint
    every epoch) into ``out``; returns ``out``."""
    from lossurf.config import parse_config
    from lossurf.engine import train_experiment

    config = parse_config({
        "data": {"name": "digits", "max_train": 128, "max_test": 64},
        "model": {"name": "cnn-small"},
        "epochs": epochs, "batch_size": 32, "eval_subset": 64, "checkpoint_every": 1,
        "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.003}],
    })
    train_experiment(config, out)
    return out
