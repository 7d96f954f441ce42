"""The speed benchmark's harness (bench/bench.py): it runs, and it compares like with like.

Nothing here is timed: a few steps check that every part runs, that the PyTorch twin is the same
model with the same weights (same outputs, same first training loss), and the FLOP counts.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import numcnn

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench" / "bench.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("numcnn_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.parametrize("name", ["convnet-bn", "small-cnn"])
def test_torch_twin_is_the_same_model_with_the_same_weights(name):
    numcnn.manual_seed(0)
    model, spec = bench.numcnn_model(name)
    twin = bench.torch_model(spec)
    bench.load_into_torch(twin, model.state_dict())
    assert [type(m).__name__ for m in twin] == [type(m).__name__ for m in model.children()]

    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    model.eval()
    twin.eval()
    with numcnn.no_grad(), torch.inference_mode():
        np.testing.assert_allclose(model(x), twin(torch.from_numpy(x)).numpy(),
                                   rtol=1e-4, atol=1e-5)


def test_resnet_twin_trains_alike_and_its_leaves_are_named_as_in_the_state_dict():
    numcnn.manual_seed(0)
    model, spec = bench.numcnn_model("resnet-cifar")
    twin = bench.torch_model(spec)
    bench.load_into_torch(twin, model.state_dict())
    leaves = bench.leaf_specs(spec)
    names = [name for name, _ in leaves]
    assert names[:4] == ["0", "1", "2", "3.fn.0"] and "5.shortcut.0" in names
    assert sum(layer["type"] == "Conv2d" for _, layer in leaves) == 9
    for ours, theirs in zip(bench._leaf_modules(model, names), bench._leaf_modules(twin, names)):
        assert type(ours).__name__ == type(theirs).__name__ or \
            type(ours).__name__ == "GlobalAvgPool2d"

    x = bench.as_input(np.random.default_rng(0).standard_normal((4, 1, 28, 28))
                       .astype(np.float32), "resnet-cifar")
    assert x.shape == (4, 3, 32, 32)
    y = np.random.default_rng(1).integers(0, 10, 4)
    criterion = numcnn.nn.CrossEntropyLoss()
    loss = criterion(model(x), y)
    model.zero_grad()
    model.backward(criterion.backward())
    loss_t = torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)), torch.from_numpy(y))
    loss_t.backward()
    np.testing.assert_allclose(float(loss), loss_t.item(), rtol=1e-4)
    grads = dict(twin.named_parameters())
    for name, param in model.named_parameters():
        np.testing.assert_allclose(param.grad, grads[name].grad.numpy(), rtol=2e-3, atol=2e-4,
                                   err_msg=name)


def test_flops_count_two_per_multiply_add():
    # small-cnn's first convolution: 64 images, 4 x 28 x 28 outputs, each 1 x 3 x 3 multiply-adds.
    conv = {"in_channels": 1, "out_channels": 4, "kernel_size": [3, 3], "padding": [1, 1]}
    assert bench.layer_flops("Conv2d", conv, (64, 1, 28, 28), (64, 4, 28, 28)) == \
        2 * 64 * 4 * 28 * 28 * 9
    grouped = {"kernel_size": 3, "groups": 2}
    assert bench.layer_flops("Conv2d", grouped, (2, 8, 5, 5), (2, 6, 3, 3)) == 2 * 2 * 6 * 9 * 4 * 9
    assert bench.layer_flops("Linear", {}, (64, 200), (64, 64)) == 2 * 64 * 200 * 64
    assert bench.layer_flops("ReLU", {}, (64, 10), (64, 10)) == 0
    assert bench.backward_flops(0, 100) == 100  # the images need no gradient
    assert bench.backward_flops(3, 100) == 200


def test_normalise_gives_float32_nchw_standardised():
    images = np.array([np.zeros((28, 28)), np.full((28, 28), 255)], dtype=np.uint8)
    x = bench.normalise(images)
    assert x.shape == (2, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], -0.1307 / 0.3081, rtol=1e-6)
    np.testing.assert_allclose(x[1], (1 - 0.1307) / 0.3081, rtol=1e-6)


def test_workers_drop_thread_limits(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "1")
    env = bench.worker_env()
    assert "OMP_NUM_THREADS" not in env and "OPENBLAS_NUM_THREADS" not in env


def test_harness_runs_every_part_on_real_mnist(mnist_path, tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--steps", "3", "--warmup", "1", "--repeats", "1",
         "--presets", "small-cnn", "--infer1-steps", "3", "--infer1000-steps", "1",
         "--profile-steps", "2", "--parts", "train,infer,profile", "--data", str(mnist_path),
         "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())

    results = report["results"]["small-cnn"]
    for key in ("train", "infer_b1", "infer_b1000"):
        for lib in ("numcnn", "torch"):
            (run,) = results[key][lib]
            assert run["images_per_s"] > 0
            assert run["peak_rss_mib"] >= run["rss_after_imports_mib"] > 0
    # Same weights, same batches: the same losses (the first one to float32 rounding).
    losses = {lib: results["train"][lib][0]["losses"] for lib in ("numcnn", "torch")}
    assert len(losses["numcnn"]) == 4
    np.testing.assert_allclose(losses["numcnn"], losses["torch"], rtol=1e-3)
    np.testing.assert_allclose(losses["numcnn"][0], losses["torch"][0], rtol=1e-5)
    # Same model in eval mode: the same logits on the batch of 1,000.
    checksums = [results["infer_b1000"][lib][0]["checksum"] for lib in ("numcnn", "torch")]
    np.testing.assert_allclose(checksums[0], checksums[1], rtol=1e-3, atol=1e-2)

    profile = report["profile"]["small-cnn"]
    for lib in ("numcnn", "torch"):
        layers = profile[lib]["layers"]
        assert [row["type"] for row in layers][:3] == ["Conv2d", "ReLU", "Conv2d"]
        assert len(layers) == 14
        assert layers[0]["forward_flops"] == 2 * 64 * 4 * 28 * 28 * 9
        assert profile[lib]["matmul_gflops"] > 0
    whats = [row["what"] for row in report["summary"]]
    assert "train b64 small-cnn (img/s)" in whats and "train peak memory small-cnn (MiB)" in whats
    assert "infer b1000 small-cnn (img/s)" in done.stdout
    assert "Per-layer time, small-cnn" in done.stdout


def test_help_timing_runs_the_console_script():
    result = bench.time_help(runs=1)
    assert "error" not in result, result.get("error")
    assert result["seconds"] > 0 and result["bare_python_seconds"] > 0
    assert result["command"].endswith("--help")


def test_health_part_measures_the_monitor(tmp_path, mnist_path):
    """--parts health runs (a few steps; nothing here is a timing claim)."""
    out = tmp_path / "report.json"
    done = subprocess.run([sys.executable, str(BENCH), "--parts", "health", "--steps", "20",
                           "--warmup", "1", "--repeats", "1", "--presets", "small-cnn",
                           "--data", str(mnist_path), "--json", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    run = report["health"]["small-cnn"][0]
    assert run["seconds_per_step"] > 0 and run["monitor_seconds_per_step"] > 0
    assert len(run["block_times"]["plain"]) == len(run["block_times"]["health"]) == 1
    assert any(row["what"].startswith("health monitor overhead") for row in report["summary"])


def test_onnxruntime_is_an_inference_peer_on_the_same_model(mnist_path, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--repeats", "1", "--presets", "convnet-bn",
         "--infer1-steps", "3", "--infer1000-steps", "1", "--parts", "infer", "--onnxruntime",
         "--data", str(mnist_path), "--json", str(out)],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    results = report["results"]["convnet-bn"]
    for key in ("infer_b1", "infer_b1000"):
        assert {"numcnn", "torch", "onnxruntime"} <= set(results[key])
    assert results["infer_b1000"]["numcnn"][0]["path"] == "plan"
    # the three serve one model: the same logits on the batch of 1,000
    checksums = [results["infer_b1000"][lib][0]["checksum"]
                 for lib in ("numcnn", "torch", "onnxruntime")]
    np.testing.assert_allclose(checksums[0], checksums[2], rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(checksums[1], checksums[2], rtol=1e-3, atol=1e-2)
    whats = [row["what"] for row in report["summary"]]
    assert "infer b1 convnet-bn vs ORT (img/s)" in whats
    assert "infer b1000 peak memory convnet-bn vs ORT (MiB)" in whats
