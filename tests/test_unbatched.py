"""Unbatched input where PyTorch takes it: one sample without the batch axis, the output and the
input gradient without it too, ``output_shape`` following suit."""

import numpy as np
import pytest
import torch

from numcnn import nn
from numcnn.errors import ShapeError
from tests.helpers import check_layer_gradients, tol

CASES = [
    ("Conv2d", lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 5, 6)),
    ("Conv2d-stride", lambda: nn.Conv2d(2, 4, 3, stride=2, groups=2), (2, 7, 7)),
    ("Conv1d", lambda: nn.Conv1d(2, 3, 3), (2, 9)),
    ("ConvTranspose2d", lambda: nn.ConvTranspose2d(2, 3, 3, stride=2), (2, 4, 3)),
    ("MaxPool2d", lambda: nn.MaxPool2d(2), (3, 6, 5)),
    ("AvgPool2d", lambda: nn.AvgPool2d(3, 2, padding=1), (3, 6, 5)),
    ("LPPool2d", lambda: nn.LPPool2d(2, 2), (3, 6, 4)),
    ("AdaptiveAvgPool2d", lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 5, 7)),
    ("AdaptiveMaxPool2d", lambda: nn.AdaptiveMaxPool2d(2), (3, 5, 7)),
    ("MaxPool1d", lambda: nn.MaxPool1d(3, 2), (3, 9)),
    ("AvgPool1d", lambda: nn.AvgPool1d(2), (3, 9)),
    ("Linear", lambda: nn.Linear(5, 3), (5,)),
    ("ReLU", lambda: nn.ReLU(), (3, 4, 4)),
    ("GELU", lambda: nn.GELU(), (3, 4)),
    ("InstanceNorm2d", lambda: nn.InstanceNorm2d(3, affine=True), (3, 4, 4)),
]


def torch_twin(layer):
    """The torch layer of the same class and arguments, holding the same parameters."""
    name = type(layer).__name__
    args = {"Conv2d": lambda l: dict(in_channels=l.in_channels, out_channels=l.out_channels,
                                     kernel_size=l.kernel_size, stride=l.stride,
                                     padding=l.padding, groups=l.groups),
            "Linear": lambda l: dict(in_features=l.in_features, out_features=l.out_features),
            }
    args["Conv1d"] = args["ConvTranspose2d"] = args["Conv2d"]
    if name in args:
        t_layer = getattr(torch.nn, name)(**args[name](layer))
    elif name == "MaxPool2d":
        t_layer = torch.nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding)
    elif name == "AvgPool2d":
        t_layer = torch.nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding)
    elif name == "LPPool2d":
        t_layer = torch.nn.LPPool2d(layer.norm_type, layer.kernel_size)
    elif name.startswith("Adaptive"):
        t_layer = getattr(torch.nn, name)(layer.output_size)
    elif name in ("MaxPool1d", "AvgPool1d"):
        t_layer = getattr(torch.nn, name)(layer.kernel_size, layer.stride)
    elif name == "InstanceNorm2d":
        t_layer = torch.nn.InstanceNorm2d(layer.num_features, affine=True)
    else:
        t_layer = getattr(torch.nn, name)()
    t_layer.double()
    with torch.no_grad():
        for pname, param in layer.named_parameters():
            getattr(t_layer, pname).copy_(torch.tensor(param.data))
    return t_layer


@pytest.mark.parametrize("name, make, shape", CASES, ids=[c[0] for c in CASES])
def test_unbatched_matches_pytorch_and_the_batched_path(name, make, shape):
    layer = make().double()
    rng = np.random.default_rng(0)
    x = np.abs(rng.standard_normal(shape)) + 0.1        # positive: LPPool2d's p-th root is real
    t_layer = torch_twin(layer)
    out = layer(x)
    grad = rng.standard_normal(out.shape)
    grad_x = layer.backward(grad)
    t_x = torch.tensor(x, requires_grad=True)
    t_out = t_layer(t_x)
    t_out.backward(torch.tensor(grad))
    assert out.shape == tuple(t_out.shape) == layer.output_shape(shape)
    assert grad_x.shape == shape
    np.testing.assert_allclose(out, t_out.detach().numpy(), **tol(np.float64))
    np.testing.assert_allclose(grad_x, t_x.grad.numpy(), **tol(np.float64))
    batched = layer(x[None])                            # the same as a batch of one
    np.testing.assert_allclose(batched[0], out, rtol=1e-12, atol=1e-12)
    assert layer.output_shape((1, *shape)) == batched.shape


def test_unbatched_gradients_and_summary():
    check_layer_gradients(nn.Conv2d(2, 2, 3), np.random.default_rng(0).standard_normal((2, 4, 4)))
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(0),
                          nn.Linear(36, 2))
    assert model.output_shape((1, 8, 8)) == (2,)
    assert model(np.zeros((1, 8, 8), np.float32)).shape == (2,)


def test_parameter_gradients_only_path_works_unbatched():
    conv = nn.Conv2d(2, 3, 3)
    conv(np.ones((2, 5, 5), np.float32))
    conv.backward_params(np.ones((3, 3, 3), np.float32))
    assert np.all(conv.weight.grad != 0)


def test_wrong_ranks_still_raise():
    with pytest.raises(ShapeError, match="4-D"):
        nn.Conv2d(2, 3, 3)(np.zeros((5, 6), np.float32))
    with pytest.raises(ShapeError):
        nn.MaxPool2d(2).output_shape((4, 4))
