"""numcnn: convolutional neural networks from first principles on NumPy.

>>> import numcnn as nc
>>> from numcnn import nn, optim
"""

from . import backend, functional, nn, optim  # noqa: F401
from ._grad import is_grad_enabled, no_grad  # noqa: F401
from ._memory import tune_malloc  # noqa: F401
from ._random import get_rng, manual_seed  # noqa: F401
from .errors import DataError, DTypeError, ModelFileError, NumcnnError, ShapeError  # noqa: F401
from .gradcheck import gradcheck  # noqa: F401  (the function; as torch.autograd.gradcheck)

__version__ = "0.1.0"


def __getattr__(name):
    # save/load live in numcnn.io, imported on first use so that `import numcnn` stays light.
    if name in ("save", "load"):
        from . import io
        return getattr(io, name)
    if name == "inference":  # numcnn.inference.compile(model, input_shape), on first use
        import importlib
        return importlib.import_module(".inference", __name__)
    raise AttributeError(f"module 'numcnn' has no attribute {name!r}")
