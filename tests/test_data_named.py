"""Fashion-MNIST, KMNIST and CIFAR-10 by name: the parsers on files written here in the official
formats, SHA-256 checks, the cache, the offline message; colour augmentation.

No test touches the network: ``mnist._fetch`` (the one network call) is replaced, and the
expected SHA-256 of each file is set to that of the small file the test writes.
"""

import dataclasses
import gzip
import hashlib
import io
import struct
import tarfile
import urllib.error

import numpy as np
import pytest

from numcnn import data
from numcnn.data import RandomCrop, RandomHorizontalFlip, load_dataset, load_named, mnist, named
from numcnn.errors import DataError, ShapeError

IDX_NAMES = named.IDX_KEYS


def idx_gz(array: np.ndarray) -> bytes:
    """The gzip of the IDX encoding of a uint8 array, written from the format description."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def cifar_records(images: np.ndarray, labels: np.ndarray) -> bytes:
    """CIFAR-10's binary records, from its description: per image one label byte, then the
    1,024 red, 1,024 green and 1,024 blue values, each plane row by row."""
    out = bytearray()
    for image, label in zip(images, labels):
        out.append(int(label))
        for channel in range(3):
            for row in range(32):
                out.extend(int(v) for v in image[channel, row])
    return bytes(out)


def cifar_archive(batches: dict, extra: dict | None = None) -> bytes:
    """A cifar-10-binary.tar.gz holding ``batches`` (member name -> bytes) under
    cifar-10-batches-bin/, plus ``extra`` members by full name."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        members = {f"cifar-10-batches-bin/{k}": v for k, v in batches.items()}
        members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
        members.update(extra or {})
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            archive.addfile(info, io.BytesIO(blob))
    return buffer.getvalue()


def sha256(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture
def fashion_files(monkeypatch):
    """Small Fashion-MNIST look-alike files, made the 'official' ones: name -> bytes, arrays."""
    rng = np.random.default_rng(3)
    arrays = {"x_train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
              "y_train": rng.integers(0, 10, 12).astype(np.uint8),
              "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
              "y_test": rng.integers(0, 10, 5).astype(np.uint8)}
    blobs = {IDX_NAMES[key]: idx_gz(value) for key, value in arrays.items()}
    info = named.NAMED_DATASETS["fashion-mnist"]
    monkeypatch.setitem(named.NAMED_DATASETS, "fashion-mnist", dataclasses.replace(
        info, files={name: sha256(blob) for name, blob in blobs.items()}))
    return blobs, arrays


@pytest.fixture
def cifar_file(monkeypatch):
    """A small cifar-10-binary.tar.gz (4 images per training batch, 3 test images), official."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (23, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, 23)
    batches = {f"data_batch_{i}.bin": cifar_records(images[4 * (i - 1):4 * i],
                                                   labels[4 * (i - 1):4 * i])
               for i in range(1, 6)}
    batches["test_batch.bin"] = cifar_records(images[20:], labels[20:])
    blob = cifar_archive(batches)
    info = named.NAMED_DATASETS["cifar10"]
    monkeypatch.setitem(named.NAMED_DATASETS, "cifar10", dataclasses.replace(
        info, files={"cifar-10-binary.tar.gz": sha256(blob)}))
    return blob, images, labels


def no_network(monkeypatch, served=None):
    """Replace the network call: ``served`` maps URLs to bytes, everything else is unreachable;
    returns the list of URLs asked for."""
    asked = []

    def fetch(url, progress):
        asked.append(url)
        if served and url in served:
            return served[url]
        raise urllib.error.URLError("no route to host")
    monkeypatch.setattr(mnist, "_fetch", fetch)
    return asked


def test_fashion_mnist_from_files_placed_by_hand_then_from_the_cache(tmp_path, monkeypatch,
                                                                     fashion_files):
    blobs, arrays = fashion_files
    no_network(monkeypatch)
    for name, blob in blobs.items():
        (tmp_path / name).write_bytes(blob)
    ds = load_named("Fashion-MNIST", data_dir=tmp_path, progress=False)
    assert ds.name == "fashion-mnist" and ds.classes[0] == "T-shirt/top"
    assert ds.classes[9] == "Ankle boot" and len(ds.classes) == 10
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["x_train"])
    np.testing.assert_array_equal(ds.y_test, arrays["y_test"])
    assert ds.x_train.shape == (12, 1, 28, 28) and ds.x_train.dtype == np.uint8
    for name in blobs:
        (tmp_path / name).unlink()
    again = load_dataset("fashion-mnist", data_dir=tmp_path, progress=False)  # from the cache
    np.testing.assert_array_equal(again.x_train, ds.x_train)
    assert (tmp_path / "fashion-mnist.npz").is_file()


def test_a_cache_not_made_from_the_official_files_is_not_used(tmp_path, monkeypatch,
                                                              fashion_files):
    no_network(monkeypatch)
    np.savez(tmp_path / "fashion-mnist.npz", x_train=np.zeros((1, 1, 28, 28), np.uint8),
             y_train=np.zeros(1, np.int64), x_test=np.zeros((1, 1, 28, 28), np.uint8),
             y_test=np.zeros(1, np.int64), source_sha256=np.array(["0" * 64]))
    with pytest.raises(DataError, match="could not obtain fashion-mnist"):
        load_named("fashion-mnist", data_dir=tmp_path, progress=False)


def test_download_checks_each_file_and_tries_the_next_host(tmp_path, monkeypatch, fashion_files):
    blobs, arrays = fashion_files
    first, second = named.NAMED_DATASETS["fashion-mnist"].mirrors
    served = {first + name: b"tampered" for name in blobs}          # the first host lies
    served.update({second + name: blob for name, blob in blobs.items()})
    asked = no_network(monkeypatch, served)
    ds = load_named("fashion-mnist", data_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(ds.x_test[:, 0], arrays["x_test"])
    assert asked[0].startswith(first) and asked[1].startswith(second)


def test_offline_error_lists_the_urls_and_where_to_put_the_files(tmp_path, monkeypatch):
    no_network(monkeypatch)
    for name, info in named.NAMED_DATASETS.items():
        with pytest.raises(DataError) as caught:
            load_dataset(name, data_dir=tmp_path, progress=False)
        message = str(caught.value)
        assert f"could not obtain {name}" in message and str(tmp_path) in message
        for file_name, digest in info.files.items():
            assert info.mirrors[0] + file_name in message and digest in message


def test_kmnist_is_read_the_same_way_with_its_class_names(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
              "y_train": np.arange(6, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
              "y_test": np.arange(4, dtype=np.uint8)}
    blobs = {IDX_NAMES[key]: idx_gz(value) for key, value in arrays.items()}
    info = named.NAMED_DATASETS["kmnist"]
    monkeypatch.setitem(named.NAMED_DATASETS, "kmnist", dataclasses.replace(
        info, files={name: sha256(blob) for name, blob in blobs.items()}))
    no_network(monkeypatch, {info.mirrors[0] + n: b for n, b in blobs.items()})
    ds = load_named("kmnist", data_dir=tmp_path, progress=False)
    assert ds.classes == ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]
    np.testing.assert_array_equal(ds.x_train[:, 0], arrays["x_train"])


def test_cifar10_archive_parsed_from_its_binary_records(tmp_path, monkeypatch, cifar_file):
    blob, images, labels = cifar_file
    no_network(monkeypatch, {"https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz": blob})
    ds = load_named("cifar10", data_dir=tmp_path, progress=False)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(ds.x_train, images[:20])       # batches 1..5 in order
    np.testing.assert_array_equal(ds.y_test, labels[20:])
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"


def test_cifar_batch_layout_is_label_then_red_green_blue_planes():
    record = bytes([7]) + bytes([10] * 1024) + bytes([20] * 1024) + bytes(range(256)) * 4
    x, y = data.parse_cifar_batch(record)
    assert y.tolist() == [7]
    assert (x[0, 0] == 10).all() and (x[0, 1] == 20).all()
    assert x[0, 2, 0, :].tolist() == list(range(32)) and x[0, 2, 1, 0] == 32
    with pytest.raises(DataError, match="whole number of CIFAR-10 records"):
        data.parse_cifar_batch(record[:-1])
    with pytest.raises(DataError, match="labels are 0 to 9"):
        data.parse_cifar_batch(bytes([12]) + record[1:])


def test_cifar_archive_reads_only_its_members_and_writes_nothing(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    one = cifar_records(rng.integers(0, 256, (1, 3, 32, 32)), [3])
    batches = {f"data_batch_{i}.bin": one for i in range(1, 6)}
    batches["test_batch.bin"] = one
    evil = cifar_archive(batches, extra={"../escaped.txt": b"x", "/tmp/absolute.txt": b"y"})
    arrays = named._parse_cifar_archive(evil, "test.tar.gz")
    assert arrays["x_train"].shape == (5, 3, 32, 32)
    assert not (tmp_path.parent / "escaped.txt").exists()
    incomplete = cifar_archive({"data_batch_1.bin": one})
    with pytest.raises(DataError, match="lacks"):
        named._parse_cifar_archive(incomplete, "test.tar.gz")
    with pytest.raises(DataError, match="not a readable"):
        named._parse_cifar_archive(b"not a tar", "test.tar.gz")


# -- colour augmentation ------------------------------------------------------------------------
def test_random_crop_cuts_windows_of_the_zero_padded_image():
    rng = np.random.default_rng(0)
    x = rng.integers(1, 256, (16, 3, 8, 8), dtype=np.uint8)
    out = RandomCrop(8, padding=2)(x, np.random.default_rng(1))
    assert out.shape == x.shape and out.dtype == np.uint8
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    offsets = set()
    for i in range(16):      # each output is one of the 25 windows of its padded image
        hits = [(t, l) for t in range(5) for l in range(5)
                if np.array_equal(padded[i, :, t:t + 8, l:l + 8], out[i])]
        assert hits, i
        offsets.add(hits[0])
    assert len(offsets) > 3                          # positions vary from image to image
    np.testing.assert_array_equal(RandomCrop(8)(x, rng), x)        # no padding: the image
    with pytest.raises(ShapeError, match="does not fit"):
        RandomCrop(12, padding=1)(x, rng)


def test_random_horizontal_flip_mirrors_about_half_the_images():
    x = np.arange(2 * 3 * 4 * 5, dtype=np.float32).reshape(2, 3, 4, 5).repeat(50, axis=0)
    out = RandomHorizontalFlip()(x, np.random.default_rng(0))
    flipped = [np.array_equal(o, i[:, :, ::-1]) for o, i in zip(out, x)]
    kept = [np.array_equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 30 < sum(flipped) < 70
    np.testing.assert_array_equal(RandomHorizontalFlip(p=1.0)(x), x[:, :, :, ::-1])
    np.testing.assert_array_equal(RandomHorizontalFlip(p=0.0)(x), x)
