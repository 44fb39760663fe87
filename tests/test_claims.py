"""Basin width, barrier and bumpiness on closed-form profiles; claim logic on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from lossurf.analysis.basins import barrier, basin_width, excess_variation
from lossurf.analysis.claims import BARRIER_EPS, CLAIMS, evaluate_claims


@pytest.mark.parametrize("a,t", [(1.0, 0.1), (4.0, 0.5), (0.5, 0.02)])
def test_parabola_width_is_closed_form(a: float, t: float) -> None:
    x = np.linspace(-3, 3, 6001)
    width, truncated = basin_width(x, 0.5 * a * x**2 + 7.0, t)
    assert width == pytest.approx(2 * np.sqrt(2 * t / a), rel=1e-5)
    assert not truncated


def test_width_uses_linear_crossings_on_coarse_grids() -> None:
    # |x| sampled at integers: crossings of level 1.5 at +-1.5 exactly.
    x = np.arange(-4.0, 5.0)
    assert basin_width(x, np.abs(x), 1.5) == (pytest.approx(3.0), False)


def test_width_around_a_center_and_truncation() -> None:
    x = np.linspace(0, 2, 201)
    y = (x - 1.0) ** 2  # minimum at 1, a second (deeper) one is not there
    w, trunc = basin_width(x, y, 0.25, center=1.0)
    assert w == pytest.approx(1.0, abs=1e-3) and not trunc
    w, trunc = basin_width(x, y, 10.0, center=1.0)
    assert w == pytest.approx(2.0) and trunc
    # Two wells: the width is the one around the requested center, not the global minimum.
    y2 = np.minimum((x - 0.5) ** 2, (x - 1.5) ** 2 * 4 - 0.1)
    w_left, _ = basin_width(x, y2, 0.01, center=0.5)
    assert w_left == pytest.approx(0.2, abs=2e-3)


def test_non_finite_losses_end_a_basin() -> None:
    x = np.linspace(-1, 1, 5)
    y = np.array([np.inf, 0.1, 0.0, 0.1, np.nan])
    assert basin_width(x, y, 1.0) == (pytest.approx(1.0), False)


def test_barrier_and_bumpiness() -> None:
    t = np.linspace(0, 1, 101)
    bump = 1.0 + 0.5 * t + 2.0 * np.sin(np.pi * t)  # ends 1.0 and 1.5
    assert barrier(bump) == pytest.approx(bump.max() - 1.5)
    assert barrier(np.linspace(3, 1, 11)) == 0.0  # monotone: no barrier
    assert excess_variation(np.linspace(3, 1, 11)) == pytest.approx(0.0)
    tri = np.array([0.0, 1.0, 2.0, 1.0, 0.0])
    assert excess_variation(tri) == pytest.approx(2 * barrier(tri))


def test_claims_without_results_are_untested(tmp_path) -> None:
    claims = evaluate_claims(tmp_path)
    assert [c.number for c in claims] == list(range(1, 11))
    assert all(c.held is None and "did not run" in c.measured for c in claims)
    assert (tmp_path / "claims.json").is_file()
    assert {c.recipe for c in claims} == {r for r, _ in CLAIMS.values()}


def _fake_restarts(tmp_path, profiles: dict[tuple[str, int], np.ndarray], alphas: np.ndarray):
    """A restarts result.json whose extended lines and basins are given arrays."""
    import xarray as xr

    from lossurf.experiments.result import RecipeResult

    root = tmp_path / "restarts"
    ext, bas = [], []
    for (m, s), y in profiles.items():
        rel = f"surfaces/extended-{m}-{s}.zarr"
        xr.Dataset({"loss": ("alpha", y)}, coords={"alpha": alphas}).to_zarr(root / rel, consolidated=False)
        ext.append({"method": m, "seed": s, "surface": rel})
        lam = (1.0 - alphas)[::-1]  # basin: lambda = distance from the minimum, init at 1
        relb = f"surfaces/basin-{m}-{s}.zarr"
        ds = xr.Dataset({"loss": ("lambda", y[::-1])}, coords={"lambda": lam})
        ds.attrs["geometry_init_distance"] = 1.0
        ds.to_zarr(root / relb, consolidated=False)
        bas.append({"method": m, "seed": s, "surface": relb})
    RecipeResult("restarts", "t", "4.2", "p", root, measurements={
        "extended": ext, "basins": bas, "pairs": [], "extend_to": float(alphas[-1])}).save()


def test_restart_claims_on_synthetic_parabolas(tmp_path) -> None:
    a = np.linspace(0, 2, 201)
    # Adam: a wide parabola around alpha = 1, SGD a narrow one; both rise past alpha = 1.
    wide, narrow = 0.5 * (a - 1) ** 2, 2.0 * (a - 1) ** 2
    _fake_restarts(tmp_path, {("adam", 0): wide, ("adam", 1): wide * 1.01,
                              ("sgd", 0): narrow, ("sgd", 1): narrow * 1.01}, a)
    claims = {c.number: c for c in evaluate_claims(tmp_path)}
    # Width at threshold 0.1 * (L(0) - L(1)) = 0.1 * k: a k (x-1)^2 curve -> 2 sqrt(0.1).
    w = claims[5].values["per_run"]["adam@0"]["width_alpha"]
    assert w == pytest.approx(2 * np.sqrt(0.1), rel=1e-3)
    assert claims[5].held is False  # relative threshold: equal widths, Adam not wider
    assert claims[4].held is True  # same-method profiles nearly equal, methods differ
    assert claims[10].held is True and claims[10].values["rises"]["sgd@0"] == pytest.approx(2.0)
    # A wider Adam basin in absolute terms: a flatter profile with the same init loss.
    flat = np.where(np.abs(a - 1) < 0.5, 0.0, 2.0 * (np.abs(a - 1) - 0.5) ** 2)
    _fake_restarts(tmp_path / "b", {("adam", 0): flat * 4, ("sgd", 0): narrow}, a)
    c5 = {c.number: c for c in evaluate_claims(tmp_path / "b")}[5]
    assert c5.held is True
    assert c5.values["widths"]["width_alpha"]["adam"] > c5.values["widths"]["width_alpha"]["sgd"]


def test_flat_extension_does_not_count_as_a_rise(tmp_path) -> None:
    a = np.linspace(0, 2, 21)
    y = np.where(a <= 1, 2.0 * (1 - a), 0.0) + 0.5 * BARRIER_EPS * (a > 1)
    _fake_restarts(tmp_path, {("adam", 0): y, ("sgd", 0): y}, a)
    c10 = {c.number: c for c in evaluate_claims(tmp_path)}[10]
    assert c10.held is False
