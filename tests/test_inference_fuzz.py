"""Seeded random models through compiled inference plans (numcnn.inference) against the layer path.

Each case is a random ``Sequential`` (convolutions of every kernel size, stride, padding and
dilation the plan takes, channel counts around the kernels' block and chunk boundaries, batch
norms with random running statistics, activations the plan fuses and ones it hands to Python,
fusable and overlapping poolings, residual blocks with and without projection shortcuts, global
pooling, flatten and linear heads), a random input size and a batch size from the lane-padding
boundaries. The reference is the layer-by-layer eval forward under ``numcnn.no_grad()`` (held to
PyTorch by the layer tests); a plan must agree to float32 rounding (rtol 1e-4, atol 2e-5 of the
output's scale: Winograd F(4x4, 3x3) errs by about 4e-6 of the scale).

The default run takes a fixed set of seeds on this process's CPU variant with
``NUMCNN_WINOGRAD`` unset, 0 and 2, and a smaller set in subprocesses for the ``baseline`` and
``avx2`` variants (``NUMCNN_CPU``, as tests/test_backend.py does). ``NUMCNN_PLAN_FUZZ=N`` runs
``N`` cases per configuration instead (the long sweep; the ``slow`` test).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import numcnn
from numcnn import backend, inference, nn

HERE = Path(__file__).resolve().parent
needs_kernels = pytest.mark.skipif(not backend.available(), reason="compiled kernels not built")

BATCHES = (1, 2, 7, 15, 16, 17, 31, 33, 47, 48, 63, 64, 65, 100, 127, 128, 129, 200, 257, 500)
CHANNELS = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64)
# multiply-adds per case (batch x the model's): keeps a case to a few tens of ms on the layer path
BUDGET = 6e7


def _cpu_level() -> int:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return 0
    return 3 if " avx512f" in flags else 2 if " avx2" in flags else 1


# -- random models -----------------------------------------------------------------------------

def _randomise_batch_norm(bn, rng):
    c = bn.num_features
    bn.running_mean[...] = rng.normal(0, 0.3, c)
    bn.running_var[...] = rng.uniform(0.3, 2.5, c)
    if bn.weight is not None:
        bn.weight.data[...] = rng.uniform(0.5, 1.5, c) * rng.choice([-1, 1], c)
        bn.bias.data[...] = rng.normal(0, 0.3, c)


def _channels(rng) -> int:
    return int(rng.choice(CHANNELS)) if rng.random() < 0.8 else int(rng.integers(1, 81))


class _Gen:
    """Builds a random model layer by layer, tracking the map shape ``(c, h, w)`` and the
    multiply-adds per image."""

    def __init__(self, rng, c, h, w):
        self.rng, self.c, self.h, self.w = rng, c, h, w
        self.macs = 0
        self.notes: list[str] = []

    def conv(self, cout=None, kernel=None, stride=None, padding=None, dilation=None):
        rng = self.rng
        for _ in range(20):
            k = kernel if kernel is not None else int(rng.choice([1, 3, 3, 3, 5, 7, 2]))
            kk = (k, k) if rng.random() < 0.85 or kernel is not None else (k, int(rng.choice([1, 3, 5])))
            s = stride if stride is not None else [1, 1, 1, 2, (2, 1), (1, 2)][rng.integers(6)]
            d = dilation if dilation is not None else (1 if rng.random() < 0.8 else 2)
            p = padding if padding is not None else ["same", 0, 1, 2, "same"][rng.integers(5)]
            if p == "same" and s not in (1, (1, 1)):
                p = 1
            ss = (s, s) if isinstance(s, int) else s
            ext = [(kk[i] - 1) * d + 1 for i in range(2)]
            if p == "same":
                oh, ow = self.h, self.w
            else:
                oh = (self.h + 2 * p - ext[0]) // ss[0] + 1
                ow = (self.w + 2 * p - ext[1]) // ss[1] + 1
            if oh >= 1 and ow >= 1:
                break
        else:
            return None
        co = cout if cout is not None else _channels(rng)
        layer = nn.Conv2d(self.c, co, kk, stride=s, padding=p, dilation=d,
                          bias=bool(rng.random() < 0.7))
        self.macs += co * self.c * kk[0] * kk[1] * oh * ow
        self.c, self.h, self.w = co, oh, ow
        return layer

    def batch_norm(self):
        bn = nn.BatchNorm2d(self.c, affine=bool(self.rng.random() < 0.85))
        _randomise_batch_norm(bn, self.rng)
        return bn

    def activation(self):
        r = self.rng.random()
        if r < 0.55:
            return nn.ReLU()
        if r < 0.8:
            return nn.Tanh()
        return [nn.LeakyReLU(0.1), nn.Sigmoid(), nn.ELU(), nn.GELU(), nn.SiLU()][
            self.rng.integers(5)]

    def pool(self):
        rng = self.rng
        options = [("max", 2, 2), ("max", 2, 2), ("max", 3, 3), ("max", 3, 2), ("max", 2, 1),
                   ("max", (1, 2), (1, 2)), ("max", (2, 3), (2, 3)), ("avg", 2, 2),
                   ("avg", 3, 2), ("avg", 2, 1)]
        kind, k, s = options[rng.integers(len(options))]
        kk = (k, k) if isinstance(k, int) else k
        ss = (s, s) if isinstance(s, int) else s
        if self.h < kk[0] or self.w < kk[1]:
            return None
        self.h = (self.h - kk[0]) // ss[0] + 1
        self.w = (self.w - kk[1]) // ss[1] + 1
        return (nn.MaxPool2d if kind == "max" else nn.AvgPool2d)(k, s)

    def residual(self):
        rng = self.rng
        c0, h0, w0 = self.c, self.h, self.w
        project = rng.random() < 0.5
        stride = 2 if project and rng.random() < 0.5 and min(h0, w0) >= 2 else 1
        cout = _channels(rng) if project else c0
        first = self.conv(cout=cout, kernel=3, stride=stride, padding=1, dilation=1)
        layers = [first, self.batch_norm(), nn.ReLU()] if rng.random() < 0.8 else [first]
        k2 = int(rng.choice([1, 3, 3]))
        layers.append(self.conv(cout=cout, kernel=k2, stride=1, padding=k2 // 2, dilation=1))
        if rng.random() < 0.8:
            layers.append(self.batch_norm())
        shortcut = None
        if project:
            parts = [nn.Conv2d(c0, cout, 1, stride=stride, bias=bool(rng.random() < 0.3))]
            self.macs += c0 * cout * self.h * self.w
            if rng.random() < 0.8:
                bn = nn.BatchNorm2d(cout)
                _randomise_batch_norm(bn, rng)
                parts.append(bn)
            shortcut = nn.Sequential(*parts)
        return nn.Residual(nn.Sequential(*layers), shortcut)


def random_model(seed: int, small: bool = True):
    """``(model, input_shape, batch, description)`` for ``seed``."""
    rng = np.random.default_rng(seed)
    n = int(rng.choice(BATCHES))
    c = int(rng.choice([1, 1, 2, 3, 3, 8, 16, 17, 32]))
    h = int(rng.integers(1, 41)) if rng.random() < 0.3 else int(rng.choice([4, 8, 12, 16, 28, 32]))
    w = h if rng.random() < 0.8 else int(rng.integers(1, 41))
    gen = _Gen(rng, c, h, w)
    layers: list = []
    blocks = int(rng.integers(1, 6))
    for _ in range(blocks):
        r = rng.random()
        if r < 0.5:
            conv = gen.conv()
            if conv is None:
                continue
            layers.append(conv)
            if rng.random() < 0.6:
                layers.append(gen.batch_norm())
            if rng.random() < 0.75:
                layers.append(gen.activation())
            if rng.random() < 0.35:
                pool = gen.pool()
                if pool is not None:
                    layers.append(pool)
                    if rng.random() < 0.2:
                        layers.append(gen.activation())
        elif r < 0.75 and min(gen.h, gen.w) >= 1:
            layers.append(gen.residual())
            if rng.random() < 0.7:
                layers.append(nn.ReLU())
        elif r < 0.85:
            pool = gen.pool()
            if pool is not None:
                layers.append(pool)
        elif r < 0.92:
            layers.append(gen.activation())
        else:
            layers.append(gen.batch_norm())  # on its own: not after a conv
        if rng.random() < 0.1:
            layers.append(nn.Dropout(0.3))
    head = rng.random()
    features = gen.c * gen.h * gen.w
    if head < 0.35:
        layers.append(nn.GlobalAvgPool2d())
        features = gen.c
    elif head < 0.8:
        layers.append(nn.Flatten())
    if head < 0.8:
        hidden = int(rng.choice([1, 7, 8, 9, 16, 17, 33, 64, 100]))
        if rng.random() < 0.5:
            layers.append(nn.Linear(features, hidden, bias=bool(rng.random() < 0.8)))
            if rng.random() < 0.5:
                bn = nn.BatchNorm1d(hidden)
                _randomise_batch_norm(bn, rng)
                layers.append(bn)
            if rng.random() < 0.7:
                layers.append([nn.ReLU(), nn.Tanh(), nn.Sigmoid()][rng.integers(3)])
            features = hidden
        layers.append(nn.Linear(features, int(rng.choice([1, 3, 10, 17]))))
        gen.macs += features * 20
    if not layers:
        layers.append(nn.ReLU())
    # keep the case cheap: fewer images for a heavy model
    budget = BUDGET * (1 if small else 8)
    if n * gen.macs > budget:
        fitting = [b for b in BATCHES if b * gen.macs <= budget]
        n = int(rng.choice(fitting)) if fitting else 1
    model = nn.Sequential(*layers).eval()
    return model, (c, h, w), n


def _reference(model, x):
    with numcnn.no_grad():
        return np.array(model(x))


def _check(out, ref, what: str) -> str | None:
    if out.shape != ref.shape:
        return f"{what}: shape {out.shape} != {ref.shape}"
    finite = np.isfinite(ref)
    if not np.array_equal(finite, np.isfinite(out)) or not np.array_equal(
            np.isnan(ref), np.isnan(out)):
        bad = np.argwhere(np.isnan(ref) != np.isnan(out))
        return (f"{what}: NaN/inf pattern differs ({int((np.isnan(ref) != np.isnan(out)).sum())}"
                f" NaN mismatches, first at {bad[:1].tolist()})")
    if not np.array_equal(out[~finite], ref[~finite]):
        return f"{what}: infinities differ"
    scale = max(float(np.abs(ref[finite]).max(initial=0.0)), 1e-3)
    err = np.abs(out[finite].astype(np.float64) - ref[finite])
    tol = 1e-4 * np.abs(ref[finite]) + 2e-5 * scale
    if not np.all(err <= tol):
        worst = int(np.argmax(err - tol))
        return (f"{what}: max |diff| {err.max():.3g} (scale {scale:.3g}), worst "
                f"{err[worst]:.3g} vs tol {tol[worst]:.3g}")
    return None


def run_case(seed: int, small: bool = True) -> str | None:
    """Compile the model of ``seed`` and compare the plan with the layer path; the failure's
    description, or None."""
    numcnn.manual_seed(seed)
    model, shape, n = random_model(seed, small)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    try:
        plan = inference.compile(model, shape)
        out = plan(x)
    except Exception as error:  # noqa: BLE001 - a crash is a finding, reported with the model
        return f"seed {seed}: n={n} shape={shape} raised {error!r}\n{model}"
    problem = _check(out, _reference(model, x), f"seed {seed} n={n} shape={shape}")
    if problem:
        return f"{problem}\n{plan}\n{model}"
    return None


def run_cases(seeds, small: bool = True) -> list[str]:
    return [p for p in (run_case(s, small) for s in seeds) if p]


# -- the default run --------------------------------------------------------------------------

SEEDS = range(40)


@needs_kernels
@pytest.mark.parametrize("winograd", [None, "0", "2"])
def test_random_models_match_the_layer_path(winograd, monkeypatch):
    if winograd is None:
        monkeypatch.delenv("NUMCNN_WINOGRAD", raising=False)
    else:
        monkeypatch.setenv("NUMCNN_WINOGRAD", winograd)
    count = int(os.environ.get("NUMCNN_PLAN_FUZZ", "0")) or len(SEEDS)
    problems = run_cases(range(count))
    assert not problems, "\n\n".join(problems[:5])
