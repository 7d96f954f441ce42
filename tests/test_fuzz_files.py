"""Fuzz suite, part 2: crafted and mutated files for every reader (model, checkpoint,
architecture JSON, npz, IDX, images). Each ends in the right result or a clear NumcnnError, never
allocates what the file does not hold (tracemalloc), and never blocks (a FIFO)."""

import io as pyio
import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import numcnn
from numcnn import data, io, models
from numcnn.errors import DataError, ModelFileError, NumcnnError
from numcnn.nn import init
from tests import fuzzing as fz
from tests.fuzzing import check_case

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MEMORY_LIMIT = 64 << 20  # what any one of these small files may cost in NumPy/Python memory


def bounded(run):
    """Run ``run`` with tracemalloc on; fail if its peak exceeds MEMORY_LIMIT."""
    def wrapped():
        tracemalloc.start()
        try:
            return run()
        finally:
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            assert peak < MEMORY_LIMIT, f"peak {peak / 2**20:.0f} MiB"
    return wrapped


@pytest.fixture(scope="module")
def valid_model():
    return fz.model_bytes()


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    return path


# -- model files and checkpoints ----------------------------------------------------------------
@FUZZ
@given(mutation=st.sampled_from(["truncate", "flip", "header-size", "insert", "append"]),
       where=st.floats(0, 1), value=st.integers(0, 2**64 - 1))
def test_mutated_model_files(tmp_path_factory, valid_model, mutation, where, value):
    raw = bytearray(valid_model)
    k = int(where * (len(raw) - 1))
    if mutation == "truncate":
        raw = raw[:k]
    elif mutation == "flip":
        raw[k] ^= 1 << (value % 8)
    elif mutation == "header-size":
        raw[:8] = value.to_bytes(8, "little")
    elif mutation == "insert":
        raw[k:k] = value.to_bytes(8, "little")
    else:
        raw += value.to_bytes(8, "little")
    path = _write(tmp_path_factory.mktemp("m"), "model.numcnn", bytes(raw))
    original = io.load(_write(tmp_path_factory.mktemp("o"), "ok.numcnn", valid_model))

    def check(model):
        for (name, a), (_, b) in zip(model.state_dict().items(), original.state_dict().items()):
            np.testing.assert_array_equal(a, b, err_msg=name)

    check_case("files: model (mutated)", bounded(lambda: io.load(path)), check)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False)
    | st.sampled_from(["Linear", "Conv2d", "Sequential", "BatchNorm2d", "forward", "__dict__",
                       "type", "layers", "names", "ReLU"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "layers", "names", "in_features", "out_features",
                         "num_features", "in_channels", "out_channels", "kernel_size", "fn",
                         "bias", "eps"]), inner, max_size=5),
    max_leaves=12)

CRAFTED_ARCHITECTURES = {
    "Linear(12000, 12000) without weights": {"type": "Linear", "in_features": 12000,
                                             "out_features": 12000},
    "10,000 BatchNorm2d(100000)": {"type": "Sequential", "layers": [
        {"type": "BatchNorm2d", "num_features": 100000}] * 10000},
    "a child named forward": {"type": "Sequential", "names": ["forward"],
                              "layers": [{"type": "ReLU"}]},
    "a child named __dict__": {"type": "Sequential", "names": ["__dict__"],
                               "layers": [{"type": "ReLU"}]},
    "a child named state_dict": {"type": "Sequential", "names": ["state_dict"],
                                 "layers": [{"type": "ReLU"}]},
    "a child named _modules": {"type": "Sequential", "names": ["_modules"],
                               "layers": [{"type": "ReLU"}]},
    "nested 200 deep": (lambda nest: [nest := {"type": "Sequential", "layers": [nest]}
                                      for _ in range(200)][-1])({"type": "ReLU"}),
    "Linear(-1, 10)": {"type": "Linear", "in_features": -1, "out_features": 10},
    "Linear(2.5, 3)": {"type": "Linear", "in_features": 2.5, "out_features": 3},
    "unknown type": {"type": "os.system"},
}


@pytest.mark.parametrize("name", sorted(CRAFTED_ARCHITECTURES))
def test_crafted_architectures_in_model_files(tmp_path, name):
    path = _write(tmp_path, "m.numcnn", fz.model_bytes(CRAFTED_ARCHITECTURES[name], tensors={}))
    error = check_case("files: model (crafted architecture)", bounded(lambda: io.load(path)))
    assert isinstance(error, ModelFileError)


def test_a_child_named_forward_cannot_replace_the_forward_pass(tmp_path):
    spec = {"type": "Sequential", "names": ["forward", "head"],
            "layers": [{"type": "ReLU"}, {"type": "Linear", "in_features": 4, "out_features": 2}]}
    with pytest.raises(NumcnnError, match="cannot be named 'forward'"):
        models.build(spec)


@FUZZ
@given(architecture=JSON_VALUES)
def test_random_architectures(tmp_path_factory, architecture):
    path = _write(tmp_path_factory.mktemp("a"), "m.numcnn",
                  fz.model_bytes(architecture, tensors={}))

    def check(model):  # built: then it holds no parameters (the file holds no tensors)
        assert model.num_parameters() == 0

    check_case("files: model (random architecture)", bounded(lambda: io.load(path)), check)
    with init.shapes_only():
        check_case("architecture JSON (random)", bounded(lambda: models.build(architecture)))


def test_recorded_input_shape_is_capped(tmp_path):
    prep = dict(fz.PREP, input_shape=[1, 20000, 20000])
    path = _write(tmp_path, "m.numcnn", fz.model_bytes(metadata={"preprocessing": prep}))
    model = io.load(path)
    with pytest.raises(DataError, match="at most .* values, got \\(1, 20000, 20000\\)"):
        data.Preprocessing.from_dict(model.metadata["preprocessing"])


@pytest.fixture(scope="module")
def valid_checkpoint(tmp_path_factory):
    model = models.build(fz.SMALL_SPEC)
    optimizer = numcnn.optim.Adam(model.parameters())
    model(np.zeros((2, 1, 28, 28), np.float32))
    model.backward(np.ones((2, 10), np.float32))
    optimizer.step()
    path = tmp_path_factory.mktemp("c") / "c.ckpt"
    io.save_checkpoint(path, model, optimizer, extra={"epoch": 1, "history": [0.5, float("nan")]})
    return path.read_bytes()


@FUZZ
@given(mutation=st.sampled_from(["truncate", "flip", "document"]), where=st.floats(0, 1),
       bit=st.integers(0, 7), document=JSON_VALUES)
def test_mutated_checkpoints(tmp_path_factory, valid_checkpoint, mutation, where, bit, document):
    raw = bytearray(valid_checkpoint)
    k = int(where * (len(raw) - 1))
    if mutation == "truncate":
        raw = raw[:k]
    elif mutation == "flip":
        raw[k] ^= 1 << bit
    else:  # a well-formed file whose checkpoint part is anything
        doc = fz.model_document(fz.SMALL_SPEC)
        doc["checkpoint"] = {"optimizer": document, "extra": document, "tensors": []}
        raw = io._serialise(doc, {k: v for k, v in io.load_checkpoint(
            _write(tmp_path_factory.mktemp("v"), "v.ckpt", valid_checkpoint))["model"]
            .state_dict().items()})
    path = _write(tmp_path_factory.mktemp("c"), "c.ckpt", bytes(raw))
    model = models.build(fz.SMALL_SPEC)
    optimizer = numcnn.optim.Adam(model.parameters())
    check_case("files: checkpoint", bounded(
        lambda: io.load_checkpoint(path, model, optimizer if mutation != "document" else None)))


@pytest.mark.parametrize("kind", ["fifo", "directory", "sparse 3 GB", "empty", "png", "pickle"])
def test_odd_model_files_are_refused_at_once(tmp_path, kind):
    path = tmp_path / "model.numcnn"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "sparse 3 GB":
        with open(path, "wb") as file:
            file.truncate(3 << 30)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "png":
        path.write_bytes(fz.png_bytes(np.zeros((4, 4), np.uint8)))
    else:
        path.write_bytes(b"\x80\x04\x95" + b"\0" * 40)
    error = check_case("files: model (odd file)", bounded(lambda: io.load(path)))
    assert isinstance(error, ModelFileError)


# -- architecture JSON files --------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00binary", b"[" * 100000 + b"]" * 100000,
                                     b'{"type": "Linear"', b"null", b"[1, 2]",
                                     b'{"type": "Sequential", "names": ["forward"], '
                                     b'"layers": [{"type": "ReLU"}]}'])
def test_crafted_architecture_json_files(tmp_path, content):
    path = _write(tmp_path, "spec.json", content)
    error = check_case("architecture JSON (crafted file)", bounded(lambda: models.load_spec(path)))
    assert isinstance(error, NumcnnError)


def test_architecture_json_fifo(tmp_path):
    os.mkfifo(tmp_path / "spec.json")
    check_case("architecture JSON (crafted file)",
               lambda: models.load_spec(tmp_path / "spec.json"))


def test_summary_of_a_huge_spec_allocates_nothing():
    spec = {"type": "Linear", "in_features": 12000, "out_features": 12000}
    with init.shapes_only():
        model = bounded(lambda: models.build(spec))()
    text = model.summary((12000,), print_fn=None)
    assert "144,012,000" in text


# -- npz ----------------------------------------------------------------------------------------
NPZ_CASES = {
    "valid": lambda: fz.npz_bytes(fz.dataset_arrays()),
    "zip bomb": fz.npz_zip_bomb,
    "header claims 10^12 bytes": fz.npz_claiming_shape,
    "object array (pickle)": lambda: fz.npz_bytes({**fz.dataset_arrays(),
                                                   "x_train": np.array([{}], dtype=object)}),
    "missing keys": lambda: fz.npz_bytes({"x_train": np.zeros((2, 4, 4), np.uint8)}),
    "float64 images": lambda: fz.npz_bytes(fz.dataset_arrays(dtype=np.float64)),
    "a .npy": lambda: (lambda b: (np.save(b, np.zeros(3)), b.getvalue())[1])(pyio.BytesIO()),
    "random bytes": lambda: np.random.default_rng(0).bytes(500),
}


@pytest.fixture(scope="module")
def npz_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("npz")
    return {name: _write(root, f"{i}.npz", make()) for i, (name, make) in
            enumerate(NPZ_CASES.items())}


@pytest.mark.parametrize("name", list(NPZ_CASES))
def test_crafted_npz_files(npz_files, name):
    result = check_case("files: npz (crafted)", bounded(lambda: data.load_npz(npz_files[name])))
    if name == "valid":
        assert result.x_train.shape == (40, 1, 28, 28)


@FUZZ
@given(where=st.floats(0, 1), value=st.integers(0, 255), cut=st.booleans())
def test_mutated_npz(tmp_path_factory, where, value, cut):
    raw = bytearray(fz.npz_bytes(fz.dataset_arrays(n=8), compressed=True))
    k = int(where * (len(raw) - 1))
    raw = raw[:k] if cut else raw[:k] + bytes([value]) + raw[k + 1:]
    path = _write(tmp_path_factory.mktemp("n"), "d.npz", bytes(raw))
    check_case("files: npz (mutated)", bounded(lambda: data.load_npz(path)))


# -- IDX ----------------------------------------------------------------------------------------
@FUZZ
@given(dims=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 5), min_size=0, max_size=4),
       type_byte=st.sampled_from([8, 9, 11, 12, 13, 14, 7, 255]), body=st.integers(0, 300),
       gz=st.booleans())
def test_crafted_idx_headers(tmp_path_factory, dims, type_byte, body, gz):
    import gzip
    import struct

    raw = (bytes([0, 0, type_byte, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)
           + bytes(body))
    path = _write(tmp_path_factory.mktemp("i"), "x-idx3-ubyte",
                  gzip.compress(raw) if gz else raw)

    def check(array):
        assert array.shape == tuple(dims)

    check_case("files: IDX (crafted header)", bounded(lambda: data.read_idx(path)), check)


def test_idx_gzip_bomb_is_refused_quickly(tmp_path):
    path = _write(tmp_path, "train-images-idx3-ubyte.gz", fz.gzip_bomb_idx())
    error = check_case("files: IDX (gzip bomb)", bounded(lambda: data.read_idx(path)))
    assert isinstance(error, DataError) and "compression bomb" in str(error)


def test_idx_round_trip():
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    for gz in (False, True):
        np.testing.assert_array_equal(data.idx.parse_idx(fz.idx_bytes(array, gz=gz)), array)


# -- images -------------------------------------------------------------------------------------
def _seven(height=28, width=28) -> np.ndarray:
    """A dark '7' on light paper, uint8 (H, W)."""
    image = np.full((height, width), 235, np.uint8)
    image[5:8, 6:22] = 20
    for row in range(8, 24):
        col = 21 - (row - 8) // 2
        image[row, col - 1:col + 2] = 20
    return image


PREP = data.Preprocessing(1 / 255, (0.13,), (0.31,), (1, 28, 28))


@pytest.mark.parametrize("kind", ["16-bit PNG", "32-bit int TIFF", "float TIFF", "uint16 array",
                                  "bool array", "float array"])
def test_high_bit_depth_pictures_read_as_the_same_picture(tmp_path, kind):
    from PIL import Image

    seven = _seven()
    expected = data.prepare_image(seven, PREP)
    if kind == "16-bit PNG":
        path = tmp_path / "seven.png"
        Image.fromarray(seven.astype(np.uint16) * 257).save(path)
        got = data.prepare_image(path, PREP)
    elif kind == "32-bit int TIFF":
        path = tmp_path / "seven.tif"
        Image.fromarray((seven.astype(np.int64) * (2**31 - 1) // 255).astype(np.int32)).save(path)
        got = data.prepare_image(path, PREP)
    elif kind == "float TIFF":
        path = tmp_path / "seven.tif"
        Image.fromarray(seven.astype(np.float32) / 255).save(path)
        got = data.prepare_image(path, PREP)
    elif kind == "uint16 array":
        got = data.prepare_image(seven.astype(np.uint16) * 257, PREP)
    elif kind == "bool array":
        expected = data.prepare_image(np.where(seven < 128, 0, 255).astype(np.uint8), PREP)
        got = data.prepare_image(seven >= 128, PREP)
    else:
        got = data.prepare_image(seven / 255, PREP)
    record_kind = "images: high bit depth"
    check_case(record_kind, lambda: got,
               lambda g: np.testing.assert_allclose(g, expected, atol=2 / 0.31 / 255))


@pytest.mark.parametrize("kind", ["bomb 65535x65535", "truncated PNG", "random bytes", "fifo",
                                  "directory", "0x0 array", "NaN array", "0-255 floats",
                                  "complex array", "empty file"])
def test_crafted_images(tmp_path, kind):
    path = tmp_path / "image.png"
    image = path
    if kind == "bomb 65535x65535":
        path.write_bytes(fz.png_claiming(65535, 65535))
    elif kind == "truncated PNG":
        path.write_bytes(fz.png_bytes(_seven())[:60])
    elif kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(300))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "empty file":
        path.write_bytes(b"")
    else:
        image = {"0x0 array": np.zeros((0, 0), np.uint8),
                 "NaN array": np.full((28, 28), np.nan),
                 "0-255 floats": _seven().astype(np.float64),
                 "complex array": np.ones((28, 28), complex)}[kind]
    error = check_case("images: crafted", bounded(lambda: data.prepare_image(image, PREP)))
    assert isinstance(error, DataError)
    assert "\n" not in str(error)


@FUZZ
@given(height=st.integers(0, 40), width=st.integers(0, 40),
       dtype=st.sampled_from([np.uint8, np.uint16, np.int64, np.bool_, np.float32, np.float64]),
       channels=st.sampled_from([None, 1, 3, 4]), seed=st.integers(0, 100))
def test_prepare_image_on_drawn_arrays(height, width, dtype, channels, seed):
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels is None else (height, width, channels)
    if np.dtype(dtype).kind == "f":
        array = rng.random(shape).astype(dtype)
    elif dtype is np.bool_:
        array = rng.random(shape) > 0.7
    else:
        array = rng.integers(0, np.iinfo(dtype).max if dtype != np.int64 else 1000, shape,
                             dtype=dtype)

    def check(x):
        assert x.shape == (1, 1, 28, 28) and np.isfinite(x).all()

    check_case("images: drawn arrays", lambda: data.prepare_image(array, PREP), check)
