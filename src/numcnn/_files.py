"""Opening the files numcnn reads, so that no small or odd file can hang or exhaust memory.

- :func:`open_regular` opens a path without blocking and refuses at once what is not a regular
  file (a FIFO would block a plain ``open`` forever, a directory or a device is no data file).
- The limits below cap what a file's header or metadata may ask numcnn to allocate, beyond what
  the file itself holds: a decompressed size (zip, gzip) at most :data:`MAX_EXPANSION` times the
  compressed bytes (and never more than :data:`MAX_DECOMPRESSED`), images of at most
  :data:`MAX_IMAGE_PIXELS` pixels, recorded input shapes of at most :data:`MAX_INPUT_VALUES`
  values.
"""

from __future__ import annotations

import os
import stat

# zlib's own limit is about 1032:1; real datasets compress 2-10:1 (MNIST's images 4.8:1).
MAX_EXPANSION = 200
MAX_DECOMPRESSED = 4 << 30      # 4 GiB, whatever the ratio
MAX_IMAGE_PIXELS = 1 << 25      # 33.5 megapixels (Pillow warns at 89 and refuses at 179)
MAX_INPUT_VALUES = 1 << 20      # C * H * W of one recorded input image (3 x 512 x 512 fits)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def open_regular(path, error, expected: str):
    """Open ``path`` for binary reading; ``error(message)`` is raised at once (without blocking)
    when it is missing, cannot be opened or is not a regular file (a FIFO, a directory, a
    device), saying what was ``expected`` and what came. Returns the file object (its size is
    ``os.fstat(f.fileno()).st_size``)."""
    path = os.fspath(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise error(f"{path}: no such file; expected {expected}") from None
    except OSError as failure:  # permission, a name too long ...
        raise error(f"{path}: cannot be opened ({failure.strerror or failure}); expected "
                    f"{expected}") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise error(f"{path}: is {_kind(mode)}; expected {expected}")
        if hasattr(os, "O_NONBLOCK"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def looks_like_path(text) -> bool:
    """Whether a command-line value that is not found is meant as a file (it has a folder part or
    an extension: ``runs/x``, ``arch.json``) rather than as a name (``resnet-1000``): a missing
    file is a runtime failure, an unknown name a usage error."""
    text = os.fspath(text)
    return os.sep in text or "/" in text or os.path.splitext(text)[1] != ""


def file_size(file) -> int:
    return os.fstat(file.fileno()).st_size


def check_expansion(name: str, decompressed: int, compressed: int, error) -> None:
    """Refuse a declared decompressed size beyond :data:`MAX_EXPANSION` times the compressed
    size (a compression bomb) or beyond :data:`MAX_DECOMPRESSED`."""
    limit = min(MAX_DECOMPRESSED, max(MAX_EXPANSION * compressed, 1 << 20))
    if decompressed > limit:
        raise error(f"{name}: expected at most {limit:,} bytes once decompressed "
                    f"({MAX_EXPANSION}x the {compressed:,} compressed bytes, at most "
                    f"{MAX_DECOMPRESSED:,}), but it declares {decompressed:,}: refused as a "
                    f"compression bomb")
