"""The ``numcnn`` command: train, evaluate, predict, summary, data.

    numcnn train                                   # convnet-bn on MNIST, sensible defaults
    numcnn train --model small-cnn --epochs 5 --augment
    numcnn evaluate runs/convnet-bn-20250101-120000/model.numcnn
    numcnn predict model.numcnn digit.png another.png
    numcnn summary convnet-bn
    numcnn data mnist

Exit codes: 0 success, 1 a runtime failure (bad data, unreadable model file, diverged training ...),
2 a usage error (unknown option, bad value), 130 interrupted with Ctrl-C (after ``train`` has saved
its checkpoint). Every error is one line on stderr: ``numcnn: error: ...``.

Only the standard library is imported at start-up; NumPy and the rest of numcnn are imported inside
the commands, so ``numcnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_MODEL = "convnet-bn"

# Settings of `numcnn train`, and the per-model defaults that reach the targets on MNIST
# (convnet-bn >= 99.0% test accuracy in 3 epochs, small-cnn >= 97.05% in 5).
TRAIN_DEFAULTS = {
    "model": DEFAULT_MODEL, "dataset": "mnist", "epochs": 5, "batch_size": 64, "lr": 1e-3,
    "optimizer": "adam", "momentum": 0.9, "weight_decay": 0.0, "scheduler": "cosine",
    "augment": False, "val_fraction": 0.1, "limit": None, "patience": None, "seed": 0,
}
MODEL_DEFAULTS = {
    "convnet-bn": {"epochs": 3},
    "small-cnn": {"epochs": 5},
    "lenet5": {"epochs": 5},
}
# What `--resume` lets you change; everything else comes from the run being resumed.
RESUME_OVERRIDES = ("epochs",)

CONFIG_FILE = "config.json"
LOG_FILE = "train.log"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
CONFUSION_FILE = "confusion_matrix.png"
MISCLASSIFIED_FILE = "misclassified.png"


class UsageError(Exception):
    """A command line that cannot be run as given (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors on one line: ``numcnn train: error: ... (see --help)``."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


# ----------------------------------------------------------------------------------------------
# The parser
# ----------------------------------------------------------------------------------------------
def _number(kind, accept, expected: str):
    """An argparse type: ``kind(text)``, refused with "expected <expected>, got <text>" when it
    does not parse or ``accept(value)`` is false."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text}")
        return value
    return parse


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_nonnegative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: 0 < v < float("inf"), "a positive number")
_nonnegative_float = _number(float, lambda v: 0 <= v < float("inf"), "a number >= 0")
_fraction = _number(float, lambda v: 0 <= v < 1, "a number in [0, 1)")


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"expected C,H,W (three positive integers, e.g. 1,28,28),"
                                         f" got {text!r}")
    return shape


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="numcnn",
        description="Train, evaluate and use convolutional neural networks written on NumPy.",
        epilog="Run 'numcnn COMMAND --help' for the options of a command. Exit codes: 0 success, "
               "1 runtime failure, 2 usage error, 130 interrupted (Ctrl-C).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    # -- train ----------------------------------------------------------------------------------
    train = commands.add_parser(
        "train", help="train a model and evaluate it on the test set",
        description="Train a model, keep the best epoch (lowest validation loss), evaluate it on "
                    "the test set and write everything to a run folder: model.numcnn, "
                    "checkpoint.ckpt, history.json, metrics.json, curves.png, "
                    "confusion_matrix.png, misclassified.png, config.json and train.log. With no "
                    "options: convnet-bn on MNIST for 3 epochs (Adam, lr 0.001 on a cosine "
                    "schedule, batch 64). Ctrl-C saves a checkpoint; --resume continues it "
                    "exactly.",
        epilog="Defaults per model: convnet-bn 3 epochs; small-cnn and lenet5 5 epochs; "
               "others 5 epochs.")
    add = train.add_argument
    add("--model", help=f"a preset (convnet-bn, small-cnn, lenet5) or a JSON model file "
                        f"(default: {DEFAULT_MODEL})")
    add("--dataset", help="'mnist', an .npz file (x_train, y_train, x_test, y_test), an IDX "
                          "folder or an image folder (default: mnist)")
    add("--data-dir", metavar="DIR", help="where MNIST is downloaded and cached "
                                          "(default: $NUMCNN_DATA or ~/.cache/numcnn)")
    add("--epochs", type=_positive_int, help="epochs to train (default: 3 for convnet-bn, 5 else)")
    add("--batch-size", type=_positive_int, help="images per step (default: 64)")
    add("--lr", type=_positive_float, help="learning rate (default: 0.001)")
    add("--optimizer", choices=("adam", "adamw", "sgd"), help="default: adam")
    add("--momentum", type=_nonnegative_float, help="SGD momentum (default: 0.9)")
    add("--weight-decay", type=_nonnegative_float, help="weight decay (default: 0)")
    add("--scheduler", choices=("none", "step", "cosine", "plateau"),
        help="learning-rate schedule, stepped once per epoch: cosine (from --lr down a half "
             "cosine that would reach 0 after the last epoch), step (x0.1 every third of the "
             "epochs), plateau (x0.1 when the validation loss stalls for 2 epochs), none "
             "(default: cosine)")
    add("--augment", action="store_true", default=None,
        help="random rotations (up to 10 degrees) and shifts (up to 2 pixels) of the training "
             "images")
    add("--val-fraction", type=_fraction, help="share of the training images held out for "
                                               "validation (default: 0.1; 0 for none)")
    add("--limit", type=_positive_int, metavar="N",
        help="train on the first N training images only (quick runs)")
    add("--patience", type=_positive_int, metavar="N",
        help="stop early when the validation loss has not improved for N epochs")
    add("--seed", type=_nonnegative_int, help="random seed (default: 0); the same seed gives the "
                                              "same numbers")
    add("--out", metavar="DIR", help="run folder (default: runs/<model>-<date>-<time>)")
    add("--resume", metavar="CHECKPOINT",
        help="continue an interrupted run from its checkpoint.ckpt (or its run folder), with its "
             "settings; only --epochs may be changed")
    add("-q", "--quiet", action="store_true", help="no progress bars, no per-epoch lines")
    train.set_defaults(func=cmd_train)

    # -- evaluate -------------------------------------------------------------------------------
    evaluate = commands.add_parser(
        "evaluate", help="accuracy, per-class report and confusion matrix of a model",
        description="Evaluate a model file on a test set: accuracy, per-class precision and "
                    "recall and the confusion matrix, printed as tables (and drawn as PNGs with "
                    "--out). The images are preprocessed as the model was trained.")
    evaluate.add_argument("model", metavar="MODEL", help="a model file (model.numcnn)")
    evaluate.add_argument("--dataset", help="default: the dataset the model was trained on, or "
                                            "mnist")
    evaluate.add_argument("--data-dir", metavar="DIR", help="where MNIST is cached")
    evaluate.add_argument("--split", choices=("test", "train"), default="test",
                          help="default: test")
    evaluate.add_argument("--limit", type=_positive_int, metavar="N",
                          help="evaluate the first N images only")
    evaluate.add_argument("--batch-size", type=_positive_int, default=256, help="default: 256")
    evaluate.add_argument("--out", metavar="DIR", help="also write metrics.json, "
                                                       "confusion_matrix.png, misclassified.png")
    evaluate.add_argument("-q", "--quiet", action="store_true",
                          help="print the accuracy line only")
    evaluate.add_argument("--no-plan", action="store_true",
                          help="run the layers one by one instead of a compiled inference plan "
                               "(docs/inference.md)")
    evaluate.set_defaults(func=cmd_evaluate)

    # -- predict --------------------------------------------------------------------------------
    predict = commands.add_parser(
        "predict", help="classify image files",
        description="Classify image files (PNG, JPEG, ...) with a model file: the class and its "
                    "probability, and the most likely classes. Each image is prepared as the "
                    "model's training images were (MNIST style: a light background is inverted, "
                    "the digit cropped, scaled and centred), then preprocessed as recorded in "
                    "the model file.")
    predict.add_argument("model", metavar="MODEL", help="a model file (model.numcnn)")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument("--top", type=_nonnegative_int, default=3, metavar="K",
                         help="show the K most likely classes (default: 3; 0 for all)")
    predict.add_argument("--json", action="store_true",
                         help="print JSON: class and every class probability per image")
    predict.add_argument("--no-plan", action="store_true",
                         help="run the layers one by one instead of a compiled inference plan "
                              "(docs/inference.md)")
    predict.set_defaults(func=cmd_predict)

    # -- summary --------------------------------------------------------------------------------
    summary = commands.add_parser(
        "summary", help="layers, output shapes and parameter counts of a model",
        description="Print a model's layers with their output shapes and parameter counts. "
                    "MODEL is a preset (convnet-bn, small-cnn, lenet5), a JSON model file or a "
                    "model file (.numcnn).")
    summary.add_argument("model", metavar="MODEL_OR_PRESET")
    summary.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                         help="shape of one input image (default: the model's, else 1,28,28)")
    summary.set_defaults(func=cmd_summary)

    # -- data -----------------------------------------------------------------------------------
    data = commands.add_parser(
        "data", help="download and cache MNIST, or inspect a dataset",
        description="'numcnn data mnist' downloads MNIST (checking its checksums) and caches it; "
                    "given an .npz file or a folder instead, it loads and describes it.")
    data.add_argument("dataset", metavar="DATASET", help="'mnist', an .npz file or a folder")
    data.add_argument("--data-dir", metavar="DIR", help="cache folder (default: $NUMCNN_DATA or "
                                                        "~/.cache/numcnn)")
    data.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    data.set_defaults(func=cmd_data)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("numcnn")
    except Exception:  # not installed: running from a source tree
        return "unknown"


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version (0) or a usage error (2, already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from ._memory import tune_malloc

    tune_malloc()  # reuse freed activation memory (numcnn._memory; NUMCNN_MALLOC_TUNING=0: off)
    try:
        return args.func(args)
    except UsageError as error:
        _error(f"numcnn {args.command}: error: {error} (see 'numcnn {args.command} --help')")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("numcnn: interrupted")
        return EXIT_INTERRUPTED
    except OSError as error:
        _error(f"numcnn: error: {_describe_os_error(error)}")
        return EXIT_FAILURE
    except Exception as error:
        from .errors import NumcnnError

        if not isinstance(error, NumcnnError):
            raise
        _error(f"numcnn: error: {error}")
        return EXIT_FAILURE


def _error(message: str) -> None:
    print(" ".join(str(message).split()), file=sys.stderr)  # one line, whatever the message


def _describe_os_error(error: OSError) -> str:
    if error.filename is not None and error.strerror:
        return f"{error.filename}: {error.strerror}"
    return str(error) or type(error).__name__


# ----------------------------------------------------------------------------------------------
# train
# ----------------------------------------------------------------------------------------------
def cmd_train(args) -> int:
    config, run_dir, resume = _train_setup(args)
    import numpy as np

    import numcnn
    from . import data, io, models, train

    say = _Log(run_dir / LOG_FILE, quiet=args.quiet)
    say.log_only(f"$ {_command_line()}")
    say.log_only(f"settings: {_dumps(config)}")
    if resume is not None:
        say(f"resuming {resume} (epochs: {config['epochs']})")

    numcnn.manual_seed(config["seed"])
    model = models.create(config["model"])
    dataset = _load_dataset(config["dataset"], args.data_dir, progress=not args.quiet)
    x_train, y_train = dataset.x_train, dataset.y_train
    if config["limit"] is not None:
        x_train, y_train = x_train[:config["limit"]], y_train[:config["limit"]]
    if config["val_fraction"] > 0:
        x_train, y_train, x_val, y_val = data.train_val_split(
            x_train, y_train, config["val_fraction"], seed=config["seed"])
    else:
        x_val = y_val = None
    preprocessing = data.Preprocessing.fit(x_train)
    _check_model_fits(model, x_train.shape[1:], len(dataset.classes), config["model"])

    optimizer = _make_optimizer(config, model.parameters())
    scheduler = _make_scheduler(config, optimizer)
    transform = preprocessing
    if config["augment"]:
        transform = data.Compose([data.Augment(), preprocessing])  # on the raw pixels, then scale
    loader = data.DataLoader(x_train, y_train, batch_size=config["batch_size"], shuffle=True,
                             drop_last=False, seed=config["seed"], transform=transform)
    validation = None if x_val is None else (preprocessing.apply(x_val), y_val)
    metadata = {"preprocessing": preprocessing.to_dict(), "classes": list(dataset.classes),
                "dataset": dataset.name, "input_shape": list(x_train.shape[1:]),
                "settings": config}
    _write_text(run_dir / CONFIG_FILE, _dumps(config, indent=2) + "\n")  # marks the folder a run
    say(f"{config['model']}: {model.num_parameters():,} parameters; {dataset.name}: "
        f"{len(x_train):,} training, {0 if x_val is None else len(x_val):,} validation, "
        f"{len(dataset.x_test):,} test images; run folder {run_dir}")
    try:
        history = train.fit(
            model, loader, validation, epochs=config["epochs"], batch_size=config["batch_size"],
            optimizer=optimizer, scheduler=scheduler,
            early_stopping=config["patience"], run_dir=run_dir, resume=resume,
            metadata=metadata, progress=False if args.quiet else None, print_fn=say)
    except train.TrainingInterrupted as stop:
        say.always(f"interrupted: checkpoint of epoch {stop.epoch} saved to {stop.checkpoint}")
        say.always(f"resume with: numcnn train --resume {stop.checkpoint}")
        return EXIT_INTERRUPTED
    _write_curves(history, run_dir / CURVES_FILE)

    best = io.load(run_dir / train.MODEL_FILE)
    result = train.evaluate(best, dataset.x_test, dataset.y_test, preprocessing=preprocessing,
                            classes=dataset.classes)
    _write_evaluation(result, dataset.x_test, run_dir, extra={
        "model": config["model"], "dataset": dataset.name, "best_epoch": history.best_epoch,
        "epochs": len(history), "stopped_epoch": history.stopped_epoch,
        "seconds_per_epoch": history.seconds, "images_per_s": history.images_per_s,
        "train_images": len(x_train), "val_images": 0 if x_val is None else len(x_val)})
    if not args.quiet:
        say("")
        say(result.format())
        say("")
    correct = int(np.count_nonzero(result.y_true == result.y_pred))
    say.always(f"test accuracy {100 * result.accuracy:.2f}% ({correct}/{result.n}) "
               f"of the best epoch ({history.best_epoch} of {len(history)})")
    say.always(f"run folder: {run_dir}")
    return EXIT_OK


def _train_setup(args):
    """The settings (defaults < model defaults < options, or the resumed run's), the run folder
    and the checkpoint to resume from."""
    import json
    from pathlib import Path

    given = {key: getattr(args, key) for key in TRAIN_DEFAULTS if getattr(args, key) is not None}
    if args.resume is not None:
        resume = Path(args.resume)
        if resume.is_dir():
            resume = resume / "checkpoint.ckpt"
        if not resume.is_file():
            raise UsageError(f"--resume: {resume}: no such checkpoint file")
        run_dir = resume.parent
        refused = sorted(set(given) - set(RESUME_OVERRIDES)) + ["out"] * (args.out is not None)
        if refused:
            names = ", ".join("--" + key.replace("_", "-") for key in refused)
            raise UsageError(f"--resume continues a run with its own settings; {names} cannot be "
                             f"changed (only --epochs can)")
        try:
            with open(run_dir / CONFIG_FILE, encoding="utf-8") as file:
                config = json.load(file)
        except FileNotFoundError:
            raise UsageError(f"--resume: {run_dir / CONFIG_FILE} is missing; resume needs the run "
                             f"folder that 'numcnn train' wrote") from None
        config.update(given)
    else:
        resume = None
        model = given.get("model", DEFAULT_MODEL)
        config = {**TRAIN_DEFAULTS, **MODEL_DEFAULTS.get(model, {}), **given}
        run_dir = Path(args.out) if args.out is not None else _new_run_dir(model)
        if run_dir.is_dir() and (run_dir / CONFIG_FILE).exists():
            raise UsageError(f"--out {run_dir} already holds a run; choose another folder or "
                             f"continue it with --resume {run_dir}")
        if run_dir.exists() and not run_dir.is_dir():
            raise UsageError(f"--out {run_dir} is a file, not a folder")
    for key in ("model", "dataset"):  # files by absolute path, so that --resume finds them
        if key in given and config[key] != "mnist" and os.path.exists(config[key]):
            config[key] = str(Path(config[key]).resolve())
    run_dir.mkdir(parents=True, exist_ok=True)
    return config, run_dir, resume


def _new_run_dir(model: str):
    import time
    from pathlib import Path

    name = Path(model).stem if model.endswith(".json") else model
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path("runs") / f"{name}-{stamp}"
    suffix = 2
    while run_dir.exists():
        run_dir = Path("runs") / f"{name}-{stamp}-{suffix}"
        suffix += 1
    return run_dir


def _check_model_fits(model, image_shape, num_classes, name):
    from .errors import NumcnnError, ShapeError

    try:
        out = model.output_shape((1, *image_shape))
    except ShapeError as error:
        raise NumcnnError(f"the model {name} does not take images of shape "
                          f"{tuple(image_shape)}: {error}") from None
    if tuple(out) != (1, num_classes):
        raise NumcnnError(f"the model {name} gives outputs of shape {tuple(out)} for one image, "
                          f"but the dataset has {num_classes} classes: its last layer must give "
                          f"{num_classes} logits")


def _make_optimizer(config, params):
    from . import optim

    name, lr, decay = config["optimizer"], config["lr"], config["weight_decay"]
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=config["momentum"], weight_decay=decay)
    if name == "adamw":
        return optim.AdamW(params, lr=lr, weight_decay=decay)
    return optim.Adam(params, lr=lr, weight_decay=decay)


def _make_scheduler(config, optimizer):
    from .optim import lr_scheduler

    name, epochs = config["scheduler"], config["epochs"]
    if name == "step":
        return lr_scheduler.StepLR(optimizer, step_size=max(1, epochs // 3), gamma=0.1)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    if name == "plateau":
        return lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=1)
    return None


class _Log:
    """Print to stdout (unless quiet) and append to the run's train.log."""

    def __init__(self, path, quiet: bool):
        self.path, self.quiet = path, quiet

    def log_only(self, line: str) -> None:
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(line + "\n")

    def always(self, line: str) -> None:
        print(line, flush=True)
        self.log_only(line)

    def __call__(self, line: str) -> None:
        if not self.quiet:
            print(line, flush=True)
        self.log_only(line)


def _command_line() -> str:
    import shlex

    return shlex.join(["numcnn", *sys.argv[1:]])


def _dumps(value, indent=None) -> str:
    import json

    return json.dumps(value, indent=indent)


def _write_text(path, text: str) -> None:
    from .io import atomic_write

    atomic_write(path, text.encode("utf-8"))


def _write_curves(history, path) -> None:
    from . import plots

    columns = {"epoch": history.epoch}
    columns.update({name: values for name, values in history.history.items()
                    if values and name != "lr"})
    plots.plot_history(columns, path, title="Learning curves")


def _write_evaluation(result, images, out_dir, extra=None) -> None:
    """metrics.json, confusion_matrix.png and misclassified.png in ``out_dir``."""
    from pathlib import Path

    from . import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / METRICS_FILE, _dumps({**(extra or {}), "test": result.to_dict()},
                                               indent=2) + "\n")
    plots.plot_confusion_matrix(result.confusion, [str(c) for c in result.classes],
                                out_dir / CONFUSION_FILE)
    wrong = result.misclassified
    plots.plot_misclassified(images[wrong], result.y_true[wrong], result.y_pred[wrong],
                             result.probabilities[wrong], out_dir / MISCLASSIFIED_FILE,
                             classes=[str(c) for c in result.classes])


def _load_dataset(spec, data_dir, progress: bool):
    from . import data

    return data.load_dataset(spec, data_dir=data_dir, progress=progress)


# ----------------------------------------------------------------------------------------------
# evaluate, predict, summary, data
# ----------------------------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from . import io, train

    model = io.load(args.model)
    metadata = getattr(model, "metadata", {}) or {}
    preprocessing = _preprocessing_of(model, args.model)
    spec = args.dataset or _dataset_spec(metadata)
    dataset = _load_dataset(spec, args.data_dir, progress=not args.quiet)
    x, y = ((dataset.x_test, dataset.y_test) if args.split == "test"
            else (dataset.x_train, dataset.y_train))
    if args.limit is not None:
        x, y = x[:args.limit], y[:args.limit]
    classes = metadata.get("classes") or list(dataset.classes)
    _check_model_fits(model, x.shape[1:], len(classes), args.model)
    result = train.evaluate(model, x, y, batch_size=args.batch_size,
                            preprocessing=preprocessing, classes=classes,
                            compile=not args.no_plan)
    if args.quiet:
        print(f"accuracy {100 * result.accuracy:.2f}%")
    else:
        print(f"{args.model} on the {args.split} split of {dataset.name} ({result.n:,} images)")
        print(result.format())
    if args.out is not None:
        _write_evaluation(result, x, args.out, extra={"model": args.model, "dataset": dataset.name,
                                                      "split": args.split})
        if not args.quiet:
            print(f"written: {os.path.join(args.out, METRICS_FILE)}, {CONFUSION_FILE}, "
                  f"{MISCLASSIFIED_FILE}")
    return EXIT_OK


def _dataset_spec(metadata: dict) -> str:
    settings = metadata.get("settings") if isinstance(metadata.get("settings"), dict) else {}
    name = settings.get("dataset") or metadata.get("dataset") or "mnist"
    return "mnist" if str(name).lower() == "mnist" else name


def _preprocessing_of(model, path):
    from .data import Preprocessing
    from .errors import NumcnnError

    recorded = (getattr(model, "metadata", {}) or {}).get("preprocessing")
    if recorded is None:
        raise NumcnnError(f"{path}: the model file records no preprocessing (it was not saved by "
                          f"'numcnn train'); save it with metadata={{'preprocessing': "
                          f"Preprocessing.to_dict()}}")
    return Preprocessing.from_dict(recorded)


def cmd_predict(args) -> int:
    import json

    import numpy as np

    from . import data, io, train

    model = io.load(args.model)
    metadata = getattr(model, "metadata", {}) or {}
    preprocessing = _preprocessing_of(model, args.model)
    images = np.concatenate([data.prepare_image(path, preprocessing) for path in args.images])
    probabilities = train.predict(model, images, compile=not args.no_plan)
    classes = metadata.get("classes") or list(range(probabilities.shape[1]))
    if len(classes) != probabilities.shape[1]:
        classes = list(range(probabilities.shape[1]))
    if args.json:
        rows = [{"image": path, "class": classes[int(p.argmax())],
                 "probability": float(p.max()),
                 "probabilities": {str(c): float(v) for c, v in zip(classes, p)}}
                for path, p in zip(args.images, probabilities)]
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    top = args.top or len(classes)
    width = max(len(path) for path in args.images)
    for path, p in zip(args.images, probabilities):
        order = np.argsort(-p, kind="stable")[:top]
        ranked = "  ".join(f"{classes[k]} {100 * p[k]:5.1f}%" for k in order)
        print(f"{path:<{width}}  {classes[order[0]]} ({100 * p[order[0]]:.1f}%)   [{ranked}]")
    return EXIT_OK


def cmd_summary(args) -> int:
    from . import io, models
    from .errors import NumcnnError

    name = args.model
    input_shape = args.input_shape
    if name in models.PRESETS:
        model = models.preset(name)
        print(f"{name}: {models.PRESETS[name]['description']}")
        input_shape = input_shape or tuple(models.PRESETS[name]["input_shape"])
    elif not os.path.exists(name):
        raise NumcnnError(f"{name!r} is neither a preset ({', '.join(models.PRESETS)}) nor a "
                          f"model file or JSON model description")
    elif _looks_like_json(name):
        model = models.load_spec(name)
    else:
        model = io.load(name)
        recorded = (getattr(model, "metadata", {}) or {}).get("input_shape")
        input_shape = input_shape or (tuple(recorded) if recorded else None)
    model.summary(input_shape or (1, 28, 28))
    return EXIT_OK


def _looks_like_json(path: str) -> bool:
    """A JSON model description (starts with '{' or '['), as opposed to a model file."""
    with open(path, "rb") as file:
        return file.read(64).lstrip()[:1] in (b"{", b"[")


def cmd_data(args) -> int:
    dataset = _load_dataset(args.dataset, args.data_dir, progress=not args.quiet)
    shape = "x".join(str(s) for s in dataset.x_train.shape[1:])
    where = ""
    if args.dataset == "mnist":
        from . import data

        where = f"; cached in {data.data_dir() if args.data_dir is None else args.data_dir}"
    print(f"{dataset.name}: {len(dataset.x_train):,} training and {len(dataset.x_test):,} test "
          f"images of {shape} ({dataset.x_train.dtype}), {len(dataset.classes)} classes{where}")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
