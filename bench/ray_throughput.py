"""Training throughput on Ray: one process against DataParallel with 1 and 2 workers.

    python bench/ray_throughput.py --data ../shared/data/mnist.npz [--images 6400] [--repeats 2]

Trains each preset for one epoch on the first --images MNIST training images (batch 64, Adam),
alternating the settings --repeats times, and prints images/s of each (the best repeat). The
workers are Ray actors with one CPU each, so their compiled kernels run on one thread; the one
process uses every core. Also checks that 2 workers give the weights of one process for a model
without batch norm (small-cnn), to float32 rounding, after the epoch.
"""

import argparse
import logging
import time

import numpy as np


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--images", type=int, default=6400)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--models", default="convnet-bn,small-cnn")
    args = parser.parse_args()

    import ray

    import numcnn as nc
    from numcnn import data, models, optim, train

    with np.load(args.data) as d:
        x = d["x_train"][:args.images].reshape(-1, 1, 28, 28)
        y = d["y_train"][:args.images]
    x = data.Preprocessing.fit(x).apply(x)
    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
             log_to_driver=False)
    for name in args.models.split(","):
        best, weights = {}, {}
        for _ in range(args.repeats):
            for workers in (None, 1, 2):
                nc.manual_seed(0)
                model = models.preset(name)
                opt = optim.Adam(model.parameters(), lr=1e-3)
                start = time.perf_counter()
                train.fit(model, (x, y), epochs=1, batch_size=64, optimizer=opt, seed=0,
                          workers=workers, print_fn=None)
                rate = len(x) / (time.perf_counter() - start)
                best[workers] = max(best.get(workers, 0), rate)
                weights[workers] = model.state_dict()
        line = (f"{name}: one process {best[None]:,.0f} img/s; 1 worker {best[1]:,.0f}; "
                f"2 workers {best[2]:,.0f}")
        if name != "convnet-bn":
            diff = max(float(np.abs(weights[2][k] - weights[None][k]).max()
                             / max(np.abs(weights[None][k]).max(), 1e-12)) for k in weights[None])
            line += f"; 2 workers vs one process: max relative weight difference {diff:.2e}"
        print(line, flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
