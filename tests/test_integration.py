"""The issue's model end to end against PyTorch: same weights, same batch, same train step."""

import numpy as np
import pytest
import torch

import numcnn
from numcnn import nn, optim
from numcnn.errors import ShapeError
from tests.helpers import tol


def numcnn_model():
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=5, stride=1, padding=2), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(16, 32, kernel_size=5, stride=1, padding=2), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(), nn.Linear(7 * 7 * 32, 10),
    )


def torch_model():
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(1, 16, kernel_size=5, stride=1, padding=2), tnn.BatchNorm2d(16), tnn.ReLU(),
        tnn.MaxPool2d(2, 2),
        tnn.Conv2d(16, 32, kernel_size=5, stride=1, padding=2), tnn.BatchNorm2d(32), tnn.ReLU(),
        tnn.MaxPool2d(2, 2),
        tnn.Flatten(), tnn.Linear(7 * 7 * 32, 10),
    )


# Batch norm subtracts the batch mean, so the biases of the convolutions before it have a zero
# gradient: what is computed is rounding noise (1e-9 in float32, 1e-17 in float64), and Adam's step
# m / sqrt(v) turns noise of either sign into a step of +-lr, which then moves the running means.
# So the Adam step is compared on everything else (the gradients, biases' included, are compared
# exactly), and SGD, whose step of a noise gradient is noise, is compared over several steps.
BIASES_BEFORE_BATCHNORM = ("0.bias", "4.bias")


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("targets", ["indices", "one-hot"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_full_train_step_equals_pytorch(dtype, targets, optimizer):
    torch.manual_seed(0)
    reference = torch_model().to(torch.float64 if dtype == np.float64 else torch.float32)
    model = numcnn_model().to(dtype)
    state = {k: v.detach().numpy() for k, v in reference.state_dict().items()}
    model.load_state_dict(state)
    assert list(model.state_dict()) == list(state)

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, size=8)
    target = y if targets == "indices" else np.eye(10, dtype=dtype)[y]

    if optimizer == "adam":
        # One step: see BIASES_BEFORE_BATCHNORM for why Adam's later steps cannot be compared.
        t_opt, opt, steps = (torch.optim.Adam(reference.parameters(), lr=1e-3),
                             optim.Adam(model.parameters(), lr=1e-3), 1)
    else:
        # Three steps: the later ones use the momentum buffers and updated BN statistics.
        t_opt, opt, steps = (torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9),
                             optim.SGD(model.parameters(), lr=0.1, momentum=0.9), 3)
    for _ in range(steps):
        t_x = torch.tensor(x, requires_grad=True)
        t_logits = reference(t_x)
        t_loss = torch.nn.functional.cross_entropy(t_logits, torch.tensor(target))
        t_opt.zero_grad()
        t_loss.backward()

        criterion = nn.CrossEntropyLoss()
        logits = model(x)
        loss = criterion(logits, target)
        opt.zero_grad()
        grad_x = model.backward(criterion.backward())

        np.testing.assert_allclose(logits, t_logits.detach().numpy(), **tol(dtype))
        np.testing.assert_allclose(loss, t_loss.item(), **tol(dtype))
        np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(dtype))
        t_params = dict(reference.named_parameters())
        for name, param in model.named_parameters():
            np.testing.assert_allclose(param.grad, t_params[name].grad.numpy(), **tol(dtype),
                                       err_msg=name)
        t_opt.step()
        opt.step()
        t_state = reference.state_dict()
        for name, value in model.state_dict().items():
            if optimizer == "adam" and name in BIASES_BEFORE_BATCHNORM:
                # Adam's step m / sqrt(v) turns a gradient of rounding noise into +-lr.
                assert np.abs(value - t_state[name].numpy()).max() <= 2e-3
                assert np.abs(dict(model.named_parameters())[name].grad).max() < 1e-5
                continue
            np.testing.assert_allclose(value, t_state[name].numpy(), **tol(dtype), err_msg=name)

    if optimizer == "adam":
        return  # in eval mode the biases before batch norm count, and Adam set them from noise
    model.eval()
    reference.eval()
    with numcnn.no_grad(), torch.no_grad():
        np.testing.assert_allclose(model(x), reference(torch.tensor(x)).numpy(), **tol(dtype))


def test_summary_shows_shapes_and_parameter_counts():
    text = numcnn_model().summary((1, 28, 28), print_fn=None)
    assert "(-1, 16, 28, 28)" in text and "(-1, 32, 7, 7)" in text and "(-1, 1568)" in text
    assert "15,690" in text  # Linear 1568 -> 10
    assert "Total params: 29,034" in text


def test_output_shape_agrees_with_forward_for_every_layer_of_the_model():
    model = numcnn_model()
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    shape = x.shape
    for layer in model:
        predicted = layer.output_shape(shape)
        x = layer(x)
        assert predicted == x.shape, type(layer).__name__
        shape = x.shape


def test_flatten_size_mismatch_names_the_layer_and_both_shapes():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(100, 10))
    with pytest.raises(ShapeError, match=r"layer 2 \(Linear\).*100.*2704"):
        model.output_shape((1, 1, 28, 28))
    with pytest.raises(ShapeError, match=r"layer 2 \(Linear\).*100.*2704"):
        model(np.zeros((1, 1, 28, 28), dtype=np.float32))


def test_wrong_channel_count_names_layer_and_shapes():
    model = numcnn_model()
    with pytest.raises(ShapeError, match=r"layer 0 \(Conv2d\).*1.*3"):
        model(np.zeros((1, 3, 28, 28), dtype=np.float32))


def test_kernel_larger_than_padded_input_shows_the_formula():
    model = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 1, kernel_size=5))
    with pytest.raises(ShapeError, match=r"layer 1 \(Conv2d\).*floor\(\(2 \+ 2\*0 - 1\*\(5-1\) - 1\) / 1\) \+ 1"):
        model.output_shape((1, 1, 4, 4))


def test_residual_block_of_convolutions_matches_pytorch():
    block = nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(4, 4, 3, padding=1)))
    block.double()
    t_conv1, t_conv2 = torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=1)
    t_conv1.double(), t_conv2.double()
    block.fn[0].load_state_dict({k: v.detach().numpy() for k, v in t_conv1.state_dict().items()})
    block.fn[2].load_state_dict({k: v.detach().numpy() for k, v in t_conv2.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 4, 6, 6))
    t_x = torch.tensor(x, requires_grad=True)
    t_y = t_x + t_conv2(torch.relu(t_conv1(t_x)))
    grad = np.random.default_rng(1).standard_normal(x.shape)
    t_y.backward(torch.tensor(grad))
    np.testing.assert_allclose(block(x), t_y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(block.backward(grad), t_x.grad.numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(block.fn[0].weight.grad, t_conv1.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-10)
