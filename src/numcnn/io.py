"""Models and training checkpoints as single, safe files.

A numcnn model file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file: an 8-byte
header length, a JSON header, then the raw tensor bytes. The tensors are the model's
``state_dict()`` (parameters and buffers under PyTorch's key names); the header's own
``__metadata__`` map carries, under the key ``"numcnn"``, a JSON document::

    {"format": "numcnn-model", "version": 1,
     "architecture": <numcnn.models.to_spec(model)>,
     "metadata": <your dict: preprocessing, class names, training summary ...>}

and under ``"numcnn_sha256"`` a SHA-256 digest of that document and of every tensor (name, dtype,
shape, bytes), so that a truncated or corrupted file is refused instead of loaded with wrong
weights. Nothing in the file is executed on loading: the architecture names registered layer
classes only (see :mod:`numcnn.models`) and the tensors are plain arrays. Any safetensors reader
(``safetensors.numpy.load_file``, ``safetensors.torch.load_file``) can read the weights.

A checkpoint (:func:`save_checkpoint`) is a model file that also holds the optimizer's state
(its arrays as tensors named ``optimizer/<n>``) and an ``extra`` dict (epoch, history, random
states), so training can resume; :func:`load` reads a checkpoint as a model too.
"""

from __future__ import annotations

import hashlib
import json
import math
import errno
import os
import struct
import tempfile

import numpy as np

from . import _random
from ._text import a, count
from .errors import ArgumentTypeError, ModelFileError, NumcnnError

__all__ = ["save", "load", "dumps", "loads", "save_checkpoint", "load_checkpoint", "read_header",
           "atomic_write", "is_checkpoint"]

FORMAT = "numcnn-model"
VERSION = 1
_HEADER_KEY = "numcnn"
_DIGEST_KEY = "numcnn_sha256"
_OPTIMIZER_PREFIX = "optimizer/"
_EXPECTED = "a numcnn model file (safetensors with numcnn metadata, written by numcnn.save)"
# The safetensors specification caps the JSON header at 100 MB.
_MAX_HEADER = 100_000_000


# -- writing -------------------------------------------------------------------------------------
def atomic_write(path, write) -> None:
    """Write a file so that it is either the complete new file or the untouched old one.

    ``write`` is the content (``bytes``) or a function taking a binary file object. The content
    goes to a temporary file in the same directory, which is flushed, fsynced and renamed over
    ``path`` (``os.replace`` is atomic); on any error the temporary file is removed.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise OSError(errno.EISDIR, "is a folder; expected a file name to write", path)
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                   suffix=".tmp")
    except OSError as error:  # a missing or read-only folder: name the file asked for
        raise type(error)(error.errno, error.strerror, path) from None
    try:
        with os.fdopen(fd, "wb") as file:
            if isinstance(write, (bytes, bytearray, memoryview)):
                file.write(write)
            else:
                write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable (POSIX); not possible everywhere, e.g. Windows
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def _json_default(value):
    """Let NumPy numbers and arrays into metadata JSON (as Python numbers and lists)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _dumps(document, what: str) -> str:
    try:
        return json.dumps(document, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as error:
        raise NumcnnError(f"{what} must be JSON-serialisable (dicts, lists, strings, numbers, "
                          f"NumPy arrays): {error}") from None


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    # not np.ascontiguousarray, which turns a 0-d array (num_batches_tracked) into shape (1,)
    return array if array.flags.c_contiguous else array.copy(order="C")


def _digest(document: str, tensors: dict[str, np.ndarray]) -> str:
    """SHA-256 of the numcnn JSON document and of each tensor's name, dtype, shape and bytes."""
    sha = hashlib.sha256()
    sha.update(document.encode("utf-8"))
    for name in sorted(tensors):
        array = tensors[name]
        sha.update(f"\0{name}\0{array.dtype.str}\0{array.shape}\0".encode("utf-8"))
        sha.update(array.tobytes())
    return sha.hexdigest()


def _serialise(document: dict, tensors: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save as safetensors_save

    tensors = {name: _little_endian(array) for name, array in tensors.items()}
    for name, array in tensors.items():
        if array.dtype.kind not in "biuf":
            raise NumcnnError(f"tensor {name!r} has dtype {array.dtype}, which a model file "
                              f"cannot hold (booleans, integers and floats can)")
    text = _dumps(document, "metadata")
    return safetensors_save(tensors, metadata={_HEADER_KEY: text,
                                               _DIGEST_KEY: _digest(text, tensors)})


def _model_document(model, metadata) -> tuple[dict, dict[str, np.ndarray]]:
    from .models import to_spec

    if metadata is None:
        metadata = getattr(model, "metadata", None) or {}
    if not isinstance(metadata, dict):
        raise ArgumentTypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    document = {"format": FORMAT, "version": VERSION, "architecture": to_spec(model),
                "metadata": metadata}
    return document, dict(model.state_dict())


def save(model, path, metadata: dict | None = None) -> None:
    """Write ``model`` (architecture, weights and buffers) and ``metadata`` to one file.

    Args:
        model: a model whose layers are all registered (every layer of :mod:`numcnn.nn` is).
        path: the file to write; it is replaced atomically, never left half-written.
        metadata: a JSON-able dict kept beside the model (preprocessing, class names, training
            summary ...); :func:`load` returns it as ``model.metadata``. Default: the model's own
            ``metadata`` attribute if it has one (so a loaded model saves with its metadata).
    """
    atomic_write(path, dumps(model, metadata))


def dumps(model, metadata: dict | None = None) -> bytes:
    """The bytes :func:`save` writes (to send a model to another process or machine)."""
    document, tensors = _model_document(model, metadata)
    return _serialise(document, tensors)


# -- reading -------------------------------------------------------------------------------------
def _sniff(raw: bytes) -> str | None:
    """What a file that is not a numcnn model seems to be, from its first bytes."""
    signatures = [
        (b"\x89PNG\r\n\x1a\n", "a PNG image"),
        (b"\xff\xd8\xff", "a JPEG image"),
        (b"GIF8", "a GIF image"),
        (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth file or a NumPy .npz file?)"),
        (b"\x93NUMPY", "a NumPy .npy file"),
        (b"\x89HDF", "an HDF5 file (a Keras .h5 model?)"),
        (b"\x1f\x8b", "a gzip file"),
        (b"%PDF", "a PDF document"),
    ]
    for magic, what in signatures:
        if raw.startswith(magic):
            return what
    if len(raw) >= 2 and raw[0] == 0x80 and 2 <= raw[1] <= 5:
        return "a Python pickle (refused: unpickling can run arbitrary code)"
    if raw.lstrip()[:1] in (b"{", b"["):
        return "a JSON or text file (a model description? build it with numcnn.models.load_spec)"
    return None


def _data_end(header) -> int | None:
    """The largest tensor end offset a parsed safetensors header declares (None if none)."""
    if not isinstance(header, dict):
        return None
    ends = [entry["data_offsets"][1] for name, entry in header.items()
            if name != "__metadata__" and isinstance(entry, dict)
            and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2
            and isinstance(entry["data_offsets"][1], int)]
    return max(ends) if ends else 0


def _read_raw(path) -> tuple[str, bytes, int]:
    """``(path, bytes, file size)``: the first 8 bytes are checked before the header is read,
    and the header before the tensors, so a file is read only as far as it is consistent (a
    sparse 3 GB file or a FIFO costs nothing); what is not read is reported by :func:`_parse`."""
    from ._files import file_size, open_regular

    path = os.fspath(path)
    with open_regular(path, ModelFileError, _EXPECTED) as file:
        size = file_size(file)
        raw = file.read(8)
        if len(raw) < 8:
            return path, raw, size
        header_size = struct.unpack("<Q", raw)[0]
        if header_size > _MAX_HEADER or 8 + header_size > size:
            return path, raw + file.read(64), size  # enough to say what the file is
        raw += file.read(header_size)
        try:
            end = _data_end(json.loads(raw[8:].decode("utf-8")))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            return path, raw, size  # _parse says why
        total = 8 + header_size + (end or 0)
        if total < size:
            raise ModelFileError(f"{path}: corrupted: the header accounts for {total:,} bytes, "
                                 f"but the file has {size:,} (expected {_EXPECTED})")
        if total == size:
            raw += file.read(size - len(raw))
        return path, raw, size


def _parse(path: str, raw: bytes, size: int | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Check a model file's bytes and return ``(numcnn document, tensors)``; ``size`` is the
    file's size when ``raw`` holds only its beginning."""
    size = len(raw) if size is None else size
    if not raw:
        raise ModelFileError(f"{path}: the file is empty (0 bytes); expected {_EXPECTED}")
    header_size = struct.unpack("<Q", raw[:8])[0] if len(raw) >= 8 else None
    if header_size is None or header_size > _MAX_HEADER or raw[8:9] != b"{":
        what = _sniff(raw)
        if what is not None:
            raise ModelFileError(f"{path}: expected {_EXPECTED}, but this is {what}")
        if size <= 8:
            raise ModelFileError(f"{path}: only {count(size, 'byte')}, too short for {_EXPECTED} "
                                 f"(truncated?)")
        raise ModelFileError(f"{path}: expected {_EXPECTED}; the first bytes are not a "
                             f"safetensors header (got {raw[:16]!r})")
    if 8 + header_size > size:
        raise ModelFileError(f"{path}: truncated: the header alone should be {header_size} bytes "
                             f"after the first 8, but the file has {size} bytes in all")
    try:
        header = json.loads(raw[8:8 + header_size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(f"{path}: corrupted: the safetensors header is not valid JSON "
                             f"({error})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: corrupted: the safetensors header is not a JSON object")
    meta = header.get("__metadata__")
    if not isinstance(meta, dict) or _HEADER_KEY not in meta:
        names = sorted(k for k in header if k != "__metadata__")
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        raise ModelFileError(f"{path}: expected {_EXPECTED}, but this is a plain safetensors file "
                             f"without numcnn metadata (tensors: {shown or 'none'}); weights "
                             f"alone can be loaded with model.load_state_dict("
                             f"safetensors.numpy.load_file(path))")
    data_size = size - 8 - header_size
    end = _data_end(header)
    if end > data_size:
        raise ModelFileError(f"{path}: truncated: the tensors need {end} bytes after the "
                             f"header, but only {data_size} are there")
    from safetensors.numpy import load as safetensors_load

    try:
        tensors = safetensors_load(raw)
    except Exception as error:  # safetensors raises its own SafetensorError and others
        raise ModelFileError(f"{path}: corrupted: safetensors cannot read the tensors "
                             f"({error})") from None
    text = meta[_HEADER_KEY]
    if not isinstance(text, str) or _digest(text, tensors) != meta.get(_DIGEST_KEY):
        raise ModelFileError(f"{path}: corrupted: the checksum of the architecture, metadata and "
                             f"weights does not match the one stored when the file was written")
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ModelFileError(f"{path}: corrupted: the numcnn metadata is not valid JSON "
                             f"({error})") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        found = document.get("format") if isinstance(document, dict) else type(document).__name__
        raise ModelFileError(f"{path}: expected format {FORMAT!r} in the numcnn metadata, "
                             f"got {found!r}")
    version = document.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise ModelFileError(f"{path}: {FORMAT} version {version!r} is not one this numcnn reads "
                             f"(it reads version {VERSION}); a newer numcnn wrote it?")
    if not isinstance(document.get("metadata", {}), dict):
        raise ModelFileError(f"{path}: the numcnn metadata's \"metadata\" is not an object")
    return document, tensors


def read_header(path) -> dict:
    """The numcnn document of a model file (format, architecture, metadata) after all checks.

    Also ``"tensors"``: name -> ``{"dtype", "shape"}`` of every stored tensor.
    """
    path, raw, size = _read_raw(path)
    document, tensors = _parse(path, raw, size)
    document["tensors"] = {name: {"dtype": str(a.dtype), "shape": list(a.shape)}
                           for name, a in sorted(tensors.items())}
    return document


def is_checkpoint(path) -> bool:
    """Whether ``path`` is a training checkpoint (written by :func:`save_checkpoint`), judged
    from its header alone (no tensor is read). False for a model file and for anything that is
    no numcnn file at all (which :func:`load` then reports)."""
    from ._files import open_regular

    try:
        with open_regular(path, ModelFileError, _EXPECTED) as file:
            raw = file.read(8)
            if len(raw) < 8 or struct.unpack("<Q", raw)[0] > _MAX_HEADER:
                return False
            header = json.loads(file.read(struct.unpack("<Q", raw)[0]).decode("utf-8"))
            document = json.loads(header["__metadata__"][_HEADER_KEY])
    except (ModelFileError, ValueError, KeyError, TypeError, RecursionError):
        return False  # UnicodeDecodeError and json's errors are ValueErrors
    return isinstance(document, dict) and isinstance(document.get("checkpoint"), dict)


def _build_model(path: str, document: dict):
    from .models import SpecError, build

    if "architecture" not in document:
        raise ModelFileError(f"{path}: the numcnn metadata holds no \"architecture\"")
    from .nn import init

    try:  # placeholders only: the stored tensors are checked against them before anything
        with _random.kept_state(), init.shapes_only():  # is allocated (see _set_state)
            return build(document["architecture"])
    except SpecError as error:
        raise ModelFileError(f"{path}: the architecture cannot be built: {error}") from None


def _set_state(path: str, model, tensors: dict[str, np.ndarray]) -> None:
    """Put the stored arrays into the model, keeping their dtypes (float32 or float64).

    Checks first that the names and shapes are exactly the model's (no missing, unexpected or
    misshapen tensor), so a model is either loaded whole or not at all. The model may hold
    placeholders (built under ``numcnn.nn.init.shapes_only``): nothing the architecture asks
    for is allocated before the file is found to hold it.
    """
    own = _state_arrays(model)
    missing = [k for k in own if k not in tensors]
    unexpected = [k for k in tensors if k not in own]
    wrong = [f"{k}: expected shape {tuple(own[k].shape)}, found {tuple(tensors[k].shape)}"
             for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    kinds = [f"{k}: expected {a(_kind(own[k]))} tensor, found {tensors[k].dtype}"
             for k in own if k in tensors and _kind(own[k]) != _kind(tensors[k])]
    problems = []
    if missing:
        problems.append(f"missing tensors {_some(missing)}")
    if unexpected:
        problems.append(f"unexpected tensors {_some(sorted(unexpected))}")
    problems += wrong[:5] + kinds[:5]
    if len(wrong) + len(kinds) > 10:
        problems.append(f"... ({len(wrong) + len(kinds)} tensors of the wrong shape or kind)")
    if problems:
        raise ModelFileError(f"{path}: the weights do not match the architecture: "
                             + "; ".join(problems))
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module._parameters.items():
            if prefix + name in tensors:
                stored = tensors[prefix + name]
                if param.data.dtype == stored.dtype and param.data.flags.writeable:
                    param.data[...] = stored  # in place: an optimizer may hold the array
                else:
                    param.data = np.array(stored, copy=True)
                    param.grad = np.zeros_like(param.data)
        for name in list(module._buffers):
            if prefix + name in tensors and module._buffers[name] is not None:
                module._buffers[name] = np.array(tensors[prefix + name], copy=True)


def _some(names: list, shown: int = 5) -> str:
    """The first few names of a list, and how many more (messages stay one short line)."""
    if len(names) <= shown:
        return str(names)
    return f"{names[:shown]} and {len(names) - shown:,} more"


def _state_arrays(model) -> dict:
    """What ``model.state_dict()`` names, without copying (placeholders stay placeholders)."""
    own = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for name, param in module._parameters.items():
            if param is not None:
                own[prefix + name] = param.data
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent:
                own[prefix + name] = np.asarray(buf)
    return own


def _kind(array) -> str:
    return "floating-point" if np.asarray(array).dtype.kind == "f" else "integer"


def load(path):
    """Read a model written by :func:`save` (or :func:`save_checkpoint`).

    Returns the model in eval mode, with its weights and buffers in the dtype they were saved in
    and the saved metadata as ``model.metadata`` (a dict). Raises :class:`ModelFileError` saying
    what was expected and what came for an empty, truncated, corrupted or foreign file (a PNG, a
    pickle, a safetensors file without numcnn metadata ...) or weights that do not fit the
    architecture.
    """
    path, raw, size = _read_raw(path)
    return _load_bytes(path, raw, size)


def loads(raw: bytes, name: str = "<bytes>"):
    """:func:`load` from the bytes of a model file (e.g. sent to another machine); ``name``
    stands for the file in error messages."""
    raw = bytes(raw)
    return _load_bytes(name, raw, len(raw))


def _load_bytes(path: str, raw: bytes, size: int):
    document, tensors = _parse(path, raw, size)
    model = _build_model(path, document)
    optimizer_keys = _optimizer_keys(document)
    _set_state(path, model, {k: v for k, v in tensors.items() if k not in optimizer_keys})
    object.__setattr__(model, "metadata", document.get("metadata", {}))
    return model.eval()


# -- checkpoints ---------------------------------------------------------------------------------
# Optimizer state and ``extra`` are nested dicts, lists, tuples, numbers and arrays. Arrays (and
# NumPy scalars, as 0-d arrays) go into the safetensors part; the rest into JSON, with tags that
# keep tuples, non-string dict keys and NumPy scalar types intact:
#   {"__array__": "optimizer/3"}   an array        {"__scalar__": "optimizer/4"}   a NumPy scalar
#   {"__tuple__": [...]}           a tuple         {"__dict__": [[key, value], ...]} a dict whose
#   {"__float__": "nan"}           nan/inf                                            keys are not
#                                                                                     all strings


def _encode(value, arrays: dict, where: str):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.generic):
        return int(value)
    if isinstance(value, float) and not isinstance(value, np.generic):
        return value if math.isfinite(value) else {"__float__": repr(float(value))}
    if isinstance(value, (np.ndarray, np.generic)):
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise NumcnnError(f"{where}: arrays of dtype {array.dtype} cannot be saved in a "
                              f"checkpoint")
        key = f"{_OPTIMIZER_PREFIX}{len(arrays)}"
        arrays[key] = array
        return {"__scalar__" if isinstance(value, np.generic) else "__array__": key}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_encode(v, arrays, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _encode(v, arrays, f"{where}[{k!r}]") for k, v in value.items()}
        return {"__dict__": [[_encode(k, arrays, f"{where} key"),
                              _encode(v, arrays, f"{where}[{k!r}]")] for k, v in value.items()]}
    raise NumcnnError(f"{where}: {a(type(value).__name__)} cannot be saved in a checkpoint "
                      f"(dicts, lists, tuples, strings, numbers, None and NumPy arrays can)")


def _decode(value, tensors: dict, path: str):
    if isinstance(value, list):
        return [_decode(v, tensors, path) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        (tag, body), = value.items()
        if tag in ("__array__", "__scalar__"):
            if body not in tensors:
                raise ModelFileError(f"{path}: the checkpoint refers to a tensor {body!r} that "
                                     f"is not in the file")
            array = np.array(tensors[body], copy=True)
            return array[()] if tag == "__scalar__" else array
        if tag == "__tuple__":
            return tuple(_decode(v, tensors, path) for v in body)
        if tag == "__float__":
            return float(body)
        if tag == "__dict__":
            return {_hashable(_decode(k, tensors, path)): _decode(v, tensors, path)
                    for k, v in body}
    return {k: _decode(v, tensors, path) for k, v in value.items()}


def _hashable(key):
    return key.item() if isinstance(key, np.generic) else key


def _optimizer_keys(document: dict) -> set[str]:
    checkpoint = document.get("checkpoint")
    if not isinstance(checkpoint, dict):
        return set()
    keys = checkpoint.get("tensors", [])
    return set(keys) if isinstance(keys, list) else set()


def save_checkpoint(path, model, optimizer=None, extra: dict | None = None,
                    metadata: dict | None = None) -> None:
    """Write a resumable training state: the model file plus optimizer state plus ``extra``.

    Args:
        path: the file (replaced atomically).
        model: the model, saved as by :func:`save` (so :func:`load` reads a checkpoint too).
        optimizer: anything with ``state_dict()`` returning nested dicts/lists/tuples of NumPy
            arrays and numbers (the optimizers of :mod:`numcnn.optim`), or None.
        extra: a dict of anything JSON-like plus NumPy arrays: epoch, step, history, RNG states
            (``generator.bit_generator.state``), ...
        metadata: as in :func:`save`.
    """
    document, tensors = _model_document(model, metadata)
    arrays: dict[str, np.ndarray] = {}
    optimizer_state = None if optimizer is None else optimizer.state_dict()
    checkpoint = {"optimizer": _encode(optimizer_state, arrays, "optimizer state"),
                  "extra": _encode(dict(extra or {}), arrays, "extra")}
    clash = [k for k in arrays if k in tensors]
    if clash:
        raise NumcnnError(f"the model has state_dict keys {clash} reserved for optimizer state")
    checkpoint["tensors"] = list(arrays)
    document["checkpoint"] = checkpoint
    atomic_write(path, _serialise(document, {**tensors, **arrays}))


def load_checkpoint(path, model=None, optimizer=None) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: the checkpoint file.
        model: a model to load the weights into (its architecture must match the file's: same
            state_dict names and shapes); None builds a new one from the stored architecture.
        optimizer: if given, its ``load_state_dict`` receives the stored optimizer state.

    Returns:
        ``{"model": model, "optimizer_state": dict or None, "extra": dict, "metadata": dict}``.
        A passed model keeps its training/eval mode; a built one is in eval mode.
    """
    path, raw, size = _read_raw(path)
    document, tensors = _parse(path, raw, size)
    checkpoint = document.get("checkpoint")
    if not isinstance(checkpoint, dict):
        raise ModelFileError(f"{path}: expected a checkpoint (model + optimizer state, written by "
                             f"numcnn.io.save_checkpoint), but this is a model file without "
                             f"training state; load it with numcnn.load")
    optimizer_keys = _optimizer_keys(document)
    built = model is None
    if built:
        model = _build_model(path, document)
    _set_state(path, model, {k: v for k, v in tensors.items() if k not in optimizer_keys})
    metadata = document.get("metadata", {})
    object.__setattr__(model, "metadata", metadata)
    if built:
        model.eval()
    optimizer_state = _decode(checkpoint.get("optimizer"), tensors, path)
    extra = _decode(checkpoint.get("extra", {}), tensors, path)
    if optimizer is not None:
        if optimizer_state is None:
            raise ModelFileError(f"{path}: the checkpoint holds no optimizer state")
        optimizer.load_state_dict(optimizer_state)
    return {"model": model, "optimizer_state": optimizer_state, "extra": extra,
            "metadata": metadata}
