"""The ``numcnn`` command: train, evaluate, predict, summary, data, explain, check, show, demo.

    numcnn train                                   # convnet-bn on MNIST, sensible defaults
    numcnn train --model small-cnn --epochs 5 --augment
    numcnn evaluate runs/convnet-bn-20250101-120000/model.numcnn
    numcnn predict model.numcnn digit.png another.png
    numcnn summary convnet-bn
    numcnn data mnist
    numcnn explain convnet-bn --batch 64              # formulas, FLOPs, memory per layer
    numcnn check my_layers.py:MyConv --torch          # gradients against central differences
    numcnn show model.numcnn digit.png                # filters, feature maps, saliency
    numcnn demo kernels                               # correlation beside convolution

Exit codes: 0 success, 1 a runtime failure (bad data, unreadable model file, diverged training ...),
2 a usage error (unknown option, bad value, unknown preset or dataset name), 130 interrupted with
Ctrl-C (after ``train`` has saved its checkpoint). Every error is one line on stderr:
``numcnn: error: ...``.

Only the standard library is imported at start-up; NumPy and the rest of numcnn are imported inside
the commands, so ``numcnn --help`` answers at once.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

DEFAULT_MODEL = "convnet-bn"

# Settings of `numcnn train`; the defaults live in numcnn.experiment (TRAIN_DEFAULTS,
# MODEL_DEFAULTS), written here again only for --help, which imports nothing heavy.
TRAIN_DEFAULTS = ("model", "dataset", "epochs", "batch_size", "lr", "optimizer", "momentum",
                  "weight_decay", "scheduler", "augment", "val_fraction", "limit", "patience",
                  "seed", "clip_grad_norm", "clip_grad_value", "workers",
                  "sync_batch_norm")

METRICS_FILE = "metrics.json"
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


def _nonempty(what: str):
    """An argparse type: any non-empty text (``--out ""`` would mean the current folder)."""
    def check(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got an empty value")
        return text
    check.__name__ = what
    return check


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
    add("--dataset", help="'mnist', 'fashion-mnist', 'kmnist', 'cifar10', an .npz file "
                          "(x_train, y_train, x_test, y_test), an IDX folder or an image folder "
                          "(default: mnist)")
    add("--data-dir", metavar="DIR", help="where named datasets are downloaded and cached "
                                          "(default: $NUMCNN_DATA or ~/.cache/numcnn)")
    add("--epochs", type=_positive_int, help="epochs to train (default: 3 for convnet-bn, 5 else)")
    add("--batch-size", type=_positive_int, help="images per step (default: 64)")
    add("--lr", type=_positive_float, help="learning rate (default: 0.001)")
    add("--optimizer", choices=("adam", "adamw", "sgd", "rmsprop", "adagrad"),
        help="default: adam")
    add("--momentum", type=_nonnegative_float, help="SGD and RMSprop momentum (default: 0.9 for "
                                                    "SGD; RMSprop uses 0 unless given)")
    add("--weight-decay", type=_nonnegative_float, help="weight decay (default: 0)")
    add("--scheduler", choices=("none", "step", "cosine", "plateau", "warmup-cosine", "onecycle"),
        help="learning-rate schedule, stepped once per epoch: cosine (from --lr down a half "
             "cosine that would reach 0 after the last epoch), step (x0.1 every third of the "
             "epochs), plateau (x0.1 when the validation loss stalls for 2 epochs), "
             "warmup-cosine (a linear warm-up from --lr/10 over the first tenth of the epochs, "
             "at least one, then cosine; cosine alone for a single epoch), onecycle (the "
             "one-cycle policy peaking at --lr, stepped every batch), none (default: cosine)")
    add("--clip-grad-norm", type=_positive_float, metavar="MAX",
        help="scale the gradients so that their total 2-norm is at most MAX before each step")
    add("--clip-grad-value", type=_positive_float, metavar="MAX",
        help="clip each gradient element into [-MAX, MAX] before each step")
    add("--augment", action="store_true", default=None,
        help="gray images: random rotations (up to 10 degrees) and shifts (up to 2 pixels); "
             "colour images: random crops after 4 pixels of zero padding and horizontal flips")
    add("--val-fraction", type=_fraction, help="share of the training images held out for "
                                               "validation (default: 0.1; 0 for none)")
    add("--limit", type=_positive_int, metavar="N",
        help="train on the first N training images only (quick runs)")
    add("--patience", type=_positive_int, metavar="N",
        help="stop early when the validation loss has not improved for N epochs")
    add("--seed", type=_nonnegative_int, help="random seed (default: 0); the same seed gives the "
                                              "same numbers")
    add("--out", metavar="DIR", type=_nonempty("a folder"),
        help="run folder (default: runs/<model>-<date>-<time>)")
    add("--resume", metavar="CHECKPOINT",
        help="continue an interrupted run from its checkpoint.ckpt (or its run folder), with its "
             "settings; only --epochs and --workers may be changed")
    add("--workers", type=_positive_int, metavar="N",
        help="train data-parallel on N Ray workers (each takes a shard of every batch; the "
             "gradients are averaged); needs: pip install \"numcnn[ray]\"")
    add("--ray", metavar="ADDRESS",
        help="with --workers: the Ray cluster to join (e.g. auto, ray://host:10001); "
             "default: a local Ray")
    add("--sync-batch-norm", action="store_true", default=None,
        help="with --workers: batch norm over the whole batch (statistics all-reduced across "
             "the workers) instead of each worker's shard")
    add("-q", "--quiet", action="store_true", help="no progress bars, no per-epoch lines")
    train.set_defaults(func=cmd_train)

    # -- evaluate -------------------------------------------------------------------------------
    evaluate = commands.add_parser(
        "evaluate", help="accuracy, per-class report and confusion matrix of a model",
        description="Evaluate a model file on a test set: accuracy, per-class precision and "
                    "recall and the confusion matrix, printed as tables (and drawn as PNGs with "
                    "--out). The images are preprocessed as the model was trained.")
    evaluate.add_argument("model", metavar="MODEL",
                          help="a model file (model.numcnn), a run folder, or a run's "
                               "checkpoint.ckpt (its weights, with the run's preprocessing)")
    evaluate.add_argument("--dataset", help="default: the dataset the model was trained on, or "
                                            "mnist")
    evaluate.add_argument("--data-dir", metavar="DIR", help="where named datasets are cached")
    evaluate.add_argument("--split", choices=("test", "train", "all"),
                          help="which images: test, train or all (both). Default: all of a "
                               "folder of class subfolders named with --dataset (it is evaluated "
                               "whole), else test")
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
    predict.add_argument("model", metavar="MODEL",
                         help="a model file (model.numcnn) or a run folder")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files")
    predict.add_argument("--top", type=_nonnegative_int, default=3, metavar="K",
                         help="show the K most likely classes (default: 3; 0 for all)")
    predict.add_argument("--json", action="store_true",
                         help="print JSON: class and every class probability per image")
    predict.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                         help="classify on Ray (Ray Data, streaming): each IMAGE may then be a "
                              "folder or a glob pattern, and the rows go to -o; without ADDRESS "
                              "a local Ray is started, with one (e.g. auto, ray://host:10001) "
                              "the cluster is joined. Needs: pip install \"numcnn[ray]\"")
    predict.add_argument("-o", "--output", metavar="CSV",
                         help="with --ray: the CSV file to write (path, class, probability, "
                              "error, prob_<class> per class)")
    predict.add_argument("--workers", type=_positive_int, metavar="N",
                         help="with --ray: model replicas (default: Ray's CPUs minus one)")
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
        "data", help="download and cache a named dataset, or inspect a dataset",
        description="'numcnn data mnist' downloads MNIST (checking its checksums) and caches it; "
                    "likewise fashion-mnist, kmnist and cifar10. Given an .npz file or a folder "
                    "instead, it loads and describes it.")
    data.add_argument("dataset", metavar="DATASET", help="'mnist', 'fashion-mnist', 'kmnist', "
                                                         "'cifar10', an .npz file or a folder")
    data.add_argument("--data-dir", metavar="DIR", help="cache folder (default: $NUMCNN_DATA or "
                                                        "~/.cache/numcnn)")
    data.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    data.set_defaults(func=cmd_data)
    _add_inside_commands(commands)

    # -- export ---------------------------------------------------------------------------------
    export = commands.add_parser(
        "export", help="write a model file as ONNX",
        description="Write a model file as an ONNX model (standard operators, opset 17 or "
                    "later, any batch size) that onnxruntime and other runtimes run. The "
                    "recorded preprocessing and class names go into the ONNX metadata; with "
                    "--raw-pixels the preprocessing is folded into the graph. Needs the 'onnx' "
                    "extra: pip install \"numcnn[onnx]\". See docs/interop.md.")
    export.add_argument("model", metavar="MODEL",
                        help="a model file (model.numcnn) or a run folder")
    export.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="the ONNX file to write (e.g. model.onnx)")
    export.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                        help="shape of one input (default: the one the model file records)")
    export.add_argument("--opset", type=_number(int, lambda v: v >= 17, "an opset >= 17"),
                        default=17, help="ONNX opset (default: 17)")
    export.add_argument("--raw-pixels", action="store_true",
                        help="fold the preprocessing (scale, mean, std) into the graph, so the "
                             "ONNX model takes raw pixels (0..255)")
    export.set_defaults(func=cmd_export)

    # -- import ---------------------------------------------------------------------------------
    importer = commands.add_parser(
        "import", help="read an ONNX model (from PyTorch ...) as a numcnn model file",
        description="Read an ONNX model made of the operators numcnn has layers for (Conv, "
                    "BatchNormalization, Relu, MaxPool, AveragePool, GlobalAveragePool, Flatten, "
                    "Gemm, Add as x + f(x) ...; what torch.onnx.export writes for those layers) "
                    "and save it as a numcnn model file; anything else is refused naming the "
                    "node. Needs the 'onnx' extra. See docs/interop.md.")
    importer.add_argument("onnx_file", metavar="ONNX_FILE", help="an .onnx file")
    importer.add_argument("-o", "--output", required=True, metavar="FILE",
                          help="the model file to write (e.g. model.numcnn)")
    importer.set_defaults(func=cmd_import)
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
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the command they were given to, as its other usage errors are
            command = parser._subparsers._group_actions[0].choices.get(args.command, parser)
            command.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as stop:  # --help, --version (0) or a usage error (2, already printed)
        return stop.code if isinstance(stop.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .backend import _lib

    if _lib.LOAD_ERROR is not None:  # e.g. an unknown NUMCNN_CPU
        _error(f"numcnn: error: {_lib.LOAD_ERROR}")
        return EXIT_USAGE
    from ._memory import tune_malloc

    tune_malloc()  # reuse freed activation memory (numcnn._memory; NUMCNN_MALLOC_TUNING=0: off)
    try:
        with warnings.catch_warnings():  # a warning is one line too (restored afterwards)
            warnings.showwarning = _show_warning
            return _run_command(args)
    except UsageError as error:
        _error(f"numcnn {args.command}: error: {error} (see 'numcnn {args.command} --help')")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _error("numcnn: interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (numcnn explain ... | head): not an error
        try:
            sys.stdout = open(os.devnull, "w")  # nothing more to flush into the closed pipe
        except OSError:
            pass
        return EXIT_OK
    except OSError as error:
        _error(f"numcnn: error: {_describe_os_error(error)}")
        return EXIT_FAILURE
    except MemoryError as error:  # the machine cannot hold what was asked (a huge model ...)
        _error(f"numcnn: error: out of memory{': ' + str(error) if str(error) else ''}")
        return EXIT_FAILURE
    except Exception as error:
        from .errors import NumcnnError, UnknownNameError
        from .experiment import SettingsError

        if isinstance(error, (SettingsError, UnknownNameError)):  # cannot be run as given: usage
            _error(f"numcnn {args.command}: error: {error} (see 'numcnn {args.command} --help')")
            return EXIT_USAGE
        if not isinstance(error, NumcnnError):
            raise
        _error(f"numcnn: error: {error}")
        return EXIT_FAILURE


def _run_command(args) -> int:
    try:
        return args.func(args)
    finally:  # the run folder `train` locked is free again (as when the process ends)
        if "numcnn.train" in sys.modules:
            sys.modules["numcnn.train"].release_run_dirs()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    _error(f"numcnn: warning: {message}")


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
    if (args.ray is not None or args.sync_batch_norm) and args.workers is None:
        raise UsageError("--ray and --sync-batch-norm need --workers N (the number of Ray "
                         "workers)")
    from .experiment import NothingToTrain, run_experiment
    from .train import TrainingInterrupted

    settings = {key: getattr(args, key) for key in TRAIN_DEFAULTS}
    try:
        run_experiment(settings, out=args.out, resume=args.resume, data_dir=args.data_dir,
                       quiet=args.quiet, command_line=_command_line(),
                       ray_address=args.ray)
    except TrainingInterrupted as stop:
        print(f"interrupted: checkpoint of epoch {stop.epoch} saved to {stop.checkpoint}",
              flush=True)
        print(f"resume with: numcnn train --resume {stop.checkpoint}", flush=True)
        return EXIT_INTERRUPTED
    except NothingToTrain as done:  # nothing to do is no error (as make's "Nothing to be done")
        print(done)
    return EXIT_OK


def _train_setup(args):
    """The settings, the run folder and the checkpoint to resume from (see
    :func:`numcnn.experiment.prepare_run`)."""
    from .experiment import prepare_run

    settings = {key: getattr(args, key) for key in TRAIN_DEFAULTS}
    return prepare_run(settings, out=args.out, resume=args.resume)


def _check_model_fits(model, image_shape, num_classes, name):
    from .experiment import check_model_fits

    check_model_fits(model, image_shape, num_classes, name)


def _command_line() -> str:
    import shlex

    return shlex.join(["numcnn", *sys.argv[1:]])


def _write_evaluation(result, images, out_dir, extra=None) -> None:
    from .experiment import write_evaluation

    write_evaluation(result, images, out_dir, extra)


def _load_dataset(spec, data_dir, progress: bool):
    from . import data

    return data.load_dataset(spec, data_dir=data_dir, progress=progress)


# ----------------------------------------------------------------------------------------------
# evaluate, predict, summary, data
# ----------------------------------------------------------------------------------------------
def cmd_evaluate(args) -> int:
    from . import evaluation, train

    model, metadata, preprocessing, note = evaluation.model_to_evaluate(args.model)
    if note and not args.quiet:
        print(note)
    spec = args.dataset or _dataset_spec(metadata)
    x, y, dataset, split = evaluation.images_to_evaluate(
        spec, args.split, preprocessing.input_shape, data_dir=args.data_dir,
        progress=not args.quiet, named_by_user=args.dataset is not None)
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
        print(f"{args.model} on {split} of {dataset.name} ({result.n:,} images)")
        print(result.format())
    if args.out is not None:
        _write_evaluation(result, x, args.out, extra={"model": args.model, "dataset": dataset.name,
                                                      "split": split})
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
    from .resolve import model_file

    args.model = model_file(args.model)  # a run folder's model; a checkpoint refused
    if args.ray is not None:
        return _predict_on_ray(args)
    if args.output is not None or args.workers is not None:
        raise UsageError("-o and --workers are for --ray; without it the results are printed")
    model = io.load(args.model)
    metadata = getattr(model, "metadata", {}) or {}
    preprocessing = _preprocessing_of(model, args.model)
    # the digit recipe (crop, centre) is MNIST's; Fashion-MNIST's, KMNIST's and CIFAR-10's
    # images are only resized
    from .data.named import canonical_name

    digit = False if canonical_name(metadata.get("dataset", "")) is not None else None
    from .errors import DataError

    prepared = []
    for path in args.images:
        try:
            prepared.append(data.prepare_image(path, preprocessing, digit=digit))
        except DataError as error:  # say which image, if the message does not
            text = str(error)
            raise DataError(text if str(path) in text else f"{path}: {text}") from None
    images = np.concatenate(prepared)
    probabilities = train.predict(model, images, compile=not args.no_plan)
    if not np.isfinite(probabilities).all():
        from .errors import NumcnnError

        raise NumcnnError(f"{args.model}: expected finite class probabilities, but the model "
                          f"gives NaN or inf (its weights are not finite?)")
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


def _predict_on_ray(args) -> int:
    from . import distributed

    if args.output is None:
        raise UsageError("--ray writes its rows to a CSV file: give -o FILE, e.g. "
                         "-o predictions.csv")
    result = distributed.predict_files(args.model, args.images, args.output,
                                       address=args.ray or None, workers=args.workers)
    for path, error in result["failed"]:
        _error(f"numcnn predict: {path}: {error}")
    print(f"classified {result['images'] - len(result['failed']):,} of {result['images']:,} "
          f"images on Ray in {result['seconds']:.1f}s ({len(result['failed'])} could not be "
          f"read); written: {result['output']}")
    return EXIT_OK


def cmd_summary(args) -> int:
    from . import io, models
    from .errors import NumcnnError
    from .nn.init import shapes_only

    name = args.model
    input_shape = args.input_shape
    if name in models.PRESETS:
        with shapes_only():  # shapes and counts only: no parameter is allocated
            model = models.preset(name)
        print(f"{name}: {models.PRESETS[name]['description']}")
        input_shape = input_shape or tuple(models.PRESETS[name]["input_shape"])
    elif not os.path.exists(name):  # a missing file (1) or an unknown name (2, usage)
        from ._files import looks_like_path
        from .errors import UnknownNameError

        error = NumcnnError if looks_like_path(name) else UnknownNameError
        raise error(f"{name!r} is neither a preset ({', '.join(models.PRESETS)}) nor a model "
                    f"file or JSON model description")
    elif _looks_like_json(name):
        with shapes_only():
            model = models.load_spec(name)
    else:
        model = io.load(name)
        recorded = (getattr(model, "metadata", {}) or {}).get("input_shape")
        input_shape = input_shape or (tuple(recorded) if recorded else None)
    model.summary(input_shape or (1, 28, 28))
    return EXIT_OK


def _looks_like_json(path: str) -> bool:
    """A JSON model description (starts with '{' or '['), as opposed to a model file."""
    from ._files import open_regular
    from .errors import NumcnnError

    with open_regular(path, NumcnnError, "a model file or a JSON model description") as file:
        return file.read(64).lstrip()[:1] in (b"{", b"[")


def cmd_data(args) -> int:
    from ._text import count

    dataset = _load_dataset(args.dataset, args.data_dir, progress=not args.quiet)
    shape = "x".join(str(s) for s in dataset.x_train.shape[1:])
    where = ""
    from .data.named import canonical_name

    if args.dataset == "mnist" or canonical_name(args.dataset) is not None:
        from . import data

        where = f"; cached in {data.data_dir() if args.data_dir is None else args.data_dir}"
    print(f"{dataset.name}: {len(dataset.x_train):,} training and {len(dataset.x_test):,} test "
          f"images of {shape} ({dataset.x_train.dtype}), {count(len(dataset.classes), 'class')}"
          f"{where}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# explain, check, show, demo: seeing inside a model (numcnn.explain, gradcheck, visualize)
# ----------------------------------------------------------------------------------------------
def _add_inside_commands(commands) -> None:
    explain = commands.add_parser(
        "explain", help="every layer with its numbers: formulas, FLOPs, memory",
        description="For each layer: the output-size formula with the numbers filled in, the "
                    "output shape, the parameter count as a product, for convolutions the "
                    "im2col matrices and the backward rules, FLOPs forward and backward "
                    "(a multiply-add counts 2) and the bytes kept for backward; then the "
                    "totals. MODEL is a preset, a model file, a JSON architecture or "
                    "path/to/file.py:NAME.")
    explain.add_argument("model", metavar="MODEL_OR_PRESET")
    explain.add_argument("--batch", type=_positive_int, default=1, metavar="N",
                         help="batch size N for shapes, FLOPs and memory (default: 1)")
    explain.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                         help="shape of one input image (default: the model's, else 1,28,28)")
    explain.add_argument("--format", choices=("table", "json", "markdown"), default="table",
                         help="default: table")
    explain.set_defaults(func=cmd_explain)

    check = commands.add_parser(
        "check", help="check a model's gradients against central differences, layer by layer",
        description="Gradient check in float64: central differences on a small random input "
                    "for the input gradient and every parameter's gradient, of the whole model "
                    "and of each layer alone; the largest relative error per layer and tensor, "
                    "PASS or FAIL (exit code 1). MODEL is a preset, a model file, a JSON "
                    "architecture or path/to/file.py:NAME (a Module class, a function "
                    "returning one, or an instance; the file is run).")
    check.add_argument("model", metavar="MODEL")
    check.add_argument("--input-shape", type=_shape, metavar="C,H,W",
                       help="shape of one input (default: the model's, its input_shape "
                            "attribute, else 1,28,28)")
    check.add_argument("--batch", type=_positive_int, default=2, metavar="N",
                       help="batch size of the random input (default: 2)")
    check.add_argument("--tol", type=_positive_float, default=1e-5,
                       help="largest relative error that passes (default: 1e-5)")
    check.add_argument("--entries", type=_positive_int, default=48, metavar="K",
                       help="entries checked per tensor, drawn at random (default: 48)")
    check.add_argument("--torch", action="store_true",
                       help="also build the model in PyTorch with the same weights and compare "
                            "every layer's output and every gradient (needs torch)")
    check.add_argument("--json", action="store_true", help="print the results as JSON")
    check.set_defaults(func=cmd_check)

    show = commands.add_parser(
        "show", help="pictures of what a model sees: filters, feature maps, saliency",
        description="Draw the first convolution's filters, the feature maps of every "
                    "convolution for IMAGE, and a saliency map (the gradient of the predicted "
                    "class's score with respect to the pixels), as PNGs. IMAGE is prepared as "
                    "for 'numcnn predict' (the model file's preprocessing; a preset or JSON "
                    "architecture has untrained weights and takes pixels scaled to [0, 1]).")
    show.add_argument("model", metavar="MODEL")
    show.add_argument("image", metavar="IMAGE", help="an image file (PNG, JPEG, ...)")
    show.add_argument("--out", metavar="DIR", default="show",
                      help="folder for the PNGs (default: ./show)")
    show.set_defaults(func=cmd_show)

    demo = commands.add_parser(
        "demo", help="teaching pictures: classic kernels by correlation and convolution",
        description="'numcnn demo kernels [IMAGE]' applies Sobel x and y, blur, sharpen, "
                    "Laplacian and emboss to an image (default: the first MNIST test digit) "
                    "with functional.correlate, beside the true convolution and the "
                    "difference, in one PNG.")
    demo.add_argument("topic", choices=("kernels",), metavar="kernels")
    demo.add_argument("image", metavar="IMAGE", nargs="?",
                      help="an image file (default: an MNIST digit, downloaded if needed)")
    demo.add_argument("--out", metavar="PNG", default="kernels.png",
                      help="the PNG to write (default: kernels.png)")
    demo.add_argument("--data-dir", metavar="DIR", help="where MNIST is cached")
    demo.set_defaults(func=cmd_demo)


def cmd_explain(args) -> int:
    from .resolve import load_model

    model, input_shape = load_model(args.model)
    report = model.explain(args.input_shape or input_shape or (1, 28, 28), batch_size=args.batch)
    print(report.format(args.format))
    return EXIT_OK


def cmd_check(args) -> int:
    import json

    from .gradcheck import compare_with_torch, gradcheck
    from .resolve import load_model

    if args.torch:  # say it before the work, not after
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            from .errors import NumcnnError

            raise NumcnnError("--torch compares with PyTorch, which is not installed "
                              "(pip install torch)")
    model, input_shape = load_model(args.model)
    shape = (args.batch, *(args.input_shape or input_shape or (1, 28, 28)))
    report = gradcheck(model, input_shape=shape, tol=args.tol, max_entries=args.entries)
    if not args.json:  # the check's table first, whatever the PyTorch twin then says
        print(f"{args.model}: gradient check on a random input of shape {shape}")
        print(report.format(), flush=True)
    twin = compare_with_torch(model, input_shape=shape) if args.torch else None
    if args.json:
        data = report.to_dict()
        if twin is not None:
            data["torch"] = {"passed": twin.passed, "results": twin.results}
        print(json.dumps(data, indent=2))
    elif twin is not None:
        print()
        print(twin.format())
    if not report.passed:
        _error(f"numcnn: error: gradient check failed in {report.describe_failure()}")
        return EXIT_FAILURE
    if twin is not None and not twin.passed:
        _error("numcnn: error: numcnn and PyTorch differ")
        return EXIT_FAILURE
    return EXIT_OK


def cmd_show(args) -> int:
    from . import visualize
    from .data import Preprocessing, prepare_image
    from .resolve import load_model

    model, input_shape = load_model(args.model)
    metadata = getattr(model, "metadata", {}) or {}
    if metadata.get("preprocessing") is not None:
        preprocessing = Preprocessing.from_dict(metadata["preprocessing"])
    else:
        shape = tuple(input_shape or (1, 28, 28))
        preprocessing = Preprocessing(scale=1 / 255, mean=(0.0,) * shape[0],
                                      std=(1.0,) * shape[0], input_shape=shape)
    image = prepare_image(args.image, preprocessing)
    written = visualize.show(model, image, args.out, classes=metadata.get("classes"))
    for path in written.values():
        print(f"written: {path}")
    return EXIT_OK


def cmd_demo(args) -> int:
    import numpy as np

    from . import visualize
    from .data import load_dataset

    if args.image is not None:
        from .data._images import open_image

        with open_image(args.image) as picture:  # one line for a FIFO, a bomb, a non-image
            image = np.asarray(picture.convert("L"), dtype=np.float64)
    else:
        image = load_dataset("mnist", data_dir=args.data_dir, progress=False).x_test[0]
    print(f"written: {visualize.plot_kernel_demo(np.squeeze(image), args.out)}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------
def cmd_export(args) -> int:
    from . import io
    from . import onnx as numcnn_onnx
    from .resolve import model_file

    model = io.load(model_file(args.model))  # a run folder's model; a checkpoint refused
    onnx_model = numcnn_onnx.export(model, args.output, args.input_shape, opset=args.opset,
                                    fold_preprocessing=args.raw_pixels)
    shape = [d.dim_param or d.dim_value for d in
             onnx_model.graph.input[0].type.tensor_type.shape.dim]
    print(f"written: {args.output} (ONNX opset {args.opset}, {len(onnx_model.graph.node)} "
          f"nodes, input {onnx_model.graph.input[0].name} {shape}"
          f"{', raw pixels' if args.raw_pixels else ''})")
    return EXIT_OK


def cmd_import(args) -> int:
    from . import io
    from . import onnx as numcnn_onnx
    from ._text import count

    model = numcnn_onnx.load(args.onnx_file)
    io.save(model, args.output)
    shape = ",".join(map(str, model.metadata["input_shape"]))
    print(f"written: {args.output} ({count(len(model), 'layer')}, "
          f"{count(model.num_parameters(), 'parameter', thousands=True)}, "
          f"input {shape})")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
