"""Confusion matrix and classification report against loop counts and hand-worked examples."""

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from numcnn.errors import ShapeError
from numcnn.metrics import (classification_report, confusion_matrix, format_confusion_matrix,
                            format_report)


def loop_confusion(y_true, y_pred, k):
    """The plain definition: one count per (true, predicted) pair."""
    cm = [[0] * k for _ in range(k)]
    for t, p in zip(y_true, y_pred):
        cm[t][p] += 1
    return np.array(cm)


def loop_report(y_true, y_pred, k):
    """Precision, recall and F1 of each class from their definitions, counting sample by sample."""
    rows = []
    for c in range(k):
        tp = sum(1 for t, p in zip(y_true, y_pred) if t == c and p == c)
        fp = sum(1 for t, p in zip(y_true, y_pred) if t != c and p == c)
        fn = sum(1 for t, p in zip(y_true, y_pred) if t == c and p != c)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append((precision, recall, f1, tp + fn))
    return rows


@settings(max_examples=40, deadline=None)
@given(k=st.integers(1, 6), n=st.integers(0, 60), seed=st.integers(0, 2**31))
def test_confusion_matrix_and_report_equal_loop_counts(k, n, seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, k, n)
    y_pred = np.where(rng.random(n) < 0.6, y_true, rng.integers(0, k, n))
    cm = confusion_matrix(y_true, y_pred, k)
    assert cm.shape == (k, k) and cm.dtype == np.int64
    np.testing.assert_array_equal(cm, loop_confusion(y_true.tolist(), y_pred.tolist(), k))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division-by-zero RuntimeWarning for empty classes
        report = classification_report(cm, [f"c{i}" for i in range(k)])
    expected = loop_report(y_true.tolist(), y_pred.tolist(), k)
    assert report["support"] == n
    assert report["accuracy"] == pytest.approx(np.mean(y_true == y_pred) if n else 0.0)
    for i, (precision, recall, f1, support) in enumerate(expected):
        row = report["per_class"][f"c{i}"]
        assert row["precision"] == pytest.approx(precision)
        assert row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(f1)
        assert row["support"] == support
    assert report["macro_avg"]["f1"] == pytest.approx(np.mean([r[2] for r in expected]))
    if n:
        weighted = sum(r[1] * r[3] for r in expected) / n
        assert report["weighted_avg"]["recall"] == pytest.approx(weighted)
        # the support-weighted recall is the accuracy
        assert report["weighted_avg"]["recall"] == pytest.approx(report["accuracy"])


def test_rows_are_true_classes_columns_predicted():
    # two cats (0) called dogs (1), one dog called a cat, one bird (2) right
    cm = confusion_matrix([0, 0, 1, 2, 0], [1, 1, 0, 2, 0], num_classes=3)
    np.testing.assert_array_equal(cm, [[1, 2, 0], [1, 0, 0], [0, 0, 1]])


def test_report_on_a_hand_worked_case():
    # true:  0 0 0 0 1 1 2      pred: 0 0 0 1 1 0 0
    cm = confusion_matrix([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 0, 0], 3)
    report = classification_report(cm, ["a", "b", "c"])
    # class a: predicted a 5 times (samples 0, 1, 2, 5, 6), 3 right -> precision 3/5;
    # 4 true a, 3 found -> recall 3/4; f1 = 2 * 0.6 * 0.75 / 1.35 = 2/3
    assert report["per_class"]["a"] == pytest.approx(
        {"precision": 0.6, "recall": 0.75, "f1": 2 / 3, "support": 4})
    # class b: predicted b twice (samples 3, 4), 1 right -> 1/2; 2 true b, 1 found -> 1/2
    assert report["per_class"]["b"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    # class c: never predicted -> precision 0 (not nan), recall 0/1
    assert report["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report["accuracy"] == pytest.approx(4 / 7)
    assert report["macro_avg"]["precision"] == pytest.approx((0.6 + 0.5 + 0) / 3)
    assert report["weighted_avg"]["f1"] == pytest.approx((4 * 2 / 3 + 2 * 0.5) / 7)


def test_empty_input_gives_zeros_without_warnings():
    cm = confusion_matrix([], [], num_classes=2)
    np.testing.assert_array_equal(cm, np.zeros((2, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = classification_report(cm)
    assert report["accuracy"] == 0.0 and report["support"] == 0
    assert list(report["per_class"]) == ["0", "1"]


def test_num_classes_defaults_to_largest_index_plus_one():
    assert confusion_matrix([0, 3], [1, 1]).shape == (4, 4)


def test_bad_labels_are_refused_with_clear_messages():
    with pytest.raises(ShapeError, match="same length, got 3 and 2"):
        confusion_matrix([0, 1, 1], [0, 1], 2)
    with pytest.raises(ShapeError, match=r"1-D array of class indices, got shape \(2, 3\).*argmax"):
        confusion_matrix([0, 1], np.zeros((2, 3)), 3)
    with pytest.raises(ValueError, match=r"y_pred holds class indices from 0 to 5, outside 0..2"):
        confusion_matrix([0, 1], [0, 5], 3)
    with pytest.raises(ValueError, match="y_true holds class indices from -1"):
        confusion_matrix([-1, 1], [0, 1], 3)
    with pytest.raises(ValueError, match="integer class indices"):
        confusion_matrix([0.5, 1], [0, 1], 3)
    with pytest.raises(ShapeError, match="must be square"):
        classification_report(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match="3 class names given for a 2x2"):
        classification_report(np.eye(2), ["a", "b", "c"])


def test_format_confusion_matrix_lays_out_rows_and_columns():
    cm = confusion_matrix([0, 0, 1, 2, 0], [1, 1, 0, 2, 0], num_classes=3)
    text = format_confusion_matrix(cm, ["cat", "dog", "bird"])
    lines = text.splitlines()
    assert lines[0].split() == ["true", "\\", "pred", "cat", "dog", "bird", "|", "total", "recall"]
    assert set(lines[1]) == {"-"}
    assert lines[2].split() == ["cat", "1", "2", "0", "|", "3", "33.33%"]
    assert lines[3].split() == ["dog", "1", "0", "0", "|", "1", "0.00%"]
    assert lines[4].split() == ["bird", "0", "0", "1", "|", "1", "100.00%"]
    # columns line up: every row has the same length
    assert len({len(line) for line in lines}) == 1


def test_format_report_shows_each_class_and_the_averages():
    cm = confusion_matrix([0, 0, 0, 0, 1, 1, 2], [0, 0, 0, 1, 1, 0, 0], 3)
    text = format_report(classification_report(cm, ["a", "b", "c"]))
    rows = {line.split()[0]: line.split()[1:] for line in text.splitlines()
            if line.strip() and not line.startswith("-")}
    assert rows["a"] == ["0.6000", "0.7500", "0.6667", "4"]
    assert rows["c"] == ["0.0000", "0.0000", "0.0000", "1"]
    assert rows["macro"][0] == "avg" and rows["macro"][1] == f"{1.1 / 3:.4f}"
    assert rows["accuracy"] == [f"{4 / 7:.4f}", "7"]
    assert "precision" in text.splitlines()[0] and "support" in text.splitlines()[0]
