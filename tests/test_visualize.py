"""numcnn.visualize and `numcnn show` / `numcnn demo kernels`: the PNGs decode, with their grids;
the feature maps and the saliency are the numbers they claim to be."""

import numpy as np
import pytest
from PIL import Image
from test_cli import run

from numcnn import models, nn, visualize
from numcnn.errors import NumcnnError


def _decoded(path):
    with Image.open(path) as picture:
        picture.load()
        grid = picture.info.get("numcnn-grid")
        pixels = np.asarray(picture.convert("L"), dtype=np.float64)
    assert pixels.shape[0] > 150 and pixels.shape[1] > 150
    assert pixels.std() > 10  # not a blank canvas
    rows, cols = (int(v) for v in grid.split("x"))
    return rows, cols, pixels


def _holds(rows, cols, count):
    """The grid has room for every panel and no empty row."""
    return rows * cols >= count > (rows - 1) * cols


@pytest.fixture
def digit(mnist_small):
    return mnist_small[2][0].astype(np.float32)[None] / 255  # (1, 28, 28), a 7


def test_filters_grid(tmp_path):
    model = models.preset("convnet-bn")
    rows, cols, _ = _decoded(visualize.plot_filters(model, tmp_path / "filters.png"))
    assert _holds(rows, cols, 16)
    with pytest.raises(NumcnnError, match="no convolution"):
        visualize.plot_filters(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), tmp_path / "x.png")


def test_feature_maps_are_the_convolutions_outputs(tmp_path, digit):
    model = models.preset("convnet-bn").eval()
    maps = visualize.feature_maps(model, digit)
    assert [name for name, _, _ in maps] == ["0", "4"]
    x = digit[None]
    np.testing.assert_allclose(maps[0][2], model[0](x)[0], rtol=1e-6)
    np.testing.assert_allclose(maps[1][2], model[:5](x)[0], rtol=1e-5, atol=1e-6)
    for name, label, values in maps:
        rows, cols, _ = _decoded(visualize.plot_feature_maps(values, tmp_path / f"{name}.png",
                                                             title=label))
        assert _holds(rows, cols, len(values))


def test_saliency_is_the_gradient_of_the_predicted_score(tmp_path, digit):
    model = models.preset("small-cnn").double()
    # a little noise: on a blank background max pooling has ties, where no gradient exists
    image = digit.astype(np.float64) + 0.01 * np.random.default_rng(0).random(digit.shape)
    sal, predicted, logits = visualize.saliency(model, image)
    assert predicted == int(np.argmax(logits)) and sal.shape == (28, 28)
    model.eval()
    eps = 1e-6
    for (i, j) in ((14, 14), (5, 20), (20, 8), (10, 10)):
        up, down = image.copy(), image.copy()
        up[0, i, j] += eps
        down[0, i, j] -= eps
        numeric = (model(up[None])[0, predicted] - model(down[None])[0, predicted]) / (2 * eps)
        assert sal[i, j] == pytest.approx(abs(numeric), rel=1e-5, abs=1e-9)
    assert all(float(np.abs(p.grad).max()) == 0 for p in model.parameters())
    rows, cols, _ = _decoded(visualize.plot_saliency(image, sal, predicted,
                                                     tmp_path / "saliency.png"))
    assert (rows, cols) == (1, 3)


def test_kernel_demo_grid(tmp_path, digit):
    rows, cols, _ = _decoded(visualize.plot_kernel_demo(digit[0], tmp_path / "kernels.png"))
    assert (rows, cols) == (len(visualize.KERNELS), 4)


def test_cli_show_and_demo(tmp_path, mnist_small):
    png = tmp_path / "seven.png"
    Image.fromarray(mnist_small[2][0]).save(png)
    code, out, _ = run(["show", "small-cnn", png, "--out", tmp_path / "shown"])
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "shown").iterdir())
    assert names == ["feature_maps_0.png", "feature_maps_2.png", "feature_maps_5.png",
                     "feature_maps_7.png", "filters.png", "saliency.png"]
    for path in (tmp_path / "shown").iterdir():
        _decoded(path)
    code, _, _ = run(["demo", "kernels", png, "--out", tmp_path / "k.png"])
    assert code == 0 and _decoded(tmp_path / "k.png")[:2] == (6, 4)
    code, _, err = run(["show", "small-cnn", tmp_path / "missing.png"])
    assert code == 1 and len(err.strip().splitlines()) == 1
