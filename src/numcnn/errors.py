"""Exceptions raised by numcnn.

Every error numcnn raises on bad input derives from :class:`NumcnnError`, so a script can catch
them all at once, and each message says what was expected and what came.
"""


class NumcnnError(Exception):
    """Base class of every error numcnn raises on bad input."""


class ShapeError(NumcnnError, ValueError):
    """An input whose shape a layer cannot take (names the layer, the expected and the received shape)."""


class DTypeError(NumcnnError, TypeError):
    """An input whose dtype a layer cannot take."""


class ModelFileError(NumcnnError, ValueError):
    """A model file that is truncated, corrupted, or not a numcnn model."""


class DataError(NumcnnError, ValueError):
    """A dataset that could not be obtained or does not have the expected layout."""


class UnknownNameError(NumcnnError, ValueError):
    """A name given where a known one is expected (a preset, a dataset name, a name in a Python
    file) that is none of them and no file either; the message lists the names accepted. The
    command line treats it as a usage error (exit code 2)."""


class ArgumentError(NumcnnError, ValueError):
    """An argument whose value numcnn cannot take: a size that is not positive, an unknown mode,
    a probability outside [0, 1], a class index out of range ... (the message names the argument,
    what it must be and what came)."""


class ArgumentTypeError(NumcnnError, TypeError):
    """An argument of a type numcnn cannot take (e.g. a float where a count is needed)."""


class StateKeyError(NumcnnError, KeyError):
    """A state dict (of an optimizer or a schedule) that lacks a key it must hold."""

    def __str__(self) -> str:  # KeyError would show the message in quotes
        return str(self.args[0]) if self.args else ""


class AllocationError(NumcnnError, MemoryError):
    """An array too large for this machine (a layer of 10**12 features ...): the message gives
    its shape, dtype and size in bytes."""
