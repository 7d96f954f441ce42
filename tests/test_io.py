"""Model files and checkpoints: exact round trips, refusal of bad files, atomic writes."""

import json
import math
import os
import pickle
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
from PIL import Image

import numcnn
from numcnn import io, nn, optim
from numcnn.errors import ModelFileError


def conv_model():
    """Convolution, batch norm, pooling, a residual block and a linear head (8x8 inputs)."""
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4))),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(4 * 4 * 4, 3))


def tiny_model():
    return nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))


def trained(model, shape, dtype=np.float32, steps=3, seed=0):
    """The model after a few training-mode forwards (batch-norm statistics moved)."""
    rng = np.random.default_rng(seed)
    model.to(dtype).train()
    for _ in range(steps):
        model(rng.standard_normal(shape).astype(dtype))
    return model


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_round_trip_is_exact(tmp_path, dtype):
    model = trained(conv_model(), (6, 1, 8, 8), dtype)
    path = tmp_path / "model.numcnn"
    metadata = {"classes": list("abc"), "preprocessing": {"mean": 0.1307, "std": 0.3081},
                "summary": {"epochs": 2, "accuracy": np.float32(0.5)}}
    numcnn.save(model, path, metadata=metadata)

    loaded = numcnn.load(path)
    assert not loaded.training and all(not m.training for m in loaded.modules())
    assert loaded.metadata == {"classes": ["a", "b", "c"],
                               "preprocessing": {"mean": 0.1307, "std": 0.3081},
                               "summary": {"epochs": 2, "accuracy": 0.5}}
    state, loaded_state = model.state_dict(), loaded.state_dict()
    assert list(loaded_state) == list(state)
    for key, value in state.items():
        assert loaded_state[key].dtype == value.dtype, key
        assert loaded_state[key].shape == value.shape, key
        np.testing.assert_array_equal(loaded_state[key], value, err_msg=key)
    tracked = loaded_state["1.num_batches_tracked"]
    assert tracked.shape == () and tracked.dtype == np.int64 and tracked == 3

    model.eval()
    x = np.random.default_rng(9).standard_normal((5, 1, 8, 8)).astype(dtype)
    with numcnn.no_grad():
        out = loaded(x)
        assert out.dtype == dtype
        np.testing.assert_array_equal(out, model(x))


def test_the_weights_are_a_plain_safetensors_file(tmp_path):
    model = trained(conv_model(), (6, 1, 8, 8))
    numcnn.save(model, tmp_path / "m.numcnn")
    tensors = safetensors.numpy.load_file(str(tmp_path / "m.numcnn"))
    state = model.state_dict()
    assert sorted(tensors) == sorted(state)
    assert all(np.array_equal(tensors[k], state[k]) for k in state)
    header = io.read_header(tmp_path / "m.numcnn")
    assert header["format"] == "numcnn-model" and header["version"] == 1
    assert header["architecture"] == numcnn.models.to_spec(model)
    assert header["tensors"]["0.weight"] == {"dtype": "float32", "shape": [4, 1, 3, 3]}


def test_a_loaded_model_saves_again_with_its_metadata(tmp_path):
    numcnn.save(tiny_model(), tmp_path / "a", metadata={"classes": [0, 1]})
    numcnn.save(numcnn.load(tmp_path / "a"), tmp_path / "b")
    assert numcnn.load(tmp_path / "b").metadata == {"classes": [0, 1]}
    # (not byte-identical: safetensors writes its metadata map in no fixed order)
    assert io.read_header(tmp_path / "a") == io.read_header(tmp_path / "b")


def test_metadata_must_be_json(tmp_path):
    with pytest.raises(numcnn.NumcnnError, match="metadata must be JSON-serialisable"):
        numcnn.save(tiny_model(), tmp_path / "m", metadata={"f": object()})
    with pytest.raises(TypeError, match="metadata must be a dict"):
        numcnn.save(tiny_model(), tmp_path / "m", metadata=[1])
    assert not list(tmp_path.iterdir())


# -- refusals ------------------------------------------------------------------------------------
@pytest.fixture
def model_bytes(tmp_path):
    numcnn.save(trained(tiny_model(), (4, 2)), tmp_path / "tiny.numcnn", metadata={"a": 1})
    return (tmp_path / "tiny.numcnn").read_bytes()


def load_bytes(tmp_path, raw, name="bad.numcnn"):
    path = tmp_path / name
    path.write_bytes(raw)
    return numcnn.load(path)


def test_every_truncation_is_refused(tmp_path, model_bytes):
    (header_size,) = struct.unpack("<Q", model_bytes[:8])
    for length in range(len(model_bytes)):
        with pytest.raises(ModelFileError):
            load_bytes(tmp_path, model_bytes[:length])
    with pytest.raises(ModelFileError, match="the file is empty"):
        load_bytes(tmp_path, b"")
    with pytest.raises(ModelFileError, match="only 5 bytes, too short"):
        load_bytes(tmp_path, model_bytes[:5])
    with pytest.raises(ModelFileError, match="truncated: the header alone should be"):
        load_bytes(tmp_path, model_bytes[:8 + header_size // 2])
    with pytest.raises(ModelFileError, match="truncated: the tensors need"):
        load_bytes(tmp_path, model_bytes[:-3])


@pytest.mark.parametrize("flip", [0x01, 0x80])
def test_every_flipped_byte_is_refused(tmp_path, model_bytes, flip):
    """No single corrupted byte anywhere (header, metadata, checksum, weights) goes unnoticed."""
    path = tmp_path / "bad.numcnn"
    for position in range(len(model_bytes)):
        raw = bytearray(model_bytes)
        raw[position] ^= flip
        path.write_bytes(bytes(raw))
        with pytest.raises(ModelFileError):
            numcnn.load(path)
            pytest.fail(f"byte {position} flipped with {flip:#04x} was not detected")


def test_a_corrupted_weight_is_caught_by_the_checksum(tmp_path, model_bytes):
    raw = bytearray(model_bytes)
    raw[-1] ^= 0x01  # the last byte of the last tensor: a plausible file with a wrong value
    with pytest.raises(ModelFileError, match="corrupted: the checksum .* does not match"):
        load_bytes(tmp_path, bytes(raw))


def test_foreign_files_are_refused_saying_what_they_are(tmp_path):
    model = tiny_model()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "image.png")
    with pytest.raises(ModelFileError, match=r"expected a numcnn model file .* but this is a PNG"):
        numcnn.load(tmp_path / "image.png")

    (tmp_path / "model.pkl").write_bytes(pickle.dumps(model.state_dict()))
    with pytest.raises(ModelFileError, match="a Python pickle .*can run arbitrary code"):
        numcnn.load(tmp_path / "model.pkl")

    torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / "model.pt")
    with pytest.raises(ModelFileError, match="a zip archive .*PyTorch"):
        numcnn.load(tmp_path / "model.pt")

    safetensors.numpy.save_file(dict(model.state_dict()), str(tmp_path / "plain.safetensors"))
    with pytest.raises(ModelFileError, match="a plain safetensors file without numcnn metadata "
                                             r"\(tensors: 0\.bias, 0\.weight"):
        numcnn.load(tmp_path / "plain.safetensors")

    np.save(tmp_path / "array.npy", np.zeros(3))
    with pytest.raises(ModelFileError, match="a NumPy .npy file"):
        numcnn.load(tmp_path / "array.npy")

    (tmp_path / "spec.json").write_text(json.dumps([{"type": "ReLU"}]))
    with pytest.raises(ModelFileError, match="a JSON or text file .*load_spec"):
        numcnn.load(tmp_path / "spec.json")

    (tmp_path / "noise").write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(ModelFileError, match="the first bytes are not a safetensors header"):
        numcnn.load(tmp_path / "noise")

    with pytest.raises(ModelFileError, match="is a directory"):
        numcnn.load(tmp_path)


def crafted(tmp_path, document, tensors, name="crafted.numcnn"):
    """A file with a valid checksum around a chosen document: what a hostile writer could do."""
    path = tmp_path / name
    path.write_bytes(io._serialise(document, tensors))
    return path


def test_a_file_naming_an_unregistered_class_is_refused(tmp_path):
    for evil in ("os.system", "Module", "numcnn.io.save", "CrossEntropyLoss"):
        document = {"format": "numcnn-model", "version": 1, "metadata": {},
                    "architecture": {"type": "Sequential",
                                     "layers": [{"type": "ReLU"}, {"type": evil, "command": "ls"}]}}
        with pytest.raises(ModelFileError, match=r"the architecture cannot be built: "
                                                 rf"layers\[1\]: unknown layer type '{evil}'"):
            numcnn.load(crafted(tmp_path, document, {}))


def test_weights_that_do_not_fit_the_architecture_are_refused(tmp_path):
    spec = numcnn.models.to_spec(nn.Sequential(nn.Linear(3, 2)))
    document = {"format": "numcnn-model", "version": 1, "architecture": spec, "metadata": {}}
    good = {"0.weight": np.zeros((2, 3), np.float32), "0.bias": np.zeros(2, np.float32)}
    assert numcnn.load(crafted(tmp_path, document, good)).num_parameters() == 8

    wrong_shape = {**good, "0.weight": np.zeros((3, 3), np.float32)}
    with pytest.raises(ModelFileError, match=r"0\.weight: expected shape \(2, 3\), found \(3, 3\)"):
        numcnn.load(crafted(tmp_path, document, wrong_shape))
    with pytest.raises(ModelFileError, match=r"missing tensors \['0\.bias'\]"):
        numcnn.load(crafted(tmp_path, document, {"0.weight": good["0.weight"]}))
    with pytest.raises(ModelFileError, match=r"unexpected tensors \['1\.weight'\]"):
        numcnn.load(crafted(tmp_path, document, {**good, "1.weight": good["0.bias"]}))
    with pytest.raises(ModelFileError, match=r"0\.bias: expected a floating-point tensor"):
        numcnn.load(crafted(tmp_path, document, {**good, "0.bias": np.zeros(2, np.int64)}))


def test_other_formats_and_versions_are_refused(tmp_path):
    spec = numcnn.models.to_spec(nn.Sequential(nn.ReLU()))
    newer = {"format": "numcnn-model", "version": 2, "architecture": spec, "metadata": {}}
    with pytest.raises(ModelFileError, match="version 2 is not one this numcnn reads"):
        numcnn.load(crafted(tmp_path, newer, {}))
    other = {"format": "something-else", "version": 1}
    with pytest.raises(ModelFileError, match="expected format 'numcnn-model' .* 'something-else'"):
        numcnn.load(crafted(tmp_path, other, {}))


# -- atomic writes -------------------------------------------------------------------------------
def test_a_failed_save_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "model.numcnn"
    numcnn.save(tiny_model(), path)
    before = path.read_bytes()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(io.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        numcnn.save(conv_model(), path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["model.numcnn"]
    numcnn.load(path)


def test_an_interrupted_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "out.bin"
    io.atomic_write(path, b"old")

    def write_half(file):
        file.write(b"new but only ha")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        io.atomic_write(path, write_half)
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]
    io.atomic_write(path, lambda file: file.write(b"new"))
    assert path.read_bytes() == b"new"
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


# -- checkpoints ---------------------------------------------------------------------------------
class FakeOptimizer:
    """An optimizer whose state holds every kind of value a state dict may hold."""

    def __init__(self, state=None):
        self.state = state

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


ODD_STATE = {
    "state": {0: {"step": 3, "exp_avg": np.arange(6, dtype=np.float32).reshape(2, 3),
                  "count": np.array(4, dtype=np.int64), "scale": np.float32(0.5),
                  "seen": np.int64(7)},
              1: {"step": 3, "momentum_buffer": None}},
    "param_groups": [{"lr": 0.01, "betas": (0.9, 0.999), "params": [0, 1], "nesterov": False,
                      "best": math.inf, "worst": -math.inf, "nothing": math.nan,
                      "names": ["w", "b"], "nested": [(1, 2), {"__tuple__": 1}]}],
}


def assert_same(a, b, where="state"):
    """Equal values of equal types all the way down (tuples stay tuples, int keys stay ints)."""
    assert type(a) is type(b), f"{where}: {type(a)} != {type(b)}"
    if isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        np.testing.assert_array_equal(a, b, err_msg=where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), where
    else:
        assert a == b and getattr(a, "dtype", None) == getattr(b, "dtype", None), where


def test_checkpoint_round_trip_keeps_every_value_and_type(tmp_path):
    model = trained(conv_model(), (6, 1, 8, 8))
    pcg = np.random.default_rng(42)
    mt = np.random.Generator(np.random.MT19937(7))
    extra = {"epoch": 3, "step": 120, "history": {"loss": [1.0, 0.5], "val_loss": [None, 0.7]},
             "rng": [pcg.bit_generator.state, mt.bit_generator.state], "best": math.inf}
    path = tmp_path / "run.ckpt"
    io.save_checkpoint(path, model, FakeOptimizer(ODD_STATE), extra, metadata={"note": "x"})

    restored = FakeOptimizer()
    result = io.load_checkpoint(path, optimizer=restored)
    assert_same(restored.state, ODD_STATE)
    assert_same(result["optimizer_state"], ODD_STATE)
    assert result["metadata"] == {"note": "x"}
    assert result["extra"]["epoch"] == 3 and result["extra"]["best"] == math.inf
    assert result["extra"]["history"] == extra["history"]
    expected_draws = (pcg.random(3), mt.random(3))
    pcg2, mt2 = np.random.default_rng(), np.random.Generator(np.random.MT19937())
    pcg2.bit_generator.state, mt2.bit_generator.state = result["extra"]["rng"]
    np.testing.assert_array_equal(pcg2.random(3), expected_draws[0])
    np.testing.assert_array_equal(mt2.random(3), expected_draws[1])

    state = model.state_dict()
    for loaded in (result["model"], numcnn.load(path)):  # a checkpoint is a model file too
        loaded_state = loaded.state_dict()
        assert list(loaded_state) == list(state)
        assert all(np.array_equal(loaded_state[k], state[k]) for k in state)


def mse_step(model, optimizer, x, y):
    out = model(x)
    optimizer.zero_grad()
    model.backward(2 * (out - y) / out.size)
    optimizer.step()


@pytest.mark.parametrize("make_optimizer", [
    lambda params: optim.Adam(params, lr=1e-2),
    lambda params: optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True),
])
def test_resuming_from_a_checkpoint_continues_exactly(tmp_path, make_optimizer):
    def fresh():
        numcnn.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Tanh(), nn.Linear(8, 2))
        return model, make_optimizer(model.parameters())

    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((16, 4)).astype(np.float32),
                rng.standard_normal((16, 2)).astype(np.float32)) for _ in range(5)]
    model, optimizer = fresh()
    for x, y in batches[:3]:
        mse_step(model, optimizer, x, y)
    io.save_checkpoint(tmp_path / "c.ckpt", model, optimizer, {"epoch": 3})
    for x, y in batches[3:]:
        mse_step(model, optimizer, x, y)

    numcnn.manual_seed(99)
    resumed, resumed_optimizer = fresh()
    resumed_optimizer_params = [p for g in resumed_optimizer.param_groups for p in g["params"]]
    assert io.load_checkpoint(tmp_path / "c.ckpt", resumed, resumed_optimizer)["extra"] == {
        "epoch": 3}
    assert resumed.training  # a model passed in keeps its mode
    assert [p for g in resumed_optimizer.param_groups for p in g["params"]] == \
        resumed_optimizer_params
    for x, y in batches[3:]:
        mse_step(resumed, resumed_optimizer, x, y)
    expected = model.state_dict()
    for key, value in resumed.state_dict().items():
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def test_checkpoint_errors(tmp_path):
    numcnn.save(tiny_model(), tmp_path / "model.numcnn")
    with pytest.raises(ModelFileError, match="expected a checkpoint .* model file without "
                                             "training state"):
        io.load_checkpoint(tmp_path / "model.numcnn")
    io.save_checkpoint(tmp_path / "c.ckpt", tiny_model(), None, {"epoch": 1})
    with pytest.raises(ModelFileError, match="holds no optimizer state"):
        io.load_checkpoint(tmp_path / "c.ckpt", optimizer=FakeOptimizer())
    with pytest.raises(ModelFileError, match=r"weights do not match the architecture: missing "
                                             r"tensors \['2\.weight'"):
        io.load_checkpoint(tmp_path / "c.ckpt", model=nn.Sequential(
            nn.Linear(2, 2), nn.BatchNorm1d(2), nn.Linear(2, 2)))
    with pytest.raises(numcnn.NumcnnError, match=r"extra\['f'\]: a function cannot be saved"):
        io.save_checkpoint(tmp_path / "d.ckpt", tiny_model(), None, {"f": lambda: 0})
    assert not (tmp_path / "d.ckpt").exists()


def test_loading_leaves_numcnn_s_random_generator_untouched(tmp_path):
    """Building the loaded model draws initial weights; the draws after a load must be those
    that would have come without it (a resumed run depends on it)."""
    path = tmp_path / "m.numcnn"
    numcnn.save(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)), path)
    numcnn.manual_seed(3)
    expected = numcnn.get_rng().random(5)
    numcnn.manual_seed(3)
    numcnn.load(path)
    np.testing.assert_array_equal(numcnn.get_rng().random(5), expected)
