"""ONNX import: PyTorch models exported by torch.onnx.export read into numcnn give PyTorch's
outputs; numcnn -> ONNX -> numcnn gives the same model; anything else is refused by node, and
nothing in a file is trusted (sizes bounded, no external data)."""

import contextlib
import io as stdio
import json
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn as tnn

import numcnn
import numcnn as nc
import numcnn.data
from numcnn import io, models, nn
from numcnn import onnx as numcnn_onnx
from numcnn.onnx import OnnxError, _export, _import

onnx = pytest.importorskip("onnx")
sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
from test_onnx_export import LAYERS, every_layer_model, small_resnet, trained_like  # noqa: E402

TOLERANCE = 1e-5


def torch_to_onnx(model, input_shape, path=None, **options):
    """torch.onnx.export (the TorchScript exporter) with a dynamic batch axis."""
    buffer = stdio.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (torch.randn(2, *input_shape),), buffer, dynamo=False,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=17, **options)
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return onnx.load_from_string(buffer.getvalue())


def torch_to_onnx_dynamo(model, input_shape):
    """torch.onnx.export's default exporter in torch 2.13 (dynamo=True, needs onnxscript)."""
    pytest.importorskip("onnxscript")
    with warnings.catch_warnings(), contextlib.redirect_stdout(stdio.StringIO()):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model.eval(), (torch.randn(2, *input_shape),), dynamo=True,
                                    input_names=["input"], output_names=["logits"],
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    return program.model_proto


def test_a_resnet_from_the_dynamo_exporter():
    """(Reshape for Flatten, ReduceMean for the adaptive pooling, opset 18+; the preset twins
    come out as from the TorchScript exporter.)"""
    torch.manual_seed(0)
    model, shape = torch_resnet(), (1, 15, 15)
    randomise_torch_statistics(model)
    proto = torch_to_onnx_dynamo(model, shape)
    assert proto.opset_import[0].version >= 18
    assert_matches_torch(model, _import._from_proto(proto), shape)


def randomise_torch_statistics(model):
    for module in model.modules():
        if isinstance(module, tnn.BatchNorm2d):
            module.running_mean.normal_(0, 0.3)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.normal_(0, 0.2)


def assert_matches_torch(torch_model, numcnn_model, input_shape, batch=16):
    x = np.random.default_rng(1).standard_normal((batch, *input_shape)).astype(np.float32)
    with torch.no_grad():
        expected = torch_model.eval()(torch.from_numpy(x)).numpy()
    with nc.no_grad():
        got = np.ascontiguousarray(numcnn_model.eval()(x))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE * np.abs(expected).max()


def torch_twin(preset):
    """The PyTorch model of a preset's spec, with PyTorch's own random weights."""
    layers = []
    for spec in models.PRESETS[preset]["spec"]["layers"]:
        kind = spec["type"]
        args = {k: v for k, v in spec.items() if k != "type"}
        layers.append(getattr(tnn, kind)(**args))
    return tnn.Sequential(*layers)


class TorchBlock(tnn.Module):
    """ResNet's basic block with an identity shortcut: relu(x + bn(conv(relu(bn(conv(x))))))."""

    def __init__(self, c):
        super().__init__()
        self.conv1 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c)
        self.conv2 = tnn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c)

    def forward(self, x):
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


def torch_resnet():
    return tnn.Sequential(tnn.Conv2d(1, 8, 3, padding=1, bias=False), tnn.BatchNorm2d(8),
                          tnn.ReLU(), TorchBlock(8), TorchBlock(8),
                          tnn.Conv2d(8, 16, 3, stride=2, padding=1), tnn.ReLU(), TorchBlock(16),
                          tnn.MaxPool2d(2, ceil_mode=True), tnn.AdaptiveAvgPool2d(1),
                          tnn.Flatten(), tnn.Linear(16, 10))


SEQUENTIAL_PRESETS = sorted(name for name, entry in models.PRESETS.items()
                            if all("type" in spec and spec["type"] in dir(tnn)
                                   for spec in entry["spec"].get("layers", [{}]))
                            and tuple(entry["input_shape"]) == (1, 28, 28))


@pytest.mark.parametrize("preset", SEQUENTIAL_PRESETS)
def test_pytorch_twins_of_the_presets(preset, tmp_path):
    torch.manual_seed(0)
    twin = torch_twin(preset)
    randomise_torch_statistics(twin)
    torch_to_onnx(twin, (1, 28, 28), tmp_path / "twin.onnx")
    model = numcnn_onnx.load(tmp_path / "twin.onnx")
    assert model.metadata["input_shape"] == [1, 28, 28]
    assert_matches_torch(twin, model, (1, 28, 28))


@pytest.mark.parametrize("options", [{}, {"training": torch.onnx.TrainingMode.PRESERVE}],
                         ids=["batch-norm-folded", "batch-norm-kept"])
def test_a_small_pytorch_resnet(options, tmp_path):
    torch.manual_seed(0)
    resnet = torch_resnet()
    randomise_torch_statistics(resnet)
    proto = torch_to_onnx(resnet, (1, 15, 15), **options)
    model = _import._from_proto(proto)
    residuals = [m for m in model.modules() if isinstance(m, nn.Residual)]
    assert len(residuals) == 3
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == bool(options)
    assert_matches_torch(resnet, model, (1, 15, 15))

    # the imported model can be trained further: one step changes it and gives gradients
    model.train()
    x = np.random.default_rng(0).standard_normal((4, 1, 15, 15)).astype(np.float32)
    criterion = nn.CrossEntropyLoss()
    criterion(model(x), np.array([0, 1, 2, 3]))
    model.backward(criterion.backward())
    assert all(np.isfinite(p.grad).all() and np.abs(p.grad).sum() > 0
               for p in model.parameters())


def test_pytorch_layers_beyond_the_presets(tmp_path):
    torch.manual_seed(0)
    model = tnn.Sequential(
        tnn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect"), tnn.LeakyReLU(0.1),
        tnn.Conv2d(4, 4, 3, padding=1, groups=2, dilation=1), tnn.Sigmoid(),
        tnn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
        tnn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), tnn.Tanh(),
        tnn.MaxPool2d(3, stride=1, padding=1, dilation=1), tnn.Dropout(0.2),
        tnn.Flatten(), tnn.Linear(3 * 8 * 8, 5), tnn.LogSoftmax(dim=1))
    proto = torch_to_onnx(model, (2, 8, 8))
    assert_matches_torch(model, _import._from_proto(proto), (2, 8, 8))


def test_round_trip_numcnn_onnx_numcnn_is_identical(tmp_path):
    for model, shape in [(models.preset(name), tuple(models.PRESETS[name]["input_shape"]))
                         for name in models.PRESETS] + [(small_resnet(), (1, 16, 16))]:
        rng = np.random.default_rng(0)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean[...] = rng.normal(0, 0.3, module.num_features)
                module.running_var[...] = rng.uniform(0.5, 2, module.num_features)
        model.eval()
        numcnn_onnx.export(model, tmp_path / "m.onnx", shape)
        back = numcnn_onnx.load(tmp_path / "m.onnx")
        state, back_state = model.state_dict(), back.state_dict()
        assert list(state) == list(back_state)
        for key in state:
            assert np.array_equal(state[key], back_state[key]), key
        x = rng.standard_normal((8, *shape)).astype(np.float32)
        with nc.no_grad():
            assert np.array_equal(np.ascontiguousarray(model(x)),
                                  np.ascontiguousarray(back(x)))
        if not any(isinstance(m, nn.GlobalAvgPool2d) for m in model.modules()):
            assert models.to_spec(back) == models.to_spec(model)


def assert_same_outputs(model, back, shape):
    x = np.random.default_rng(0).standard_normal((3, *shape)).astype(np.float32)
    with nc.no_grad():
        assert np.array_equal(np.ascontiguousarray(model.eval()(x)),
                              np.ascontiguousarray(back(x)), equal_nan=True)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_round_trip_of_each_layer_gives_the_same_outputs(name):
    """Every layer case comes back: the subgraphs numcnn writes for layers without an ONNX
    operator of their own (LPPool2d, overlapping adaptive bins, divisor_override, windows that
    ceil_mode lets hang over the edge) are read back as those layers."""
    make, shape = LAYERS[name]
    model = nn.Sequential(make()).eval()
    back = _import._from_proto(_export.build(model, shape))
    assert_same_outputs(model, back, shape)
    kinds = {type(m) for m in model.modules()} - {nn.Sequential, nn.SeparableConv2d,
                                                   nn.Dropout, nn.Dropout2d, nn.Identity}
    back_kinds = {type(m) for m in back.modules()}
    if kinds <= {nn.GlobalAvgPool2d, nn.GlobalMaxPool2d} | back_kinds:
        return
    assert kinds <= back_kinds | {nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d}, (kinds, back)


def test_round_trip_of_a_model_using_every_layer_type():
    model = every_layer_model().eval()
    back = _import._from_proto(_export.build(model, (2, 13, 11)))
    assert_same_outputs(model, back, (2, 13, 11))
    circular = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"))
    back = _import._from_proto(_export.build(circular, (2, 6, 6), opset=19))
    assert back[0].padding_mode == "circular"
    assert_same_outputs(circular, back, (2, 6, 6))


def test_folded_preprocessing_comes_back_as_metadata(tmp_path):
    model, prep, pixels = trained_like()
    numcnn_onnx.export(model, tmp_path / "raw.onnx", fold_preprocessing=True)
    back = numcnn_onnx.load(tmp_path / "raw.onnx")
    assert back.metadata["preprocessing"] == prep.to_dict()
    assert_same_outputs(model, back, (1, 28, 28))

    # a graph from elsewhere that starts with x * gain - offset: the preprocessing is derived
    proto = _export.build(model, fold_preprocessing=True)
    del proto.metadata_props[:]
    back = _import._from_proto(proto)
    derived = numcnn.data.Preprocessing.from_dict(back.metadata["preprocessing"])
    assert np.allclose(derived.apply(pixels), prep.apply(pixels), rtol=1e-5, atol=1e-5)

    # metadata that contradicts the graph is refused
    other = numcnn.data.Preprocessing(scale=1 / 255, mean=(0.5,), std=(0.2,),
                                      input_shape=(1, 28, 28))
    proto = _export.build(model, fold_preprocessing=True, preprocessing=other)
    for prop in proto.metadata_props:
        if prop.key == "preprocessing":
            prop.value = json.dumps(prep.to_dict())
    with pytest.raises(OnnxError, match="not the one its metadata records"):
        _import._from_proto(proto)


def test_metadata_comes_back_and_cli_import(tmp_path):
    from numcnn import cli

    model, prep, _ = trained_like()
    numcnn_onnx.export(model, tmp_path / "m.onnx")
    assert cli.main(["import", str(tmp_path / "m.onnx"), "-o", str(tmp_path / "m.numcnn")]) == 0
    back = io.load(tmp_path / "m.numcnn")
    assert back.metadata["preprocessing"] == prep.to_dict()
    assert back.metadata["classes"] == [str(k) for k in range(10)]
    assert back.metadata["input_shape"] == [1, 28, 28]
    assert cli.main(["import", str(tmp_path / "none.onnx"), "-o", str(tmp_path / "x")]) == 1


class TorchProjection(tnn.Module):
    """ResNet's downsampling block: relu(bn(conv(relu(bn(conv(x))))) + bn(conv1x1(x)))."""

    def __init__(self, c_in, c_out):
        super().__init__()
        self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = tnn.BatchNorm2d(c_out)
        self.conv2 = tnn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = tnn.BatchNorm2d(c_out)
        self.shortcut = tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride=2, bias=False),
                                       tnn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + self.shortcut(x))


def test_projection_shortcuts_are_read_as_residual_blocks_with_a_shortcut(tmp_path):
    """f(x) + g(x) (two computed branches from one input, as in ResNet's downsampling blocks,
    and the resnet-cifar preset) becomes nn.Residual(f, shortcut=g)."""
    torch.manual_seed(0)
    twin = tnn.Sequential(tnn.Conv2d(3, 8, 3, padding=1, bias=False), tnn.BatchNorm2d(8),
                          tnn.ReLU(), TorchProjection(8, 16), TorchProjection(16, 16),
                          tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(16, 10))
    randomise_torch_statistics(twin)
    torch_to_onnx(twin, (3, 16, 16), tmp_path / "resnet.onnx")
    model = numcnn_onnx.load(tmp_path / "resnet.onnx")
    assert sum(isinstance(m, nn.Residual) and m.shortcut is not None
               for m in model.modules()) == 2
    assert_matches_torch(twin, model, (3, 16, 16))


def test_unsupported_graphs_are_refused_naming_the_node(tmp_path):
    with pytest.raises(OnnxError, match=r"node '/1/Elu' \(Elu\): operator Elu has no numcnn "
                                        r"layer; numcnn reads Abs, Add, AveragePool"):
        _import._from_proto(torch_to_onnx(tnn.Sequential(tnn.Linear(4, 4), tnn.ELU()), (4,)))
    with pytest.raises(OnnxError, match=r"node '/1/Div' \(Div\): a division is read only as "
                                        r"AvgPool2d's"):  # GELU: x * (1 + erf(x / sqrt 2)) / 2
        _import._from_proto(torch_to_onnx(tnn.Sequential(tnn.Linear(4, 4), tnn.GELU()), (4,)))
    with pytest.raises(OnnxError, match=r"\(Conv\): only 1-D and 2-D"):
        _import._from_proto(torch_to_onnx(tnn.Conv3d(1, 2, 3), (1, 5, 5, 5)))


def test_hostile_files_are_refused_before_allocating(tmp_path):
    helper, TensorProto = onnx.helper, onnx.TensorProto

    def graph_with(weight, path):
        node = helper.make_node("Conv", ["input", "w"], ["out"], name="conv")
        graph = helper.make_graph(
            [node], "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                        ["batch", 1, 8, 8])],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 6, 6])],
            initializer=[weight])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        path.write_bytes(model.SerializeToString())
        return path

    huge = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 20, 1 << 20, 3, 3],
                       raw_data=bytes(36))  # claims 10^13 values, holds 9
    path = graph_with(huge, tmp_path / "huge.onnx")
    with pytest.raises(OnnxError, match=r"too small for the declared shape"):  # onnx.checker
        numcnn_onnx.load(path)
    with pytest.raises(OnnxError, match=r"'w' has shape \[1048576, 1048576, 3, 3\], more than"):
        _import._from_proto(onnx.load_from_string(path.read_bytes()))  # numcnn's own bound
    bomb = helper.make_node("ConstantOfShape", ["shape"], ["w"], name="bomb")
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [1 << 20, 1 << 20, 3, 3])
    conv = helper.make_node("Conv", ["input", "w"], ["out"], name="conv")
    graph = helper.make_graph(
        [bomb, conv], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 1, 6, 6])],
        initializer=[shape])
    with pytest.raises(OnnxError, match=r"'bomb' \(ConstantOfShape\): computing constants of"):
        _import._from_proto(helper.make_model(graph,
                                              opset_imports=[helper.make_opsetid("", 17)]))
    external = helper.make_tensor("w", TensorProto.FLOAT, [1, 1, 3, 3], np.ones(9).tolist())
    external.data_location = TensorProto.EXTERNAL
    entry = external.external_data.add()
    entry.key, entry.value = "location", "/etc/passwd"
    external.ClearField("float_data")
    with pytest.raises(OnnxError, match="external data file"):
        numcnn_onnx._import._from_proto(onnx.load_from_string(
            graph_with(external, tmp_path / "ext.onnx").read_bytes()))
    doublings = [helper.make_node("Concat", [f"c{i}", f"c{i}"], [f"c{i + 1}"], axis=0,
                                  name=f"double{i}") for i in range(40)]
    ones = helper.make_tensor("c0", TensorProto.FLOAT, [16], np.ones(16).tolist())
    graph = helper.make_graph(
        doublings + [helper.make_node("Relu", ["input"], ["out"], name="relu")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
        initializer=[ones])
    with pytest.raises(OnnxError, match=r"'double\d+' \(Concat\): computing constants of"):
        _import._from_proto(helper.make_model(graph,
                                              opset_imports=[helper.make_opsetid("", 17)]))
    (tmp_path / "junk.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(OnnxError, match="not an ONNX model|invalid"):
        numcnn_onnx.load(tmp_path / "junk.onnx")
    proto = _export.build(models.preset("lenet5"), (1, 28, 28))
    (tmp_path / "big.onnx").write_bytes(proto.SerializeToString())
    with pytest.raises(OnnxError, match="more than the 1,000 bytes"):
        numcnn_onnx.load(tmp_path / "big.onnx", max_bytes=1000)


def test_a_graph_exported_for_one_batch_size_takes_any():
    """torch.onnx.export without dynamic axes fixes the batch (here 1) and flattens with
    Reshape(x, [1, -1]); numcnn reads that 1 as the batch axis."""
    helper, TensorProto = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 18)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"], name="relu"),
         helper.make_node("Reshape", ["r", "shape"], ["flat"], name="flatten", allowzero=1),
         helper.make_node("Gemm", ["flat", "w"], ["out"], name="fc", transB=1)], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 3, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4])],
        initializer=[helper.make_tensor("shape", TensorProto.INT64, [2], [1, -1]),
                     onnx.numpy_helper.from_array(weight, "w")])
    model = _import._from_proto(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert [type(m) for m in model] == [nn.ReLU, nn.Flatten, nn.Linear]
    x = rng.standard_normal((5, 2, 3, 3)).astype(np.float32)
    with nc.no_grad():
        got = np.ascontiguousarray(model(x))
    assert np.allclose(got, np.maximum(x, 0).reshape(5, 18) @ weight.T, atol=1e-6)
