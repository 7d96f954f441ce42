"""The library-wide random generator, seeded with :func:`numcnn.manual_seed`.

Weight initialisation, dropout masks, shuffling and augmentation draw from here, so one seed fixes a
whole run, as ``torch.manual_seed`` does.
"""

import contextlib
import copy

import numpy as np

_rng = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed numcnn's random generator and return it."""
    global _rng
    _rng = np.random.default_rng(seed)
    return _rng


def get_rng() -> np.random.Generator:
    """The generator numcnn draws from."""
    return _rng


@contextlib.contextmanager
def kept_state():
    """Run a block whose draws from numcnn's generator leave no trace: the generator (and its
    state) in use before the block is put back after it. Loading a model uses it, since building
    the layers draws their initial weights before the saved ones replace them."""
    global _rng
    rng = _rng
    saved = copy.deepcopy(rng.bit_generator.state)
    try:
        yield
    finally:
        rng.bit_generator.state = saved
        _rng = rng
