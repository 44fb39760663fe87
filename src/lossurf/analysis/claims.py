"""The paper's claims, tested on the data of this run (issue part 4, claims 1-10).

:func:`evaluate_claims` reads every ``OUT/<recipe>/result.json``, reopens the surfaces and
metrics they name, and states for each claim the quantity that tests it, the value measured and
whether the claim held (``None`` when the recipe that tests it did not run). Thresholds are the
constants below; nothing is written by hand.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np

from lossurf.analysis.basins import barrier, basin_width, excess_variation
from lossurf.experiments.result import Claim, RecipeResult

__all__ = ["evaluate_claims", "CLAIMS"]

#: A rise of 0.01 nats above both ends: surfaces are deterministic, so this only guards
#: against float noise while counting any real bump as a barrier.
BARRIER_EPS = 0.01
#: Functional distance (RMS of softmax differences) of 0.01 is ~1 % probability mass moved:
#: below it two networks are the same function for practical purposes.
FDIST_MIN = 0.01
#: "A large fraction of what the test errors allow": two classifiers with errors e1, e2 can
#: disagree on at most e1 + e2 of the examples; a quarter of that bound counts as large.
DISAGREE_FRACTION_MIN = 0.25
#: "Test accuracy does not differ much": within 2 points between the best and worst method.
TEST_SPREAD_MAX = 0.02
#: A basin ends where the loss has risen by 10 % of the way from the minimum to the init loss
#: (scale-free, so digits and CIFAR-10 use one rule).
BASIN_REL = 0.1
#: The switch moved the network: final distance from init differs from the pure run by 5 %.
DIST_CHANGE_MIN = 0.05
#: "Does not train": final training accuracy within 10 points of chance.
CHANCE_MARGIN = 0.1
#: A plateau: along the probe the loss varies by under 5 % of its value at the init.
PLATEAU_REL = 0.05

CLAIMS = {
    1: ("optimizers", "Different methods from one initialization reach different minima: the "
        "loss rises between their minima."),
    2: ("optimizers", "Those minima are functionally different: functional distance and label "
        "disagreement well above zero, disagreement a large fraction of what test errors allow."),
    3: ("optimizers", "Test accuracy does not differ much between methods, while SGD's training "
        "accuracy is the lowest."),
    4: ("restarts", "Surfaces of the same method from different initializations look alike and "
        "differ between methods."),
    5: ("restarts", "Adam's basins are wider than SGD's, in alpha and in absolute distance."),
    6: ("switching", "Switching methods late still changes the minimum, and the distance from "
        "initialization changes with it."),
    7: ("batchnorm", "Without batch norm the quality of a minimum depends more on the "
        "initialization, and the surfaces between minima are bumpier."),
    8: ("runge-kutta", "Heun and Ralston beat SGD at equal epochs and Midpoint does not, while "
        "Adam beats Adam+RK2."),
    9: ("init", "From the exotic initializations without batch norm the network does not train, "
        "and the loss around the initialization is a plateau, not a bad minimum."),
    10: ("restarts", "Past a minimum (alpha > 1) the loss rises again."),
}


def _curve(result: RecipeResult, rel: str) -> tuple[np.ndarray, np.ndarray, Any]:
    from lossurf.surface.store import open_surface

    ds = open_surface(result.path(rel))
    dim = next(d for d in ("alpha", "lambda") if d in ds.dims)
    return np.asarray(ds[dim].values, float), np.asarray(ds["loss"].values, float), ds


def _metrics(result: RecipeResult, key: str, run: str):
    from lossurf.experiment import load_experiment

    return load_experiment(result.path(result.experiments[key])).metrics(run)


def _claim(n: int, quantity: str, measured: str, held: bool | None, **values: Any) -> Claim:
    recipe, text = CLAIMS[n]
    return Claim(n, text, quantity, measured, None if held is None else bool(held), recipe, values)


def _untested(n: int) -> Claim:
    return _claim(n, "-", f"not measured: the {CLAIMS[n][0]} recipe did not run", None)


def claims_optimizers(r: RecipeResult) -> list[Claim]:
    """Claims 1-3 from the optimizers recipe."""
    import pandas as pd

    pairs = pd.read_csv(r.path(r.tables["pairs"])) if "pairs" in r.tables else pd.DataFrame()
    barriers = {row.pair: barrier(_curve(r, row.line)[1]) for row in pairs.itertuples()}
    c1 = _claim(1, f"barrier max(L) - max(L(A), L(B)) on the train loss along A->B (> {BARRIER_EPS})",
                ", ".join(f"{k}: {v:.3f}" for k, v in barriers.items()) or "no pairs",
                bool(barriers) and all(v > BARRIER_EPS for v in barriers.values()), barriers=barriers)
    fd, ratios = {}, {}
    for row in pairs.itertuples():
        _, _, ds = _curve(r, row.distance_line)
        acc = np.asarray(ds["accuracy"].values, float)
        fd[row.pair] = float(ds["fdist"].values[-1])
        allowed = (1 - acc[0]) + (1 - acc[-1])
        if allowed > 0:
            ratios[row.pair] = float(ds["disagreement"].values[-1]) / allowed
    mean_ratio = float(np.mean(list(ratios.values()))) if ratios else float("nan")
    c2 = _claim(2, f"fdist(A, B) on test data (> {FDIST_MIN}); disagreement / (err A + err B) "
                f"(mean >= {DISAGREE_FRACTION_MIN})",
                "fdist " + ", ".join(f"{k}: {v:.3f}" for k, v in fd.items())
                + f"; disagreement ratio mean {mean_ratio:.2f}",
                bool(fd) and all(v > FDIST_MIN for v in fd.values())
                and mean_ratio >= DISAGREE_FRACTION_MIN, fdist=fd, disagreement_ratio=ratios)
    final = pd.read_csv(r.path(r.tables["final"])).groupby("method").mean(numeric_only=True)
    spread = float(final.test_accuracy.max() - final.test_accuracy.min())
    sgd_train = float(final.train_accuracy.get("sgd", np.nan))
    others = final.train_accuracy.drop("sgd", errors="ignore")
    lowest = bool(np.isfinite(sgd_train) and sgd_train <= others.min())
    c3 = _claim(3, f"max - min final test accuracy over methods (< {TEST_SPREAD_MAX}); SGD's "
                "final train accuracy <= every other method's (ties count)",
                f"spread {spread:.4f}; SGD train {sgd_train:.4f} vs lowest other "
                f"{others.min():.4f} ({others.idxmin()})",
                spread < TEST_SPREAD_MAX and lowest, test_spread=spread, sgd_train=sgd_train,
                train_accuracy=final.train_accuracy.to_dict())
    return [c1, c2, c3]


def _profile_widths(r: RecipeResult, measurements: dict, extend_to: float) -> dict[str, dict]:
    """Per run: alpha-width around alpha = 1, distance width around lambda = 0, rise past 1."""
    out: dict[str, dict] = {}
    for e in measurements["extended"]:
        x, y, _ = _curve(r, e["surface"])
        i1 = int(np.argmin(np.abs(x - 1.0)))
        t = BASIN_REL * (y[0] - y[i1])
        w, trunc = basin_width(x, y, max(t, 0.0), center=1.0)
        out[f"{e['method']}@{e['seed']}"] = {
            "method": e["method"], "seed": e["seed"], "width_alpha": w, "truncated_alpha": trunc,
            "loss_at_1": float(y[i1]), "loss_at_end": float(y[-1]),
            "profile": y[x <= 1.0 + 1e-9]}
    for e in measurements["basins"]:
        x, y, ds = _curve(r, e["surface"])
        d = float(ds.attrs.get("geometry_init_distance", x.max()))
        i0, iD = int(np.argmin(np.abs(x))), int(np.argmin(np.abs(x - d)))
        w, trunc = basin_width(x, y, max(BASIN_REL * (y[iD] - y[i0]), 0.0), center=0.0)
        out[f"{e['method']}@{e['seed']}"].update(width_distance=w, truncated_distance=trunc)
    return out


def claims_restarts(r: RecipeResult) -> list[Claim]:
    """Claims 4, 5 and 10 from the restarts recipe."""
    m = r.measurements
    runs = _profile_widths(r, m, m.get("extend_to", 2.0))
    same, diff = [], []
    for a, b in itertools.combinations(runs.values(), 2):
        gap = float(np.sqrt(np.mean((a["profile"] - b["profile"]) ** 2)))
        (same if a["method"] == b["method"] else diff).append(gap)
    s, d = float(np.mean(same)) if same else np.nan, float(np.mean(diff)) if diff else np.nan
    c4 = _claim(4, "RMS difference of init->minimum loss profiles: same method across seeds "
                "vs different methods (same < different)",
                f"same {s:.4f}, different {d:.4f}", bool(s < d), same=s, different=d)

    def mean_of(method: str, key: str) -> float:
        vals = [v[key] for v in runs.values() if v["method"] == method and key in v]
        return float(np.mean(vals)) if vals else float("nan")

    widths = {k: {meth: mean_of(meth, k) for meth in ("adam", "sgd")}
              for k in ("width_alpha", "width_distance")}
    held5 = all(widths[k]["adam"] > widths[k]["sgd"] for k in widths)
    if any(np.isnan(v) for w in widths.values() for v in w.values()):
        held5 = None
    c5 = _claim(5, f"basin width where loss <= L_min + {BASIN_REL} (L_init - L_min): mean over "
                "seeds, in alpha and in distance (Adam > SGD)",
                "alpha: Adam {:.3f} vs SGD {:.3f}; distance: Adam {:.3f} vs SGD {:.3f}".format(
                    widths["width_alpha"]["adam"], widths["width_alpha"]["sgd"],
                    widths["width_distance"]["adam"], widths["width_distance"]["sgd"]),
                held5, widths=widths,
                per_run={k: {kk: vv for kk, vv in v.items() if kk != "profile"}
                         for k, v in runs.items()})
    rises = {k: v["loss_at_end"] - v["loss_at_1"] for k, v in runs.items()}
    up = sum(v > BARRIER_EPS for v in rises.values())
    c10 = _claim(10, f"L(alpha={m.get('extend_to', 2.0):g}) - L(alpha=1) on init->minimum "
                 f"lines (> {BARRIER_EPS} for every run)",
                 f"rose in {up} of {len(rises)} runs (smallest rise {min(rises.values()):.3f})",
                 bool(rises) and up == len(rises), rises=rises)
    return [c4, c5, c10]


def claims_switching(r: RecipeResult) -> Claim:
    """Claim 6: the latest switch of each pair against the pure run of its first method."""
    rows = r.measurements["switches"]
    if not rows:
        return _claim(6, "-", "no switched run finished", None)
    latest = max(row["fraction"] for row in rows)
    found = {}
    for row in (x for x in rows if x["fraction"] == latest):
        d_switch = float(_metrics(r, "main", row["run"])["distance_from_init"].iloc[-1])
        d_pure = float(_metrics(r, "main", row["pure_a"])["distance_from_init"].iloc[-1])
        found[f"{row['a']}->{row['b']}"] = {
            "barrier": barrier(_curve(r, row["line_a"])[1]), "fdist": float(row["fdist"]),
            "distance_change": abs(d_switch - d_pure) / max(d_pure, 1e-12)}
    held = all(v["barrier"] > BARRIER_EPS and v["fdist"] > FDIST_MIN
               and v["distance_change"] > DIST_CHANGE_MIN for v in found.values())
    return _claim(6, f"switch at {latest:.0%} vs pure A: barrier (> {BARRIER_EPS}), fdist "
                  f"(> {FDIST_MIN}), relative change of final distance from init "
                  f"(> {DIST_CHANGE_MIN})",
                  "; ".join(f"{k}: barrier {v['barrier']:.3f}, fdist {v['fdist']:.3f}, "
                            f"distance {v['distance_change']:+.1%}" for k, v in found.items()),
                  held, switches=found)


def claims_batchnorm(r: RecipeResult) -> Claim:
    """Claim 7: accuracy spread across seeds and bumpiness of lines, without vs with BN."""
    import pandas as pd

    acc = pd.read_csv(r.path(r.tables["accuracy"]))
    spread = {("bn" if bn else "no-bn"): float(
        g.groupby("method").test_accuracy.agg(lambda s: s.max() - s.min()).mean())
        for bn, g in acc.groupby("batch_norm")}
    bumps = {key: float(np.mean([excess_variation(_curve(r, e["surface"])[1])
                                 for e in r.measurements[key]["pairs"]] or [np.nan]))
             for key in ("bn", "no-bn")}
    # Bumpiness differences below BARRIER_EPS are float noise on two flat lines, not "bumpier".
    held = spread["no-bn"] > spread["bn"] and bumps["no-bn"] > bumps["bn"] + BARRIER_EPS
    return _claim(7, "mean over methods of the test-accuracy range across seeds; mean excess "
                  "total variation of minimum-to-minimum lines (both larger without BN, "
                  f"bumpiness by more than {BARRIER_EPS})",
                  f"spread {spread['no-bn']:.4f} without vs {spread['bn']:.4f} with BN; "
                  f"bumpiness {bumps['no-bn']:.3f} without vs {bumps['bn']:.3f} with",
                  held, spread=spread, bumpiness=bumps)


def claims_runge_kutta(r: RecipeResult) -> Claim:
    """Claim 8 at equal epochs: mean training accuracy over the epochs (area under Fig. 9)."""
    runs = r.measurements["runs"]
    score = {m: float(_metrics(r, "main", run)["train_accuracy"].iloc[1:].mean())
             for m, run in runs.items()}
    need = ("sgd", "rk2-heun", "rk2-ralston", "rk2-midpoint", "adam", "adam+rk2-heun")
    if any(k not in score for k in need):
        return _claim(8, "-", f"methods {need} are not all in the preset", None, score=score)
    held = (score["rk2-heun"] > score["sgd"] and score["rk2-ralston"] > score["sgd"]
            and score["rk2-midpoint"] <= score["sgd"] and score["adam"] > score["adam+rk2-heun"])
    return _claim(8, "mean training accuracy over epochs 1..E (equal epochs): Heun, Ralston > "
                  "SGD >= Midpoint; Adam > Adam+RK2",
                  ", ".join(f"{k} {score[k]:.4f}" for k in need), held, score=score)


def claims_init(r: RecipeResult) -> Claim:
    """Claim 9: no training and a flat loss around the exotic inits without batch norm."""
    chance = 1.0 / r.measurements["num_classes"]
    found = {}
    for row in r.measurements["runs"]:
        _, y, _ = _curve(r, row["probe"])
        flat = float((np.max(y) - np.min(y)) / max(abs(y[0]), 1e-12))
        found[f"{row['init']}, bn={row['batch_norm']}"] = {
            "batch_norm": row["batch_norm"], "train_accuracy": row["final_train_accuracy"],
            "probe_variation": flat, "distance_moved": row["distance_moved"]}
    no_bn = [v for v in found.values() if not v["batch_norm"]]
    held = bool(no_bn) and all(v["train_accuracy"] <= chance + CHANCE_MARGIN
                               and v["probe_variation"] < PLATEAU_REL for v in no_bn)
    return _claim(9, f"without BN: final train accuracy (<= chance {chance:.2f} + "
                  f"{CHANCE_MARGIN}) and relative loss variation along a short probe from the "
                  f"init (< {PLATEAU_REL})",
                  "; ".join(f"{k}: acc {v['train_accuracy']:.3f}, variation "
                            f"{v['probe_variation']:.3g}" for k, v in found.items()),
                  held, runs=found)


def evaluate_claims(out: Path) -> list[Claim]:
    """Compute the 10 claims from ``OUT/*/result.json`` and write ``OUT/claims.json``."""
    out = Path(out)
    results = {}
    for path in sorted(out.glob("*/result.json")):
        r = RecipeResult.load(path.parent)
        results[r.recipe] = r
    found: dict[int, Claim] = {}
    if "optimizers" in results:
        for c in claims_optimizers(results["optimizers"]):
            found[c.number] = c
    if "restarts" in results:
        for c in claims_restarts(results["restarts"]):
            found[c.number] = c
    for recipe, fn in (("switching", claims_switching), ("batchnorm", claims_batchnorm),
                       ("runge-kutta", claims_runge_kutta), ("init", claims_init)):
        if recipe in results:
            c = fn(results[recipe])
            found[c.number] = c
    claims = [found.get(n) or _untested(n) for n in sorted(CLAIMS)]
    Claim.save_all(claims, out / "claims.json")
    return claims
