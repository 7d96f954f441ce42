"""The in-memory dataset, and the ways a user's data become one.

Whatever the source (MNIST, an ``.npz``, IDX files, a folder of images), the result is a
:class:`Dataset`: training and test images as (N, C, H, W) arrays, labels as int64 class indices,
and the class names.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import check_expansion, looks_like_path, open_regular
from .._text import count
from ..errors import DataError, UnknownNameError
from ._images import check_pixels, open_image, to_8bit
from .idx import read_idx

__all__ = ["Dataset", "load_dataset", "load_idx_folder", "load_image_folder", "load_npz",
           "check_spec", "UnknownDatasetError"]

_EXPECTED_SPEC = ("'mnist', 'fashion-mnist', 'kmnist', 'cifar10', an .npz file (x_train, y_train, "
                  "x_test, y_test), a folder of IDX files, or a folder of images with one "
                  "subfolder per class")


class UnknownDatasetError(DataError, UnknownNameError):
    """A dataset name that names no dataset and no file or folder (a usage error, exit code 2,
    on the command line)."""

SPLITS = ("x_train", "y_train", "x_test", "y_test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# IDX file names: MNIST's (and Fashion-MNIST's), and the ``test-`` spelling some copies use.
IDX_PATTERNS = {
    "x_train": ("train-images*",),
    "y_train": ("train-labels*",),
    "x_test": ("t10k-images*", "test-images*"),
    "y_test": ("t10k-labels*", "test-labels*"),
}


@dataclass(repr=False)
class Dataset:
    """Training and test images with their labels.

    Attributes:
        x_train, x_test: images, uint8 (raw pixels) or float32, shape (N, C, H, W) with C = 1
            (gray) or 3 (colour).
        y_train, y_test: class indices, int64, shape (N,), each in ``range(len(classes))``.
        classes: the class names; label ``k`` is ``classes[k]``.
        name: what the dataset is called in messages and in the model file.

    Construction checks all of this and raises :class:`DataError` naming what is wrong; integer
    labels are converted to int64 and float64 images to float32.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list
    name: str = "dataset"

    def __post_init__(self):
        self.classes = [str(c) for c in self.classes]
        for split in ("train", "test"):
            x = _checked_images(getattr(self, "x_" + split), f"{self.name}: x_{split}")
            y = _checked_labels(getattr(self, "y_" + split), f"{self.name}: y_{split}")
            if len(x) != len(y):
                raise DataError(f"{self.name}: expected one label per image, got "
                                f"{count(len(x), split + ' image')} but "
                                f"{count(len(y), 'label')}")
            if len(y) and y.max() >= len(self.classes):
                raise DataError(
                    f"{self.name}: y_{split} holds label {y.max()}, but there are only "
                    f"{count(len(self.classes), 'class')} {self.classes}"
                )
            setattr(self, "x_" + split, x)
            setattr(self, "y_" + split, y)
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: training images have shape {self.x_train.shape[1:]} (C, H, W) "
                f"but test images {self.x_test.shape[1:]}"
            )

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"Dataset({self.name!r}: train {self.x_train.shape} {self.x_train.dtype}, "
            f"test {self.x_test.shape} {self.x_test.dtype}, {count(self.num_classes, 'class')})"
        )


def _checked_images(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise DataError(
            f"{what}: expected images of shape (N, C, H, W) with C 1 or 3, got {x.shape}")
    if x.dtype == np.uint8 or x.dtype == np.float32:
        return x
    if x.dtype == np.float64:
        return x.astype(np.float32)
    raise DataError(f"{what}: expected uint8 or float32 pixels, got {x.dtype}")


def _checked_labels(y, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(
            f"{what}: expected integer class indices of shape (N,), got {y.dtype} {y.shape}")
    if len(y) and y.min() < 0:
        raise DataError(f"{what}: labels must be >= 0, got {y.min()}")
    return y.astype(np.int64, copy=False)


def _default_classes(*labels: np.ndarray) -> list[str]:
    top = max((int(y.max()) for y in labels if len(y)), default=-1)
    return [str(k) for k in range(top + 1)]


def _to_nchw(x: np.ndarray, what: str) -> np.ndarray:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) -> (N, C, H, W) if C is 1 or 3 and axis 1 is not."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)
    if x.ndim == 4:
        return x
    raise DataError(
        f"{what}: expected images (N, H, W), (N, C, H, W) or (N, H, W, C), got {x.shape}")


def load_dataset(spec, data_dir=None, *, image_size=None, test_fraction=0.2, seed=0,
                 progress=True) -> Dataset:
    """Load a dataset from what the user names.

    Args:
        spec: ``"mnist"`` (obtained and cached by :func:`~numcnn.data.load_mnist`),
            ``"fashion-mnist"``, ``"kmnist"`` or ``"cifar10"`` (:func:`~numcnn.data.load_named`),
            a path to an
            ``.npz`` (:func:`load_npz`), a folder holding the four IDX files
            (:func:`load_idx_folder`), or a folder of images with one subfolder per class
            (:func:`load_image_folder`).
        data_dir: where MNIST is cached (default: ``$NUMCNN_DATA`` or ``~/.cache/numcnn``).
        image_size, test_fraction, seed: passed to :func:`load_image_folder`.
        progress: show download progress (MNIST only).
    """
    check_spec(spec)
    if str(spec).lower() == "mnist":
        from .mnist import load_mnist  # the MNIST module imports this one

        return load_mnist(data_dir, progress=progress)
    from .named import canonical_name, load_named  # it imports this module too

    if canonical_name(spec) is not None:
        return load_named(spec, data_dir, progress=progress)
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path)
    if path.is_dir():
        if any(path.glob(IDX_PATTERNS["x_train"][0])):
            return load_idx_folder(path)
        return load_image_folder(path, image_size, test_fraction, seed)
    raise DataError(f"cannot load dataset {str(spec)!r}: not an .npz file or a folder; "
                    f"expected {_EXPECTED_SPEC}")


def check_spec(spec) -> None:
    """Refuse at once a ``spec`` that :func:`load_dataset` cannot take: neither a dataset name
    nor an existing file or folder (before anything is downloaded or created).

    Raises:
        UnknownDatasetError: a name (no folder part, no extension) that names no dataset.
        DataError: a path that does not exist.
    """
    from .named import canonical_name

    if str(spec).lower() == "mnist" or canonical_name(spec) is not None \
            or Path(spec).expanduser().exists():
        return
    message = (f"cannot load dataset {str(spec)!r}: no such file or folder; expected "
               f"{_EXPECTED_SPEC}")
    if looks_like_path(spec):
        raise DataError(message)
    raise UnknownDatasetError(message)


def load_npz(path) -> Dataset:
    """An ``.npz`` laid out as Keras's ``mnist.npz``: arrays ``x_train, y_train, x_test, y_test``.

    Images may be (N, H, W) (gray), (N, C, H, W) or (N, H, W, C) with C 1 or 3; labels integer
    class indices. An optional string array ``classes`` names the classes (default ``"0"``,
    ``"1"``, ...). Nothing in the file is unpickled.
    """
    import zipfile

    path = Path(path)
    try:
        with open_regular(path, DataError, "an .npz file (x_train, y_train, x_test, y_test)") \
                as file:
            _check_npz_sizes(file, path)
            file.seek(0)
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise DataError(f"{path}: expected an .npz archive of arrays, got a single "
                                f".npy array")
            missing = [key for key in SPLITS if key not in archive.files]
            if missing:
                raise DataError(
                    f"{path} lacks {', '.join(missing)}: a dataset .npz holds x_train, y_train, "
                    f"x_test, y_test (it has {', '.join(archive.files) or 'nothing'})"
                )
            arrays = {key: archive[key] for key in SPLITS}
            classes = list(archive["classes"]) if "classes" in archive.files else None
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, MemoryError) as err:
        raise DataError(f"cannot read {path} as .npz: {err}") from None  # ValueError: pickles
    for key in ("x_train", "x_test"):
        arrays[key] = _to_nchw(arrays[key], f"{path}: {key}")
    for key in ("y_train", "y_test"):  # integer class indices, checked before anything reads them
        arrays[key] = _checked_labels(arrays[key], f"{path}: {key}")
    if classes is None:
        classes = _default_classes(arrays["y_train"].ravel(), arrays["y_test"].ravel())
    return Dataset(**arrays, classes=classes, name=path.stem)


def _check_npz_sizes(file, path) -> None:
    """Before NumPy reads an .npz: every member's .npy header must declare no more bytes than
    the member holds once decompressed, and no member may expand beyond the caps of
    :func:`numcnn._files.check_expansion` (a zip bomb), so nothing is allocated for data that
    is not there."""
    import zipfile

    try:
        archive = zipfile.ZipFile(file)
    except zipfile.BadZipFile:
        return  # np.load says what it is (a .npy, or not an archive at all)
    with archive:
        total_compressed = sum(info.compress_size for info in archive.infolist())
        total = sum(info.file_size for info in archive.infolist())
        check_expansion(str(path), total, max(total_compressed, 1), DataError)
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with archive.open(info) as member:
                try:
                    version = np.lib.format.read_magic(member)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(member)
                except (ValueError, EOFError) as err:
                    raise DataError(f"{path}: member {info.filename} is not a .npy array "
                                    f"({err})") from None
            need = math.prod(shape) * dtype.itemsize
            if need > info.file_size:
                raise DataError(f"{path}: member {info.filename} declares shape {shape} of "
                                f"{dtype} ({need:,} bytes), but holds {info.file_size:,}")


def _find_one(folder: Path, patterns: tuple[str, ...]) -> Path:
    for pattern in patterns:
        found = sorted(p for p in folder.glob(pattern) if p.is_file())
        if found:
            return found[0]
    raise DataError(f"{folder} has no file matching {' or '.join(patterns)}")


def load_idx_folder(folder) -> Dataset:
    """A folder holding MNIST-style IDX files (``.gz`` or not): ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``
    (``test-`` in place of ``t10k-`` works too). Fashion-MNIST comes in this form.
    """
    folder = Path(folder)
    arrays = {}
    for key, patterns in IDX_PATTERNS.items():
        path = _find_one(folder, patterns)
        data = read_idx(path)
        arrays[key] = _to_nchw(data, str(path)) if key.startswith("x") else data
    classes = _default_classes(arrays["y_train"], arrays["y_test"])
    return Dataset(**arrays, classes=classes, name=folder.name)


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _list_images(root: Path, classes: list[str] | None = None):
    """(files, labels, classes) under ``root/<class>/``; ``classes`` fixes the label numbering."""
    found = {p.name: _image_files(p) for p in _class_folders(root)}
    if classes is None:
        classes = list(found)
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folders {unknown} that the training folder lacks")
    empty = [name for name, files in found.items() if not files]
    if not found or empty:
        raise DataError(
            f"{root}: expected one subfolder per class, each with images "
            f"({', '.join(IMAGE_SUFFIXES)}); {'empty: ' + str(empty) if empty else 'found none'}"
        )
    files = [f for name in found for f in found[name]]
    labels = np.array([classes.index(name) for name in found for _ in found[name]], np.int64)
    return files, labels, classes


def _read_images(files: list[Path], size: tuple[int, int], colour: bool) -> np.ndarray:
    from PIL import Image

    mode, channels = ("RGB", 3) if colour else ("L", 1)
    height, width = size
    out = np.empty((len(files), height, width, channels), np.uint8)
    for i, path in enumerate(files):
        with open_image(path) as image:
            image = to_8bit(image).convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height), Image.Resampling.BILINEAR)
            out[i] = np.asarray(image).reshape(height, width, channels)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)


def load_image_folder(folder, image_size=None, test_fraction=0.2, seed=0) -> Dataset:
    """A folder of PNG/JPEG images with one subfolder per class.

    Two layouts:

    - ``folder/train/<class>/*`` and ``folder/test/<class>/*``: used as they are;
    - ``folder/<class>/*`` only: a seeded random ``test_fraction`` of all images is held out
      as the test split (:func:`~numcnn.data.train_val_split` with ``seed``; not stratified).

    Classes are the training subfolder names in sorted order (other subfolders of ``folder``
    beside ``train`` and ``test`` are ignored). If any image is stored in a colour mode (RGB,
    RGBA, palette, ...), all are read as RGB (C = 3), else as gray (C = 1). All are resized
    (bilinear) to ``image_size`` (``(H, W)`` or one int for square), by default the most common
    size among the images. Pixels stay uint8.
    """
    from PIL import Image, UnidentifiedImageError

    from .preprocessing import train_val_split

    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder")
    names = {p.name for p in _class_folders(root)}
    if {"train", "test"} <= names:
        train_files, y_train, classes = _list_images(root / "train")
        test_files, y_test, _ = _list_images(root / "test", classes)
    else:
        train_files, y_train, classes = _list_images(root)
        test_files, y_test = [], None
    files = train_files + test_files
    try:
        sizes, colour = Counter(), False
        for path in files:
            with open_regular(path, DataError, "an image file") as file, \
                    Image.open(file) as image:  # the header only: size and mode
                check_pixels(path, image.size)
                sizes[image.size[::-1]] += 1  # PIL sizes are (W, H)
                colour = colour or image.mode not in ("1", "L", "LA", "I", "I;16", "F")
        if image_size is None:
            image_size = sizes.most_common(1)[0][0]
        elif isinstance(image_size, int):
            image_size = (image_size, image_size)
        x = _read_images(files, tuple(image_size), colour)
    except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as err:
        raise DataError(f"cannot read image: {err}") from None
    if y_test is None:
        x_train, y_train, x_test, y_test = train_val_split(x, y_train, test_fraction, seed)
    else:
        x_train, x_test = x[:len(train_files)], x[len(train_files):]
    return Dataset(x_train, y_train, x_test, y_test, classes=classes, name=root.name)
