"""PCA directions of a trajectory (Li et al. 2018, section 7) and the PCA plane."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.decomposition import PCA
from torch import nn
from torch.func import functional_call

from lossurf import surface
from lossurf.errors import LossurfError
from lossurf.params import flatten, moving_keys, unflatten
from lossurf.surface.evaluate import EvalData
from lossurf.surface.pca import trajectory_pca


def _matrix(seed: int = 0, rows: int = 7, n: int = 40) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([5.0, 2.0, 1.0, 0.5, 0.2, 0.1, 0.05])[:rows, None]
    return torch.randn(rows, n, generator=g, dtype=torch.float64) * scales


def test_directions_are_orthonormal_and_explain_the_uncentered_svd():
    m = _matrix()
    result = trajectory_pca(m)
    e = result.directions
    torch.testing.assert_close(e @ e.T, torch.eye(2, dtype=torch.float64), atol=1e-12, rtol=0)
    s = np.linalg.svd(m.numpy(), compute_uv=False)
    np.testing.assert_allclose(result.explained_variance_ratio, s[:2] ** 2 / (s ** 2).sum(), rtol=1e-12)
    _, _, vt = np.linalg.svd(m.numpy(), full_matrices=False)
    for i in range(2):  # same directions up to sign
        assert abs(float(np.dot(vt[i], e[i].numpy()))) == pytest.approx(1.0, abs=1e-12)
    # coordinates are projections of the differences themselves
    np.testing.assert_allclose(result.coordinates, (m @ e.T).numpy(), rtol=1e-12)


def test_centered_pca_equals_sklearn():
    m = _matrix(seed=1)
    result = trajectory_pca(m, center=True)
    reference = PCA(n_components=2, svd_solver="full").fit(m.numpy())
    np.testing.assert_allclose(result.explained_variance_ratio, reference.explained_variance_ratio_,
                               rtol=1e-10)
    for i in range(2):
        assert abs(float(np.dot(reference.components_[i], result.directions[i].numpy()))) == \
            pytest.approx(1.0, abs=1e-10)
    assert result.centered


def test_a_trajectory_on_a_plane_is_recovered_exactly():
    g = torch.Generator().manual_seed(3)
    u, v = torch.linalg.qr(torch.randn(60, 2, generator=g, dtype=torch.float64))[0].T
    final = torch.randn(60, generator=g, dtype=torch.float64)
    a = torch.tensor([3.0, 2.2, 1.1, 0.4, -0.3], dtype=torch.float64)
    b = torch.tensor([-1.0, 0.8, 1.5, 0.6, 0.1], dtype=torch.float64)
    points = final + a[:, None] * u + b[:, None] * v
    result = trajectory_pca(points - final)
    reconstructed = final + torch.as_tensor(result.coordinates) @ result.directions
    torch.testing.assert_close(reconstructed, points, atol=1e-12, rtol=0)
    assert result.explained_variance_ratio.sum() == pytest.approx(1.0, abs=1e-12)
    # the plane is the same plane: e1, e2 span u, v
    basis = torch.stack([u, v])
    torch.testing.assert_close((result.directions @ basis.T).det().abs(),
                               torch.tensor(1.0, dtype=torch.float64), atol=1e-12, rtol=0)


def test_signs_are_deterministic():
    m = _matrix(seed=2)
    first, second = trajectory_pca(m), trajectory_pca(m.clone())
    assert torch.equal(first.directions, second.directions)
    for i in range(2):
        assert first.coordinates[np.argmax(np.abs(first.coordinates[:, i])), i] > 0


def test_degenerate_trajectories_are_refused():
    with pytest.raises(LossurfError, match="at least two checkpoints.*checkpoint_every: 1"):
        trajectory_pca(torch.ones(1, 5))
    line = torch.outer(torch.tensor([1.0, 2.0, 3.0]), torch.arange(5.0))
    with pytest.raises(LossurfError, match="lie on one line"):
        trajectory_pca(line)
    # collinear in float32 (a, b and their midpoint): rounding leaves a second singular value
    # of about 1e-7 of the first, which is no plane either
    a, b = torch.randn(1000, generator=torch.Generator().manual_seed(0)), torch.randn(1000)
    mid = (a + b) / 2
    with pytest.raises(LossurfError, match="lie on one line"):
        trajectory_pca(torch.stack([a - mid, b - mid]).float())
    bad = _matrix()
    bad[0, 0] = float("nan")
    with pytest.raises(LossurfError, match="non-finite"):
        trajectory_pca(bad)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def test_pca_plane_covers_the_trajectory_and_matches_a_naive_loop(tmp_path):
    torch.manual_seed(0)
    model = Net()
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    data = EvalData(x=x, y=y, task="classification")
    # a short SGD trajectory
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    states = [{k: v.clone() for k, v in model.state_dict().items()}]
    for _ in range(5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    store = tmp_path / "pca.zarr"
    ds = surface.pca_plane(model, states, data, steps=6, margin=0.1, store=store, progress=False)
    assert ds.loss.dims == ("x", "y") and ds.attrs["lossurf_kind"] == "pca"
    keys = moving_keys(model)
    final = flatten(states[-1], keys)
    m = torch.stack([flatten(s, keys) - final for s in states[:-1]])
    s = np.linalg.svd(m.numpy(), compute_uv=False)
    np.testing.assert_allclose(ds.attrs["pca_explained_variance_ratio"], s[:2] ** 2 / (s ** 2).sum(),
                               rtol=1e-10)
    assert list(ds.epoch.values) == [0, 1, 2, 3, 4, 5]
    tx, ty = ds.trajectory_x.values, ds.trajectory_y.values
    assert (tx[-1], ty[-1]) == (0.0, 0.0)
    assert ds.x.values.min() < tx.min() and ds.x.values.max() > tx.max()
    assert ds.y.values.min() < ty.min() and ds.y.values.max() > ty.max()
    e = surface.load_directions(store)
    assert torch.equal(e["trajectory"][:, 0], torch.from_numpy(tx))
    d1, d2 = (flatten(e[name], keys) for name in ("d1", "d2"))
    # values against a naive loop at final + x*e1 + y*e2
    model.eval()
    for i, j in ((0, 0), (5, 5), (2, 3)):
        px, py = float(ds.x[i]), float(ds.y[j])
        point = unflatten(final + px * d1 + py * d2, states[-1], keys)
        with torch.no_grad():
            expected = F.cross_entropy(functional_call(model, point, (x,)), y).item()
        assert float(ds.loss[i, j]) == pytest.approx(expected, rel=1e-4)
    # the stored trajectory is each checkpoint's difference projected on the stored directions
    coords = np.stack([tx[:-1], ty[:-1]], axis=1)
    np.testing.assert_allclose(coords, (m @ torch.stack([d1, d2]).T).numpy(), atol=1e-10)
    # rerun: the same store resumes (nothing recomputed), same numbers
    again = surface.pca_plane(model, states, data, steps=6, margin=0.1, store=store, progress=False)
    np.testing.assert_array_equal(again.loss.values, ds.loss.values)


def test_pca_plane_refuses_short_trajectories():
    model = Net()
    data = EvalData(x=torch.randn(4, 6), y=torch.zeros(4, dtype=torch.long), task="classification")
    with pytest.raises(LossurfError, match="at least three checkpoints"):
        surface.pca_plane(model, [model.state_dict(), model.state_dict()], data, progress=False)


def test_lossurf_plot_draws_the_trajectory_over_a_pca_plane(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from lossurf.plots import plot_store
    from lossurf.plots.trajectory import draw_trajectory
    from lossurf.plots.style import new_figure
    from lossurf.surface.store import open_surface

    g = torch.Generator().manual_seed(0)
    model = Net()
    states = []
    for _ in range(4):
        states.append({k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in model.state_dict().items()})
    data = EvalData(x=torch.randn(20, 6, generator=g), y=torch.randint(0, 3, (20,), generator=g),
                    task="classification")
    store = tmp_path / "pca.zarr"
    surface.pca_plane(model, states, data, steps=4, store=store, progress=False)
    assert plot_store(store).stat().st_size > 0
    ds = open_surface(store)
    figure = new_figure(4, 3)
    ax = figure.add_subplot(1, 1, 1)
    assert draw_trajectory(figure, ds)
    xs, ys = ax.lines[0].get_data()
    np.testing.assert_array_equal(xs, ds.attrs["pca_trajectory_x"])
    np.testing.assert_array_equal(ys, ds.attrs["pca_trajectory_y"])
    assert not draw_trajectory(figure, _no_attrs(ds))


def _no_attrs(ds):
    out = ds.copy()
    out.attrs = {}
    return out
