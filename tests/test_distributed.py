"""numcnn on a local Ray (2 CPUs): batch inference with Ray Data equals the local prediction and
survives a broken file; data-parallel training on 2 workers equals one process without batch
norm, keeps the replicas identical, and writes, checkpoints and resumes a run as one process."""

import contextlib
import csv
import io as stdio
import logging
import sys

import numpy as np
import pytest

import numcnn as nc
from numcnn import cli, data, io, models, nn, optim, train
from numcnn import distributed
from numcnn.distributed import RayError

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for the module (starting one takes seconds)."""
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory, mnist_small):
    """A folder of MNIST test digits as PNGs (dark ink on white, as photographed), a broken
    .png, a text file (not an image: skipped) and a model file with numcnn's metadata."""
    from PIL import Image

    folder = tmp_path_factory.mktemp("images")
    _, _, x_test, _ = mnist_small
    for i, image in enumerate(x_test[:24]):
        Image.fromarray(255 - image.reshape(28, 28)).save(folder / f"digit{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "notes.txt").write_text("not an image")
    nc.manual_seed(0)
    model = models.preset("small-cnn")
    prep = data.Preprocessing.fit(x_test[:100].reshape(-1, 1, 28, 28))
    model_path = folder.parent / "model.numcnn"
    io.save(model, model_path, metadata={"preprocessing": prep.to_dict(),
                                         "classes": [str(k) for k in range(10)]})
    return folder, model_path


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def local_probabilities(model_path, paths):
    model = io.load(model_path)
    prep = data.Preprocessing.from_dict(model.metadata["preprocessing"])
    images = np.concatenate([data.prepare_image(p, prep) for p in paths])
    return train.predict(model, images)


def test_ray_predictions_equal_local_ones_and_a_broken_file_is_reported(local_ray, image_folder,
                                                                        tmp_path):
    folder, model_path = image_folder
    out = tmp_path / "predictions.csv"
    result = distributed.predict_files(model_path, folder, out, batch_size=8)
    rows = read_rows(out)
    assert result["images"] == len(rows) == 25  # 24 digits and the broken file; no .txt
    assert [p for p, _ in result["failed"]] == [str(folder / "broken.png")]
    broken = [r for r in rows if r["path"].endswith("broken.png")][0]
    assert broken["error"].startswith("cannot read image: ") and broken["class"] == ""
    good = [r for r in rows if not r["error"]]
    expected = local_probabilities(model_path, [r["path"] for r in good])
    got = np.array([[float(r[f"prob_{k}"]) for k in range(10)] for r in good])
    assert np.allclose(got, expected, rtol=0, atol=1e-6)
    assert [r["class"] for r in good] == [str(k) for k in expected.argmax(axis=1)]
    assert np.allclose([float(r["probability"]) for r in good], expected.max(axis=1), atol=1e-6)


def test_predict_dataset_of_decoded_images(local_ray, image_folder):
    from PIL import Image

    folder, model_path = image_folder
    paths = sorted(str(p) for p in folder.glob("digit0*.png"))
    items = [{"path": p, "image": np.asarray(Image.open(p))} for p in paths]
    dataset = ray.data.from_items(items)
    rows = distributed.predict_dataset(model_path, dataset, batch_size=4, workers=1).take_all()
    rows.sort(key=lambda r: r["path"])
    model = io.load(model_path)
    prep = data.Preprocessing.from_dict(model.metadata["preprocessing"])
    expected = train.predict(model, np.concatenate([data.prepare_image(item["image"], prep)
                                                    for item in items]))
    got = np.array([[r[f"prob_{k}"] for k in range(10)] for r in rows])
    assert np.allclose(got, expected, atol=1e-6)


def test_cli_predict_on_ray(local_ray, image_folder, tmp_path):
    folder, model_path = image_folder
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["predict", str(model_path), str(folder / "digit1*.png"), "--ray",
                         "-o", str(tmp_path / "p.csv")])
    assert code == 0, err.getvalue()
    assert "classified 10 of 10 images on Ray" in out.getvalue()
    assert len(read_rows(tmp_path / "p.csv")) == 10
    with contextlib.redirect_stderr(err):
        assert cli.main(["predict", str(model_path), str(folder), "--ray"]) == 2
    assert "give -o FILE" in err.getvalue()


def test_without_ray_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(RayError, match=r'pip install "numcnn\[ray\]"'):
        distributed.require_ray()


def small_data(n=192, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 4, n)
    return x, y


def plain_model():
    nc.manual_seed(1)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(64, 4))


@pytest.mark.filterwarnings("error:Detected call of:UserWarning")  # the steps count on the driver
def test_two_workers_equal_one_process_without_batch_norm(local_ray):
    x, y = small_data(600)  # batch 40: 15 steps an epoch
    weights = {}
    for workers in (None, 2):
        model = plain_model()
        opt = optim.Adam(model.parameters(), lr=1e-2)
        sched = optim.lr_scheduler.StepLR(opt, step_size=4, gamma=0.5)
        history = train.fit(model, (x, y), epochs=14, batch_size=40, optimizer=opt,
                            scheduler=sched, seed=3, workers=workers, print_fn=None)
        weights[workers] = model.state_dict()
        losses = history["loss"]
    assert losses[-1] < losses[0]
    for key, single in weights[None].items():  # 210 steps
        assert np.abs(weights[2][key] - single).max() <= 1e-5 * np.abs(single).max(), key


def test_replicas_stay_identical_with_batch_norm_and_dropout(local_ray):
    x, y = small_data(96)
    nc.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Dropout(0.2), nn.Flatten(), nn.Linear(256, 4))
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    criterion = nn.CrossEntropyLoss()
    with distributed.DataParallel(2) as cluster:
        cluster.push(model, opt, criterion)
        for start in range(0, 96, 32):
            loss, correct = cluster.step(x[start:start + 32], y[start:start + 32])
            assert np.isfinite(loss) and 0 <= correct <= 32
        first, second = cluster.replica_weights()
        for key in first:
            assert np.array_equal(first[key], second[key]), key
        assert first["1.num_batches_tracked"] == 3
        cluster.pull(model, opt)
    assert np.array_equal(model.state_dict()["1.running_mean"], first["1.running_mean"])


def test_synchronised_batch_norm_equals_one_process(local_ray):
    x, y = small_data(200)  # batch 40: 5 steps an epoch

    def bn_model():
        nc.manual_seed(1)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 8), nn.BatchNorm1d(8),
                             nn.ReLU(), nn.Linear(8, 4))

    states = {}
    for workers, sync in ((None, False), (2, True), (2, False)):
        model = bn_model()
        train.fit(model, (x, y), epochs=3, batch_size=40, seed=3, workers=workers,
                  sync_batch_norm=sync, print_fn=None,
                  optimizer=optim.SGD(model.parameters(), lr=0.05, momentum=0.9))
        states[workers, sync] = model.state_dict()

    def distance(state):
        single = states[None, False]
        return max(float(np.abs(state[k] - single[k]).max() / np.abs(single[k]).max())
                   for k in single if not k.endswith("num_batches_tracked"))

    assert distance(states[2, True]) <= 1e-5  # weights and running statistics alike
    assert distance(states[2, False]) > 1e-2  # each shard's own statistics: another model
    assert states[2, True]["1.num_batches_tracked"] == 15


def test_run_folder_checkpoint_and_resume_with_workers(local_ray, tmp_path):
    x, y = small_data(128)
    xv, yv = small_data(32, seed=1)

    def run(epochs, resume=None, workers=2):
        model = plain_model()
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        history = train.fit(model, (x, y), (xv, yv), epochs=epochs, batch_size=32, optimizer=opt,
                            seed=4, run_dir=tmp_path / "run", resume=resume, workers=workers,
                            print_fn=None)
        return model, history

    run(2)
    for name in ("model.numcnn", "checkpoint.ckpt", "history.json"):
        assert (tmp_path / "run" / name).is_file()
    resumed, history = run(4, resume=tmp_path / "run" / "checkpoint.ckpt")
    assert len(history) == 4 and "val_loss" in history.history
    straight = plain_model()
    train.fit(straight, (x, y), (xv, yv), epochs=4, batch_size=32, seed=4, print_fn=None,
              optimizer=optim.SGD(straight.parameters(), lr=0.05, momentum=0.9))
    for key, value in straight.state_dict().items():
        assert np.abs(resumed.state_dict()[key] - value).max() <= 1e-5 * np.abs(value).max()


def test_cli_train_with_workers(local_ray, mnist_small, tmp_path):
    x_train, y_train, x_test, y_test = mnist_small
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=x_train[:160], y_train=y_train[:160], x_test=x_test[:32],
             y_test=y_test[:32])
    out, err = stdio.StringIO(), stdio.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["train", "--dataset", str(npz), "--model", "small-cnn", "--epochs", "1",
                         "--workers", "2", "-q", "--out", str(tmp_path / "run")])
    assert code == 0, err.getvalue()
    assert "test accuracy" in out.getvalue()
    import json

    assert json.loads((tmp_path / "run" / "config.json").read_text())["workers"] == 2
    assert (tmp_path / "run" / "model.numcnn").is_file()
    with contextlib.redirect_stderr(err):
        assert cli.main(["train", "--ray", "auto"]) == 2
    assert "--ray and --sync-batch-norm need --workers" in err.getvalue()
