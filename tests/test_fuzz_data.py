"""Fuzz suite, part 4: the data functions (one_hot, train_val_split, Preprocessing, DataLoader,
affine/Augment) over drawn shapes (size 0 included), dtypes, NaN/Inf and non-contiguous views.
Each case ends in a right result or a clear NumcnnError (tests/fuzzing.py)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from numcnn import data
from tests.fuzzing import check_case

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])
DTYPES = [np.uint8, np.int64, np.float32, np.float64, np.bool_, np.complex64]


@st.composite
def images(draw):
    rank = draw(st.sampled_from([0, 1, 3, 4, 4, 4]))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=rank, max_size=rank)))
    dtype = draw(st.sampled_from(DTYPES))
    x = np.asarray((np.random.default_rng(draw(st.integers(0, 99))).random(shape) * 255)
                   .astype(dtype))
    if x.dtype.kind == "f" and x.size and draw(st.booleans()):
        x.reshape(-1)[0] = draw(st.sampled_from([np.nan, np.inf]))
    if rank == 4 and draw(st.booleans()):
        x = x[:, :, ::-1]  # a view with a negative stride
    return x


@FUZZ
@given(y=st.lists(st.integers(-2, 12), max_size=8), num_classes=st.sampled_from([None, 0, 3, 10]),
       dtype=st.sampled_from([np.int64, np.uint8, np.float64]))
def test_one_hot(y, num_classes, dtype):
    y = np.asarray(y).astype(dtype) if dtype is not np.uint8 else np.asarray(y) % 256

    def check(out):
        assert out.shape == (len(y), out.shape[1])
        np.testing.assert_array_equal(out.argmax(axis=1) if len(y) else [], y if len(y) else [])

    check_case("data: one_hot", lambda: data.one_hot(y, num_classes), check)


@FUZZ
@given(n=st.integers(0, 20), labels=st.integers(0, 20),
       fraction=st.sampled_from([0.0, 0.1, 0.5, 0.99, 1.0, -0.1, float("nan")]))
def test_train_val_split(n, labels, fraction):
    x, y = np.arange(n * 2).reshape(n, 2), np.arange(labels)

    def check(parts):
        x_train, y_train, x_val, y_val = parts
        assert len(x_train) + len(x_val) == n and len(y_train) == len(x_train)
        assert sorted(x_train[:, 0].tolist() + x_val[:, 0].tolist()) == x[:, 0].tolist()

    check_case("data: train_val_split", lambda: data.train_val_split(x, y, fraction), check)


@FUZZ
@given(x=images())
def test_preprocessing_fit_and_apply(x):
    def check(prep):
        out = prep.apply(x)
        assert out.shape == x.shape and out.dtype.kind == "f"
        if x.dtype.kind in "biu" or np.isfinite(x).all():
            assert np.isfinite(out).all()

    check_case("data: Preprocessing", lambda: data.Preprocessing.fit(x), check)


@FUZZ
@given(x=images(), batch_size=st.sampled_from([1, 3, 64, 0, -1, 2.5]), shuffle=st.booleans(),
       augment=st.booleans())
def test_loader_and_augmentation(x, batch_size, shuffle, augment):
    y = np.arange(len(x)) if x.ndim else np.arange(0)
    transform = data.Augment(rotation=10, shift=1) if augment else None

    def run():
        loader = data.DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=0,
                                 transform=transform)
        return [(xb, yb) for xb, yb in loader]

    def check(batches):
        assert sum(len(yb) for _, yb in batches) == len(y)
        for xb, _ in batches:
            assert xb.shape[1:] == x.shape[1:]

    check_case("data: DataLoader and Augment", run, check)
