"""What ``numcnn evaluate`` evaluates: the model the user points at, on the images they name.

- A model file written by ``numcnn train`` (``model.numcnn``) records its preprocessing and
  classes. A run's ``checkpoint.ckpt`` holds the weights after the last finished epoch but no
  preprocessing: its model is evaluated with the preprocessing and classes recorded in the run's
  ``model.numcnn`` beside it (the same run, so the same training statistics), and the user is told
  so; without that file the error says it is a training checkpoint and where the model file is.
- A folder of class subfolders that the user names for evaluation is evaluated whole (all its
  images, resized to the model's input), not split 80/20 as for training. ``split="all"``
  evaluates the training and test images together, for any dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._text import count
from .errors import NumcnnError

__all__ = ["model_to_evaluate", "images_to_evaluate"]

MODEL_FILE = "model.numcnn"


def model_to_evaluate(path):
    """``(model, metadata, preprocessing, note)`` for the file at ``path``; ``note`` is a line to
    show the user (or None).

    Raises:
        NumcnnError: the file records no preprocessing and is not a run's checkpoint with a
            ``model.numcnn`` beside it; the message says what the file is and what to pass.
    """
    from . import io
    from .data import Preprocessing
    from .resolve import model_file

    path = Path(model_file(path, checkpoint=True))  # a run folder: its model.numcnn
    header = io.read_header(path)
    model = io.load(path)
    metadata = getattr(model, "metadata", {}) or {}
    if metadata.get("preprocessing") is not None:
        return model, metadata, Preprocessing.from_dict(metadata["preprocessing"]), None
    is_checkpoint = isinstance(header.get("checkpoint"), dict)
    sibling = path.parent / MODEL_FILE
    if is_checkpoint and sibling.is_file() and sibling.resolve() != path.resolve():
        run_metadata = getattr(io.load(sibling), "metadata", {}) or {}
        if run_metadata.get("preprocessing") is not None:
            epoch = _checkpoint_epoch(path)
            note = (f"{path} is a training checkpoint: evaluating its weights (after epoch "
                    f"{epoch}) with the preprocessing recorded in {sibling} (the run's best "
                    f"model; evaluate that file for the model 'numcnn train' kept)")
            return (model, run_metadata,
                    Preprocessing.from_dict(run_metadata["preprocessing"]), note)
    if is_checkpoint:
        raise NumcnnError(f"{path} is a training checkpoint (for 'numcnn train --resume'), and "
                          f"{sibling} with the run's preprocessing is not there; evaluate the "
                          f"run's model file {sibling} instead")
    raise NumcnnError(f"{path}: the model file records no preprocessing (it was not saved by "
                      f"'numcnn train'); save it with metadata={{'preprocessing': "
                      f"Preprocessing.to_dict()}}")


def _checkpoint_epoch(path) -> str:
    from . import io

    try:
        return str(io.load_checkpoint(path)["extra"].get("epoch", "?"))
    except NumcnnError:
        return "?"


def _is_class_folder(spec) -> bool:
    """A folder of class subfolders of images (no IDX files, no train/test layout)."""
    from .data.dataset import IDX_PATTERNS, _class_folders

    path = Path(str(spec)).expanduser()
    if not path.is_dir() or any(path.glob(IDX_PATTERNS["x_train"][0])):
        return False
    names = {p.name for p in _class_folders(path)}
    return bool(names) and not {"train", "test"} <= names


def images_to_evaluate(spec, split, input_shape, data_dir=None, progress=True,
                       named_by_user=True):
    """``(x, y, dataset, split_label)``: the images of ``spec`` to evaluate.

    Args:
        spec: a dataset spec as :func:`numcnn.data.load_dataset` takes it.
        split: ``"test"``, ``"train"``, ``"all"``, or None: ``"all"`` for a class folder the
            user named, else ``"test"``.
        input_shape: the model's ``(C, H, W)``: folder images are read at its size, in gray if
            ``C`` is 1.
        named_by_user: the user gave ``spec`` for evaluation (a class folder is then evaluated
            whole).
    """
    from .data import load_dataset
    from .data.dataset import Dataset, _list_images, _read_images

    channels, height, width = input_shape
    if _is_class_folder(spec):
        if split is None and named_by_user:
            split = "all"
        if split == "all":
            root = Path(str(spec)).expanduser()
            files, labels, classes = _list_images(root)
            try:
                x = _read_images(files, (height, width), colour=channels == 3)
            except OSError as err:
                raise NumcnnError(f"cannot read image: {err}") from None
            empty = np.zeros((0, *x.shape[1:]), x.dtype)
            dataset = Dataset(x, labels, empty, np.zeros(0, np.int64), classes=classes,
                              name=root.name)
            return x, labels, dataset, f"all {count(len(x), 'image', thousands=True)} of the folder"
        dataset = load_dataset(spec, data_dir=data_dir, image_size=(height, width),
                               progress=progress)
    else:
        dataset = load_dataset(spec, data_dir=data_dir, progress=progress)
    split = split or "test"
    if split == "all":
        x = np.concatenate([dataset.x_train, dataset.x_test])
        y = np.concatenate([dataset.y_train, dataset.y_test])
        return x, y, dataset, "the train and test splits"
    if split == "train":
        return dataset.x_train, dataset.y_train, dataset, "the train split"
    return dataset.x_test, dataset.y_test, dataset, "the test split"
