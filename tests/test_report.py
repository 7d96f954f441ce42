"""numcnn.report and the run folder of `numcnn train`: report.html is self-contained, and opens in
a real headless browser without console errors, every image decoded."""

import base64
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from numcnn import experiment, report

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
import render_report


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, mnist_small):
    x_train, y_train, x_test, y_test = mnist_small
    folder = tmp_path_factory.mktemp("report")
    npz = folder / "digits.npz"
    np.savez(npz, x_train=x_train[:400], y_train=y_train[:400], x_test=x_test[:100],
             y_test=y_test[:100])
    result = experiment.run_experiment(
        {"model": "small-cnn", "dataset": str(npz), "epochs": 2}, out=folder / "run",
        quiet=True, print_fn=None)
    return result.run_dir


def test_train_writes_the_pictures_and_the_report(run_dir):
    for name in ("health.png", "filters.png", "sample_saliency.png", "report.html",
                 "sample_feature_maps_0.png", "sample_feature_maps_7.png"):
        assert (run_dir / name).is_file(), name
    log = (run_dir / "train.log").read_text()
    assert log.count("health epoch") == 2


def test_report_is_self_contained(run_dir):
    text = (run_dir / "report.html").read_text(encoding="utf-8")
    assert "<script" not in text.lower()
    sources = re.findall(r'<img src="([^"]+)"', text)
    pictures = [p for p in run_dir.glob("*.png")]
    assert len(sources) == len(pictures) == 10
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        with Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))) as picture:
            picture.load()
            assert picture.size[0] > 100
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from the network
    for heading in ("Configuration", "Learning curves", "Confusion matrix", "Misclassified",
                    "Layers explained", "What the network sees", "Training health"):
        assert f">{heading}</h2>" in text
    assert "im2col: columns" in text and "FLOPs per image" in text


def test_report_in_a_headless_browser(run_dir, tmp_path):
    if render_report.find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium) for the browser check")
    pytest.importorskip("websocket", reason="websocket-client (test extra) is not installed")
    result = render_report.check_page(run_dir / "report.html", tmp_path / "page.png")
    assert result["problems"] == []
    assert len(result["images"]) == 10
    assert all(width > 0 and height > 0 for _, width, height in result["images"])
    with Image.open(tmp_path / "page.png") as page:
        assert page.size[1] > 3000  # the whole page, not the first screen


def test_report_of_a_missing_folder(tmp_path):
    from numcnn.errors import NumcnnError

    with pytest.raises(NumcnnError, match="no such run folder"):
        report.write_report(tmp_path / "nothing")


def test_the_browser_check_sees_a_broken_page(tmp_path):
    """The check is not blind: a console error, an exception and a broken image are reported."""
    if render_report.find_browser() is None:
        pytest.skip("no Chromium installed (apt-get install chromium) for the browser check")
    pytest.importorskip("websocket", reason="websocket-client (test extra) is not installed")
    page = tmp_path / "broken.html"
    page.write_text('<html><body><img alt="bad" src="data:image/png;base64,AAAA">'
                    '<script>console.error("boom"); undefinedFunction();</script></body></html>')
    problems = render_report.check_page(page)["problems"]
    assert any("boom" in p for p in problems)
    assert any(p.startswith("exception") for p in problems)
    assert any("'bad' did not decode" in p for p in problems)
