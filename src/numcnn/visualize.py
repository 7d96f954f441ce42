"""Pictures of what a network sees: filters, feature maps, saliency, and classic kernels.

>>> from numcnn import visualize
>>> visualize.show(model, image, "pictures/")      # filters.png, feature_maps_*.png, saliency.png
>>> maps = visualize.feature_maps(model, image)    # [(layer name, label, (C, H, W) array), ...]
>>> sal, predicted, scores = visualize.saliency(model, image)
>>> visualize.plot_kernel_demo(digit, "kernels.png")

- **Filters**: the first convolution's weights, one panel per output channel, on one colour
  scale centred at 0 (red positive, blue negative), so that the filters compare.
- **Feature maps**: the output of every convolution for one image (eval mode), one panel per
  channel, each on its own grey scale.
- **Saliency** (Simonyan, Vedaldi and Zisserman 2014, https://arxiv.org/abs/1312.6034): the
  gradient of the predicted class's score (its logit) with respect to the input pixels,
  ``|d score / d x|`` (largest over the channels): the pixels whose change moves the score most.
- **Kernels**: Sobel x and y, blur, sharpen, Laplacian and emboss applied to an image with
  :func:`numcnn.functional.correlate` (what a CNN layer computes) beside the true convolution
  (:func:`numcnn.functional.convolve`, the kernel rotated by 180 degrees) and their difference.

Drawn with matplotlib's object API on its Agg canvas, as :mod:`numcnn.plots`; each PNG is written
atomically and records its panel grid in its metadata (``numcnn-grid``: ``"rows x cols"``).
Every function returns the path it wrote.
"""

from __future__ import annotations

import math
import os

import numpy as np

from . import _text
from ._grad import no_grad
from .errors import NumcnnError, ShapeError
from .io import atomic_write

__all__ = ["first_conv", "plot_filters", "feature_maps", "plot_feature_maps", "saliency",
           "plot_saliency", "show", "KERNELS", "plot_kernel_demo"]

# 3x3 kernels of image processing (as written, i.e. for correlation)
KERNELS = {
    "Sobel x": np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64),
    "Sobel y": np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float64),
    "blur": np.full((3, 3), 1 / 9),
    "sharpen": np.array([[0, -1, 0], [-1, 5, -1], [0, -1, 0]], dtype=np.float64),
    "Laplacian": np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64),
    "emboss": np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float64),
}


def _figure(width, height):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(fig, path, rows: int, cols: int) -> str:
    path = os.fspath(path)
    metadata = {"numcnn-grid": f"{rows}x{cols}", "Software": "numcnn"}
    atomic_write(path, lambda file: fig.savefig(file, format="png", metadata=metadata))
    return path


def _grid(count: int, max_cols: int = 8) -> tuple[int, int]:
    cols = min(count, max_cols, max(1, math.ceil(math.sqrt(count))))
    return math.ceil(count / cols), cols


def _conv_label(name, layer) -> str:
    kernel = "x".join(str(k) for k in layer.kernel_size)
    return (f"layer {name} ({type(layer).__name__} {layer.in_channels}->{layer.out_channels}, "
            f"{kernel})")


def _convolutions(model):
    from . import nn

    return [(name, layer) for name, layer in model.named_modules()
            if isinstance(layer, (nn.Conv2d, nn.Conv1d))]


def first_conv(model):
    """``(name, layer)`` of the model's first convolution; NumcnnError if it has none."""
    found = _convolutions(model)
    if not found:
        raise NumcnnError(f"the model has no convolution ({type(model).__name__}); there are no "
                          f"filters to draw")
    return found[0]


def _as_image(image, model=None) -> np.ndarray:
    """One image as ``(1, C, H, W)`` float, from (H, W), (C, H, W) or (1, C, H, W)."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[None, None]
    elif image.ndim == 3:
        image = image[None]
    if image.ndim != 4 or image.shape[0] != 1:
        raise ShapeError(f"expected one image (H, W), (C, H, W) or (1, C, H, W), got shape "
                         f"{image.shape}")
    dtype = np.float32
    if model is not None:
        dtype = next((p.dtype for p in model.parameters()), np.dtype(np.float32))
    return image.astype(dtype)


# ----------------------------------------------------------------------------------------------
# Filters
# ----------------------------------------------------------------------------------------------
def plot_filters(model, path, title: str | None = None) -> str:
    """The first convolution's filters as a grid: one panel per output channel.

    A filter over several input channels is drawn as its sum over them (a single input channel,
    as MNIST's, is drawn as it is). One colour scale for all, symmetric around 0.
    """
    name, layer = first_conv(model)
    weight = np.asarray(layer.weight.data, dtype=np.float64)  # (C_out, C_in/groups, kh, kw)
    if weight.ndim == 3:  # Conv1d: (C_out, C_in, k) as 1-row images
        weight = weight[:, :, None, :]
    pictures = weight.sum(axis=1)
    count = len(pictures)
    rows, cols = _grid(count)
    limit = float(np.abs(pictures).max()) or 1.0
    fig = _figure(1.3 * cols + 1.2, 1.35 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= count:
            ax.axis("off")
            continue
        image = ax.imshow(pictures[index], cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"filter {index}", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label="weight")
    summed = " (summed over input channels)" if weight.shape[1] > 1 else ""
    fig.suptitle(title or f"Filters of {_conv_label(name, layer)}{summed}", fontsize=10)
    return _save(fig, path, rows, cols)


# ----------------------------------------------------------------------------------------------
# Feature maps
# ----------------------------------------------------------------------------------------------
def feature_maps(model, image) -> list:
    """The output of every convolution for one image, in eval mode without gradients.

    Returns:
        ``[(name, label, maps), ...]`` in forward order; ``maps`` is ``(C, H, W)`` float64.
    """
    x = _as_image(image, model)
    convolutions = _convolutions(model)
    recorded = {}
    originals = []
    for name, layer in convolutions:
        forward = layer.forward

        def watched(inp, _forward=forward, _name=name):
            out = _forward(inp)
            recorded[_name] = np.array(out[0], dtype=np.float64)
            return out

        originals.append((layer, "forward" in layer.__dict__, forward))
        object.__setattr__(layer, "forward", watched)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(x)
    finally:
        model.train(was_training)
        for layer, had_own, forward in originals:
            if had_own:
                object.__setattr__(layer, "forward", forward)
            else:
                del layer.__dict__["forward"]
    result = []
    for name, layer in convolutions:
        maps = recorded[name]
        if maps.ndim == 2:  # Conv1d: (C, L) -> (C, 1, L)
            maps = maps[:, None, :]
        result.append((name, _conv_label(name, layer), maps))
    return result


def plot_feature_maps(maps, path, title: str = "", max_maps: int = 64) -> str:
    """One panel per channel of ``maps`` ``(C, H, W)`` (at most ``max_maps``), each on its own
    grey scale (black: its lowest value, white: its highest), titled with its channel."""
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ShapeError(f"plot_feature_maps: maps must be (C, H, W), got shape {maps.shape}")
    count = min(len(maps), max_maps)
    rows, cols = _grid(count)
    fig = _figure(1.3 * cols + 0.4, 1.35 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for index, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if index >= count:
            ax.axis("off")
            continue
        ax.imshow(maps[index], cmap="gray")
        ax.set_title(f"channel {index}", fontsize=8)
    shown = f" (first {count} of {len(maps)})" if count < len(maps) else ""
    size = "x".join(str(s) for s in maps.shape[1:])
    fig.suptitle(f"{title}: feature maps, {_text.count(len(maps), 'channel')} of {size}{shown}",
                 fontsize=10)
    return _save(fig, path, rows, cols)


# ----------------------------------------------------------------------------------------------
# Saliency
# ----------------------------------------------------------------------------------------------
def saliency(model, image, target: int | None = None):
    """``|d score_c / d x|`` for one image: the gradient of class ``c``'s logit (default: the
    predicted class) with respect to the input, largest over the channels.

    Returns:
        ``(saliency (H, W), class c, logits (K,))``. The model's parameter gradients and mode
        are left as they were.
    """
    x = _as_image(image, model)
    saved = [p.grad.copy() for p in model.parameters()]
    was_training = model.training
    model.eval()
    try:
        logits = np.asarray(model(x))
        if logits.ndim != 2 or logits.shape[0] != 1:
            raise ShapeError(f"saliency: the model must give (1, K) scores for one image, got "
                             f"{logits.shape}")
        c = int(np.argmax(logits[0])) if target is None else int(target)
        if not 0 <= c < logits.shape[1]:
            raise NumcnnError(f"saliency: target must be a class in 0..{logits.shape[1] - 1}, "
                              f"got {target}")
        grad_out = np.zeros_like(logits)
        grad_out[0, c] = 1  # d score_c / d logits
        grad_x = np.asarray(model.backward(grad_out))
    finally:
        model.train(was_training)
        for param, grad in zip(model.parameters(), saved):
            param.grad[...] = grad
    return np.abs(grad_x[0]).max(axis=0).astype(np.float64), c, logits[0].astype(np.float64)


def plot_saliency(image, sal, predicted, path, classes=None, probability=None) -> str:
    """Three panels: the image, the saliency map, and the saliency over the image."""
    picture = _as_image(image)[0].astype(np.float64)
    picture = picture[0] if picture.shape[0] == 1 else picture.mean(axis=0)
    fig = _figure(9.5, 3.6)
    axes = fig.subplots(1, 3, squeeze=False)[0]
    name = str(classes[predicted]) if classes is not None else str(predicted)
    axes[0].imshow(picture, cmap="gray")
    axes[0].set_title("input image")
    shown = axes[1].imshow(sal, cmap="inferno")
    axes[1].set_title("|d score / d pixel|")
    fig.colorbar(shown, ax=axes[1], shrink=0.8)
    axes[2].imshow(picture, cmap="gray")
    axes[2].imshow(sal, cmap="inferno", alpha=0.6)
    axes[2].set_title("saliency over the image")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    extra = f" (p={probability:.2f})" if probability is not None else ""
    fig.suptitle(f"Saliency of the predicted class {name}{extra}: gradient of its score with "
                 f"respect to the input", fontsize=10)
    return _save(fig, path, 1, 3)


# ----------------------------------------------------------------------------------------------
# Everything for one image
# ----------------------------------------------------------------------------------------------
def show(model, image, out_dir, classes=None, prefix: str = "") -> dict:
    """Write ``filters.png``, ``feature_maps_<layer>.png`` for every convolution and
    ``saliency.png`` for one (preprocessed) image into ``out_dir``; return ``{what: path}``."""
    from .train import softmax

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    written = {"filters": plot_filters(model, os.path.join(out_dir, f"{prefix}filters.png"))}
    for name, label, maps in feature_maps(model, image):
        key = f"feature_maps_{name.replace('.', '_') or 'model'}"
        written[key] = plot_feature_maps(maps, os.path.join(out_dir, f"{prefix}{key}.png"),
                                         title=label)
    sal, predicted, logits = saliency(model, image)
    probability = float(softmax(logits[None])[0, predicted])
    written["saliency"] = plot_saliency(image, sal, predicted,
                                        os.path.join(out_dir, f"{prefix}saliency.png"),
                                        classes=classes, probability=probability)
    return written


# ----------------------------------------------------------------------------------------------
# Classic kernels: correlation beside convolution
# ----------------------------------------------------------------------------------------------
def plot_kernel_demo(image, path, kernels: dict | None = None) -> str:
    """Each kernel applied to ``image`` (H, W) by correlation (a CNN layer's operation) and by
    true convolution (the kernel rotated by 180 degrees), and their difference, in one PNG.

    Rows: one per kernel; columns: the kernel with its numbers, ``correlate(image, k)``,
    ``convolve(image, k)``, correlation minus convolution. ``mode='same'`` keeps the image size.
    Symmetric kernels (blur, Laplacian) give no difference; antisymmetric ones (Sobel) give the
    opposite sign; emboss lights the other side.
    """
    from .functional import convolve, correlate

    picture = np.asarray(image, dtype=np.float64)
    if picture.ndim == 3 and picture.shape[0] in (1, 3):
        picture = picture.mean(axis=0)
    if picture.ndim != 2:
        raise ShapeError(f"plot_kernel_demo: expected a grey image (H, W), got shape "
                         f"{np.shape(image)}")
    if picture.max() > 1.5:  # 0..255 pixels
        picture = picture / 255.0
    kernels = KERNELS if kernels is None else kernels
    rows, cols = len(kernels), 4
    fig = _figure(11.0, 2.3 * rows + 0.8)
    axes = fig.subplots(rows, cols, squeeze=False)
    for row, (name, kernel) in enumerate(kernels.items()):
        corr = correlate(picture, kernel, mode="same")
        conv = convolve(picture, kernel, mode="same")
        limit = max(float(np.abs(corr).max()), float(np.abs(conv).max()), 1e-12)
        ax = axes[row, 0]
        ax.imshow(kernel, cmap="RdBu_r", vmin=-np.abs(kernel).max(), vmax=np.abs(kernel).max())
        strongest = float(np.abs(kernel).max()) or 1.0
        for (i, j), value in np.ndenumerate(kernel):
            ax.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=9,
                    color="white" if abs(value) > 0.6 * strongest else "black")
        ax.set_title(f"{name} kernel", fontsize=9)
        panels = ((corr, "correlate (CNN layer)"), (conv, "convolve (kernel rotated 180°)"),
                  (corr - conv, "correlate - convolve"))
        for col, (values, title) in enumerate(panels, start=1):
            axes[row, col].imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit)
            axes[row, col].set_title(f"{name}: {title}", fontsize=9)
        for ax in axes[row]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("Correlation (what a CNN computes) beside true convolution, mode='same'; "
                 "red positive, blue negative", fontsize=10)
    return _save(fig, path, rows, cols)
