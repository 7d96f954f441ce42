"""Speed benchmark: numcnn against PyTorch on real MNIST batches (issue 4).

Usage (from the repository root, with the test extra installed)::

    python bench/bench.py                        # both presets, 100 steps, 3 repeats
    python bench/bench.py --presets resnet-cifar # the ResNet of issue 9
    python bench/bench.py --steps 200 --repeats 5 --presets convnet-bn --json out.json
    python bench/bench.py --data path/to/mnist.npz

What it measures, each measurement in its own fresh worker process (``--worker``, JSON on stdout),
numcnn and PyTorch in alternation (ABBA order over the repeats), both with every core:

- training: batch 64, Adam (lr 1e-3) for the MNIST presets; for ``resnet-cifar`` batch 128, SGD
  (lr 0.01, momentum 0.9) on the digits padded to 3x32x32 (see ``CONFIGS``); cross-entropy,
  ``--steps`` timed steps after ``--warmup`` untimed ones, images/s; both libraries start from
  the SAME weights (numcnn's initialisation, copied into the PyTorch twin built from the numcnn model's spec) and see the same batches, so
  their losses agree step by step, which the report checks;
- inference in eval mode at batch 1 and batch 1,000 (the ResNet: batch 500; numcnn through a
  compiled inference plan, ``numcnn.inference.compile``, or with ``--numcnn-infer layers`` layer
  by layer under ``numcnn.no_grad()``; PyTorch under ``torch.inference_mode()``; ONNX Runtime,
  with ``--onnxruntime``, running the model exported by numcnn's own ``numcnn.onnx.export``, or
  the PyTorch twin by ``torch.onnx.export`` where numcnn's exporter refuses a layer; every graph
  optimisation on), images/s, and the peak memory of each;
- peak memory of each worker (``ru_maxrss``), and its baseline after the imports;
- the wall time of ``numcnn --help`` (median of 5 runs);
- with ``--parts health``: the cost of ``numcnn.health.HealthMonitor`` (what ``numcnn train``
  runs: per-layer statistics and the NaN guard) on a numcnn training step, as blocks of steps
  with and without it alternating in one process (target: under 5% of a step);
- numcnn's time per leaf layer (a Residual's block and shortcut taken apart), forward and
  backward, with FLOPs and effective GFLOP/s and their share of the float32 matrix-multiply peak
  of NumPy (and PyTorch's peak) measured in the same run; PyTorch's per-layer times (each layer
  run alone on the activations it sees in the model) for comparison.

The figures are medians over ``--repeats``; the ratio is numcnn / PyTorch for speeds (>= 1.0 means
numcnn is at least as fast) and numcnn / PyTorch for memory (<= 1.0 means numcnn uses no more).
See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BATCH = 64
LR = 1e-3
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PRESETS = ("convnet-bn", "small-cnn")
# Per preset: the training batch and optimizer, and the inference batches. The MNIST presets
# train at batch 64 with Adam; the ResNet (issue 9) at batch 128 with SGD and momentum, its
# images being the same MNIST digits padded to 32x32 and repeated over 3 channels (CIFAR's
# shape; the speed does not depend on what the pixels show).
CONFIGS = {
    "convnet-bn": {"batch": BATCH, "optimizer": "adam", "infer_batches": (1, 1000)},
    "small-cnn": {"batch": BATCH, "optimizer": "adam", "infer_batches": (1, 1000)},
    "resnet-cifar": {"batch": 128, "optimizer": "sgd", "infer_batches": (500,),
                     "input_shape": (3, 32, 32)},
}
SGD_LR, SGD_MOMENTUM = 0.01, 0.9


def config(preset: str) -> dict:
    return CONFIGS.get(preset, CONFIGS["convnet-bn"])


def as_input(images: np.ndarray, preset: str) -> np.ndarray:
    """MNIST batches (..., 1, 28, 28) as the preset's input: unchanged, or padded to 32x32 with
    the background value and repeated over 3 channels for a (3, 32, 32) model."""
    shape = config(preset).get("input_shape", (1, 28, 28))
    if shape == (1, 28, 28):
        return images
    background = np.float32(-MNIST_MEAN / MNIST_STD)
    pad = [(0, 0)] * (images.ndim - 2) + [(2, 2), (2, 2)]
    padded = np.pad(images, pad, constant_values=background)
    return np.ascontiguousarray(np.repeat(padded, shape[0], axis=-3))
# Thread limits that would keep a worker from using every core; the workers run without them.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")

# The presets' layer lists, used only when numcnn.models is not importable (the spec then comes
# from here). Keyword names are PyTorch's.
PRESET_LAYERS = {
    "small-cnn": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 4, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "Conv2d", "in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 5, "padding": 1},
        {"type": "ReLU"},
        {"type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 5, "padding": 1},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 200, "out_features": 64},
        {"type": "ReLU"},
        {"type": "Linear", "in_features": 64, "out_features": 10},
    ],
    "convnet-bn": [
        {"type": "Conv2d", "in_channels": 1, "out_channels": 16, "kernel_size": 5, "padding": 2},
        {"type": "BatchNorm2d", "num_features": 16},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Conv2d", "in_channels": 16, "out_channels": 32, "kernel_size": 5, "padding": 2},
        {"type": "BatchNorm2d", "num_features": 32},
        {"type": "ReLU"},
        {"type": "MaxPool2d", "kernel_size": 2},
        {"type": "Flatten"},
        {"type": "Linear", "in_features": 1568, "out_features": 10},
    ],
}


# -- data ------------------------------------------------------------------------------------------

def load_mnist_arrays(path: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Real MNIST as uint8/int arrays ``(x_train, y_train, x_test, y_test)``, images (n, 28, 28).

    From ``path`` (an .npz with keys x_train, y_train, x_test, y_test) when given, otherwise from
    ``numcnn.data.load_mnist()`` (which downloads and caches under NUMCNN_DATA or ~/.cache/numcnn).
    """
    if path is not None:
        with np.load(path) as data:
            return data["x_train"], data["y_train"], data["x_test"], data["y_test"]
    from numcnn.data import load_mnist

    loaded = load_mnist()  # a numcnn.data.Dataset: x_train (N, 1, 28, 28) uint8, y_train, ...
    return loaded.x_train, loaded.y_train, loaded.x_test, loaded.y_test


def normalise(images: np.ndarray) -> np.ndarray:
    """uint8 images (n, 28, 28) in [0, 255] -> float32 (n, 1, 28, 28), MNIST-standardised."""
    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    x = x.astype(np.float32, copy=False).reshape(len(x), 1, 28, 28)
    return (x - np.float32(MNIST_MEAN)) / np.float32(MNIST_STD)


def write_batches(arrays, n_train_batches: int, path: Path, batch: int = BATCH) -> None:
    """Save the training images for ``n_train_batches`` batches of ``batch`` (n, 1, 28, 28) and
    the first 1,000 test images, float32 (each worker cuts its preset's batches)."""
    x_train, y_train, x_test, y_test = arrays
    n_train_batches = min(n_train_batches, len(x_train) // batch)
    n = n_train_batches * batch
    x = normalise(x_train[:n])
    y = np.asarray(y_train[:n], dtype=np.int64)
    np.savez(path, x_train=x, y_train=y, x_test=normalise(x_test[:1000]),
             y_test=np.asarray(y_test[:1000], dtype=np.int64))


# -- models ----------------------------------------------------------------------------------------

def numcnn_model(name: str):
    """The numcnn preset ``name`` and its spec ``{"type": "Sequential", "layers": [...]}``."""
    import numcnn

    try:
        from numcnn import models
    except ImportError:
        models = None
    if models is not None and hasattr(models, "preset"):
        model = models.preset(name)
        spec = models.to_spec(model) if hasattr(models, "to_spec") else _fallback_spec(name)
        return model, spec
    layers = []
    for layer in PRESET_LAYERS[name]:
        kwargs = {k: v for k, v in layer.items() if k != "type"}
        layers.append(getattr(numcnn.nn, layer["type"])(**kwargs))
    return numcnn.nn.Sequential(*layers), _fallback_spec(name)


def _fallback_spec(name: str) -> dict:
    return {"type": "Sequential", "layers": [dict(layer) for layer in PRESET_LAYERS[name]]}


def _layer_kwargs(layer: dict) -> dict:
    for key in ("kwargs", "args", "config", "params"):
        if isinstance(layer.get(key), dict):
            return dict(layer[key])
    return {k: v for k, v in layer.items() if k not in ("type", "name")}


def torch_model(spec: dict):
    """The PyTorch twin of a numcnn spec: the same layer types with the same keyword arguments
    (``Residual`` and ``GlobalAvgPool2d``, which torch.nn lacks, by the small modules below)."""
    if spec.get("type", "Sequential") != "Sequential":
        raise ValueError(f"only Sequential specs are supported, got {spec.get('type')!r}")
    import torch

    return torch.nn.Sequential(*[_torch_layer(layer) for layer in spec["layers"]])


def _torch_layer(layer: dict):
    import inspect

    import torch

    kind = layer.get("type")
    if kind == "Sequential":
        return torch_model(layer)
    if kind == "Residual":
        shortcut = layer.get("shortcut")
        return _torch_classes()["Residual"](_torch_layer(layer["fn"]),
                                            None if shortcut is None else _torch_layer(shortcut))
    if kind == "GlobalAvgPool2d":
        return _torch_classes()["GlobalAvgPool2d"]()
    cls = getattr(torch.nn, kind)
    accepted = inspect.signature(cls).parameters
    kwargs = {k: (tuple(v) if isinstance(v, list) else v)
              for k, v in _layer_kwargs(layer).items() if k in accepted}
    return cls(**kwargs)


_TORCH_CLASSES = {}


def _torch_classes() -> dict:
    """``y = fn(x) + shortcut(x)`` and the mean over the plane, as torch modules (made on first
    use, so that the parent process need not import torch)."""
    if not _TORCH_CLASSES:
        import torch

        class Residual(torch.nn.Module):
            def __init__(self, fn, shortcut=None):
                super().__init__()
                self.fn, self.shortcut = fn, shortcut

            def forward(self, x):
                return self.fn(x) + (x if self.shortcut is None else self.shortcut(x))

        class GlobalAvgPool2d(torch.nn.Module):
            def forward(self, x):
                return x.mean(dim=(2, 3))

        _TORCH_CLASSES.update(Residual=Residual, GlobalAvgPool2d=GlobalAvgPool2d)
    return _TORCH_CLASSES


def load_into_torch(model, state: dict) -> None:
    """Copy a numcnn state dict (NumPy arrays under PyTorch's keys) into a torch model."""
    import torch

    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KeyError(f"weights do not fit the torch twin: missing {missing}, "
                       f"unexpected {unexpected}")
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(torch.from_numpy(np.array(value)))


def load_weights(path: Path) -> dict:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# -- measurements inside a worker ------------------------------------------------------------------

def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB.

    On Linux this is ``VmHWM`` from /proc/self/status, the high-water mark of this process's own
    address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` would be wrong in a worker: Linux carries
    the parent's high-water mark across fork/vfork + exec into it, so every worker would report
    at least the parent's peak (the parent holds MNIST). Elsewhere ``ru_maxrss`` is used.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def matmul_gflops(mm, make, n: int = 1024, repeats: int = 15) -> float:
    """Median GFLOP/s of an n x n float32 matrix product (2 n^3 flops)."""
    a, b = make(n), make(n)
    mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def layer_flops(layer_type: str, kwargs: dict, in_shape, out_shape) -> int:
    """Forward FLOPs (2 per multiply-add) of a convolution or linear layer; 0 for other layers."""
    if layer_type in ("Conv2d", "Conv1d"):
        groups = kwargs.get("groups", 1)
        kernel = kwargs.get("kernel_size", 1)
        kernel = int(np.prod(kernel)) if isinstance(kernel, (tuple, list)) else (
            kernel ** (2 if layer_type == "Conv2d" else 1))
        return 2 * int(np.prod(out_shape)) * (in_shape[1] // groups) * kernel
    if layer_type == "Linear":
        return 2 * int(np.prod(out_shape)) * in_shape[-1]
    return 0


def backward_flops(index: int, forward: int) -> int:
    """The backward needs the weight gradient (= forward FLOPs) and, except for the first layer
    (the images need no gradient), the input gradient (= forward FLOPs again)."""
    return forward if index == 0 else 2 * forward


def _numcnn_train_setup(preset: str, workdir: Path):
    import numcnn
    from numcnn import nn, optim

    model, _ = numcnn_model(preset)
    model.load_state_dict(load_weights(workdir / f"{preset}.weights.npz"))
    criterion = nn.CrossEntropyLoss()
    if config(preset)["optimizer"] == "sgd":
        opt = optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
    else:
        opt = optim.Adam(model.parameters(), lr=LR)
    return numcnn, model, criterion, opt


def _torch_train_setup(preset: str, workdir: Path):
    import torch

    spec = json.loads((workdir / f"{preset}.spec.json").read_text())
    model = torch_model(spec)
    load_into_torch(model, load_weights(workdir / f"{preset}.weights.npz"))
    criterion = torch.nn.CrossEntropyLoss()
    if config(preset)["optimizer"] == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=SGD_MOMENTUM)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=LR)
    return torch, model, criterion, opt


def worker(args) -> dict:
    """One measurement in this process; returns what the parent prints and aggregates."""
    workdir = Path(args.workdir)
    lib, preset, mode = args.lib, args.preset, args.worker
    if lib == "numcnn":
        import numcnn

        numcnn.tune_malloc()  # the allocator setting numcnn train uses too (numcnn._memory)
    elif lib == "onnxruntime":
        import onnxruntime  # noqa: F401
    else:
        import torch  # noqa: F401
    result = {"lib": lib, "preset": preset, "mode": mode, "rss_after_imports_mib": peak_rss_mib()}
    with np.load(workdir / "data.npz") as data:
        xs, ys, x_test = data["x_train"], data["y_train"], data["x_test"]
    batch = config(preset)["batch"]
    n_batches = len(xs) // batch
    xs = as_input(xs[:n_batches * batch], preset)
    xs = xs.reshape(n_batches, batch, *xs.shape[1:])
    ys = ys[:n_batches * batch].reshape(n_batches, batch)
    x_test = as_input(x_test, preset)
    if mode == "train":
        result.update(_train(lib, preset, workdir, xs, ys, args.steps, args.warmup))
    elif mode == "infer":
        result.update(_infer(lib, preset, workdir, x_test, args.batch, args.steps, args.warmup,
                             getattr(args, "numcnn_infer", "plan")))
    elif mode == "profile":
        result.update(_profile(lib, preset, workdir, xs, ys, args.steps, args.warmup))
    elif mode == "health":
        result.update(_health_overhead(preset, workdir, xs, ys, args.steps, args.warmup))
    result["peak_rss_mib"] = peak_rss_mib()
    result["threads"] = _threads(lib)
    return result


def _threads(lib: str):
    if lib == "onnxruntime":  # its intra-op pool: one thread per core unless told otherwise
        return os.cpu_count()
    if lib == "torch":
        import torch
        return torch.get_num_threads()
    # numcnn's compiled kernels use OpenMP's threads (every core unless OMP_NUM_THREADS says
    # otherwise); NumPy-only, OpenBLAS's (OPENBLAS_NUM_THREADS or OMP_NUM_THREADS).
    limit = os.environ.get("OMP_NUM_THREADS")
    if not _numcnn_kernels():
        limit = os.environ.get("OPENBLAS_NUM_THREADS") or limit
    return int(limit) if limit else os.cpu_count()


def _numcnn_kernels() -> bool:
    """Whether numcnn runs its compiled kernels here (else NumPy alone)."""
    try:
        from numcnn import backend
    except ImportError:
        return False
    return backend.enabled()


def _train(lib, preset, workdir, xs, ys, steps, warmup) -> dict:
    n_batches = len(xs)
    losses = []
    if lib == "numcnn":
        _, model, criterion, opt = _numcnn_train_setup(preset, workdir)
        model.train()

        def step(i):
            logits = model(xs[i % n_batches])
            loss = criterion(logits, ys[i % n_batches])
            opt.zero_grad()
            model.backward_params(criterion.backward())
            opt.step()
            return loss
    else:
        torch, model, criterion, opt = _torch_train_setup(preset, workdir)
        model.train()
        t_xs, t_ys = torch.from_numpy(xs), torch.from_numpy(ys)

        def step(i):
            logits = model(t_xs[i % n_batches])
            loss = criterion(logits, t_ys[i % n_batches])
            opt.zero_grad()
            loss.backward()
            opt.step()
            return loss.detach()
    for i in range(warmup):
        losses.append(float(step(i)))
    start = time.perf_counter()
    for i in range(warmup, warmup + steps):
        losses.append(step(i))
    elapsed = time.perf_counter() - start
    losses = [float(loss) for loss in losses]
    return {"seconds": elapsed, "images_per_s": steps * xs.shape[1] / elapsed, "losses": losses}


def _health_overhead(preset, workdir, xs, ys, steps, warmup, block: int = 10) -> dict:
    """Seconds per training step without and with the health monitor, in alternating blocks of
    ``block`` steps (the machine's drift hits both alike); the median block of each."""
    from numcnn.health import HealthMonitor

    _, model, criterion, opt = _numcnn_train_setup(preset, workdir)
    model.train()
    monitor = HealthMonitor()
    n_batches = len(xs)
    inside = [0.0]  # seconds spent in the monitor's own code (its calls and its sampling)
    record = monitor._record

    def timed_record(*args):
        start = time.perf_counter()
        record(*args)
        inside[0] += time.perf_counter() - start

    monitor._record = timed_record

    def step(i, watched):
        xb, yb = xs[i % n_batches], ys[i % n_batches]
        if watched:
            start = time.perf_counter()
            monitor.before_forward()
            inside[0] += time.perf_counter() - start
        logits = model(xb)
        loss = float(criterion(logits, yb))
        opt.zero_grad()
        model.backward_params(criterion.backward())
        if watched:
            start = time.perf_counter()
            monitor.after_backward(1, xb, yb, criterion)
            inside[0] += time.perf_counter() - start
        opt.step()
        if watched:
            start = time.perf_counter()
            monitor.after_step()
            inside[0] += time.perf_counter() - start
        return loss

    for i in range(warmup):
        step(i, False)
    times = {False: [], True: []}
    own_blocks = []  # seconds a step inside the monitor, per block with it
    i = warmup
    for _ in range(max(1, steps // (2 * block))):
        for watched in (False, True):
            if watched:
                monitor.attach(model)
                inside[0] = 0.0
            start = time.perf_counter()
            for _ in range(block):
                step(i, watched)
                i += 1
            times[watched].append((time.perf_counter() - start) / block)
            if watched:
                own_blocks.append(inside[0] / block)
            if watched:
                monitor.end_epoch(1)
                monitor.detach()
    plain, watched = statistics.median(times[False]), statistics.median(times[True])
    own = statistics.median(own_blocks)
    return {"seconds_per_step": plain, "seconds_per_step_health": watched,
            "overhead": watched / plain - 1, "images_per_s": BATCH / plain,
            "monitor_seconds_per_step": own, "monitor_share": own / plain,
            # the least disturbed blocks (a busy machine only ever adds time)
            "monitor_share_least": min(own_blocks) / min(times[False]),
            "block_times": {"plain": times[False], "health": times[True]}}


def _infer(lib, preset, workdir, x_test, batch, steps, warmup, numcnn_infer="plan") -> dict:
    if batch == 1:
        inputs = [x_test[i % len(x_test)][None] for i in range(warmup + steps)]
    else:
        inputs = [np.ascontiguousarray(np.resize(x_test, (batch, *x_test.shape[1:])))] * (
            warmup + steps)
    extra = {}
    if lib == "numcnn":
        numcnn, model, _, _ = _numcnn_train_setup(preset, workdir)
        model.eval()
        context, run = numcnn.no_grad, model
        if numcnn_infer == "plan":
            from numcnn import inference

            start = time.perf_counter()
            run = inference.compile(model, x_test.shape[1:])
            extra = {"path": "plan", "compile_ms": 1e3 * (time.perf_counter() - start)}
        else:
            extra = {"path": "layers"}
    elif lib == "onnxruntime":
        import contextlib

        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        start = time.perf_counter()
        session = onnxruntime.InferenceSession(str(workdir / f"{preset}.onnx"), options,
                                               providers=["CPUExecutionProvider"])
        extra = {"session_ms": 1e3 * (time.perf_counter() - start),
                 "version": onnxruntime.__version__,
                 "exporter": (workdir / f"{preset}.onnx.exporter").read_text()}
        name = session.get_inputs()[0].name
        context = contextlib.nullcontext

        def run(x):
            return session.run(None, {name: x})[0]
    else:
        torch, model, _, _ = _torch_train_setup(preset, workdir)
        model.eval()
        inputs = [torch.from_numpy(x) for x in inputs]
        context, run = torch.inference_mode, model
    with context():
        for x in inputs[:warmup]:
            run(x)
        start = time.perf_counter()
        for x in inputs[warmup:]:
            out = run(x)
        elapsed = time.perf_counter() - start
    return {"seconds": elapsed, "images_per_s": steps * batch / elapsed,
            "checksum": float(np.asarray(out).astype(np.float64).sum()), **extra}


def _profile(lib, preset, workdir, xs, ys, steps, warmup) -> dict:
    spec = json.loads((workdir / f"{preset}.spec.json").read_text())
    if lib == "numcnn":
        return _profile_numcnn(preset, workdir, spec, xs, ys, steps, warmup)
    return _profile_torch(preset, workdir, spec, xs, ys, steps, warmup)


def _timed(fn, sink: list):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        sink.append(time.perf_counter() - start)
        return out
    return wrapper


def leaf_specs(spec: dict, prefix: str = "") -> list[tuple[str, dict]]:
    """``(name, layer spec)`` of every leaf layer of a spec, in the order they run, named as in
    the state dict (``"5.fn.0"``): the layers of the containers (Sequential, Residual's block and
    shortcut) taken apart, so each convolution of a ResNet gets its row."""
    leaves = []
    kind = spec.get("type")
    if kind == "Sequential":
        names = spec.get("names") or [str(i) for i in range(len(spec["layers"]))]
        for name, layer in zip(names, spec["layers"]):
            leaves += leaf_specs(layer, f"{prefix}{name}.")
    elif kind == "Residual":
        leaves += leaf_specs(spec["fn"], f"{prefix}fn.")
        if spec.get("shortcut") is not None:
            leaves += leaf_specs(spec["shortcut"], f"{prefix}shortcut.")
    else:
        leaves.append((prefix[:-1], spec))
    return leaves


def _leaf_modules(model, names) -> list:
    """The modules of ``model`` (numcnn or torch) under the dotted ``names``."""
    modules = []
    for name in names:
        module = model
        for part in name.split("."):
            module = getattr(module, part) if not part.isdigit() else module[int(part)]
        modules.append(module)
    return modules


def _layer_rows(leaves, shapes, fwd, bwd, steps) -> list[dict]:
    rows = []
    for index, (name, layer) in enumerate(leaves):
        in_shape, out_shape = shapes[index]
        flops = layer_flops(layer["type"], _layer_kwargs(layer), in_shape, out_shape)
        rows.append({
            "index": index, "name": name, "type": layer["type"], "out_shape": list(out_shape),
            "forward_ms": 1e3 * statistics.median(fwd[index][-steps:]),
            "backward_ms": 1e3 * statistics.median(bwd[index][-steps:]),
            "forward_flops": flops, "backward_flops": backward_flops(index, flops),
        })
    return rows


def _profile_numcnn(preset, workdir, spec, xs, ys, steps, warmup) -> dict:
    _, model, criterion, opt = _numcnn_train_setup(preset, workdir)
    leaves = leaf_specs(spec)
    children = _leaf_modules(model, [name for name, _ in leaves])
    fwd = [[] for _ in children]
    bwd = [[] for _ in children]
    shapes = [None] * len(children)
    for index, child in enumerate(children):
        forward = _timed(child.forward, fwd[index])

        def forward_with_shape(x, _forward=forward, _index=index):
            out = _forward(x)
            shapes[_index] = (tuple(x.shape), tuple(out.shape))
            return out
        # Instance attributes shadow the class methods that Module.__call__ and Sequential call.
        object.__setattr__(child, "forward", forward_with_shape)
        object.__setattr__(child, "backward", _timed(child.backward, bwd[index]))
    other = {"loss": [], "zero_grad": [], "optimizer": [], "step": []}
    model.train()
    n_batches = len(xs)
    for i in range(warmup + steps):
        x, y = xs[i % n_batches], ys[i % n_batches]
        t0 = time.perf_counter()
        logits = model(x)
        t1 = time.perf_counter()
        criterion(logits, y)
        grad = criterion.backward()
        t2 = time.perf_counter()
        opt.zero_grad()
        t3 = time.perf_counter()
        model.backward_params(grad)
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        other["loss"].append(t2 - t1)
        other["zero_grad"].append(t3 - t2)
        other["optimizer"].append(t5 - t4)
        other["step"].append(t5 - t0)
    rows = _layer_rows(leaves, shapes, fwd, bwd, steps)
    return {"layers": rows,
            "other_ms": {k: 1e3 * statistics.median(v[-steps:]) for k, v in other.items()},
            "matmul_gflops": matmul_gflops(
                np.matmul, lambda n: np.random.default_rng(0).random((n, n), dtype=np.float32)),
            "kernels": _numcnn_kernels()}


def _profile_torch(preset, workdir, spec, xs, ys, steps, warmup) -> dict:
    """Each layer alone, on the activations it sees in the model, forward then backward (with
    autograd, as in training; the images need no gradient). Plus the whole step, for scale."""
    torch, model, criterion, opt = _torch_train_setup(preset, workdir)
    model.train()
    leaves = leaf_specs(spec)
    children = _leaf_modules(model, [name for name, _ in leaves])
    t_xs, t_ys = torch.from_numpy(xs), torch.from_numpy(ys)
    seen = {}  # leaf index -> (its input, its output) in the model's forward pass

    def hook(index):
        def keep(module, inputs, output):  # returns None: the output stays as it is
            seen.setdefault(index, (inputs[0], output))
        return keep
    handles = [child.register_forward_hook(hook(i)) for i, child in enumerate(children)]
    with torch.no_grad():
        model(t_xs[0])
    for handle in handles:
        handle.remove()
    fwd = [[] for _ in children]
    bwd = [[] for _ in children]
    shapes = []
    for index, child in enumerate(children):
        x = seen[index][0].detach().clone().requires_grad_(index > 0)
        grad_out = torch.randn_like(seen[index][1])
        shapes.append((tuple(x.shape), tuple(grad_out.shape)))
        for _ in range(warmup + steps):
            t0 = time.perf_counter()
            out = child(x)
            t1 = time.perf_counter()
            out.backward(grad_out)
            t2 = time.perf_counter()
            fwd[index].append(t1 - t0)
            bwd[index].append(t2 - t1)
        model.zero_grad()
    step_times = []
    n_batches = len(xs)
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        loss = criterion(model(t_xs[i % n_batches]), t_ys[i % n_batches])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step_times.append(time.perf_counter() - t0)
    rows = _layer_rows(leaves, shapes, fwd, bwd, steps)
    return {"layers": rows, "other_ms": {"step": 1e3 * statistics.median(step_times[-steps:])},
            "matmul_gflops": matmul_gflops(torch.mm, lambda n: torch.rand(n, n))}


# -- the parent: preparation, scheduling, report ---------------------------------------------------

def worker_env(threads: int | None = None) -> dict:
    """The environment of a worker: no thread limits (every core), or ``threads`` for each."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    if threads:
        env.update({name: str(threads) for name in THREAD_VARS})
    return env


def run_worker(workdir: Path, mode: str, lib: str, preset: str, steps: int, warmup: int,
               batch: int = BATCH, threads: int | None = None,
               numcnn_infer: str = "plan") -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--lib", lib,
               "--preset", preset, "--steps", str(steps), "--warmup", str(warmup),
               "--batch", str(batch), "--workdir", str(workdir),
               "--numcnn-infer", numcnn_infer]
    done = subprocess.run(command, capture_output=True, text=True, env=worker_env(threads))
    if done.returncode != 0:
        raise RuntimeError(f"worker {mode} {lib} {preset} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def help_command() -> list[str]:
    script = Path(sys.executable).parent / "numcnn"
    if script.is_file():
        return [str(script), "--help"]
    found = shutil.which("numcnn")
    if found:
        return [found, "--help"]
    return [sys.executable, "-m", "numcnn", "--help"]


def _median_wall(command: list[str], runs: int) -> tuple[float, list[float], str | None]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, env=worker_env())
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            return float("nan"), times, done.stderr.strip()[-500:]
    return statistics.median(times), times, None


def time_help(runs: int = 5) -> dict:
    """Median wall time of ``numcnn --help``, and of a bare interpreter start for scale."""
    command = help_command()
    seconds, times, error = _median_wall(command, runs)
    bare, _, _ = _median_wall([sys.executable, "-c", "pass"], runs)
    result = {"command": " ".join(command), "seconds": seconds, "runs": times,
              "bare_python_seconds": bare}
    if error:
        result["error"] = error
    return result


def machine() -> dict:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import numpy
    blas = "?"
    try:
        blas = numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    except Exception:  # older NumPy: no dict mode
        pass
    kernels = "compiled kernels" if _numcnn_kernels() else "NumPy only"
    if os.environ.get("NUMCNN_KERNELS") == "0":
        kernels = "NumPy only (NUMCNN_KERNELS=0)"
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "numpy": numpy.__version__, "blas": blas, "platform": platform.platform(),
            "numcnn_kernels": kernels}


def prepare(args, workdir: Path) -> None:
    """Write the batches and, per preset, the spec and the initial weights both workers load."""
    arrays = load_mnist_arrays(args.data)
    write_batches(arrays, args.warmup + max(args.steps, args.profile_steps), workdir / "data.npz",
                  max(config(preset)["batch"] for preset in args.presets))
    import numcnn

    for preset in args.presets:
        numcnn.manual_seed(args.seed)
        model, spec = numcnn_model(preset)
        (workdir / f"{preset}.spec.json").write_text(json.dumps(spec))
        np.savez(workdir / f"{preset}.weights.npz", **model.state_dict())
        if getattr(args, "onnxruntime", False):
            exporter = export_onnx(model, spec, workdir / f"{preset}.onnx",
                                   config(preset).get("input_shape", (1, 28, 28)))
            (workdir / f"{preset}.onnx.exporter").write_text(exporter)


def export_onnx(model, spec: dict, path: Path, input_shape=(1, 28, 28)) -> str:
    """``model`` in eval mode as an ONNX file for ONNX Runtime, by numcnn's own exporter
    (``numcnn.onnx.export``: what a numcnn user would serve); where that refuses a layer, the
    PyTorch twin of ``spec`` with the same weights, by ``torch.onnx.export`` (opset 17, dynamic
    batch axis). Returns which exporter wrote the file: ``"numcnn"`` or ``"torch"``."""
    from numcnn import onnx as numcnn_onnx

    try:
        numcnn_onnx.export(model, path, tuple(input_shape))
        return "numcnn"
    except numcnn_onnx.OnnxError:
        pass
    export_torch_twin(spec, model.state_dict(), path, input_shape)
    return "torch"


def export_torch_twin(spec: dict, state: dict, path: Path, input_shape=(1, 28, 28)) -> None:
    """The PyTorch twin of ``spec`` with the weights ``state``, in eval mode, exported to ONNX
    by ``torch.onnx.export`` (opset 17, dynamic batch axis; input ``x``, output ``logits``)."""
    import torch

    twin = torch_model(spec)
    load_into_torch(twin, state)
    twin.eval()
    torch.onnx.export(twin, torch.zeros(1, *input_shape), str(path), input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)


def median(values):
    return statistics.median(values) if values else float("nan")


def _jobs(args, preset: str, parts) -> list[tuple]:
    """``(key, mode, steps, warmup, batch)`` of each measurement of ``preset``."""
    jobs = []
    if "train" in parts:
        jobs.append(("train", "train", args.steps, args.warmup, config(preset)["batch"]))
    if "infer" in parts:
        for batch in config(preset)["infer_batches"]:
            if batch == 1:
                jobs.append(("infer_b1", "infer", args.infer1_steps, args.warmup, 1))
            else:
                jobs.append((f"infer_b{batch}", "infer", args.infer1000_steps, 1, batch))
    return jobs


def run_all(args) -> dict:
    started = datetime.datetime.now().astimezone()
    report = {"date": started.isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "settings": {"steps": args.steps, "warmup": args.warmup, "repeats": args.repeats,
                           "infer_steps_batch1": args.infer1_steps,
                           "infer_steps_batch1000": args.infer1000_steps,
                           "profile_steps": args.profile_steps,
                           "train": {p: {"batch": config(p)["batch"],
                                         "optimizer": config(p)["optimizer"]}
                                     for p in args.presets},
                           "adam_lr": LR, "sgd_lr": SGD_LR, "sgd_momentum": SGD_MOMENTUM,
                           "threads": args.threads or f"all ({os.cpu_count()})"},
              "results": {}, "profile": {}}
    parts = set(args.parts)
    with tempfile.TemporaryDirectory(prefix="numcnn-bench-") as tmp:
        workdir = Path(tmp)
        prepare(args, workdir)
        for repeat in range(args.repeats):
            for preset in args.presets:
                for key, mode, steps, warmup, batch in _jobs(args, preset, parts):
                    libs = ["numcnn", "torch"]
                    if mode == "infer" and args.onnxruntime:
                        libs.append("onnxruntime")
                    if repeat % 2:  # alternate the order over the repeats
                        libs.reverse()
                    for lib in libs:
                        result = run_worker(workdir, mode, lib, preset, steps, warmup, batch,
                                            args.threads, args.numcnn_infer)
                        entry = report["results"].setdefault(preset, {}).setdefault(
                            key, {}).setdefault(lib, [])
                        entry.append(result)
                        print(f"  [{repeat + 1}/{args.repeats}] {preset:<10} {key:<11} "
                              f"{lib:<11} {result['images_per_s']:>10.1f} img/s  "
                              f"peak {result['peak_rss_mib']:.0f} MiB", file=sys.stderr)
        if "health" in parts:
            for preset in args.presets:
                for repeat in range(args.repeats):
                    result = run_worker(workdir, "health", "numcnn", preset, args.steps,
                                        args.warmup, threads=args.threads)
                    report.setdefault("health", {}).setdefault(preset, []).append(result)
                    print(f"  [{repeat + 1}/{args.repeats}] {preset:<10} health overhead "
                          f"{100 * result['overhead']:+.1f}% of "
                          f"{1e3 * result['seconds_per_step']:.1f} ms", file=sys.stderr)
        if "profile" in parts:
            for preset in args.presets:
                for lib in ("numcnn", "torch"):
                    report["profile"].setdefault(preset, {})[lib] = run_worker(
                        workdir, "profile", lib, preset, args.profile_steps, args.warmup,
                        threads=args.threads)
    if "help" in parts:
        report["help"] = time_help()
    report["summary"] = summarise(report)
    return report


def _label(key: str, preset: str) -> str:
    """``train b64``, ``infer b1``, ``infer b1000``: a measurement's name in the summary."""
    return f"train b{config(preset)['batch']}" if key == "train" else key.replace("_", " ")


def summarise(report: dict) -> list[dict]:
    """Median figures, ratios and targets: one row per comparison."""
    rows = []
    for preset, by_key in report["results"].items():
        for key, by_lib in by_key.items():
            speed = {lib: median([r["images_per_s"] for r in runs]) for lib, runs in by_lib.items()}
            if "numcnn" in speed and "torch" in speed:
                spread = {lib: [min(r["images_per_s"] for r in runs),
                                max(r["images_per_s"] for r in runs)]
                          for lib, runs in by_lib.items() if lib in ("numcnn", "torch")}
                rows.append({"what": f"{_label(key, preset)} {preset} (img/s)",
                             "numcnn": speed["numcnn"],
                             "torch": speed["torch"], "ratio": speed["numcnn"] / speed["torch"],
                             "target": ">= 1.0",
                             "met": speed["numcnn"] / speed["torch"] >= 1.0, "spread": spread})
        for key, by_lib in by_key.items():  # numcnn against ONNX Runtime (inference)
            if "numcnn" in by_lib and "onnxruntime" in by_lib:
                speed = {lib: median([r["images_per_s"] for r in by_lib[lib]])
                         for lib in ("numcnn", "onnxruntime")}
                path = by_lib["numcnn"][0].get("path", "layers")
                rows.append({"what": f"{_label(key, preset)} {preset} vs ORT (img/s)",
                             "numcnn": speed["numcnn"], "torch": speed["onnxruntime"],
                             "ratio": speed["numcnn"] / speed["onnxruntime"], "target": ">= 1.0",
                             "met": speed["numcnn"] >= speed["onnxruntime"],
                             "note": f"numcnn {path}; second column ONNX Runtime "
                                     f"{by_lib['onnxruntime'][0].get('version', '')}, graph by "
                                     f"{by_lib['onnxruntime'][0].get('exporter', 'torch')}"})
                if key == "infer_b1000":
                    peak = {lib: max(r["peak_rss_mib"] for r in by_lib[lib])
                            for lib in ("numcnn", "onnxruntime")}
                    rows.append({"what": f"infer b1000 peak memory {preset} vs ORT (MiB)",
                                 "numcnn": peak["numcnn"], "torch": peak["onnxruntime"],
                                 "ratio": peak["numcnn"] / peak["onnxruntime"],
                                 "target": "<= 1.0", "met": peak["numcnn"] <= peak["onnxruntime"],
                                 "note": "peak resident memory of the whole worker process"})
        if "train" in by_key and len(by_key["train"]) == 2:
            peak = {lib: max(r["peak_rss_mib"] for r in runs)
                    for lib, runs in by_key["train"].items()}
            base = {lib: median([r["rss_after_imports_mib"] for r in runs])
                    for lib, runs in by_key["train"].items()}
            rows.append({"what": f"train peak memory {preset} (MiB)", "numcnn": peak["numcnn"],
                         "torch": peak["torch"], "ratio": peak["numcnn"] / peak["torch"],
                         "target": "<= 1.0", "met": peak["numcnn"] <= peak["torch"],
                         "note": f"after imports: numcnn {base['numcnn']:.0f} MiB, torch "
                                 f"{base['torch']:.0f} MiB; growth numcnn "
                                 f"{peak['numcnn'] - base['numcnn']:.0f} MiB, torch "
                                 f"{peak['torch'] - base['torch']:.0f} MiB"})
            # Same weights and batches: the first loss must agree to float32 rounding (the
            # check that both train the identical model); later ones drift apart slowly.
            first = {lib: runs[0]["losses"] for lib, runs in by_key["train"].items()}
            gaps = [abs(a - b) / max(abs(b), 1e-12)
                    for a, b in zip(first["numcnn"], first["torch"])]
            rows.append({"what": f"train step-1 loss {preset} (rel. diff)",
                         "numcnn": first["numcnn"][0], "torch": first["torch"][0],
                         "ratio": gaps[0], "target": "<= 1e-4", "met": gaps[0] <= 1e-4,
                         "max_rel_diff_over_run": max(gaps),
                         "last_loss": {"numcnn": first["numcnn"][-1], "torch": first["torch"][-1]}})
    for preset, runs in report.get("health", {}).items():
        overhead = median([r["overhead"] for r in runs])
        plain = 1e3 * median([r["seconds_per_step"] for r in runs])
        watched = 1e3 * median([r["seconds_per_step_health"] for r in runs])
        each = ", ".join(f"{100 * r['overhead']:+.1f}%" for r in runs)
        share = median([r["monitor_share"] for r in runs])
        least = min(r["monitor_share_least"] for r in runs)
        own = 1e3 * median([r["monitor_seconds_per_step"] for r in runs])
        rows.append({"what": f"health monitor overhead {preset} (%)", "numcnn": 100 * overhead,
                     "torch": None, "ratio": None, "target": "< 5%", "met": overhead < 0.05,
                     "note": f"step {plain:.2f} ms plain, {watched:.2f} ms with the monitor; "
                             f"per repeat {each}; time inside the monitor's own code "
                             f"{own:.3f} ms a step = {100 * share:.1f}% of a plain step "
                             f"(least disturbed blocks: {100 * least:.1f}%)"})
    if "help" in report:
        help_result = report["help"]
        seconds = help_result.get("seconds", float("nan"))
        rows.append({"what": "numcnn --help (s)", "numcnn": seconds, "torch": None,
                     "ratio": None, "target": "< 0.5 s", "met": seconds < 0.5,
                     "note": f"bare `python -c pass`: {help_result['bare_python_seconds']:.3f} s",
                     "error": help_result.get("error")})
    return rows


# -- printing --------------------------------------------------------------------------------------

def _fmt(value, digits=1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and abs(value) < 0.01 and value != 0:
        return f"{value:.2e}"
    return f"{value:,.{digits}f}"


def format_profile(preset: str, profile: dict) -> str:
    lines = []
    numcnn_prof, torch_prof = profile.get("numcnn"), profile.get("torch")
    peak = numcnn_prof["matmul_gflops"]
    lines.append(f"\nPer-layer time, {preset}, training step at batch {config(preset)['batch']} "
                 f"(median ms per step; %peak: numcnn's GFLOP/s over NumPy's float32 matmul "
                 f"peak of this run, {peak:.0f} GFLOP/s)")
    header = (f"{'#':>2} {'layer':<22} {'out shape':<12} {'fwd ms':>8} {'bwd ms':>8} "
              f"{'MFLOP f+b':>10} {'GFLOP/s':>8} {'%peak':>5} | {'torch fwd':>9} "
              f"{'torch bwd':>9} {'GFLOP/s':>8} {'numcnn/torch time':>17}")
    lines.append(header)
    lines.append("-" * len(header))
    t_rows = torch_prof["layers"] if torch_prof else [None] * len(numcnn_prof["layers"])
    totals = [0.0, 0.0, 0.0, 0.0]
    for row, t_row in zip(numcnn_prof["layers"], t_rows):
        flops = row["forward_flops"] + row["backward_flops"]
        ms = row["forward_ms"] + row["backward_ms"]
        gflops = flops / (ms * 1e6) if flops and ms else None
        totals[0] += row["forward_ms"]
        totals[1] += row["backward_ms"]
        shape = "x".join(str(s) for s in row["out_shape"][1:])
        label = f"{row.get('name', row['index'])} {row['type']}"
        share = f"{100 * gflops / peak:.0f}%" if gflops and peak else "-"
        line = (f"{row['index']:>2} {label[:22]:<22} {shape:<12} {row['forward_ms']:>8.3f} "
                f"{row['backward_ms']:>8.3f} {flops / 1e6 if flops else 0:>10.1f} "
                f"{_fmt(gflops, 2):>8} {share:>5}")
        if t_row:
            t_ms = t_row["forward_ms"] + t_row["backward_ms"]
            totals[2] += t_row["forward_ms"]
            totals[3] += t_row["backward_ms"]
            t_gflops = flops / (t_ms * 1e6) if flops and t_ms else None
            line += (f" | {t_row['forward_ms']:>9.3f} {t_row['backward_ms']:>9.3f} "
                     f"{_fmt(t_gflops, 2):>8} {ms / t_ms if t_ms else float('nan'):>17.2f}")
        lines.append(line)
    lines.append("-" * len(header))
    line = f"{'':>2} {'layers total':<22} {'':<12} {totals[0]:>8.3f} {totals[1]:>8.3f}"
    if torch_prof:
        line += f" {'':>10} {'':>8} {'':>5} | {totals[2]:>9.3f} {totals[3]:>9.3f}"
    lines.append(line)
    other = numcnn_prof["other_ms"]
    lines.append(f"numcnn: loss fwd+bwd {other['loss']:.3f} ms, zero_grad {other['zero_grad']:.3f} "
                 f"ms, {config(preset)['optimizer']} step {other['optimizer']:.3f} ms, "
                 f"whole step {other['step']:.3f} ms")
    total_flops = sum(r["forward_flops"] + r["backward_flops"] for r in numcnn_prof["layers"])
    lines.append(f"effective GFLOP/s over the whole step: numcnn "
                 f"{total_flops / (other['step'] * 1e6):.2f}"
                 + (f", torch {total_flops / (torch_prof['other_ms']['step'] * 1e6):.2f} "
                    f"(torch whole step {torch_prof['other_ms']['step']:.3f} ms)"
                    if torch_prof else ""))
    lines.append(f"float32 matmul peak (1024x1024, this run): NumPy "
                 f"{numcnn_prof['matmul_gflops']:.1f} GFLOP/s"
                 + (f", torch.mm {torch_prof['matmul_gflops']:.1f} GFLOP/s" if torch_prof else ""))
    return "\n".join(lines)


def format_summary(report: dict) -> str:
    m = report["machine"]
    lines = [f"\nnumcnn vs PyTorch, {report['date']}, {m['cpu']} ({m['cores']} cores), "
             f"NumPy {m['numpy']} ({m['blas']}), threads: {report['settings']['threads']}, "
             f"numcnn: {m.get('numcnn_kernels', '?')}",
             f"command: {report['command']}"]
    header = f"{'measurement':<44} {'numcnn':>12} {'torch':>12} {'ratio':>8} {'target':>9}  met"
    lines += [header, "-" * len(header)]
    for row in report["summary"]:
        met = "yes" if row["met"] else "NO"
        digits = 4 if "(s)" in row["what"] or "loss" in row["what"] else 1
        lines.append(f"{row['what']:<44} {_fmt(row['numcnn'], digits):>12} "
                     f"{_fmt(row['torch'], digits):>12} {_fmt(row['ratio'], 2):>8} "
                     f"{row['target']:>9}  {met}")
        if row.get("note"):
            lines.append(f"    ({row['note']})")
        if row.get("spread") and len(row["spread"]) == 2:
            (n_lo, n_hi), (t_lo, t_hi) = row["spread"]["numcnn"], row["spread"]["torch"]
            if n_hi > n_lo or t_hi > t_lo:
                lines.append(f"    (range over the repeats: numcnn {n_lo:,.0f}-{n_hi:,.0f}, "
                             f"torch {t_lo:,.0f}-{t_hi:,.0f})")
        if "max_rel_diff_over_run" in row:
            last = row["last_loss"]
            lines.append(f"    (last loss numcnn {last['numcnn']:.4f}, torch {last['torch']:.4f}; "
                         f"max rel. diff over the run {row['max_rel_diff_over_run']:.1e})")
        if row.get("error"):
            lines.append(f"    error: {row['error']}")
    lines.append("ratio = numcnn / torch (speed: higher is better; memory: lower is better)")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="timed training steps (default 100)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement, the "
                        "median is reported (default 3)")
    parser.add_argument("--presets", default=",".join(PRESETS),
                        help="comma-separated (default convnet-bn,small-cnn)")
    parser.add_argument("--data", default=None, help="an mnist.npz (x_train, y_train, x_test, "
                        "y_test); default numcnn.data.load_mnist()")
    parser.add_argument("--json", default=None, help="write the full report here")
    parser.add_argument("--infer1-steps", type=int, default=500,
                        help="timed single images at batch 1 (default 500)")
    parser.add_argument("--infer1000-steps", type=int, default=10,
                        help="timed batches at batch 1000 (default 10)")
    parser.add_argument("--profile-steps", type=int, default=50,
                        help="steps of the per-layer profile (default 50)")
    parser.add_argument("--parts", default="train,infer,profile,help",
                        help="what to run (default train,infer,profile,help; also: health, the "
                             "cost of numcnn.health's monitor on a training step)")
    parser.add_argument("--seed", type=int, default=0, help="numcnn.manual_seed for the weights")
    parser.add_argument("--onnxruntime", action="store_true",
                        help="add ONNX Runtime as a peer for inference (the PyTorch twin "
                             "exported to ONNX; needs the onnxruntime and onnx packages)")
    parser.add_argument("--numcnn-infer", choices=("plan", "layers"), default="plan",
                        help="numcnn's inference path: a compiled plan (default) or the layers "
                             "one by one")
    parser.add_argument("--threads", type=int, default=None,
                        help="limit both libraries to this many threads (a diagnostic, e.g. on a "
                             "busy machine; default: every core, as the targets ask)")
    # Internal: one measurement in a worker process.
    parser.add_argument("--worker", choices=("train", "infer", "profile", "health"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--lib", choices=("numcnn", "torch", "onnxruntime"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--preset", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=BATCH, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(json.dumps(worker(args)))
        return 0
    args.presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    report = run_all(args)
    for preset, profile in report["profile"].items():
        print(format_profile(preset, profile))
    print(format_summary(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
