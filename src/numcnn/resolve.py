"""Find the model a command names: a preset, a model file, a JSON architecture, or a user's code.

>>> from numcnn.resolve import load_model
>>> model, input_shape = load_model("convnet-bn")            # a preset, input (1, 28, 28)
>>> model, input_shape = load_model("runs/x/model.numcnn")   # weights and recorded input shape
>>> model, input_shape = load_model("arch.json")             # an architecture, fresh weights
>>> model, input_shape = load_model("my_layers.py:MyConv")   # a class or factory in a .py file

``path/to/file.py:name`` imports the Python file (it runs, as any script you run does: give only
your own files) and takes ``name`` from it: a :class:`numcnn.nn.Module` subclass (built with no
arguments), a function returning a Module (called with no arguments), or a Module instance. Its
``input_shape`` attribute, when present, gives one sample's shape. Model files and JSON
architectures never run code.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys

from ._files import looks_like_path, open_regular
from ._text import a
from .errors import NumcnnError, UnknownNameError

__all__ = ["load_model", "model_file"]

MODEL_FILE = "model.numcnn"  # the model a run folder holds (numcnn.train.MODEL_FILE)


def load_model(spec: str):
    """The model named by ``spec`` and the shape of one input sample (or ``None`` if unknown).

    Raises:
        NumcnnError: ``spec`` is none of a preset, a model file, a JSON architecture or a
            ``file.py:name`` that gives a Module (:class:`~numcnn.errors.UnknownNameError` for
            a name that is no preset, or a name the Python file does not define).
    """
    from . import io, models

    spec = str(spec)
    if spec in models.PRESETS:
        return models.preset(spec), tuple(models.PRESETS[spec]["input_shape"])
    path, _, name = spec.rpartition(":")
    if path.endswith(".py") and name:
        return _from_python(path, name)
    if spec.endswith(".py"):
        raise NumcnnError(f"{spec}: name the class or function in the file as "
                          f"{spec}:NAME (e.g. {spec}:MyLayer)")
    if not os.path.exists(spec):  # a missing file (1) or an unknown name (2, a usage error)
        error = NumcnnError if looks_like_path(spec) else UnknownNameError
        raise error(f"{spec!r} is neither a preset ({', '.join(models.PRESETS)}), a model file, "
                    f"a JSON model description, nor path/to/file.py:NAME")
    with open_regular(spec, NumcnnError, "a model file or a JSON model description") as file:
        is_json = file.read(64).lstrip()[:1] in (b"{", b"[")
    if is_json:
        return models.load_spec(spec), None
    model = io.load(spec)
    recorded = (getattr(model, "metadata", {}) or {}).get("input_shape")
    return model, (tuple(recorded) if recorded else None)


def model_file(path, *, checkpoint: bool = False) -> str:
    """The model file that ``path`` names for ``predict``, ``export`` and ``evaluate``: the file
    itself, or the ``model.numcnn`` of a run folder. A training checkpoint is refused (unless
    ``checkpoint``), saying which model file or run folder to pass instead.

    Raises:
        NumcnnError: a folder without ``model.numcnn``, or a training checkpoint.
    """
    from . import io

    path = os.fspath(path)
    if os.path.isdir(path):
        inside = os.path.join(path, MODEL_FILE)
        if not os.path.isfile(inside):
            raise NumcnnError(f"{path} is a folder without {MODEL_FILE}; expected a model file "
                              f"or the run folder of a 'numcnn train' that finished an epoch")
        return inside
    if not checkpoint and io.is_checkpoint(path):
        folder = os.path.dirname(path) or "."
        beside = os.path.join(folder, MODEL_FILE)
        instead = (f"pass the model file {beside} or the run folder {folder}"
                   if os.path.isfile(beside) else
                   f"pass the run's model file ({MODEL_FILE}, written beside the checkpoint by "
                   f"'numcnn train'; it is not in {folder})")
        raise NumcnnError(f"{path} is a training checkpoint (for 'numcnn train --resume'); "
                          f"{instead}")
    return path


def _from_python(path: str, name: str):
    from . import nn

    with open_regular(path, NumcnnError, "a Python file"):  # missing, a FIFO ...: one line
        pass
    module_name = "numcnn_user_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise NumcnnError(f"{path}: cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # the user's code: report it on one line
        sys.modules.pop(module_name, None)
        raise NumcnnError(f"{path}: importing it failed: {type(error).__name__}: {error}") from None
    if not hasattr(module, name):
        raise UnknownNameError(f"{path} has no {name!r}; {_names_offered(module, module_name)}")
    obj = getattr(module, name)
    try:
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            model = obj()
        elif isinstance(obj, nn.Module):
            model = obj
        elif callable(obj):
            model = obj()
        else:
            model = obj
    except Exception as error:
        raise NumcnnError(f"{path}:{name}() failed: {type(error).__name__}: {error} (a class "
                          f"or factory must build with no arguments)") from None
    if not isinstance(model, nn.Module):
        raise NumcnnError(f"{path}:{name} gives {a(type(model).__name__)}, expected a "
                          f"numcnn.nn.Module (a class, a function returning one, or an instance)")
    shape = getattr(model, "input_shape", None) or getattr(obj, "input_shape", None)
    return model, (tuple(int(s) for s in shape) if shape else None)


def _names_offered(module, module_name: str) -> str:
    """What ``file.py:NAME`` could name in ``module``, for the message when NAME is not there:
    its Module classes and functions that build with no arguments, and its Module instances
    (those needing arguments are named apart)."""
    from . import nn

    classes, functions, instances, need_arguments = [], [], [], []
    for key, value in sorted(vars(module).items()):
        if key.startswith("_"):
            continue
        if isinstance(value, nn.Module):
            instances.append(key)
            continue
        is_class = isinstance(value, type) and issubclass(value, nn.Module)
        if not (is_class or inspect.isfunction(value)) or value.__module__ != module_name:
            continue  # imported names, plain values
        target = (classes if is_class else functions) if _no_arguments_needed(value) \
            else need_arguments
        target.append(key if is_class else f"{key}()")
    parts = [f"{kind} {', '.join(names)}" for kind, names in
             (("Module classes", classes), ("functions", functions),
              ("Module instances", instances)) if names]
    offered = ("names to build a model from: " + "; ".join(parts)) if parts else \
        "it defines no Module class, function or Module instance to build a model from"
    if need_arguments:
        offered += f" (these need arguments, so cannot be used: {', '.join(need_arguments)})"
    return offered


def _no_arguments_needed(factory) -> bool:
    """Whether ``factory()`` (a class or function) can be called with no arguments."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: let the call decide
        return True
    return all(p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
               for p in signature.parameters.values())
