"""Grouped and depthwise convolutions: numcnn's kernels against its NumPy path and PyTorch.

Usage (from the repository root, with the test extra installed)::

    python bench/grouped.py                    # every case, 5 rounds, one thread
    python bench/grouped.py --rounds 3 --reps 10 --cases dw3x3-s1 dw3x3-s2
    python bench/grouped.py --threads 2 --json out.json

Each measurement runs in its own fresh worker process (``--worker``, JSON on stdout): numcnn
with its compiled kernels, numcnn on its NumPy reference (``backend.use_kernels(False)``), and
PyTorch, in alternating order over the rounds (A B C, then C B A, ...). Every worker runs with
``--threads`` threads (OpenMP, the BLAS and ``torch.set_num_threads`` alike; 1 by default) and
times each call in CPU time (``time.process_time``), so that other work on a shared machine
costs it less than it costs wall time. numcnn's input is laid out CHWN, as the output of the
layer before it is in a model (numcnn's convolutions return that layout); PyTorch's NCHW, its
own. The numcnn workers opt into ``numcnn.tune_malloc()``, as ``numcnn train`` and
bench/bench.py do (without it every new activation of a few MB is fresh pages from the
kernel, which cost a depthwise layer's training step more than its arithmetic). Per case it
reports the forward pass and a training step (forward, then the backward pass with both the
input and the weight gradient) in milliseconds, the median over ``--reps`` calls in a worker
and then over the rounds, the implementation numcnn's policy chose (``cache["impl"]``), and
the ratio PyTorch / numcnn (> 1: numcnn faster).
See docs/benchmark.md, "Grouped and depthwise convolutions".
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

# name: (batch, in channels, height, width, out channels, groups, kernel, stride, padding,
# dilation). The depthwise ones are MobileNet's (3x3, padding 1, stride 1 and 2, its
# pointwise 1x1 after), the grouped ones ResNeXt's (32 groups of 4 channels) and a few wider
# groups; two plain convolutions with a stride along the width: with dilation, and the
# ResNet's stride-2 3x3 (read directly, no width phases).
CASES = {
    "dw3x3-s1": (64, 64, 16, 16, 64, 64, 3, 1, 1, 1),
    "dw3x3-s2": (64, 64, 32, 32, 64, 64, 3, 2, 1, 1),
    "dw3x3-s1-c128-8x8": (64, 128, 8, 8, 128, 128, 3, 1, 1, 1),
    "dw3x3-s1-x2": (64, 32, 16, 16, 64, 32, 3, 1, 1, 1),
    "dw5x5-s1": (64, 64, 16, 16, 64, 64, 5, 1, 2, 1),
    "dw3x3-s1-batch1": (1, 64, 32, 32, 64, 64, 3, 1, 1, 1),
    "pw1x1-64-128": (64, 64, 16, 16, 128, 1, 1, 1, 0, 1),
    "g32x4-3x3": (64, 128, 8, 8, 128, 32, 3, 1, 1, 1),
    "g4-3x3": (64, 64, 16, 16, 64, 4, 3, 1, 1, 1),
    "g2-3x3-s2": (64, 32, 32, 32, 64, 2, 3, 2, 1, 1),
    "g4-3x3-batch1": (1, 64, 16, 16, 64, 4, 3, 1, 1, 1),
    "3x3-s2-d2": (64, 32, 16, 16, 32, 1, 3, 2, 2, 2),
    "3x3-s2-32-64": (64, 32, 32, 32, 64, 1, 3, 2, 1, 1),
}
LIBS = ("kernels", "numpy", "torch")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def _arrays(case):
    n, c, h, w, oc, groups, k, stride, pad, dilation = case
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = (rng.standard_normal((oc, c // groups, k, k)) / np.sqrt(c // groups * k * k))
    return x, weight.astype(np.float32), dict(stride=stride, padding=pad, dilation=dilation,
                                               groups=groups)


def _cpu_ms(fn, reps: int) -> float:
    """The median CPU time of ``fn()`` in milliseconds, after two untimed calls."""
    fn(), fn()
    times = []
    for _ in range(reps):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def _numcnn_case(case, reps: int, kernels: bool) -> dict:
    from numcnn import backend
    from numcnn import functional as F

    x, weight, kwargs = _arrays(case)
    x = x.transpose(1, 2, 3, 0).copy().transpose(3, 0, 1, 2)  # CHWN, as a layer's output is
    with backend.use_kernels(kernels):
        y, cache = F.conv2d_forward(x, weight, None, **kwargs)
        grad = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
        grad = grad.transpose(1, 2, 3, 0).copy().transpose(3, 0, 1, 2)  # laid out as y (CHWN)

        def train():
            _, c = F.conv2d_forward(x, weight, None, **kwargs)
            F.conv2d_backward(grad, c)

        return dict(impl=cache["impl"],
                    forward=_cpu_ms(lambda: F.conv2d_forward(x, weight, None, **kwargs), reps),
                    train=_cpu_ms(train, reps))


def _torch_case(case, reps: int) -> dict:
    import torch
    import torch.nn.functional as TF

    x, weight, kwargs = _arrays(case)
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(weight, requires_grad=True)
    with torch.no_grad():
        grad = torch.randn(TF.conv2d(xt, wt, None, **kwargs).shape)

    def forward():
        with torch.no_grad():
            TF.conv2d(xt, wt, None, **kwargs)

    def train():
        xt.grad = wt.grad = None
        TF.conv2d(xt, wt, None, **kwargs).backward(grad)

    return dict(impl="torch", forward=_cpu_ms(forward, reps), train=_cpu_ms(train, reps))


def worker(lib: str, names, reps: int, threads: int) -> dict:
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        return {name: _torch_case(CASES[name], reps) for name in names}
    import numcnn

    numcnn.tune_malloc()  # the allocator setting numcnn train and bench/bench.py use
    return {name: _numcnn_case(CASES[name], reps, lib == "kernels") for name in names}


def run_worker(lib: str, names, reps: int, threads: int) -> dict:
    env = dict(os.environ, **{var: str(threads) for var in THREAD_VARS})
    command = [sys.executable, __file__, "--worker", lib, "--reps", str(reps),
               "--threads", str(threads), "--cases", *names]
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"grouped.py: the {lib} worker failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--worker", choices=LIBS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.cases, args.reps, args.threads)))
        return
    runs = {lib: [] for lib in LIBS}
    for r in range(args.rounds):
        for lib in (LIBS if r % 2 == 0 else LIBS[::-1]):
            runs[lib].append(run_worker(lib, args.cases, args.reps, args.threads))
    table = {}
    for name in args.cases:
        row = {}
        for lib in LIBS:
            row[lib] = {part: statistics.median(run[name][part] for run in runs[lib])
                        for part in ("forward", "train")}
        row["impl"] = runs["kernels"][0][name]["impl"]
        table[name] = row
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"# {stamp}, {cpu_model()}, {args.threads} thread(s), median of {args.rounds} rounds "
          f"x {args.reps} calls, CPU time (ms)")
    print("| case | impl | forward: kernels | NumPy | PyTorch | PyTorch/kernels | "
          "train step: kernels | NumPy | PyTorch | PyTorch/kernels |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, row in table.items():
        cells = []
        for part in ("forward", "train"):
            k, n, t = (row[lib][part] for lib in LIBS)
            cells += [f"{k:.2f}", f"{n:.2f}", f"{t:.2f}", f"{t / k:.2f}"]
        print(f"| {name} | {row['impl']} | " + " | ".join(cells) + " |")
    if args.json:
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as f:
            json.dump(dict(date=stamp, cpu=cpu_model(), threads=args.threads,
                           rounds=args.rounds, reps=args.reps, cases=table), f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
