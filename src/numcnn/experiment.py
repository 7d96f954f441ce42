"""The experiment recipe behind ``numcnn train``, callable from Python.

>>> from numcnn.experiment import run_experiment
>>> result = run_experiment({"model": "small-cnn", "epochs": 1, "limit": 2000}, out="runs/demo")
>>> result.evaluation.accuracy, result.run_dir

One experiment is: the settings (defaults < the model's defaults < what is given, or the settings
of the run being resumed), the model built from a preset or a JSON file and seeded, the dataset
loaded, the validation split, the preprocessing fitted on the training images, the optimiser and
schedule, :func:`numcnn.train.fit` with a checkpoint every epoch, then the best model evaluated on
the test set. The run folder receives ``config.json``, ``train.log``, ``model.numcnn``,
``checkpoint.ckpt``, ``history.json``, ``metrics.json``, ``curves.png``,
``confusion_matrix.png`` and ``misclassified.png``.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ._text import count
from .errors import NumcnnError

__all__ = ["run_experiment", "prepare_run", "ExperimentResult", "SettingsError", "NothingToTrain",
           "TRAIN_DEFAULTS", "MODEL_DEFAULTS", "RESUME_OVERRIDES", "DEFAULT_MODEL",
           "write_evaluation", "check_model_fits", "make_optimizer", "make_scheduler", "augmentation",
           "RunLog"]

DEFAULT_MODEL = "convnet-bn"

# Settings of `numcnn train`, and the per-model defaults that reach the targets on MNIST
# (convnet-bn >= 99.0% test accuracy in 3 epochs, small-cnn >= 97.05% in 5).
TRAIN_DEFAULTS = {
    "model": DEFAULT_MODEL, "dataset": "mnist", "epochs": 5, "batch_size": 64, "lr": 1e-3,
    "optimizer": "adam", "momentum": None, "weight_decay": 0.0, "scheduler": "cosine",
    "augment": False, "val_fraction": 0.1, "limit": None, "patience": None, "seed": 0,
    "clip_grad_norm": None, "clip_grad_value": None, "workers": None, "sync_batch_norm": None,
}
MODEL_DEFAULTS = {
    "convnet-bn": {"epochs": 3},
    "small-cnn": {"epochs": 5},
    "lenet5": {"epochs": 5},
}
# What resuming lets you change; everything else comes from the run being resumed.
RESUME_OVERRIDES = ("epochs", "workers")

CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.png"
HEALTH_FILE = "health.png"
FILTERS_FILE = "filters.png"
SAMPLE_PREFIX = "sample_"            # sample_feature_maps_<layer>.png, sample_saliency.png
REPORT_FILE = "report.html"


class NothingToTrain(NumcnnError):
    """A resumed run that already has the epochs asked for (or stopped early): nothing was
    trained and nothing written. ``epochs_done`` is the run's epoch count. ``numcnn train``
    prints the message and exits with 0."""

    def __init__(self, message: str, epochs_done: int):
        super().__init__(message)
        self.epochs_done = epochs_done


class SettingsError(NumcnnError, ValueError):
    """Settings that cannot be run as given: an unknown key, a resume that changes the run's
    settings, an output folder that already holds a run (``numcnn train`` exits with 2)."""


@dataclass
class ExperimentResult:
    """What :func:`run_experiment` returns.

    Attributes: ``run_dir`` (the run folder), ``config`` (the settings used), ``history`` (the
    :class:`numcnn.train.History`), ``evaluation`` (the best model's
    :class:`numcnn.train.Evaluation` on the test set), ``model`` (the best model), ``dataset``
    and ``preprocessing``.
    """

    run_dir: Path
    config: dict
    history: object
    evaluation: object
    model: object
    dataset: object
    preprocessing: object


class RunLog:
    """Print to stdout (unless quiet) and append to the run's ``train.log``."""

    def __init__(self, path, quiet: bool = False, print_fn=print):
        self.path, self.quiet, self.print_fn = path, quiet, print_fn

    def log_only(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    def always(self, line: str) -> None:
        if self.print_fn is not None:
            self.print_fn(line)
        self.log_only(line)

    def __call__(self, line: str) -> None:
        if not self.quiet and self.print_fn is not None:
            self.print_fn(line)
        self.log_only(line)


def _print_flush(line: str) -> None:
    print(line, flush=True)


# ----------------------------------------------------------------------------------------------
# Settings and the run folder
# ----------------------------------------------------------------------------------------------
def prepare_run(settings: dict | None = None, out=None, resume=None, print_fn=print):
    """The settings, the run folder (created) and the checkpoint to resume from.

    Args:
        settings: any of the keys of :data:`TRAIN_DEFAULTS`; those left out (or ``None``) take
            the model's default (:data:`MODEL_DEFAULTS`), else the general default.
        out: the run folder. Default: ``runs/<model>-<date>-<time>``.
        resume: a ``checkpoint.ckpt`` (or the run folder holding it): the run's own settings are
            read from its ``config.json``; only ``epochs`` may be given. A run folder whose
            run stopped before its first checkpoint starts again from scratch (said through
            ``print_fn``).
        print_fn: where that notice goes. Default: ``print``.

    Returns:
        ``(config, run_dir, checkpoint)``; ``checkpoint`` is ``None`` for a new run.

    The run folder is locked for this process (:func:`numcnn.train.lock_run_dir`): a second
    process training in it is refused with one line naming the first. The lock is held on
    return (release it with :func:`numcnn.train.unlock_run_dir`, as :func:`run_experiment`
    does) and released when this raises.

    Raises:
        SettingsError: an unknown setting, a resume that changes the run's settings or has no
            checkpoint, an ``out`` that already holds a run or is a file.
        UnknownNameError: a ``model`` or ``dataset`` that is neither a known name nor a path
            (:class:`numcnn.models.UnknownModelError`,
            :class:`numcnn.data.dataset.UnknownDatasetError`); a path that does not exist is a
            ``SpecError`` or ``DataError``.
    """
    config, run_dir, resume, _ = _prepare_run(settings, out, resume, print_fn)
    return config, run_dir, resume


@dataclass(frozen=True)
class _FolderBefore:
    """A run folder as it was before this run touched it: the folders the run is to make (the
    run folder and missing parents such as ``runs/``, deepest first) and what the folder held,
    so that a run that fails removes only what it made itself."""

    made: tuple
    names: frozenset

    @classmethod
    def of(cls, run_dir: Path) -> "_FolderBefore":
        missing, folder = [], Path(os.path.abspath(run_dir))
        while not folder.exists() and folder.parent != folder:
            missing.append(folder)
            folder = folder.parent
        names = frozenset(os.listdir(run_dir)) if not missing and run_dir.is_dir() else frozenset()
        return cls(made=tuple(missing), names=names)


def _prepare_run(settings, out, resume, print_fn):
    """:func:`prepare_run`, and the folder as it was before (a :class:`_FolderBefore`). The lock
    is released again when this raises."""
    from .train import lock_run_dir

    given = {key: value for key, value in (settings or {}).items() if value is not None}
    unknown = sorted(set(given) - set(TRAIN_DEFAULTS))
    if unknown:
        raise SettingsError(f"unknown {'setting' if len(unknown) == 1 else 'settings'} "
                            f"{', '.join(unknown)}; expected some of "
                            f"{', '.join(TRAIN_DEFAULTS)}")
    if resume is not None:
        resume = Path(resume)
        if resume.is_dir():
            resume = resume / "checkpoint.ckpt"
        run_dir, config = resume.parent, None
        before = _FolderBefore.of(run_dir)
        if run_dir.is_dir():
            lock_run_dir(run_dir)  # one line naming the other process if one trains there
    else:
        model = given.get("model", DEFAULT_MODEL)
        config = {**TRAIN_DEFAULTS, **MODEL_DEFAULTS.get(model, {}), **given}
        _check_names(config)  # before any folder is made
        run_dir = Path(out) if out is not None else _new_run_dir(model)
        if run_dir.exists() and not run_dir.is_dir():
            raise SettingsError(f"--out {run_dir} is a file, not a folder")
        before = _FolderBefore.of(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        lock_run_dir(run_dir)  # held until the process ends; refused if a live run holds it
    try:
        config = _settings_of_run(given, config, run_dir, resume, out, print_fn)
    except BaseException:
        _unlock(run_dir)
        raise
    if resume is not None and not resume.is_file():
        resume = None  # stopped before its first checkpoint: starts again from scratch
    return config, run_dir, resume, before


def _settings_of_run(given, config, run_dir, resume, out, print_fn) -> dict:
    """The settings: ``config`` for a new run (``resume`` None), else those of the run being
    resumed with ``given`` applied."""
    if resume is None:
        if (run_dir / CONFIG_FILE).exists() and (run_dir / "checkpoint.ckpt").exists():
            raise SettingsError(f"--out {run_dir} already holds a run; choose another folder or "
                                f"continue it with --resume {run_dir}")
        # a config without a checkpoint: a run stopped before its first epoch ended; the
        # folder is reused in place
    else:
        if not resume.is_file():
            if not (run_dir / CONFIG_FILE).is_file():
                raise SettingsError(f"--resume: {resume}: no such checkpoint file")
            # the run was stopped before its first checkpoint: it starts again, from scratch
            print_fn(f"{run_dir}: no checkpoint yet (the run was stopped before its first epoch "
                     f"ended): starting it again from scratch with its settings")
        refused = sorted(set(given) - set(RESUME_OVERRIDES)) + ["out"] * (out is not None)
        if refused:
            names = ", ".join("--" + key.replace("_", "-") for key in refused)
            raise SettingsError(f"--resume continues a run with its own settings; {names} cannot "
                                f"be changed (only --epochs and --workers can)")
        try:
            with open(run_dir / CONFIG_FILE, encoding="utf-8") as file:
                config = json.load(file)
        except FileNotFoundError:
            raise SettingsError(f"--resume: {run_dir / CONFIG_FILE} is missing; resume needs the "
                                f"run folder that 'numcnn train' wrote") from None
        config.update(given)
    for key in ("model", "dataset"):  # files by absolute path, so that resume finds them
        if key in given and config[key] != "mnist" and os.path.exists(config[key]):
            config[key] = str(Path(config[key]).resolve())
    return config


def _check_epochs_left(checkpoint: Path, epochs: int) -> None:
    """Raise :class:`NothingToTrain` when the checkpoint's run has ``epochs`` epochs already (or
    stopped early), saying how to train more."""
    from . import io

    state = io.read_header(checkpoint).get("checkpoint")
    if not isinstance(state, dict) or not isinstance(state.get("extra"), dict):
        return  # not a checkpoint: resuming it says so (io.load_checkpoint)
    extra = state["extra"]
    done, stopped = int(extra.get("epoch", 0)), bool(extra.get("stopped", False))
    if stopped:
        raise NothingToTrain(f"nothing to train: the run stopped early after epoch {done} (its "
                             f"validation loss no longer improved; --patience); its model is "
                             f"{checkpoint.parent / 'model.numcnn'}. To train longer, start a "
                             f"new run with a larger --patience", done)
    if epochs <= done:
        raise NothingToTrain(f"nothing to train: the run already has {count(done, 'epoch')} "
                             f"(--epochs {epochs}); to train more: numcnn train --resume "
                             f"{checkpoint} --epochs {done + 1} (or more)", done)


def _unlock(run_dir: Path) -> None:
    from .train import unlock_run_dir

    unlock_run_dir(run_dir)


def _discard_unfinished(run_dir: Path, before: _FolderBefore) -> None:
    """After a run that failed before its first checkpoint: remove the files it wrote itself
    (``config.json``, ``train.log``, ``run.lock``, leftover temporary files) and then the
    folders the run made (the run folder, ``runs/``) that are empty. A folder holding a
    checkpoint or a model file is left as it is; no file the run did not write (the user's, an
    earlier attempt's) is touched. Called with the folder's lock held, so that no other process
    takes the folder meanwhile."""
    from .train import CHECKPOINT_FILE, LOCK_FILE, MODEL_FILE

    if (run_dir / CHECKPOINT_FILE).exists() or (run_dir / MODEL_FILE).exists():
        return
    early = (CONFIG_FILE, LOG_FILE, LOCK_FILE)  # what a run writes before its first checkpoint
    for name in os.listdir(run_dir):
        ours = name in early or (name.startswith(".") and name.endswith(".tmp"))
        if ours and name not in before.names:
            try:
                os.unlink(run_dir / name)
            except OSError:
                pass
    for folder in before.made:  # deepest first, each only if empty: never a tree
        try:
            folder.rmdir()
        except OSError:
            break


def _check_names(config: dict) -> None:
    """Refuse a model or dataset that is neither a known name nor an existing path
    (:class:`~numcnn.errors.UnknownNameError` for a name, a usage error)."""
    from . import models
    from .data.dataset import check_spec

    models.check_name(config["model"])
    check_spec(config["dataset"])


def _new_run_dir(model: str) -> Path:
    name = Path(model).stem if str(model).endswith(".json") else str(model)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path("runs") / f"{name}-{stamp}"
    suffix = 2
    while run_dir.exists():
        run_dir = Path("runs") / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return run_dir


# ----------------------------------------------------------------------------------------------
# The recipe
# ----------------------------------------------------------------------------------------------
def run_experiment(settings: dict | None = None, *, out=None, resume=None, data_dir=None,
                   quiet: bool = False, progress: bool | None = None, print_fn=_print_flush,
                   command_line: str | None = None, health: bool = True,
                   pictures: bool = True, ray_address: str | None = None) -> ExperimentResult:
    """Train, keep the best epoch, evaluate it on the test set and write the run folder.

    Args:
        settings: see :func:`prepare_run` (keys of :data:`TRAIN_DEFAULTS`).
        out: the run folder. Default: ``runs/<model>-<date>-<time>``.
        resume: a checkpoint (or run folder) of an interrupted run to continue exactly.
        data_dir: where MNIST is cached. Default: ``$NUMCNN_DATA`` or ``~/.cache/numcnn``.
        quiet: print only the result lines (everything still goes to ``train.log``).
        progress: a progress bar per epoch. Default: when not quiet and stderr is a terminal.
        print_fn: prints one line; ``None`` prints nothing.
        command_line: recorded at the top of ``train.log``. Default: ``sys.argv``.
        health: watch the training's health (:mod:`numcnn.health`): per-layer statistics in
            ``history.json``, ``health.png``, one line per epoch, and the NaN/Inf guard that
            names the layer. Default: True.
        pictures: write ``filters.png``, the feature maps and saliency of the first test image
            (``sample_*.png``, :mod:`numcnn.visualize`) and ``report.html``. Default: True.
        ray_address: the Ray cluster for the setting ``workers`` (data-parallel training on Ray
            actors, :mod:`numcnn.distributed`); default: a local Ray.

    Returns:
        An :class:`ExperimentResult`.

    Raises:
        SettingsError: settings that cannot be run (see :func:`prepare_run`).
        NumcnnError: a dataset that cannot be loaded, a model that does not fit it, a loss that
            became NaN.
        numcnn.train.TrainingInterrupted: after Ctrl-C, once the checkpoint is written.
        NothingToTrain: ``resume`` of a run that already has ``epochs`` epochs or stopped
            early (nothing is written).

    The run folder's lock is released however this ends. A run that fails before its first
    checkpoint (bad data, a model that does not fit, an error in the first epoch, Ctrl-C before
    training starts) removes the files it wrote (``config.json``, ``train.log``, ``run.lock``)
    and the folder if it made it and nothing else is there; a folder with a checkpoint or a
    model file, and any file the run did not write, is kept.
    """
    config, run_dir, resume, before = _prepare_run(settings, out, resume,
                                                   print_fn or (lambda line: None))
    try:
        return _train_and_evaluate(config, run_dir, resume, data_dir, quiet, progress, print_fn,
                                   command_line, health, pictures, ray_address)
    except BaseException:  # an error, Ctrl-C: no folder without a checkpoint is left behind
        _discard_unfinished(run_dir, before)
        raise
    finally:
        _unlock(run_dir)


def _train_and_evaluate(config, run_dir, resume, data_dir, quiet, progress, print_fn,
                        command_line, health, pictures, ray_address) -> ExperimentResult:
    """:func:`run_experiment` in the run folder ``run_dir``, locked by the caller."""
    import numpy as np

    import numcnn

    from . import data, io, models, train

    if resume is not None:
        _check_epochs_left(resume, config["epochs"])
    say = RunLog(run_dir / LOG_FILE, quiet=quiet, print_fn=print_fn)
    say.log_only(f"$ {command_line or shlex.join(['python', *sys.argv])}")
    say.log_only(f"settings: {json.dumps(config)}")
    if resume is not None:
        say(f"resuming {resume} (epochs: {config['epochs']})")

    numcnn.manual_seed(config["seed"])
    model = models.create(config["model"])
    dataset = _load_dataset(config["dataset"], data_dir, progress=not quiet)
    x_train, y_train = dataset.x_train, dataset.y_train
    if config["limit"] is not None:
        x_train, y_train = x_train[:config["limit"]], y_train[:config["limit"]]
    if config["val_fraction"] > 0:
        x_train, y_train, x_val, y_val = data.train_val_split(
            x_train, y_train, config["val_fraction"], seed=config["seed"])
    else:
        x_val = y_val = None
    preprocessing = data.Preprocessing.fit(x_train)
    check_model_fits(model, x_train.shape[1:], len(dataset.classes), config["model"])

    optimizer = make_optimizer(config, model.parameters())
    steps_per_epoch = -(-len(x_train) // config["batch_size"])
    scheduler = make_scheduler(config, optimizer, steps_per_epoch)
    transform = preprocessing
    if config["augment"]:  # on the raw pixels, then scale
        transform = data.Compose([*augmentation(x_train.shape[1:]), preprocessing])
    loader = data.DataLoader(x_train, y_train, batch_size=config["batch_size"], shuffle=True,
                             drop_last=False, seed=config["seed"], transform=transform)
    validation = None if x_val is None else (preprocessing.apply(x_val), y_val)
    metadata = {"preprocessing": preprocessing.to_dict(), "classes": list(dataset.classes),
                "dataset": dataset.name, "input_shape": list(x_train.shape[1:]),
                "settings": config}
    _write_text(run_dir / CONFIG_FILE, json.dumps(config, indent=2) + "\n")  # marks a run
    say(f"{config['model']}: {count(model.num_parameters(), 'parameter', thousands=True)}; "
        f"{dataset.name}: "
        f"{len(x_train):,} training, {0 if x_val is None else len(x_val):,} validation, "
        f"{len(dataset.x_test):,} test images; run folder {run_dir}")
    try:
        history = train.fit(
            model, loader, validation, epochs=config["epochs"], batch_size=config["batch_size"],
            optimizer=optimizer, scheduler=scheduler,
            early_stopping=config["patience"], run_dir=run_dir, resume=resume,
            metadata=metadata, progress=False if quiet else progress, print_fn=say,
            health=(health or None) if not config.get("workers") else None,
            clip_grad_norm=config.get("clip_grad_norm"),
            clip_grad_value=config.get("clip_grad_value"), workers=config.get("workers"),
            ray_address=ray_address, sync_batch_norm=bool(config.get("sync_batch_norm")))
    except train.TrainingInterrupted as stop:
        say.log_only(f"interrupted: checkpoint of epoch {stop.epoch} saved to {stop.checkpoint}")
        raise
    write_curves(history, run_dir / CURVES_FILE)

    best = io.load(run_dir / train.MODEL_FILE)
    result = train.evaluate(best, dataset.x_test, dataset.y_test, preprocessing=preprocessing,
                            classes=dataset.classes)
    write_evaluation(result, dataset.x_test, run_dir, extra={
        "model": config["model"], "dataset": dataset.name, "best_epoch": history.best_epoch,
        "epochs": len(history), "stopped_epoch": history.stopped_epoch,
        "seconds_per_epoch": history.seconds, "images_per_s": history.images_per_s,
        "train_images": len(x_train), "val_images": 0 if x_val is None else len(x_val)})
    if health and history.health:
        from .health import plot_health

        plot_health(history.health, run_dir / HEALTH_FILE)
    if pictures:
        from .report import write_report

        write_pictures(best, dataset, preprocessing, run_dir)
        write_report(run_dir, model=best)
    if not quiet:
        say("")
        say(result.format())
        say("")
    correct = int(np.count_nonzero(result.y_true == result.y_pred))
    say.always(f"test accuracy {100 * result.accuracy:.2f}% ({correct}/{result.n}) "
               f"of the best epoch ({history.best_epoch} of {len(history)})")
    say.always(f"run folder: {run_dir}")
    return ExperimentResult(run_dir=run_dir, config=config, history=history, evaluation=result,
                            model=best, dataset=dataset, preprocessing=preprocessing)


# ----------------------------------------------------------------------------------------------
# Pieces of the recipe
# ----------------------------------------------------------------------------------------------
def write_pictures(model, dataset, preprocessing, run_dir) -> dict:
    """``filters.png`` and, for the first test image, ``sample_feature_maps_<layer>.png`` and
    ``sample_saliency.png`` (a model without convolutions gets none); returns what was written."""
    from . import visualize

    try:
        visualize.first_conv(model)
    except NumcnnError:
        return {}
    image = preprocessing.apply(dataset.x_test[:1])
    written = visualize.show(model, image, run_dir, classes=list(dataset.classes),
                             prefix=SAMPLE_PREFIX)
    filters = written.pop("filters")
    os.replace(filters, Path(run_dir) / FILTERS_FILE)
    written["filters"] = str(Path(run_dir) / FILTERS_FILE)
    return written


def check_model_fits(model, image_shape, num_classes: int, name) -> None:
    """Raise NumcnnError unless ``model`` takes images of ``image_shape`` (C, H, W) and gives
    ``num_classes`` logits per image."""
    from .errors import ShapeError

    try:
        out = model.output_shape((1, *image_shape))
    except ShapeError as error:
        raise NumcnnError(f"the model {name} does not take images of shape "
                          f"{tuple(image_shape)}: {error}") from None
    if tuple(out) != (1, num_classes):
        raise NumcnnError(f"the model {name} gives outputs of shape {tuple(out)} for one image, "
                          f"but the dataset has {count(num_classes, 'class')}: its last layer "
                          f"must give {count(num_classes, 'logit')}")


def augmentation(image_shape) -> list:
    """The augmentation for images of ``image_shape`` (C, H, W). Gray images (digits): small
    rotations and shifts. Colour photographs: CIFAR's random crop after padding by an eighth of
    the side (4 pixels at 32) and horizontal flip."""
    from . import data

    channels, height, width = image_shape
    if channels == 3:
        return [data.RandomCrop((height, width), padding=max(1, min(height, width) // 8)),
                data.RandomHorizontalFlip()]
    return [data.Augment()]


def make_optimizer(config: dict, params):
    """``Adam``, ``AdamW``, ``SGD`` (momentum 0.9 unless given), ``RMSprop`` (momentum 0 unless
    given) or ``Adagrad`` from the settings ``optimizer``, ``lr``, ``momentum`` and
    ``weight_decay``."""
    from . import optim

    name, lr, decay = config["optimizer"], config["lr"], config["weight_decay"]
    momentum = config.get("momentum")
    if momentum is not None and name not in ("sgd", "rmsprop"):
        raise SettingsError(f"momentum: only sgd and rmsprop take a momentum, but the optimizer "
                            f"is {name} (leave --momentum out, or choose --optimizer sgd)")
    if name == "sgd":
        momentum = 0.9 if momentum is None else momentum
        return optim.SGD(params, lr=lr, momentum=momentum, weight_decay=decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=decay)
    if name == "rmsprop":
        momentum = 0.0 if momentum is None else momentum
        return optim.RMSprop(params, lr=lr, momentum=momentum, weight_decay=decay)
    if name == "adagrad":
        return optim.Adagrad(params, lr=lr, weight_decay=decay)
    if name != "adam":
        raise SettingsError(f"optimizer: expected adam, adamw, sgd, rmsprop or adagrad, got "
                            f"{name!r}")
    return optim.Adam(params, lr=lr, weight_decay=decay)


def make_scheduler(config: dict, optimizer, steps_per_epoch: int = 1):
    """The schedule named by the setting ``scheduler``, or ``None``: stepped once per epoch,
    except ``onecycle``, stepped after every batch (``steps_per_epoch`` of them).

    ``warmup-cosine`` is a linear warm-up from ``lr/10`` over the first tenth of the epochs (at
    least one), then cosine; cosine alone for a single epoch.
    """
    from .optim import lr_scheduler

    name, epochs = config["scheduler"], config["epochs"]
    if name == "warmup-cosine":
        warmup = max(1, epochs // 10)
        if epochs <= warmup:  # one epoch: no room for a warm-up
            return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return lr_scheduler.SequentialLR(optimizer, [
            lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=warmup),
            lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - warmup)],
            milestones=[warmup])
    if name == "onecycle":
        return lr_scheduler.OneCycleLR(optimizer, max_lr=config["lr"],
                                       total_steps=epochs * steps_per_epoch,
                                       cycle_momentum="betas" in optimizer.defaults
                                       or "momentum" in optimizer.defaults)
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=1)
    if name not in (None, "none"):
        raise SettingsError(f"scheduler: expected none, step, cosine, plateau, warmup-cosine or "
                            f"onecycle, got {name!r}")
    return None


def write_curves(history, path) -> None:
    """The learning curves (every metric but the learning rate, per epoch) as a PNG."""
    from . import plots

    columns = {"epoch": history.epoch}
    columns.update({name: values for name, values in history.history.items()
                    if values and name != "lr"})
    plots.plot_history(columns, path, title="Learning curves")


def write_evaluation(result, images, out_dir, extra=None) -> None:
    """``metrics.json``, ``confusion_matrix.png`` and ``misclassified.png`` in ``out_dir``."""
    from . import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / METRICS_FILE,
                json.dumps({**(extra or {}), "test": result.to_dict()}, indent=2) + "\n")
    plots.plot_confusion_matrix(result.confusion, [str(c) for c in result.classes],
                                out_dir / CONFUSION_FILE)
    wrong = result.misclassified
    plots.plot_misclassified(images[wrong], result.y_true[wrong], result.y_pred[wrong],
                             result.probabilities[wrong], out_dir / MISCLASSIFIED_FILE,
                             classes=[str(c) for c in result.classes])


def _load_dataset(spec, data_dir, progress: bool):
    from . import data

    return data.load_dataset(spec, data_dir=data_dir, progress=progress)


def _write_text(path, text: str) -> None:
    from .io import atomic_write

    atomic_write(path, text.encode("utf-8"))
