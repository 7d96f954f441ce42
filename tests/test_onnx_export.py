"""ONNX export: every layer, every preset and a residual model give in onnxruntime what they give
in numcnn (float32, batch 1 and 64); the graph passes onnx.checker; what cannot be exported is
refused by name."""

import json

import numpy as np
import pytest

import numcnn as nc
from numcnn import data, io, models, nn
from numcnn import onnx as numcnn_onnx
from numcnn.onnx import OnnxError

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOLERANCE = 1e-5  # max abs difference relative to the output's scale


def session(onnx_model):
    return ort.InferenceSession(onnx_model.SerializeToString(),
                                providers=["CPUExecutionProvider"])


def randomise_statistics(model, rng):
    """Running statistics away from (0, 1), so that batch norm's inference form is tested."""
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.running_mean is not None:
            module.running_mean[...] = rng.normal(0, 0.3, module.num_features)
            module.running_var[...] = rng.uniform(0.5, 2.0, module.num_features)
            if module.weight is not None:
                module.weight.data[...] = rng.uniform(0.5, 1.5, module.num_features)
                module.bias.data[...] = rng.normal(0, 0.2, module.num_features)


def assert_parity(model, input_shape, batches=(1, 64), opset=17, seed=0):
    """numcnn's output (eval mode) against onnxruntime's on the exported graph."""
    rng = np.random.default_rng(seed)
    randomise_statistics(model, rng)
    model.eval()
    proto = numcnn_onnx._export.build(model, input_shape, opset=opset)
    onnx.checker.check_model(proto, full_check=True)
    run = session(proto)
    for n in batches:
        x = rng.standard_normal((n, *input_shape)).astype(np.float32)
        with nc.no_grad():
            expected = np.ascontiguousarray(model(x))
        got = run.run(None, {"input": x})[0]
        assert got.shape == expected.shape
        assert np.array_equal(np.isnan(got), np.isnan(expected))
        finite = ~np.isnan(expected)
        assert finite.mean() > 0.5
        scale = max(float(np.abs(expected[finite]).max()), 1e-12)
        assert float(np.abs(got - expected)[finite].max()) <= TOLERANCE * scale, (n, model)
    return proto


# One model per layer type and setting; each sees a random (N, C, H, W) or (N, C, L) input.
LAYERS = {
    "conv2d": (lambda: nn.Conv2d(3, 5, 3, stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
               (3, 11, 12)),
    "conv2d-groups-nobias": (lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False), (4, 9, 9)),
    "conv2d-same": (lambda: nn.Conv2d(2, 3, 4, padding="same"), (2, 9, 8)),
    "conv2d-full": (lambda: nn.Conv2d(2, 3, 3, padding="full", dilation=2), (2, 7, 7)),
    "conv2d-reflect": (lambda: nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (2, 8, 7)),
    "conv2d-replicate": (lambda: nn.Conv2d(2, 3, 5, padding=2, padding_mode="replicate"),
                         (2, 8, 7)),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, stride=2, padding=1, dilation=2), (3, 17)),
    "conv1d-reflect": (lambda: nn.Conv1d(3, 4, 5, padding="same", padding_mode="reflect"),
                       (3, 12)),
    "conv-transpose2d": (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1,
                                                    output_padding=1, groups=2, dilation=1),
                         (4, 6, 5)),
    "conv-transpose2d-dilated": (lambda: nn.ConvTranspose2d(3, 2, (2, 3), stride=(1, 2),
                                                            dilation=2, bias=False), (3, 5, 4)),
    "separable": (lambda: nn.SeparableConv2d(3, 5, 3, padding=1, depth_multiplier=2), (3, 8, 8)),
    "max-pool": (lambda: nn.MaxPool2d(2), (3, 8, 9)),
    "max-pool-pad-dilation": (lambda: nn.MaxPool2d(3, stride=2, padding=1, dilation=2),
                              (2, 11, 10)),
    "max-pool-ceil": (lambda: nn.MaxPool2d(2, stride=2, padding=1, ceil_mode=True), (2, 5, 7)),
    "max-pool-ceil-3": (lambda: nn.MaxPool2d(3, stride=2, ceil_mode=True), (2, 8, 9)),
    "avg-pool": (lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 9, 8)),
    "avg-pool-exclude-pad-ceil": (lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                                       count_include_pad=False), (2, 8, 10)),
    "avg-pool-include-pad-ceil": (lambda: nn.AvgPool2d(2, stride=2, padding=1, ceil_mode=True),
                                  (2, 6, 7)),
    "avg-pool-divisor": (lambda: nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True,
                                              divisor_override=4), (2, 8, 9)),
    "lp-pool-2": (lambda: nn.LPPool2d(2, 2), (3, 8, 8)),
    "lp-pool-3-ceil": (lambda: nn.LPPool2d(3, (3, 2), stride=2, ceil_mode=True), (2, 9, 8)),
    # fractional p: positive inputs (a negative x^p is NaN in both)
    "lp-pool-1.5": (lambda: nn.Sequential(nn.Sigmoid(), nn.LPPool2d(1.5, 2)), (2, 6, 6)),
    "lp-pool-minus-inf": (lambda: nn.LPPool2d(float("-inf"), 2, ceil_mode=True), (2, 5, 7)),
    "lp-pool-inf": (lambda: nn.LPPool2d(float("inf"), 2), (2, 6, 6)),
    "adaptive-avg-blocks": (lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 8, 9)),
    "adaptive-avg-overlapping": (lambda: nn.AdaptiveAvgPool2d((3, 4)), (3, 7, 10)),
    "adaptive-avg-none": (lambda: nn.AdaptiveAvgPool2d((None, 3)), (2, 5, 7)),
    "adaptive-max-blocks": (lambda: nn.AdaptiveMaxPool2d(2), (3, 8, 8)),
    "adaptive-max-overlapping": (lambda: nn.AdaptiveMaxPool2d((3, 4)), (3, 7, 10)),
    "global-avg": (lambda: nn.GlobalAvgPool2d(), (4, 5, 6)),
    "global-max": (lambda: nn.GlobalMaxPool2d(), (4, 5, 6)),
    "batch-norm2d": (lambda: nn.BatchNorm2d(3, eps=1e-3), (3, 5, 5)),
    "batch-norm2d-no-affine": (lambda: nn.BatchNorm2d(3, affine=False), (3, 5, 5)),
    "batch-norm1d-2d": (lambda: nn.BatchNorm1d(6), (6,)),
    "batch-norm1d-3d": (lambda: nn.BatchNorm1d(4), (4, 7)),
    "relu": (lambda: nn.ReLU(), (3, 4, 4)),
    "leaky-relu": (lambda: nn.LeakyReLU(0.2), (3, 4, 4)),
    "sigmoid": (lambda: nn.Sigmoid(), (3, 4, 4)),
    "tanh": (lambda: nn.Tanh(), (3, 4, 4)),
    "gaussian": (lambda: nn.Gaussian(), (3, 4, 4)),
    "softmax": (lambda: nn.Softmax(dim=1), (10,)),
    "softmax-spatial": (lambda: nn.Softmax(dim=-1), (2, 3, 5)),
    "log-softmax": (lambda: nn.LogSoftmax(dim=1), (10,)),
    "flatten": (lambda: nn.Flatten(), (3, 4, 5)),
    "flatten-middle": (lambda: nn.Flatten(2, 3), (3, 4, 5)),
    "linear": (lambda: nn.Linear(12, 7), (12,)),
    "linear-3d-nobias": (lambda: nn.Linear(5, 4, bias=False), (3, 5)),
    "linear-3d": (lambda: nn.Linear(5, 4), (3, 5)),
    "dropout": (lambda: nn.Dropout(0.3), (3, 4)),
    "dropout2d": (lambda: nn.Dropout2d(0.3), (3, 4, 4)),
    "identity": (lambda: nn.Identity(), (3, 4)),
    "residual": (lambda: nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())),
                 (3, 6, 6)),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_each_layer_matches_onnxruntime(name):
    make, input_shape = LAYERS[name]
    assert_parity(nn.Sequential(make()), input_shape)


def test_circular_padding_needs_opset_19():
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"))
    with pytest.raises(OnnxError, match=r"0 \(Conv2d\).*circular.*opset 19"):
        numcnn_onnx._export.build(model, (2, 6, 6))
    assert_parity(model, (2, 6, 6), opset=19)


@pytest.mark.parametrize("preset", sorted(models.PRESETS))
def test_every_preset_matches_onnxruntime(preset):
    model = models.preset(preset)
    proto = assert_parity(model, tuple(models.PRESETS[preset]["input_shape"]))
    weights = {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
    assert weights <= {tensor.name for tensor in proto.graph.initializer}  # state_dict names
    ops = {node.op_type for node in proto.graph.node}
    assert "Gemm" in ops and "Conv" in ops
    assert proto.opset_import[0].version == 17


def small_resnet():
    def block(c):
        return nn.Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(c), nn.ReLU(),
                                         nn.Conv2d(c, c, 3, padding=1, bias=False),
                                         nn.BatchNorm2d(c)))
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         block(8), nn.ReLU(),
                         nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
                         block(16), nn.ReLU(),
                         nn.GlobalAvgPool2d(), nn.Linear(16, 10))


def test_a_residual_model_matches_onnxruntime():
    proto = assert_parity(small_resnet(), (1, 16, 16))
    assert sum(node.op_type == "Add" for node in proto.graph.node) == 2


def every_layer_model():
    """One model using every layer type (input (2, 13, 11))."""
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding="same", padding_mode="reflect"), nn.BatchNorm2d(4),
        nn.LeakyReLU(0.2), nn.Conv2d(4, 4, 3, padding=1, padding_mode="replicate", groups=2),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())),
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1),
        nn.SeparableConv2d(6, 8, 3, padding=1, depth_multiplier=2), nn.Sigmoid(),
        nn.AvgPool2d(3, 2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.LPPool2d(2, 2, ceil_mode=True), nn.Tanh(), nn.Gaussian(), nn.Dropout2d(),
        nn.AdaptiveAvgPool2d((3, 5)), nn.AdaptiveMaxPool2d((2, 3)), nn.Identity(),
        nn.Flatten(), nn.Dropout(), nn.Linear(48, 20), nn.BatchNorm1d(20), nn.ReLU(),
        nn.Linear(20, 10), nn.LogSoftmax(dim=1))


def test_a_model_using_every_layer_type_matches_onnxruntime():
    assert_parity(every_layer_model(), (2, 13, 11))
    conv1d = nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.BatchNorm1d(5), nn.ReLU(),
                           nn.Flatten(), nn.Linear(50, 4), nn.Softmax(dim=1))
    assert_parity(conv1d, (3, 10))


def test_layers_without_an_onnx_form_are_refused_by_name():
    class Custom(nn.Module):
        def forward(self, x):
            return x

    with pytest.raises(OnnxError, match=r"model\.1 \(.*Custom\): no ONNX export"):
        numcnn_onnx._export.build(nn.Sequential(nn.ReLU(), Custom()), (3,))
    with pytest.raises(OnnxError, match=r"model\.0 \(MaxPool2d\).*return_indices"):
        numcnn_onnx._export.build(nn.Sequential(nn.MaxPool2d(2, return_indices=True)), (1, 4, 4))
    with pytest.raises(OnnxError, match=r"BatchNorm2d.*track_running_stats=False"):
        numcnn_onnx._export.build(nn.Sequential(nn.BatchNorm2d(2, track_running_stats=False)),
                                  (2, 3, 3))
    with pytest.raises(OnnxError, match=r"input_shape"):
        numcnn_onnx._export.build(nn.Sequential(nn.ReLU()))
    with pytest.raises(OnnxError, match=r"does not take inputs of shape \(N, 2, 28, 28\)"):
        numcnn_onnx._export.build(models.preset("small-cnn"), (2, 28, 28))


def trained_like(preset="small-cnn", seed=0):
    """A preset with the metadata `numcnn train` records: preprocessing fitted on byte images."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(32, 1, 28, 28), dtype=np.uint8)
    model = models.preset(preset)
    prep = data.Preprocessing.fit(pixels)
    object.__setattr__(model, "metadata", {"preprocessing": prep.to_dict(),
                                           "classes": [str(k) for k in range(10)],
                                           "input_shape": [1, 28, 28]})
    return model, prep, pixels


def test_metadata_dynamic_batch_and_folded_preprocessing(tmp_path):
    model, prep, pixels = trained_like()
    path = tmp_path / "model.onnx"
    numcnn_onnx.export(model, path)
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["preprocessing"]) == prep.to_dict()
    assert json.loads(props["classes"]) == [str(k) for k in range(10)]
    assert json.loads(props["input_shape"]) == [1, 28, 28]
    assert props["preprocessing_folded"] == "false"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [1, 28, 28]
    assert proto.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"

    with nc.no_grad():
        expected = np.ascontiguousarray(model.eval()(prep.apply(pixels)))
    got = session(proto).run(None, {"input": prep.apply(pixels)})[0]
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()

    raw = numcnn_onnx.export(model, tmp_path / "raw.onnx", fold_preprocessing=True)
    assert [n.op_type for n in raw.graph.node[:2]] == ["Mul", "Sub"]
    assert {p.key: p.value for p in raw.metadata_props}["preprocessing_folded"] == "true"
    got = session(raw).run(None, {"input": pixels.astype(np.float32)})[0]
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()

    bare = models.preset("small-cnn")
    with pytest.raises(OnnxError, match="records no preprocessing"):
        numcnn_onnx.export(bare, tmp_path / "x.onnx", (1, 28, 28), fold_preprocessing=True)


def test_missing_onnx_package_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(OnnxError, match=r'pip install "numcnn\[onnx\]"'):
        numcnn_onnx._export.build(nn.Sequential(nn.ReLU()), (3,))


def test_cli_export(tmp_path):
    from numcnn import cli

    model, prep, pixels = trained_like("convnet-bn")
    io.save(model, tmp_path / "model.numcnn")
    out = tmp_path / "model.onnx"
    assert cli.main(["export", str(tmp_path / "model.numcnn"), "-o", str(out),
                     "--raw-pixels"]) == 0
    loaded = io.load(tmp_path / "model.numcnn")
    with nc.no_grad():
        expected = np.ascontiguousarray(loaded(prep.apply(pixels)))
    got = session(onnx.load(str(out))).run(None, {"input": pixels.astype(np.float32)})[0]
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()
    assert cli.main(["export", str(tmp_path / "nothing.numcnn"), "-o", str(out)]) == 1


def test_an_opset_the_installed_onnx_does_not_know_is_refused():
    """An opset newer than the onnx package knows would write a model no runtime loads."""
    onnx = pytest.importorskip("onnx")
    newest = onnx.defs.onnx_opset_version()
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    numcnn_onnx._export.build(model, (1, 2, 2), opset=newest)
    with pytest.raises(OnnxError, match=rf"opset must be an int from 17 to {newest} .* got "
                                        rf"{newest + 1}"):
        numcnn_onnx._export.build(model, (1, 2, 2), opset=newest + 1)
