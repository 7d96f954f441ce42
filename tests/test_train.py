"""fit / evaluate / predict: learning, history, early stopping, schedules, best model, exact resume.

The data is synthetic (10 classes, each a bright 3x3 square at its own place on a noisy 12x12
image), so these tests need no download and run in a few seconds.
"""

import json

import numpy as np
import pytest
import torch

import numcnn
from numcnn import io, nn, optim
from numcnn.data import Augment, DataLoader
from numcnn.errors import NumcnnError
from numcnn.optim import lr_scheduler
from numcnn.train import (CHECKPOINT_FILE, HISTORY_FILE, MODEL_FILE, Callback, EarlyStopping,
                          History, TrainingInterrupted, evaluate, fit, predict, softmax)


def squares(n, seed, noise=0.3):
    """Noisy 12x12 images; class k has a bright 3x3 square at cell (k // 4, k % 4) of a 4x4 grid."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    x = noise * rng.standard_normal((n, 1, 12, 12)).astype(np.float32)
    for i, k in enumerate(y):
        row, col = 3 * (k // 4), 3 * (k % 4)
        x[i, 0, row:row + 3, col:col + 3] += 1.0
    return x, y


TRAIN = squares(320, seed=1)
VAL = squares(96, seed=2)
LR = 1e-2


def small_model(seed=0, batch_norm=True, dropout=True):
    numcnn.manual_seed(seed)
    layers = [nn.Conv2d(1, 4, 3)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()]
    if dropout:
        layers.append(nn.Dropout(0.25))
    layers.append(nn.Linear(4 * 5 * 5, 10))
    return nn.Sequential(*layers)


def setup(seed=0, scheduler=False, augment=True):
    """Model, optimiser, schedule and loader of one run; the same seed gives the same run."""
    model = small_model(seed)
    opt = optim.Adam(model.parameters(), lr=LR)
    sched = lr_scheduler.StepLR(opt, step_size=1, gamma=0.7) if scheduler else None
    transform = Augment(rotation=10.0, shift=1) if augment else None
    loader = DataLoader(*TRAIN, batch_size=32, shuffle=True, drop_last=False, seed=seed,
                        transform=transform)
    return model, opt, sched, loader


def weights(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def assert_same_weights(a, b):
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


class InterruptAt(Callback):
    """Simulates Ctrl-C: raises KeyboardInterrupt at the end of an epoch or after a batch."""

    def __init__(self, epoch, batch=None):
        self.epoch, self.batch, self.current = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs):
        self.current = epoch

    def on_batch_end(self, batch, logs):
        if self.batch is not None and self.current == self.epoch and batch == self.batch:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs):
        if self.batch is None and epoch == self.epoch:
            raise KeyboardInterrupt


class Record(Callback):
    """Keeps the weights at the end of every epoch."""

    def __init__(self):
        self.states = {}

    def on_epoch_end(self, epoch, logs):
        self.states[epoch] = weights(self.model)


# ----------------------------------------------------------------------------------------------
def test_fit_reduces_loss_and_learns():
    model, opt, _, loader = setup()
    before = evaluate(model, *VAL).accuracy
    history = fit(model, loader, VAL, epochs=4, optimizer=opt, print_fn=None)
    assert isinstance(history, History) and history.epoch == [1, 2, 3, 4]
    assert history["loss"][-1] < 0.5 * history["loss"][0]
    assert history["val_loss"][-1] < history["val_loss"][0]
    assert history["val_accuracy"][-1] > 0.9 > before + 0.5
    assert len(history["accuracy"]) == len(history["lr"]) == len(history.seconds) == 4
    assert all(rate > 0 for rate in history.images_per_s)


def test_fit_from_arrays_makes_its_own_loader_and_prints_one_line_per_epoch():
    lines = []
    model = small_model()
    history = fit(model, TRAIN, VAL, epochs=2, batch_size=64, seed=3, print_fn=lines.append)
    assert len(lines) == 2 and lines[0].startswith("epoch 1/2") and "val_accuracy" in lines[0]
    assert "img/s" in lines[1]
    assert history["loss"][1] < history["loss"][0]


def test_history_and_best_model_are_written_to_the_run_folder(tmp_path):
    model, opt, _, loader = setup()
    record = Record()
    history = fit(model, loader, VAL, epochs=3, optimizer=opt, callbacks=[record],
                  run_dir=tmp_path, metadata={"classes": list(range(10)), "note": "test"},
                  print_fn=None)
    on_disk = json.loads((tmp_path / HISTORY_FILE).read_text())
    assert on_disk["val_loss"] == history["val_loss"] and on_disk["epoch"] == [1, 2, 3]
    assert History.load(tmp_path / HISTORY_FILE).to_dict() == history.to_dict()

    best_epoch = int(np.argmin(history["val_loss"])) + 1
    assert history.best_epoch == best_epoch
    best = io.load(tmp_path / MODEL_FILE)
    assert best.metadata["epoch"] == best_epoch and best.metadata["note"] == "test"
    assert best.metadata["monitor"] == "val_loss"
    assert best.metadata["monitor_value"] == pytest.approx(min(history["val_loss"]))
    assert_same_weights(best.state_dict(), record.states[best_epoch])
    assert (tmp_path / CHECKPOINT_FILE).is_file()


def test_best_model_follows_the_monitored_metric(tmp_path):
    model, opt, _, loader = setup()
    record = Record()
    history = fit(model, loader, VAL, epochs=3, optimizer=opt, callbacks=[record],
                  monitor="val_accuracy", run_dir=tmp_path, print_fn=None)
    accuracies = history["val_accuracy"]
    best_epoch = accuracies.index(max(accuracies)) + 1  # the first of equal maxima
    assert history.best_epoch == best_epoch
    assert_same_weights(io.load(tmp_path / MODEL_FILE).state_dict(), record.states[best_epoch])


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    # lr 0 and no batch norm or dropout: the weights never change, so the validation loss of
    # epoch 1 is never beaten; patience 2 stops at epoch 3.
    model = small_model(batch_norm=False, dropout=False)
    opt = optim.SGD(model.parameters(), lr=0.0)
    lines = []
    history = fit(model, TRAIN, VAL, epochs=10, optimizer=opt, seed=0,
                  early_stopping=EarlyStopping(patience=2), print_fn=lines.append)
    assert history.epoch == [1, 2, 3] and history.stopped_epoch == 3 and history.best_epoch == 1
    assert len(set(history["val_loss"])) == 1
    assert "early stopping" in lines[-1]


def test_early_stopping_restores_the_best_weights():
    # min_delta so large that no epoch after the first counts as an improvement.
    record = Record()
    model, opt, _, loader = setup()
    history = fit(model, loader, VAL, epochs=10, optimizer=opt, callbacks=[record],
                  early_stopping=EarlyStopping(patience=1, min_delta=100.0), print_fn=None)
    assert history.epoch == [1, 2] and history.best_epoch == 1
    assert_same_weights(weights(model), record.states[1])

    model, opt, _, loader = setup()
    fit(model, loader, VAL, epochs=10, optimizer=opt, print_fn=None,
        early_stopping=EarlyStopping(patience=1, min_delta=100.0, restore_best_weights=False))
    assert_same_weights(weights(model), record.states[2])


def test_learning_rate_schedule_is_stepped_once_per_epoch():
    model, opt, sched, loader = setup(scheduler=True)
    history = fit(model, loader, VAL, epochs=3, optimizer=opt, scheduler=sched, print_fn=None)
    np.testing.assert_allclose(history["lr"], [LR, LR * 0.7, LR * 0.49], rtol=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR * 0.7 ** 3, rel=1e-12)


def test_reduce_on_plateau_is_given_the_monitored_value():
    seen = []

    class Plateau(lr_scheduler.ReduceLROnPlateau):
        def step(self, metrics, epoch=None):
            seen.append(metrics)
            super().step(metrics)

    model, opt, _, loader = setup()
    sched = Plateau(opt, factor=0.5, patience=0, threshold=0.99)  # nothing counts as better
    history = fit(model, loader, VAL, epochs=3, optimizer=opt, scheduler=sched, print_fn=None)
    assert seen == history["val_loss"]
    # the lr of each epoch; epoch 2 is the first without improvement, so epoch 3 has half
    np.testing.assert_allclose(history["lr"], [LR, LR, LR / 2], rtol=1e-12)
    assert opt.param_groups[0]["lr"] == pytest.approx(LR / 4, rel=1e-12)


def test_same_seed_same_numbers_different_seed_different_numbers():
    runs = []
    for seed in (0, 0, 1):
        model, opt, sched, loader = setup(seed=seed, scheduler=True)
        history = fit(model, loader, VAL, epochs=2, optimizer=opt, scheduler=sched, print_fn=None)
        runs.append((history.history, weights(model)))
    assert runs[0][0] == runs[1][0]
    assert_same_weights(runs[0][1], runs[1][1])
    assert runs[0][0]["loss"] != runs[2][0]["loss"]


@pytest.mark.parametrize("where", ["end of epoch 1", "batch 4 of epoch 2"])
def test_ctrl_c_saves_a_checkpoint_and_resume_ends_as_the_uninterrupted_run(tmp_path, where):
    """Batch norm, dropout, augmentation, shuffling, Adam and a schedule all carry state."""
    model, opt, sched, loader = setup(scheduler=True)
    reference = fit(model, loader, VAL, epochs=3, optimizer=opt, scheduler=sched,
                    run_dir=tmp_path / "reference", print_fn=None)
    expected, expected_opt = weights(model), opt.state_dict()

    interrupt = InterruptAt(1) if where == "end of epoch 1" else InterruptAt(2, batch=4)
    model, opt, sched, loader = setup(scheduler=True)
    with pytest.raises(TrainingInterrupted) as stop:
        fit(model, loader, VAL, epochs=3, optimizer=opt, scheduler=sched, callbacks=[interrupt],
            run_dir=tmp_path / "run", print_fn=None)
    assert stop.value.epoch == 1 and stop.value.checkpoint == tmp_path / "run" / CHECKPOINT_FILE
    assert stop.value.history.epoch == [1]
    assert json.loads((tmp_path / "run" / HISTORY_FILE).read_text())["epoch"] == [1]

    # A fresh process: another initialisation (the checkpoint must overwrite it), a new loader.
    model, opt, sched, loader = setup(seed=0, scheduler=True)
    numcnn.manual_seed(12345)
    model.load_state_dict(weights(small_model(seed=99)))
    resumed = fit(model, loader, VAL, epochs=3, optimizer=opt, scheduler=sched,
                  run_dir=tmp_path / "run", resume=tmp_path / "run" / CHECKPOINT_FILE,
                  print_fn=None)
    assert resumed.epoch == [1, 2, 3]
    assert resumed.history == reference.history
    assert resumed.best_epoch == reference.best_epoch
    assert_same_weights(weights(model), expected)
    state = opt.state_dict()
    for index, entry in expected_opt["state"].items():
        for key, value in entry.items():
            np.testing.assert_array_equal(state["state"][index][key], value)
    assert_same_weights(io.load(tmp_path / "run" / MODEL_FILE).state_dict(),
                        io.load(tmp_path / "reference" / MODEL_FILE).state_dict())


def test_resume_of_a_finished_run_does_nothing_and_more_epochs_continue_it(tmp_path):
    model, opt, sched, loader = setup()
    fit(model, loader, VAL, epochs=3, optimizer=opt, run_dir=tmp_path / "a", print_fn=None)
    expected = weights(model)

    model, opt, sched, loader = setup()
    fit(model, loader, VAL, epochs=2, optimizer=opt, run_dir=tmp_path / "b", print_fn=None)
    model, opt, sched, loader = setup()
    history = fit(model, loader, VAL, epochs=3, optimizer=opt, run_dir=tmp_path / "b",
                  resume=tmp_path / "b" / CHECKPOINT_FILE, print_fn=None)
    assert history.epoch == [1, 2, 3]
    assert_same_weights(weights(model), expected)

    history = fit(model, loader, VAL, epochs=3, optimizer=opt, run_dir=tmp_path / "b",
                  resume=tmp_path / "b" / CHECKPOINT_FILE, print_fn=None)
    assert history.epoch == [1, 2, 3]
    assert_same_weights(weights(model), expected)


def test_interrupt_without_run_folder_still_rolls_back_to_the_last_epoch():
    record = Record()
    model, opt, _, loader = setup()
    with pytest.raises(TrainingInterrupted) as stop:
        fit(model, loader, VAL, epochs=3, optimizer=opt, callbacks=[record, InterruptAt(2, 3)],
            print_fn=None)
    assert stop.value.checkpoint is None and stop.value.epoch == 1
    assert_same_weights(weights(model), record.states[1])


def test_fit_rejects_bad_arguments_and_a_diverging_loss():
    model = small_model()
    with pytest.raises(NumcnnError, match="epochs must be >= 1, got 0"):
        fit(model, TRAIN, epochs=0)
    with pytest.raises(NumcnnError, match="'val_loss' needs validation data"):
        fit(model, TRAIN, epochs=1, monitor="val_loss")
    with pytest.raises(NumcnnError, match="monitor must be .* got 'acc'"):
        fit(model, TRAIN, VAL, epochs=1, monitor="acc")
    x, y = TRAIN
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(NumcnnError, match="loss became nan at epoch 1, batch 1"):
        fit(model, (bad[:8], y[:8]), epochs=1, print_fn=None)


# ----------------------------------------------------------------------------------------------
def test_evaluate_matches_a_direct_computation():
    model = small_model()
    fit(model, TRAIN, epochs=1, seed=0, print_fn=None)
    x, y = VAL
    result = evaluate(model, x, y, batch_size=25, classes=[f"c{k}" for k in range(10)])

    model.eval()
    with numcnn.no_grad():
        logits = model(x)
    pred = logits.argmax(axis=1)
    np.testing.assert_array_equal(result.y_pred, pred)
    assert result.accuracy == np.mean(pred == y)
    expected_loss = torch.nn.functional.cross_entropy(torch.tensor(logits, dtype=torch.float64),
                                                      torch.tensor(y)).item()
    assert result.loss == pytest.approx(expected_loss, rel=1e-5)
    confusion = np.zeros((10, 10), dtype=np.int64)
    for true, guess in zip(y, pred):
        confusion[true, guess] += 1
    np.testing.assert_array_equal(result.confusion, confusion)
    for k in range(10):
        recall = confusion[k, k] / confusion[k].sum() if confusion[k].sum() else 0.0
        assert result.report["per_class"][f"c{k}"]["recall"] == pytest.approx(recall)
    np.testing.assert_array_equal(result.misclassified, np.flatnonzero(pred != y))

    text = result.format()
    correct = int((pred == y).sum())
    assert f"accuracy {100 * correct / len(y):.2f}% ({correct}/{len(y)})" in text
    assert "precision" in text and "true \\ pred" in text and "c9" in text
    assert json.loads(json.dumps(result.to_dict()))["confusion_matrix"] == confusion.tolist()


def test_evaluate_keeps_the_training_mode_and_applies_preprocessing():
    class Halve:
        def apply(self, x):
            return (x / 2).astype(np.float32)

    model = small_model()
    model.train()
    x, y = VAL
    assert np.array_equal(evaluate(model, x, y, preprocessing=Halve()).y_pred,
                          evaluate(model, x / 2, y).y_pred)
    assert model.training is True


def test_predict_gives_softmax_probabilities():
    model = small_model()
    x, _ = VAL
    probabilities = predict(model, x, batch_size=7)
    model.eval()
    with numcnn.no_grad():
        logits = model(x)
    expected = torch.softmax(torch.tensor(logits, dtype=torch.float64), dim=1).numpy()
    np.testing.assert_allclose(probabilities, expected, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    big = np.array([[1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(softmax(big), [[1.0, 0.0, 0.0]])


def test_progress_bar_shows_running_loss_accuracy_and_speed(capsys):
    model, opt, _, loader = setup()
    fit(model, loader, epochs=1, optimizer=opt, progress=True, print_fn=None)
    err = capsys.readouterr().err
    assert "epoch 1/1" in err and f"{len(loader)}/{len(loader)}" in err
    assert "loss=" in err and "acc=" in err and "img_s=" in err
    fit(model, loader, epochs=1, optimizer=opt, progress=False, print_fn=None)
    assert capsys.readouterr().err == ""
