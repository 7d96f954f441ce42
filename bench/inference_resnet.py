"""A CIFAR-sized ResNet served four ways: numcnn's plan, its layers, PyTorch, ONNX Runtime.

Usage (from the repository root, with the test extra installed)::

    python bench/inference_resnet.py                  # batch 1 and 500, 5 repeats
    python bench/inference_resnet.py --batches 500 --repeats 9

The model is the geometry of the ``resnet-cifar`` preset that another branch adds (He et al.
2016: a 3x3 stem 3->16 without bias, batch norm, ReLU; three basic blocks 16, 32 and 64 wide, the
second and third with stride 2 and a 1x1 projection shortcut with batch norm; global average
pooling; linear to 10), built here from numcnn layers with a ``Residual`` that carries its
shortcut, as that branch's does. Its batch-norm statistics are set away from 0/1. The PyTorch
twin has the same weights (the script checks the logits agree); ONNX Runtime runs that twin
exported with ``torch.onnx.export``. All four run in this one process, in turn, each repeat
timing every path once (median of the repeats); each library keeps its own threads.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time

import numpy as np


def numcnn_resnet():
    import numcnn
    from numcnn import nn

    class Residual(nn.Residual):
        def __init__(self, fn, shortcut=None):
            super().__init__(fn)
            self.shortcut = shortcut

        def forward(self, x):
            return self.fn(x) + (x if self.shortcut is None else self.shortcut(x))

        def output_shape(self, input_shape):
            return self.fn.output_shape(input_shape)

    def block(cin, cout, stride):
        fn = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(),
                           nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(cout))
        return Residual(fn, shortcut)

    numcnn.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                          nn.ReLU(), block(16, 16, 1), nn.ReLU(), block(16, 32, 2), nn.ReLU(),
                          block(32, 64, 2), nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(64, 10))
    rng = np.random.default_rng(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            c = module.num_features
            module.running_mean[...] = rng.normal(0, 0.2, c)
            module.running_var[...] = rng.uniform(0.5, 2.0, c)
            module.weight.data[...] = rng.uniform(0.5, 1.5, c)
            module.bias.data[...] = rng.normal(0, 0.2, c)
    return model.eval()


def torch_resnet(state: dict):
    import torch
    from torch import nn

    class Residual(nn.Module):
        def __init__(self, fn, shortcut=None):
            super().__init__()
            self.fn, self.shortcut = fn, shortcut

        def forward(self, x):
            return self.fn(x) + (x if self.shortcut is None else self.shortcut(x))

    class GlobalAvgPool(nn.Module):  # numcnn's GlobalAvgPool2d: (N, C, H, W) -> (N, C)
        def forward(self, x):
            return x.mean(dim=(2, 3))

    def block(cin, cout, stride):
        fn = nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(),
                           nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        shortcut = None
        if stride != 1 or cin != cout:
            shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(cout))
        return Residual(fn, shortcut)

    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                          nn.ReLU(), block(16, 16, 1), nn.ReLU(), block(16, 32, 2), nn.ReLU(),
                          block(32, 64, 2), nn.ReLU(), GlobalAvgPool(), nn.Linear(64, 10))
    own = model.state_dict()
    with torch.no_grad():
        for key, value in state.items():
            own[key].copy_(torch.from_numpy(np.array(value)))
    return model.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", default="1,500")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    import numcnn
    import onnxruntime
    import torch

    from numcnn import inference

    numcnn.tune_malloc()
    model = numcnn_resnet()
    twin = torch_resnet(model.state_dict())
    buffer = io.BytesIO()
    torch.onnx.export(twin, torch.zeros(1, 3, 32, 32), buffer, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
                      opset_version=17, dynamo=False)
    session = onnxruntime.InferenceSession(buffer.getvalue(),
                                           providers=["CPUExecutionProvider"])
    start = time.perf_counter()
    plan = inference.compile(model, (3, 32, 32))
    compile_ms = 1e3 * (time.perf_counter() - start)
    print(plan)
    print(f"compiled in {compile_ms:.2f} ms; ONNX Runtime {onnxruntime.__version__}, "
          f"PyTorch {torch.__version__}")

    def layers(x):
        with numcnn.no_grad():
            return model(x)

    def torch_run(x):
        with torch.inference_mode():
            return twin(torch.from_numpy(x)).numpy()

    paths = {"numcnn plan": plan, "numcnn layers": layers, "PyTorch": torch_run,
             "ONNX Runtime": lambda x: session.run(None, {"x": x})[0]}
    rng = np.random.default_rng(1)
    for n in [int(b) for b in args.batches.split(",")]:
        x = rng.standard_normal((n, 3, 32, 32)).astype(np.float32)
        outputs = {name: np.asarray(run(x)) for name, run in paths.items()}
        for name, out in outputs.items():  # the four compute the same function
            np.testing.assert_allclose(out, outputs["ONNX Runtime"], rtol=1e-3, atol=1e-4,
                                       err_msg=name)
        calls = 200 if n == 1 else 3
        times = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, run in paths.items():
                start = time.perf_counter()
                for _ in range(calls):
                    run(x)
                times[name].append((time.perf_counter() - start) / calls)
        ort = statistics.median(times["ONNX Runtime"])
        print(f"\nbatch {n}: images/s (median of {args.repeats}; min-max), ratio to ONNX Runtime")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"  {name:<14} {n / median:>10,.0f}  ({n / max(values):,.0f}-"
                  f"{n / min(values):,.0f})  {ort / median:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
