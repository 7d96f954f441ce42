"""numcnn.gradcheck and `numcnn check`: numerical gradients catch a broken backward, by layer."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from test_cli import run

import numcnn
from numcnn import models, nn
from numcnn.errors import NumcnnError
from numcnn.gradcheck import compare_with_torch, gradcheck

LAYERS = Path(__file__).resolve().parent.parent / "examples" / "my_layers.py"


def test_numcnn_gradcheck_is_the_function():
    assert numcnn.gradcheck is gradcheck


def test_a_preset_passes_whole_and_per_layer():
    report = gradcheck(models.preset("small-cnn"), input_shape=(2, 1, 28, 28), max_entries=16)
    assert report.passed, report.format()
    layers = {entry["layer"] for entry in report.per_layer()}
    assert layers == {"(model)", *(str(i) for i in range(len(models.preset("small-cnn"))))}
    assert max(r["rel_error"] for r in report.results) < 1e-6


def test_residual_dropout_and_smooth_layers_pass():
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.Dropout(0.3), nn.Tanh(),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.LeakyReLU())),
        nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 3), nn.LogSoftmax(dim=1))
    report = gradcheck(model, input_shape=(3, 2, 16, 16), max_entries=16)
    assert report.passed, report.format()
    assert any(r["layer"] == "3.fn.0" for r in report.results)  # inside the residual block


def test_a_changing_dropout_mask_would_fail_and_the_fixed_mask_passes(monkeypatch):
    """Without the fixed mask the same check fails: the fix is what makes dropout checkable."""
    assert gradcheck(nn.Dropout(0.5), input_shape=(4, 8)).passed
    seeds = iter(range(1, 10**6))  # dropout drawing from a new generator at every call
    monkeypatch.setattr(sys.modules["numcnn.functional.dropout"], "get_rng",
                        lambda: np.random.default_rng(next(seeds)))
    assert not gradcheck(nn.Dropout(0.5), input_shape=(4, 8)).passed


def test_kinks_of_relu_and_max_pool_are_skipped():
    x = np.array([[1e-7, -1e-7, 0.5, -0.5, 2e-7, 3.0]])  # two within eps of ReLU's kink at 0
    report = gradcheck(nn.ReLU(), x, per_layer=False)
    assert report.passed and report.results[0]["skipped"] == 3
    pool_x = np.zeros((1, 1, 2, 2))
    pool_x[0, 0, 0, 0] = pool_x[0, 0, 0, 1] = 1.0  # a tie: the winner flips with +-eps
    pool = gradcheck(nn.MaxPool2d(2), pool_x, per_layer=False)
    assert pool.passed and pool.results[0]["skipped"] == 2


def test_the_model_is_left_untouched():
    model = models.preset("lenet5")
    before = model.state_dict()
    gradcheck(model, input_shape=(1, 1, 28, 28), max_entries=4)
    after = model.state_dict()
    assert all(after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k])
               for k in before)


def test_cli_check_names_the_broken_layer():
    code, out, err = run(["check", f"{LAYERS}:broken_model"])
    assert code == 1
    failing = [line.split()[:2] for line in out.splitlines() if line.endswith("FAIL")]
    assert ["1", "SignFlipped"] in failing
    assert not [f for f in failing if f[0] in ("0", "2")]  # the correct layers pass
    assert "FAIL: the backward pass disagrees with central differences in layer 1 (SignFlipped" \
        in out
    assert err.startswith("numcnn: error: gradient check failed in layer 1 (SignFlipped")

    code, out, _ = run(["check", f"{LAYERS}:Untransposed", "--json"])
    results = json.loads(out)["results"]
    assert code == 1
    assert {r["tensor"]: r["passed"] for r in results} == {"input": True, "weight": False,
                                                          "bias": True}
    assert run(["check", f"{LAYERS}:good_model"])[0] == 0
    assert run(["check", f"{LAYERS}:MyLinear"])[0] == 0


def test_cli_check_errors_are_one_line():
    for argv, expected, status in ((["check", f"{LAYERS}:nothing"], "has no 'nothing'", 2),
                                   (["check", f"{LAYERS}"], "name the class or function", 1),
                                   (["check", "no-such-model"], "neither a preset", 2)):
        code, _, err = run(argv)  # unknown names are usage errors (2)
        assert code == status and expected in err and len(err.strip().splitlines()) == 1, err


def test_torch_twin_agrees_and_catches_a_wrong_backward(monkeypatch):
    model = models.preset("convnet-bn")
    twin = compare_with_torch(model, input_shape=(2, 1, 28, 28))
    assert twin.passed, twin.format()
    assert {r["name"] for r in twin.results} >= {"0", "9", "input", "4.weight", "(model)"}
    code, out, _ = run(["check", "small-cnn", "--torch", "--entries", "4"])
    assert code == 0 and "PyTorch twin" in out

    real = nn.ReLU.backward
    monkeypatch.setattr(nn.ReLU, "backward", lambda self, g: -real(self, g))
    broken = compare_with_torch(model, input_shape=(2, 1, 28, 28))
    assert not broken.passed
    failing = {(r["what"], r["name"]) for r in broken.results if not r["passed"]}
    assert ("gradient of", "4.weight") in failing  # before the second ReLU: sign flipped once
    assert not [f for f in failing if f[0] == "output of"]  # the forward pass is still right
    with pytest.raises(NumcnnError, match="no PyTorch twin"):
        compare_with_torch(nn.Sequential(nn.Gaussian()), input_shape=(2, 3))


def test_cli_check_takes_model_files_and_architecture_json(tmp_path):
    spec = [{"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 3},
            {"type": "BatchNorm2d", "num_features": 2}, {"type": "ReLU"},
            {"type": "Flatten"}, {"type": "Linear", "in_features": 2 * 6 * 6, "out_features": 3}]
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(spec))
    code, out, _ = run(["check", arch, "--input-shape", "1,8,8", "--entries", "8"])
    assert code == 0 and "PASS" in out
    path = tmp_path / "model.numcnn"
    numcnn.save(models.build(spec), path, metadata={"input_shape": [1, 8, 8]})
    code, out, _ = run(["check", path, "--entries", "8", "--json"])
    assert code == 0 and json.loads(out)["input_shape"] == [2, 1, 8, 8]
