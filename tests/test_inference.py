"""Inference plans (numcnn.inference): the compiled plan against the layer-by-layer path.

The layer-by-layer eval forward under ``no_grad`` is the reference here (it is held to PyTorch
by the layer tests); a plan must give the same outputs to float32 rounding at every batch
size, and refuse what it cannot serve.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict

import numpy as np
import pytest

import numcnn
from numcnn import backend, inference, models, nn
from numcnn.errors import NumcnnError, ShapeError

needs_kernels = pytest.mark.skipif(not backend.available(), reason="compiled kernels not built")


def _randomise_batch_norms(model, seed: int = 0):
    """Running statistics and affine parameters away from their initial 0/1, so that folding
    them is tested."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            c = module.num_features
            module.running_mean[...] = rng.normal(0, 0.2, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
            if module.weight is not None:
                module.weight.data[...] = rng.uniform(0.5, 1.5, c)
                module.bias.data[...] = rng.normal(0, 0.2, c)
    return model


def _reference(model, x):
    with numcnn.no_grad():
        return np.array(model(x))


def _assert_matches(plan, model, x):
    out = plan(x)
    ref = _reference(model, x)
    assert out.shape == ref.shape and out.dtype == np.float32
    scale = max(float(np.abs(ref).max()), 1e-3)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=2e-5 * scale)


def _images(n, shape=(1, 28, 28), seed=1):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


class ProjectedResidual(nn.Residual):
    """``fn(x) + shortcut(x)``: the Residual with a projection shortcut that ResNet's strided
    blocks use (numcnn's own Residual takes ``shortcut`` on another branch)."""

    def __init__(self, fn, shortcut=None):
        super().__init__(fn)
        self.shortcut = shortcut

    def forward(self, x):
        identity = x if self.shortcut is None else self.shortcut(x)
        return self.fn(x) + identity

    def output_shape(self, input_shape):
        return self.fn.output_shape(input_shape)


def _basic_block(cin, cout, stride):
    fn = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                       nn.BatchNorm2d(cout), nn.ReLU(),
                       nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                 nn.BatchNorm2d(cout))
    return ProjectedResidual(fn, shortcut)


def resnet_like():
    """A CIFAR-style ResNet: stem, an identity block, two strided blocks with 1x1 projection
    shortcuts, global average pooling, linear."""
    numcnn.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        _basic_block(8, 8, 1), nn.ReLU(),
        _basic_block(8, 16, 2), nn.ReLU(),
        _basic_block(16, 24, 2), nn.ReLU(),
        nn.GlobalAvgPool2d(), nn.Linear(24, 10))
    return _randomise_batch_norms(model).eval()


def every_layer_model():
    """Every layer type numcnn has that takes NCHW maps: the plan runs the ones it cannot fuse
    as their eval forward, between its C segments."""
    numcnn.manual_seed(4)
    model = nn.Sequential(OrderedDict([
        ("conv", nn.Conv2d(1, 6, 3, padding=1)), ("bn", nn.BatchNorm2d(6)), ("relu", nn.ReLU()),
        ("drop2d", nn.Dropout2d(0.3)), ("ident", nn.Identity()),
        ("grouped", nn.Conv2d(6, 6, 3, padding=1, groups=2)),
        ("bn_alone", nn.BatchNorm2d(6)), ("leaky", nn.LeakyReLU(0.1)),
        ("reflect", nn.Conv2d(6, 6, 3, padding=1, padding_mode="reflect")),
        ("res", nn.Residual(nn.Sequential(nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6)))),
        ("relu2", nn.ReLU()),
        ("res_fallback", nn.Residual(nn.Sequential(nn.Conv2d(6, 6, 1), nn.Sigmoid()))),
        ("pool_overlap", nn.MaxPool2d(3, stride=2, padding=1)),  # 14x14, not fused
        ("sep", nn.SeparableConv2d(6, 8, 3, padding=1)), ("sigmoid", nn.Sigmoid()),
        ("convt", nn.ConvTranspose2d(8, 8, 2, stride=2)), ("tanh", nn.Tanh()),
        ("conv_pool", nn.Conv2d(8, 8, 3, padding=1)), ("pool", nn.MaxPool2d(2)),  # fused
        ("relu3", nn.ReLU()),
        ("avg", nn.AvgPool2d(2)), ("lp", nn.LPPool2d(2, 1)), ("gauss", nn.Gaussian()),
        ("adaptive_max", nn.AdaptiveMaxPool2d(5)), ("adaptive_avg", nn.AdaptiveAvgPool2d(4)),
        ("strided", nn.Conv2d(8, 8, 3, stride=2, padding=1)), ("relu4", nn.ReLU()),
        ("flatten", nn.Flatten()), ("drop", nn.Dropout(0.5)),
        ("fc1", nn.Linear(32, 16)), ("bn1d", nn.BatchNorm1d(16)), ("relu5", nn.ReLU()),
        ("fc2", nn.Linear(16, 10)), ("log_softmax", nn.LogSoftmax(dim=1)),
    ]))
    return _randomise_batch_norms(model).eval()


@needs_kernels
@pytest.mark.parametrize("preset", ["convnet-bn", "small-cnn", "lenet5"])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_presets_match_the_layer_path(preset, n):
    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset(preset)).eval()
    plan = inference.compile(model, (1, 28, 28))
    _assert_matches(plan, model, _images(n))


@needs_kernels
def test_convnet_bn_at_batch_1000_is_folded_and_fused():
    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset("convnet-bn")).eval()
    plan = inference.compile(model, (1, 28, 28))
    lines = plan.describe()
    # one C segment: copy in, two fused conv+BN+ReLU+pool, the linear layer, copy out
    assert len(lines) == 5 and not any("Python" in line for line in lines)
    assert sum("batch norm folded" in line and "ReLU" in line and "max pool 2x2" in line
               for line in lines) == 2
    _assert_matches(plan, model, _images(1000))


@needs_kernels
def test_lenet5_runs_whole_in_c_with_tanh_and_average_pooling():
    numcnn.manual_seed(0)
    model = models.preset("lenet5").eval()
    plan = inference.compile(model, (1, 28, 28))
    lines = plan.describe()
    assert not any("Python" in line for line in lines)
    assert sum(line.endswith("+ tanh") for line in lines) == 4
    assert sum(line.startswith("avg pool 2x2") for line in lines) == 2
    for n in (1, 7, 64):
        _assert_matches(plan, model, _images(n, seed=n))


@needs_kernels
@pytest.mark.parametrize("n", [1, 7, 64])
def test_resnet_with_projection_shortcuts(n):
    model = resnet_like()
    plan = inference.compile(model, (3, 16, 16))
    lines = plan.describe()
    assert not any("Python" in line for line in lines)
    # each block's sum and the ReLU after it are in its last convolution's output loop
    assert sum("+ residual + ReLU" in line for line in lines) == 3
    assert sum("stride (2, 2)" in line for line in lines) == 4  # two 3x3, two 1x1 projections
    _assert_matches(plan, model, _images(n, (3, 16, 16)))


@needs_kernels
def test_resnet_at_batch_1000():
    model = resnet_like()
    plan = inference.compile(model, (3, 8, 8))
    _assert_matches(plan, model, _images(1000, (3, 8, 8)))


@pytest.mark.parametrize("n", [1, 7, 64])
def test_every_layer_type(n):
    model = every_layer_model()
    plan = inference.compile(model, (1, 28, 28))
    lines = plan.describe()
    if backend.available():
        assert any("Python" in line for line in lines)  # the fallbacks are there
        assert any("max pool 2x2" in line and line.startswith("conv") for line in lines)
    _assert_matches(plan, model, _images(n))


@needs_kernels
def test_odd_maps_pool_by_floor_and_stride_two_convs():
    numcnn.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 5, 3), nn.ReLU(), nn.MaxPool2d(2),      # 13 -> 6
                          nn.Conv2d(5, 7, 3, stride=2, padding=1), nn.MaxPool2d((1, 2)),  # -> 3x1
                          nn.ReLU(), nn.Conv2d(7, 3, (2, 1)),                  # (3, 1) -> (2, 1)
                          nn.Flatten(), nn.Linear(3 * 2 * 1, 4)).eval()
    plan = inference.compile(model, (2, 15, 15))
    for n in (1, 3, 70):
        _assert_matches(plan, model, _images(n, (2, 15, 15)))


@needs_kernels
def test_a_fully_convolutional_model_returns_maps():
    numcnn.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Dropout(0.2)).eval()
    plan = inference.compile(model, (1, 9, 11))
    x = _images(5, (1, 9, 11))
    out = plan(x)
    assert out.flags.c_contiguous and out.shape == (5, 4, 9, 11)
    _assert_matches(plan, model, x)


def test_a_plan_refuses_training_mode_and_wrong_shapes():
    assert numcnn.inference is inference  # reachable from `import numcnn`
    model = models.preset("convnet-bn")
    with pytest.raises(NumcnnError, match="eval mode"):
        inference.compile(model, (1, 28, 28))
    model.eval()
    plan = inference.compile(model, (1, 28, 28))
    with pytest.raises(ShapeError, match=r"\(N, 1, 28, 28\)"):
        plan(np.zeros((2, 1, 28, 27), np.float32))
    with pytest.raises(ShapeError):
        plan(np.zeros((1, 28, 28), np.float32))
    model.train()
    with pytest.raises(NumcnnError, match="eval mode"):
        plan(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ShapeError):
        inference.compile(model.eval(), (1, 27, 28, 3))


@needs_kernels
def test_a_plan_follows_weights_changed_after_compiling():
    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset("convnet-bn")).eval()
    plan = inference.compile(model, (1, 28, 28))
    x = _images(3)
    before = plan(x)
    model[0].weight.data *= 1.5            # in place, as an optimiser step does
    _assert_matches(plan, model, x)
    assert not np.allclose(plan(x), before)
    model[1].running_var[...] *= 2.0       # a batch-norm buffer, in place
    _assert_matches(plan, model, x)
    state = model.state_dict()             # replaced arrays, as load_state_dict makes
    state["9.bias"] = state["9.bias"] + 1.0
    model.load_state_dict(state)
    _assert_matches(plan, model, x)


def test_results_are_new_arrays_and_batch_sizes_are_cached():
    numcnn.manual_seed(0)
    model = models.preset("small-cnn").eval()
    plan = inference.compile(model, (1, 28, 28))
    a, b = _images(4, seed=1), _images(4, seed=2)
    out_a = plan(a)
    kept = out_a.copy()
    plan(b)
    plan(_images(9))
    np.testing.assert_array_equal(out_a, kept)  # the next call did not overwrite it
    np.testing.assert_array_equal(plan(a), kept)


def test_inputs_of_other_dtypes_and_layouts_are_taken():
    numcnn.manual_seed(0)
    model = models.preset("convnet-bn").eval()
    plan = inference.compile(model, (1, 28, 28))
    x = _images(6)
    ref = plan(x)
    np.testing.assert_allclose(plan(x.astype(np.float64)), ref, rtol=1e-6, atol=1e-6)
    fortran = np.asfortranarray(x)
    np.testing.assert_allclose(plan(fortran), ref, rtol=1e-6, atol=1e-6)


def test_without_kernels_and_in_float64_the_plan_is_the_layer_path():
    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset("convnet-bn")).eval()
    with backend.use_kernels(False):
        plan = inference.compile(model, (1, 28, 28))
        assert all("Python" in line for line in plan.describe())
        _assert_matches(plan, model, _images(3))
    model64 = models.preset("small-cnn").double().eval()
    plan64 = inference.compile(model64, (1, 28, 28))
    x = _images(2).astype(np.float64) / 3  # not float32 numbers: no cast on the way
    out = plan64(x)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, _reference(model64, x))


@needs_kernels
def test_two_threads_share_a_plan():
    numcnn.manual_seed(0)
    model = models.preset("convnet-bn").eval()
    plan = inference.compile(model, (1, 28, 28))
    inputs = [_images(5, seed=s) for s in range(2)]
    expected = [_reference(model, x) for x in inputs]
    failures = []

    def serve(k):
        for _ in range(20):
            if not np.allclose(plan(inputs[k]), expected[k], rtol=1e-4, atol=1e-5):
                failures.append(k)

    from numcnn.backend import plan_kernels

    plan_kernels.set_parallel_mflop(0)  # every operation on every core, then back
    try:
        for k in range(2):
            np.testing.assert_allclose(plan(inputs[k]), expected[k], rtol=1e-4, atol=1e-5)
    finally:
        plan_kernels.set_parallel_mflop(100)
    threads = [threading.Thread(target=serve, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


@needs_kernels
def test_compiling_is_quick_and_profile_names_each_operation():
    for name in ("convnet-bn", "small-cnn", "lenet5"):
        model = models.preset(name).eval()
        start = time.perf_counter()
        plan = inference.compile(model, (1, 28, 28))
        assert time.perf_counter() - start < 0.25  # about 1 ms measured; the CPU is shared
    resnet = resnet_like()
    start = time.perf_counter()
    plan = inference.compile(resnet, (3, 32, 32))
    assert time.perf_counter() - start < 0.25
    rows = plan.profile(_images(2, (3, 32, 32)), repeats=3)
    # the same operations, each convolution's name ending with the kernel that ran it, and the
    # frames of buffers that maps of other layouts share zeroed before they are written
    ops = [label for label, _ in rows if label != "zero frame"]
    assert len(ops) < len(rows)
    assert [label.split(" [")[0] for label in ops] == plan.describe()
    assert [label.endswith(("[direct, rows]", "[direct, channels]")) for label in ops] == [
        line.startswith("conv") for line in plan.describe()]
    assert all(seconds >= 0 for _, seconds in rows)


def test_train_predict_and_evaluate_use_a_plan_by_default(monkeypatch):
    from numcnn import train

    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset("convnet-bn")).train()
    x = _images(300)
    y = np.random.default_rng(0).integers(0, 10, 300)
    compiled = []
    real_compile = inference.compile

    def counting_compile(*args, **kwargs):
        compiled.append(args[1])
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(inference, "compile", counting_compile)
    with_plan = train.predict(model, x, batch_size=128)
    assert compiled == [(1, 28, 28)]  # one plan for the three batches (128, 128, 44)
    assert model.training  # put back in training mode afterwards
    without = train.predict(model, x, batch_size=128, compile=False)
    assert len(compiled) == 1
    np.testing.assert_allclose(with_plan, without, rtol=1e-4, atol=1e-6)
    a = train.evaluate(model, x, y, batch_size=100)
    b = train.evaluate(model, x, y, batch_size=100, compile=False)
    assert len(compiled) == 2
    np.testing.assert_array_equal(a.confusion, b.confusion)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


@needs_kernels
@pytest.mark.parametrize("preset", ["convnet-bn", "small-cnn"])
def test_a_plan_agrees_with_onnx_runtime(preset, tmp_path):
    """An independent oracle: the PyTorch twin (same weights, batch norm statistics included)
    exported to ONNX and run by ONNX Runtime, which folds and fuses in its own way."""
    ort = pytest.importorskip("onnxruntime")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "bench" / "bench.py"
    spec = importlib.util.spec_from_file_location("numcnn_bench_for_plan", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    numcnn.manual_seed(0)
    model = _randomise_batch_norms(models.preset(preset)).eval()
    bench.export_torch_twin(models.to_spec(model), model.state_dict(), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    plan = inference.compile(model, (1, 28, 28))
    for n in (1, 7):
        x = _images(n)
        expected = session.run(None, {"x": x})[0]
        scale = float(np.abs(expected).max())
        np.testing.assert_allclose(plan(x), expected, rtol=1e-4, atol=2e-5 * scale)


@needs_kernels
def test_the_fused_tanh_is_tanh_to_float32_rounding():
    """The plan's tanh (Cephes' polynomial and exp, vectorised) against NumPy's in float64,
    over both of its branches, their border, huge values, signed zeros, infinities and NaN, on
    the rows kernel (many samples) and the channels kernel (one)."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Tanh()).eval()
    model[0].weight.data[...] = 1
    plan = inference.compile(model, (1, 1, 1))
    x = np.concatenate([np.linspace(-12, 12, 40001, dtype=np.float32),
                        np.float32([0.0, -0.0, 1e-30, -1e-8, 0.624999, 0.625, -0.625001, 40,
                                    -100, 3e38, np.inf, -np.inf])])
    for batch in (x, x[7:8], x[-3:-2]):
        out = plan(batch.reshape(-1, 1, 1, 1)).ravel()
        expected = np.tanh(batch.astype(np.float64))
        np.testing.assert_allclose(out, expected, rtol=3e-7, atol=0)
        nonzero = batch != 0  # (a convolution's sum starts at +0, so -0 comes out +0)
        np.testing.assert_array_equal(np.signbit(out[nonzero]), np.signbit(expected[nonzero]))
    assert np.isnan(plan(np.float32([[[[np.nan]]]]))).all()


@needs_kernels
@pytest.mark.parametrize("n", [5, 64])
def test_wide_convolutions_sum_their_input_channels_in_chunks(n):
    """Many input channels: the rows kernel sums them in chunks that fit the L1 cache, keeping
    the partial sums in the output map, and adds the residual and applies ReLU after the last
    chunk only; rows of 65 numbers end in a partial vector, done again overlapping."""
    numcnn.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(3, 40, 3, padding=1), nn.ReLU(),
        nn.Residual(nn.Sequential(nn.Conv2d(40, 40, 3, padding=1), nn.BatchNorm2d(40))),
        nn.ReLU(), nn.Conv2d(40, 24, 7, padding=3), nn.ReLU(), nn.Conv2d(24, 8, 5, padding=2))
    model = _randomise_batch_norms(model).eval()
    plan = inference.compile(model, (3, 13, 13))
    _assert_matches(plan, model, _images(n, (3, 13, 13)))


def _winograd_block(c: int, seed: int = 6):
    """A 3x3 convolution of ``c`` channels with folded batch norm, a residual and ReLU: what
    the plan runs as Winograd's F(2x2, 3x3) on batches of 16 or more."""
    numcnn.manual_seed(seed)
    model = nn.Sequential(
        nn.Residual(nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(c))), nn.ReLU(),
        nn.Conv2d(c, 40, 3, padding=1))  # 40 outputs: a partial block of channels
    return _randomise_batch_norms(model).eval()


def _float64_reference(model, x):
    """The model's eval forward in float64, by PyTorch (the oracle)."""
    torch = pytest.importorskip("torch")
    block, conv = model[0].fn, model[2]
    bn = block[1]
    t = torch.from_numpy(x.astype(np.float64))
    weight = torch.from_numpy(block[0].weight.data.astype(np.float64))
    h = torch.nn.functional.conv2d(t, weight, padding=1)
    h = torch.nn.functional.batch_norm(
        h, torch.from_numpy(bn.running_mean.astype(np.float64)),
        torch.from_numpy(bn.running_var.astype(np.float64)),
        torch.from_numpy(bn.weight.data.astype(np.float64)),
        torch.from_numpy(bn.bias.data.astype(np.float64)), eps=bn.eps)
    h = torch.relu(h + t)
    out = torch.nn.functional.conv2d(h, torch.from_numpy(conv.weight.data.astype(np.float64)),
                                     torch.from_numpy(conv.bias.data.astype(np.float64)),
                                     padding=1)
    return out.numpy()


@needs_kernels
@pytest.mark.parametrize("n, hw, choice, kernel, bound", [
    (40, 8, "2", "F(2x2, 3x3)", 2), (64, 6, "", "F(2x2, 3x3)", 2),
    (40, 8, "", "F(4x4, 3x3)", 16), (200, 4, "", "F(4x4, 3x3)", 16)])
def test_winograd_agrees_with_float64_about_as_closely_as_the_direct_sum(n, hw, choice, kernel,
                                                                         bound, monkeypatch):
    """Winograd against PyTorch in float64, beside the direct sum's error: F(2x2, 3x3)
    (measured: about half the direct sum's error, fewer additions per output) and F(4x4, 3x3)
    (measured: about 9 times it, 4e-6 of the outputs' scale, its transforms' larger constants),
    and the plan says which it ran. F(4x4, 3x3) where the output map's sides are multiples of
    4, F(2x2, 3x3) on other even ones or when ``NUMCNN_WINOGRAD=2``. Batches of 40 (two
    vectors and an overlapping last one), 64 and 200 (lanes padded to 208)."""
    model = _winograd_block(32)
    x = _images(n, (32, hw, hw))
    expected = _float64_reference(model, x)
    monkeypatch.setenv("NUMCNN_WINOGRAD", choice)
    plan = inference.compile(model, (32, hw, hw))
    labels = [label for label, _ in plan.profile(x, repeats=1) if label.startswith("conv")]
    assert all(label.endswith(f"[Winograd {kernel}]") for label in labels), labels
    winograd = np.abs(plan(x) - expected).max()
    monkeypatch.setenv("NUMCNN_WINOGRAD", "0")
    direct_plan = inference.compile(model, (32, hw, hw))
    assert all(label.endswith("[direct, rows]") for label, _ in
               direct_plan.profile(x, repeats=1) if label.startswith("conv"))
    direct = np.abs(direct_plan(x) - expected).max()
    scale = np.abs(expected).max()
    assert winograd <= bound * direct + 1e-7 * scale, (winograd, direct, scale)
    assert winograd <= 1e-5 * scale
    _assert_matches(plan, model, x)


@needs_kernels
def test_winograd_is_left_to_the_direct_sum_where_it_does_not_pay():
    """Odd maps, strides, dilation, fewer than 16 input channels, 16 on a map of more than 16
    MiB, fewer than 16 samples: the direct kernels, with the same results."""
    numcnn.manual_seed(7)
    for layer, shape, n in [(nn.Conv2d(32, 8, 3, padding=1), (32, 7, 7), 64),
                            (nn.Conv2d(32, 8, 3, stride=2, padding=1), (32, 8, 8), 64),
                            (nn.Conv2d(32, 8, 3, padding=2, dilation=2), (32, 8, 8), 64),
                            (nn.Conv2d(12, 8, 3, padding=1), (12, 8, 8), 64),
                            (nn.Conv2d(16, 8, 3, padding=1), (16, 32, 32), 256),
                            (nn.Conv2d(32, 8, 3, padding=1), (32, 8, 8), 9)]:
        model = nn.Sequential(layer).eval()
        plan = inference.compile(model, shape)
        x = _images(n, shape)
        labels = [label for label, _ in plan.profile(x, repeats=1) if label.startswith("conv")]
        assert labels and not any("Winograd" in label for label in labels), labels
        _assert_matches(plan, model, x)


@needs_kernels
@pytest.mark.parametrize("padding, hw", [(0, 10), (2, 6), (1, 12)])
def test_winograd_reads_any_zero_padding_from_the_frame(padding, hw):
    """Winograd tiles read their input patches from the zero frame the padding leaves around
    the map (none, 1 or 2 wide), with tanh fused and a second Winograd layer reading the
    first's output (frames of 1)."""
    numcnn.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(32, 32, 3, padding=padding), nn.Tanh(),
                          nn.Conv2d(32, 16, 3, padding=1)).eval()
    plan = inference.compile(model, (32, hw, hw))
    x = _images(48, (32, hw, hw))
    labels = [label for label, _ in plan.profile(x, repeats=1) if label.startswith("conv")]
    assert all("Winograd" in label for label in labels), labels
    _assert_matches(plan, model, x)


@needs_kernels
@pytest.mark.parametrize("activation", [nn.LeakyReLU(0.1), nn.LeakyReLU(0.0), nn.LeakyReLU(2.5),
                                        nn.Sigmoid(), nn.ELU(), nn.ELU(0.3)])
@pytest.mark.parametrize("n", [1, 7, 64])
def test_fused_activations_match_their_layers(activation, n):
    """Leaky ReLU, sigmoid and ELU in the output loops of every kernel (rows, channels,
    columns, Winograd, pooled), on their own after a layer the plan runs in Python, and after
    a residual sum; inputs reach +-100 (sigmoid's and ELU's exponentials saturate), NaN and
    infinities pass through as the layers pass them."""
    numcnn.manual_seed(9)
    act = lambda: type(activation)(*activation._args()[:1])  # noqa: E731
    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), act(),                      # rows / channels
        nn.Conv2d(32, 32, 3, padding=1), nn.BatchNorm2d(32), act(),  # Winograd from 16 samples
        nn.Conv2d(32, 16, 3, padding=1), act(), nn.MaxPool2d(2),     # fused pooling
        nn.Conv2d(16, 16, 3, stride=2, padding=1), act(),            # columns / channels
        nn.Residual(nn.Sequential(nn.Conv2d(16, 16, 1), nn.Sigmoid())), act(),
        nn.LeakyReLU(-0.5), act(),                                  # Python, then on its own
        nn.Flatten(), nn.Linear(256, 10), act())
    model = _randomise_batch_norms(model).eval()
    plan = inference.compile(model, (3, 16, 16))
    names = " ".join(plan.describe())
    assert names.count(type(activation).__name__.replace("LeakyReLU", "leaky ReLU")
                       .replace("Sigmoid", "sigmoid")) >= 5, names
    x = _images(n, (3, 16, 16)) * 30
    _assert_matches(plan, model, x)
    x[0, 0, 3, 3], x[-1, 1, 5, 7], x[-1, 2, 0, 0] = np.nan, np.inf, -np.inf
    out, ref = plan(x), _reference(model, x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    kept = ~np.isnan(ref)
    np.testing.assert_array_equal(np.isinf(out[kept]), np.isinf(ref[kept]))
    finite = ref[np.isfinite(ref)]
    scale = float(np.abs(finite).max()) if finite.size else 1.0
    np.testing.assert_allclose(out[kept], ref[kept], rtol=1e-4, atol=2e-5 * scale)


@needs_kernels
@pytest.mark.parametrize("layer, expected", [
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))),
    (nn.ELU(0.7), lambda x: np.where(x > 0, x, 0.7 * np.expm1(np.minimum(x, 0)))),
    (nn.LeakyReLU(0.03), lambda x: np.where(x > 0, x, 0.03 * x))])
def test_the_fused_exponentials_are_float32_rounding_close(layer, expected):
    """The plan's sigmoid and ELU (Cephes' expf, vectorised, on non-positive arguments) and
    leaky ReLU against NumPy in float64, from -100 to 100 (exp underflows below -87.3),
    around 0, and at the infinities and NaN, on the rows kernel (many samples) and the
    channels kernel (one). Absolute error: ELU's exp(x) - 1 loses the relative precision of
    expm1 near 0 (PyTorch's ELU computes expm1)."""
    model = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), layer).eval()
    model[0].weight.data[...] = 1
    plan = inference.compile(model, (1, 1, 1))
    x = np.concatenate([np.linspace(-100, 100, 40001, dtype=np.float32),
                        np.linspace(-1e-3, 1e-3, 1001, dtype=np.float32),
                        np.float32([0.0, -87.3, -87.4, -88.0, 3e38, -3e38, np.inf, -np.inf])])
    for batch in (x, x[7:8], x[-4:-3]):
        out = plan(batch.reshape(-1, 1, 1, 1)).ravel()
        with np.errstate(over="ignore"):
            want = expected(batch.astype(np.float64))
        np.testing.assert_allclose(out, want, rtol=4e-7, atol=1.2e-7)
    assert np.isnan(plan(np.float32([[[[np.nan]]]]))).all()


@needs_kernels
@pytest.mark.parametrize("side", [8, 6])  # F(4x4, 3x3), F(2x2, 3x3)
def test_a_nan_or_infinity_runs_without_winograd(side):
    """Winograd's transforms would spread a NaN or an infinity over a whole output tile (inf -
    inf): the input copy of a plan with Winograd operations checks for them, and such an input
    runs on the direct sums (a twin plan), giving PyTorch's NaN and infinities exactly, and
    through a sigmoid the finite values the layer path gives; finite inputs keep Winograd."""
    torch = pytest.importorskip("torch")
    numcnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(32, 16, 3, padding=1)).eval()
    plan = inference.compile(model, (32, side, side))
    x = _images(16, (32, side, side))
    assert "Winograd" in [lab for lab, _ in plan.profile(x, 1) if lab.startswith("conv")][0]
    x[0, 0, 0, 0], x[1, 3, 2, 2], x[5, 1, side - 1, 3] = np.nan, np.inf, -np.inf
    conv = model[0]
    with np.errstate(all="ignore"):
        expected = torch.nn.functional.conv2d(
            torch.from_numpy(x), torch.from_numpy(conv.weight.data),
            torch.from_numpy(conv.bias.data), padding=1).numpy()
    assert "[direct, rows]" in [lab for lab, _ in plan.profile(x, 1) if lab.startswith("conv")][0]
    out = plan(x)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(np.isposinf(out), np.isposinf(expected))
    np.testing.assert_array_equal(np.isneginf(out), np.isneginf(expected))
    finite = np.isfinite(expected)
    np.testing.assert_allclose(out[finite], expected[finite], rtol=1e-4, atol=1e-4)
    squashed = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1), nn.Sigmoid(), nn.Flatten(),
                             nn.Linear(32 * side * side, 2)).eval()
    fast = inference.compile(squashed, (32, side, side))
    x = _images(16, (32, side, side))
    x[3, 0, 2, 2] = np.inf
    ref = _reference(squashed, x)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(fast(x), ref, rtol=1e-4, atol=1e-5)


@needs_kernels
def test_a_plan_follows_the_numbers_it_folds_from_layer_attributes(monkeypatch):
    """Batch norm's eps and an activation's slope or alpha, changed after compiling, are
    noticed like the weights; a NUMCNN_WINOGRAD other than 0, 1 or 2 is refused."""
    numcnn.manual_seed(10)
    model = _randomise_batch_norms(nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.LeakyReLU(0.1),
        nn.Conv2d(32, 8, 3, padding=1), nn.ELU(0.5))).eval()
    plan = inference.compile(model, (3, 8, 8))
    x = _images(20, (3, 8, 8))
    _assert_matches(plan, model, x)
    model[1].eps = 0.5
    _assert_matches(plan, model, x)
    model[2].negative_slope = 0.3
    _assert_matches(plan, model, x)
    model[4].alpha = 2.0
    _assert_matches(plan, model, x)
    monkeypatch.setenv("NUMCNN_WINOGRAD", "yes")  # read and checked when compiling
    with pytest.raises(NumcnnError, match="NUMCNN_WINOGRAD must be 0"):
        inference.compile(model, (3, 8, 8))


@needs_kernels
@pytest.mark.parametrize("n", [1, 7, 64])
def test_grouped_and_depthwise_convolutions_run_in_the_plan(n):
    """Grouped and depthwise convolutions (MobileNet's depthwise-separable block, ResNeXt's
    grouped 3x3) as one operation per group on the channel slices of the CHWN maps, with batch
    norm folded, ReLU, a residual sum and max pooling fused, stride 2, channel multipliers."""
    numcnn.manual_seed(11)
    model = _randomise_batch_norms(nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),                                 # depthwise-separable
        nn.Residual(nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=4),
                                  nn.BatchNorm2d(32))), nn.ReLU(),        # grouped, residual
        nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=32), nn.ReLU(),  # multiplier 2
        nn.Conv2d(64, 64, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.GlobalAvgPool2d(), nn.Linear(64, 10))).eval()
    plan = inference.compile(model, (3, 16, 16))
    lines = plan.describe()
    assert not any("Python" in line for line in lines), lines
    assert sum("groups" in line for line in lines) == 4, lines
    _assert_matches(plan, model, _images(n, (3, 16, 16)))


def test_a_weight_replaced_by_another_shape_is_refused():
    """A weight assigned to ``.data`` with another shape than the layer was built for (the
    kernels would read past its end) is refused by the layer and by a plan, in one line."""
    numcnn.manual_seed(12)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval()
    x = _images(2, (1, 8, 8))
    plan = inference.compile(model, (1, 8, 8))
    model[0].weight.data = np.ones((4, 1, 5, 5), np.float32)
    for run in (lambda: _reference(model, x), lambda: plan(x),
                lambda: inference.compile(model, (1, 8, 8))):
        with pytest.raises(ShapeError, match=r"weight has shape \(4, 1, 5, 5\).*\(4, 1, 3, 3\)"):
            run()
    model[0].weight.data = np.ones((4, 1, 3, 3), np.float32)
    model[2].weight.data = np.ones((3, 10), np.float32)
    with pytest.raises(ShapeError, match=r"Linear: its weight has shape \(3, 10\)"):
        inference.compile(model, (1, 8, 8))


def test_input_shape_must_be_whole_numbers_and_fit_the_model():
    model = models.preset("convnet-bn").eval()
    for shape in [(1, 28, 28.5), (1, 28.0, 28), ("1", 28, 28)]:
        with pytest.raises(ShapeError, match="whole numbers"):
            inference.compile(model, shape)
    with pytest.raises(ShapeError, match="layer 0 \\(Conv2d\\)"):
        inference.compile(model, (4, 1, 28, 28))  # the batch axis given too
    assert inference.compile(model, (np.int64(1), 28, 28)).input_shape == (1, 28, 28)
