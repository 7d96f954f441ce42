"""Figures of a training run as PNG files: confusion matrix, learning curves, misclassified images.

Drawn with matplotlib's object API on its Agg (PNG) canvas: pyplot is never imported, so the
global backend of a notebook or script is left alone, and no window opens. matplotlib is imported
inside the functions, so ``import numcnn`` stays fast. Each file is written atomically (see
:func:`numcnn.io.atomic_write`). Every function returns the path it wrote.
"""

from __future__ import annotations

import math
import os

import numpy as np

from ._text import a, count
from .errors import ArgumentTypeError, ShapeError
from .io import atomic_write

__all__ = ["plot_confusion_matrix", "plot_history", "plot_misclassified"]


def _figure(width: float, height: float, layout: str | None = "constrained"):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout=layout)


def _save(fig, path) -> str:
    path = os.fspath(path)
    atomic_write(path, lambda file: fig.savefig(file, format="png"))
    return path


def plot_confusion_matrix(cm, classes, path, normalize: bool = False,
                          title: str = "Confusion matrix") -> str:
    """Draw a confusion matrix (rows: true class, columns: predicted class) with its counts.

    Args:
        cm: ``(k, k)`` counts, as from :func:`numcnn.metrics.confusion_matrix`.
        classes: ``k`` class names (or None for ``0 .. k-1``).
        path: the PNG to write.
        normalize: colour and label each row by its share of the row (the recall on the diagonal).
        title: the figure title.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ShapeError(f"plot_confusion_matrix: cm must be square (k, k), got shape {cm.shape}")
    k = cm.shape[0]
    names = [str(c) for c in (range(k) if classes is None else classes)]
    if len(names) != k:
        raise ShapeError(f"plot_confusion_matrix: {count(len(names), 'class name')} for "
                         f"{a(f'{k}x{k}')} matrix")
    rows = cm.sum(axis=1, keepdims=True)
    values = (np.divide(cm, rows, out=np.zeros(cm.shape), where=rows != 0) if normalize
              else cm.astype(np.float64))

    size = max(4.0, 0.55 * k + 2.5)
    fig = _figure(size + 1.0, size)
    ax = fig.add_subplot()
    image = ax.imshow(values, cmap="Blues", vmin=0, vmax=max(values.max(initial=0), 1e-12))
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), labels=names, rotation=45 if max(map(len, names), default=0) > 3
                  else 0, ha="right" if max(map(len, names), default=0) > 3 else "center")
    ax.set_yticks(range(k), labels=names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title + (" (row-normalised)" if normalize else ""))
    if k <= 30:
        threshold = values.max(initial=0) / 2
        fontsize = 9 if k <= 12 else 6
        for i in range(k):
            for j in range(k):
                text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if values[i, j] > threshold else "black")
    return _save(fig, path)


def _history_columns(history) -> dict[str, list]:
    """History as ``{name: [value per epoch]}``, from a dict of lists or a list of dicts."""
    if isinstance(history, dict):
        return {str(k): list(v) for k, v in history.items() if isinstance(v, (list, tuple))}
    if isinstance(history, (list, tuple)) and all(isinstance(row, dict) for row in history):
        names = []
        for row in history:
            names += [k for k in row if k not in names]
        return {str(name): [row.get(name) for row in history] for name in names}
    raise ArgumentTypeError("history must be a dict of per-epoch lists "
                            "({'train_loss': [...], ...}) or a "
                            "list of per-epoch dicts ([{'epoch': 1, 'train_loss': ...}, ...]), got "
                            f"{type(history).__name__}")


def _as_floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def plot_history(history, path, title: str = "Training history") -> str:
    """Learning curves: loss (left) and accuracy (right) per epoch, train and validation.

    Args:
        history: a dict of per-epoch lists (``{"train_loss": [...], "val_acc": [...]}``) or a
            list of per-epoch dicts. Every series whose name contains ``loss`` is drawn on the
            left, every one containing ``acc`` on the right; an ``epoch`` series gives the x axis
            (default 1, 2, ...). Missing values (None, NaN) are skipped.
        path: the PNG to write.
    """
    columns = _history_columns(history)
    lengths = {len(v) for v in columns.values()}
    n = max(lengths, default=0)
    epochs = (_as_floats(columns["epoch"]) if "epoch" in columns and len(columns["epoch"]) == n
              else np.arange(1, n + 1, dtype=np.float64))
    panels = [("loss", [k for k in columns if "loss" in k.lower()]),
              ("accuracy", [k for k in columns if "acc" in k.lower()])]
    panels = [(label, keys) for label, keys in panels if keys] or [("loss", [])]

    fig = _figure(5.0 * len(panels), 4.0)
    for index, (label, keys) in enumerate(panels, start=1):
        ax = fig.add_subplot(1, len(panels), index)
        for key in keys:
            values = _as_floats(columns[key])
            x = epochs[:len(values)]
            shown = np.isfinite(values)
            if shown.any():
                style = "--" if key.lower().startswith(("val", "valid", "test")) else "-"
                ax.plot(x[shown], values[shown], style, marker="o", markersize=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
        if n and n <= 20:
            ax.set_xticks(epochs[np.isfinite(epochs)])
    if not n:
        fig.axes[0].text(0.5, 0.5, "no epochs recorded", ha="center", va="center",
                         transform=fig.axes[0].transAxes)
    fig.suptitle(title)
    return _save(fig, path)


def _displayable(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """Images as (n, h, w) for grey or (n, h, w, 3) for colour, from NCHW, NHWC or NHW."""
    if images.ndim == 3:
        return images, False
    if images.ndim == 4:
        if images.shape[1] == 1:
            return images[:, 0], False
        if images.shape[-1] == 1:
            return images[..., 0], False
        if images.shape[1] == 3:
            return images.transpose(0, 2, 3, 1), True  # (n, c, h, w) -> (n, h, w, c)
        if images.shape[-1] == 3:
            return images, True
    raise ShapeError(f"plot_misclassified: images must be (n, h, w), (n, 1|3, h, w) or "
                     f"(n, h, w, 1|3), got shape {images.shape}")


def plot_misclassified(images, y_true, y_pred, probs, path, max_images: int = 25,
                       classes=None) -> str:
    """A grid of misclassified images, most confident mistakes first.

    Args:
        images: the images, ``(n, h, w)``, ``(n, c, h, w)`` or ``(n, h, w, c)`` (``c`` 1 or 3).
        y_true, y_pred: true and predicted class indices, ``(n,)``.
        probs: class probabilities ``(n, k)`` (or None): they order the mistakes by the
            probability given to the wrong class, and the titles show it.
        path: the PNG to write.
        max_images: at most this many images are drawn.
        classes: class names (default: the indices).
    """
    images = np.asarray(images)
    y_true = np.asarray(y_true).reshape(-1)
    y_pred = np.asarray(y_pred).reshape(-1)
    if not (len(images) == len(y_true) == len(y_pred)):
        raise ShapeError(f"plot_misclassified: {len(images)} images, {len(y_true)} true labels "
                         f"and {len(y_pred)} predictions; they must match")
    if probs is not None:
        probs = np.asarray(probs)
        if probs.ndim != 2 or len(probs) != len(images):
            raise ShapeError(f"plot_misclassified: probs must be (n, k) = ({len(images)}, k), "
                             f"got shape {probs.shape}")
    pictures, colour = _displayable(images)
    wrong = np.flatnonzero(y_true != y_pred)
    confidence = None
    if probs is not None and wrong.size:
        confidence = probs[wrong, y_pred[wrong]]
        wrong = wrong[np.argsort(-confidence, kind="stable")]
        confidence = probs[wrong, y_pred[wrong]]
    wrong = wrong[:max(int(max_images), 0)]

    def name(c):
        return str(classes[c]) if classes is not None else str(int(c))

    count = len(wrong)
    cols = min(count, 5) or 1
    rows = max(math.ceil(count / cols), 1)
    # A fixed grid: the images have no axes, so constrained layout (which measured each of the
    # 25 axes' tick boxes, 0.7 of the 0.8 s this took) has nothing to fit.
    width, height = 2.0 * cols + 0.4, 2.2 * rows + 0.9
    fig = _figure(width, height, layout=None)
    fig.subplots_adjust(left=0.2 / width, right=1 - 0.2 / width, bottom=0.1 / height,
                        top=1 - 0.9 / height, wspace=0.1, hspace=0.45)
    if count == 0:
        ax = fig.add_subplot()
        ax.axis("off")
        ax.text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    for position, index in enumerate(wrong):
        ax = fig.add_subplot(rows, cols, position + 1)
        picture = pictures[index].astype(np.float64)
        if colour:  # imshow wants RGB in [0, 1]: stretch each image to its own range
            low, high = picture.min(), picture.max()
            picture = (picture - low) / (high - low) if high > low else np.zeros_like(picture)
            ax.imshow(picture)
        else:
            ax.imshow(picture, cmap="gray")
        label = f"true {name(y_true[index])}, pred {name(y_pred[index])}"
        if confidence is not None:
            label += f"\np={confidence[position]:.2f}"
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(f"Misclassified: {count} shown of {int(np.sum(y_true != y_pred))}",
                 y=1 - 0.15 / height, va="top")
    return _save(fig, path)
