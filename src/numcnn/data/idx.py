"""The IDX format of the MNIST files, read from its header.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, then ``ndim`` big-endian uint32
sizes, then the values in row-major order, big-endian. ``<type>`` is 08 (uint8), 09 (int8),
0B (int16), 0C (int32), 0D (float32) or 0E (float64). MNIST's images are ``00 00 08 03`` with
sizes (N, 28, 28); its labels ``00 00 08 01`` with size (N,). See http://yann.lecun.com/exdb/mnist/.
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

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
        DataError: the file cannot be read, is not gzip/IDX, or holds more or fewer bytes than its
            header announces.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise DataError(f"cannot read IDX file {path}: {err}") from None
    return parse_idx(blob, str(path))


def parse_idx(blob: bytes, name: str = "IDX data") -> np.ndarray:
    """:func:`read_idx` on bytes already in memory; ``name`` is what error messages call them."""
    if blob[:2] == _GZIP_MAGIC:
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as err:
            raise DataError(f"{name}: corrupt gzip data ({err})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] not in _TYPES or blob[3] == 0:
        raise DataError(
            f"{name} is not an IDX file: it starts with {blob[:4].hex(' ') or 'nothing'}, expected "
            "the magic number 00 00 <type> <ndim> with type 08, 09, 0b, 0c, 0d or 0e and ndim >= 1"
        )
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{name}: truncated header ({len(blob)} bytes, {ndim} dims need {header})")
    dims = struct.unpack(f">{ndim}I", blob[4:header])
    dtype = np.dtype(_TYPES[blob[2]])
    expected = math.prod(dims) * dtype.itemsize
    if len(blob) - header != expected:
        raise DataError(
            f"{name}: the header announces shape {dims} of {dtype.name} ({expected} bytes), "
            f"but {len(blob) - header} bytes follow it"
        )
    data = np.frombuffer(blob, dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order
