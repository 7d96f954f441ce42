"""The backend seam: context-local switches, the thread-safe BLAS rule, two models trained in two
threads at once, and each instruction-set variant of the kernels against the NumPy reference."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest

import numcnn
from numcnn import backend, nn, optim
from numcnn.backend import policy

needs_kernels = pytest.mark.skipif(not backend.available(),
                                   reason="the compiled kernels were not built")


def _in_thread(fn):
    """Run ``fn()`` in a new thread; return what it returned (or raise what it raised)."""
    result = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as error:  # handed back to the test
            result["error"] = error

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=120)
    assert not thread.is_alive()
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_no_grad_in_one_thread_does_not_touch_another():
    layer = nn.Linear(3, 2)
    x = np.ones((4, 3), np.float32)
    with numcnn.no_grad():
        assert not numcnn.is_grad_enabled()
        assert _in_thread(numcnn.is_grad_enabled)        # the other thread keeps gradients on

        def other_thread_trains():
            layer(x)
            return layer.backward(np.ones((4, 2), np.float32)).shape
        assert _in_thread(other_thread_trains) == (4, 3)  # its forward kept the cache
    assert numcnn.is_grad_enabled()


def test_use_kernels_in_one_thread_does_not_touch_another():
    with backend.use_kernels(False):
        assert not backend.enabled()
        assert _in_thread(backend.enabled) == backend.available()
    assert backend.enabled() == backend.available()


def _small_model(seed):
    numcnn.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(16 * 6 * 6, 10))


def _train(model, seed, steps=6):
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    crit = nn.CrossEntropyLoss()
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 32)
    for _ in range(steps):
        opt.zero_grad()
        crit(model(x), y)
        model.backward_params(crit.backward())
        opt.step()
    return {k: v.copy() for k, v in model.state_dict().items()}


def test_two_threads_train_two_models_at_once():
    """Each thread's result equals the same training run alone (the kernels, the BLAS rule and
    grad mode, shared by the process, are not disturbed by the other thread). The models are
    built first: numcnn's seeded generator, like PyTorch's, is one for the process."""
    alone = [_train(_small_model(seed), seed) for seed in (1, 2)]
    models = [_small_model(seed) for seed in (1, 2)]
    results = [None, None]
    barrier = threading.Barrier(2)

    def worker(i):
        barrier.wait()
        results[i] = _train(models[i], i + 1)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for got, expected in zip(results, alone):
        assert got is not None
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6,
                                       err_msg=key)


def _blas_threads():
    import threadpoolctl

    return [lib["num_threads"] for lib in threadpoolctl.threadpool_info()
            if lib["user_api"] == "blas"]


@needs_kernels
def test_blas_rule_is_thread_safe():
    """Many threads entering and leaving the one-thread rule at once leave the BLAS with the
    thread count it had (a process-global counter without a lock could restore too early or
    leave one thread behind)."""
    before = _blas_threads()
    a = np.ones((64, 64), np.float32)

    def products():
        for _ in range(200):
            backend.matmul(a, a)

    threads = [threading.Thread(target=products) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert _blas_threads() == before


def test_every_op_records_its_implementation():
    """One cache key, ``impl``, in every op that can take the kernels; its backward reads that."""
    from numcnn import functional as F

    x = np.random.default_rng(0).standard_normal((64, 4, 8, 8)).astype(np.float32)
    w = np.random.default_rng(1).standard_normal((4, 4, 3, 3)).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, 1, 1)
    assert cache["impl"] in (policy.KERNELS, policy.NUMPY)
    assert F.relu_forward(y)[1]["impl"] in (policy.KERNELS, policy.NUMPY)
    assert F.batch_norm_forward(y, np.zeros(4, np.float32), np.ones(4, np.float32),
                                training=True)[1]["impl"] in (policy.KERNELS, policy.NUMPY)
    assert F.max_pool2d_forward(y, 2)[1]["impl"] in (policy.KERNELS, policy.NUMPY_BLOCKS)
    with backend.use_kernels(False):
        assert F.conv2d_forward(x, w, None, 1, 1)[1]["impl"] == policy.NUMPY
        assert F.relu_forward(y)[1]["impl"] == policy.NUMPY
        assert F.max_pool2d_forward(y, 2)[1]["impl"] == policy.NUMPY_BLOCKS


MALLOPT_SPY = r"""
import ctypes, sys
calls = []
class Spy(ctypes.CDLL):
    def __getattr__(self, name):
        if name == "mallopt":
            calls.append(name)
        return super().__getattr__(name)
ctypes.CDLL = Spy
import numcnn
import numcnn.functional, numcnn.nn, numcnn.train
assert not calls, "import numcnn changed the allocator"
numcnn.tune_malloc()
assert calls == ["mallopt"] or not sys.platform.startswith("linux"), calls
print("ok")
"""


def test_import_does_not_change_the_allocator():
    """``import numcnn`` leaves malloc alone; the CLI and the bench opt in (numcnn.tune_malloc)."""
    env = {k: v for k, v in os.environ.items() if k != "NUMCNN_MALLOC_TUNING"}
    out = subprocess.run([sys.executable, "-c", MALLOPT_SPY], capture_output=True, text=True,
                         timeout=120, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def _cpu_level():
    from numcnn.backend import _lib

    return _lib._cpu_level()


VARIANT_CHECK = r"""
import numpy as np, torch, torch.nn.functional as TF
from numcnn import backend, functional as F
assert backend.variant() == {variant!r}, backend.variant()
assert backend.VECTOR_FLOATS == {floats}
rng = np.random.default_rng(3)
cases = [((64, 4, 10, 9), (8, 4, 3, 2), 1, "same"),   # main kernels, uneven padding
         ((64, 3, 12, 12), (17, 3, 3, 3), (2, 1), 1),  # strided rows
         ((1, 5, 9, 11), (40, 5, 3, 3), 1, 1),          # a single image, many channels
         ((1, 2, 8, 8), (6, 2, 3, 3), (2, 1), 1)]       # a single image, strided
for shape, wshape, stride, pad in cases:
    x = rng.standard_normal(shape).astype(np.float32)
    w = (rng.standard_normal(wshape) / np.sqrt(np.prod(wshape[1:]))).astype(np.float32)
    y, cache = F.conv2d_forward(x, w, None, stride, pad)
    assert cache["impl"] != "numpy", cache["impl"]
    g = rng.standard_normal(y.shape).astype(np.float32)
    gx, gw, _ = F.conv2d_backward(g, cache)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = TF.conv2d(xt, wt, None, stride, pad)
    yt.backward(torch.tensor(g))
    for a, e in ((y, yt), (gx, xt.grad), (gw, wt.grad)):
        e = e.detach().numpy()
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=2e-5 * max(1, np.abs(e).max()))
x = rng.standard_normal((32, 8, 16, 16)).astype(np.float32)
y = F.conv2d(x, rng.standard_normal((8, 8, 1, 1)).astype(np.float32))  # a CHWN map
r, c = F.relu_forward(y)
assert c["impl"] == "kernels"
np.testing.assert_array_equal(r, np.maximum(y, 0))
p, c = F.max_pool2d_forward(r, 2)
assert c["impl"] == "kernels"
np.testing.assert_array_equal(p, TF.max_pool2d(torch.tensor(np.ascontiguousarray(r)), 2).numpy())
print("ok")
"""


@needs_kernels
@pytest.mark.parametrize("variant,level,floats", [("baseline", 1, 4), ("avx2", 2, 8),
                                                  ("avx512", 3, 16)])
def test_each_cpu_variant_matches_torch(variant, level, floats):
    """``NUMCNN_CPU`` forces each built variant in turn (the ones this CPU can run)."""
    if _cpu_level() < level:
        pytest.skip(f"this CPU cannot run the {variant} variant")
    env = dict(os.environ, NUMCNN_CPU=variant)
    out = subprocess.run([sys.executable, "-c", VARIANT_CHECK.format(variant=variant,
                                                                      floats=floats)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


def test_an_unknown_cpu_variant_is_refused_with_one_clear_error():
    """The command refuses to run (one line, exit 2); in Python numcnn runs on NumPy and
    ``backend.load_error()`` says why."""
    env = dict(os.environ, NUMCNN_CPU="avx9000", NUMCNN_KERNELS="1")
    out = subprocess.run([sys.executable, "-m", "numcnn", "summary", "small-cnn"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "numcnn: error: NUMCNN_CPU must be one of baseline, avx2, avx512, got 'avx9000'"]
    code = "import numcnn; print(numcnn.backend.available(), numcnn.backend.load_error())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("False NUMCNN_CPU must be one of baseline, avx2, avx512, got "
                                  "'avx9000'")


def test_a_kernels_switch_other_than_0_or_1_is_refused():
    env = dict(os.environ, NUMCNN_KERNELS="banana")
    out = subprocess.run([sys.executable, "-m", "numcnn", "summary", "small-cnn"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "numcnn: error: NUMCNN_KERNELS must be 0 (NumPy alone) or 1 (the compiled kernels where "
        "built), got 'banana'"]


def test_is_chwn_is_false_for_nchw_and_other_layouts():
    """The one layout predicate: true only for the CHWN memory a convolution returns (cosmic-ray
    found ``and`` -> ``or`` survived)."""
    from numcnn.backend.layout import is_chwn, new_map

    nchw = np.zeros((2, 3, 4, 5), np.float32)
    assert not is_chwn(nchw)
    assert not is_chwn(np.asfortranarray(nchw))
    assert not is_chwn(np.zeros((2, 3), np.float32))
    assert is_chwn(new_map((2, 3, 4, 5), np.float32, chwn=True))


def test_max_pool_blocks_of_more_than_255_positions_stay_off_the_kernel():
    """The kernel keeps each winner as a uint8 code, so blocks of 16x16 = 256 positions must go
    to NumPy (cosmic-ray found ``kh * kw`` -> ``kh / kw`` survived); the gradient still goes
    where PyTorch sends it."""
    import torch
    import torch.nn.functional as TF

    from numcnn import functional as F
    from numcnn.backend.layout import new_map

    rng = np.random.default_rng(0)
    x = new_map((16, 2, 32, 32), np.float32, chwn=True)
    x[...] = rng.standard_normal(x.shape)
    y, cache = F.max_pool2d_forward(x, 16)
    assert cache["impl"] == policy.NUMPY_BLOCKS
    g = rng.standard_normal(y.shape).astype(np.float32)
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    TF.max_pool2d(xt, 16).backward(torch.tensor(g))
    np.testing.assert_array_equal(np.ascontiguousarray(F.max_pool2d_backward(g, cache)),
                                  xt.grad.numpy())


def test_float64_maps_never_reach_the_float32_elementwise_kernel():
    """A float64 map large enough for the kernels stays on NumPy and is exact (cosmic-ray found
    the dtype test of ``policy.elementwise`` could be weakened unnoticed)."""
    from numcnn import functional as F
    from numcnn.backend.layout import new_map

    rng = np.random.default_rng(1)
    x = new_map((16, 8, 32, 32), np.float64, chwn=True)
    x[...] = rng.standard_normal(x.shape)
    y, cache = F.relu_forward(x)
    assert cache["impl"] == policy.NUMPY
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    g = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(F.relu_backward(g, cache), g * (x > 0))
