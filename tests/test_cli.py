"""The numcnn command line end to end, on a small slice of real MNIST written to an .npz."""

import contextlib
import io as stdio
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import numcnn
from numcnn import cli, data, experiment, io, train

RUN_FILES = ("model.numcnn", "checkpoint.ckpt", "history.json", "metrics.json", "curves.png",
             "confusion_matrix.png", "misclassified.png", "config.json", "train.log")


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
def npz(tmp_path_factory, mnist_small):
    x_train, y_train, x_test, y_test = mnist_small
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x_train=x_train[:600], y_train=y_train[:600], x_test=x_test[:200],
             y_test=y_test[:200])
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, npz):
    """One quick training run: (run folder, exit code, stdout)."""
    out = tmp_path_factory.mktemp("runs") / "quick"
    code, stdout, _ = run(["train", "--dataset", npz, "--limit", 512, "--epochs", 1,
                           "--out", out, "--quiet"])
    return out, code, stdout


# -- train ---------------------------------------------------------------------------------------
def test_train_writes_the_run_folder_and_reports_test_accuracy(trained):
    out, code, stdout = trained
    assert code == 0
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    lines = stdout.strip().splitlines()
    assert len(lines) == 2  # --quiet: the result and the folder only
    metrics = json.loads((out / "metrics.json").read_text())
    test = metrics["test"]
    correct = int(round(test["accuracy"] * test["n"]))
    assert test["n"] == 200
    assert lines[0].startswith(f"test accuracy {100 * test['accuracy']:.2f}% ({correct}/200)")
    assert lines[1] == f"run folder: {out}"
    assert metrics["train_images"] + metrics["val_images"] == 512
    assert metrics["val_images"] == 51
    assert json.loads((out / "history.json").read_text())["epoch"] == [1]
    config = json.loads((out / "config.json").read_text())
    assert config["limit"] == 512 and config["epochs"] == 1 and config["model"] == "convnet-bn"
    log = (out / "train.log").read_text()
    assert log.startswith("$ numcnn") and "epoch 1/1" in log and "test accuracy" in log

    model = io.load(out / "model.numcnn")
    assert model.metadata["classes"] == [str(k) for k in range(10)]
    assert model.metadata["input_shape"] == [1, 28, 28]
    assert model.metadata["dataset"] == "digits"
    data.Preprocessing.from_dict(model.metadata["preprocessing"])  # it round-trips
    assert test["accuracy"] > 0.5  # one epoch on 461 images is far above chance (0.1)


def test_train_with_no_arguments_uses_convnet_bn_and_its_defaults(tmp_path, monkeypatch, npz):
    """`numcnn train`: MNIST (here: the small .npz in its place), convnet-bn, 3 epochs."""
    asked = []

    def fake_load(spec, data_dir, progress):
        asked.append(spec)
        full = data.load_dataset(npz)
        return data.Dataset(full.x_train[:100], full.y_train[:100], full.x_test[:50],
                            full.y_test[:50], classes=full.classes, name="mnist")

    monkeypatch.setattr(experiment, "_load_dataset", fake_load)
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(["train"])
    assert code == 0 and asked == ["mnist"]
    run_dirs = list((tmp_path / "runs").iterdir())
    assert len(run_dirs) == 1 and run_dirs[0].name.startswith("convnet-bn-")
    assert stdout.strip().splitlines()[-1] == f"run folder: {Path('runs') / run_dirs[0].name}"
    config = json.loads((run_dirs[0] / "config.json").read_text())
    assert (config["model"], config["epochs"], config["batch_size"], config["lr"],
            config["optimizer"], config["scheduler"], config["seed"]) == \
        ("convnet-bn", 3, 64, 1e-3, "adam", "cosine", 0)
    lrs = json.loads((run_dirs[0] / "history.json").read_text())["lr"]
    np.testing.assert_allclose(lrs, [1e-3, 0.75e-3, 0.25e-3], rtol=1e-12)  # cosine, T_max 3
    assert [line.split()[:2] for line in stdout.splitlines() if line.startswith("epoch ")] == \
        [["epoch", "1/3"], ["epoch", "2/3"], ["epoch", "3/3"]]
    assert "confusion matrix" in stdout and "precision" in stdout


def test_default_epochs_depend_on_the_model(tmp_path):
    parser = cli.build_parser()
    for model, epochs in (("convnet-bn", 3), ("small-cnn", 5), ("lenet5", 5)):
        args = parser.parse_args(["train", "--model", model, "--out", str(tmp_path / model)])
        config, _, _ = cli._train_setup(args)
        assert config["epochs"] == epochs


TINY_MODEL = [  # batch norm and dropout, so that resuming must restore their state
    {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 5, "stride": 2},
    {"type": "BatchNorm2d", "num_features": 4}, {"type": "ReLU"}, {"type": "Flatten"},
    {"type": "Dropout", "p": 0.2},
    {"type": "Linear", "in_features": 4 * 12 * 12, "out_features": 10},
]


def test_ctrl_c_exits_130_and_resume_ends_as_the_uninterrupted_run(tmp_path, npz, monkeypatch):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps(TINY_MODEL))
    common = ["--dataset", npz, "--model", spec, "--limit", 256, "--epochs", 2, "--augment",
              "--scheduler", "cosine", "--quiet"]
    assert run(["train", *common, "--out", tmp_path / "a"])[0] == 0

    real_epoch = train._train_one_epoch

    def ctrl_c_in_epoch_2(model, loader, criterion, optimizer, callbacks, epoch, *rest):
        if epoch == 2:
            raise KeyboardInterrupt
        return real_epoch(model, loader, criterion, optimizer, callbacks, epoch, *rest)

    monkeypatch.setattr(train, "_train_one_epoch", ctrl_c_in_epoch_2)
    code, stdout, _ = run(["train", *common, "--out", tmp_path / "b"])
    assert code == 130
    checkpoint = tmp_path / "b" / "checkpoint.ckpt"
    assert f"checkpoint of epoch 1 saved to {checkpoint}" in stdout
    assert f"numcnn train --resume {checkpoint}" in stdout
    monkeypatch.setattr(train, "_train_one_epoch", real_epoch)

    code, stdout, err = run(["train", "--resume", checkpoint, "--lr", "0.1"])
    assert code == 2 and "--lr cannot be changed" in one_line(err)
    code, stdout, _ = run(["train", "--resume", tmp_path / "b", "--quiet"])
    assert code == 0
    for name in ("checkpoint.ckpt", "model.numcnn"):
        expected = io.load(tmp_path / "a" / name).state_dict()
        got = io.load(tmp_path / "b" / name).state_dict()
        for key in expected:
            np.testing.assert_array_equal(got[key], expected[key], err_msg=f"{name} {key}")
    metrics = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("a", "b")]
    assert metrics[0]["test"] == metrics[1]["test"]


def test_train_refuses_a_folder_that_holds_a_run(trained, npz):
    out, _, _ = trained
    code, _, err = run(["train", "--dataset", npz, "--out", out])
    assert code == 2 and "already holds a run" in one_line(err)


def test_train_reports_a_model_that_does_not_fit_the_data(tmp_path, npz):
    spec = tmp_path / "wrong.json"
    spec.write_text(json.dumps([{"type": "Flatten"},
                                {"type": "Linear", "in_features": 784, "out_features": 3}]))
    code, _, err = run(["train", "--dataset", npz, "--model", spec, "--out", tmp_path / "r",
                        "--quiet"])
    assert code == 1
    assert one_line(err).startswith("numcnn: error: the model")
    assert "3" in err and "10 classes" in err


# -- evaluate ------------------------------------------------------------------------------------
def test_evaluate_prints_the_same_accuracy_as_training_and_draws_pngs(trained, npz, tmp_path):
    out, _, _ = trained
    test = json.loads((out / "metrics.json").read_text())["test"]
    code, stdout, _ = run(["evaluate", out / "model.numcnn", "--dataset", npz,
                           "--out", tmp_path / "eval"])
    assert code == 0
    correct = int(round(test["accuracy"] * 200))
    assert f"accuracy {100 * test['accuracy']:.2f}% ({correct}/200)" in stdout
    assert "precision" in stdout and "recall" in stdout and "true \\ pred" in stdout
    for name in ("metrics.json", "confusion_matrix.png", "misclassified.png"):
        assert (tmp_path / "eval" / name).is_file()
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())["test"]
    assert written["confusion_matrix"] == test["confusion_matrix"]

    code, stdout, _ = run(["evaluate", out / "model.numcnn", "--dataset", npz, "--quiet",
                           "--limit", 50])
    assert code == 0 and one_line(stdout).startswith("accuracy ")


def test_evaluate_errors_are_one_line_with_exit_code_1(tmp_path):
    code, _, err = run(["evaluate", tmp_path / "missing.numcnn"])
    assert code == 1 and one_line(err).startswith("numcnn: error: ")
    assert "missing.numcnn" in err
    png = tmp_path / "image.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(png)
    code, _, err = run(["evaluate", png])
    assert code == 1 and "PNG image" in one_line(err)


# -- predict -------------------------------------------------------------------------------------
def test_predict_classifies_image_files(trained, mnist_small, tmp_path):
    from PIL import Image

    out, _, _ = trained
    _, _, x_test, _ = mnist_small
    paths = []
    for k in range(3):
        path = tmp_path / f"digit{k}.png"
        image = x_test[k] if k != 1 else 255 - x_test[k]  # one dark digit on a light background
        Image.fromarray(image).resize((56, 56)).save(path)
        paths.append(path)

    code, stdout, _ = run(["predict", out / "model.numcnn", *paths, "--json"])
    assert code == 0
    rows = json.loads(stdout)
    model = io.load(out / "model.numcnn")
    preprocessing = data.Preprocessing.from_dict(model.metadata["preprocessing"])
    expected = train.predict(model, np.concatenate([data.prepare_image(p, preprocessing)
                                                    for p in paths]))
    assert [row["image"] for row in rows] == [str(p) for p in paths]
    for row, probabilities in zip(rows, expected):
        assert row["class"] == str(int(probabilities.argmax()))
        values = [row["probabilities"][str(k)] for k in range(10)]
        np.testing.assert_allclose(values, probabilities, rtol=1e-6)
        assert sum(values) == pytest.approx(1.0, abs=1e-5)

    code, stdout, _ = run(["predict", out / "model.numcnn", *paths, "--top", 2])
    lines = stdout.strip().splitlines()
    assert code == 0 and len(lines) == 3
    for line, row in zip(lines, rows):
        assert line.startswith(str(row["image"]))
        assert f" {row['class']} ({100 * row['probability']:.1f}%)" in line
        assert line.count("%") == 3  # the class, then the top 2


def test_predict_errors(trained, tmp_path):
    out, _, _ = trained
    code, _, err = run(["predict", out / "model.numcnn", tmp_path / "nope.png"])
    assert code == 1 and one_line(err).startswith("numcnn: error: ") and "nope.png" in err
    code, _, err = run(["predict", out / "model.numcnn"])
    assert code == 2 and "IMAGE" in one_line(err)


# -- summary, data -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset, total", [("convnet-bn", "29,034"), ("small-cnn", "17,066"),
                                           ("lenet5", "61,706")])
def test_summary_of_presets(preset, total):
    code, stdout, _ = run(["summary", preset])
    assert code == 0 and f"Total params: {total}" in stdout and "Output Shape" in stdout


def test_summary_of_a_json_file_and_of_a_model_file(tmp_path, trained):
    spec = tmp_path / "tiny.json"
    spec.write_text(json.dumps([{"type": "Conv2d", "in_channels": 1, "out_channels": 2,
                                 "kernel_size": 3}, {"type": "Flatten"},
                                {"type": "Linear", "in_features": 2 * 26 * 26,
                                 "out_features": 10}]))
    code, stdout, _ = run(["summary", spec])
    # conv: 2*1*3*3 + 2 = 20; linear: 1352*10 + 10 = 13,530
    assert code == 0 and "Total params: 13,550" in stdout and "(-1, 2, 26, 26)" in stdout
    code, stdout, _ = run(["summary", spec, "--input-shape", "1,10,10"])
    assert code == 1  # 2*8*8 = 128 features reach a Linear that expects 1352
    code, stdout, _ = run(["summary", trained[0] / "model.numcnn"])
    assert code == 0 and "Total params: 29,034" in stdout
    code, _, err = run(["summary", "resnet-1000"])  # an unknown name: a usage error
    assert code == 2 and "neither a preset" in one_line(err)


def test_data_mnist_reads_a_prepared_cache(tmp_path, mnist_path):
    shutil.copy(mnist_path, tmp_path / "mnist.npz")
    code, stdout, _ = run(["data", "mnist", "--data-dir", tmp_path, "--quiet"])
    assert code == 0
    assert one_line(stdout) == (f"mnist: 60,000 training and 10,000 test images of 1x28x28 "
                                f"(uint8), 10 classes; cached in {tmp_path}")


def test_data_describes_an_npz_and_reports_a_missing_one(npz, tmp_path):
    code, stdout, _ = run(["data", npz])
    assert code == 0 and one_line(stdout).startswith("digits: 600 training and 200 test images")
    code, _, err = run(["data", tmp_path / "none.npz"])
    assert code == 1 and one_line(err).startswith("numcnn: error: ")


# -- help, usage errors, start-up time -----------------------------------------------------------
@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["summary"],
                                     ["data"]])
def test_help_of_every_command(command):
    code, stdout, _ = run([*command, "--help"])
    assert code == 0 and stdout.startswith(f"usage: numcnn {' '.join(command)}".rstrip())


@pytest.mark.parametrize("argv, words", [
    (["train", "--epochs", "0"], ["--epochs", "positive integer"]),
    (["train", "--lr", "fast"], ["--lr", "'fast'"]),
    (["train", "--val-fraction", "1.5"], ["--val-fraction"]),
    (["train", "--optimizer", "lbfgs"], ["--optimizer", "lbfgs"]),
    (["train", "--bogus"], ["--bogus"]),
    (["frobnicate"], ["frobnicate"]),
    (["summary", "convnet-bn", "--input-shape", "28,28"], ["C,H,W"]),
])
def test_usage_errors_exit_2_with_one_line(argv, words):
    code, stdout, err = run(argv)
    assert code == 2 and stdout == ""
    line = one_line(err)
    assert line.startswith("numcnn") and "error:" in line
    for word in words:
        assert word in line


def test_no_command_prints_help_and_exits_2():
    code, _, err = run([])
    assert code == 2 and "usage: numcnn" in err


def _cpu_seconds(command, env, runs=3):
    """The least CPU time (user + system) of ``runs`` runs of ``command``.

    CPU time rather than wall time: on a busy machine (the tests run two at a time, beside other
    work) the wall time of a start-up grows with the load, the CPU time it costs does not.
    """
    import resource

    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert done.returncode == 0, done.stderr
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(times)


def test_help_imports_nothing_heavy_and_starts_fast():
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    probe = ("import sys, contextlib, io; from numcnn.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()): code = main(['--help'])\n"
             "heavy = ('matplotlib', 'tqdm', 'PIL', 'safetensors', 'scipy', 'torch')\n"
             "print(code, [m for m in heavy if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert done.stdout.split() == ["0", "[]"], done.stdout + done.stderr

    script = Path(sys.executable).parent / "numcnn"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "numcnn"]
    assert _cpu_seconds([*command, "--help"], env) < 0.5  # about 0.2 s on an idle machine


def test_console_script_exits_2_with_one_line_on_bad_arguments():
    script = Path(sys.executable).parent / "numcnn"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "numcnn"]
    done = subprocess.run([*command, "train", "--batch-size", "-3"], capture_output=True,
                          text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert one_line(done.stderr).startswith("numcnn train: error: argument --batch-size")


def test_python_dash_m_numcnn_is_the_same_command():
    done = subprocess.run([sys.executable, "-m", "numcnn", "summary", "small-cnn"],
                          capture_output=True, text=True)
    assert done.returncode == 0 and "Total params: 17,066" in done.stdout
    assert numcnn.__version__  # the package imported in the test process too


@pytest.mark.parametrize("option, value, expected", [
    ("--epochs", "0", "--epochs: expected a positive integer, got 0"),
    ("--epochs", "two", "--epochs: expected a positive integer, got 'two'"),
    ("--lr", "-0.5", "--lr: expected a positive number, got -0.5"),
    ("--val-fraction", "1", "--val-fraction: expected a number in [0, 1), got 1"),
    ("--seed", "-1", "--seed: expected an integer >= 0, got -1"),
    ("--momentum", "-0.5", "--momentum: expected a number >= 0, got -0.5"),
    ("--lr", "nan", "--lr: expected a positive number, got nan"),
    ("--lr", "inf", "--lr: expected a positive number, got inf"),
])
def test_numeric_options_are_checked_with_one_line_errors(option, value, expected):
    code, _, err = run(["train", option, value])
    assert code == 2 and expected in one_line(err)


def test_train_records_the_statistics_of_the_training_images_it_used(trained, npz):
    """The z-score statistics in model.numcnn are those of the training images the run used:
    after --limit and after the validation images were held out (never the test split, never
    the validation images). Recomputed here in plain float64 NumPy."""
    out, code, _ = trained
    assert code == 0
    recorded = io.read_header(out / "model.numcnn")["metadata"]["preprocessing"]
    with np.load(npz) as arrays:
        x = arrays["x_train"][:512]                        # --limit 512
    x_train = data.train_val_split(x, np.zeros(len(x)), 0.1, seed=0)[0]  # the default split
    pixels = x_train.astype(np.float64) / 255.0
    np.testing.assert_allclose(recorded["mean"], [pixels.mean()], rtol=1e-9)
    np.testing.assert_allclose(recorded["std"], [pixels.std()], rtol=1e-6)
    with np.load(npz) as arrays:                           # and not the test split's
        assert abs(arrays["x_test"].mean() / 255.0 - recorded["mean"][0]) > 1e-6


def test_evaluate_and_predict_without_the_plan_agree_with_it(trained, npz, mnist_small,
                                                             tmp_path):
    from PIL import Image

    out, _, _ = trained
    lines = []
    for extra in ([], ["--no-plan"]):
        code, stdout, _ = run(["evaluate", out / "model.numcnn", "--dataset", npz, "--quiet",
                               *extra])
        assert code == 0
        lines.append(one_line(stdout))
    assert lines[0] == lines[1] and lines[0].startswith("accuracy ")
    path = tmp_path / "digit.png"
    Image.fromarray(mnist_small[2][0]).save(path)
    answers = []
    for extra in ([], ["--no-plan"]):
        code, stdout, _ = run(["predict", out / "model.numcnn", path, "--json", *extra])
        assert code == 0
        answers.append(json.loads(stdout)[0])
    assert answers[0]["class"] == answers[1]["class"]
    for key, value in answers[0]["probabilities"].items():
        assert value == pytest.approx(answers[1]["probabilities"][key], abs=1e-5)


def test_predict_names_the_image_it_cannot_read(trained, tmp_path):
    out, code, _ = trained
    assert code == 0
    blank = tmp_path / "white.png"
    Image.new("L", (64, 64), 255).save(blank)
    code, stdout, stderr = run(["predict", out / "model.numcnn", blank])
    assert code == 1 and stdout == ""
    assert str(blank) in one_line(stderr) and "no digit found" in stderr


def test_an_empty_out_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, stderr = run(["train", "--out", "", "--epochs", "1"])
    assert code == 2 and "--out: expected a folder, got an empty value" in one_line(stderr)
    assert list(tmp_path.iterdir()) == []


def test_a_closed_pipe_ends_the_command_quietly():
    """`numcnn explain lenet5 | head -1`: the reader leaving is not an error."""
    done = subprocess.run(f"{shlex.quote(sys.executable)} -m numcnn explain lenet5 | head -1",
                          shell=True, capture_output=True, text=True, timeout=120,
                          executable="/bin/bash")
    assert done.stdout.count("\n") == 1 and "error" not in done.stderr
