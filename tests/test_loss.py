"""Losses against PyTorch for every target kind and option, numerical gradients, errors."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcnn import functional as F
from numcnn import nn
from numcnn.errors import DTypeError, NumcnnError, ShapeError
from tests.helpers import numerical_grad, tol

SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
dtypes = st.sampled_from([np.float32, np.float64])
reductions = st.sampled_from(["mean", "sum", "none"])
TF = torch.nn.functional


def run_both(criterion, torch_loss, x, target, reduction, dtype, seed=0):
    """Loss and input gradient of a numcnn criterion against a torch function of (x, target)."""
    value = criterion(x, target)
    t_x = torch.tensor(x, requires_grad=True)
    t_value = torch_loss(t_x)
    if reduction == "none":
        grad = np.random.default_rng(seed).standard_normal(np.shape(value)).astype(dtype)
        assert isinstance(value, np.ndarray) and value.shape == tuple(t_value.shape)
        t_value.backward(torch.tensor(grad))
    else:
        grad = 1.0 if seed % 2 else 0.7
        assert isinstance(value, np.floating) and np.ndim(value) == 0
        t_value.backward(torch.tensor(grad, dtype=t_value.dtype))
    assert value.dtype == dtype
    grad_x = criterion.backward(grad)
    assert grad_x.dtype == dtype and grad_x.shape == x.shape
    np.testing.assert_allclose(value, t_value.detach().numpy(), **tol(dtype))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))


def classification_case(rng, n, c, extra, dtype, ignore):
    """Logits (n, c, *extra) and class indices (n, *extra), some set to ignore_index."""
    x = (rng.standard_normal((n, c, *extra)) * 3).astype(dtype)
    y = rng.integers(0, c, size=(n, *extra))
    if ignore:
        y[rng.random(y.shape) < 0.3] = -100
        y.flat[0] = rng.integers(0, c)              # at least one element counts
    return x, y


@SETTINGS
@given(n=st.integers(1, 5), c=st.integers(2, 6), extra=st.sampled_from([(), (3,), (2, 3)]),
       dtype=dtypes, weighted=st.booleans(), ignore=st.booleans(), reduction=reductions,
       smoothing=st.sampled_from([0.0, 0.1, 0.37]), seed=st.integers(0, 2**16))
def test_cross_entropy_with_class_indices_matches_pytorch(n, c, extra, dtype, weighted, ignore,
                                                          reduction, smoothing, seed):
    rng = np.random.default_rng(seed)
    x, y = classification_case(rng, n, c, extra, dtype, ignore)
    weight = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    t_weight = None if weight is None else torch.tensor(weight)
    criterion = nn.CrossEntropyLoss(weight, reduction=reduction, label_smoothing=smoothing)
    run_both(criterion, lambda t: TF.cross_entropy(t, torch.tensor(y), weight=t_weight,
                                                   reduction=reduction,
                                                   label_smoothing=smoothing),
             x, y, reduction, dtype, seed)


@SETTINGS
@given(n=st.integers(1, 5), c=st.integers(2, 6), extra=st.sampled_from([(), (3,)]),
       dtype=dtypes, weighted=st.booleans(), one_hot=st.booleans(), reduction=reductions,
       smoothing=st.sampled_from([0.0, 0.2]), seed=st.integers(0, 2**16))
def test_cross_entropy_with_probability_targets_matches_pytorch(n, c, extra, dtype, weighted,
                                                                one_hot, reduction, smoothing,
                                                                seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c, *extra)) * 3).astype(dtype)
    if one_hot:
        target = np.moveaxis(np.eye(c, dtype=dtype)[rng.integers(0, c, (n, *extra))], -1, 1)
    else:
        target = rng.dirichlet(np.ones(c), size=(n, *extra)).astype(dtype)
        target = np.moveaxis(target, -1, 1)
    target = np.ascontiguousarray(target)
    weight = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    t_weight = None if weight is None else torch.tensor(weight)
    criterion = nn.CrossEntropyLoss(weight, reduction=reduction, label_smoothing=smoothing)
    run_both(criterion, lambda t: TF.cross_entropy(t, torch.tensor(target), weight=t_weight,
                                                   reduction=reduction,
                                                   label_smoothing=smoothing),
             x, target, reduction, dtype, seed)


@pytest.mark.parametrize("target", [3, np.uint8(3), np.int32(3)])
def test_cross_entropy_unbatched_and_any_integer_dtype(target):
    x = np.random.default_rng(0).standard_normal(5)
    for reduction in ("mean", "none"):
        run_both(nn.CrossEntropyLoss(reduction=reduction),
                 lambda t: TF.cross_entropy(t, torch.tensor(3), reduction=reduction),
                 x, np.asarray(target), reduction, np.float64)
    labels = np.array([1, 0, 9], dtype=np.uint8)                  # MNIST labels are uint8
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    run_both(nn.CrossEntropyLoss(), lambda t: TF.cross_entropy(t, torch.tensor(labels.astype(int))),
             x, labels, "mean", np.float32)


@SETTINGS
@given(n=st.integers(1, 5), c=st.integers(2, 6), extra=st.sampled_from([(), (2,), (2, 2)]),
       dtype=dtypes, weighted=st.booleans(), ignore=st.booleans(), reduction=reductions,
       seed=st.integers(0, 2**16))
def test_nll_loss_matches_pytorch(n, c, extra, dtype, weighted, ignore, reduction, seed):
    rng = np.random.default_rng(seed)
    x, y = classification_case(rng, n, c, extra, dtype, ignore)
    weight = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    t_weight = None if weight is None else torch.tensor(weight)
    run_both(nn.NLLLoss(weight, reduction=reduction),
             lambda t: TF.nll_loss(t, torch.tensor(y), weight=t_weight, reduction=reduction),
             x, y, reduction, dtype, seed)


def test_log_softmax_then_nll_equals_cross_entropy():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    log_softmax, nll, ce = nn.LogSoftmax(1), nn.NLLLoss(), nn.CrossEntropyLoss()
    np.testing.assert_allclose(nll(log_softmax(x), y), ce(x, y), rtol=1e-14)
    np.testing.assert_allclose(log_softmax.backward(nll.backward()), ce.backward(), rtol=1e-12,
                               atol=1e-15)


@SETTINGS
@given(shape=st.lists(st.integers(1, 4), min_size=0, max_size=3).map(tuple), dtype=dtypes,
       reduction=reductions, seed=st.integers(0, 2**16))
def test_mse_loss_matches_pytorch(shape, dtype, reduction, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    target = rng.standard_normal(shape).astype(dtype)
    run_both(nn.MSELoss(reduction=reduction),
             lambda t: TF.mse_loss(t, torch.tensor(target), reduction=reduction),
             x, target, reduction, dtype, seed)


@SETTINGS
@given(n=st.integers(1, 4), c=st.integers(1, 5), dtype=dtypes, reduction=reductions,
       weight_shape=st.sampled_from([None, "full", "class", "sample"]),
       pos_weight=st.booleans(), soft=st.booleans(), seed=st.integers(0, 2**16))
def test_bce_with_logits_matches_pytorch(n, c, dtype, reduction, weight_shape, pos_weight, soft,
                                         seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, c)) * 4).astype(dtype)
    target = (rng.random((n, c)) if soft else rng.integers(0, 2, (n, c))).astype(dtype)
    weight = {None: None, "full": (n, c), "class": (c,), "sample": (n, 1)}[weight_shape]
    weight = None if weight is None else rng.uniform(0.1, 2, weight).astype(dtype)
    pw = rng.uniform(0.5, 3, c).astype(dtype) if pos_weight else None
    t_weight = None if weight is None else torch.tensor(weight)
    t_pw = None if pw is None else torch.tensor(pw)
    run_both(nn.BCEWithLogitsLoss(weight, reduction=reduction, pos_weight=pw),
             lambda t: TF.binary_cross_entropy_with_logits(
                 t, torch.tensor(target), weight=t_weight, reduction=reduction, pos_weight=t_pw),
             x, target, reduction, dtype, seed)


CRITERIA = {
    "ce-indices": (lambda: nn.CrossEntropyLoss(np.array([0.5, 1.0, 2.0]), label_smoothing=0.1),
                   lambda rng: np.array([0, 2, -100, 1])),
    "ce-probs": (lambda: nn.CrossEntropyLoss(reduction="sum", label_smoothing=0.3),
                 lambda rng: rng.dirichlet(np.ones(3), 4)),
    "nll": (lambda: nn.NLLLoss(np.array([0.5, 1.0, 2.0])), lambda rng: np.array([0, 2, 1, 1])),
    "mse": (lambda: nn.MSELoss(), lambda rng: rng.standard_normal((4, 3))),
    "bce": (lambda: nn.BCEWithLogitsLoss(np.array([1.0, 2.0, 0.5]),
                                         pos_weight=np.array([2.0, 1.0, 3.0])),
            lambda rng: rng.random((4, 3))),
}


@pytest.mark.parametrize("name", sorted(CRITERIA))
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_numerical_gradients(name, reduction):
    rng = np.random.default_rng(0)
    make, make_target = CRITERIA[name]
    criterion = make()
    criterion.reduction = reduction
    x, target = rng.standard_normal((4, 3)), make_target(rng)
    r = rng.standard_normal(np.shape(criterion(x, target)))
    criterion(x, target)
    grad = criterion.backward(r if reduction == "none" else 1.0)
    expected = numerical_grad(lambda: float(np.sum(criterion(x, target) * r))
                              if reduction == "none" else float(criterion(x, target)), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-6, atol=1e-8)


def test_huge_logits_are_stable():
    x = np.array([[1000.0, -1000.0, 0.0], [-1000.0, -1000.0, 1000.0]], dtype=np.float32)
    y = np.array([1, 2])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        ce = nn.CrossEntropyLoss()
        loss = ce(x, y)
        grad = ce.backward()
        bce = nn.BCEWithLogitsLoss(pos_weight=np.array([2.0, 1.0, 3.0], dtype=np.float32))
        bce_loss = bce(x, np.array([[0, 1, 1], [1, 0, 1]], dtype=np.float32))
        bce_grad = bce.backward()
    t_x = torch.tensor(x, dtype=torch.float64)
    np.testing.assert_allclose(loss, TF.cross_entropy(t_x, torch.tensor(y)).item(), rtol=1e-6)
    expected = TF.binary_cross_entropy_with_logits(
        t_x, torch.tensor([[0.0, 1, 1], [1, 0, 1]], dtype=torch.float64),
        pos_weight=torch.tensor([2.0, 1.0, 3.0], dtype=torch.float64)).item()
    np.testing.assert_allclose(bce_loss, expected, rtol=1e-6)
    assert np.isfinite(grad).all() and np.isfinite(bce_grad).all()


def test_all_targets_ignored_gives_nan_loss_and_zero_gradient_as_pytorch():
    x = np.random.default_rng(0).standard_normal((3, 4))
    for criterion in (nn.CrossEntropyLoss(), nn.CrossEntropyLoss(label_smoothing=0.2),
                      nn.NLLLoss()):
        assert np.isnan(criterion(x, np.full(3, -100)))
        np.testing.assert_array_equal(criterion.backward(), np.zeros((3, 4)))


def test_custom_ignore_index_and_float32_weights_with_float64_input():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), np.array([0, 7, 2, 7, 1])
    weight = np.array([1.0, 2.0, 3.0])
    run_both(nn.CrossEntropyLoss(weight, ignore_index=7),
             lambda t: TF.cross_entropy(t, torch.tensor(y), torch.tensor(weight), ignore_index=7),
             x, y, "mean", np.float64)


def test_target_errors_are_clear():
    x = np.zeros((4, 10), dtype=np.float32)
    ce = nn.CrossEntropyLoss()
    with pytest.raises(ValueError, match=r"expected class indices in \[0, 10\) "
                                         r"\(or ignore_index=-100\), got 12"):
        ce(x, np.array([1, 2, 12, 3]))
    with pytest.raises(ValueError, match=r"got -1"):
        ce(x, np.array([1, -1, 2, 3]))
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss: an input of shape \(4, 10\) needs "
                                         r"class-index targets of shape \(4,\) or probability "
                                         r"targets of shape \(4, 10\), got a target of shape "
                                         r"\(3,\)"):
        ce(x, np.array([1, 2, 3]))
    with pytest.raises(DTypeError, match=r"class-index targets must be integers, got dtype "
                                         r"float32"):
        ce(x, np.array([1, 2, 3, 4], dtype=np.float32))
    with pytest.raises(DTypeError, match=r"holds class probabilities and must be floating point, "
                                         r"got dtype int64"):
        ce(x, np.zeros((4, 10), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"weight should have shape \(10,\), one value per class, "
                                         r"got \(3,\)"):
        nn.CrossEntropyLoss(np.ones(3))(x, np.array([1, 2, 3, 4]))
    with pytest.raises(ShapeError, match=r"NLLLoss: an input of shape \(4, 10\) needs class-index "
                                         r"targets of shape \(4,\), got"):
        nn.NLLLoss()(x, np.zeros((4, 10), dtype=np.int64))
    with pytest.raises(ShapeError, match=r"MSELoss: the target must have the input's shape "
                                         r"\(4, 10\), got \(4,\)"):
        nn.MSELoss()(x, np.zeros(4))
    with pytest.raises(ShapeError, match=r"BCEWithLogitsLoss: pos_weight of shape \(3,\) does not "
                                         r"broadcast to the input's shape \(4, 10\)"):
        nn.BCEWithLogitsLoss(pos_weight=np.ones(3))(x, np.zeros((4, 10)))
    with pytest.raises(DTypeError, match=r"expected a floating-point input, got dtype int64"):
        ce(np.zeros((4, 10), dtype=np.int64), np.array([1, 2, 3, 4]))


def test_option_and_backward_errors():
    with pytest.raises(ValueError, match=r"reduction must be 'none', 'mean' or 'sum', got 'avg'"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"label_smoothing must be between 0.0 and 1.0, got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)
    criterion = nn.CrossEntropyLoss(reduction="none")
    criterion(np.zeros((4, 3)), np.array([0, 1, 2, 0]))
    with pytest.raises(ShapeError, match=r"with reduction='none' grad must have the loss's shape "
                                         r"\(4,\), got \(3,\)"):
        criterion.backward(np.ones(3))
    criterion = nn.MSELoss()
    with pytest.raises(NumcnnError, match="without a forward pass"):
        criterion.backward()
    criterion(np.zeros(3), np.ones(3))
    with pytest.raises(ShapeError, match=r"the loss is a scalar, so grad must be one number"):
        criterion.backward(np.ones(3))


def test_constructor_arguments_are_attributes_as_in_pytorch():
    ce = nn.CrossEntropyLoss(np.ones(3), ignore_index=5, reduction="sum", label_smoothing=0.1)
    assert (ce.ignore_index, ce.reduction, ce.label_smoothing) == (5, "sum", 0.1)
    np.testing.assert_array_equal(ce.weight, np.ones(3))
    assert list(ce.state_dict()) == list(torch.nn.CrossEntropyLoss(torch.ones(3)).state_dict())
    bce = nn.BCEWithLogitsLoss(pos_weight=np.ones(2))
    assert bce.weight is None and bce.reduction == "mean"
    assert list(bce.state_dict()) == list(
        torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(2)).state_dict())
    assert nn.NLLLoss().ignore_index == -100 and nn.MSELoss().reduction == "mean"


def test_functional_forms_agree_with_the_layers():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 3)).astype(np.float32), np.array([0, 1, 2, 1])
    assert F.cross_entropy(x, y) == nn.CrossEntropyLoss()(x, y)
    assert F.nll_loss(x, y, reduction="sum") == nn.NLLLoss(reduction="sum")(x, y)
    assert F.mse_loss(x, x * 2) == nn.MSELoss()(x, x * 2)
    t = (x > 0).astype(np.float32)
    assert F.binary_cross_entropy_with_logits(x, t) == nn.BCEWithLogitsLoss()(x, t)
