"""Plots: each writes a valid, non-blank PNG, atomically, without importing pyplot."""

import os
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from numcnn import plots
from numcnn.errors import ShapeError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_size=(200, 200)):
    """A complete PNG (signature, IHDR first, IEND last, chunk CRCs right) with visible content."""
    raw = open(path, "rb").read()
    assert raw.startswith(PNG_SIGNATURE), raw[:16]
    position, chunks = 8, []
    while position < len(raw):
        length = int.from_bytes(raw[position:position + 4], "big")
        kind = raw[position + 4:position + 8]
        body = raw[position + 8:position + 8 + length]
        crc = int.from_bytes(raw[position + 8 + length:position + 12 + length], "big")
        assert zlib.crc32(kind + body) == crc, f"bad CRC in chunk {kind}"
        chunks.append(kind)
        position += 12 + length
    assert chunks[0] == b"IHDR" and chunks[-1] == b"IEND" and b"IDAT" in chunks
    with Image.open(path) as image:
        image.load()
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"), dtype=np.float64)
    assert pixels.std() > 5, "the image is blank"
    return pixels


def test_confusion_matrix_png(tmp_path):
    cm = np.array([[50, 2, 0], [3, 40, 7], [0, 1, 60]])
    path = tmp_path / "cm.png"
    assert plots.plot_confusion_matrix(cm, ["cat", "dog", "bird"], path) == str(path)
    assert_png(path)
    plots.plot_confusion_matrix(np.arange(100).reshape(10, 10), None, tmp_path / "n.png",
                                normalize=True)
    assert_png(tmp_path / "n.png")


def test_confusion_matrix_refuses_bad_shapes(tmp_path):
    with pytest.raises(ShapeError, match="square"):
        plots.plot_confusion_matrix(np.zeros((2, 3)), None, tmp_path / "x.png")
    with pytest.raises(ShapeError, match="1 class name for a 2x2"):
        plots.plot_confusion_matrix(np.zeros((2, 2)), ["a"], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("form", ["dict of lists", "list of dicts"])
def test_history_png(tmp_path, form):
    history = {"epoch": [1, 2, 3], "loss": [1.0, 0.5, 0.3], "accuracy": [0.6, 0.8, 0.9],
               "val_loss": [1.1, 0.6, 0.4], "val_accuracy": [0.55, 0.75, 0.85],
               "lr": [1e-3] * 3, "best_epoch": 3}
    if form == "list of dicts":
        history = [{k: v[i] for k, v in history.items() if isinstance(v, list)} for i in range(3)]
    path = tmp_path / "history.png"
    plots.plot_history(history, path)
    pixels = assert_png(path)
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side


def test_history_without_validation_or_epochs(tmp_path):
    plots.plot_history({"loss": [0.9, 0.4], "val_loss": [None, None]}, tmp_path / "a.png")
    assert_png(tmp_path / "a.png")
    plots.plot_history({"loss": []}, tmp_path / "b.png")
    assert_png(tmp_path / "b.png")
    with pytest.raises(TypeError, match="dict of per-epoch lists"):
        plots.plot_history(3, tmp_path / "c.png")


@pytest.mark.parametrize("layout", [(1, 28, 28), (28, 28), (28, 28, 1), (3, 16, 16), (16, 16, 3)])
def test_misclassified_png(tmp_path, layout):
    rng = np.random.default_rng(0)
    images = rng.random((30, *layout)).astype(np.float32)
    y_true = rng.integers(0, 10, 30)
    y_pred = np.where(np.arange(30) % 3 == 0, (y_true + 1) % 10, y_true)  # 10 mistakes
    probs = rng.dirichlet(np.ones(10), 30)
    path = tmp_path / "wrong.png"
    plots.plot_misclassified(images, y_true, y_pred, probs, path, max_images=8)
    assert_png(path)


def test_misclassified_none_wrong_and_bad_input(tmp_path):
    images = np.zeros((4, 1, 8, 8))
    plots.plot_misclassified(images, [1, 2, 3, 4], [1, 2, 3, 4], None, tmp_path / "ok.png")
    assert_png(tmp_path / "ok.png", min_size=(100, 100))
    with pytest.raises(ShapeError, match="4 images, 3 true labels"):
        plots.plot_misclassified(images, [1, 2, 3], [1, 2, 3, 4], None, tmp_path / "x.png")
    with pytest.raises(ShapeError, match="images must be"):
        plots.plot_misclassified(np.zeros((4, 5, 8, 8)), [1] * 4, [2] * 4, None, tmp_path / "x.png")


def test_most_confident_mistakes_come_first(tmp_path, monkeypatch):
    shown = []
    real_save = plots._save

    def spy(fig, path):
        shown.extend(ax.get_title() for ax in fig.axes)
        return real_save(fig, path)

    monkeypatch.setattr(plots, "_save", spy)
    probs = np.array([[0.1, 0.9], [0.4, 0.6], [0.2, 0.8], [0.9, 0.1]])
    plots.plot_misclassified(np.zeros((4, 4, 4)), [0, 0, 0, 0], [1, 1, 1, 0], probs,
                             tmp_path / "w.png", max_images=2)
    assert shown == ["true 0, pred 1\np=0.90", "true 0, pred 1\np=0.80"]


def test_a_failed_write_leaves_the_old_png_and_no_temporary_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    path = tmp_path / "cm.png"
    plots.plot_confusion_matrix(np.eye(2), None, path)
    before = path.read_bytes()

    def broken_savefig(self, file, **kwargs):
        file.write(b"\x89PNG half a file")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.plot_confusion_matrix(np.ones((2, 2)), None, path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["cm.png"]


def test_importing_numcnn_does_not_import_matplotlib_or_safetensors():
    code = ("import sys, numcnn, numcnn.io, numcnn.models, numcnn.metrics, numcnn.plots; "
            "print(sorted(m for m in ('matplotlib', 'safetensors', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
