"""lossurf.models: architectures against hand-counted parameters and hand-written forwards,
seeding, options and their error messages, and compatibility with functional_call,
channels_last and torch.compile."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lossurf.config import ModelSpec
from lossurf.errors import LossurfError
from lossurf.models import MODELS, build, names, options, resolve_options

# Small enough that every registered model builds and runs in milliseconds.
TINY = {
    "nin": {"width": 0.25},
    "vgg": {"width": 0.25},
    "lstm": {"vocab_size": 50, "width": 16},
    "nin-small": {},
    "vgg-small": {},
    "cnn-small": {},
    "mlp": {},
}
CONV = ["nin", "vgg", "nin-small", "vgg-small", "cnn-small"]


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def example_input(name: str, batch: int = 2) -> torch.Tensor:
    if name == "lstm":
        return torch.randint(0, 50, (batch, 7), generator=torch.Generator().manual_seed(1))
    size, channels = (32, 3) if name in ("nin", "vgg") else (8, 1)
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- registry

def test_registry_lists_every_model() -> None:
    assert names() == sorted(MODELS) == sorted(TINY)
    assert options("nin") == {
        "num_classes": 10, "in_channels": 3, "batch_norm": True, "dropout": 0.5, "width": 1.0
    }


# ---------------------------------------------------------------- parameter counts

NIN_CONVS = [  # (in, out, kernel) of nin.lua's nine convolutions
    (3, 192, 5), (192, 160, 1), (160, 96, 1),
    (96, 192, 5), (192, 192, 1), (192, 192, 1),
    (192, 192, 3), (192, 192, 1), (192, 10, 1),
]  # fmt: skip


def test_nin_parameter_count_matches_layer_list() -> None:
    # conv weights: 3*192*25 + 192*160 + 160*96 + 96*192*25 + 3*192*192 + 192*192*9 + 192*10
    #             = 14400 + 30720 + 15360 + 460800 + 110592 + 331776 + 1920 = 965568
    # BatchNorm scale+shift: 2*(192+160+96+192+192+192+192+192+10) = 2*1418 = 2836
    # (no conv biases: BatchNorm's shift replaces them)
    weights = sum(cin * cout * k * k for cin, cout, k in NIN_CONVS)
    assert weights == 965568
    assert count(build({"name": "nin"})) == 965568 + 2836 == 968404
    # Without batch norm each conv has a bias instead: 965568 + 1418.
    assert count(build({"name": "nin", "options": {"batch_norm": False}})) == 965568 + 1418


def test_vgg_parameter_count_matches_layer_list() -> None:
    convs = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
             (256, 512)] + [(512, 512)] * 5  # fmt: skip
    conv_weights = sum(9 * cin * cout for cin, cout in convs)
    # 9*(192 + 4096 + 8192 + 16384 + 32768 + 2*65536 + 131072 + 5*262144) = 14710464
    assert conv_weights == 14710464
    bn2d = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)  # 8448
    head = 512 * 512 + 2 * 512 + 512 * 10 + 10  # fc1 (no bias) + BatchNorm1d + fc2: 268298
    assert count(build({"name": "vgg"})) == 14710464 + 8448 + 268298 == 14987210
    # width 0.25, no batch norm: channels 16,32,64,128,128 with biases; fc1 128->128 with bias.
    quarter = [(3, 16), (16, 16), (16, 32), (32, 32), (32, 64), (64, 64), (64, 64),
               (64, 128)] + [(128, 128)] * 5  # fmt: skip
    expected = sum(9 * i * o + o for i, o in quarter) + (128 * 128 + 128) + (128 * 10 + 10)
    spec = {"name": "vgg", "options": {"width": 0.25, "batch_norm": False}}
    assert count(build(spec)) == expected


def test_small_and_lstm_parameter_counts() -> None:
    # cnn-small: conv 1->16 3x3, BN 16, conv 16->32 3x3, BN 32, Linear(32*2*2, 10)
    assert count(build({"name": "cnn-small"})) == 144 + 32 + 4608 + 64 + 1290
    # vgg-small: 16-16-M-32-32-M, four BNs, Linear(128, 10)
    assert count(build({"name": "vgg-small"})) == (
        9 * (16 + 256 + 512 + 1024) + 2 * (16 + 16 + 32 + 32) + 1290
    )
    # nin-small: 24-24-24 / 48-48-10 with BN, within the 10-30k the digits runs want
    nin_small = 9 * 24 + 24 * 24 * 2 + 9 * 24 * 48 + 48 * 48 + 48 * 10
    nin_small += 2 * (24 * 3 + 48 * 2 + 10)
    assert count(build({"name": "nin-small"})) == nin_small == 14876
    # mlp 64 -> 64 -> 64 -> 10 with biases
    assert count(build({"name": "mlp"})) == 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10
    # lstm: embedding V*W, per layer 4W*(W+W) weights + 2*4W biases, decoder W*V + V
    v, w = 50, 16
    lstm = v * w + 2 * (4 * w * 2 * w + 8 * w) + w * v + v
    assert count(build({"name": "lstm", "options": TINY["lstm"]})) == lstm
    tied = build({"name": "lstm", "options": {**TINY["lstm"], "tie_weights": True}})
    assert tied.decoder.weight is tied.embedding.weight
    assert count(tied) == lstm - w * v


# ---------------------------------------------------------------- forward

@pytest.mark.parametrize("name", sorted(TINY))
def test_forward_shapes_and_inputs_untouched(name: str) -> None:
    model = build({"name": name, "options": TINY[name]}, seed=0)
    x = example_input(name)
    before, version = x.clone(), x._version
    out = model(x)
    expected = (2, 7, 50) if name == "lstm" else (2, 10)
    assert out.shape == expected and torch.isfinite(out).all()
    assert torch.equal(x, before) and x._version == version  # no in-place op on the input


def test_nin_spatial_sizes_follow_nin_lua() -> None:
    # ceil-mode 3/2 pools take 32 -> 16 -> 8, where nin.lua's 8x8 average pool ends.
    model = build({"name": "nin", "options": {"width": 0.25, "num_classes": 7}}).eval()
    f = model.features
    x = torch.randn(2, 3, 32, 32)
    h = f.pool1(f.mlp1b(f.mlp1a(f.conv1(x))))
    assert h.shape == (2, 24, 16, 16)
    h = f.pool2(f.mlp2b(f.mlp2a(f.conv2(h))))
    assert h.shape == (2, 48, 8, 8)
    out = model(x)
    assert out.shape == (2, 7)
    assert (out >= 0).all()  # nin.lua ends in BN + ReLU before the average pool


def test_vgg_reaches_one_by_one_and_accepts_other_inputs() -> None:
    model = build({"name": "vgg", "options": {"width": 0.25}})
    assert model.features(torch.randn(2, 3, 32, 32)).shape == (2, 128, 1, 1)
    gray = build({"name": "vgg", "options": {"width": 0.25, "in_channels": 1, "num_classes": 4}})
    assert gray.eval()(torch.randn(2, 1, 8, 8)).shape == (2, 4)  # ceil pools keep 1x1


def test_small_convs_run_on_32x32_too() -> None:
    for name in ("nin-small", "vgg-small", "cnn-small"):
        model = build({"name": name, "options": {"in_channels": 3}})
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_mlp_flattens_images_and_vectors_alike() -> None:
    model = build({"name": "mlp", "options": {"hidden": [32]}}, seed=0)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(model(x), model(x.reshape(5, 64)))
    assert build({"name": "mlp", "options": {"in_channels": 3}}).layers.fc1.in_features == 192
    assert build({"name": "mlp", "options": {"in_features": 30}}).layers.fc1.in_features == 30
    assert build({"name": "mlp", "options": {"hidden": []}}).layers.out.in_features == 64


def test_cnn_small_equals_hand_written_forward() -> None:
    model = build({"name": "cnn-small"}, seed=3).eval()
    sd = model.state_dict()
    with torch.no_grad():  # give BN non-trivial running statistics
        for key in sd:
            if key.endswith("running_mean"):
                sd[key].normal_()
            if key.endswith("running_var"):
                sd[key].uniform_(0.5, 2.0)
    x = torch.randn(4, 1, 8, 8)

    def bn(h: torch.Tensor, p: str) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        mean, var = sd[f"{p}.running_mean"].view(shape), sd[f"{p}.running_var"].view(shape)
        scale, shift = sd[f"{p}.weight"].view(shape), sd[f"{p}.bias"].view(shape)
        return (h - mean) / torch.sqrt(var + 1e-3) * scale + shift

    h = bn(F.conv2d(x, sd["features.conv1.conv.weight"], padding=1), "features.conv1.bn")
    h = F.max_pool2d(h.clamp(min=0), 2)
    h = bn(F.conv2d(h, sd["features.conv2.conv.weight"], padding=1), "features.conv2.bn")
    h = F.max_pool2d(h.clamp(min=0), 2)  # already 2x2: the adaptive pool is the identity
    expected = h.flatten(1) @ sd["fc.weight"].T + sd["fc.bias"]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-5)


def test_lstm_equals_naive_cell_loop() -> None:
    model = build({"name": "lstm", "options": {"vocab_size": 11, "width": 6}}, seed=0).eval()
    x = torch.randint(0, 11, (3, 5))
    sd = model.state_dict()
    h_in = sd["embedding.weight"][x]  # [B, T, W]
    for layer in range(2):
        w_ih, w_hh = sd[f"rnn.weight_ih_l{layer}"], sd[f"rnn.weight_hh_l{layer}"]
        b = sd[f"rnn.bias_ih_l{layer}"] + sd[f"rnn.bias_hh_l{layer}"]
        h, c, outs = torch.zeros(3, 6), torch.zeros(3, 6), []
        for t in range(5):  # gates in PyTorch's order: input, forget, cell, output
            i, f, g, o = (h_in[:, t] @ w_ih.T + h @ w_hh.T + b).chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        h_in = torch.stack(outs, dim=1)
    expected = h_in @ sd["decoder.weight"].T + sd["decoder.bias"]
    torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    # A fresh zero state every call: the same batch twice gives the same logits.
    assert torch.equal(model(x), model(x))


def test_lstm_zaremba_init_range() -> None:
    model = build({"name": "lstm", "options": {"vocab_size": 300, "width": 32}}, seed=0)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    assert flat.abs().max() <= 0.1
    assert abs(flat.std().item() - 0.2 / 12**0.5) < 2e-3  # std of U(-0.1, 0.1)


# ---------------------------------------------------------------- seeding

@pytest.mark.parametrize("name", sorted(TINY))
def test_same_seed_same_weights_and_global_rng_untouched(name: str) -> None:
    spec = {"name": name, "options": TINY[name]}
    state = torch.get_rng_state()
    a, b = build(spec, seed=7).state_dict(), build(spec, seed=7).state_dict()
    c = build(spec, seed=8).state_dict()
    assert torch.equal(torch.get_rng_state(), state)
    assert list(a) == list(b) == list(c)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_no_seed_draws_from_global_rng() -> None:
    torch.manual_seed(5)
    a = build({"name": "cnn-small"}).state_dict()
    torch.manual_seed(5)
    b = build({"name": "cnn-small"}).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = build({"name": "cnn-small"}).state_dict()  # RNG advanced: new weights
    assert not torch.equal(a["fc.weight"], c["fc.weight"])


def test_spec_object_and_dict_build_the_same() -> None:
    spec = ModelSpec(name="vgg-small", options={"dropout": 0.1})
    a = build(spec, seed=1).state_dict()
    b = build(spec.model_dump(), seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------- options

@pytest.mark.parametrize("name", ["nin", "vgg", "nin-small", "vgg-small", "cnn-small", "mlp"])
def test_batch_norm_switch(name: str) -> None:
    on = build({"name": name, "options": {**TINY[name], "batch_norm": True}})
    off = build({"name": name, "options": {**TINY[name], "batch_norm": False}})
    bn_types = (nn.BatchNorm1d, nn.BatchNorm2d)
    assert any(isinstance(m, bn_types) for m in on.modules())
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in off.modules())
    # conv biases appear exactly when batch norm goes away
    convs_on = [m for m in on.modules() if isinstance(m, nn.Conv2d)]
    convs_off = [m for m in off.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is None for m in convs_on) and all(m.bias is not None for m in convs_off)


def test_batch_norm_module_counts_and_eps() -> None:
    nin = build({"name": "nin", "options": {"width": 0.25}})
    bns = [m for m in nin.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 9 and all(m.eps == 1e-3 for m in bns)  # cifar.torch's eps
    vgg = build({"name": "vgg", "options": {"width": 0.25}})
    assert sum(isinstance(m, nn.BatchNorm2d) for m in vgg.modules()) == 13
    assert sum(isinstance(m, nn.BatchNorm1d) for m in vgg.modules()) == 1


def test_dropout_rates() -> None:
    def rates(model: nn.Module) -> list[float]:
        return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]

    vgg_rates = [0.3, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.5, 0.5]  # vgg_bn_drop.lua
    assert rates(build({"name": "vgg", "options": {"width": 0.25}})) == vgg_rates
    half = rates(build({"name": "vgg", "options": {"width": 0.25, "dropout": 0.5}}))
    assert half == pytest.approx([r / 2 for r in vgg_rates])
    assert rates(build({"name": "nin", "options": {"width": 0.25}})) == [0.5, 0.5]
    for name in CONV + ["lstm"]:
        opts = {**TINY[name], "dropout": 0.0}
        assert all(p == 0 for p in rates(build({"name": name, "options": opts})))
    for name in ("nin", "vgg", "nin-small", "vgg-small", "cnn-small", "mlp"):
        model = build({"name": name, "options": {**TINY[name], "dropout": 0}})
        assert rates(model) == []  # disabled dropout leaves no module behind


def test_width_and_data_options() -> None:
    model = build({"name": "nin", "options": {"width": 0.5, "in_channels": 1, "num_classes": 3}})
    assert model.features.conv1.conv.weight.shape == (96, 1, 5, 5)
    assert model.features.mlp3b.conv.weight.shape == (3, 96, 1, 1)


def test_state_dict_keys_are_named() -> None:
    keys = list(build({"name": "cnn-small"}).state_dict())
    assert keys == [
        "features.conv1.conv.weight",
        "features.conv1.bn.weight",
        "features.conv1.bn.bias",
        "features.conv1.bn.running_mean",
        "features.conv1.bn.running_var",
        "features.conv1.bn.num_batches_tracked",
        "features.conv2.conv.weight",
        "features.conv2.bn.weight",
        "features.conv2.bn.bias",
        "features.conv2.bn.running_mean",
        "features.conv2.bn.running_var",
        "features.conv2.bn.num_batches_tracked",
        "fc.weight",
        "fc.bias",
    ]
    # dropout does not shift any key
    with_drop = build({"name": "nin", "options": {"width": 0.25, "dropout": 0.3}})
    without = build({"name": "nin", "options": {"width": 0.25, "dropout": 0.0}})
    assert list(with_drop.state_dict()) == list(without.state_dict())


def test_resolve_options_keeps_what_the_model_takes() -> None:
    data = {"num_classes": 10, "in_channels": 1, "in_features": 64}
    assert resolve_options("cnn-small", data, {"width": 2.0}) == {
        "width": 2.0, "num_classes": 10, "in_channels": 1
    }
    assert resolve_options("mlp", data, {"num_classes": 3}) == data  # the data's classes win
    assert resolve_options("lstm", {"vocab_size": 99}) == {"vocab_size": 99}


# ---------------------------------------------------------------- errors

def test_unknown_model() -> None:
    with pytest.raises(LossurfError, match=r"unknown model 'resnet'; use one of: cnn-small, lstm"):
        build({"name": "resnet"})
    with pytest.raises(LossurfError, match="unknown model"):
        resolve_options("resnet", {})


def test_unknown_option_lists_valid_ones() -> None:
    with pytest.raises(
        LossurfError,
        match=r"model 'nin' has no option 'widht'; valid options: batch_norm, dropout, "
        r"in_channels, num_classes, width",
    ):
        build({"name": "nin", "options": {"widht": 0.5}})


@pytest.mark.parametrize(
    ("name", "option", "value", "expected"),
    [
        ("nin", "width", "wide", "float"),
        ("vgg", "batch_norm", 1, "bool"),
        ("lstm", "layers", True, "int"),
        ("lstm", "layers", 2.0, "int"),
        ("mlp", "hidden", [64, 1.5], "a list of int"),
        ("mlp", "hidden", 64, "a list of int"),
        ("mlp", "in_features", "64", "int or null"),
    ],
)
def test_ill_typed_option(name: str, option: str, value: object, expected: str) -> None:
    with pytest.raises(
        LossurfError, match=rf"model '{name}': option '{option}' must be {expected}, got .*"
        r"valid options: "
    ):
        build({"name": name, "options": {option: value}})


def test_int_accepted_where_float_expected() -> None:
    assert count(build({"name": "nin-small", "options": {"width": 1}})) == 14876


@pytest.mark.parametrize(
    ("name", "options_", "message"),
    [
        ("nin", {"dropout": 1.0}, r"'dropout' must be a dropout probability in \[0, 1\)"),
        ("mlp", {"dropout": -0.1}, r"'dropout' must be a dropout probability"),
        ("vgg", {"dropout": 2.0}, r"'dropout' scales cifar.torch's rates .* \[0, 2\)"),
        ("cnn-small", {"width": 0.0}, r"'width' must be > 0"),
        ("nin", {"num_classes": 0}, r"'num_classes' must be > 0"),
        ("lstm", {"layers": 0}, r"'layers' must be > 0"),
        ("mlp", {"hidden": [64, 0]}, r"'hidden' must list positive layer widths"),
    ],
)
def test_invalid_option_values(name: str, options_: dict, message: str) -> None:
    with pytest.raises(LossurfError, match=message):
        build({"name": name, "options": options_})


def test_invalid_spec() -> None:
    with pytest.raises(LossurfError, match=r"invalid model spec: name: Field required"):
        build({"options": {}})
    with pytest.raises(LossurfError, match=r"init.scheme: Input should be 'default' or 'normal'"):
        build({"name": "mlp", "init": {"scheme": "xavier"}})
    with pytest.raises(LossurfError, match="must be a mapping"):
        build(5)  # type: ignore[arg-type]
    with pytest.raises(LossurfError, match=r"invalid model spec: optionz: Extra inputs are not "
                                           r"permitted \(did you mean 'options'\?\); valid "
                                           r"fields here: init, name, options"):
        build({"name": "mlp", "optionz": {}})


# ---------------------------------------------------------------- functional_call, layouts

@pytest.mark.parametrize("name", ["cnn-small", "nin", "lstm"])
def test_functional_call_matches_loaded_weights(name: str) -> None:
    opts = {**TINY[name], "dropout": 0.0}
    a = build({"name": name, "options": opts}, seed=0).eval()
    b = build({"name": name, "options": opts}, seed=1).eval()
    x = example_input(name)
    state = dict(b.state_dict())
    out = torch.func.functional_call(a, state, (x,))
    torch.testing.assert_close(out, b(x))
    assert not torch.equal(a(x), b(x))  # a itself is unchanged


def test_functional_call_tied_lstm() -> None:
    opts = {**TINY["lstm"], "tie_weights": True}
    a = build({"name": "lstm", "options": opts}, seed=0).eval()
    b = build({"name": "lstm", "options": opts}, seed=1).eval()
    x = example_input("lstm")
    params = {k: v for k, v in b.named_parameters()}  # tied weight listed once
    torch.testing.assert_close(torch.func.functional_call(a, params, (x,)), b(x))


@pytest.mark.parametrize("name", sorted(TINY))
def test_fx_trace_matches(name: str) -> None:
    # The surface evaluator rewrites fx traces (BN folding): every model must trace.
    model = build({"name": name, "options": TINY[name]}, seed=0).eval()
    x = example_input(name)
    traced = torch.fx.symbolic_trace(model)
    torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", ["nin", "cnn-small", "mlp"])
def test_vmap_over_stacked_weights(name: str) -> None:
    # The GPU evaluator runs many weight vectors per pass with vmap (nn.LSTM has no vmap rule).
    models_ = [build({"name": name, "options": TINY[name]}, seed=s).eval() for s in range(3)]
    params, buffers = torch.func.stack_module_state(models_)
    x = example_input(name)

    def run(p: dict, b: dict) -> torch.Tensor:
        return torch.func.functional_call(models_[0], (p, b), (x,))

    out = torch.vmap(run)(params, buffers)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models_]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", CONV)
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = build({"name": name, "options": TINY[name]}, seed=0).eval()
    x = example_input(name, batch=3)
    reference = model(x)
    model_cl = model.to(memory_format=torch.channels_last)
    out = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cnn-small", "nin"])
def test_torch_compile_full_graph(name: str) -> None:
    # aot_eager traces exactly as inductor does (graph breaks would fail fullgraph) without
    # needing a C++ compiler on the test machine.
    torch._dynamo.reset()
    model = build({"name": name, "options": TINY[name]}, seed=0).eval()
    x = example_input(name)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x), model(x))


def test_build_moves_to_device() -> None:
    model = build({"name": "mlp"}, seed=0, device="cpu")
    assert next(model.parameters()).device.type == "cpu"
