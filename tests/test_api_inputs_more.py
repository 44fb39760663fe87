"""Bad input to the Hessian, curve, alignment and experiment APIs: one LossurfError that names
the problem and the fix (never a raw error from deep inside, never a silent wrong result)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossurf import alignment, curves, hessian
from lossurf.errors import LossurfError
from lossurf.surface.evaluate import EvalData


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 5, generator=g)
    y = torch.randint(0, 2, (16,), generator=g)
    model = _model()
    a = {k: v.clone() for k, v in model.state_dict().items()}
    b = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in a.items()}
    return model, a, b, x, y, EvalData(x, y, "classification")


HESSIAN_CALLS = {
    "top_eigenpairs": lambda m, w, d, **o: hessian.top_eigenpairs(m, w, d, k=1, **o),
    "trace": lambda m, w, d, **o: hessian.trace(m, w, d, trace_samples=(2, 2), **o),
    "density": lambda m, w, d, **o: hessian.density(m, w, d, density_probes=1,
                                                    density_steps=3, **o),
    "eps_sharpness": lambda m, w, d, **o: hessian.eps_sharpness(m, w, d, eps=1e-3,
                                                                sharpness_steps=1, **o),
    "analyze": lambda m, w, d, **o: hessian.analyze(m, w, d, top=1, **o),
}


# -- 1. regression data without a loss --------------------------------------------------------

@pytest.mark.parametrize("name", sorted(HESSIAN_CALLS))
def test_hessian_refuses_regression_data(setup, name):
    model, _, b, x, _, _ = setup
    r = EvalData(x, torch.randn(16, 2), "regression")
    with pytest.raises(LossurfError, match=r"regression data .*cross-entropy"):
        HESSIAN_CALLS[name](model, b, r)


def test_fit_curve_refuses_regression_data_without_a_loss(setup):
    model, a, b, x, _, _ = setup
    r = EvalData(x, torch.randn(16, 2), "regression")
    with pytest.raises(LossurfError, match=r"regression data .* need a loss: pass loss_fn="):
        curves.fit_curve(model, a, b, r, epochs=1)
    with pytest.raises(LossurfError, match=r"regression data .* need a loss: pass loss_fn="):
        curves.fit_curve(model, a, b, (x, torch.randn(16, 2)), epochs=1)
    bend = curves.fit_curve(model, a, b, r, epochs=1, batch_size=8,
                            loss_fn=torch.nn.functional.mse_loss)
    with pytest.raises(LossurfError, match=r"regression data .* need a loss: pass loss_fn="):
        curves.curve_surface(model, a, bend, b, r, steps=2, bn="interpolate", progress=False)


# -- 2. class ids out of range ----------------------------------------------------------------

@pytest.mark.parametrize("shift", [5, -3])
def test_class_ids_out_of_range_are_named(setup, shift):
    model, a, b, x, y, _ = setup
    bad = EvalData(x, y + shift, "classification")
    lo, hi = int(y.min()) + shift, int(y.max()) + shift
    message = rf"class ids {lo} to {hi}.* 2 outputs .*relabel"
    with pytest.raises(LossurfError, match=message):
        hessian.top_eigenpairs(model, b, bad, k=1)
    with pytest.raises(LossurfError, match=message):
        curves.fit_curve(model, a, b, bad, epochs=1)
    with pytest.raises(LossurfError, match=message):
        curves.fit_curve(model, a, b, (x, y + shift), epochs=1)


# -- 3. devices that this machine lacks -------------------------------------------------------

@pytest.mark.parametrize("device, message", [
    ("gpu", r"unknown device 'gpu'; use cpu, cuda"),
    (0, r"unknown device 0; use cpu, cuda"),
    pytest.param("cuda", r"device 'cuda' is not available here .*device='cpu'",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="has a GPU")),
    pytest.param("mps", r"device 'mps' is not available here .*device='cpu'",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="has MPS")),
])
def test_unavailable_devices_are_refused_up_front(setup, device, message):
    model, a, b, _, _, data = setup
    with pytest.raises(LossurfError, match=message):
        hessian.top_eigenpairs(model, b, data, k=1, device=device)
    with pytest.raises(LossurfError, match=message):
        curves.fit_curve(model, a, b, data, epochs=1, device=device)
    with pytest.raises(LossurfError, match=message):
        curves.curve_surface(model, a, b, b, data, steps=2, bn="interpolate", progress=False,
                             device=device)
    with pytest.raises(LossurfError, match=message):
        alignment.compare_barriers(model, a, b, data, steps=2, progress=False, device=device)


def test_a_torch_device_is_accepted(setup):
    model, a, b, _, _, data = setup
    ds = hessian.top_eigenpairs(model, b, data, k=1, device=torch.device("cpu"))
    assert ds.eigenvalues.shape == (1,)
    curves.fit_curve(model, a, b, data, epochs=1, device=torch.device("cpu"))


# -- 4. a user loss that fails ----------------------------------------------------------------

def _raises(outputs, targets):
    raise KeyError("oops")


@pytest.mark.parametrize("loss_fn, message", [
    (lambda o, t: torch.nn.functional.cross_entropy(o, t, reduction="none"),
     r"loss_fn must return the batch's mean loss as a scalar tensor, got shape \(8,\)"),
    (_raises, r"loss_fn raised KeyError: 'oops' on outputs of shape \(8, 2\).*fix loss_fn"),
    (lambda o, t: 1.0, r"scalar tensor, got float"),
    (lambda o, t: torch.tensor(1.0), r"loss_fn's result has no gradient"),
])
def test_fit_curve_wraps_a_failing_loss_fn(setup, loss_fn, message):
    model, a, b, _, _, data = setup
    with pytest.raises(LossurfError, match=message):
        curves.fit_curve(model, a, b, data, epochs=1, batch_size=8, loss_fn=loss_fn)


# -- 5. non-finite weights --------------------------------------------------------------------

def test_non_finite_weights_are_refused_naming_the_tensor(setup):
    model, a, b, _, _, data = setup
    bad = {k: v.clone() for k, v in b.items()}
    bad["2.weight"][0, 1] = float("nan")
    bad["0.bias"][0] = float("inf")
    message = (r"the weights: tensor '0.bias' holds NaN or Inf \(1 of 4 entries; 1 more tensor "
               r"too\); pass finite weights")
    with pytest.raises(LossurfError, match=message):
        hessian.top_eigenpairs(model, bad, data, k=1)
    with pytest.raises(LossurfError, match=r"^weights: tensor '0.bias' holds NaN or Inf"):
        alignment.align(model, a, bad)
    with pytest.raises(LossurfError, match=r"^reference_weights: tensor '0.bias' holds NaN"):
        alignment.align(model, bad, a)
    with pytest.raises(LossurfError, match=r"^end: tensor '0.bias' holds NaN or Inf"):
        curves.fit_curve(model, a, bad, data, epochs=1)


# -- 6. train_experiment's config, dataset and runs --------------------------------------------

TINY = {
    "data": {"name": "digits", "max_train": 64, "max_test": 32},
    "model": {"name": "cnn-small"},
    "epochs": 1, "batch_size": 32, "eval_subset": 32, "checkpoint_every": 1,
    "runs": [{"optimizer": "sgd", "lr": 0.1}, {"optimizer": "adam", "lr": 0.003}],
}


def test_train_experiment_takes_a_dict_a_yaml_path_and_one_run_name(tmp_path):
    import yaml

    from lossurf.engine import train_experiment

    out = tmp_path / "exp"
    statuses = train_experiment(dict(TINY), out, runs="sgd")
    assert list(statuses) == ["sgd"] and statuses["sgd"]["status"] == "finished"
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY))
    for config in (path, str(path)):  # the same experiment: the finished run is read back
        assert list(train_experiment(config, out, runs=("sgd",))) == ["sgd"]


@pytest.mark.parametrize("options, message", [
    ({"config": 42}, r"config is of type int; pass an ExperimentConfig .*load_config\(path\)"),
    ({"config": "no-such.yaml"}, r"experiment file no-such.yaml does not exist"),
    ({"dataset": (torch.zeros(2, 3), torch.zeros(2))},
     r"dataset is of type tuple, not a lossurf Dataset; pass None .* lossurf.data.load\(config.data\)"),
    ({"runs": ["sgd", 3]}, r"runs must be a run name or a list of run names, got \['sgd', 3\]"),
    ({"runs": "nope"}, r"unknown runs \['nope'\]"),
    ({"out": None}, r"out must be a directory path \(str or Path\), got None"),
])
def test_train_experiment_refuses_bad_arguments(tmp_path, options, message):
    from lossurf.engine import train_experiment

    arguments = {"config": dict(TINY), "out": tmp_path / "exp", **options}
    with pytest.raises(LossurfError, match=message):
        train_experiment(arguments.pop("config"), arguments.pop("out"), **arguments)


# -- 7. Experiment's end points ---------------------------------------------------------------

@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    import lossurf
    from lossurf.engine import train_experiment

    out = tmp_path_factory.mktemp("exp")
    train_experiment(dict(TINY), out, runs="sgd")
    return lossurf.load_experiment(out)


@pytest.mark.parametrize("which", [True, False, 1.0, "epoch=1", -1])
def test_weights_refuse_what_is_not_a_checkpoint(experiment, which):
    with pytest.raises(LossurfError, match=r"checkpoint .* is not 'init', 'final' or an epoch "
                                           r"number"):
        experiment.weights("sgd", which)


def test_weights_take_numpy_epochs(experiment):
    import numpy as np

    assert experiment.weights("sgd", np.int64(1)).keys() == experiment.weights("sgd", 1).keys()


@pytest.mark.parametrize("endpoint", [3, None, ["sgd"]])
def test_resolve_refuses_what_is_not_a_name(experiment, endpoint):
    with pytest.raises(LossurfError, match=r"an end point is a name such as 'sgd' or "
                                           r"'sgd:epoch=1', got "):
        experiment.resolve(endpoint)


@pytest.mark.parametrize("path", [None, 3])
def test_load_experiment_refuses_what_is_not_a_path(path):
    import lossurf

    with pytest.raises(LossurfError, match=r"experiment directory must be a path \(str or "
                                           r"Path\), got"):
        lossurf.load_experiment(path)


# -- 8. lesser Hessian settings ---------------------------------------------------------------

def test_hessian_max_iter_below_one_is_named(setup):
    model, _, b, _, _, data = setup
    for max_iter in (0, -2):
        with pytest.raises(LossurfError, match=rf"max_iter must be at least 1 .*got {max_iter}"):
            hessian.top_eigenpairs(model, b, data, k=1, max_iter=max_iter)


def test_hessian_of_a_frozen_model_says_how_to_unfreeze(setup):
    model, _, b, _, _, data = setup
    frozen = _model().requires_grad_(False)
    with pytest.raises(LossurfError, match=r"no trainable parameters .*model.requires_grad_\(True\)"):
        hessian.top_eigenpairs(frozen, b, data, k=1)


@pytest.mark.parametrize("eps", ["1e-3", ["1e-3"], None, {"a": 1}])
def test_eps_sharpness_refuses_what_is_not_a_number(setup, eps):
    model, _, b, _, _, data = setup
    with pytest.raises(LossurfError, match=r"eps must be a positive number or a list of them "
                                           r"\(e.g. 1e-3\), got "):
        hessian.eps_sharpness(model, b, data, eps=eps)


def test_eps_sharpness_takes_numpy_numbers(setup):
    import numpy as np

    model, _, b, _, _, data = setup
    ds = hessian.eps_sharpness(model, b, data, eps=np.float32(1e-3), sharpness_steps=1)
    assert ds.eps.values.tolist() == pytest.approx([1e-3])
