"""Datasets by name beside MNIST: Fashion-MNIST, KMNIST (IDX files) and CIFAR-10 (its binary
archive), each obtained once, checked by SHA-256 and cached, as :mod:`numcnn.data.mnist` does.

Sources, in order, for ``load_named("fashion-mnist")`` and the like:

1. the cache ``<data dir>/<name>.npz`` that an earlier load wrote (it records the SHA-256 of the
   files it was made from, and is used only if they are the official ones);
2. the official files, each taken from the data directory if placed there by hand, else
   downloaded from the dataset's public hosts (short timeouts); a file is parsed only once its
   SHA-256 equals the official one.

CIFAR-10 comes from ``cifar-10-binary.tar.gz``, the "binary version" of
https://www.cs.toronto.edu/~kriz/cifar.html: ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
``test_batch.bin``, each record one label byte and 3,072 pixel bytes (1,024 red, 1,024 green,
1,024 blue, rows of 32). It is plain bytes; the pickled "python version" is never read. The
archive's members are read in memory (``tarfile`` ``extractfile`` of the expected regular files
only); nothing is written to disk from it, so no member name can place a file anywhere.

If no source works (these hosts are unreachable from a machine without internet), the
:class:`~numcnn.DataError` names the URLs to fetch and the folder to put the files in.
"""

from __future__ import annotations

import hashlib
import io
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import SPLITS, Dataset
from .idx import parse_idx

__all__ = ["NAMED_DATASETS", "load_named", "canonical_name"]


@dataclass(frozen=True)
class NamedDataset:
    """What is known of one dataset: its files (name -> SHA-256), hosts and class names."""

    name: str
    kind: str                          # "idx" or "cifar"
    files: dict                        # file name -> SHA-256 of the file as published
    mirrors: tuple
    classes: tuple
    home: str


# SHA-256 of each file as its publisher serves it (the same digests torchvision's ports, TFDS
# checksum lists and other projects record).
NAMED_DATASETS = {
    "fashion-mnist": NamedDataset(
        name="fashion-mnist", kind="idx",
        files={
            "train-images-idx3-ubyte.gz":
                "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            "train-labels-idx1-ubyte.gz":
                "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            "t10k-images-idx3-ubyte.gz":
                "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            "t10k-labels-idx1-ubyte.gz":
                "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
        },
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/"
                 "fashion/"),
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                 "Sneaker", "Bag", "Ankle boot"),
        home="https://github.com/zalandoresearch/fashion-mnist",
    ),
    "kmnist": NamedDataset(
        name="kmnist", kind="idx",
        files={
            "train-images-idx3-ubyte.gz":
                "51467d22d8cc72929e2a028a0428f2086b092bb31cfb79c69cc0a90ce135fde4",
            "train-labels-idx1-ubyte.gz":
                "e38f9ebcd0f3ebcdec7fc8eabdcdaef93bb0df8ea12bee65224341c8183d8e17",
            "t10k-images-idx3-ubyte.gz":
                "edd7a857845ad6bb1d0ba43fe7e794d164fe2dce499a1694695a792adfac43c5",
            "t10k-labels-idx1-ubyte.gz":
                "20bb9a0ef54c7db3efc55a92eef5582c109615df22683c380526788f98e42a1c",
        },
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        # the hiragana of each class (kmnist_classmap.csv), romanised as torchvision names them
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        home="https://github.com/rois-codh/kmnist",
    ),
    "cifar10": NamedDataset(
        name="cifar10", kind="cifar",
        files={"cifar-10-binary.tar.gz":
               "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"),
        home="https://www.cs.toronto.edu/~kriz/cifar.html",
    ),
}
_ALIASES = {"fashion-mnist": "fashion-mnist", "fashion_mnist": "fashion-mnist",
            "fashionmnist": "fashion-mnist", "kmnist": "kmnist", "kuzushiji-mnist": "kmnist",
            "cifar10": "cifar10", "cifar-10": "cifar10", "cifar_10": "cifar10"}

IDX_KEYS = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
            "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}
CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST = "test_batch.bin"
CIFAR_RECORD = 1 + 3 * 32 * 32   # label byte + R, G, B planes of 32 x 32


def canonical_name(spec) -> str | None:
    """The canonical name of a named dataset (``"Fashion-MNIST"`` -> ``"fashion-mnist"``), or
    None if ``spec`` names none."""
    return _ALIASES.get(str(spec).strip().lower())


def load_named(name: str, data_dir=None, progress: bool = True) -> Dataset:
    """The named dataset as a :class:`Dataset` of uint8 pixels: Fashion-MNIST and KMNIST
    ``(N, 1, 28, 28)``, CIFAR-10 ``(N, 3, 32, 32)``; class names as published.

    Raises:
        DataError: unknown name, or no source gave the official files (the message lists the URLs
            and where to place the files by hand).
    """
    from .mnist import data_dir as _data_dir

    key = canonical_name(name)
    if key is None:
        raise DataError(f"unknown dataset {name!r}; the named datasets are mnist, "
                        f"{', '.join(NAMED_DATASETS)}")
    info = NAMED_DATASETS[key]
    root = _data_dir(data_dir)
    cache = root / f"{key}.npz"
    arrays = _read_cache(cache, info)
    if arrays is None:
        blobs, problems = {}, []
        down: set = set()
        for file_name, sha256 in info.files.items():
            try:
                blobs[file_name] = _official_file(root, info, file_name, sha256, down, progress)
            except DataError as err:
                problems.append(f"{file_name}: {err}")
        if problems:
            raise DataError(_failure_message(info, root, problems))
        arrays = _parse_idx_files(blobs) if info.kind == "idx" else _parse_cifar_archive(
            blobs["cifar-10-binary.tar.gz"], "cifar-10-binary.tar.gz")
        _write_cache(cache, arrays, info)
    return Dataset(**arrays, classes=list(info.classes), name=key)


def _digests(info: NamedDataset) -> np.ndarray:
    return np.array(sorted(info.files.values()))


def _read_cache(path: Path, info: NamedDataset):
    """The cached arrays, or None if there is no cache made from the official files."""
    import zipfile

    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "source_sha256" not in archive.files or not np.array_equal(
                    archive["source_sha256"], _digests(info)):
                return None
            return {key: archive[key] for key in SPLITS}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def _write_cache(path: Path, arrays: dict, info: NamedDataset) -> None:
    """Write the arrays and the digests of their source files atomically (numcnn.io's
    atomic_write: a temporary file beside it, then a rename); a cache that cannot be written is
    a warning, not an error (the data were loaded)."""
    from ..io import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda file: np.savez(file, source_sha256=_digests(info), **arrays))
    except OSError as err:
        warnings.warn(f"{info.name} loaded but not cached: cannot write {path} ({err})",
                      stacklevel=3)


def _official_file(root: Path, info: NamedDataset, name: str, sha256: str, down: set,
                   progress: bool) -> bytes:
    """The verified bytes of one file: from ``root`` if placed there, else from a host."""
    from . import mnist  # its _fetch is the one network call (tests replace it)

    problems = []
    for local in (root / name, root / info.name / name):
        if local.is_file():
            blob = local.read_bytes()
            got = hashlib.sha256(blob).hexdigest()
            if got == sha256:
                return blob
            problems.append(f"{local} has SHA-256 {got}, expected {sha256}: refused")
    for mirror in info.mirrors:
        if mirror in down:
            continue
        url = mirror + name
        try:
            blob = mnist._fetch(url, progress)
        except (OSError, ValueError) as err:          # URLError, timeout, HTTP error
            down.add(mirror)
            problems.append(f"{url}: {err}")
            continue
        got = hashlib.sha256(blob).hexdigest()
        if got == sha256:
            return blob
        problems.append(f"{url} served a file with SHA-256 {got}, expected {sha256}: refused")
    raise DataError("; ".join(problems) or "every host had already failed")


def _failure_message(info: NamedDataset, root: Path, problems: list[str]) -> str:
    lines = [f"could not obtain {info.name} ({info.home}). Tried:"]
    lines += [f"  - {line}" for line in problems]
    lines += [f"To place the files by hand, download into {root} (or {root / info.name}; or the "
              f"folder that NUMCNN_DATA or --data-dir names):"]
    lines += [f"  - {info.mirrors[0]}{name}  (SHA-256 {sha256})"
              for name, sha256 in info.files.items()]
    lines.append("and run again.")
    return "\n".join(lines)


def _parse_idx_files(blobs: dict) -> dict:
    arrays = {}
    for key, name in IDX_KEYS.items():
        data = parse_idx(blobs[name], name)
        if key.startswith("x"):
            if data.ndim != 3 or data.dtype != np.uint8:
                raise DataError(f"{name}: expected uint8 images (N, H, W), got {data.dtype} "
                                f"{data.shape}")
            data = data[:, None]                                    # (N, 1, H, W)
        elif data.ndim != 1:
            raise DataError(f"{name}: expected labels (N,), got shape {data.shape}")
        arrays[key] = data
    return arrays


def parse_cifar_batch(blob: bytes, name: str = "CIFAR-10 batch"):
    """Images ``(N, 3, 32, 32)`` uint8 and labels ``(N,)`` int64 from one binary batch file.

    Raises:
        DataError: a length that is not a whole number of 3,073-byte records, or a label > 9.
    """
    if len(blob) == 0 or len(blob) % CIFAR_RECORD:
        raise DataError(f"{name}: {len(blob)} bytes is not a whole number of CIFAR-10 records "
                        f"({CIFAR_RECORD} bytes each: 1 label byte, 3,072 pixel bytes)")
    records = np.frombuffer(blob, np.uint8).reshape(-1, CIFAR_RECORD)     # (N, 3073)
    labels = records[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{name}: found label {labels.max()}; CIFAR-10 labels are 0 to 9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()                  # R, G, B planes
    return images, labels


def _parse_cifar_archive(blob: bytes, name: str) -> dict:
    """The train (five batches, in order) and test arrays from ``cifar-10-binary.tar.gz``."""
    wanted = {f"{CIFAR_FOLDER}/{member}" for member in (*CIFAR_TRAIN, CIFAR_TEST)}
    found = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as archive:
            for member in archive:
                if member.name in wanted and member.isfile():
                    found[member.name.rsplit("/", 1)[1]] = archive.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise DataError(f"{name}: not a readable .tar.gz ({err})") from None
    missing = [m for m in (*CIFAR_TRAIN, CIFAR_TEST) if m not in found]
    if missing:
        raise DataError(f"{name} lacks {', '.join(f'{CIFAR_FOLDER}/{m}' for m in missing)}")
    train = [parse_cifar_batch(found[m], m) for m in CIFAR_TRAIN]
    x_test, y_test = parse_cifar_batch(found[CIFAR_TEST], CIFAR_TEST)
    return {"x_train": np.concatenate([x for x, _ in train]),
            "y_train": np.concatenate([y for _, y in train]),
            "x_test": x_test, "y_test": y_test}
