"""Data: MNIST and the user's own datasets, preprocessing, augmentation, a seeded loader.

A training pipeline as the course builds it::

    from numcnn import data

    ds = data.load_dataset("mnist")              # "fashion-mnist", "kmnist", "cifar10", an .npz,
                                                 # a folder of IDX files or images
    x_train, y_train, x_val, y_val = data.train_val_split(ds.x_train, ds.y_train, 0.1, seed=0)
    prep = data.Preprocessing.fit(x_train)       # scale 1/255, mean and std of the training split
    train = data.DataLoader(x_train, y_train, batch_size=64, shuffle=True, seed=0,
                            transform=data.Compose([data.Augment(rotation=10, shift=2), prep]))
    val = data.DataLoader(x_val, y_val, batch_size=256, transform=prep)
    for epoch in range(5):
        for xb, yb in train:                     # float32 (64, 1, 28, 28), int64 (64,)
            ...

Datasets stay uint8 in memory; each batch is augmented and normalised as it is drawn.
Prediction on a user's photo: ``data.prepare_image("digit.jpg", prep)``.
"""

from .augment import Augment, Compose, affine
from .crop_flip import RandomCrop, RandomHorizontalFlip
from .dataset import Dataset, load_dataset, load_idx_folder, load_image_folder, load_npz
from .idx import read_idx
from .loader import DataLoader
from .mnist import RestrictedUnpickler, data_dir, load_mnist
from .named import NAMED_DATASETS, load_named, parse_cifar_batch
from .preprocessing import Preprocessing, one_hot, prepare_image, train_val_split

__all__ = [
    "Augment",
    "Compose",
    "DataLoader",
    "NAMED_DATASETS",
    "RandomCrop",
    "RandomHorizontalFlip",
    "Dataset",
    "Preprocessing",
    "RestrictedUnpickler",
    "affine",
    "data_dir",
    "load_dataset",
    "load_idx_folder",
    "load_image_folder",
    "load_mnist",
    "load_named",
    "load_npz",
    "one_hot",
    "parse_cifar_batch",
    "prepare_image",
    "read_idx",
    "train_val_split",
]
