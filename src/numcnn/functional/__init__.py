"""Every operation as plain functions, as in ``torch.nn.functional``.

Each operation ``op`` comes in three forms: ``op(...)`` returns the output;
``op_forward(...)`` returns ``(output, cache)``; ``op_backward(grad_out, cache)`` returns the
gradients with respect to the inputs. Layers in :mod:`numcnn.nn` are thin wrappers over these.
"""

from ._windows import col2im, out_size, pad2d, pad2d_backward, resolve_padding, windows  # noqa: F401
from .activation import *  # noqa: F401,F403
from .activation_extra import *  # noqa: F401,F403
from .conv import *  # noqa: F401,F403
from .dropout import *  # noqa: F401,F403
from .linear import *  # noqa: F401,F403
from .loss import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .norms import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .pooling1d import *  # noqa: F401,F403
from .residual import *  # noqa: F401,F403
from .signal import *  # noqa: F401,F403
from .unpool import *  # noqa: F401,F403
from .upsample import *  # noqa: F401,F403
