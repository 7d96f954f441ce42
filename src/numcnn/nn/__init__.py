"""Layers, containers and losses, named and used as in ``torch.nn``."""

from . import (
    init,  # noqa: F401
    utils,  # noqa: F401
)
from .activation import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .module import Identity, Module, Parameter, Residual, Sequential  # noqa: F401
from .normalization import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .pooling1d import *  # noqa: F401,F403
from .upsampling import *  # noqa: F401,F403
