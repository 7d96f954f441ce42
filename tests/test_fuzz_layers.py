"""Fuzz suite, part 1: layers, losses and optimisers over drawn shapes (size 0 included),
dtypes, NaN/Inf and non-contiguous views. Each case ends in the result PyTorch gives (or the
shape ``output_shape`` predicts) or in a clear NumcnnError; see tests/fuzzing.py."""

import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numcnn
import numcnn.train
from numcnn import nn, optim
from numcnn.errors import DTypeError, NumcnnError, ShapeError
from tests.fuzzing import check_case

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

LAYERS = {
    "Linear": lambda: nn.Linear(3, 4),
    "Conv2d": lambda: nn.Conv2d(2, 3, 3, padding=1),
    "ConvTranspose2d": lambda: nn.ConvTranspose2d(2, 2, 2, stride=2),
    "BatchNorm2d": lambda: nn.BatchNorm2d(2),
    "BatchNorm1d": lambda: nn.BatchNorm1d(3),
    "ReLU": nn.ReLU, "LeakyReLU": nn.LeakyReLU, "Sigmoid": nn.Sigmoid, "Tanh": nn.Tanh,
    "Softmax": lambda: nn.Softmax(dim=1), "LogSoftmax": lambda: nn.LogSoftmax(dim=1),
    "MaxPool2d": lambda: nn.MaxPool2d(2), "AvgPool2d": lambda: nn.AvgPool2d(2),
    "AdaptiveAvgPool2d": lambda: nn.AdaptiveAvgPool2d(1), "Flatten": nn.Flatten,
    "Dropout": lambda: nn.Dropout(0.5), "GlobalAvgPool2d": nn.GlobalAvgPool2d,
    "Conv1d": lambda: nn.Conv1d(2, 3, 3, padding=1),
    "SeparableConv2d": lambda: nn.SeparableConv2d(2, 3, 3),
    "Dropout2d": lambda: nn.Dropout2d(0.5), "LPPool2d": lambda: nn.LPPool2d(2, 2),
    "AdaptiveMaxPool2d": lambda: nn.AdaptiveMaxPool2d(2), "GlobalMaxPool2d": nn.GlobalMaxPool2d,
    "Gaussian": nn.Gaussian, "Identity": nn.Identity,
    "Residual": lambda: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU())),
    "Sequential": lambda: nn.Sequential(nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2), nn.ReLU(),
                                        nn.Flatten(), nn.Linear(2, 3)),
}
# The same layers in PyTorch, weights copied (None: compared by shape only).
TORCH = {
    "Linear": torch.nn.Linear, "Conv2d": torch.nn.Conv2d,
    "ConvTranspose2d": torch.nn.ConvTranspose2d, "BatchNorm2d": torch.nn.BatchNorm2d,
    "BatchNorm1d": torch.nn.BatchNorm1d, "ReLU": torch.nn.ReLU,
    "LeakyReLU": torch.nn.LeakyReLU, "Sigmoid": torch.nn.Sigmoid, "Tanh": torch.nn.Tanh,
    "Softmax": lambda: torch.nn.Softmax(dim=1), "LogSoftmax": lambda: torch.nn.LogSoftmax(dim=1),
    "MaxPool2d": lambda: torch.nn.MaxPool2d(2), "AvgPool2d": lambda: torch.nn.AvgPool2d(2),
    "AdaptiveMaxPool2d": lambda: torch.nn.AdaptiveMaxPool2d(2),
    "AdaptiveAvgPool2d": lambda: torch.nn.AdaptiveAvgPool2d(1), "Flatten": torch.nn.Flatten,
}
DTYPES = [np.float32, np.float64, np.int32, np.bool_, np.complex64, np.uint8]


def _torch_twin(name, layer):
    if name not in TORCH:
        return None
    if name in ("Linear", "Conv2d", "ConvTranspose2d", "BatchNorm2d", "BatchNorm1d"):
        args = {"Linear": (3, 4), "Conv2d": (2, 3, 3), "ConvTranspose2d": (2, 2, 2),
                "BatchNorm2d": (2,), "BatchNorm1d": (3,)}[name]
        kwargs = {"Conv2d": {"padding": 1}, "ConvTranspose2d": {"stride": 2}}.get(name, {})
        twin = TORCH[name](*args, **kwargs).double()
        twin.load_state_dict({k: torch.from_numpy(np.asarray(v, dtype=np.float64 if
                              v.dtype.kind == "f" else v.dtype))
                              for k, v in layer.state_dict().items()})
        return twin
    return TORCH[name]()


@st.composite
def arrays(draw, max_rank=5):
    rank = draw(st.integers(0, max_rank))
    shape = tuple(draw(st.lists(st.integers(0, 4), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(DTYPES))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    x = np.asarray((rng.standard_normal(shape) * 3).astype(dtype))
    if dtype in (np.float32, np.float64) and x.size and draw(st.booleans()):
        flat = x.reshape(-1)
        flat[draw(st.integers(0, x.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    if rank >= 2 and draw(st.booleans()):  # a non-contiguous view of the same values
        x = np.swapaxes(np.swapaxes(x, 0, 1).copy(), 0, 1)
    return x


def _check_against_torch(name, layer, x, out, training):
    twin = _torch_twin(name, layer)
    if twin is None or x.dtype.kind != "f":
        return
    twin.train(training)
    try:
        expected = twin(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64)))
    except RuntimeError:
        pytest.fail(f"{name}: numcnn gave a result where PyTorch refuses {x.shape}")
    np.testing.assert_allclose(out.astype(np.float64), expected.detach().numpy(),
                               rtol=1e-4, atol=1e-5, equal_nan=True)


@FUZZ
@given(name=st.sampled_from(sorted(LAYERS)), x=arrays(), training=st.booleans(),
       wrong_grad=st.booleans())
def test_layers_forward_and_backward(name, x, training, wrong_grad):
    numcnn.manual_seed(0)
    layer = LAYERS[name]()
    if name.startswith("BatchNorm") or name.startswith("Dropout") or name == "Sequential":
        layer.train(training)
    else:
        layer.eval()
    if x.dtype.kind == "f":
        layer.to(x.dtype)

    def check(out):
        assert out.shape == layer.output_shape(x.shape)
        assert out.dtype.kind == "f" or name in ("Identity", "Flatten")  # they keep any dtype
        if not name.startswith("Dropout"):
            _check_against_torch(name, layer, x, out, training)

    out = check_case("layers: forward", lambda: layer(x), check)
    if isinstance(out, NumcnnError):
        return
    grad = np.ones(out.shape, out.dtype)
    if wrong_grad:
        grad = np.ones((*out.shape, 2), out.dtype)
    result = check_case("layers: backward", lambda: layer.backward(grad),
                        lambda g: np.shape(g) == x.shape or pytest.fail("gradient shape"))
    if wrong_grad:
        assert isinstance(result, ShapeError), "a wrong gradient shape must be refused"


CONSTRUCTORS = [
    (nn.Linear, ("in_features", "out_features"), {}),
    (nn.Conv2d, ("in_channels", "out_channels", "kernel_size"), {}),
    (nn.BatchNorm2d, ("num_features",), {}),
    (nn.MaxPool2d, ("kernel_size",), {}),
    (nn.Dropout, ("p",), {}),
    (nn.CrossEntropyLoss, (), {"label_smoothing": None}),
]
BAD_VALUES = [-1, 0, 2.5, True, "3", None, float("nan"), float("inf"), (2, 2), 10**12]


@FUZZ
@given(index=st.integers(0, len(CONSTRUCTORS) - 1), values=st.lists(
    st.sampled_from(BAD_VALUES + [1, 2, 3]), min_size=3, max_size=3))
def test_layer_constructors_refuse_bad_arguments(index, values):
    cls, positional, keywords = CONSTRUCTORS[index]
    kwargs = dict(zip(positional, values))
    for key in keywords:
        kwargs[key] = values[-1]
    if cls is nn.Linear and all(isinstance(v, int) and not isinstance(v, bool)
                                and 0 < v < 10**6 for v in kwargs.values()):
        return  # a valid layer; sizes of 10**12 would allocate, tested below as refused
    check_case("layers: constructor arguments", lambda: cls(**kwargs), lambda layer: None)


def test_the_issue_examples():
    layer = nn.Linear(10, 5)
    layer(np.zeros((4, 10), np.float32))
    with pytest.raises(ShapeError, match=r"expected grad_out of shape \(4, 5\).*got \(3, 5\)"):
        layer.backward(np.zeros((3, 5), np.float32))
    relu = nn.ReLU()
    relu(np.zeros((4, 10), np.float32))
    with pytest.raises(ShapeError, match=r"ReLU.backward: expected grad_out of shape \(4, 10\)"):
        relu.backward(np.zeros((3, 5), np.float32))
    block = nn.Residual(nn.Linear(4, 3))
    with pytest.raises(ShapeError, match=r"inner block must keep the shape \(2, 4\).*\(2, 3\)"):
        block(np.zeros((2, 4), np.float32))
    for make, message in [(lambda: nn.Linear(-1, 10), "in_features must be a positive int"),
                          (lambda: nn.Linear(2.5, 3), "got float 2.5"),
                          (lambda: nn.BatchNorm2d(-4), "num_features must be a positive int"),
                          (lambda: nn.BatchNorm2d(4, eps=-1), "eps must be a finite number > 0")]:
        with pytest.raises(NumcnnError, match=message):
            make()
    with pytest.raises(NumcnnError, match="expected a mapping"):
        nn.Linear(2, 2).load_state_dict(["weight", "bias"])
    with pytest.raises(DTypeError, match="complex"):
        nn.ReLU()(np.ones(3, np.complex64))
    with pytest.raises(DTypeError, match="complex"):
        nn.BatchNorm1d(3)(np.ones((2, 3), np.complex64))


def test_empty_batches_give_empty_results_as_pytorch():
    for training in (False, True):
        bn = nn.BatchNorm2d(3).train(training)
        twin = torch.nn.BatchNorm2d(3).train(training)
        out = bn(np.zeros((0, 3, 4, 4), np.float32))
        expected = twin(torch.zeros(0, 3, 4, 4))
        assert out.shape == tuple(expected.shape)
        assert int(bn.num_batches_tracked) == int(twin.num_batches_tracked)
        np.testing.assert_array_equal(bn.running_mean, twin.running_mean.numpy())
        assert bn.backward(np.zeros_like(out)).shape == out.shape
    for reduction in ("mean", "sum", "none"):
        loss = nn.CrossEntropyLoss(reduction=reduction)
        got = loss(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))
        expected = torch.nn.CrossEntropyLoss(reduction=reduction)(
            torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)).numpy()
        np.testing.assert_array_equal(got, expected)  # mean: nan, as PyTorch
        grad = loss.backward(np.ones(np.shape(got), np.float32))
        assert grad.shape == (0, 3)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 2 * 2, 5))
    probabilities = numcnn.train.predict(model, np.zeros((0, 1, 4, 4), np.float32))
    assert probabilities.shape == (0, 5)


def test_evaluate_refuses_nan_logits_and_wrong_labels():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = np.full((5, 1, 2, 2), np.nan, np.float32)
    with pytest.raises(NumcnnError, match="expected finite logits.*5 of 5"):
        numcnn.train.evaluate(model, x, np.zeros(5, np.int64))
    with pytest.raises(NumcnnError, match=r"class indices in \[0, 3\)"):
        numcnn.train.evaluate(model, np.zeros((2, 1, 2, 2), np.float32), np.array([0, 3]))


LOSSES = {
    "CrossEntropyLoss": (nn.CrossEntropyLoss, torch.nn.CrossEntropyLoss),
    "NLLLoss": (nn.NLLLoss, torch.nn.NLLLoss),
    "MSELoss": (nn.MSELoss, torch.nn.MSELoss),
    "BCEWithLogitsLoss": (nn.BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss),
}


@FUZZ
@given(name=st.sampled_from(sorted(LOSSES)), x=arrays(max_rank=3),
       target_kind=st.sampled_from(["indices", "same", "bad-index", "float-indices",
                                    "wrong-shape"]),
       reduction=st.sampled_from(["mean", "sum", "none"]))
def test_losses(name, x, target_kind, reduction):
    ours, theirs = LOSSES[name]
    rng = np.random.default_rng(0)
    classes = x.shape[1] if x.ndim >= 2 else (x.shape[0] if x.ndim == 1 else 1)
    index_shape = (x.shape[:1] + x.shape[2:]) if x.ndim >= 2 else ()
    if target_kind == "indices":
        target = rng.integers(0, max(classes, 1), index_shape)
    elif target_kind == "bad-index":
        target = np.full(index_shape, classes + 1)
    elif target_kind == "float-indices":
        target = rng.random(index_shape)
    elif target_kind == "wrong-shape":
        target = np.zeros((*x.shape, 2))
    else:
        target = rng.random(x.shape).astype(x.dtype if x.dtype.kind == "f" else np.float32)
    criterion = ours(reduction=reduction)

    def check(value):
        if x.dtype.kind != "f":
            return
        try:
            expected = theirs(reduction=reduction)(torch.from_numpy(x.astype(np.float64)),
                                                   torch.from_numpy(np.asarray(target)))
        except (RuntimeError, IndexError, ValueError):
            return  # PyTorch refuses too (or differs only in how it refuses)
        np.testing.assert_allclose(np.asarray(value, np.float64), expected.numpy(),
                                   rtol=1e-4, atol=1e-5, equal_nan=True)

    value = check_case("losses: forward", lambda: criterion(x, target), check)
    if not isinstance(value, NumcnnError):
        check_case("losses: backward", lambda: criterion.backward(np.ones(np.shape(value))))


OPTIMIZERS = {"SGD": optim.SGD, "Adam": optim.Adam, "AdamW": optim.AdamW}


@FUZZ
@given(name=st.sampled_from(sorted(OPTIMIZERS)),
       lr=st.sampled_from([1e-2, 0.0, -1.0, float("nan"), float("inf"), "fast", None]),
       weight_decay=st.sampled_from([0.0, 1e-2, -1.0, float("nan")]),
       params=st.sampled_from(["ok", "empty", "not-parameters", "duplicate", "generator-twice"]),
       grad=st.sampled_from(["ok", "nan", "zero-size"]))
def test_optimisers(name, lr, weight_decay, params, grad):
    weight = nn.Parameter(np.ones((2, 3), np.float32))
    empty = nn.Parameter(np.ones((0, 3), np.float32))
    given_params = {"ok": [weight, empty], "empty": [], "not-parameters": [np.ones(3)],
                    "duplicate": [weight, weight], "generator-twice": iter([weight])}[params]
    kwargs = {"weight_decay": weight_decay}
    if lr is not None:
        kwargs["lr"] = lr
    opt = check_case("optimisers: construction",
                     lambda: OPTIMIZERS[name](given_params, **kwargs))
    if isinstance(opt, NumcnnError):
        return
    weight.grad[...] = {"ok": 0.5, "nan": np.nan, "zero-size": 0.5}[grad]

    def check(_):
        if grad == "ok" and np.isfinite(weight_decay) and weight_decay >= 0:
            assert np.isfinite(weight.data).all()

    check_case("optimisers: step", opt.step, check)


def test_a_model_used_by_two_threads_at_once():
    """Each thread's backward pass uses its own forward pass: input gradients are right, and
    the parameter gradients are the sum of both (as two backward passes in one thread)."""
    numcnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    inputs = [np.random.default_rng(k).standard_normal((8, 1, 8, 8)).astype(np.float32)
              for k in range(2)]
    expected = []
    for x in inputs:
        model.zero_grad()
        model(x)
        expected.append(model.backward(np.ones((8, 3), np.float32)))
    results = {k: [] for k in range(2)}
    failures = []
    barrier = threading.Barrier(2, timeout=20)

    def work(k):
        try:
            for _ in range(30):
                barrier.wait()  # both forward passes run before either backward pass
                model(inputs[k])
                barrier.wait()
                results[k].append(model.backward(np.ones((8, 3), np.float32)))
        except Exception as error:  # noqa: BLE001 - reported below
            failures.append(error)
            barrier.abort()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    for k in range(2):
        assert len(results[k]) == 30
        for got in results[k]:
            np.testing.assert_allclose(got, expected[k], rtol=1e-5, atol=1e-6)


def test_backward_in_another_thread_says_so():
    layer = nn.Linear(2, 2)
    layer(np.zeros((1, 2), np.float32))
    errors = []
    thread = threading.Thread(target=lambda: errors.append(
        pytest.raises(NumcnnError, layer.backward, np.zeros((1, 2), np.float32))))
    thread.start()
    thread.join()
    assert "another thread" in str(errors[0].value)


def test_a_pytorch_state_dict_without_num_batches_tracked_loads():
    twin = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    state = {k: v.numpy() for k, v in twin.state_dict().items()
             if not k.endswith("num_batches_tracked")}
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    model[1].num_batches_tracked[...] = 7
    model.load_state_dict(state)
    assert int(model[1].num_batches_tracked) == 0
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})  # PyTorch agrees
    assert int(twin[1].num_batches_tracked) == 0


@pytest.mark.parametrize("name", ["forward", "backward", "__dict__", "_modules", "state_dict",
                                  "training", "a.b", "", "1x", "class", 3])
def test_child_names_that_would_shadow_the_module_are_refused(name):
    from collections import OrderedDict

    with pytest.raises(NumcnnError, match="name"):
        nn.Sequential(OrderedDict([(name, nn.ReLU())]))


def test_plain_child_names_are_accepted():
    from collections import OrderedDict

    model = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(1, 2, 3)), ("act", nn.ReLU())]))
    assert list(model.state_dict()) == ["conv1.weight", "conv1.bias"]


@FUZZ
@given(name=st.sampled_from(sorted(OPTIMIZERS)), state=st.recursive(
    st.none() | st.integers(-3, 3) | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["state", "param_groups", "params", "lr", "step", 0, 1]), inner,
        max_size=4), max_leaves=10))
def test_optimiser_state_dicts(name, state):
    weight = nn.Parameter(np.ones((2, 3), np.float32))
    opt = OPTIMIZERS[name]([weight], lr=0.1)
    check_case("optimisers: load_state_dict", lambda: opt.load_state_dict(state))


STATE_VALUES = st.recursive(
    st.none() | st.integers(-3, 3) | st.floats() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["last_epoch", "base_lrs", "_last_lr", "T_max", "weight", "bias"]),
        inner, max_size=4), max_leaves=10)


@FUZZ
@given(state=STATE_VALUES)
def test_scheduler_state_dicts(state):
    weight = nn.Parameter(np.ones((2, 3), np.float32))
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optim.SGD([weight], lr=0.1), T_max=5)
    check_case("optimisers: scheduler load_state_dict", lambda: scheduler.load_state_dict(state))


@FUZZ
@given(state=STATE_VALUES, shape=st.sampled_from([(2, 3), (3, 2), (2,), ()]),
       dtype=st.sampled_from([np.float32, np.int64, np.bool_, np.complex64, np.str_]))
def test_module_load_state_dict(state, shape, dtype):
    layer = nn.Linear(3, 2)
    given_state = dict(layer.state_dict())
    if isinstance(state, dict):
        given_state.update(state)
    given_state["weight"] = np.zeros(shape, dtype)

    def check(_):
        np.testing.assert_array_equal(layer.weight.data, np.zeros((2, 3), np.float32))

    check_case("layers: load_state_dict", lambda: layer.load_state_dict(given_state), check)


def test_batch_norm_trained_by_two_threads_counts_every_batch():
    """The running statistics are updated under a lock: two threads training one batch-norm
    layer end with the statistics of all their batches (the order aside)."""
    layer = nn.BatchNorm2d(3, momentum=None)  # a cumulative average: independent of the order
    batches = [np.random.default_rng(k).standard_normal((4, 3, 5, 5)).astype(np.float32)
               for k in range(40)]
    reference = nn.BatchNorm2d(3, momentum=None)
    for batch in batches:
        reference(batch)
    threads = [threading.Thread(target=lambda part: [layer(b) for b in part],
                                args=(batches[k::2],)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert int(layer.num_batches_tracked) == 40
    np.testing.assert_allclose(layer.running_mean, reference.running_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.running_var, reference.running_var, rtol=1e-5, atol=1e-6)
