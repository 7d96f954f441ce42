"""Architectures as data: spec round trips for every layer type, presets against PyTorch, refusals."""

import json
import re
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

import numcnn
from numcnn import models, nn
from numcnn.models import SpecError, build, load_spec, to_spec
from tests.helpers import tol

# One or more instances of every registered type, built with arguments away from the defaults
# (so a round trip that dropped an argument would show), and an input shape for each.
EXAMPLES = {
    "Conv1d": [(lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, dilation=2, groups=2,
                                  bias=False), (2, 2, 11)),
               (lambda: nn.Conv1d(2, 3, 4, padding="same", padding_mode="circular"), (2, 2, 9))],
    "Conv2d": [(lambda: nn.Conv2d(2, 4, (3, 2), stride=(2, 1), padding=(1, 0), dilation=(1, 2),
                                  groups=2), (2, 2, 9, 8)),
               (lambda: nn.Conv2d(3, 2, 3, padding="same", bias=False, padding_mode="reflect"),
                (2, 3, 6, 6))],
    "ConvTranspose2d": [(lambda: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1,
                                                    output_padding=1), (2, 2, 4, 5)),
                        (lambda: nn.ConvTranspose2d(2, 4, (2, 3), groups=2, bias=False,
                                                    dilation=2), (2, 2, 4, 5))],
    "SeparableConv2d": [(lambda: nn.SeparableConv2d(2, 4, 3, stride=2, padding=1, bias=False,
                                                    padding_mode="replicate", depth_multiplier=2),
                         (2, 2, 7, 6))],
    "MaxPool2d": [(lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True, split_ties=True),
                   (2, 2, 8, 7)),
                  (lambda: nn.MaxPool2d((2, 3), dilation=2), (2, 2, 9, 9))],
    "AvgPool2d": [(lambda: nn.AvgPool2d((3, 2), stride=(2, 1), padding=1,
                                        count_include_pad=False), (2, 2, 8, 7)),
                  (lambda: nn.AvgPool2d(2, ceil_mode=True, divisor_override=3), (2, 2, 5, 5))],
    "LPPool2d": [(lambda: nn.LPPool2d(3.0, 2, stride=1, ceil_mode=True), (2, 2, 6, 6))],
    "AdaptiveAvgPool2d": [(lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 2, 7, 5))],
    "AdaptiveMaxPool2d": [(lambda: nn.AdaptiveMaxPool2d(3), (2, 2, 7, 5))],
    "GlobalAvgPool2d": [(lambda: nn.GlobalAvgPool2d(), (2, 3, 4, 5))],
    "GlobalMaxPool2d": [(lambda: nn.GlobalMaxPool2d(), (2, 3, 4, 5))],
    "Flatten": [(lambda: nn.Flatten(start_dim=2), (2, 3, 4, 5))],
    "Linear": [(lambda: nn.Linear(5, 3), (4, 5)), (lambda: nn.Linear(5, 2, bias=False), (4, 5))],
    "Dropout": [(lambda: nn.Dropout(0.3, inplace=True), (4, 5))],
    "Dropout2d": [(lambda: nn.Dropout2d(p=0.2), (2, 3, 4, 4))],
    "BatchNorm1d": [(lambda: nn.BatchNorm1d(5, eps=1e-3, momentum=0.2), (6, 5))],
    "BatchNorm2d": [(lambda: nn.BatchNorm2d(3, momentum=0.3), (4, 3, 5, 5)),
                    (lambda: nn.BatchNorm2d(3, affine=False, momentum=None), (4, 3, 5, 5)),
                    (lambda: nn.BatchNorm2d(3, track_running_stats=False), (4, 3, 5, 5))],
    "ReLU": [(lambda: nn.ReLU(inplace=True), (3, 4))],
    "LeakyReLU": [(lambda: nn.LeakyReLU(0.2, inplace=True), (3, 4))],
    "Sigmoid": [(lambda: nn.Sigmoid(), (3, 4))],
    "Tanh": [(lambda: nn.Tanh(), (3, 4))],
    "Gaussian": [(lambda: nn.Gaussian(), (3, 4))],
    "Softmax": [(lambda: nn.Softmax(dim=0), (3, 4))],
    "LogSoftmax": [(lambda: nn.LogSoftmax(dim=1), (3, 4))],
    "Identity": [(lambda: nn.Identity(), (3, 4))],
    "GELU": [(lambda: nn.GELU(approximate="tanh"), (3, 4))],
    "SiLU": [(lambda: nn.SiLU(), (3, 4))],
    "ELU": [(lambda: nn.ELU(alpha=0.5), (3, 4))],
    "Softplus": [(lambda: nn.Softplus(beta=2.0, threshold=5.0), (3, 4))],
    "Hardswish": [(lambda: nn.Hardswish(), (3, 4))],
    "PReLU": [(lambda: nn.PReLU(4, init=0.1), (3, 4))],
    "LayerNorm": [(lambda: nn.LayerNorm((3, 4), eps=1e-3, bias=False), (2, 3, 4)),
                  (lambda: nn.LayerNorm(4, elementwise_affine=False), (2, 4))],
    "GroupNorm": [(lambda: nn.GroupNorm(2, 4, eps=1e-3, affine=False), (2, 4, 3))],
    "InstanceNorm2d": [(lambda: nn.InstanceNorm2d(3, momentum=0.3, affine=True,
                                                  track_running_stats=True), (2, 3, 4, 4))],
    "MaxPool1d": [(lambda: nn.MaxPool1d(3, stride=2, padding=1, dilation=2, ceil_mode=True),
                   (2, 3, 9))],
    "AvgPool1d": [(lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False),
                   (2, 3, 9))],
    "MaxUnpool2d": [(lambda: nn.MaxUnpool2d(2, stride=2), (2, 3, 3, 4))],
    "Upsample": [(lambda: nn.Upsample(size=(5, 7), mode="bilinear", align_corners=True),
                  (2, 3, 3, 4)),
                 (lambda: nn.Upsample(scale_factor=(2.0, 1.5)), (2, 3, 3, 4))],
    "Sequential": [(lambda: nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), (5, 4)),
                   (lambda: nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 2, 3), act=nn.Tanh())),
                    (2, 1, 5, 5))],
    "Residual": [(lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1),
                                                    nn.BatchNorm2d(2), nn.ReLU())),
                  (2, 2, 5, 5)),
                 (lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 3, 3, stride=2, padding=1),
                                                    nn.BatchNorm2d(3)),
                                      shortcut=nn.Conv2d(2, 3, 1, stride=2, bias=False)),
                  (2, 2, 5, 5))],
}

CASES = [pytest.param(name, i, id=f"{name}-{i}")
         for name, examples in EXAMPLES.items() for i in range(len(examples))]


def test_every_registered_type_has_a_round_trip_example():
    missing = sorted(set(models.registry()) - set(EXAMPLES))
    assert not missing, f"add round-trip examples for {missing} to EXAMPLES"


def test_the_registry_holds_layers_only():
    registry = models.registry()
    assert "Module" not in registry and "Parameter" not in registry
    assert not any(name.endswith("Loss") for name in registry)
    assert all(issubclass(cls, nn.Module) for cls in registry.values())


def warm_up(model, shape, rng):
    """A few training-mode forwards, so batch-norm running statistics are not their defaults."""
    model.train()
    if isinstance(model, nn.MaxUnpool2d):  # two inputs, and no state to warm up
        return
    for _ in range(3):
        model(rng.standard_normal(shape).astype(np.float32))


@pytest.mark.parametrize("name, index", CASES)
def test_spec_round_trip(name, index):
    if name not in models.registry():
        pytest.skip(f"{name} is not in numcnn.nn")
    make, shape = EXAMPLES[name][index]
    rng = np.random.default_rng(0)
    original = make()
    assert type(original).__name__ == name
    warm_up(original, shape, rng)

    spec = to_spec(original)
    assert json.loads(json.dumps(spec)) == spec  # plain JSON
    assert spec["type"] == name
    numcnn.manual_seed(123)  # other initial weights: the outputs agree only through the state
    rebuilt = build(json.loads(json.dumps(spec)))
    assert type(rebuilt) is type(original)
    assert to_spec(rebuilt) == spec

    state, rebuilt_state = original.state_dict(), rebuilt.state_dict()
    assert list(rebuilt_state) == list(state)
    for key in state:
        assert rebuilt_state[key].shape == state[key].shape, key
        assert rebuilt_state[key].dtype == state[key].dtype, key
    rebuilt.load_state_dict(state)
    original.eval()
    rebuilt.eval()
    x = rng.standard_normal(shape).astype(np.float32)
    extra = ()
    if name == "MaxUnpool2d":  # the second input: where each maximum was, in a 2x2 window
        h, w = shape[2:]
        rows = 2 * np.arange(h)[:, None] + rng.integers(0, 2, shape)        # (n, c, h, w)
        cols = 2 * np.arange(w)[None, :] + rng.integers(0, 2, shape)
        extra = (rows * (2 * w) + cols,)
    with numcnn.no_grad():  # copies: some layers work in place
        np.testing.assert_array_equal(rebuilt(x.copy(), *extra), original(x.copy(), *extra))


def test_specs_name_constructor_arguments_as_pytorch_does():
    spec = to_spec(nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.Linear(3, 2, bias=False)))
    conv, linear = spec["layers"]
    assert conv["type"] == "Conv2d" and conv["in_channels"] == 1 and conv["out_channels"] == 16
    assert conv["kernel_size"] in (5, [5, 5]) and conv["padding"] in (2, [2, 2])
    assert conv["bias"] is True
    assert linear == {"type": "Linear", "in_features": 3, "out_features": 2, "bias": False}


# -- presets -------------------------------------------------------------------------------------
def torch_preset(name):
    t = torch.nn
    if name == "small-cnn":
        return t.Sequential(
            t.Conv2d(1, 4, kernel_size=3, padding=1), t.ReLU(),
            t.Conv2d(4, 8, kernel_size=3, padding=1), t.ReLU(),
            t.MaxPool2d(kernel_size=2, stride=2),
            t.Conv2d(8, 8, kernel_size=5, padding=1), t.ReLU(),
            t.Conv2d(8, 8, kernel_size=5, padding=1), t.ReLU(),
            t.MaxPool2d(kernel_size=2, stride=2),
            t.Flatten(), t.Linear(200, 64), t.ReLU(), t.Linear(64, 10))
    if name == "convnet-bn":
        return t.Sequential(
            t.Conv2d(1, 16, 5, padding=2), t.BatchNorm2d(16), t.ReLU(), t.MaxPool2d(2, 2),
            t.Conv2d(16, 32, 5, padding=2), t.BatchNorm2d(32), t.ReLU(), t.MaxPool2d(2, 2),
            t.Flatten(), t.Linear(1568, 10))
    if name == "lenet5":
        return t.Sequential(
            t.Conv2d(1, 6, 5, padding=2), t.Tanh(), t.AvgPool2d(2, 2),
            t.Conv2d(6, 16, 5), t.Tanh(), t.AvgPool2d(2, 2),
            t.Flatten(), t.Linear(400, 120), t.Tanh(), t.Linear(120, 84), t.Tanh(),
            t.Linear(84, 10))
    if name == "resnet-cifar":
        return TorchResNetCifar()
    raise KeyError(name)


class TorchBasicBlock(torch.nn.Module):
    """ResNet's basic block, written out in PyTorch (attribute names as numcnn's Residual)."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        t = torch.nn
        self.fn = t.Sequential(t.Conv2d(cin, cout, 3, stride, 1, bias=False), t.BatchNorm2d(cout),
                               t.ReLU(), t.Conv2d(cout, cout, 3, 1, 1, bias=False),
                               t.BatchNorm2d(cout))
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = t.Sequential(t.Conv2d(cin, cout, 1, stride, bias=False),
                                         t.BatchNorm2d(cout))

    def forward(self, x):
        return self.fn(x) + (x if self.shortcut is None else self.shortcut(x))


class TorchGlobalAvgPool(torch.nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3))


class TorchResNetCifar(torch.nn.Sequential):
    def __init__(self):
        t = torch.nn
        super().__init__(t.Conv2d(3, 16, 3, padding=1, bias=False), t.BatchNorm2d(16), t.ReLU(),
                         TorchBasicBlock(16, 16, 1), t.ReLU(), TorchBasicBlock(16, 32, 2),
                         t.ReLU(), TorchBasicBlock(32, 64, 2), t.ReLU(), TorchGlobalAvgPool(),
                         t.Linear(64, 10))


# Parameter counts worked out by hand: weights k*k*c_in*c_out + biases c_out per convolution,
# in*out + out per linear layer, 2*c per batch norm.
EXPECTED_PARAMETERS = {
    "small-cnn": (9 * 1 * 4 + 4) + (9 * 4 * 8 + 8) + (25 * 8 * 8 + 8) * 2 + (200 * 64 + 64)
    + (64 * 10 + 10),
    "convnet-bn": (25 * 16 + 16) + 2 * 16 + (25 * 16 * 32 + 32) + 2 * 32 + (1568 * 10 + 10),
    "lenet5": (25 * 6 + 6) + (25 * 6 * 16 + 16) + (400 * 120 + 120) + (120 * 84 + 84)
    + (84 * 10 + 10),
    # stem; stage 1 (two 3x3 16->16); stages 2 and 3 (3x3 in->out, 3x3 out->out, 1x1 in->out
    # shortcut, each with batch norm); the linear layer
    "resnet-cifar": (9 * 3 * 16 + 2 * 16) + 2 * (9 * 16 * 16 + 2 * 16)
    + sum(9 * cin * cout + 9 * cout * cout + cin * cout + 3 * 2 * cout
          for cin, cout in ((16, 32), (32, 64))) + (64 * 10 + 10),
}


def test_expected_parameter_counts():
    assert EXPECTED_PARAMETERS == {"small-cnn": 17_066, "convnet-bn": 29_034, "lenet5": 61_706,
                                   "resnet-cifar": 78_042}


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_preset_parameters_shapes_and_keys_match_pytorch(name):
    model = models.preset(name)
    reference = torch_preset(name)
    assert model.num_parameters() == EXPECTED_PARAMETERS[name]
    assert models.PRESETS[name]["num_parameters"] == EXPECTED_PARAMETERS[name]
    assert sum(p.numel() for p in reference.parameters()) == EXPECTED_PARAMETERS[name]
    ours = model.state_dict()
    theirs = reference.state_dict()
    assert list(ours) == list(theirs)
    for key in theirs:
        assert ours[key].shape == tuple(theirs[key].shape), key
    input_shape = tuple(models.PRESETS[name]["input_shape"])
    assert model.output_shape((7, *input_shape)) == (7, 10)


@pytest.mark.parametrize("name", list(models.PRESETS))
def test_preset_with_pytorch_weights_gives_pytorch_outputs(name):
    torch.manual_seed(0)
    reference = torch_preset(name).double()
    model = models.preset(name).double()
    x = np.random.default_rng(1).standard_normal((4, *models.PRESETS[name]["input_shape"]))
    with torch.no_grad():  # training-mode forwards move the batch-norm statistics
        for _ in range(2):
            reference(torch.tensor(x))
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    reference.eval()
    model.eval()
    with torch.no_grad(), numcnn.no_grad():
        expected = reference(torch.tensor(x)).numpy()
        np.testing.assert_allclose(model(x), expected, **tol(np.float64))
    reference.train()
    model.train()
    with torch.no_grad():
        np.testing.assert_allclose(model(x), reference(torch.tensor(x)).numpy(), **tol(np.float64))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_resnet_cifar_trains_as_its_pytorch_twin(dtype):
    """Same weights -> same outputs, loss, and gradients of every parameter and of the input
    (the stride-2 convolutions, projection shortcuts and residual sums included)."""
    torch.manual_seed(0)
    reference = TorchResNetCifar().to(torch.float64 if dtype == np.float64 else torch.float32)
    model = models.preset("resnet-cifar").to(dtype)
    model.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 3, 32, 32)).astype(dtype)
    target = rng.integers(0, 10, 8)
    model.train()
    reference.train()
    logits = model(x)
    criterion = nn.CrossEntropyLoss()
    loss = criterion(logits, target)
    model.zero_grad()
    grad_x = model.backward(criterion.backward())
    x_t = torch.tensor(x, requires_grad=True)
    logits_t = reference(x_t)
    loss_t = torch.nn.functional.cross_entropy(logits_t, torch.tensor(target))
    loss_t.backward()
    loose = dict(rtol=2e-3, atol=2e-4) if dtype == np.float32 else tol(np.float64)
    np.testing.assert_allclose(logits, logits_t.detach().numpy(), **loose)
    np.testing.assert_allclose(float(loss), loss_t.item(), **loose)
    np.testing.assert_allclose(grad_x, x_t.grad.numpy(), **loose)
    theirs = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        scale = float(np.abs(theirs[name].grad.numpy()).max())
        np.testing.assert_allclose(param.grad, theirs[name].grad.numpy(), rtol=loose["rtol"],
                                   atol=loose["atol"] * max(scale, 1.0), err_msg=name)
    state = model.state_dict()  # the running statistics moved alike
    for key, value in reference.state_dict().items():
        np.testing.assert_allclose(state[key], value.numpy(), **loose, err_msg=key)


def test_lenet5_uses_tanh_and_average_pooling():
    kinds = [layer["type"] for layer in models.PRESETS["lenet5"]["spec"]["layers"]]
    assert kinds.count("Tanh") == 4 and kinds.count("AvgPool2d") == 2 and "ReLU" not in kinds


def test_presets_are_seeded_and_unknown_presets_refused():
    numcnn.manual_seed(5)
    a = models.preset("small-cnn").state_dict()
    numcnn.manual_seed(5)
    b = models.preset("small-cnn").state_dict()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    with pytest.raises(SpecError, match="unknown preset 'resnet'; the presets are small-cnn"):
        models.preset("resnet")


# -- JSON files and refusals ---------------------------------------------------------------------
def test_load_spec_reads_a_hand_written_list_or_object(tmp_path):
    layers = [{"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
              {"type": "ReLU"}, {"type": "Flatten"},
              {"type": "Linear", "in_features": 2 * 4 * 4, "out_features": 3}]
    (tmp_path / "list.json").write_text(json.dumps(layers))
    (tmp_path / "object.json").write_text(json.dumps({"type": "Sequential", "layers": layers}))
    for file in ("list.json", "object.json"):
        model = load_spec(tmp_path / file)
        assert isinstance(model, nn.Sequential) and len(model) == 4
        assert model[0].weight.shape == (2, 1, 3, 3)
        assert model.output_shape((5, 1, 6, 6)) == (5, 3)
    assert models.create(str(tmp_path / "list.json")).num_parameters() == model.num_parameters()
    assert models.create("lenet5").num_parameters() == 61_706
    with pytest.raises(SpecError, match="'nope' is neither a preset"):
        models.create("nope")


@pytest.mark.parametrize("spec, message", [
    ([{"type": "ReLU"}, {"type": "Conv3d", "in_channels": 1}],
     r"^layers\[1\]: unknown layer type 'Conv3d'; known types: .*Conv2d"),
    ({"type": "Residual", "fn": {"type": "Sequential", "layers": [{"type": "os.system"}]}},
     r"^fn\.layers\[0\]: unknown layer type 'os\.system'"),
    ([{"type": "Module"}], r"^layers\[0\]: unknown layer type 'Module'"),
    ([{"type": "Parameter", "data": 1}], r"^layers\[0\]: unknown layer type 'Parameter'"),
    ([{"type": "CrossEntropyLoss"}], r"^layers\[0\]: unknown layer type 'CrossEntropyLoss'"),
    ([{"type": "__import__"}], r"unknown layer type '__import__'"),
    ([{"type": ["Linear"]}], r"unknown layer type \['Linear'\]"),
    ([{"in_features": 3}], r"^layers\[0\]: a layer needs a \"type\""),
    ([{"type": "Linear", "in_features": 3}], r"^layers\[0\]: Linear needs the argument "
                                             r"'out_features'"),
    ([{"type": "Linear", "in_features": 3, "out_features": 2, "weight": [1, 2]}],
     r"^layers\[0\]: Linear has no argument 'weight'; its arguments are in_features, "
     r"out_features, bias"),
    ([{"type": "Dropout", "p": 1.5}], r"^layers\[0\]: Dropout\(p=1\.5\) failed: .*between 0 and 1"),
    ([{"type": "Linear", "in_features": {"a": 1}, "out_features": 2}],
     r"^layers\[0\]\.in_features: an object as an argument must be a layer"),
    ({"type": "Sequential", "layers": {"type": "ReLU"}}, r"^spec: \"layers\" must be a list"),
    ({"type": "Sequential", "layers": [], "fn": 1}, r"^spec: Sequential takes \"layers\""),
    ("ReLU", r"^spec: expected a layer as a JSON object"),
])
def test_bad_specs_are_refused_with_the_place_in_the_spec(spec, message):
    with pytest.raises(SpecError, match=message):
        build(spec)


def test_load_spec_refuses_bad_files_naming_the_file(tmp_path):
    path = tmp_path / "model.json"
    path.write_text(json.dumps([{"type": "ReLU"}, {"type": "Conv3d"}]))
    with pytest.raises(SpecError, match=r"model\.json: layers\[1\]: unknown layer type 'Conv3d'"):
        load_spec(path)
    path.write_text('[{"type": "ReLU"},]')
    with pytest.raises(SpecError, match=r"model\.json: not valid JSON: .* line 1, column 19"):
        load_spec(path)
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff")
    with pytest.raises(SpecError, match="expected a JSON model description .* binary"):
        load_spec(path)
    path.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(SpecError, match="nested too deeply|more than 64 levels"):
        load_spec(path)
    with pytest.raises(SpecError,
                       match=r"missing\.json: no such file; expected a JSON model description"):
        load_spec(tmp_path / "missing.json")


def test_specs_nested_too_deeply_are_refused():
    spec = {"type": "Identity"}
    for _ in range(100):
        spec = {"type": "Residual", "fn": spec}
    with pytest.raises(SpecError, match="nested more than 64 levels deep"):
        build(spec)


def test_unregistered_classes_cannot_be_described_until_registered(monkeypatch):
    monkeypatch.setattr(models, "_REGISTERED", {})

    class Scale(nn.Module):
        def __init__(self, features, factor=2.0):
            super().__init__()
            self.features, self.factor = features, factor
            self.weight = nn.Parameter(np.full(features, factor, dtype=np.float32))

        def forward(self, x):
            return x * self.weight.data

    model = nn.Sequential(nn.Linear(3, 4), Scale(4, factor=0.5))
    with pytest.raises(SpecError, match=r"model\.layers\[1\]: .*Scale is not a registered layer "
                                        r"type; add it with numcnn\.models\.register\(Scale\)"):
        to_spec(model)
    models.register(Scale)
    spec = to_spec(model)
    assert spec["layers"][1] == {"type": "Scale", "features": 4, "factor": 0.5}
    assert build(spec)[1].weight.data.tolist() == [0.5] * 4

    class Linear(nn.Module):  # a second class under a registered name
        pass

    with pytest.raises(SpecError, match="a different class named 'Linear' is already registered"):
        models.register(Linear)


def test_a_layer_that_keeps_no_attribute_for_an_argument_cannot_be_described(monkeypatch):
    monkeypatch.setattr(models, "_REGISTERED", {})

    @models.register
    class Forgetful(nn.Module):
        def __init__(self, size):
            super().__init__()

    with pytest.raises(SpecError, match=r"model \(Forgetful\): the constructor argument 'size' is "
                                        r"kept in no attribute"):
        to_spec(Forgetful(3))


# -- docs/models.md ------------------------------------------------------------------------------
DOCS = Path(__file__).resolve().parent.parent / "docs" / "models.md"


def test_the_json_example_in_the_docs_builds_as_described():
    text = DOCS.read_text()
    block = re.search(r"```json\n(.*?)```", text, re.S).group(1)
    model = build(json.loads(block))
    assert model.output_shape((2, 1, 28, 28)) == (2, 10)
    assert model.num_parameters() == 80 + 16 + 576 + 16 + 1168 + 5770 == 7626
    assert "7,626" in text


def test_the_preset_tables_in_the_docs_give_the_real_totals():
    text = DOCS.read_text()
    for name in models.PRESETS:
        section = text.split(f"### `{name}`")[1].split("###")[0]
        rows = [line for line in section.splitlines() if re.match(r"\| \d+ \| `", line)]
        kinds = [re.match(r"\| \d+ \| `(\w+)\(", row).group(1) for row in rows]
        assert kinds == [layer["type"] for layer in models.PRESETS[name]["spec"]["layers"]]
        total = int(re.search(r"\*\*total\*\* \| \| \*\*([\d,]+)\*\*", section).group(1)
                    .replace(",", ""))
        assert total == models.preset(name).num_parameters()
