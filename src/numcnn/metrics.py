"""Classification metrics: the confusion matrix, per-class precision/recall/F1, terminal tables.

For class ``k`` with ``cm`` the confusion matrix (rows: true class, columns: predicted class)::

    precision_k = cm[k, k] / sum_i cm[i, k]      (of the samples predicted k, the share that are k)
    recall_k    = cm[k, k] / sum_j cm[k, j]      (of the samples that are k, the share found)
    f1_k        = 2 * precision_k * recall_k / (precision_k + recall_k)
    accuracy    = trace(cm) / sum(cm)

A ratio whose denominator is zero (a class never predicted, or absent) is reported as 0, with no
warning, as scikit-learn's ``zero_division=0`` does.
"""

from __future__ import annotations

import numpy as np

from ._text import a, count
from .errors import ArgumentError, ShapeError

__all__ = ["confusion_matrix", "classification_report", "format_confusion_matrix",
           "format_report"]


def _labels(y, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        hint = " (class scores? take y.argmax(axis=1))" if y.ndim == 2 else ""
        raise ShapeError(f"confusion_matrix: {name} must be a 1-D array of class indices, got "
                         f"shape {y.shape}{hint}")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.number) and np.all(np.mod(y, 1) == 0)):
            raise ArgumentError(f"confusion_matrix: {name} must hold integer class indices, got "
                                f"dtype {y.dtype}")
    return y.astype(np.int64, copy=False)


def confusion_matrix(y_true, y_pred, num_classes: int | None = None) -> np.ndarray:
    """Counts ``cm[i, j]`` of samples of true class ``i`` predicted as class ``j``.

    Args:
        y_true: true class indices, shape ``(n,)``.
        y_pred: predicted class indices, shape ``(n,)``.
        num_classes: the number of classes ``k``; default: one more than the largest index seen.

    Returns:
        an int64 array of shape ``(k, k)``; rows are true classes, columns predicted classes.
    """
    y_true = _labels(y_true, "y_true")
    y_pred = _labels(y_pred, "y_pred")
    if y_true.shape != y_pred.shape:
        raise ShapeError(f"confusion_matrix: y_true and y_pred must have the same length, got "
                         f"{y_true.shape[0]} and {y_pred.shape[0]}")
    if num_classes is None:
        num_classes = int(max(y_true.max(initial=-1), y_pred.max(initial=-1))) + 1
    for name, y in (("y_true", y_true), ("y_pred", y_pred)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ArgumentError(f"confusion_matrix: {name} holds class indices from {y.min()} to "
                                f"{y.max()}, outside 0..{num_classes - 1} "
                                f"(num_classes={num_classes})")
    counts = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64, copy=False)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (no warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.zeros(np.broadcast(numerator, denominator).shape)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _class_names(classes, k: int) -> list[str]:
    if classes is None:
        return [str(i) for i in range(k)]
    names = [str(c) for c in classes]
    if len(names) != k:
        raise ShapeError(f"{count(len(names), 'class name')} given for {a(f'{k}x{k}')} "
                         f"confusion matrix")
    return names


def _square(cm) -> np.ndarray:
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ShapeError(f"a confusion matrix must be square (k, k), got shape {cm.shape}")
    return cm


def classification_report(cm, classes=None) -> dict:
    """Accuracy and, per class, precision, recall, F1 and support, from a confusion matrix.

    Args:
        cm: a ``(k, k)`` confusion matrix (rows true, columns predicted).
        classes: ``k`` class names; default ``"0"`` ... ``"k-1"``.

    Returns:
        a JSON-able dict::

            {"accuracy": float, "support": int (samples in all),
             "per_class": {name: {"precision", "recall", "f1", "support"}, ...},
             "macro_avg": {"precision", "recall", "f1", "support"},      # plain mean over classes
             "weighted_avg": {"precision", "recall", "f1", "support"}}   # weighted by support
    """
    cm = _square(cm)
    names = _class_names(classes, cm.shape[0])
    correct = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    total = int(cm.sum())
    precision = _ratio(correct, predicted)
    recall = _ratio(correct, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    per_class = {name: {"precision": float(p), "recall": float(r), "f1": float(f),
                        "support": int(s)}
                 for name, p, r, f, s in zip(names, precision, recall, f1, support)}
    weights = _ratio(support, total)

    def average(w):
        return {"precision": float(np.sum(w * precision)), "recall": float(np.sum(w * recall)),
                "f1": float(np.sum(w * f1)), "support": total}

    k = max(cm.shape[0], 1)
    return {"accuracy": float(_ratio(correct.sum(), total)), "support": total,
            "per_class": per_class, "macro_avg": average(np.full(cm.shape[0], 1.0 / k)),
            "weighted_avg": average(weights)}


def format_confusion_matrix(cm, classes=None) -> str:
    """The confusion matrix as a text table: true classes down, predicted classes across.

    A last column gives each true class's count and recall (the diagonal share of the row).
    """
    cm = _square(cm)
    names = _class_names(classes, cm.shape[0])
    support = cm.sum(axis=1)
    recall = _ratio(np.diag(cm), support)
    corner = "true \\ pred"
    label_w = max([len(corner), *(len(n) for n in names)])
    cell_w = max([len(n) for n in names] + [len(str(int(cm.max(initial=0)))), 3]) + 1
    total_w = max(len(str(int(support.max(initial=0)))), len("total")) + 1
    header = (f"{corner:<{label_w}}" + "".join(f"{n:>{cell_w}}" for n in names)
              + f"  |{'total':>{total_w}}{'recall':>8}")
    lines = [header, "-" * len(header)]
    for name, row, total, share in zip(names, cm, support, recall):
        lines.append(f"{name:<{label_w}}" + "".join(f"{int(v):>{cell_w}}" for v in row)
                     + f"  |{int(total):>{total_w}}{share:>8.2%}")
    return "\n".join(lines)


def format_report(report: dict) -> str:
    """A :func:`classification_report` dict as a text table (one row per class, then averages)."""
    rows = list(report["per_class"].items())
    name_w = max([len("weighted avg"), *(len(name) for name, _ in rows)])
    header = f"{'':<{name_w}}{'precision':>11}{'recall':>9}{'f1':>9}{'support':>10}"
    lines = [header, "-" * len(header)]

    def row(name, r):
        return (f"{name:<{name_w}}{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1']:>9.4f}"
                f"{r['support']:>10,}")

    lines += [row(name, r) for name, r in rows]
    lines.append("-" * len(header))
    lines.append(row("macro avg", report["macro_avg"]))
    lines.append(row("weighted avg", report["weighted_avg"]))
    lines.append(f"{'accuracy':<{name_w}}{report['accuracy']:>29.4f}{report['support']:>10,}")
    return "\n".join(lines)
