"""Module, Parameter and the containers, tested with small layers written here."""

import numpy as np
import pytest

import numcnn
from numcnn import nn
from numcnn.errors import NumcnnError, ShapeError
from numcnn.nn import Identity, Module, Parameter, Residual, Sequential
from tests.helpers import check_layer_gradients


class Scale(Module):
    """y = w * x + b per feature, with a buffer counting forward calls: a user-written layer."""

    def __init__(self, features):
        super().__init__()
        self.weight = Parameter(np.linspace(0.5, 1.5, features).astype(np.float32))
        self.bias = Parameter(np.zeros(features, dtype=np.float32))
        self.register_buffer("calls", np.array(0, dtype=np.int64))

    def forward(self, x):
        self.calls = self.calls + 1
        self._keep(x=x)
        return x * self.weight.data + self.bias.data

    def backward(self, grad_out):
        x = self._take()["x"]
        self.weight.grad += (grad_out * x).sum(axis=0)
        self.bias.grad += grad_out.sum(axis=0)
        return grad_out * self.weight.data


class Square(Module):
    def forward(self, x):
        self._keep(x=x)
        return x * x

    def backward(self, grad_out):
        return 2 * self._take()["x"] * grad_out


def test_registration_and_state_dict_keys_follow_pytorch():
    model = Sequential(Scale(3), Square(), Sequential(Scale(3), Identity()))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "0.calls", "2.0.weight",
                                        "2.0.bias", "2.0.calls"]
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.0.weight",
                                                             "2.0.bias"]
    assert model.num_parameters() == 12


def test_state_dict_is_a_copy_and_load_restores_outputs():
    model = Sequential(Scale(3), Square())
    state = model.state_dict()
    state["0.weight"][:] = 7  # changing the copy leaves the model alone
    assert not np.allclose(model[0].weight.data, 7)
    other = Sequential(Scale(3), Square())
    other.load_state_dict({k: v * 2 for k, v in model.state_dict().items()})
    x = np.ones((2, 3), dtype=np.float32)
    expected = np.broadcast_to((2 * model[0].weight.data) ** 2, (2, 3))
    np.testing.assert_allclose(other(x), expected)


def test_load_state_dict_errors_name_keys_and_shapes():
    model = Sequential(Scale(3))
    with pytest.raises(NumcnnError, match=r"missing keys \['0.calls'\]"):
        model.load_state_dict({"0.weight": np.ones(3), "0.bias": np.ones(3)})
    with pytest.raises(NumcnnError, match=r"unexpected keys \['1.weight'\]"):
        model.load_state_dict({**model.state_dict(), "1.weight": np.ones(3)})
    with pytest.raises(ShapeError, match=r"0.weight expected shape \(3,\), got \(4,\)"):
        model.load_state_dict({**model.state_dict(), "0.weight": np.ones(4)})


def test_gradients_accumulate_and_zero_grad_clears():
    layer = Scale(2)
    x = np.array([[1.0, 2.0]], dtype=np.float32)
    for _ in range(2):
        layer(x)
        layer.backward(np.ones((1, 2), dtype=np.float32))
    np.testing.assert_allclose(layer.weight.grad, 2 * x[0])
    layer.zero_grad()
    assert not layer.weight.grad.any()


def test_custom_layer_gradient_check_and_nested_containers():
    model = Sequential(Scale(4), Sequential(Square(), Scale(4)))
    x = np.random.default_rng(0).standard_normal((3, 4))
    check_layer_gradients(model, x)


def test_residual_block_forward_backward():
    block = Residual(Sequential(Scale(3), Square()))
    x = np.random.default_rng(1).standard_normal((2, 3))
    block.double()
    w = block.fn[0].weight.data
    np.testing.assert_allclose(block(x), x + (w * x) ** 2)
    check_layer_gradients(block, x)


def test_residual_shape_must_be_kept():
    class Halve(Module):
        def output_shape(self, shape):
            return (shape[0], shape[1] // 2)

    with pytest.raises(ShapeError, match=r"keep the shape \(1, 4\), but it gives \(1, 2\)"):
        Residual(Halve()).output_shape((1, 4))


def test_train_eval_propagates_to_children():
    model = Sequential(Scale(2), Sequential(Square()))
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_no_grad_keeps_no_cache_and_backward_says_so():
    layer = Scale(2)
    with numcnn.no_grad():
        layer(np.ones((1, 2), dtype=np.float32))
    with pytest.raises(NumcnnError, match="without a forward pass that kept its cache"):
        layer.backward(np.ones((1, 2), dtype=np.float32))


def test_cache_is_released_after_backward():
    layer = Scale(2)
    layer(np.ones((1, 2), dtype=np.float32))
    layer.backward(np.ones((1, 2), dtype=np.float32))
    assert layer._cache is None


def test_to_double_casts_parameters_and_float_buffers_only():
    layer = Scale(2).double()
    assert layer.weight.dtype == np.float64 and layer.weight.grad.dtype == np.float64
    assert layer.calls.dtype == np.int64


def test_sequential_indexing_and_refusal_of_non_modules():
    model = Sequential(Scale(2), Square(), Identity())
    assert isinstance(model[1], Square) and len(model) == 3 and len(model[1:]) == 2
    with pytest.raises(TypeError, match="Sequential takes Modules, got int at position 1"):
        Sequential(Scale(2), 3)


def test_module_without_super_init_is_explained():
    class Broken(Module):
        def __init__(self):
            self.weight = Parameter(np.ones(1))

    with pytest.raises(NumcnnError, match="must call super"):
        Broken()


def test_window_arguments_of_the_wrong_type_get_a_clear_message():
    from numcnn.functional._windows import pair

    with pytest.raises(ValueError, match=r"kernel_size must be an int or a tuple of 2 ints, got 2.0"):
        pair(2.0, "kernel_size")
    with pytest.raises(ValueError, match=r"stride must be an int or a tuple of 2 ints, got \(1, 2, 3\)"):
        pair((1, 2, 3), "stride")


def test_shape_errors_name_the_child_that_refused_the_shape():
    separable = nn.SeparableConv2d(3, 4, 3)
    with pytest.raises(ShapeError, match=r"SeparableConv2d \(depthwise\)"):
        separable.output_shape((1, 2, 8, 8))
    model = nn.Sequential(nn.Flatten(), nn.Sequential(nn.Linear(4, 2)))
    with pytest.raises(ShapeError, match=r"layer 1\.0 \(Linear\)"):
        model.summary((5,), print_fn=None)
    with pytest.raises(ShapeError, match=r"layer 1 \(Sequential\): layer 0 \(Linear\)"):
        model.output_shape((1, 5))
