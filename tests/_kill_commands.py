"""The commands the kill matrix and the SIGINT tests interrupt, with their (tiny) inputs."""

from __future__ import annotations

# ---- lossurf train ------------------------------------------------------------------------

# A small CNN on 400 digits, 40 minibatches per epoch: long enough (tens of ms per epoch) for a
# delayed kill to land inside an epoch. sgd, an RK2 run and a switch run (sgd -> adam at 50 %).
TRAIN_CONFIG = {
    "name": "kill-matrix",
    "data": {"name": "digits", "max_train": 400, "max_test": 100},
    "model": {"name": "cnn-small"},
    "seeds": [0],
    "epochs": 4,
    "batch_size": 10,
    "eval_subset": 100,
    "checkpoint_every": 1,
    "threads": 1,
    "runs": [
        {"optimizer": "sgd", "lr": 0.1},
        {"optimizer": "rk2-heun", "lr": 0.2},
        {"optimizer": "sgd", "lr": 0.1, "switch": {"to": "adam", "lr": 0.001, "at": 0.5}},
    ],
}
TRAIN = ["train", "experiment.yaml", "--out", "exp", "--progress"]


# ---- lossurf surface plane ----------------------------------------------------------------

# 11 x 11 points in chunks of two rows (22 points): six chunks, a few tenths of a second each.
PLANE = ["surface", "plane", "exp", "--points", "init,sgd,rk2-heun", "--steps", "11",
         "--subset", "128", "--out", "plane.zarr", "--progress"]


# ---- lossurf run optimizers ---------------------------------------------------------------

# Four methods, two seeds, two epochs of a BN MLP on 200 digits, 3-point planes, 5-point lines.
RUN_PRESET = {
    "name": "tiny",
    "data": {"name": "digits", "max_train": 200, "max_test": 100},
    "model": {"name": "mlp", "options": {"batch_norm": True, "hidden": [16]}},
    "seeds": [0, 1],
    "epochs": 2,
    "batch_size": 50,
    "eval_subset": 100,
    "checkpoint_every": 2,
    "threads": 1,
    "methods": {
        "sgd": {"optimizer": "sgd", "lr": 0.1},
        "adam": {"optimizer": "adam", "lr": 0.001},
        "adadelta": {"optimizer": "adadelta", "lr": 1.0},
        "rk2-heun": {"optimizer": "rk2-heun", "lr": 0.2},
    },
    "surface": {"subset": 64, "bn_examples": 64, "line_steps": 5, "extended_steps": 5,
                "basin_steps": 5, "plane_steps": 3},
    "lr_search": {"epochs": 1},
    "optimizers": {"methods": ["sgd", "adam", "adadelta", "rk2-heun"], "pairs": [["sgd", "adam"]],
                   "bilinear_methods": ["sgd", "adam", "adadelta", "rk2-heun"]},
    "restarts": {"methods": ["sgd", "adam"], "pairs": [["sgd", "adam"]]},
    "switching": {"pairs": [["sgd", "adam"]], "fractions": [0.5]},
    "batchnorm": {"methods": ["sgd", "adam"], "pairs": [["sgd", "adam"]]},
    "init": {"method": "sgd", "inits": [{"scheme": "normal", "mean": -10.0, "std": 0.01}], "epochs": 1},
    "runge_kutta": {"methods": ["sgd", "rk2-heun", "adam"]},
}
RUN = ["run", "optimizers", "--preset", "tiny.yaml", "--out", "out", "--progress"]


# ---- lossurf demo -------------------------------------------------------------------------

# Every recipe on the tiny preset, then the report; it starts in the output folder of
# `lossurf run optimizers` above (a user who ran one recipe, then the demo), so the demo's
# first recipe is already done and the matrix pays only for the others and the report.
DEMO = ["demo", "--preset", "tiny.yaml", "--out", "out", "--progress"]

#: Text each command's rich progress bar shows (``run``, ``demo``: the bars of their surfaces;
#: their training prints one line per run).
BARS = {"train": "epochs  loss", "plane": "points", "run": "points", "demo": "points"}
