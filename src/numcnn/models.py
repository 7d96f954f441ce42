"""Architectures as data: a model described as JSON, built back from it, and the presets.

A *spec* is a plain, JSON-able description of a model::

    {"type": "Sequential", "layers": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": [5, 5],
         "stride": [1, 1], "padding": [2, 2], "dilation": [1, 1], "groups": 1, "bias": true,
         "padding_mode": "zeros"},
        {"type": "ReLU"},
        {"type": "Residual", "fn": {"type": "Sequential", "layers": [...]}},
        ...]}

Each layer is ``{"type": <class name>, <constructor argument>: <value>, ...}``: the keys are the
names of the class's ``__init__`` arguments (PyTorch's names), the values are what the layer keeps
in the attribute of the same name (``bias`` is written as ``true``/``false``). Containers nest:
``Sequential`` lists its children under ``"layers"``, ``Residual`` holds its block under ``"fn"``.
Arguments left out take the constructor's defaults, so a hand-written file can be short, and a
file may also be just a list of layers (read as a ``Sequential``).

:func:`to_spec` describes a model, :func:`build` builds one, :func:`load_spec` reads a JSON file.
Only classes in the registry can be named (every layer and container exported by
:mod:`numcnn.nn`, plus classes added with :func:`register`), and arguments are JSON values or
nested layer specs, so nothing read from a file can run code.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections import OrderedDict

import numpy as np

from . import nn
from ._text import a
from .errors import ArgumentTypeError, NumcnnError, UnknownNameError

__all__ = ["SpecError", "to_spec", "build", "load_spec", "register", "registry", "PRESETS",
           "preset", "create", "check_name", "UnknownModelError"]

# Deeper specs than this are refused (a hostile file could otherwise exhaust the stack).
MAX_DEPTH = 64
# A model description is a few kilobytes; larger files are refused before they are read.
MAX_SPEC_BYTES = 16 << 20


class SpecError(NumcnnError, ValueError):
    """A model description that cannot be built: unknown type, bad argument, malformed JSON.

    The message starts with the place in the spec, e.g. ``layers[3]: unknown layer type 'Conv3d'``.
    """


class UnknownModelError(SpecError, UnknownNameError):
    """A model name that is neither a preset nor a file (a usage error, exit code 2, on the
    command line)."""


# -- the registry --------------------------------------------------------------------------------
_REGISTERED: dict[str, type] = {}


def register(cls: type) -> type:
    """Allow ``cls`` (a :class:`numcnn.nn.Module` subclass) in specs, under its class name.

    Usable as a decorator. Its constructor arguments must be kept as attributes of the same name.
    """
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ArgumentTypeError(f"register takes a subclass of numcnn.nn.Module, got {cls!r}")
    known = registry().get(cls.__name__)
    if known is not None and known is not cls:
        raise SpecError(f"a different class named {cls.__name__!r} is already registered "
                        f"({known.__module__}.{known.__qualname__})")
    _REGISTERED[cls.__name__] = cls
    return cls


def registry() -> dict[str, type]:
    """Name -> class of every type a spec may name.

    These are the layers and containers exported by :mod:`numcnn.nn` (losses excluded) and the
    classes added with :func:`register`. Nothing else can be named, whatever a file says.
    """
    classes = {}
    for name, obj in vars(nn).items():
        if (isinstance(obj, type) and issubclass(obj, nn.Module) and obj is not nn.Module
                and obj.__name__ == name and not obj.__module__.endswith(".loss")):
            classes[name] = obj
    classes.update(_REGISTERED)
    return classes


# -- module -> spec ------------------------------------------------------------------------------
def _init_arguments(cls: type) -> list[inspect.Parameter]:
    """The named arguments of ``cls.__init__`` (no ``self``, ``*args`` or ``**kwargs``)."""
    signature = inspect.signature(cls.__init__)
    return [p for p in list(signature.parameters.values())[1:]
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]


def _to_json_value(value, where: str):
    """An attribute value as JSON: tuples become lists, NumPy scalars Python numbers."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            raise SpecError(f"{where}: {value} cannot be written as JSON")
        return value
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if isinstance(value, (tuple, list)):
        return [_to_json_value(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, nn.Module):
        return _to_spec(value, where)
    raise SpecError(f"{where}: {a(type(value).__name__)} cannot be written in a spec "
                    f"(numbers, strings, booleans, None, tuples and layers can)")


def to_spec(module: nn.Module) -> dict:
    """The JSON-able description of ``module`` (see the module docstring for the format).

    Raises :class:`SpecError` naming the layer if a class is not registered or keeps a
    constructor argument in no attribute of the same name.
    """
    return _to_spec(module, "model")


def _to_spec(module, where: str) -> dict:
    cls = type(module)
    if registry().get(cls.__name__) is not cls:
        raise SpecError(f"{where}: {cls.__module__}.{cls.__qualname__} is not a registered layer "
                        f"type; add it with numcnn.models.register({cls.__name__})")
    spec = {"type": cls.__name__}
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        spec["layers"] = [_to_spec(child, f"{where}.layers[{i}]")
                          for i, child in enumerate(module._modules.values())]
        if names != [str(i) for i in range(len(names))]:
            spec["names"] = names  # built from an OrderedDict: keep the state_dict keys
        return spec
    for arg in _init_arguments(cls):
        name = arg.name
        try:
            value = getattr(module, name)
        except AttributeError:
            raise SpecError(f"{where} ({cls.__name__}): the constructor argument {name!r} is "
                            f"kept in no attribute of the same name, so it cannot be "
                            f"described") from None
        if name == "bias" and (value is None or isinstance(value, nn.Parameter)):
            spec[name] = value is not None
        else:
            spec[name] = _to_json_value(value, f"{where}.{name}")
    return spec


# -- spec -> module ------------------------------------------------------------------------------
def build(spec) -> nn.Module:
    """Build the model a spec describes (a dict, or a list of layers for a ``Sequential``).

    Raises :class:`SpecError` with the place in the spec for an unknown type, an unknown,
    missing or bad argument.
    """
    return _build(spec, "", 0, registry())


def _join(where: str, key: str) -> str:
    if not where:
        return key
    return f"{where}{key}" if key.startswith("[") else f"{where}.{key}"


def _build(spec, where: str, depth: int, classes: dict[str, type]) -> nn.Module:
    label = where or "spec"
    if depth > MAX_DEPTH:
        raise SpecError(f"{label}: nested more than {MAX_DEPTH} levels deep")
    if isinstance(spec, list):
        spec = {"type": "Sequential", "layers": spec}
    if not isinstance(spec, dict):
        raise SpecError(f"{label}: expected a layer as a JSON object with a \"type\", "
                        f"got {_describe(spec)}")
    if "type" not in spec:
        raise SpecError(f"{label}: a layer needs a \"type\" (one of {', '.join(sorted(classes))});"
                        f" got the keys {sorted(map(str, spec))}")
    type_name = spec["type"]
    if not isinstance(type_name, str) or type_name not in classes:
        raise SpecError(f"{label}: unknown layer type {type_name!r}; known types: "
                        f"{', '.join(sorted(classes))}")
    cls = classes[type_name]
    args = {key: value for key, value in spec.items() if key != "type"}
    if issubclass(cls, nn.Sequential):
        return _build_sequential(cls, args, where, depth, classes)

    allowed = {arg.name: arg for arg in _init_arguments(cls)}
    kwargs = {}
    for key, value in args.items():
        if key not in allowed:
            raise SpecError(f"{label}: {type_name} has no argument {key!r}; its arguments are "
                            f"{', '.join(allowed) or 'none'}")
        kwargs[key] = _from_json_value(value, _join(where, key), depth, classes)
    missing = [name for name, arg in allowed.items()
               if arg.default is inspect.Parameter.empty and name not in kwargs]
    if missing:
        raise SpecError(f"{label}: {type_name} needs the argument{'s' if len(missing) > 1 else ''}"
                        f" {', '.join(map(repr, missing))}")
    try:
        return cls(**kwargs)
    except SpecError:
        raise
    except (NumcnnError, ValueError, TypeError, ArithmeticError, MemoryError) as error:
        raise SpecError(f"{label}: {type_name}({_format_kwargs(kwargs)}) failed: {error}") from None


def _build_sequential(cls, args: dict, where: str, depth: int, classes: dict) -> nn.Module:
    label = where or "spec"
    unknown = sorted(set(args) - {"layers", "names"})
    if unknown:
        raise SpecError(f"{label}: {cls.__name__} takes \"layers\" (and optionally \"names\"), "
                        f"not {', '.join(map(repr, unknown))}")
    layers = args.get("layers", [])
    if not isinstance(layers, list):
        raise SpecError(f"{label}: \"layers\" must be a list of layers, got {_describe(layers)}")
    children = [_build(layer, _join(where, f"layers[{i}]"), depth + 1, classes)
                for i, layer in enumerate(layers)]
    names = args.get("names")
    if names is None:
        return cls(*children)
    if (not isinstance(names, list) or len(names) != len(children)
            or not all(isinstance(n, str) and n and "." not in n for n in names)
            or len(set(names)) != len(names)):
        raise SpecError(f"{label}: \"names\" must be {len(children)} distinct non-empty strings "
                        f"without dots, one per layer; got {str(names)[:200]}")
    try:  # plain identifiers that no attribute of the container has (not "forward" ...)
        return cls(OrderedDict(zip(names, children)))
    except NumcnnError as error:
        raise SpecError(f"{label}: \"names\": {error}") from None


def _from_json_value(value, where: str, depth: int, classes: dict):
    """A JSON value as a constructor argument: lists become tuples, layer specs layers."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        if depth > MAX_DEPTH:
            raise SpecError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        return tuple(_from_json_value(v, f"{where}[{i}]", depth + 1, classes)
                     for i, v in enumerate(value))
    if isinstance(value, dict):
        if "type" in value:
            return _build(value, where, depth + 1, classes)
        raise SpecError(f"{where}: an object as an argument must be a layer with a \"type\"; "
                        f"got the keys {sorted(map(str, value))}")
    raise SpecError(f"{where}: {_describe(value)} is not a JSON value")


def _describe(value) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _format_kwargs(kwargs: dict) -> str:
    return ", ".join(f"{k}={type(v).__name__ + '(...)' if isinstance(v, nn.Module) else repr(v)}"
                     for k, v in kwargs.items())


def load_spec(path) -> nn.Module:
    """Build the model described by a JSON file (a layer object, or a list of layers)."""
    from ._files import file_size, open_regular

    path = os.fspath(path)
    try:
        with open_regular(path, SpecError, "a JSON model description") as file:
            if file_size(file) > MAX_SPEC_BYTES:
                raise SpecError(f"{path}: expected a JSON model description of at most "
                                f"{MAX_SPEC_BYTES:,} bytes, got {file_size(file):,}")
            raw = file.read()
    except OSError as error:
        raise SpecError(f"{path}: cannot read the model description: {error.strerror}") from None
    try:
        spec = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(f"{path}: expected a JSON model description (UTF-8 text), "
                        f"but the file is binary") from None
    except json.JSONDecodeError as error:
        raise SpecError(f"{path}: not valid JSON: {error.msg} at line {error.lineno}, "
                        f"column {error.colno}") from None
    except RecursionError:
        raise SpecError(f"{path}: JSON nested too deeply") from None
    try:
        return build(spec)
    except SpecError as error:
        raise SpecError(f"{path}: {error}") from None


# -- presets -------------------------------------------------------------------------------------
def _conv(cin, cout, k, padding=0):
    return {"type": "Conv2d", "in_channels": cin, "out_channels": cout, "kernel_size": k,
            "padding": padding}


def _layer(type_name, **kwargs):
    return {"type": type_name, **kwargs}


def _basic_block(cin, cout, stride):
    """ResNet's basic block (He et al. 2016) as a ``Residual``: two 3x3 convolutions without bias,
    each followed by batch norm (ReLU between them); a strided block takes a 1x1 convolution with
    batch norm as its projection shortcut. The ReLU after the sum is the next layer."""
    fn = {"type": "Sequential", "layers": [
        {**_conv(cin, cout, 3, padding=1), "stride": stride, "bias": False},
        _layer("BatchNorm2d", num_features=cout), _layer("ReLU"),
        {**_conv(cout, cout, 3, padding=1), "bias": False},
        _layer("BatchNorm2d", num_features=cout),
    ]}
    shortcut = None
    if stride != 1 or cin != cout:
        shortcut = {"type": "Sequential", "layers": [
            {**_conv(cin, cout, 1), "stride": stride, "bias": False},
            _layer("BatchNorm2d", num_features=cout),
        ]}
    return _layer("Residual", fn=fn, shortcut=shortcut)


PRESETS: dict[str, dict] = {
    "small-cnn": {
        "description": "The MNIST classifier of the course text 02: four 3x3/5x5 convolutions, two "
                       "max-pools, two linear layers (17,066 parameters).",
        "input_shape": [1, 28, 28],
        "num_parameters": 17_066,
        "spec": {"type": "Sequential", "layers": [
            _conv(1, 4, 3, padding=1), _layer("ReLU"),
            _conv(4, 8, 3, padding=1), _layer("ReLU"),
            _layer("MaxPool2d", kernel_size=2, stride=2),
            _conv(8, 8, 5, padding=1), _layer("ReLU"),
            _conv(8, 8, 5, padding=1), _layer("ReLU"),
            _layer("MaxPool2d", kernel_size=2, stride=2),
            _layer("Flatten"),
            _layer("Linear", in_features=200, out_features=64), _layer("ReLU"),
            _layer("Linear", in_features=64, out_features=10),
        ]},
    },
    "convnet-bn": {
        "description": "Two 5x5 convolutions with batch norm, ReLU and 2x2 max-pooling, then one "
                       "linear layer (29,034 parameters); the default model of `numcnn train`.",
        "input_shape": [1, 28, 28],
        "num_parameters": 29_034,
        "spec": {"type": "Sequential", "layers": [
            _conv(1, 16, 5, padding=2), _layer("BatchNorm2d", num_features=16), _layer("ReLU"),
            _layer("MaxPool2d", kernel_size=2, stride=2),
            _conv(16, 32, 5, padding=2), _layer("BatchNorm2d", num_features=32), _layer("ReLU"),
            _layer("MaxPool2d", kernel_size=2, stride=2),
            _layer("Flatten"),
            _layer("Linear", in_features=7 * 7 * 32, out_features=10),
        ]},
    },
    "lenet5": {
        "description": "LeNet-5 (LeCun et al. 1998) on 28x28 inputs: the first convolution pads by "
                       "2 to give the original 32x32 geometry; tanh and 2x2 average pooling as in "
                       "the paper; C5 as Linear 400->120 (61,706 parameters).",
        "input_shape": [1, 28, 28],
        "num_parameters": 61_706,
        "spec": {"type": "Sequential", "layers": [
            _conv(1, 6, 5, padding=2), _layer("Tanh"),
            _layer("AvgPool2d", kernel_size=2, stride=2),
            _conv(6, 16, 5), _layer("Tanh"),
            _layer("AvgPool2d", kernel_size=2, stride=2),
            _layer("Flatten"),
            _layer("Linear", in_features=16 * 5 * 5, out_features=120), _layer("Tanh"),
            _layer("Linear", in_features=120, out_features=84), _layer("Tanh"),
            _layer("Linear", in_features=84, out_features=10),
        ]},
    },
    "resnet-cifar": {
        "description": "A small CIFAR-sized ResNet (He et al. 2016): a 3x3 stem 3->16 without "
                       "bias, batch norm, ReLU; three stages of one basic block each, 16, 32 and "
                       "64 wide, the second and third opening with stride 2 and a 1x1 projection "
                       "shortcut; global average pooling; linear to 10 (78,042 parameters).",
        "input_shape": [3, 32, 32],
        "num_parameters": 78_042,
        "spec": {"type": "Sequential", "layers": [
            {**_conv(3, 16, 3, padding=1), "bias": False},
            _layer("BatchNorm2d", num_features=16), _layer("ReLU"),
            _basic_block(16, 16, 1), _layer("ReLU"),
            _basic_block(16, 32, 2), _layer("ReLU"),
            _basic_block(32, 64, 2), _layer("ReLU"),
            _layer("GlobalAvgPool2d"),
            _layer("Linear", in_features=64, out_features=10),
        ]},
    },
}


def preset(name: str) -> nn.Module:
    """A freshly initialised preset model (``numcnn.manual_seed`` fixes its weights)."""
    if name not in PRESETS:
        raise SpecError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    return build(PRESETS[name]["spec"])


def check_name(name_or_path) -> None:
    """Refuse at once what :func:`create` cannot build: neither a preset nor an existing path.

    Raises:
        UnknownModelError: a name (no folder part, no extension) that is no preset.
        SpecError: a path that does not exist.
    """
    from ._files import looks_like_path

    text = os.fspath(name_or_path)
    if text in PRESETS or os.path.exists(text):
        return
    message = (f"{text!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON model "
               f"description file")
    if looks_like_path(text):
        raise SpecError(f"{message} (no such file)")
    raise UnknownModelError(message)


def create(name_or_path) -> nn.Module:
    """A preset by name, or the model described by a JSON file at that path.

    Raises:
        UnknownModelError, SpecError: see :func:`check_name`; SpecError also for a file that
            is no valid model description.
    """
    check_name(name_or_path)
    if isinstance(name_or_path, str) and name_or_path in PRESETS:
        return preset(name_or_path)
    return load_spec(name_or_path)
