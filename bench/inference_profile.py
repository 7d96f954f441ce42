"""Inference, layer by layer against a compiled plan: per-layer times, overhead per operation.

Usage (from the repository root)::

    python bench/inference_profile.py                       # convnet-bn, batch 1 and 1000
    python bench/inference_profile.py --presets convnet-bn,small-cnn --batches 1,64 --json out.json

What it prints (docs/inference.md shows a run):

- the layer path (``model.eval()`` under ``numcnn.no_grad()``): each layer's forward time and the
  whole forward pass, median over ``--repeats``;
- the compiled plan (``numcnn.inference.compile``): each fused operation's time, measured inside
  the one C call (``Plan.profile``), the whole call from Python, and the compile time;
- the overhead per operation: a chain of ``--depth`` tiny layers (Linear 16 -> 16 + ReLU on one
  sample, about 256 multiply-adds each) through both paths; the time per layer there is what a
  layer costs beyond its arithmetic.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time

import numpy as np


def _median_call(fn, x, repeats: int) -> float:
    fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def layer_times(model, x, repeats: int) -> list[tuple[str, float]]:
    """Each top-level layer's forward under no_grad, on the activations it sees, median s."""
    import numcnn

    rows = []
    with numcnn.no_grad():
        for index, layer in enumerate(model.children()):
            seconds = _median_call(layer, x, repeats)
            rows.append((f"{index} {type(layer).__name__}", seconds))
            x = layer(x)
    return rows


def profile(preset: str, batches, repeats: int) -> dict:
    import numcnn
    from numcnn import inference, models

    numcnn.manual_seed(0)
    model = models.preset(preset).eval()
    shape = tuple(models.PRESETS[preset]["input_shape"])
    start = time.perf_counter()
    plan = inference.compile(model, shape)
    result = {"preset": preset, "compile_ms": 1e3 * (time.perf_counter() - start),
              "plan": plan.describe(), "batches": {}}
    rng = np.random.default_rng(0)
    for n in batches:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        reps = repeats if n < 100 else max(3, repeats // 20)
        with numcnn.no_grad():
            whole_layers = _median_call(model, x, reps)
        result["batches"][n] = {
            "layers": layer_times(model, x, reps), "layers_total_s": whole_layers,
            "plan": plan.profile(x, reps), "plan_total_s": _median_call(plan, x, reps)}
    return result


def overhead(depth: int, repeats: int) -> dict:
    """Seconds per layer beyond the arithmetic: a chain of ``depth`` (Linear 16->16, ReLU) on one
    sample, through the layers and through a plan, against a chain of one."""
    import numcnn
    from numcnn import inference, nn

    def chain(k):
        numcnn.manual_seed(0)
        layers = []
        for _ in range(k):
            layers += [nn.Linear(16, 16), nn.ReLU()]
        return nn.Sequential(*layers).eval()

    x = np.ones((1, 16), np.float32)
    short, deep = chain(1), chain(depth)
    out = {}
    with numcnn.no_grad():
        layers = [_median_call(m, x, repeats) for m in (short, deep)]
    plans = [inference.compile(m, (16,)) for m in (short, deep)]
    planned = [_median_call(p, x, repeats) for p in plans]
    unchecked = [inference.compile(m, (16,), check_weights=False) for m in (short, deep)]
    planned_unchecked = [_median_call(p, x, repeats) for p in unchecked]
    out["layer_path_per_layer_us"] = 1e6 * (layers[1] - layers[0]) / (2 * (depth - 1))
    out["plan_per_operation_us"] = 1e6 * (planned_unchecked[1] - planned_unchecked[0]) / (depth - 1)
    out["plan_call_us"] = 1e6 * planned[0]
    out["plan_call_unchecked_us"] = 1e6 * planned_unchecked[0]
    out["weight_check_us"] = 1e6 * (planned[1] - planned_unchecked[1])
    out["weight_check_arrays"] = 2 * depth
    out["weight_check_kb"] = depth * (16 * 16 + 16) * 4 / 1e3
    out["depth"] = depth
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="convnet-bn")
    parser.add_argument("--batches", default="1,1000")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    import numcnn

    numcnn.tune_malloc()
    batches = [int(b) for b in args.batches.split(",")]
    report = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
              "profiles": [profile(p.strip(), batches, args.repeats)
                           for p in args.presets.split(",")],
              "overhead": overhead(args.depth, args.repeats)}
    for prof in report["profiles"]:
        print(f"\n{prof['preset']}: compiled in {prof['compile_ms']:.2f} ms")
        for n, rows in prof["batches"].items():
            print(f"  batch {n}: layers {1e6 * rows['layers_total_s']:,.0f} us, "
                  f"plan {1e6 * rows['plan_total_s']:,.0f} us "
                  f"({rows['layers_total_s'] / rows['plan_total_s']:.2f}x)")
            for label, seconds in rows["layers"]:
                print(f"    layer  {label:<62} {1e6 * seconds:>10,.1f} us")
            for label, seconds in rows["plan"]:
                print(f"    plan   {label:<62} {1e6 * seconds:>10,.1f} us")
    o = report["overhead"]
    print(f"\noverhead per layer (chain of {o['depth']} Linear 16->16 + ReLU, one sample): "
          f"layer path {o['layer_path_per_layer_us']:.2f} us per layer, plan "
          f"{o['plan_per_operation_us']:.2f} us per fused operation; a one-operation plan call "
          f"{o['plan_call_us']:.1f} us ({o['plan_call_unchecked_us']:.1f} us without the weight "
          f"check); the weight check of the deep chain ({o['weight_check_arrays']} arrays, "
          f"{o['weight_check_kb']:.0f} KB) {o['weight_check_us']:.1f} us")
    if args.json:
        with open(args.json, "w") as file:
            json.dump(report, file, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
