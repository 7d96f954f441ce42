"""numcnn.explain: every layer's formula, parameters, FLOPs and memory, checked independently."""

import json
import math

import numpy as np
import pytest
import torch
from test_cli import run
from torch.utils.flop_counter import FlopCounterMode

import numcnn
from numcnn import models, nn
from numcnn.errors import NumcnnError, ShapeError


def _model_zoo(groups=4):
    """Layers whose shapes and counts are not trivial: stride, dilation, groups, asymmetric
    'same' padding, a transposed convolution, a 1-D convolution inside a residual-free chain."""
    return nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, kernel_size=(3, 2), dilation=(2, 1), groups=groups, padding="same"),
        nn.BatchNorm2d(8),
        nn.ConvTranspose2d(8, 4, kernel_size=3, stride=2, padding=1, output_padding=1),
        nn.MaxPool2d(3, stride=2),
        nn.Flatten(),
        nn.Linear(4 * 13 * 13, 5),
    )


def _independent_macs(model, x):
    """Multiply-adds of every convolution and linear layer, from the shapes a real forward pass
    produces (not from numcnn.explain's formulas)."""
    total = 0
    for layer in model:
        y = layer(x)
        if isinstance(layer, nn.Conv2d):
            total += y.size * (layer.in_channels // layer.groups) * math.prod(layer.kernel_size)
        elif isinstance(layer, nn.ConvTranspose2d):  # each input pixel meets the whole kernel
            total += x.size * (layer.out_channels // layer.groups) * math.prod(layer.kernel_size)
        elif isinstance(layer, nn.Linear):
            total += y.size * layer.in_features
        x = y
    return total


@pytest.mark.parametrize("name", ["convnet-bn", "small-cnn", "lenet5", "zoo"])
def test_shapes_params_and_macs_agree_with_a_real_forward_pass(name):
    model = _model_zoo() if name == "zoo" else models.preset(name)
    sample = (3, 28, 28) if name == "zoo" else (1, 28, 28)
    report = model.explain(sample, batch_size=3)
    x = np.random.default_rng(0).standard_normal((3, *sample)).astype(np.float32)
    shapes, y = [], x
    for layer in model:
        y = layer(y)
        shapes.append(list(y.shape))
    assert [row["output_shape"] for row in report.rows] == shapes
    assert [row["params"] for row in report.rows] == [layer.num_parameters() for layer in model]
    assert report.totals["params"] == model.num_parameters()
    assert sum(row["macs"] for row in report.rows) == _independent_macs(model, x)
    for row in report.rows:  # every formula line ends with the size it computes
        for line, size in zip([l for l in row["output_size"] if l.startswith(("height", "width"))],
                              row["output_shape"][2:]):
            assert line.endswith(f"= {size}")
        assert row["params_formula"].endswith(f"{row['params']:,}")


@pytest.mark.parametrize("name", ["convnet-bn", "lenet5", "zoo"])
def test_matmul_flops_agree_with_torch_flop_counter(name):
    from bench import bench

    # one group: torch's counter counts a grouped convolution's weight gradient once per group
    # over the whole input (torch 2.13), which is not what is computed
    model = _model_zoo(groups=1) if name == "zoo" else models.preset(name)
    sample = (3, 28, 28) if name == "zoo" else (1, 28, 28)
    spec = models.to_spec(model)
    twin = bench.torch_model(spec)
    batch = 4
    report = model.explain(sample, batch_size=batch, measure=False)
    x = torch.randn(batch, *sample)
    counter = FlopCounterMode(display=False)
    with counter:
        twin(x)
    forward_products = sum(2 * row["macs"] for row in report.rows)
    assert counter.get_total_flops() == forward_products
    counter = FlopCounterMode(display=False)
    with counter:
        twin(x).sum().backward()  # x needs no gradient: the first layer's input gradient is skipped
    products = [row for row in report.rows if row["macs"]]
    backward_products = sum(4 * row["macs"] for row in products) - 2 * products[0]["macs"]
    assert counter.get_total_flops() == forward_products + backward_products
    t = report.totals
    assert t["flops_per_image_training"] * batch >= forward_products + backward_products


def test_formula_text_of_the_issue_example():
    report = nn.Sequential(nn.Conv2d(16, 32, 5, padding=2)).explain((16, 28, 28))
    row = report.rows[0]
    assert row["output_size"][0] == ("height: out = floor((in + 2*pad - dilation*(k-1) - 1) / "
                                     "stride) + 1 = floor((28 + 2*2 - 1*(5-1) - 1) / 1) + 1 = 28")
    assert row["params_formula"] == "32*16*5*5 + 32 = 12,832"
    assert row["im2col"]["columns"] == [16 * 5 * 5, 28 * 28]
    assert row["im2col"]["weights"] == [32, 400]
    assert "rotated by 180 degrees" in row["backward"]


def test_memory_is_measured_and_the_model_left_untouched():
    model = models.preset("convnet-bn")
    before = model.state_dict()
    rng_before = numcnn.get_rng().bit_generator.state
    report = model.explain((1, 28, 28), batch_size=8)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)
    assert numcnn.get_rng().bit_generator.state == rng_before
    assert all(float(np.abs(p.grad).max()) == 0 for p in model.parameters())
    kept = report.rows[0]["bytes_kept"]  # the first convolution keeps at least its input
    assert kept >= 8 * 28 * 28 * 4
    assert report.totals["peak_activation_bytes"] >= report.totals["bytes_kept"] > 0
    bigger = model.explain((1, 28, 28), batch_size=32)
    assert bigger.totals["bytes_kept"] > 3 * report.totals["bytes_kept"]


def test_formats_and_errors():
    report = models.preset("small-cnn").explain((1, 28, 28))
    data = json.loads(report.format("json"))
    assert data["totals"]["params"] == 17_066 and len(data["layers"]) == len(report.rows)
    assert report.format("markdown").startswith("| Layer |")
    assert "parameters: 17,066" in str(report)
    with pytest.raises(NumcnnError, match="format must be"):
        report.format("yaml")
    with pytest.raises(ShapeError, match="layer"):
        models.preset("small-cnn").explain((1, 4, 4))
    with pytest.raises(NumcnnError, match="batch_size"):
        models.preset("small-cnn").explain((1, 28, 28), batch_size=0)


def test_cli_explain(tmp_path):
    code, out, _ = run(["explain", "convnet-bn", "--batch", "16"])
    assert code == 0 and "im2col: columns" in out and "FLOPs per image" in out
    code, out, _ = run(["explain", "lenet5", "--format", "json"])
    assert code == 0 and json.loads(out)["totals"]["params"] == 61_706
    code, _, err = run(["explain", "no-such-model"])
    assert code == 2 and err.startswith("numcnn explain: error:")  # an unknown name: usage


def test_a_residual_block_with_a_projection_shortcut_is_explained():
    """resnet-cifar's downsampling blocks: f(x) + shortcut(x), both branches walked, the shapes
    and the parameter total those of the model."""
    model = models.preset("resnet-cifar")
    report = model.explain((3, 32, 32))
    names = [row["name"] for row in report.rows]
    assert any(".shortcut." in name for name in names)
    assert report.rows[-1]["output_shape"] == [1, 10]
    assert report.totals["params"] == model.num_parameters()
