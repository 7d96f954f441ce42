"""numcnn.experiment: the recipe of `numcnn train`, called from Python."""

import json

import numpy as np
import pytest

from numcnn import cli, experiment


def test_the_cli_offers_every_setting_of_the_recipe():
    assert tuple(experiment.TRAIN_DEFAULTS) == cli.TRAIN_DEFAULTS


def test_prepare_run_refuses_unknown_settings_and_changes_on_resume(tmp_path):
    with pytest.raises(experiment.SettingsError, match="unknown setting.*learning_rate"):
        experiment.prepare_run({"learning_rate": 0.1}, out=tmp_path / "a")
    config, run_dir, resume = experiment.prepare_run({"model": "small-cnn"}, out=tmp_path / "b")
    assert (config["epochs"], run_dir, resume) == (5, tmp_path / "b", None)
    (run_dir / "config.json").write_text(json.dumps(config))
    (run_dir / "checkpoint.ckpt").write_bytes(b"")
    with pytest.raises(experiment.SettingsError, match="--lr cannot be changed"):
        experiment.prepare_run({"lr": 0.1}, resume=run_dir)
    with pytest.raises(experiment.SettingsError, match="already holds a run"):
        experiment.prepare_run({}, out=run_dir)


def test_run_experiment_from_python(tmp_path, mnist_small):
    x_train, y_train, x_test, y_test = mnist_small
    npz = tmp_path / "digits.npz"
    np.savez(npz, x_train=x_train[:300], y_train=y_train[:300], x_test=x_test[:100],
             y_test=y_test[:100])
    lines = []
    result = experiment.run_experiment(
        {"model": "small-cnn", "dataset": str(npz), "epochs": 1, "val_fraction": 0.2},
        out=tmp_path / "run", quiet=True, print_fn=lines.append, pictures=False)
    assert result.run_dir == tmp_path / "run"
    assert result.evaluation.n == 100 and len(result.history) == 1
    assert lines[-1] == f"run folder: {tmp_path / 'run'}"
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test"]["accuracy"] == pytest.approx(result.evaluation.accuracy)
    assert "small-cnn" in (tmp_path / "run" / "train.log").read_text()
    assert not (tmp_path / "run" / "report.html").exists()  # pictures=False


def test_a_momentum_for_an_optimizer_without_one_is_refused():
    """--momentum with Adam used to be accepted, recorded and ignored."""
    from numcnn import experiment, nn

    params = nn.Linear(2, 2).parameters()
    config = {**experiment.TRAIN_DEFAULTS, "optimizer": "adam", "momentum": 0.9}
    with pytest.raises(experiment.SettingsError, match="only sgd and rmsprop take a momentum"):
        experiment.make_optimizer(config, params)
    config["optimizer"] = "sgd"
    assert experiment.make_optimizer(config, params).param_groups[0]["momentum"] == 0.9
