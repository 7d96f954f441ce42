"""signal.correlate / signal.convolve against SciPy (method='direct'), NumPy and by hand."""

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from numcnn.errors import DTypeError, ShapeError
from numcnn.functional.signal import convolve, correlate

SETTINGS = settings(max_examples=50, deadline=None)


@st.composite
def array_pairs(draw):
    ndim = draw(st.sampled_from([1, 2]))
    a_shape = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    v_shape = tuple(draw(st.integers(1, 7)) for _ in range(ndim))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    return rng.standard_normal(a_shape), rng.standard_normal(v_shape)


def valid_allowed(a, v):
    return (all(n >= m for n, m in zip(a.shape, v.shape))
            or all(m >= n for n, m in zip(a.shape, v.shape)))


@SETTINGS
@given(array_pairs(), st.sampled_from(["full", "valid", "same"]))
def test_agrees_with_scipy_direct(pair, mode):
    a, v = pair
    for ours, theirs in [(correlate, scipy.signal.correlate), (convolve, scipy.signal.convolve)]:
        if mode == "valid" and not valid_allowed(a, v):
            with pytest.raises(ShapeError, match="at least as large as the other"):
                ours(a, v, mode)
            with pytest.raises(ValueError):
                theirs(a, v, mode=mode, method="direct")
            continue
        expected = theirs(a, v, mode=mode, method="direct")
        got = ours(a, v, mode)
        assert got.shape == expected.shape, (ours.__name__, a.shape, v.shape, mode)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@SETTINGS
@given(array_pairs())
def test_convolution_is_correlation_with_the_flipped_kernel(pair):
    a, v = pair
    flipped = v[::-1] if v.ndim == 1 else np.rot90(v, 2)
    for mode in ("full", "same"):
        np.testing.assert_allclose(convolve(a, v, mode), correlate(a, flipped, mode), rtol=1e-12)
    # full convolution commutes; full correlation of (v, a) is the reversed correlation of (a, v)
    np.testing.assert_allclose(convolve(a, v), convolve(v, a), rtol=1e-12, atol=1e-12)
    reverse = (slice(None, None, -1),) * a.ndim
    np.testing.assert_allclose(correlate(v, a), correlate(a, v)[reverse], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mode", ["full", "valid", "same"])
def test_1d_agrees_with_numpy(mode):
    rng = np.random.default_rng(0)
    for n, m in [(7, 3), (6, 4), (3, 7), (5, 5), (1, 4)]:
        a, v = rng.standard_normal(n), rng.standard_normal(m)
        if mode == "same" and m > n:
            continue  # NumPy's 'same' has length max(n, m); SciPy's (and ours) has length n
        np.testing.assert_allclose(convolve(a, v, mode), np.convolve(a, v, mode), atol=1e-12)
        np.testing.assert_allclose(correlate(a, v, mode), np.correlate(a, v, mode), atol=1e-12)


def test_small_examples_by_hand():
    a, v = np.array([1.0, 2.0, 3.0]), np.array([0.0, 1.0, 0.5])
    # convolve: z[k] = sum_i a[k - i] v[i]
    np.testing.assert_allclose(convolve(a, v), [0, 1, 2.5, 4, 1.5])
    np.testing.assert_allclose(convolve(a, v, "same"), [1, 2.5, 4])
    np.testing.assert_allclose(convolve(a, v, "valid"), [2.5])
    # correlate: z[k] = sum_i a[k + i] v[i], the kernel not flipped
    np.testing.assert_allclose(correlate(a, v), [0.5, 2, 3.5, 3, 0])
    np.testing.assert_allclose(correlate(a, v, "same"), [2, 3.5, 3])
    np.testing.assert_allclose(correlate(a, v, "valid"), [3.5])
    # 'valid' with the kernel longer than the input swaps the roles, as SciPy does
    np.testing.assert_allclose(correlate(v, a, "valid"), [3.5])
    np.testing.assert_allclose(correlate([1.0, 2.0], [1.0, 0.0, 0.0, 0.0], "valid"),
                               [0, 0, 1])
    # 2-D: a 2x2 kernel with one tap picks out a shifted copy of the input
    image = np.arange(9.0).reshape(3, 3)
    tap = np.array([[0.0, 0.0], [0.0, 1.0]])
    np.testing.assert_allclose(correlate(image, tap, "valid"), [[4, 5], [7, 8]])
    np.testing.assert_allclose(convolve(image, tap, "valid"), [[0, 1], [3, 4]])


def test_dtypes_follow_the_inputs():
    ints = np.arange(6)
    assert correlate(ints, np.array([1, 2, 3])).dtype == np.int64
    np.testing.assert_array_equal(correlate(ints, np.array([1, 2, 3])),
                                  scipy.signal.correlate(ints, [1, 2, 3], method="direct"))
    f32 = np.ones(5, np.float32)
    assert convolve(f32, np.ones(2, np.float32)).dtype == np.float32
    assert convolve(f32, np.ones(2)).dtype == np.float64


def test_errors():
    with pytest.raises(ShapeError, match=r"correlate: a and v must have the same number of "
                                         r"dimensions, got shapes \(3,\) and \(2, 2\)"):
        correlate(np.ones(3), np.ones((2, 2)))
    with pytest.raises(ShapeError, match=r"convolve: expected 1-D or 2-D arrays, got a of "
                                         r"shape \(2, 2, 2\)"):
        convolve(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ShapeError, match=r"for mode='valid' one array must be at least as large "
                                         r"as the other along every axis, got shapes \(5, 2\) "
                                         r"and \(3, 4\)"):
        correlate(np.ones((5, 2)), np.ones((3, 4)), "valid")
    with pytest.raises(ValueError, match=r"mode must be one of"):
        convolve(np.ones(3), np.ones(2), "circular")
    with pytest.raises(ShapeError, match=r"v is empty"):
        convolve(np.ones(3), np.ones(0))
    with pytest.raises(DTypeError, match=r"expected real numbers"):
        correlate(np.ones(3, complex), np.ones(2))
