"""The command line on other datasets: `numcnn train --dataset fashion-mnist` and `cifar10` end to
end on small files written here in the official formats (no download), new training options,
and `numcnn evaluate` on what the user points at (a class folder whole, --split all, a run's
checkpoint)."""

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from numcnn.data import mnist, named
from tests.test_cli import one_line, run
from tests.test_data_named import cifar_archive, cifar_records, idx_gz, sha256

FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


@pytest.fixture
def offline(monkeypatch):
    def fetch(url, progress):
        raise OSError("no route to host")
    monkeypatch.setattr(mnist, "_fetch", fetch)


def learnable_images(rng, n, shape, classes=10):
    """Images whose class is a bright band at a class-dependent row: learnable in one epoch."""
    labels = rng.integers(0, classes, n)
    x = rng.integers(0, 40, (n, *shape), dtype=np.uint8)
    rows = shape[-2]
    for i, label in enumerate(labels):
        top = label * rows // classes
        x[i, ..., top:top + max(1, rows // classes), :] = 250
    return x, labels


@pytest.fixture(scope="module")
def fashion_env(tmp_path_factory):
    """Small Fashion-MNIST files in a data folder, made the 'official' ones, no network; and one
    training run on them (shared by the tests of this module): (data folder, x_test, run)."""
    rng = np.random.default_rng(0)
    x_train, y_train = learnable_images(rng, 300, (28, 28))
    x_test, y_test = learnable_images(rng, 60, (28, 28))
    blobs = {"train-images-idx3-ubyte.gz": idx_gz(x_train),
             "train-labels-idx1-ubyte.gz": idx_gz(y_train),
             "t10k-images-idx3-ubyte.gz": idx_gz(x_test),
             "t10k-labels-idx1-ubyte.gz": idx_gz(y_test)}
    root = tmp_path_factory.mktemp("data")
    for name, blob in blobs.items():
        (root / name).write_bytes(blob)
    info = named.NAMED_DATASETS["fashion-mnist"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(named.NAMED_DATASETS, "fashion-mnist", dataclasses.replace(
            info, files={name: sha256(blob) for name, blob in blobs.items()}))

        def fetch(url, progress):
            raise OSError("no route to host")
        patch.setattr(mnist, "_fetch", fetch)
        out = tmp_path_factory.mktemp("runs") / "run"
        code, stdout, stderr = run(["train", "--dataset", "fashion-mnist", "--data-dir", root,
                                    "--epochs", 2, "--out", out, "--quiet", "--optimizer",
                                    "rmsprop", "--scheduler", "warmup-cosine",
                                    "--clip-grad-norm", 5, "--lr", 0.003])
        assert code == 0, stderr
        yield root, x_test, out


@pytest.fixture
def fashion_dir(fashion_env):
    return fashion_env[:2]


@pytest.fixture
def fashion_run(fashion_env):
    return fashion_env[2], None


def test_train_fashion_mnist_end_to_end_with_its_class_names(fashion_run, fashion_dir, tmp_path):
    from numcnn import io

    out, _ = fashion_run
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "fashion-mnist" and metrics["test"]["n"] == 60
    assert metrics["test"]["accuracy"] > 0.5                   # it learnt the bands
    model = io.load(out / "model.numcnn")
    assert model.metadata["classes"] == FASHION
    assert model.metadata["dataset"] == "fashion-mnist"
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == "rmsprop" and config["clip_grad_norm"] == 5
    assert (out / "confusion_matrix.png").is_file()
    # predictions name the classes
    _, x_test = fashion_dir
    png = tmp_path / "item.png"
    Image.fromarray(x_test[0]).save(png)
    code, stdout, _ = run(["predict", out / "model.numcnn", png, "--json"])
    assert code == 0 and json.loads(stdout)[0]["class"] in FASHION


def test_evaluate_a_run_checkpoint_uses_the_runs_preprocessing(fashion_run, fashion_dir,
                                                               tmp_path):
    import shutil

    out = tmp_path / "run"                       # a copy: the run is shared by other tests
    shutil.copytree(fashion_run[0], out)
    root, _ = fashion_dir
    code, stdout, stderr = run(["evaluate", out / "checkpoint.ckpt", "--data-dir", root])
    assert code == 0, stderr
    assert "is a training checkpoint" in stdout and "model.numcnn" in stdout
    assert "(60 images)" in stdout
    (out / "model.numcnn").unlink()
    code, _, err = run(["evaluate", out / "checkpoint.ckpt", "--data-dir", root])
    assert code == 1
    line = one_line(err)
    assert "training checkpoint" in line and str(out / "model.numcnn") in line


def test_evaluate_split_all_takes_train_and_test(fashion_run, fashion_dir):
    out, _ = fashion_run
    root, _ = fashion_dir
    code, stdout, _ = run(["evaluate", out / "model.numcnn", "--data-dir", root, "--split",
                           "all"])
    assert code == 0 and "(360 images)" in stdout and "train and test" in stdout


def test_a_class_folder_named_for_evaluation_is_evaluated_whole(fashion_run, fashion_dir,
                                                                 tmp_path):
    out, _ = fashion_run
    _, x_test = fashion_dir
    folder = tmp_path / "mine" / "test"
    for i in range(23):                             # 23 images in 3 class folders, as PNGs
        cls = folder / FASHION[i % 3].replace("/", "-")
        cls.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.kron(x_test[i], np.ones((2, 2), np.uint8))).save(cls / f"{i}.png")
    model = out / "model.numcnn"
    code, stdout, stderr = run(["evaluate", model, "--dataset", folder])
    assert code == 0, stderr
    assert "(23 images)" in stdout and "all 23 images of the folder" in stdout
    code, stdout, _ = run(["evaluate", model, "--dataset", folder, "--split", "test", "-q"])
    assert code == 0


def test_train_cifar10_chain_with_colour_augmentation(tmp_path, monkeypatch, offline):
    rng = np.random.default_rng(1)
    x, y = learnable_images(rng, 60, (3, 32, 32))
    batches = {f"data_batch_{i}.bin": cifar_records(x[10 * (i - 1):10 * i], y[10 * (i - 1):10 * i])
               for i in range(1, 6)}
    batches["test_batch.bin"] = cifar_records(x[50:], y[50:])
    blob = cifar_archive(batches)
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(blob)
    info = named.NAMED_DATASETS["cifar10"]
    monkeypatch.setitem(named.NAMED_DATASETS, "cifar10", dataclasses.replace(
        info, files={"cifar-10-binary.tar.gz": sha256(blob)}))
    spec = {"type": "Sequential", "layers": [
        {"type": "Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": 2},
        {"type": "GroupNorm", "num_groups": 2, "num_channels": 4}, {"type": "SiLU"},
        {"type": "AdaptiveAvgPool2d", "output_size": 2}, {"type": "Flatten"},
        {"type": "Linear", "in_features": 16, "out_features": 10}]}
    model_file = tmp_path / "small.json"
    model_file.write_text(json.dumps(spec))
    out = tmp_path / "run"
    code, stdout, stderr = run(["train", "--dataset", "cifar10", "--data-dir", root, "--model",
                                model_file, "--epochs", 1, "--augment", "--out", out, "--quiet",
                                "--batch-size", 16, "--scheduler", "onecycle"])
    assert code == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "cifar10" and metrics["test"]["n"] == 10
    assert metrics["test"]["classes"][0] == "airplane"
    from numcnn import io

    assert io.load(out / "model.numcnn").metadata["input_shape"] == [3, 32, 32]
    # a gray preset refuses colour images with a message saying both shapes
    code, _, err = run(["train", "--dataset", "cifar10", "--data-dir", root, "--epochs", 1,
                        "--out", tmp_path / "run2", "--quiet"])
    assert code == 1 and "(3, 32, 32)" in one_line(err)


def test_data_command_names_the_cache(fashion_dir):
    root, _ = fashion_dir
    code, stdout, _ = run(["data", "fashion-mnist", "--data-dir", root, "-q"])
    assert code == 0 and "300 training and 60 test images of 1x28x28" in stdout
