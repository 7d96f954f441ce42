"""What the fuzz suite (tests/test_fuzz_*.py) shares: one case runs, and ends in a correct result
or a NumcnnError whose message names what was expected and what came; every case is counted by
kind and outcome, so docs/reliability.md's table is measured (``NUMCNN_FUZZ_REPORT=file.json``
makes the test session write the counts there; ``tools/reliability_table.py`` prints the table).
"""

from __future__ import annotations

import re
from collections import Counter

from numcnn.errors import NumcnnError

OUTCOMES: Counter = Counter()  # (kind, outcome) -> cases
MEASURES: dict = {}            # name -> largest value measured (peak RSS, seconds)


def measure(name: str, value: float) -> None:
    MEASURES[name] = max(value, MEASURES.get(name, value))

# A clear message says what was expected and what came: these words (or a comparison) appear.
_CLEAR = re.compile(r"expected|must|got|should|needs|cannot|not|only|refused|too|no |missing|"
                    r"unknown|exceeds|more than|at most|holds|range|invalid|smaller|larger|empty|"
                    r"differ|fit|exceed", re.I)


def record(kind: str, outcome: str) -> None:
    OUTCOMES[(kind, outcome)] += 1


def check_case(kind: str, run, check=None):
    """Run ``run()``: a result is passed to ``check`` (which asserts it is right) and counted
    ``"result"``; a NumcnnError must be one clear line and is counted ``"clear error"``; any
    other exception fails the test (and is counted, so a failing suite shows it)."""
    try:
        value = run()
    except NumcnnError as error:
        message = str(error)
        assert message and _CLEAR.search(message), f"unclear message: {message!r}"
        record(kind, "clear error")
        return error
    except Exception as error:  # noqa: BLE001 - that is what the suite looks for
        record(kind, f"raw {type(error).__name__}")
        raise AssertionError(f"{kind}: raw {type(error).__name__}: {error}") from error
    if check is not None:
        check(value)
    record(kind, "result")
    return value


# -- crafted files, shared by test_fuzz_files.py and test_fuzz_cli.py -----------------------------
import gzip as _gzip  # noqa: E402
import io as _io  # noqa: E402
import json as _json  # noqa: E402
import struct as _struct  # noqa: E402
import zipfile as _zipfile  # noqa: E402
import zlib as _zlib  # noqa: E402

import numpy as _np  # noqa: E402

PREP = {"scale": 1 / 255, "mean": [0.13], "std": [0.31], "input_shape": [1, 28, 28]}
SMALL_SPEC = {"type": "Sequential", "layers": [
    {"type": "Conv2d", "in_channels": 1, "out_channels": 2, "kernel_size": 5, "stride": 3},
    {"type": "ReLU"}, {"type": "Flatten"},
    {"type": "Linear", "in_features": 2 * 8 * 8, "out_features": 10}]}


def model_document(architecture, metadata=None) -> dict:
    return {"format": "numcnn-model", "version": 1, "architecture": architecture,
            "metadata": {"preprocessing": PREP, "classes": list(range(10)),
                         **(metadata or {})}}


def small_tensors() -> dict:
    """Weights for SMALL_SPEC."""
    from numcnn import models

    return dict(models.build(SMALL_SPEC).state_dict())


def model_bytes(architecture=None, tensors=None, metadata=None) -> bytes:
    """A model file (checksum right) whose architecture and tensors are whatever is given
    (default: SMALL_SPEC and its weights)."""
    from numcnn import io

    architecture = SMALL_SPEC if architecture is None else architecture
    if tensors is None:
        tensors = small_tensors()
    return io._serialise(model_document(architecture, metadata), tensors)


def png_bytes(array) -> bytes:
    from PIL import Image

    buffer = _io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` 8-bit gray pixels (a decompression
    bomb: the data would be width*height bytes)."""
    def chunk(kind, data):
        return (_struct.pack(">I", len(data)) + kind + data
                + _struct.pack(">I", _zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = _struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", _zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def idx_bytes(array, dims=None, gz=False) -> bytes:
    array = _np.asarray(array, dtype=_np.uint8)
    dims = array.shape if dims is None else dims
    raw = bytes([0, 0, 8, len(dims)]) + _struct.pack(f">{len(dims)}I", *dims) + array.tobytes()
    return _gzip.compress(raw) if gz else raw


def gzip_bomb_idx(declared=(100_000, 100, 100), megabytes=900) -> bytes:
    """A gzip IDX file of about 1 KB per MB whose header declares ``declared`` and whose body
    is ``megabytes`` MB of zeros: one deflate block of 1 MB of zeros, made self-contained by a
    full flush, repeated (so building it costs nothing)."""
    header = bytes([0, 0, 8, len(declared)]) + _struct.pack(f">{len(declared)}I", *declared)
    compressor = _zlib.compressobj(9, _zlib.DEFLATED, -15)
    head = compressor.compress(header) + compressor.flush(_zlib.Z_FULL_FLUSH)
    zeros = b"\0" * (1 << 20)
    block = compressor.compress(zeros) + compressor.flush(_zlib.Z_FULL_FLUSH)
    tail = compressor.flush(_zlib.Z_FINISH)
    crc = _zlib.crc32(header)
    for _ in range(megabytes):
        crc = _zlib.crc32(zeros, crc)
    size = (len(header) + megabytes * len(zeros)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + head + block * megabytes + tail
            + _struct.pack("<II", crc & 0xFFFFFFFF, size))


def npz_bytes(arrays: dict, compressed=False) -> bytes:
    buffer = _io.BytesIO()
    (_np.savez_compressed if compressed else _np.savez)(buffer, **arrays)
    return buffer.getvalue()


def dataset_arrays(n=40, label_max=9, dtype=_np.uint8) -> dict:
    rng = _np.random.default_rng(1)
    return {"x_train": rng.integers(0, 255, (n, 28, 28)).astype(dtype),
            "y_train": rng.integers(0, label_max + 1, n),
            "x_test": rng.integers(0, 255, (n // 2, 28, 28)).astype(dtype),
            "y_test": _np.r_[rng.integers(0, 10, n // 2 - 1), label_max]}


def npz_zip_bomb(megabytes=300) -> bytes:
    """An .npz whose x_train member decompresses to ``megabytes`` MB of zeros (about 1 MB)."""
    header = _io.BytesIO()
    _np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                   "shape": (megabytes * 1024, 32, 32)})
    buffer = _io.BytesIO()
    with _zipfile.ZipFile(buffer, "w", _zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x_train.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())
            zeros = b"\0" * (1 << 20)
            for _ in range(megabytes):
                member.write(zeros)
        for key in ("y_train", "x_test", "y_test"):
            part = _io.BytesIO()
            _np.save(part, _np.zeros(2, _np.uint8))
            archive.writestr(f"{key}.npy", part.getvalue())
    return buffer.getvalue()


def npz_claiming_shape(shape=(10**6, 1000, 1000)) -> bytes:
    """An .npz whose x_train header claims ``shape`` but holds a few bytes."""
    header = _io.BytesIO()
    _np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                   "shape": shape})
    buffer = _io.BytesIO()
    with _zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("x_train.npy", header.getvalue() + b"\0" * 64)
        for key in ("y_train", "x_test", "y_test"):
            part = _io.BytesIO()
            _np.save(part, _np.zeros(2, _np.uint8))
            archive.writestr(f"{key}.npy", part.getvalue())
    return buffer.getvalue()


def json_bytes(value) -> bytes:
    return _json.dumps(value).encode()
