"""Parameters, the Module base class and the containers.

A layer is a :class:`Module`: it owns its parameters (``weight``, ``bias``), buffers (running
statistics) and a ``training`` flag; ``forward(x)`` computes the output and keeps what the backward
pass needs, ``backward(grad_out)`` returns the gradient with respect to the input and *adds* the
gradient of each parameter into ``param.grad`` (so shared weights and gradient accumulation work).
"""

from __future__ import annotations

import keyword
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Iterator

import numpy as np

from .._grad import is_grad_enabled
from ..errors import ArgumentError, ArgumentTypeError, DTypeError, NumcnnError, ShapeError
from ..functional import residual

# Parameter gradients are accumulated (``grad += ...``) under this lock, so that two threads
# running backward passes through one model add both contributions (NumPy releases the GIL
# inside ``+=``, so unguarded additions could lose one).
_GRAD_LOCK = threading.Lock()
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")


class Parameter:
    """A trainable array: ``data`` and its accumulated gradient ``grad`` (same shape and dtype)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        from .init import is_placeholder

        self.data = np.asarray(data)
        # a placeholder (numcnn.nn.init.shapes_only) gets a placeholder gradient: no memory
        self.grad = self.data if is_placeholder(self.data) else np.zeros_like(self.data)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return self.data.size

    def zero_grad(self) -> None:
        self.grad[...] = 0

    def accumulate(self, grad) -> None:
        """``grad += grad`` (thread-safe: backward passes in two threads both count)."""
        with _GRAD_LOCK:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of every layer and container, in the manner of ``torch.nn.Module``.

    Subclasses implement ``forward(x)`` and ``backward(grad_out)``, and override
    ``output_shape(shape)`` when the layer changes the shape of its input (the default is the
    identity, right for element-wise layers). Assigning a :class:`Parameter` or a ``Module`` to an
    attribute registers it; ``register_buffer`` registers a state array such as a running mean.
    What ``forward`` keeps for ``backward`` (:meth:`_keep`, :meth:`_take`) is kept per thread,
    so one model may be used by several threads at once.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    # -- registration ---------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise NumcnnError(f"{type(self).__name__}.__init__ must call super().__init__() "
                              f"before assigning attributes")
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
            return
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            return buffers[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def register_buffer(self, name: str, value, persistent: bool = True) -> None:
        """Register a state array (part of ``state_dict`` unless ``persistent=False``)."""
        self._buffers[name] = value
        if not persistent:
            self._non_persistent.add(name)
        self.__dict__.pop(name, None)

    def add_module(self, name: str, module: "Module") -> None:
        """Register ``module`` as the child ``name`` (an attribute and a ``state_dict`` prefix).

        ``name`` must be a plain identifier or a number (``"conv1"``, ``"0"``) that is not
        already an attribute or method of the module (``"forward"``, ``"training"``,
        ``"__dict__"`` ...): a child of that name would replace what the model does.
        """
        check_child_name(self, name)
        if not isinstance(module, Module):
            raise ArgumentTypeError(f"{type(self).__name__}.add_module: expected a Module for "
                                    f"{name!r}, got {type(module).__name__}")
        self._modules[name] = module
        object.__setattr__(self, name, module)

    # -- traversal ------------------------------------------------------------------------------
    def children(self) -> Iterator["Module"]:
        return iter(self._modules.values())

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, "Module"]]:
        yield prefix, self
        for name, module in self._modules.items():
            yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self) -> Iterator[Parameter]:
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for module_name, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                if buf is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buf

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    # -- modes and state ------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.zero_grad()

    def to(self, dtype) -> "Module":
        """Cast every floating-point parameter and buffer to ``dtype`` (e.g. ``np.float64``)."""
        dtype = np.dtype(dtype)
        for module in self.modules():
            for param in module._parameters.values():
                param.data = param.data.astype(dtype)
                param.grad = np.zeros_like(param.data)
            for name, buf in module._buffers.items():
                if buf is not None and np.issubdtype(buf.dtype, np.floating):
                    module._buffers[name] = buf.astype(dtype)
        return self

    def double(self) -> "Module":
        return self.to(np.float64)

    def float(self) -> "Module":
        return self.to(np.float32)

    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Copies of every parameter and persistent buffer, under PyTorch's key names."""
        state = OrderedDict()
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                state[prefix + name] = param.data.copy()
            for name, buf in module._buffers.items():
                if buf is not None and name not in module._non_persistent:
                    state[prefix + name] = np.array(buf, copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> None:
        """Copy arrays into parameters and buffers; keys, shapes as in :meth:`state_dict`.

        Values may be NumPy arrays or anything ``np.asarray`` takes (a PyTorch tensor's
        ``.numpy()``); they are cast to the dtype the model holds. A batch-norm counter
        ``num_batches_tracked`` may be missing (older PyTorch versions did not write it); it is
        then set to 0, as PyTorch does.
        """
        if not isinstance(state_dict, Mapping):
            raise ArgumentTypeError(f"load_state_dict: expected a mapping of names to arrays (a "
                                    f"dict), got {type(state_dict).__name__}")
        for key, value in state_dict.items():
            kind = np.asarray(value).dtype.kind if not isinstance(value, Mapping) else "O"
            if not isinstance(key, str) or kind not in "biuf":
                raise DTypeError(f"load_state_dict: expected string keys and numeric arrays, got "
                                 f"{key!r}: {type(value).__name__} of dtype kind {kind!r}")
        own = self.state_dict()
        for key in [k for k in own if k not in state_dict
                    and k.rsplit(".", 1)[-1] == "num_batches_tracked"]:
            state_dict = {**state_dict, key: np.zeros((), dtype=np.int64)}
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise NumcnnError(f"load_state_dict: missing keys {missing}, unexpected keys "
                              f"{unexpected}")
        for module_name, module in self.named_modules():
            prefix = f"{module_name}." if module_name else ""
            for name, param in module._parameters.items():
                if prefix + name in state_dict:
                    value = np.asarray(state_dict[prefix + name])
                    if value.shape != param.shape:
                        raise ShapeError(f"load_state_dict: {prefix + name} expected shape "
                                         f"{param.shape}, got {value.shape}")
                    param.data = value.astype(param.dtype, copy=True)
                    param.grad = np.zeros_like(param.data)
            for name, buf in module._buffers.items():
                if prefix + name in state_dict and buf is not None:
                    value = np.asarray(state_dict[prefix + name])
                    if value.shape != np.shape(buf):
                        raise ShapeError(f"load_state_dict: {prefix + name} expected shape "
                                         f"{np.shape(buf)}, got {value.shape}")
                    module._buffers[name] = value.astype(np.asarray(buf).dtype, copy=True)

    # -- computation ----------------------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def backward(self, grad_out):
        raise NotImplementedError(f"{type(self).__name__} does not implement backward")

    def backward_params(self, grad_out) -> None:
        """Backward pass that only accumulates the parameter gradients, for a layer whose input
        is data (images need no gradient, as tensors without ``requires_grad`` in PyTorch).

        The default runs :meth:`backward` and drops the input gradient, or does nothing for a
        layer without parameters; layers that can skip the input gradient override it.
        """
        if self._parameters or self._modules:
            self.backward(grad_out)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The output shape for an input of ``input_shape`` (batch axis included), without running.

        The default is the identity, right for element-wise layers.
        """
        return tuple(input_shape)

    def _keep(self, *, output=None, **cache) -> None:
        """Keep what backward needs, unless gradients are off (``numcnn.no_grad``).

        ``output`` (the forward output) records its shape, which :meth:`_take` checks the
        gradient against. The cache is kept per thread, so one model may run forward and
        backward passes in several threads at once (each backward uses its own thread's
        forward pass, as each PyTorch call builds its own graph).
        """
        caches = self.__dict__.get("_caches")
        if caches is None:
            caches = {}
            object.__setattr__(self, "_caches", caches)
        thread = threading.get_ident()
        if not is_grad_enabled():
            caches.pop(thread, None)
            return
        if output is not None:
            cache["_output_shape"] = np.shape(output)
        caches[thread] = cache

    def _take(self, grad_out=None) -> dict:
        """Hand this thread's kept cache to backward and drop it, so it lives no longer than
        needed; with ``grad_out``, check that it has the forward output's shape (ShapeError)
        and real numbers (DTypeError)."""
        name = type(self).__name__
        cache = self.__dict__.get("_caches", {}).pop(threading.get_ident(), None)
        if cache is None:
            raise NumcnnError(f"{name}.backward called without a forward pass that kept its "
                              f"cache in this thread (was forward run under numcnn.no_grad(), "
                              f"or in another thread?)")
        shape = cache.pop("_output_shape", None)
        if grad_out is not None and shape is not None:
            check_grad(name, grad_out, shape)
        return cache

    @property
    def _cache(self):
        """This thread's kept cache, or None (for inspection and tests)."""
        return self.__dict__.get("_caches", {}).get(threading.get_ident())

    # -- display --------------------------------------------------------------------------------
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"{type(self).__name__}("]
        for name, module in self._modules.items():
            body = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        lines.append(")")
        return "\n".join(lines)

    def summary(self, input_shape: tuple[int, ...], batch_size: int = 1, print_fn=print) -> str:
        """Print and return a Keras-style table: each layer, its output shape, its parameter count.

        ``input_shape`` is the shape of one sample, e.g. ``(1, 28, 28)``; shapes are shown with
        ``-1`` for the batch axis. Built on :meth:`output_shape`, so nothing runs.
        """
        rows = []
        shape = (batch_size, *input_shape)
        shape = self._summary_rows("", shape, rows)
        name_w = max([len("Layer (type)"), *(len(r[0]) for r in rows)]) + 2  # rows may be none
        shape_w = max([len("Output Shape"), *(len(r[1]) for r in rows)]) + 2
        width = name_w + shape_w + 12
        lines = ["=" * width, f"{'Layer (type)':<{name_w}}{'Output Shape':<{shape_w}}{'Param #':>12}",
                 "=" * width]
        for name, out, count in rows:
            lines.append(f"{name:<{name_w}}{out:<{shape_w}}{count:>12,}")
        total = self.num_parameters()
        trainable = total
        lines += ["=" * width, f"Total params: {total:,}", f"Trainable params: {trainable:,}",
                  f"Input shape: {(-1, *input_shape)}  Output shape: {(-1, *shape[1:])}",
                  "=" * width]
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def explain(self, input_shape: tuple[int, ...], batch_size: int = 1, measure: bool = True):
        """Every layer with its numbers: the output-size formula filled in, the parameter count
        as a product, the im2col view of each convolution, the backward rules, FLOPs forward and
        backward and the bytes kept for backward; totals. ``input_shape`` is one sample's shape.
        Returns a :class:`numcnn.explain.Explanation` (``.rows``, ``.totals``, ``.format()``);
        see :func:`numcnn.explain.explain`."""
        from ..explain import explain

        return explain(self, input_shape, batch_size=batch_size, measure=measure)

    def _summary_rows(self, name: str, shape, rows: list):
        out = self.output_shape(shape)
        label = f"{name} ({type(self).__name__})" if name else type(self).__name__
        rows.append((label, str((-1, *out[1:])), sum(p.size for p in self.parameters())))
        return out


def check_child_name(module: Module, name) -> None:
    """Refuse a child name that is not a plain identifier or number, or that is already an
    attribute of ``module`` (its methods, ``training``, ``_modules`` ...): such a child would
    shadow what the module does, or break it."""
    owner = type(module).__name__
    if not isinstance(name, str) or not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise ArgumentError(f"{owner}: a child's name must be a plain identifier or a number "
                            f"(letters, digits, '_'), got {name!r}")
    if name.startswith("__") or hasattr(type(module), name) or (
            name in module.__dict__ and name not in module._modules):
        raise ArgumentError(f"{owner}: a child cannot be named {name!r}: {owner} already has an "
                            f"attribute of that name, which the child would replace")


def check_grad(name: str, grad_out, shape) -> None:
    """A gradient must have the forward output's shape and hold real numbers."""
    grad_shape = np.shape(grad_out)
    if tuple(grad_shape) != tuple(shape):
        raise ShapeError(f"{name}.backward: expected grad_out of shape {tuple(shape)} (the shape "
                         f"of the forward output), got {tuple(grad_shape)}")
    kind = np.asarray(grad_out).dtype.kind
    if kind not in "biuf":
        raise DTypeError(f"{name}.backward: expected a real-valued grad_out, got dtype "
                         f"{np.asarray(grad_out).dtype}")


def check_real(name: str, x) -> np.ndarray:
    """``x`` as an array of floating-point numbers: float32 and float64 as they are, booleans
    and integers as float32; complex, object and string arrays raise a DTypeError (PyTorch's
    layers refuse them too)."""
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DTypeError(f"{name}: expected a real-valued input (float32 or float64), got dtype "
                         f"{x.dtype}")
    return x if x.dtype.kind == "f" else x.astype(np.float32)


def check_positive_int(owner: str, **values) -> None:
    """Each value must be a positive int (not a bool, not a float such as 2.5)."""
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise ArgumentTypeError(f"{owner}: {name} must be a positive int, got "
                                    f"{type(value).__name__} {value!r}")
        if value < 1:
            raise ArgumentError(f"{owner}: {name} must be a positive int, got {value!r}")


def check_flag(owner: str, **values) -> None:
    """Each value must be a bool."""
    for name, value in values.items():
        if not isinstance(value, (bool, np.bool_)):
            raise ArgumentTypeError(f"{owner}: {name} must be True or False, got "
                                    f"{type(value).__name__} {value!r}")


def check_number(owner: str, name: str, value, low=None, high=None, low_open=False) -> float:
    """A real, finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise ArgumentTypeError(f"{owner}: {name} must be a number, got {type(value).__name__} "
                                f"{value!r}")
    value = float(value)
    below = low is not None and (value <= low if low_open else value < low)
    if not np.isfinite(value) or below or (high is not None and value > high):
        bounds = (f"a finite number {'>' if low_open else '>='} {low}" if high is None
                  else f"between {low} and {high}")
        raise ArgumentError(f"{owner}: {name} must be {bounds}, got {value!r}")
    return value


def _layer_name(index: str, module: Module) -> str:
    return f"layer {index} ({type(module).__name__})"


def chain_shapes(children, shape, step, label):
    """Pass ``shape`` through ``children`` (``(name, module)`` pairs) in order, each step being
    ``step(name, module, shape) -> shape``; a ShapeError is raised again with
    ``label(name, module)`` in front, so the message says which child refused the shape."""
    for name, module in children:
        try:
            shape = step(name, module, shape)
        except ShapeError as error:
            raise ShapeError(f"{label(name, module)}: {error}") from None
    return shape


class Sequential(Module):
    """Layers applied in order; backward runs them in reverse.

    ``Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())`` names its children ``"0"``, ``"1"``, ... as
    PyTorch does, so ``state_dict`` keys match (``"0.weight"``); an ``OrderedDict`` gives names.
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(modules):
                if not isinstance(module, Module):
                    raise ArgumentTypeError("Sequential takes Modules, got "
                                            f"{type(module).__name__} "
                                            f"at position {index}")
                self.add_module(str(index), module)

    def append(self, module: Module) -> "Sequential":
        self.add_module(str(len(self._modules)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        return modules[index]

    def forward(self, x):
        for name, module in self._modules.items():
            try:
                x = module(x)
            except ShapeError as error:
                raise ShapeError(f"{_layer_name(name, module)}: {error}") from None
        return x

    def backward(self, grad_out, input_grad: bool = True):
        """Run the layers' backward passes in reverse and return the input gradient.

        With ``input_grad=False`` the first layer only accumulates its parameter gradients
        (:meth:`Module.backward_params`) and None is returned: what training does, since the
        images need no gradient (a convolution then skips a third of its backward work).
        """
        modules = list(self._modules.values())
        if not modules:
            return grad_out if input_grad else None
        for module in reversed(modules[1:]):
            grad_out = module.backward(grad_out)
        if input_grad:
            return modules[0].backward(grad_out)
        modules[0].backward_params(grad_out)
        return None

    def backward_params(self, grad_out) -> None:
        self.backward(grad_out, input_grad=False)

    def output_shape(self, input_shape):
        return chain_shapes(self._modules.items(), tuple(input_shape),
                            lambda _, module, shape: module.output_shape(shape), _layer_name)

    def _summary_rows(self, name, shape, rows):
        def full(child_name):
            return f"{name}.{child_name}" if name else child_name
        return chain_shapes(self._modules.items(), shape,
                            lambda child, module, shape: module._summary_rows(full(child), shape,
                                                                              rows),
                            lambda child, module: _layer_name(full(child), module))


class Identity(Module):
    """Returns its input unchanged (and the gradient, which must have the input's shape)."""

    def forward(self, x):
        self._keep(output=x)
        return x

    def backward(self, grad_out):
        self._take(grad_out)
        return grad_out


class Residual(Module):
    """A residual block ``y = shortcut(x) + fn(x)`` (He et al. 2016), the shortcut being the
    identity unless a module is given.

    Its backward is ``fn.backward(grad) + shortcut.backward(grad)`` (``grad`` itself for the
    identity). A projection shortcut, e.g. a strided 1x1 convolution with batch norm, lets ``fn``
    change the shape (ResNet's downsampling blocks); without one, ``fn`` must keep the shape of
    its input. ``output_shape`` and ``forward`` check that both branches give the same shape (a
    ShapeError with both shapes, not a broadcast).

    Args:
        fn: the residual branch.
        shortcut: the shortcut branch, or None (default) for the identity.

    Shape:
        - Input: whatever ``fn`` and ``shortcut`` take
        - Output: ``fn.output_shape(input)``, equal to ``shortcut.output_shape(input)``

    Deep Residual Learning for Image Recognition, https://arxiv.org/abs/1512.03385
    """

    def __init__(self, fn: Module, shortcut: Module | None = None):
        super().__init__()
        self.fn = fn
        self.shortcut = shortcut

    def forward(self, x):
        x = np.asarray(x)
        identity = x if self.shortcut is None else self.shortcut(x)
        inner = self.fn(x)
        if np.shape(inner) != np.shape(identity):
            what = "keep the shape" if self.shortcut is None else "give the shortcut's shape"
            raise ShapeError(f"Residual: the inner block must {what} {np.shape(identity)}, but "
                             f"it gives {np.shape(inner)}")
        self._keep(output=inner)
        return residual.add(inner, identity)  # one pass over the cores (functional.add)

    def backward(self, grad_out):
        self._take(grad_out)
        grad_in = self.fn.backward(grad_out)
        if self.shortcut is None:
            return residual.add(grad_out, grad_in)
        return residual.add(grad_in, self.shortcut.backward(grad_out))

    def backward_params(self, grad_out) -> None:
        self._take(grad_out)
        self.fn.backward_params(grad_out)
        if self.shortcut is not None:
            self.shortcut.backward_params(grad_out)

    def output_shape(self, input_shape):
        out = tuple(self.fn.output_shape(input_shape))
        expected = tuple(input_shape) if self.shortcut is None else tuple(
            self.shortcut.output_shape(input_shape))
        if out != expected:
            what = "keep the shape" if self.shortcut is None else "give the shortcut's shape"
            raise ShapeError(f"Residual: the inner block must {what} {expected}, "
                             f"but it gives {out}")
        return expected
