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
