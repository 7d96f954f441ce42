"""The library-wide random generator, seeded with :func:`numcnn.manual_seed`.

Weight initialisation, dropout masks, shuffling and augmentation draw from here, so one seed fixes a
whole run, as ``torch.manual_seed`` does.
"""

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
