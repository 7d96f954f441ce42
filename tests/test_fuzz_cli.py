"""Fuzz suite, part 3: the command line answers every bad input with one line on stderr and a
documented non-zero exit code (docs/cli.md), and no file under 1 MB makes a command take more
than a few hundred MB or hang (peak RSS of the child process, from os.wait4)."""

import os
import sys
import time

import numpy as np
import pytest

from numcnn import cli
from tests import fuzzing as fz
from tests.fuzzing import measure, record

DOCUMENTED = {cli.EXIT_FAILURE, cli.EXIT_USAGE}
RSS_LIMIT_MB = 300


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")

    def put(name, content):
        (root / name).write_bytes(content)
        return str(root / name)

    paths = {
        "model": put("ok.numcnn", fz.model_bytes()),
        "linear-12000": put("big.numcnn", fz.model_bytes(
            {"type": "Linear", "in_features": 12000, "out_features": 12000}, tensors={})),
        "bn-10000": put("bn.numcnn", fz.model_bytes({"type": "Sequential", "layers": [
            {"type": "BatchNorm2d", "num_features": 100000}] * 10000}, tensors={})),
        "forward-name": put("fwd.numcnn", fz.model_bytes(
            {"type": "Sequential", "names": ["forward"], "layers": [{"type": "ReLU"}]},
            tensors={})),
        "input-20000": put("huge-input.numcnn", fz.model_bytes(
            metadata={"preprocessing": dict(fz.PREP, input_shape=[1, 20000, 20000])})),
        "nan-weights": put("nan.numcnn", fz.model_bytes(tensors={
            k: np.full(v.shape, np.nan, v.dtype) for k, v in fz.small_tensors().items()})),
        "no-preprocessing": put("noprep.numcnn", fz.model_bytes(
            metadata={"preprocessing": None})),
        "spec-12000": put("big.json", fz.json_bytes(
            {"type": "Linear", "in_features": 12000, "out_features": 12000})),
        "spec-forward": put("fwd.json", fz.json_bytes(
            {"type": "Sequential", "names": ["forward"], "layers": [{"type": "ReLU"}]})),
        "spec-bad": put("bad.json", b'{"type": "Linear", "in_features": -1, "out_features": 2}'),
        "png": put("seven.png", fz.png_bytes(np.full((28, 28), 200, np.uint8))),
        "png-bomb": put("bomb.png", fz.png_claiming(65535, 65535)),
        "random": put("random.bin", np.random.default_rng(0).bytes(400)),
        "empty": put("empty.bin", b""),
        "npz-label-10": put("label10.npz", fz.npz_bytes(fz.dataset_arrays(label_max=10))),
        "npz-nan": put("nan.npz", fz.npz_bytes({**fz.dataset_arrays(), "x_test": np.full(
            (20, 28, 28), np.nan, np.float32)})),
        "npz-zip-bomb": put("zipbomb.npz", fz.npz_zip_bomb()),
        "npz-claims": put("claims.npz", fz.npz_claiming_shape()),
    }
    sparse = root / "sparse.numcnn"
    with open(sparse, "wb") as file:
        file.truncate(3 << 30)
    paths["sparse-3GB"] = str(sparse)
    os.mkfifo(root / "fifo")
    paths["fifo"] = str(root / "fifo")
    paths["dir"] = str(root)
    idx = root / "idx-bomb"
    idx.mkdir()
    (idx / "train-images-idx3-ubyte.gz").write_bytes(fz.gzip_bomb_idx())
    for name in ("train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (idx / name).write_bytes(fz.idx_bytes(np.zeros((2, 28, 28) if "images" in name else 2)))
    paths["idx-bomb"] = str(idx)
    images = root / "image-folder"
    for label in ("a", "b"):
        (images / label).mkdir(parents=True)
        (images / label / "ok.png").write_bytes(fz.png_bytes(np.zeros((8, 8), np.uint8)))
    (images / "b" / "bomb.png").write_bytes(fz.png_claiming(65535, 65535))
    paths["image-folder-bomb"] = str(images)
    paths["missing"] = str(root / "does-not-exist")
    return paths


BAD_COMMANDS = [
    ["train", "--epochs", "0"], ["train", "--lr", "fast"], ["train", "--model", "{missing}"],
    ["train", "--model", "{spec-forward}", "--dataset", "{npz-label-10}", "--out", "{dir}/r1"],
    ["train", "--model", "{spec-bad}", "--dataset", "{npz-label-10}", "--out", "{dir}/r2"],
    ["train", "--dataset", "{npz-zip-bomb}", "--out", "{dir}/r3"],
    ["train", "--dataset", "{fifo}", "--out", "{dir}/r4"],
    ["train", "--out", "{png}"], ["train", "--resume", "{missing}"],
    ["evaluate", "{model}", "--dataset", "{npz-label-10}", "-q"],
    ["evaluate", "{model}", "--dataset", "{npz-nan}", "-q"],
    ["evaluate", "{no-preprocessing}", "--dataset", "{npz-label-10}"],
    ["evaluate", "{model}", "--dataset", "{npz-claims}"],
    ["evaluate", "{model}", "--dataset", "{idx-bomb}"],
    ["evaluate", "{model}", "--batch-size", "-3"],
    ["predict", "{model}", "{png-bomb}"], ["predict", "{model}", "{random}"],
    ["predict", "{model}", "{fifo}"], ["predict", "{model}", "{dir}"],
    ["predict", "{model}", "{missing}"], ["predict", "{model}", "{empty}"],
    ["predict", "{linear-12000}", "{png}"], ["predict", "{bn-10000}", "{png}"],
    ["predict", "{forward-name}", "{png}"], ["predict", "{input-20000}", "{png}"],
    ["predict", "{sparse-3GB}", "{png}"], ["predict", "{fifo}", "{png}"],
    ["predict", "{png}", "{png}"], ["predict", "{empty}", "{png}"],
    ["predict", "{model}", "{png}", "--top", "-1"], ["predict", "{nan-weights}", "{png}"],
    ["summary", "{spec-forward}"], ["summary", "{spec-bad}"], ["summary", "{fifo}"],
    ["summary", "{dir}"], ["summary", "{sparse-3GB}"], ["summary", "{random}"],
    ["summary", "{missing}"], ["summary", "convnet-bn", "--input-shape", "1,2"],
    ["data", "{npz-zip-bomb}"], ["data", "{npz-claims}"], ["data", "{idx-bomb}"],
    ["data", "{fifo}"], ["data", "{random}"], ["data", "{missing}"],
    ["data", "{image-folder-bomb}"],
    ["frobnicate"], ["predict"], [],
]


@pytest.mark.parametrize("command", BAD_COMMANDS, ids=" ".join)
def test_bad_input_gives_one_line_and_a_documented_code(files, command, capsys):
    argv = [part.format(**files) for part in command]
    start = time.perf_counter()
    code = cli.main(argv)
    seconds = time.perf_counter() - start
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    outcome = f"exit {code}, {len(lines)} line(s)"
    record(f"CLI: {argv[0] if argv else '(none)'}", outcome)
    assert code in DOCUMENTED, (argv, code, err)
    if argv:  # (no command at all prints the help, as `numcnn` alone should)
        assert len(lines) == 1, err
    assert "Traceback" not in err
    assert seconds < 30


def test_summary_of_a_huge_spec_succeeds(files, capsys):
    assert cli.main(["summary", files["spec-12000"], "--input-shape", "1,1,12000"]) == 0
    assert "144,012,000" in capsys.readouterr().out


# A small launcher runs the command and reports the command's own peak RSS (getrusage of its
# child, through os.wait4). Started from this test process directly, the command's peak would
# include this process's pages (Linux carries the parent's high-water mark across vfork+exec),
# and this process holds PyTorch.
LAUNCHER = r"""
import json, os, sys, time
args, timeout = json.loads(sys.argv[1]), float(sys.argv[2])
start = time.perf_counter()
pid = os.posix_spawn(sys.executable, [sys.executable, "-m", "numcnn", *args], dict(os.environ),
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
while True:
    done, status, usage = os.wait4(pid, os.WNOHANG)
    if done:
        break
    if time.perf_counter() - start > timeout:
        os.kill(pid, 9)
        _, status, usage = os.wait4(pid, 0)
        break
    time.sleep(0.02)
print(json.dumps({"code": os.waitstatus_to_exitcode(status), "rss_kb": usage.ru_maxrss,
                  "seconds": time.perf_counter() - start}))
"""


def _run_child(args, timeout=60):
    """Run the command line in a child; its exit code, stderr, peak RSS (MB) and seconds."""
    import json
    import subprocess
    import tempfile

    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a long message cannot block
        launched = subprocess.run([sys.executable, "-c", LAUNCHER, json.dumps(args),
                                   str(timeout)], stdout=subprocess.PIPE, stderr=errors,
                                  env={**os.environ, "MPLBACKEND": "Agg"}, timeout=timeout + 30)
        errors.seek(0)
        err = errors.read().decode()
    result = json.loads(launched.stdout)
    return result["code"], err, result["rss_kb"] / 1024, result["seconds"]


MEMORY_CASES = [
    (["summary", "{spec-12000}", "--input-shape", "1,1,12000"], 0),
    (["summary", "{bn-10000}"], 1),
    (["predict", "{linear-12000}", "{png}"], 1),
    (["predict", "{input-20000}", "{png}"], 1),
    (["predict", "{sparse-3GB}", "{png}"], 1),
    (["predict", "{fifo}", "{png}"], 1),
    (["predict", "{model}", "{png-bomb}"], 1),
    (["data", "{npz-zip-bomb}"], 1),
    (["data", "{npz-claims}"], 1),
    (["data", "{idx-bomb}"], 1),
    (["data", "{image-folder-bomb}"], 1),
]


@pytest.mark.parametrize("command, expected", MEMORY_CASES, ids=lambda c: " ".join(c)
                         if isinstance(c, list) else str(c))
def test_small_files_cost_little_memory_and_time(files, command, expected):
    args = [part.format(**files) for part in command]
    code, err, rss_mb, seconds = _run_child(args)
    record("CLI: small crafted file (child RSS, time)",
           f"exit {code}, peak RSS < {RSS_LIMIT_MB} MB" if rss_mb < RSS_LIMIT_MB
           else f"peak RSS {rss_mb:.0f} MB")
    measure("largest peak RSS of a CLI child on a crafted file < 1 MB (MB)", round(rss_mb))
    measure("longest CLI child on a crafted file < 1 MB (s)", round(seconds, 1))
    assert code == expected, err
    assert rss_mb < RSS_LIMIT_MB, f"peak RSS {rss_mb:.0f} MB"
    assert seconds < 30
    if expected:
        assert len(err.strip().splitlines()) == 1, err
