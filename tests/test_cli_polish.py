"""The command line's rough edges, each pinned by a test: failed runs leave no folder behind,
resuming a finished run says so, checkpoints and run folders where a model file is expected,
a data folder that is a file, the names a Python file offers, unknown names as usage errors,
and the grammar of messages."""

import json

import numpy as np
import pytest

from numcnn import cli
from tests.test_cli import one_line, run


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


# -- 1. a run that fails before its first checkpoint leaves nothing behind ---------------------
@pytest.fixture
def wrong_spec(tmp_path):
    """A model whose 2 logits do not fit the 3 classes of the tiny dataset."""
    path = tmp_path / "wrong.json"
    path.write_text(json.dumps({**SPEC, "layers": SPEC["layers"][:-1] + [
        {"type": "Linear", "in_features": 2 * 6 * 6, "out_features": 2}]}))
    return path


def test_a_run_that_fails_on_its_data_leaves_no_folder(tmp_path, monkeypatch, npz, spec,
                                                       wrong_spec):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(["train", "--model", wrong_spec, "--dataset", npz, "--quiet"])
    assert code == 1 and "3 classes" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrong.json"]  # no runs/<name>/
    out = tmp_path / "deep" / "run"
    code, _, _ = run(train_args(wrong_spec, npz, out))
    assert code == 1 and not (tmp_path / "deep").exists()
    # and nothing blocks the next run in that folder
    code, _, err = run(train_args(spec, npz, out, "--epochs", 1))
    assert code == 0, err
    assert (out / "checkpoint.ckpt").is_file()


def test_an_error_or_ctrl_c_before_the_first_checkpoint_leaves_no_folder(tmp_path, monkeypatch,
                                                                         npz, spec):
    from numcnn import experiment, train
    from numcnn.errors import NumcnnError

    def fails(*args, **kwargs):
        raise NumcnnError("the loss became NaN in epoch 1")

    with monkeypatch.context() as patch:
        patch.setattr(train, "_train_one_epoch", fails)
        code, _, err = run(train_args(spec, npz, tmp_path / "a"))
    assert code == 1 and "NaN" in one_line(err) and not (tmp_path / "a").exists()

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(experiment, "_load_dataset", ctrl_c)
        code, _, err = run(train_args(spec, npz, tmp_path / "b"))
    assert code == 130 and not (tmp_path / "b").exists()


def test_a_failed_run_keeps_the_users_files_and_an_earlier_attempts(tmp_path, npz, wrong_spec):
    from numcnn import experiment

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    code, _, _ = run(train_args(wrong_spec, npz, out))
    assert code == 1
    assert [p.name for p in out.iterdir()] == ["notes.txt"]  # its train.log and run.lock gone
    assert (out / "notes.txt").read_text() == "my notes"

    # a run killed before its first checkpoint left config.json and train.log; resuming it
    # fails again: they stay, so that it can still be resumed
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    config = {**experiment.TRAIN_DEFAULTS, "model": str(wrong_spec), "dataset": str(npz),
              "epochs": 1}
    (stopped / "config.json").write_text(json.dumps(config))
    (stopped / "train.log").write_text("$ numcnn train ...\n")
    code, _, err = run(["train", "--resume", stopped, "--quiet"])
    assert code == 1, err
    assert sorted(p.name for p in stopped.iterdir()) == ["config.json", "train.log"]


def test_a_failed_run_with_a_checkpoint_is_kept_and_its_lock_released(tmp_path, monkeypatch,
                                                                      npz, spec):
    import fcntl

    from numcnn import experiment
    from numcnn.errors import NumcnnError

    def fails(*args, **kwargs):
        raise NumcnnError("cannot write metrics.json")

    monkeypatch.setattr(experiment, "write_evaluation", fails)
    out = tmp_path / "run"
    with pytest.raises(NumcnnError, match="metrics"):  # in Python: no CLI releases it after
        experiment.run_experiment({"model": str(spec), "dataset": str(npz), "epochs": 1,
                                   "batch_size": 50}, out=out, quiet=True, print_fn=None,
                                  pictures=False, health=False)
    assert {"checkpoint.ckpt", "model.numcnn", "config.json", "train.log"} <= \
        {p.name for p in out.iterdir()}
    with open(out / "run.lock", "rb") as lock:  # another open file: refused if still held
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_lock_file_removed_by_a_failed_run_while_being_locked_is_not_trusted(tmp_path,
                                                                               monkeypatch):
    """A process that opened run.lock just before a failing run removed it (and the folder)
    would otherwise hold a lock on a deleted file: lock_run_dir takes the new one instead."""
    import fcntl
    import os

    from numcnn import train

    folder = tmp_path / "run"
    folder.mkdir()
    real_flock, calls = fcntl.flock, []

    def flock_after_removal(fd, operation):
        if not calls:  # the failing run removes its lock file and folder just now
            os.unlink(folder / train.LOCK_FILE)
            folder.rmdir()
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock_after_removal)
    train.lock_run_dir(folder)
    try:
        assert len(calls) == 2
        held = os.stat(folder / train.LOCK_FILE)
        with open(folder / train.LOCK_FILE, "rb") as lock:
            assert lock.read().decode().strip() == str(os.getpid())
            with pytest.raises(OSError):  # the file at the path is the one held
                real_flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert held.st_ino == os.stat(folder / train.LOCK_FILE).st_ino
    finally:
        train.unlock_run_dir(folder)


# -- 2. resuming a run that has its epochs already -----------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory, npz, spec):
    """A finished 2-epoch run of the tiny model."""
    out = tmp_path_factory.mktemp("runs") / "done"
    code, _, err = run(train_args(spec, npz, out, "--epochs", 2))
    assert code == 0, err
    return out


def _state(folder):
    """Every file's time and bytes, but the lock's (taken and released)."""
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.iterdir()
            if p.name != "run.lock"}


@pytest.mark.parametrize("more", [[], ["--epochs", 2], ["--epochs", 1]])
def test_resume_with_no_epochs_left_says_so_and_how_to_train_more(trained, more):
    before = _state(trained)
    code, out, err = run(["train", "--resume", trained, *more])
    assert code == 0 and err == ""
    asked = more[1] if more else 2
    assert one_line(out) == (f"nothing to train: the run already has 2 epochs (--epochs "
                             f"{asked}); to train more: numcnn train --resume "
                             f"{trained / 'checkpoint.ckpt'} --epochs 3 (or more)")
    assert _state(trained) == before  # nothing trained, nothing written


def test_resume_of_a_model_file_says_it_is_no_checkpoint(trained):
    before = _state(trained)
    code, _, err = run(["train", "--resume", trained / "model.numcnn", "--quiet"])
    assert code == 1 and "expected a checkpoint" in one_line(err)
    assert _state(trained).keys() == before.keys()


def test_resume_of_a_run_stopped_early_says_so(trained, tmp_path):
    import shutil

    from numcnn import io

    folder = tmp_path / "stopped"
    shutil.copytree(trained, folder)
    state = io.load_checkpoint(folder / "checkpoint.ckpt")
    io.save_checkpoint(folder / "checkpoint.ckpt", state["model"], extra={**state["extra"],
                                                                          "stopped": True})
    code, out, _ = run(["train", "--resume", folder, "--epochs", 5])
    assert code == 0
    line = one_line(out)
    assert line.startswith("nothing to train: the run stopped early after epoch 2")
    assert str(folder / "model.numcnn") in line and "--patience" in line


# -- 3. a training checkpoint or a run folder where a model file is expected -------------------
@pytest.fixture(scope="module")
def png(tmp_path_factory, npz):
    from PIL import Image

    path = tmp_path_factory.mktemp("images") / "sample.png"
    with np.load(npz) as arrays:
        Image.fromarray(arrays["x_test"][0]).save(path)
    return path


@pytest.mark.parametrize("command", [["predict", "{ckpt}", "{png}"],
                                     ["export", "{ckpt}", "-o", "{tmp}/m.onnx"]])
def test_a_checkpoint_is_refused_naming_the_model_file_and_the_run_folder(command, trained, png,
                                                                          tmp_path):
    checkpoint = trained / "checkpoint.ckpt"
    argv = [a.format(ckpt=checkpoint, png=png, tmp=tmp_path) for a in command]
    code, out, err = run(argv)
    assert code == 1 and out == ""
    assert one_line(err) == (f"numcnn: error: {checkpoint} is a training checkpoint (for "
                             f"'numcnn train --resume'); pass the model file "
                             f"{trained / 'model.numcnn'} or the run folder {trained}")
    assert not (tmp_path / "m.onnx").exists()


def test_a_lone_checkpoint_says_the_model_file_is_missing(trained, png, tmp_path):
    import shutil

    shutil.copy(trained / "checkpoint.ckpt", tmp_path / "checkpoint.ckpt")
    code, _, err = run(["predict", tmp_path / "checkpoint.ckpt", png])
    assert code == 1
    assert "is a training checkpoint" in one_line(err) and f"it is not in {tmp_path}" in err


def test_a_run_folder_stands_for_its_model_file(trained, png, tmp_path, npz):
    by_file = run(["predict", trained / "model.numcnn", png, "--json"])
    by_folder = run(["predict", trained, png, "--json"])
    assert by_file[0] == by_folder[0] == 0
    assert json.loads(by_folder[1])[0]["probabilities"] == \
        json.loads(by_file[1])[0]["probabilities"]
    accuracy = [run(["evaluate", model, "--dataset", npz, "--quiet"])[1]
                for model in (trained / "model.numcnn", trained)]
    assert accuracy[0] == accuracy[1] and accuracy[0].startswith("accuracy ")
    pytest.importorskip("onnx")
    code, out, _ = run(["export", trained, "-o", tmp_path / "m.onnx"])
    assert code == 0 and (tmp_path / "m.onnx").is_file() and out.startswith("written: ")
    code, _, err = run(["predict", tmp_path, png])  # a folder without a model
    assert code == 1 and "is a folder without model.numcnn" in one_line(err)


def test_is_checkpoint_reads_the_header_only(trained, png, tmp_path):
    from numcnn import io

    assert io.is_checkpoint(trained / "checkpoint.ckpt")
    assert not io.is_checkpoint(trained / "model.numcnn")
    (tmp_path / "empty").write_bytes(b"")
    for other in (png, tmp_path / "empty", tmp_path / "missing", tmp_path):
        assert not io.is_checkpoint(other)


# -- 4. a data folder that is a file -----------------------------------------------------------
@pytest.mark.parametrize("dataset", ["mnist", "fashion-mnist"])
def test_a_data_dir_that_is_a_file_is_one_line_before_any_download(dataset, tmp_path,
                                                                   monkeypatch):
    import warnings

    from numcnn.data import mnist

    def no_download(*args, **kwargs):
        raise AssertionError("nothing may be fetched for a data folder that is a file")

    monkeypatch.setattr(mnist, "_fetch", no_download)  # named datasets download through it
    monkeypatch.setattr(mnist, "_pip_download", no_download)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no UserWarning either
        code, _, err = run(["data", dataset, "--data-dir", a_file])
        assert code == 1
        assert one_line(err) == (f"numcnn: error: the data folder {a_file} is a file, not a "
                                 f"folder; expected a folder to keep the datasets in (created "
                                 f"if missing): give --data-dir DIR or set NUMCNN_DATA")
        code, _, err = run(["data", dataset, "--data-dir", a_file / "sub"])
        assert code == 1 and f"is inside {a_file}, a file" in one_line(err)
        monkeypatch.setenv("NUMCNN_DATA", str(a_file))
        code, _, err = run(["train", "--dataset", dataset, "--out", tmp_path / "run"])
        assert code == 1 and f"the data folder $NUMCNN_DATA {a_file} is a file" in one_line(err)
    assert not (tmp_path / "run").exists()


def test_a_warning_is_one_line_too(monkeypatch):
    """A warning on the way (a cache that cannot be written ...) is one line, not Python's
    'file:line: UserWarning:' and the source line."""
    import warnings

    def warns(args):
        warnings.warn("MNIST loaded but not cached: cannot write /x/mnist.npz (read-only)",
                      stacklevel=2)
        return 0

    monkeypatch.setattr(cli, "cmd_data", warns)
    code, _, err = run(["data", "mnist"])
    assert code == 0
    assert one_line(err) == ("numcnn: warning: MNIST loaded but not cached: cannot write "
                             "/x/mnist.npz (read-only)")


# -- 5. check file.py:nothere lists every name it could take -----------------------------------
def test_check_lists_every_name_a_python_file_offers(tmp_path):
    user = tmp_path / "user_layers.py"
    user.write_text(
        "from numcnn import nn\n"
        "from numcnn.nn import Conv2d          # imported: not the file's own\n"
        "class Small(nn.ReLU):\n"
        "    pass\n"
        "class Wide(nn.Module):\n"
        "    def __init__(self, width):\n"
        "        super().__init__()\n"
        "def make_model(depth=2):\n"
        "    return nn.Sequential(nn.ReLU())\n"
        "def helper(x):\n"
        "    return x\n"
        "def _private():\n"
        "    return nn.ReLU()\n"
        "net = nn.Sequential(nn.ReLU())\n"
        "SIZE = 3\n")
    code, _, err = run(["check", f"{user}:nothere"])
    assert code == 2
    assert one_line(err) == (
        f"numcnn check: error: {user} has no 'nothere'; names to build a model from: Module "
        f"classes Small; functions make_model(); Module instances net (these need arguments, "
        f"so cannot be used: Wide, helper()) (see 'numcnn check --help')")
    for name in ("Small", "make_model", "net"):  # and each one listed is taken
        assert run(["check", f"{user}:{name}", "--input-shape", "1,4,4"])[0] == 0, name


# -- 7. grammar: "an int", "1 class" ---------------------------------------------------------------
def test_articles_and_plurals_follow_the_sound_and_the_count():
    from numcnn._text import a, count

    assert [a(w) for w in ("int", "int64", "integer", "object", "8-D", "11x11", "18", "80")] == \
        ["an int", "an int64", "an integer", "an object", "an 8-D", "an 11x11", "an 18", "an 80"]
    assert [a(w) for w in ("uint8", "float32", "4-D", "2x2", "1100", "list", "one-hot")] == \
        ["a uint8", "a float32", "a 4-D", "a 2x2", "a 1100", "a list", "a one-hot"]
    assert [a(w) for w in ("ndarray", "SGD", "NCHW", "ReLU", "NoneType")] == \
        ["an ndarray", "an SGD", "an NCHW", "a ReLU", "a NoneType"]
    assert [count(n, "class") for n in (0, 1, 2)] == ["0 classes", "1 class", "2 classes"]
    assert count(1, "entry") == "1 entry" and count(3, "entry") == "3 entries"
    assert count(2, "epoch") == "2 epochs" and count(2, "batch", "batches") == "2 batches"
    assert count(60000, "image", thousands=True) == "60,000 images"
    assert count(1152, "feature") == "1152 features"


def test_messages_say_an_int_and_1_class(tmp_path, spec):
    from numcnn import nn
    from numcnn.errors import NumcnnError

    with pytest.raises(NumcnnError, match=r"got an int$"):
        nn.utils.clip_grad_norm_([3], 1.0)
    with pytest.raises(NumcnnError, match=r"got an 8-D input"):
        nn.BatchNorm2d(2)(np.zeros((1,) * 8, np.float32))

    rng = np.random.default_rng(0)
    one_class = tmp_path / "one.npz"
    np.savez(one_class, x_train=rng.integers(0, 255, (20, 8, 8), dtype=np.uint8),
             y_train=np.zeros(20, np.int64), x_test=rng.integers(0, 255, (4, 8, 8), np.uint8),
             y_test=np.zeros(4, np.int64))
    code, out, _ = run(["data", one_class])
    assert code == 0 and one_line(out).endswith("(uint8), 1 class")
    code, _, err = run(["train", "--model", spec, "--dataset", one_class,
                        "--out", tmp_path / "run"])
    assert code == 1
    assert "but the dataset has 1 class: its last layer must give 1 logit" in one_line(err)


@pytest.mark.parametrize("argv, prog", [(["train", "--bogus"], "numcnn train"),
                                        (["export", "run", "-o", "m.onnx", "--no-plan"],
                                         "numcnn export"),
                                        (["--bogus"], "numcnn")])
def test_unknown_options_are_usage_errors_of_their_command(argv, prog):
    """As docs/cli.md shows: ``numcnn train: error: ... (see 'numcnn train --help')``, exit 2."""
    code, _, err = run(argv)
    assert code == 2
    assert one_line(err) == (f"{prog}: error: unrecognized arguments: {argv[-1]} "
                             f"(see '{prog} --help')")


def test_a_negative_plan_parallel_threshold_is_refused():
    from numcnn.backend import plan_kernels

    from numcnn.errors import NumcnnError

    with pytest.raises(NumcnnError, match=">= 0"):
        plan_kernels.set_parallel_mflop(-5)
