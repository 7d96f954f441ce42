"""The IDX format of the MNIST files, read from its header.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32
sizes, then the values in row-major order, big-endian. ``<type>`` is 08 (uint8), 09 (int8),
0B (int16), 0C (int32), 0D (float32) or 0E (float64). MNIST's images are ``00 00 08 03`` with
sizes (N, 28, 28); its labels ``00 00 08 01`` with size (N,). See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from .._files import check_expansion, file_size, open_regular
from ..errors import DataError

__all__ = ["read_idx"]

_TYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"


def read_idx(path) -> np.ndarray:
    """Read an IDX file, gzip-compressed or not (told apart by its first bytes, not its name).

    Args:
        path: the file, e.g. ``train-images-idx3-ubyte.gz``.

    Returns:
        The array with the shape the header gives, in native byte order.

    Raises:
        DataError: the file cannot be read, is not a regular file, is not gzip/IDX, holds more
            or fewer bytes than its header announces, or its header announces more than the
            compressed file can hold (see :func:`numcnn._files.check_expansion`). The header is
            checked before anything is allocated, and a gzip file is decompressed only as far
            as the header allows.
    """
    path = Path(path)
    try:
        with open_regular(path, DataError, "an IDX file (MNIST's format)") as file:
            return _read_stream(file, file_size(file), str(path))
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None


def parse_idx(blob: bytes, name: str = "IDX data") -> np.ndarray:
    """:func:`read_idx` on bytes already in memory; ``name`` is what error messages call them."""
    return _read_stream(io.BytesIO(blob), len(blob), name)


def _read_stream(file, size: int, name: str) -> np.ndarray:
    compressed = file.read(2) == _GZIP_MAGIC
    file.seek(0)
    stream = gzip.GzipFile(fileobj=file, mode="rb") if compressed else file
    try:
        magic = stream.read(4)
        if len(magic) < 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _TYPES \
                or magic[3] == 0:
            raise DataError(
                f"{name} is not an IDX file: it starts with {magic.hex(' ') or 'nothing'}, "
                "expected the magic number 00 00 <type> <ndim> with type 08, 09, 0b, 0c, 0d or "
                "0e and ndim >= 1")
        ndim = magic[3]
        header = 4 + 4 * ndim
        sizes = stream.read(4 * ndim)
        if len(sizes) < 4 * ndim:
            raise DataError(f"{name}: truncated header ({4 + len(sizes)} bytes, {ndim} dims "
                            f"need {header})")
        dims = struct.unpack(f">{ndim}I", sizes)
        dtype = np.dtype(_TYPES[magic[2]])
        expected = math.prod(dims) * dtype.itemsize
        if compressed:
            check_expansion(name, header + expected, size, DataError)
        elif header + expected != size:
            raise DataError(f"{name}: expected {expected} bytes after the header (it announces "
                            f"shape {dims} of {dtype.name}), got {size - header}")
        data = bytearray(expected + 1)  # one byte more: a longer body is told apart
        view = memoryview(data)
        got = 0
        while got < len(data):
            n = stream.readinto(view[got:])
            if not n:
                break
            got += n
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"{name}: corrupt gzip data ({err})") from None
    if got != expected:
        more = "more" if got > expected else str(got)
        raise DataError(f"{name}: expected {expected} bytes after the header (it announces "
                        f"shape {dims} of {dtype.name}), got {more}")
    array = np.frombuffer(data, dtype, count=math.prod(dims)).reshape(dims)
    if dtype.byteorder == ">":  # to native byte order, in place (the buffer is ours)
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array
