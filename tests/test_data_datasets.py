"""numcnn.data: IDX files, .npz files, image folders and load_dataset, all into one Dataset."""

import gzip
import struct

import numpy as np
import pytest
from PIL import Image

from numcnn.data import (
    Dataset,
    load_dataset,
    load_idx_folder,
    load_image_folder,
    load_npz,
    mnist,
    read_idx,
)
from numcnn.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX written from the format description: 00 00 <type> <ndim>, big-endian sizes and values."""
    codes = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}
    code = codes[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.fixture
def arrays():
    rng = np.random.default_rng(3)
    return {
        "x_train": rng.integers(0, 256, (10, 6, 5), dtype=np.uint8),
        "y_train": np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1], np.uint8),
        "x_test": rng.integers(0, 256, (4, 6, 5), dtype=np.uint8),
        "y_test": np.array([3, 2, 1, 0], np.uint8),
    }


# ---- IDX -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, dtype, compress):
    array = (np.arange(2 * 3 * 4).reshape(2, 3, 4) * 7 - 20).astype(dtype)
    blob = idx_bytes(array)
    path = tmp_path / ("a.gz" if compress else "a")
    path.write_bytes(gzip.compress(blob) if compress else blob)
    got = read_idx(path)
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.flags.writeable
    np.testing.assert_array_equal(got, array)


def test_read_idx_tells_gzip_from_the_content_not_the_name(tmp_path):
    array = np.arange(6, dtype=np.uint8)
    (tmp_path / "plain.gz").write_bytes(idx_bytes(array))
    (tmp_path / "packed").write_bytes(gzip.compress(idx_bytes(array)))
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "packed"), array)


@pytest.mark.parametrize("blob, message", [
    (b"\x89PNG\r\n\x1a\n", r"is not an IDX file: it starts with 89 50 4e 47, expected the magic"),
    (b"\x00\x00\x07\x01" + bytes(8), r"it starts with 00 00 07 01"),  # unknown type code
    (b"\x00\x00\x08\x00", r"it starts with 00 00 08 00"),  # no dimensions
    (b"", r"it starts with nothing"),
    (b"\x00\x00\x08\x03\x00\x00\x00\x02", r"truncated header \(8 bytes, 3 dims need 16\)"),
    (b"\x00\x00\x08\x02" + struct.pack(">2I", 3, 4) + bytes(11),
     r"expected 12 bytes after the header \(it announces shape \(3, 4\) of uint8\), got 11"),
    (b"\x1f\x8b\x08\x00garbage", r"corrupt gzip data"),
])
def test_read_idx_rejects_bad_files(tmp_path, blob, message):
    path = tmp_path / "bad"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nothing-here: no such file; expected an IDX file"):
        read_idx(tmp_path / "nothing-here")


@pytest.mark.parametrize("test_prefix, suffix", [("t10k", ".gz"), ("test", "")])
def test_idx_folder(tmp_path, arrays, test_prefix, suffix):
    names = {"x_train": "train-images-idx3-ubyte", "y_train": "train-labels-idx1-ubyte",
             "x_test": f"{test_prefix}-images-idx3-ubyte",
             "y_test": f"{test_prefix}-labels-idx1-ubyte"}
    for key, name in names.items():
        blob = idx_bytes(arrays[key])
        (tmp_path / (name + suffix)).write_bytes(gzip.compress(blob) if suffix else blob)
    for dataset in (load_idx_folder(tmp_path), load_dataset(tmp_path)):
        assert dataset.name == tmp_path.name
        assert dataset.classes == ["0", "1", "2", "3"]
        np.testing.assert_array_equal(dataset.x_train, arrays["x_train"][:, None])
        np.testing.assert_array_equal(dataset.y_test, arrays["y_test"])
        assert dataset.y_train.dtype == np.int64 and dataset.input_shape == (1, 6, 5)


def test_idx_folder_missing_file(tmp_path, arrays):
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(arrays["x_train"]))
    with pytest.raises(DataError, match=r"has no file matching train-labels\*"):
        load_idx_folder(tmp_path)


# ---- .npz ------------------------------------------------------------------------------------


def test_npz_in_mnist_layout(tmp_path, arrays):
    np.savez(tmp_path / "digits.npz", **arrays)
    for dataset in (load_npz(tmp_path / "digits.npz"), load_dataset(str(tmp_path / "digits.npz"))):
        assert dataset.name == "digits" and dataset.classes == ["0", "1", "2", "3"]
        np.testing.assert_array_equal(dataset.x_train, arrays["x_train"][:, None])
        np.testing.assert_array_equal(dataset.x_test, arrays["x_test"][:, None])
        np.testing.assert_array_equal(dataset.y_train, arrays["y_train"])
        assert dataset.y_test.dtype == np.int64


def test_npz_colour_channels_last_and_class_names(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.random((5, 8, 7, 3)).astype(np.float64)  # (N, H, W, C) as CIFAR ships
    x_test = rng.random((2, 8, 7, 3))
    np.savez(tmp_path / "c.npz", x_train=x_train, y_train=[0, 1, 0, 1, 2], x_test=x_test,
             y_test=[[2], [0]], classes=np.array(["cat", "dog", "emu"]))
    dataset = load_npz(tmp_path / "c.npz")
    assert dataset.x_train.shape == (5, 3, 8, 7) and dataset.x_train.dtype == np.float32
    np.testing.assert_array_equal(dataset.x_train[2, 1], x_train[2, :, :, 1].astype(np.float32))
    np.testing.assert_array_equal(dataset.y_test, [2, 0])
    assert dataset.classes == ["cat", "dog", "emu"]


def test_npz_missing_arrays_and_pickles_are_refused(tmp_path, arrays):
    np.savez(tmp_path / "half.npz", x_train=arrays["x_train"], y_train=arrays["y_train"])
    with pytest.raises(DataError, match=r"half\.npz lacks x_test, y_test: a dataset \.npz holds "
                                        r"x_train, y_train, x_test, y_test "
                                        r"\(it has x_train, y_train\)"):
        load_npz(tmp_path / "half.npz")
    np.savez(tmp_path / "obj.npz", **dict(arrays, y_test=np.array([{"a": 1}], dtype=object)))
    with pytest.raises(DataError, match=r"cannot read .*obj\.npz as \.npz"):
        load_npz(tmp_path / "obj.npz")


# ---- the Dataset checks ----------------------------------------------------------------------


def test_dataset_checks_its_arrays(arrays):
    x, y = arrays["x_train"][:, None], arrays["y_train"]
    classes = ["a", "b", "c", "d"]
    dataset = Dataset(x, y, x[:3], y[:3], classes, name="toy")
    assert repr(dataset) == ("Dataset('toy': train (10, 1, 6, 5) uint8, test (3, 1, 6, 5) uint8, "
                             "4 classes)")
    assert dataset.num_classes == 4
    with pytest.raises(DataError, match=r"toy: expected one label per image, got 10 train "
                                          r"images but 9 labels"):
        Dataset(x, y[:9], x, y, classes, name="toy")
    with pytest.raises(DataError, match=r"toy: y_train holds label 3, but there are only 3 "
                                        r"classes \['a', 'b', 'c'\]"):
        Dataset(x, y, x, y, classes[:3], name="toy")
    with pytest.raises(DataError, match=r"x_train: expected images of shape \(N, C, H, W\) with C "
                                        r"1 or 3, got \(10, 6, 5\)"):
        Dataset(x[:, 0], y, x, y, classes, name="toy")
    with pytest.raises(DataError, match=r"expected integer class indices of shape \(N,\), "
                                        r"got float64"):
        Dataset(x, y.astype(float), x, y, classes, name="toy")
    with pytest.raises(DataError, match=r"labels must be >= 0, got -1"):
        Dataset(x, y.astype(int) - 1, x, y, classes, name="toy")
    with pytest.raises(DataError, match=r"expected uint8 or float32 pixels, got int32"):
        Dataset(x.astype(np.int32), y, x, y, classes, name="toy")
    with pytest.raises(DataError, match=r"training images have shape \(1, 6, 5\) \(C, H, W\) but "
                                        r"test images \(1, 5, 5\)"):
        Dataset(x, y, x[:, :, :5], y, classes, name="toy")


# ---- image folders ---------------------------------------------------------------------------


def save(path, pixels):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def gray(value, size=(6, 5)):
    return np.full(size, value, np.uint8)


def test_image_folder_with_train_and_test(tmp_path):
    save(tmp_path / "train" / "dog" / "a.png", gray(10))
    save(tmp_path / "train" / "dog" / "b.PNG", gray(20))
    save(tmp_path / "train" / "cat" / "c.png", gray(30))
    save(tmp_path / "train" / "cat" / "big.png", gray(40, (12, 10)))  # resized to the common size
    save(tmp_path / "test" / "dog" / "d.png", gray(50))
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    for dataset in (load_image_folder(tmp_path), load_dataset(tmp_path)):
        assert dataset.classes == ["cat", "dog"] and dataset.name == tmp_path.name
        assert dataset.x_train.shape == (4, 1, 6, 5) and dataset.x_train.dtype == np.uint8
        # Sorted by class, then file name: cat/big, cat/c, dog/a, dog/b.
        np.testing.assert_array_equal(dataset.x_train[:, 0, 0, 0], [40, 30, 10, 20])
        np.testing.assert_array_equal(dataset.y_train, [0, 0, 1, 1])
        np.testing.assert_array_equal(dataset.x_test[:, 0, 2, 2], [50])
        np.testing.assert_array_equal(dataset.y_test, [1])


def test_image_folder_colour_and_explicit_size(tmp_path):
    save(tmp_path / "train" / "a" / "gray.png", gray(100, (9, 9)))
    rgb = np.zeros((9, 9, 3), np.uint8)
    rgb[..., 0] = 255
    save(tmp_path / "train" / "b" / "red.png", rgb)
    save(tmp_path / "test" / "b" / "red.jpg", rgb)
    dataset = load_image_folder(tmp_path, image_size=4)
    assert dataset.x_train.shape == (2, 3, 4, 4)  # one colour image makes all RGB
    np.testing.assert_array_equal(dataset.x_train[0], np.full((3, 4, 4), 100))
    np.testing.assert_array_equal(dataset.x_train[1, :, 1, 1], [255, 0, 0])
    assert abs(int(dataset.x_test[0, 0, 1, 1]) - 255) <= 3  # JPEG is lossy
    assert load_image_folder(tmp_path, image_size=(3, 7)).x_test.shape == (1, 3, 3, 7)


def test_image_folder_of_classes_only_holds_out_a_seeded_test_split(tmp_path):
    for k in range(10):
        save(tmp_path / ("odd" if k % 2 else "even") / f"{k}.png", gray(k))
    first = load_image_folder(tmp_path, test_fraction=0.3, seed=1)
    again = load_image_folder(tmp_path, test_fraction=0.3, seed=1)
    other = load_image_folder(tmp_path, test_fraction=0.3, seed=2)
    assert len(first.x_train) == 7 and len(first.x_test) == 3
    np.testing.assert_array_equal(first.x_test, again.x_test)
    assert not np.array_equal(first.x_test, other.x_test)
    values = np.concatenate([first.x_train[:, 0, 0, 0], first.x_test[:, 0, 0, 0]])
    labels = np.concatenate([first.y_train, first.y_test])
    assert sorted(values) == list(range(10))
    np.testing.assert_array_equal(labels, values % 2)  # classes ["even", "odd"]


def test_image_folder_errors(tmp_path):
    (tmp_path / "a").mkdir()
    save(tmp_path / "b" / "x.png", gray(1))
    with pytest.raises(DataError, match=r"expected one subfolder per class, each with images "
                                        r"\(\.png, \.jpg, \.jpeg\); empty: \['a'\]"):
        load_image_folder(tmp_path)
    save(tmp_path / "train" / "a" / "x.png", gray(1))
    save(tmp_path / "test" / "z" / "x.png", gray(1))
    with pytest.raises(DataError, match=r"class folders \['z'\] that the training folder lacks"):
        load_image_folder(tmp_path)
    (tmp_path / "test" / "z" / "x.png").write_bytes(b"not a png")
    (tmp_path / "test" / "z").rename(tmp_path / "test" / "a")
    with pytest.raises(DataError, match=r"cannot read image"):
        load_image_folder(tmp_path)


# ---- load_dataset ----------------------------------------------------------------------------


def test_load_dataset_mnist_goes_to_load_mnist(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(mnist, "load_mnist",
                        lambda data_dir, progress: calls.append((data_dir, progress)))
    load_dataset("MNIST", data_dir=tmp_path, progress=False)
    assert calls == [(tmp_path, False)]


def test_load_dataset_names_what_it_accepts(tmp_path):
    with pytest.raises(DataError, match=r"cannot load dataset '.*nope': no such file or folder; "
                                        r"expected 'mnist', 'fashion-mnist', 'kmnist', 'cifar10', an "
                                        r"\.npz file"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DataError, match=r"not an \.npz file or a folder"):
        load_dataset(tmp_path / "data.csv")


def test_an_npz_with_string_labels_is_refused_in_one_line(tmp_path):
    """Labels that are not integer class indices (strings here) are a DataError naming the
    array, not an error from inside NumPy."""
    path = tmp_path / "strings.npz"
    np.savez(path, x_train=np.zeros((4, 8, 8), np.uint8), y_train=np.array(["0", "1", "0", "1"]),
             x_test=np.zeros((2, 8, 8), np.uint8), y_test=np.array(["0", "1"]))
    with pytest.raises(DataError, match=r"y_train: expected integer class indices .* got <U1"):
        load_dataset(str(path))
