"""The command line's rough edges, each pinned by a test: failed runs leave no folder behind,
resuming a finished run says so, checkpoints and run folders where a model file is expected,
a data folder that is a file, the names a Python file offers, unknown names as usage errors,
and the grammar of messages."""

import contextlib
import io as stdio
import json

import numpy as np
import pytest

from numcnn import cli


def run(argv):
    """main(argv) -> (exit code, stdout, stderr)."""
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_line(text):
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """A tiny 3-class dataset of 8x8 images (bright, middle, dark), quick to train on."""
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 3, 300), rng.integers(0, 3, 60)
    x_train = (rng.random((300, 8, 8)) * 60 + y_train[:, None, None] * 60).astype(np.uint8)
    x_test = (rng.random((60, 8, 8)) * 60 + y_test[:, None, None] * 60).astype(np.uint8)
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    return path


SPEC = {"type": "Sequential", "layers": [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
    {"type": "ReLU"}, {"type": "Flatten"},
    {"type": "Linear", "in_features": 2 * 6 * 6, "out_features": 3}]}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "tiny.json"
    path.write_text(json.dumps(SPEC))
    return path


def train_args(spec, npz, out, *more):
    return ["train", "--model", spec, "--dataset", npz, "--out", out, "--batch-size", 50,
            "--quiet", *more]


# -- 6. unknown names are usage errors (2); missing files runtime failures (1) -----------------
@pytest.mark.parametrize("argv", [["train", "--model", "nope"], ["train", "--dataset", "nope"],
                                  ["summary", "resnet-1000"], ["explain", "nope"],
                                  ["check", "nope"], ["data", "nope"]])
def test_an_unknown_name_is_a_usage_error(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv)
    assert code == 2, err
    line = one_line(err)
    assert line.startswith(f"numcnn {argv[0]}: error: ") and argv[-1] in line
    assert line.endswith(f"(see 'numcnn {argv[0]} --help')")
    assert list(tmp_path.iterdir()) == []  # and train made no run folder


@pytest.mark.parametrize("argv", [["train", "--model", "missing.json"],
                                  ["train", "--dataset", "missing.npz"],
                                  ["summary", "missing.numcnn"], ["data", "data/missing"]])
def test_a_missing_file_is_a_runtime_failure(argv, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(argv)
    assert code == 1 and one_line(err).startswith("numcnn: error: ") and "missing" in err
    assert list(tmp_path.iterdir()) == []
