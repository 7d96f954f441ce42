"""Training, evaluation and prediction, in the manner of Keras's ``fit``, ``evaluate``, ``predict``.

>>> from numcnn.train import fit, evaluate, EarlyStopping
>>> history = fit(model, (x_train, y_train), validation=(x_val, y_val), epochs=3, batch_size=64,
...               optimizer=optim.Adam(model.parameters(), lr=1e-3), run_dir="runs/demo")
>>> history["val_accuracy"]                     # one value per epoch
>>> result = evaluate(model, x_test, y_test)    # loss, accuracy, confusion matrix, per-class report
>>> print(result.format())

One epoch is: every training batch (forward, loss, backward, optimiser step), then the validation
set in eval mode under ``no_grad``, then one step of the learning-rate schedule, then the
bookkeeping: the history, the best model, early stopping, and a checkpoint of the whole training
state.

Exact resume. The checkpoint written at the end of every epoch holds the model (weights and
batch-norm statistics), the optimiser (moments, step counts), the schedule, the history, the
early-stopping state and the state of every random generator the run draws from (numcnn's
generator, which dropout uses, and the data loader's epoch, which seeds shuffling and
augmentation). Training resumed from it therefore continues with exactly the numbers an
uninterrupted run would have produced. Ctrl-C (a ``KeyboardInterrupt``) in the middle of an epoch
rolls back to the end of the last finished epoch, writes that checkpoint and raises
:class:`TrainingInterrupted`; the unfinished epoch is run again on resume.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import _random
from ._grad import no_grad
from ._text import count
from .errors import ArgumentError, NumcnnError

__all__ = ["fit", "evaluate", "predict", "softmax", "History", "EarlyStopping", "Callback",
           "Evaluation", "TrainingInterrupted", "RunFolderBusy", "lock_run_dir", "unlock_run_dir",
           "MODEL_FILE", "CHECKPOINT_FILE", "HISTORY_FILE", "LOCK_FILE"]

LOCK_FILE = "run.lock"               # held (flock) by the process training in the folder; its PID
MODEL_FILE = "model.numcnn"          # the best model (by the monitored metric), with its metadata
CHECKPOINT_FILE = "checkpoint.ckpt"  # the whole training state at the end of the last epoch
HISTORY_FILE = "history.json"        # loss and accuracy per epoch, train and validation

METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr")


class RunFolderBusy(NumcnnError):
    """The run folder is in use by another live process (``pid``), which holds its lock."""

    def __init__(self, message: str, pid: int | None):
        super().__init__(message)
        self.pid = pid


_HELD: dict[str, list] = {}  # real path of a run folder -> [lock file descriptor, depth]
_HELD_LOCK = threading.Lock()


def lock_run_dir(run_dir) -> str:
    """Claim ``run_dir`` for this process: an exclusive ``flock`` on ``run_dir/run.lock``, which
    then holds this process's PID. Re-entrant within the process (:func:`fit` called by the
    command line, which locked first); released by :func:`unlock_run_dir` or when the process
    ends, however it ends (``kill -9`` included), so a lock left by a dead process is simply
    taken over. Leftover temporary files of an interrupted atomic write are removed.

    Raises:
        RunFolderBusy: another live process holds the lock (the message names its PID).
    """
    try:
        import fcntl
    except ImportError:  # not POSIX: no locking
        return os.path.realpath(run_dir)
    run_dir = Path(run_dir)
    key = os.path.realpath(run_dir)
    with _HELD_LOCK:
        if key in _HELD:
            _HELD[key][1] += 1
            return key
        for _ in range(10):
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
                os.close(fd)
                pid = int(text) if text.isdigit() else None
                who = f"process {pid}" if pid is not None else "another process"
                raise RunFolderBusy(f"the run folder {run_dir} is in use by {who}, which is "
                                    f"training in it; wait for it to end, or choose another "
                                    f"folder (expected a folder no live run holds)", pid) from None
            if _is_file_at(fd, run_dir / LOCK_FILE):
                break
            os.close(fd)  # a failed run removed the lock file (and folder) meanwhile: again
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        _HELD[key] = [fd, 1]
    for leftover in run_dir.glob(".*.tmp"):  # an atomic write cut short (kill -9, full disk)
        try:
            leftover.unlink()
        except OSError:
            pass
    return key


def _is_file_at(fd: int, path: Path) -> bool:
    """Whether the open file ``fd`` is still the file at ``path`` (not removed meanwhile)."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def unlock_run_dir(run_dir) -> None:
    """Release one :func:`lock_run_dir` of this process (the lock goes with the last one)."""
    key = os.path.realpath(run_dir)
    with _HELD_LOCK:
        held = _HELD.get(key)
        if held is None:
            return
        held[1] -= 1
        if held[1] == 0:
            del _HELD[key]
            os.ftruncate(held[0], 0)
            os.close(held[0])  # closing the descriptor releases the flock


def release_run_dirs() -> None:
    """Release every run-folder lock this process holds (the command line's, at its end)."""
    with _HELD_LOCK:
        held = list(_HELD.values())
        _HELD.clear()
    for fd, _ in held:
        os.ftruncate(fd, 0)
        os.close(fd)


class TrainingInterrupted(KeyboardInterrupt):
    """Raised by :func:`fit` after Ctrl-C, once the last finished epoch's checkpoint is written.

    Attributes: ``checkpoint`` (its path, or ``None`` when ``fit`` had no ``run_dir``), ``epoch``
    (the last finished epoch) and ``history``.
    """

    def __init__(self, checkpoint, epoch: int, history: "History"):
        super().__init__(f"training interrupted after epoch {epoch}")
        self.checkpoint = checkpoint
        self.epoch = epoch
        self.history = history


# ----------------------------------------------------------------------------------------------
# History, callbacks, early stopping
# ----------------------------------------------------------------------------------------------
class History:
    """What :func:`fit` returns: one value per epoch for every metric, as Keras's ``History``.

    ``history.history`` maps ``"loss"``, ``"accuracy"``, ``"val_loss"``, ``"val_accuracy"`` and
    ``"lr"`` to lists (the validation lists stay empty without validation data); ``history["loss"]``
    is a shortcut. ``epoch`` lists the epoch numbers (from 1), ``seconds`` and ``images_per_s`` the
    timing of each epoch. ``best_epoch`` is the epoch of the best monitored value and
    ``stopped_epoch`` the epoch at which early stopping ended the run (``None`` if it did not).
    """

    def __init__(self):
        self.history: dict[str, list[float]] = {name: [] for name in METRICS}
        self.epoch: list[int] = []
        self.seconds: list[float] = []
        self.images_per_s: list[float] = []
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self.health: list[dict] = []  # per epoch, with fit(health=...): see numcnn.health

    def append(self, epoch: int, logs: dict) -> None:
        self.epoch.append(epoch)
        for name in METRICS:
            if name in logs:
                self.history[name].append(float(logs[name]))
        self.seconds.append(float(logs["seconds"]))
        self.images_per_s.append(float(logs["images_per_s"]))

    def __getitem__(self, name: str) -> list[float]:
        return self.history[name]

    def __len__(self) -> int:
        return len(self.epoch)

    def to_dict(self) -> dict:
        return {"epoch": list(self.epoch), **{k: list(v) for k, v in self.history.items()},
                "seconds": list(self.seconds), "images_per_s": list(self.images_per_s),
                "best_epoch": self.best_epoch, "stopped_epoch": self.stopped_epoch,
                **({"health": copy.deepcopy(self.health)} if self.health else {})}

    @classmethod
    def from_dict(cls, data: dict) -> "History":
        history = cls()
        history.epoch = [int(e) for e in data.get("epoch", [])]
        for name in METRICS:
            history.history[name] = [float(v) for v in data.get(name, [])]
        history.seconds = [float(v) for v in data.get("seconds", [])]
        history.images_per_s = [float(v) for v in data.get("images_per_s", [])]
        history.best_epoch = data.get("best_epoch")
        history.stopped_epoch = data.get("stopped_epoch")
        history.health = list(data.get("health", []))
        return history

    def save(self, path) -> None:
        _write_json(path, self.to_dict())

    @classmethod
    def load(cls, path) -> "History":
        with open(path, encoding="utf-8") as file:
            return cls.from_dict(json.load(file))

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self)}, last={last})"


class Callback:
    """Hooks :func:`fit` calls; subclass and override the ones you need.

    Before ``on_train_begin``, ``fit`` sets ``self.model``, ``self.optimizer`` and ``self.history``.
    Setting ``self.stop_training = True`` ends the run after the current epoch. ``logs`` holds the
    metrics so far (``on_batch_end``: the running ``loss``, ``accuracy``, ``images_per_s``).
    A ``KeyboardInterrupt`` raised in a hook behaves like Ctrl-C: from ``on_epoch_end`` the epoch
    counts as finished, from ``on_batch_end`` it is rolled back.
    """

    model = optimizer = history = None
    stop_training = False

    def on_train_begin(self, logs: dict) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...
    def on_batch_end(self, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, logs: dict) -> None: ...


@dataclass
class EarlyStopping:
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    Args:
        monitor: ``"val_loss"`` (default), ``"val_accuracy"``, ``"loss"`` or ``"accuracy"``.
        patience: epochs without improvement before stopping. Default: 3.
        min_delta: smallest change that counts as an improvement. Default: 0.
        mode: ``"min"``, ``"max"``, or ``"auto"`` (``max`` for accuracies, ``min`` otherwise).
        restore_best_weights: put the best epoch's weights back into the model at the end.
            Default: True.
    """

    monitor: str = "val_loss"
    patience: int = 3
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best_weights: bool = True

    def __post_init__(self):
        if self.patience < 0:
            raise NumcnnError(f"EarlyStopping: patience must be >= 0, got {self.patience}")
        _check_mode(self.mode)


@dataclass
class _Best:
    """The best value of the monitored metric so far and how many epochs ago it was reached."""

    monitor: str
    mode: str = "auto"
    min_delta: float = 0.0
    value: float | None = None
    epoch: int | None = None
    wait: int = 0

    def __post_init__(self):
        _check_mode(self.mode)
        if self.mode == "auto":
            self.mode = "max" if "acc" in self.monitor else "min"

    def update(self, epoch: int, value: float) -> bool:
        """Record one epoch's value; True if it is a new best."""
        if self.value is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.value - self.min_delta
        else:
            improved = value > self.value + self.min_delta
        if improved:
            self.value, self.epoch, self.wait = float(value), epoch, 0
        else:
            self.wait += 1
        return improved

    def state_dict(self) -> dict:
        return {"value": self.value, "epoch": self.epoch, "wait": self.wait}

    def load_state_dict(self, state: dict) -> None:
        self.value, self.epoch, self.wait = state["value"], state["epoch"], state["wait"]


def _check_mode(mode: str) -> None:
    if mode not in ("auto", "min", "max"):
        raise NumcnnError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")


# ----------------------------------------------------------------------------------------------
# fit
# ----------------------------------------------------------------------------------------------
def fit(model, train, validation=None, *, epochs: int = 1, batch_size: int = 64, optimizer=None,
        loss=None, scheduler=None, early_stopping=None, monitor: str | None = None,
        callbacks=(), run_dir=None, resume=None, metadata: dict | None = None,
        seed: int | None = None, transform=None, progress: bool | None = None,
        print_fn=print, health=None, clip_grad_norm: float | None = None,
        clip_grad_value: float | None = None, workers: int | None = None,
        ray_address: str | None = None, sync_batch_norm: bool = False) -> History:
    """Train ``model`` for ``epochs`` epochs and return the :class:`History`.

    Args:
        model: a :class:`numcnn.nn.Module` whose output is one logit per class.
        train: a :class:`numcnn.data.DataLoader`, or ``(x, y)`` arrays from which ``fit`` makes one
            (``batch_size``, shuffled with ``seed``, ``transform`` applied to each batch).
        validation: ``(x, y)`` arrays (already preprocessed) or an iterable of ``(x, y)`` batches,
            evaluated after every epoch. Default: none.
        epochs: the epoch to end at (counted from the start, also when resuming). Default: 1.
        optimizer: default ``numcnn.optim.Adam(model.parameters(), lr=1e-3)``.
        loss: a loss module called as ``loss(logits, y)`` with ``loss.backward()``.
            Default: ``numcnn.nn.CrossEntropyLoss()``.
        scheduler: a ``numcnn.optim.lr_scheduler`` schedule, stepped once per epoch after
            validation (``ReduceLROnPlateau`` is given the monitored value); ``OneCycleLR``, a
            per-iteration schedule, is stepped after every batch instead.
        early_stopping: an :class:`EarlyStopping`, or an int (the patience). Default: none.
        monitor: the metric that decides the best model. Default: the early-stopping monitor,
            else ``"val_loss"`` with validation data, ``"loss"`` without.
        callbacks: :class:`Callback` objects.
        run_dir: folder for ``model.numcnn`` (the best model, with ``metadata``),
            ``checkpoint.ckpt`` (the training state after the last finished epoch) and
            ``history.json``. Default: none (nothing is written).
        resume: a checkpoint written by an earlier ``fit`` of the same model, optimiser and
            schedule; training continues after its epoch and ends as the uninterrupted run would.
        metadata: stored in ``model.numcnn`` (e.g. preprocessing and class names).
        seed: seed of the loader ``fit`` makes from arrays. Default: drawn from numcnn's generator.
        transform: per-batch transform for the loader ``fit`` makes (e.g. augmentation).
        progress: a progress bar per epoch (tqdm on stderr). Default: when stderr is a terminal.
        print_fn: prints one line per epoch; ``None`` for silence.
        health: a :class:`numcnn.health.HealthMonitor` (or True for one with its defaults):
            per-layer gradient norms, update ratios, dead ReLUs and activation statistics in
            ``history.health`` and one more line per epoch, and the NaN/Inf guard that names
            the layer. Default: none.
        clip_grad_norm: after each backward pass, scale the gradients so that their total
            2-norm is at most this (:func:`numcnn.nn.utils.clip_grad_norm_`). Default: none.
        clip_grad_value: after each backward pass, clip each gradient element into
            ``[-clip_grad_value, clip_grad_value]`` (:func:`numcnn.nn.utils.clip_grad_value_`).
            Default: none.
        workers: train data-parallel on this many Ray workers
            (:class:`numcnn.distributed.DataParallel`): each computes the gradients of its
            shard of every batch, the gradients are averaged and every replica takes the same
            step. Without batch norm and dropout the weights are those of one process, to
            float32 rounding; batch norm uses each shard's statistics (as PyTorch's DDP).
            Needs ``pip install "numcnn[ray]"``. Default: None (this process).
        ray_address: the Ray cluster for ``workers``; default: a local Ray.
        sync_batch_norm: with ``workers``, batch norm over the global batch (all-reduced
            statistics, as PyTorch's SyncBatchNorm) instead of each shard's. Default: False.
            With ``workers`` the workers take the steps: ``health``, gradient clipping and
            schedules stepped every batch (OneCycleLR) are not available there yet (refused).

    Raises:
        TrainingInterrupted: after Ctrl-C, once the last finished epoch's checkpoint is written.
        NumcnnError: bad arguments, or a loss that is no longer finite
            (:class:`numcnn.health.NonFiniteError` with ``health``, naming the layer).
    """
    from . import nn, optim  # light: already imported by the package

    if epochs < 1:
        raise NumcnnError(f"fit: epochs must be >= 1, got {epochs}")
    for name, value in (("clip_grad_norm", clip_grad_norm), ("clip_grad_value", clip_grad_value)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise NumcnnError(f"fit: {name} must be a positive number, got {value!r}")
    if isinstance(early_stopping, int) and not isinstance(early_stopping, bool):
        early_stopping = EarlyStopping(patience=early_stopping)
    optimizer = optimizer if optimizer is not None else optim.Adam(model.parameters(), lr=1e-3)
    criterion = loss if loss is not None else nn.CrossEntropyLoss()
    loader = _make_loader(train, batch_size, seed, transform)
    if early_stopping is not None and monitor not in (None, early_stopping.monitor):
        raise NumcnnError(f"fit: monitor {monitor!r} differs from the early-stopping monitor "
                          f"{early_stopping.monitor!r}")
    if monitor is None:
        monitor = (early_stopping.monitor if early_stopping is not None
                   else "val_loss" if validation is not None else "loss")
    if monitor not in ("loss", "accuracy", "val_loss", "val_accuracy"):
        raise NumcnnError(f"fit: monitor must be loss, accuracy, val_loss or val_accuracy, "
                          f"got {monitor!r}")
    if monitor.startswith("val_") and validation is None:
        raise NumcnnError(f"fit: monitor {monitor!r} needs validation data")
    run_dir = Path(run_dir) if run_dir is not None else None
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run_dir(run_dir)  # RunFolderBusy if another live process trains there
    try:
        return _fit(model, loader, validation, epochs, batch_size, optimizer, criterion,
                    scheduler, early_stopping, monitor, callbacks, run_dir, resume, metadata,
                    progress, print_fn, health,
                    _after_backward(model, clip_grad_norm, clip_grad_value),
                    _per_batch(scheduler), workers, ray_address, sync_batch_norm, seed)
    finally:
        if run_dir is not None:
            unlock_run_dir(run_dir)


def _fit(model, loader, validation, epochs, batch_size, optimizer, criterion, scheduler,
         early_stopping, monitor, callbacks, run_dir, resume, metadata, progress, print_fn,
         health, after_backward, batch_scheduler, workers, ray_address, sync_batch_norm, seed):
    best = _Best(monitor,
                 mode=early_stopping.mode if early_stopping is not None else "auto",
                 min_delta=early_stopping.min_delta if early_stopping is not None else 0.0)
    if progress is None:
        progress = sys.stderr.isatty()

    state = _TrainingState(model, optimizer, scheduler, loader, best, History())
    if resume is not None:
        state.restore_checkpoint(resume)
    history = state.history
    best_weights = _load_best_weights(run_dir, best)
    for callback in callbacks:
        callback.model, callback.optimizer, callback.history = model, optimizer, history
        callback.stop_training = False
        callback.on_train_begin({})

    cluster = None
    if workers is not None:
        if health not in (None, False) or after_backward is not None \
                or batch_scheduler is not None:
            raise ArgumentError("fit: workers cannot be combined with health, gradient clipping "
                                "or a schedule stepped every batch (OneCycleLR) yet; train in "
                                "one process for those")
        from .distributed import DataParallel

        cluster = DataParallel(workers, address=ray_address, seed=seed or 0,
                               sync_batch_norm=sync_batch_norm)
    if health is True:
        from .health import HealthMonitor

        health = HealthMonitor()
    if health is not None and health is not False:
        health.attach(model)
    else:
        health = None
    snapshot = state.snapshot()
    try:
        for epoch in range(state.epoch + 1, epochs + 1):
            if state.stopped:
                break
            for callback in callbacks:
                callback.on_epoch_begin(epoch, {})
            logs = _train_one_epoch(model, loader, criterion, optimizer, callbacks, epoch, epochs,
                                    progress, health, after_backward, batch_scheduler,
                                    cluster)
            if validation is not None:
                logs["val_loss"], logs["val_accuracy"] = _validate(model, validation, criterion,
                                                                   batch_size)
            logs["lr"] = optimizer.param_groups[0]["lr"]
            history.append(epoch, logs)
            if health is not None:
                history.health.append(health.end_epoch(epoch))
            _step_scheduler(scheduler, logs, monitor)

            if best.update(epoch, logs[monitor]):
                best_weights = model.state_dict()
                history.best_epoch = epoch
                if run_dir is not None:
                    _save_model(model, run_dir / MODEL_FILE, metadata, epoch, monitor, best.value)
            if early_stopping is not None and 0 < best.wait >= early_stopping.patience:
                history.stopped_epoch = epoch
                state.stopped = True
            stop_requested = any(callback.stop_training for callback in callbacks)
            if stop_requested:
                state.stopped = True
            state.epoch = epoch
            snapshot = state.snapshot()
            if run_dir is not None:
                state.write_checkpoint(run_dir / CHECKPOINT_FILE, snapshot)
                history.save(run_dir / HISTORY_FILE)
            if print_fn is not None:
                print_fn(_format_epoch(epoch, epochs, logs, monitor, best.epoch == epoch))
                if health is not None:
                    from .health import format_epoch

                    print_fn(format_epoch(history.health[-1]))
            for callback in callbacks:
                callback.on_epoch_end(epoch, dict(logs))
            if state.stopped:
                if print_fn is not None and history.stopped_epoch == epoch:
                    print_fn(f"early stopping: {monitor} has not improved for "
                             f"{count(early_stopping.patience, 'epoch')}; best epoch "
                             f"{best.epoch}")
                break
    except KeyboardInterrupt:
        state.restore(snapshot)
        path = None
        if run_dir is not None:
            path = run_dir / CHECKPOINT_FILE
            state.write_checkpoint(path, snapshot)
            history.save(run_dir / HISTORY_FILE)
        raise TrainingInterrupted(path, snapshot["epoch"], state.history) from None
    finally:
        if health is not None:
            health.detach()
        if cluster is not None:
            cluster.close()

    restore = early_stopping is not None and early_stopping.restore_best_weights
    if restore and best_weights is not None:
        model.load_state_dict(best_weights)
    if run_dir is not None and not (run_dir / MODEL_FILE).exists():
        _save_model(model, run_dir / MODEL_FILE, metadata, state.epoch, monitor, best.value)
    for callback in callbacks:
        callback.on_train_end({})
    return history


def _make_loader(train, batch_size, seed, transform):
    if isinstance(train, (tuple, list)) and len(train) == 2:
        from .data import DataLoader

        x, y = train
        if seed is None:
            seed = int(_random.get_rng().integers(2**31))
        return DataLoader(x, y, batch_size=batch_size, shuffle=True, drop_last=False, seed=seed,
                          transform=transform)
    if transform is not None:
        raise NumcnnError("fit: transform is for (x, y) arrays; a DataLoader takes its own")
    return train


def _after_backward(model, clip_grad_norm, clip_grad_value):
    """The gradient clipping to run between backward and the optimiser step, or None."""
    if clip_grad_norm is None and clip_grad_value is None:
        return None
    from .nn import utils

    def clip():
        if clip_grad_value is not None:
            utils.clip_grad_value_(model.parameters(), clip_grad_value)
        if clip_grad_norm is not None:
            utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
    return clip


def _per_batch(scheduler):
    """The scheduler if it is stepped after every batch (OneCycleLR), else None."""
    from .optim import lr_scheduler

    return scheduler if isinstance(scheduler, lr_scheduler.OneCycleLR) else None


def _train_one_epoch(model, loader, criterion, optimizer, callbacks, epoch, epochs, progress,
                     health=None, after_backward=None, batch_scheduler=None, cluster=None):
    """One pass over the training batches; returns loss, accuracy, seconds, images/s.

    With a ``cluster`` (:class:`numcnn.distributed.DataParallel`) the workers take the steps:
    they get the model, optimizer (learning rate included) and loss first, and the weights and
    optimizer state come back at the end."""
    model.train()
    if cluster is not None:
        cluster.push(model, optimizer, criterion)
    total = _length(loader)
    bar = None
    if progress:
        from tqdm.auto import tqdm  # imported only when a bar is shown

        bar = tqdm(total=total, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=True,
                   file=sys.stderr, dynamic_ncols=True)
    loss_sum, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    try:
        for batch, (xb, yb) in enumerate(loader):
            if cluster is not None:
                batch_loss, batch_correct = cluster.step(xb, yb)
            else:
                if health is not None:
                    health.before_forward()
                logits = model(xb)
                batch_loss = float(criterion(logits, yb))
            if not math.isfinite(batch_loss):
                if health is not None and health.guard:
                    health.nonfinite_loss(batch_loss, epoch, xb, yb, criterion)  # names the layer
                raise NumcnnError(f"the training loss became {batch_loss} at epoch {epoch}, "
                                  f"batch {batch + 1}; try a smaller learning rate")
            if cluster is None:
                optimizer.zero_grad()
                model.backward_params(criterion.backward())
                if health is not None:
                    health.after_backward(epoch, xb, yb, criterion)
                if after_backward is not None:
                    after_backward()
                optimizer.step()
                if health is not None:
                    health.after_step()
                if batch_scheduler is not None:
                    batch_scheduler.step()
                batch_correct = int(np.count_nonzero(logits.argmax(axis=1) == _labels(yb)))

            n = len(xb)
            loss_sum += batch_loss * n
            correct += batch_correct
            seen += n
            if bar is not None or callbacks:
                logs = {"loss": loss_sum / seen, "accuracy": correct / seen,
                        "images_per_s": seen / max(time.perf_counter() - start, 1e-9)}
                if bar is not None:
                    bar.update(1)
                    if batch % 10 == 0 or batch + 1 == total:
                        bar.set_postfix(loss=f"{logs['loss']:.4f}",
                                        acc=f"{100 * logs['accuracy']:.2f}%",
                                        img_s=f"{logs['images_per_s']:.0f}", refresh=False)
                for callback in callbacks:
                    callback.on_batch_end(batch, logs)
        if cluster is not None:
            cluster.pull(model, optimizer)
    finally:
        if bar is not None:
            bar.close()
    if seen == 0:
        raise NumcnnError("fit: the training loader gave no batches")
    seconds = time.perf_counter() - start
    return {"loss": loss_sum / seen, "accuracy": correct / seen, "seconds": seconds,
            "images_per_s": seen / max(seconds, 1e-9)}


def _validate(model, validation, criterion, batch_size):
    """Mean loss and accuracy over the validation data, in eval mode, without caches."""
    batches = (_batches(validation[0], validation[1], batch_size)
               if isinstance(validation, (tuple, list)) else validation)
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    try:
        with no_grad():
            for xb, yb in batches:
                logits = model(xb)
                loss_sum += float(criterion(logits, yb)) * len(xb)
                correct += int(np.count_nonzero(logits.argmax(axis=1) == _labels(yb)))
                seen += len(xb)
    finally:
        model.train(was_training)
    if seen == 0:
        raise NumcnnError("fit: the validation data is empty")
    return loss_sum / seen, correct / seen


def _step_scheduler(scheduler, logs, monitor):
    if scheduler is None or _per_batch(scheduler) is not None:
        return
    from .optim import lr_scheduler

    if isinstance(scheduler, lr_scheduler.ReduceLROnPlateau):
        scheduler.step(logs[monitor])
    else:
        scheduler.step()


def _format_epoch(epoch, epochs, logs, monitor, is_best):
    parts = [f"epoch {epoch}/{epochs}", f"loss {logs['loss']:.4f}",
             f"accuracy {100 * logs['accuracy']:.2f}%"]
    if "val_loss" in logs:
        parts += [f"val_loss {logs['val_loss']:.4f}",
                  f"val_accuracy {100 * logs['val_accuracy']:.2f}%"]
    parts += [f"lr {logs['lr']:.3g}", f"{logs['seconds']:.1f}s ({logs['images_per_s']:.0f} img/s)"]
    return "  ".join(parts) + (f"  * best {monitor}" if is_best else "")


def _save_model(model, path, metadata, epoch, monitor, value):
    from . import io

    info = dict(metadata or {})
    info.update(epoch=epoch, monitor=monitor, monitor_value=value)
    io.save(model, path, metadata=info)  # written atomically


def _load_best_weights(run_dir, best):
    """The best model's weights from an earlier run in ``run_dir`` (when resuming)."""
    if run_dir is None or best.epoch is None or not (run_dir / MODEL_FILE).exists():
        return None
    from . import io

    return io.load(run_dir / MODEL_FILE).state_dict()  # leaves numcnn's generator untouched


# ----------------------------------------------------------------------------------------------
# The whole training state: snapshots for Ctrl-C, checkpoints for resume
# ----------------------------------------------------------------------------------------------
class _TrainingState:
    """Model, optimiser, schedule, random generators, history and best value, saved together."""

    def __init__(self, model, optimizer, scheduler, loader, best, history):
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.loader, self.best, self.history = loader, best, history
        self.epoch = 0
        self.stopped = False

    # -- random generators ----------------------------------------------------------------------
    def _generators(self) -> list[np.random.Generator]:
        """Every generator the run draws from, in a fixed order: numcnn's (dropout), any a layer
        keeps, and those of a loader that has no state of its own (see ``_loader_state``)."""
        found, seen = [], set()

        def add(obj):
            for value in vars(obj).values() if hasattr(obj, "__dict__") else ():
                if isinstance(value, np.random.Generator) and id(value) not in seen:
                    seen.add(id(value))
                    found.append(value)

        seen.add(id(_random.get_rng()))
        found.append(_random.get_rng())
        for module in self.model.modules():
            add(module)
        if not hasattr(self.loader, "state_dict") and not hasattr(self.loader, "set_epoch"):
            add(self.loader)
        return found

    def _loader_state(self):
        """The loader's position: its ``state_dict()``, or the epoch of a
        :class:`numcnn.data.DataLoader`, which seeds each pass's order and augmentation with
        ``(seed, epoch)``."""
        if hasattr(self.loader, "state_dict"):
            return copy.deepcopy(self.loader.state_dict())
        if hasattr(self.loader, "set_epoch"):
            return {"epoch": int(self.loader.epoch)}
        return None

    def _restore_loader(self, state) -> None:
        if state is None:
            return
        if hasattr(self.loader, "load_state_dict"):
            self.loader.load_state_dict(copy.deepcopy(state))
        else:
            self.loader.set_epoch(state["epoch"])

    # -- in memory ------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Copies of everything, at the end of ``self.epoch``."""
        return {
            "epoch": self.epoch,
            "stopped": self.stopped,
            "model": self.model.state_dict(),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()) if self.scheduler else None,
            "rng": [copy.deepcopy(g.bit_generator.state) for g in self._generators()],
            "loader": self._loader_state(),
            "best": self.best.state_dict(),
            "history": self.history.to_dict(),
        }

    def restore(self, snapshot: dict) -> None:
        self.model.load_state_dict(snapshot["model"])
        self.optimizer.load_state_dict(copy.deepcopy(snapshot["optimizer"]))
        self._restore_extra(snapshot)

    def _restore_extra(self, extra: dict) -> None:
        self.epoch = int(extra["epoch"])
        self.stopped = bool(extra["stopped"])
        if self.scheduler is not None:
            if extra.get("scheduler") is None:
                raise NumcnnError("resume: the checkpoint was written without a learning-rate "
                                  "schedule, but this run has one")
            self.scheduler.load_state_dict(copy.deepcopy(extra["scheduler"]))
        generators = self._generators()
        if len(generators) != len(extra["rng"]):
            raise NumcnnError(f"resume: the checkpoint holds {len(extra['rng'])} random generator "
                              f"states, this run has {len(generators)}")
        for generator, rng_state in zip(generators, extra["rng"]):
            generator.bit_generator.state = copy.deepcopy(rng_state)
        self._restore_loader(extra.get("loader"))
        self.best.load_state_dict(extra["best"])
        restored = History.from_dict(extra["history"])
        self.history.__dict__.update(restored.__dict__)

    # -- on disk --------------------------------------------------------------------------------
    def write_checkpoint(self, path: Path, snapshot: dict) -> None:
        """Write the snapshot (which must be the model's and optimiser's current state)."""
        from . import io

        extra = {k: v for k, v in snapshot.items() if k not in ("model", "optimizer")}
        io.save_checkpoint(path, self.model, self.optimizer, extra)  # written atomically

    def restore_checkpoint(self, path) -> None:
        from . import io

        extra = io.load_checkpoint(path, model=self.model, optimizer=self.optimizer)["extra"]
        missing = [k for k in ("epoch", "rng", "best", "history", "stopped") if k not in extra]
        if missing:
            raise NumcnnError(f"resume: {path} is not a checkpoint written by numcnn.train.fit "
                              f"(missing {', '.join(missing)})")
        self._restore_extra(extra)


# ----------------------------------------------------------------------------------------------
# evaluate and predict
# ----------------------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """What :func:`evaluate` returns: loss, accuracy, per-class report and confusion matrix.

    ``confusion[i, j]`` counts images of true class ``i`` predicted as ``j``; ``report`` is
    :func:`numcnn.metrics.classification_report` (precision, recall, F1 and support per class).
    """

    loss: float
    accuracy: float
    y_true: np.ndarray
    y_pred: np.ndarray
    probabilities: np.ndarray
    classes: list
    confusion: np.ndarray
    report: object = field(repr=False)

    @property
    def n(self) -> int:
        return len(self.y_true)

    @property
    def misclassified(self) -> np.ndarray:
        """Indices of the wrongly classified images."""
        return np.flatnonzero(self.y_true != self.y_pred)

    def format(self) -> str:
        """A terminal table: accuracy, the per-class report and the confusion matrix."""
        from . import metrics

        correct = int(np.count_nonzero(self.y_true == self.y_pred))
        return "\n".join([
            f"accuracy {100 * self.accuracy:.2f}% ({correct}/{self.n})  loss {self.loss:.4f}", "",
            metrics.format_report(self.report), "",
            "confusion matrix (rows: true class, columns: predicted class)",
            metrics.format_confusion_matrix(self.confusion, self.classes),
        ])

    def to_dict(self) -> dict:
        return _jsonable({"n": self.n, "loss": self.loss, "accuracy": self.accuracy,
                          "classes": list(self.classes), "report": self.report,
                          "confusion_matrix": self.confusion})


def evaluate(model, x, y, *, batch_size: int = 256, loss=None, preprocessing=None,
             classes=None, compile: bool = True) -> Evaluation:
    """Loss, accuracy, per-class precision and recall, and the confusion matrix on ``(x, y)``.

    Args:
        model: the model (put in eval mode for the call, then back).
        x: images ``(N, C, H, W)``; y: class indices ``(N,)`` (or one-hot ``(N, K)``).
        batch_size: images per forward pass. Default: 256.
        loss: default ``numcnn.nn.CrossEntropyLoss()``.
        preprocessing: applied to each batch (a :class:`numcnn.data.Preprocessing`). Default: none.
        classes: class names. Default: ``0 .. K-1``.
        compile: run the batches through an inference plan (:func:`numcnn.inference.compile`:
            batch norm folded, layers fused, one C call per batch); False runs the layers one
            by one. The results agree to float32 rounding. Default: True.
    """
    from . import metrics, nn

    criterion = loss if loss is not None else nn.CrossEntropyLoss()
    y_true = _labels(np.asarray(y))
    if len(y_true) != len(x):
        raise NumcnnError(f"evaluate: expected one label per image, got "
                          f"{count(len(x), 'image')} and {count(len(y_true), 'label')}")
    if len(x) == 0:
        raise NumcnnError("evaluate: expected at least one image, got none (accuracy is "
                          "undefined)")
    logits = _logits(model, x, batch_size, preprocessing, compile)
    finite = np.isfinite(logits).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise NumcnnError(f"evaluate: expected finite logits, but the model gave NaN or inf for "
                          f"{len(bad)} of {count(len(x), 'image')} (the first: image "
                          f"{bad[0]}); check the images (NaN pixels?) and the weights")
    n_classes = logits.shape[1]
    classes = list(classes) if classes is not None else list(range(n_classes))
    loss_value = float(criterion(logits, y_true))
    y_pred = logits.argmax(axis=1)
    confusion = metrics.confusion_matrix(y_true, y_pred, n_classes)
    return Evaluation(loss=loss_value, accuracy=float(np.mean(y_pred == y_true)), y_true=y_true,
                      y_pred=y_pred, probabilities=softmax(logits), classes=classes,
                      confusion=confusion,
                      report=metrics.classification_report(confusion, classes))


def predict(model, x, *, batch_size: int = 256, preprocessing=None,
            compile: bool = True) -> np.ndarray:
    """Class probabilities ``(N, K)`` (softmax of the logits) for images ``x`` ``(N, C, H, W)``.

    ``compile`` (default True) runs the batches through an inference plan
    (:func:`numcnn.inference.compile`); False runs the layers one by one.
    """
    return softmax(_logits(model, x, batch_size, preprocessing, compile))


def softmax(logits: np.ndarray) -> np.ndarray:
    """``exp(z_k) / sum_j exp(z_j)`` along the last axis, computed stably (max subtracted)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def _logits(model, x, batch_size, preprocessing, compile=True):
    if batch_size < 1:
        raise NumcnnError(f"batch_size must be >= 1, got {batch_size}")
    was_training = model.training
    model.eval()
    outputs = []
    try:
        run, plan_shape = model, None
        with no_grad():
            for start in range(0, len(x), batch_size):
                xb = x[start:start + batch_size]
                if preprocessing is not None:
                    xb = preprocessing.apply(xb)
                if compile and np.ndim(xb) >= 2 and plan_shape != np.shape(xb)[1:]:
                    from . import inference  # one plan for every batch of these images

                    plan_shape = np.shape(xb)[1:]
                    run = inference.compile(model, plan_shape)
                outputs.append(run(xb))
    finally:
        model.train(was_training)
    if not outputs:  # no images: (0, K), K from the model's output shape (nothing runs)
        shape = model.output_shape((0, *np.shape(x)[1:]))
        return np.zeros(shape, dtype=np.float32)
    return np.concatenate(outputs)


# ----------------------------------------------------------------------------------------------
# small helpers
# ----------------------------------------------------------------------------------------------
def _labels(y: np.ndarray) -> np.ndarray:
    """Class indices from indices ``(N,)`` or one-hot / probabilities ``(N, K)``."""
    return y.argmax(axis=1) if y.ndim == 2 else y


def _batches(x, y, batch_size):
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


def _length(loader):
    try:
        return len(loader)
    except TypeError:
        return None


def _jsonable(value):
    """Numbers, strings, lists and dicts only (NumPy scalars and arrays converted)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def _write_json(path, data) -> None:
    from .io import atomic_write

    atomic_write(path, (json.dumps(_jsonable(data), indent=2) + "\n").encode("utf-8"))
