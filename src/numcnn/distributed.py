"""numcnn on a Ray cluster: batch inference with Ray Data, data-parallel training on Ray actors.

**Batch inference** (:func:`predict_dataset`, :func:`predict_files`, ``numcnn predict MODEL
FOLDER --ray``): the images are read by Ray Data, then prepared, preprocessed and classified by
``map_batches`` with a callable class, so each worker loads the model once and keeps it; the
dataset streams through, so a folder larger than memory works. Each image gives one row: its
path, its class, the class's probability, the probability of every class, and an error message
for a file that could not be read as an image (the others go on).

**Data-parallel training** (:class:`DataParallel`, ``fit(..., workers=N)``, ``numcnn train
--workers N``): N Ray actors hold a replica each of the model, its optimizer and its loss. Every
global batch is split into N shards; each worker computes the gradients of its shard (its mean
loss weighted by its share of the batch, so the weighted sum is the gradient of the global
batch's mean loss); each worker then fetches every worker's gradient from Ray's object store and
adds them up in rank order (an all-reduce built on the object store: the same sum, bit for bit,
on every worker), and takes the same optimizer step, so the replicas stay identical. Batch norm
normalises each shard with its own statistics, as PyTorch's DistributedDataParallel does; the
running statistics of worker 0 are copied to the others after every step (DDP broadcasts rank
0's buffers likewise). With ``sync_batch_norm=True`` batch norm uses the global batch's
statistics instead (PyTorch's SyncBatchNorm), all-reduced through a Ray actor. For a model
without dropout (and without batch norm, or with it synchronised) the weights equal those of one
process trained on the same global batches, to float32 rounding.

Ray is an optional extra: ``pip install "numcnn[ray]"``. Without an address a local Ray is
started (and stopped when done); with one (``ray start --head`` printed it, or ``"auto"``) the
work joins that cluster. See docs/interop.md.

Ray Data: https://docs.ray.io/en/latest/data/batch_inference.html
PyTorch DDP: https://pytorch.org/docs/stable/notes/ddp.html
"""

from __future__ import annotations

import contextlib
import csv
import glob as globlib
import io as stdio
import logging
import math
import os
import re
import time
from pathlib import Path

import numpy as np

from .errors import NumcnnError

__all__ = ["RayError", "require_ray", "ray_session", "predict_dataset", "predict_files",
           "image_files", "DataParallel"]

INSTALL_HINT = 'pip install "numcnn[ray]"'


class RayError(NumcnnError, RuntimeError):
    """Ray missing, a cluster that cannot be reached, or a distributed job that failed."""


def require_ray():
    """The ``ray`` module (with Ray Data), or a RayError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise RayError(f"running on Ray needs the 'ray' package with Ray Data, which is not "
                       f"installed; install it with: {INSTALL_HINT}") from None
    return ray


@contextlib.contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None):
    """Ray for the block: join the cluster at ``address``, or (None) use the Ray already
    initialised in this process, or start a local one, which is shut down at the end.

    Raises RayError when the cluster cannot be reached.
    """
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        try:
            if address is None:
                ray.init(num_cpus=num_cpus, include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
            else:
                ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise RayError(f"cannot start or join {where}: {error}") from None
        started = True
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------------------------
# Batch inference
# ----------------------------------------------------------------------------------------------
class _Classifier:
    """Ray Data's callable class: loads the model once per worker, classifies batches.

    A batch is a dict of columns: ``path`` and either ``bytes`` (the file's content, as
    ``ray.data.read_binary_files(..., include_paths=True)`` gives) or ``image`` (decoded pixel
    arrays, as ``ray.data.read_images`` gives).
    """

    def __init__(self, model_bytes: bytes, classes, digit):
        from . import io
        from .data import Preprocessing

        self.model = io.loads(model_bytes, "model").eval()
        recorded = (self.model.metadata or {}).get("preprocessing")
        if recorded is None:
            raise RayError("the model records no preprocessing (it was not saved by 'numcnn "
                           "train'); save it with metadata={'preprocessing': ...}")
        self.preprocessing = Preprocessing.from_dict(recorded)
        self.classes = list(classes)
        self.digit = digit

    def __call__(self, batch: dict) -> dict:
        from .data import prepare_image
        from .errors import NumcnnError as Error
        from .train import predict

        paths = [str(p) for p in batch["path"]]
        images = batch["bytes"] if "bytes" in batch else batch["image"]
        prepared, good, errors = [], [], [""] * len(paths)
        for i, image in enumerate(images):
            try:
                source = stdio.BytesIO(bytes(image)) if "bytes" in batch else np.asarray(image)
                prepared.append(prepare_image(source, self.preprocessing, digit=self.digit))
                good.append(i)
            except (Error, OSError, ValueError) as error:
                message = re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(error))
                errors[i] = " ".join(message.split())
        k = len(self.classes)
        probabilities = np.full((len(paths), k), np.nan, np.float32)
        if prepared:
            probabilities[good] = predict(self.model, np.concatenate(prepared))
        best = np.where(np.isnan(probabilities).all(axis=1), -1,
                        np.nan_to_num(probabilities, nan=-1.0).argmax(axis=1))
        out = {"path": np.array(paths, dtype=object),
               "class": np.array(["" if b < 0 else str(self.classes[b]) for b in best],
                                 dtype=object),
               "probability": np.array([np.nan if b < 0 else probabilities[i, b]
                                        for i, b in enumerate(best)], np.float32),
               "error": np.array(errors, dtype=object)}
        for j, name in enumerate(self.classes):
            out[f"prob_{name}"] = probabilities[:, j]
        return out


def _model_bytes(model) -> tuple[bytes, list]:
    """A model (or a model file's path) as the bytes of its file, and its class names."""
    from . import io

    if isinstance(model, (str, os.PathLike)):
        with open(model, "rb") as file:
            raw = file.read()
        loaded = io.loads(raw, os.fspath(model))  # checked here, before any worker starts
    else:
        loaded, raw = model, io.dumps(model)
    metadata = getattr(loaded, "metadata", None) or {}
    if metadata.get("preprocessing") is None:
        raise RayError("the model records no preprocessing (it was not saved by 'numcnn "
                       "train'); save it with metadata={'preprocessing': "
                       "Preprocessing.to_dict()}")
    shape = tuple(metadata["preprocessing"]["input_shape"])
    outputs = loaded.output_shape((1, *shape))[-1]
    classes = metadata.get("classes") or list(range(outputs))
    if len(classes) != outputs:
        classes = list(range(outputs))
    return raw, list(classes)


def predict_dataset(model, dataset, *, batch_size: int = 64, workers: int | None = None,
                    digit: bool | None = None):
    """Classify a Ray Dataset of images; returns a (lazy, streaming) Ray Dataset of results.

    Args:
        model: a numcnn model with the metadata ``numcnn train`` records (preprocessing, class
            names), or the path of its model file.
        dataset: a ``ray.data.Dataset`` with a ``path`` column and either ``bytes`` (image files'
            contents: ``ray.data.read_binary_files(paths, include_paths=True)``) or ``image``
            (pixel arrays: ``ray.data.read_images(paths, include_paths=True)``).
        batch_size: images per ``map_batches`` call. Default: 64.
        workers: model replicas (Ray actors, one CPU each). Default: Ray's CPUs minus one
            (a CPU is always left for the tasks that read the files).
        digit: prepare each image as an MNIST digit (see :func:`numcnn.data.prepare_image`).
            Default: for models taking (1, 28, 28) inputs.

    Returns:
        a Dataset with the columns ``path``, ``class`` (the most likely class's name; empty for
        a broken file), ``probability`` (its probability), ``error`` (why a file could not be
        read; empty otherwise) and ``prob_<class>`` for every class. Each worker loads the model
        once (``map_batches`` with a callable class).
    """
    ray = require_ray()
    raw, classes = _model_bytes(model)
    if workers is None:  # a CPU is left for reading the files
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) - 1)
    if batch_size < 1 or workers < 1:
        raise RayError(f"batch_size and workers must be >= 1, got {batch_size} and {workers}")
    # one CPU per replica, but a CPU is always left for the reading tasks (replicas holding
    # every CPU would leave them none, and the job would wait forever)
    cpus = float(ray.cluster_resources().get("CPU", 1))
    per_worker = min(1.0, max(cpus - 1, 0.5) / workers)
    return dataset.map_batches(
        _Classifier, fn_constructor_args=(raw, classes, digit), batch_size=batch_size,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=per_worker)


def image_files(folder_or_glob) -> list[str]:
    """The image files of a folder (every file with an image extension Pillow knows, sorted),
    or the files a glob pattern matches (all of them: a broken one is reported later)."""
    from PIL import Image

    text = os.fspath(folder_or_glob)
    if os.path.isdir(text):
        extensions = {ext.lower() for ext in Image.registered_extensions()}
        files = sorted(str(p) for p in Path(text).rglob("*")
                       if p.is_file() and p.suffix.lower() in extensions
                       and not p.name.startswith("."))
    elif os.path.isfile(text):
        files = [text]
    else:
        files = sorted(p for p in globlib.glob(text, recursive=True) if os.path.isfile(p))
    if not files:
        raise NumcnnError(f"{text}: no image files there (expected a folder of images, an image "
                          f"file or a glob pattern such as 'digits/*.png')")
    return files


def predict_files(model_path, sources, output, *, address: str | None = None,
                  batch_size: int = 64, workers: int | None = None, progress: bool = False,
                  digit: bool | None = None) -> dict:
    """Classify every image of a folder (or glob) on Ray and write one CSV row per image.

    The files are read by ``ray.data.read_binary_files``, classified by
    :func:`predict_dataset`, and the rows are written as they stream back, in the files' order,
    to ``output`` (a temporary file renamed at the end: never half-written). Columns: ``path``,
    ``class``, ``probability``, ``error``, ``prob_<class>`` per class.

    Args:
        model_path: the model file.
        sources: a folder (its image files, recursively), an image file or a glob, or a list
            of them.
        output: the CSV file.
        address: a Ray cluster to join (``"auto"``, ``"ray://host:10001"``, ``host:6379``);
            default: the Ray of this process, or a local one started for the job.
        batch_size, workers, digit: as in :func:`predict_dataset`.
        progress: Ray Data's progress bars.

    Returns:
        ``{"images": n, "failed": [(path, error), ...], "seconds": s, "output": path}``.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    files = [f for source in sources for f in image_files(source)]
    raw, _ = _model_bytes(model_path)  # refuse a bad model file before Ray starts
    from .io import atomic_write

    start = time.perf_counter()
    # a local Ray gets a CPU (a logical one: Ray does not pin) beside the model replicas, for the
    # tasks reading the files; replicas on every CPU would leave them none and wait forever
    local_cpus = max(os.cpu_count() or 1, (workers or 1) + 1)
    with ray_session(address, num_cpus=local_cpus) as ray:
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True
        context.enable_progress_bars = progress
        dataset = ray.data.read_binary_files(files, include_paths=True)
        results = predict_dataset(model_path, dataset, batch_size=batch_size, workers=workers,
                                  digit=digit)
        failed, count = [], 0

        def write(file):
            nonlocal count
            text = stdio.TextIOWrapper(file, encoding="utf-8", newline="")
            writer = None
            for batch in results.iter_batches(batch_format="numpy", batch_size=batch_size):
                columns = list(batch)
                if writer is None:
                    header = ["path", "class", "probability", "error"] + \
                        [c for c in columns if c.startswith("prob_")]
                    writer = csv.writer(text)
                    writer.writerow(header)
                for i in range(len(batch["path"])):
                    row = [_csv_value(batch[c][i]) for c in header]
                    writer.writerow(row)
                    if batch["error"][i]:
                        failed.append((str(batch["path"][i]), str(batch["error"][i])))
                    count += 1
            text.flush()
            text.detach()

        try:
            atomic_write(output, write)
        except Exception as error:  # a worker's exception comes back wrapped by Ray
            if isinstance(error, NumcnnError) or isinstance(error, OSError):
                raise
            raise RayError(f"the Ray job failed: {_short(error)}") from None
    return {"images": count, "failed": failed, "seconds": time.perf_counter() - start,
            "output": os.fspath(output)}


def _csv_value(value):
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else repr(float(value))
    return str(value)


def _short(error) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


# ----------------------------------------------------------------------------------------------
# Data-parallel training
# ----------------------------------------------------------------------------------------------
class _Rendezvous:
    """An all-reduce point for the synchronised batch norm (a Ray async actor): each of
    ``count`` workers hands in its array under a key and gets the sum, added in rank order, so
    every worker gets the same bits."""

    def __init__(self):
        self.pending = {}

    async def allreduce(self, key, rank: int, count: int, value):
        import asyncio

        entry = self.pending.get(key)
        if entry is None:
            entry = self.pending[key] = {"values": {}, "event": asyncio.Event(), "taken": 0}
        entry["values"][rank] = value
        if len(entry["values"]) == count:
            ordered = [entry["values"][r] for r in sorted(entry["values"])]
            total = np.array(ordered[0], dtype=np.float64, copy=True)
            for part in ordered[1:]:
                total += part
            entry["result"] = total
            entry["event"].set()
        await entry["event"].wait()
        entry["taken"] += 1
        result = entry["result"]
        if entry["taken"] == count:
            del self.pending[key]
        return result


class _SyncBatchNorm:
    """Batch norm over the global batch, split across workers: the forward pass all-reduces the
    per-channel sums (the mean, then the squared deviations: the variance, two passes as
    numcnn's own batch norm), the backward pass the sums of ``dy`` and ``dy * x_hat`` that the
    input gradient needs. Installed on a replica's batch-norm layers in training
    (``sync_batch_norm=True``); the upstream gradient is that of the global batch's mean loss.

    With M values per channel over all workers:
    ``mean = sum x / M``, ``var = sum (x - mean)^2 / M``, ``y = gamma (x - mean)/sqrt(var + eps)
    + beta``, ``dx = gamma / sqrt(var + eps) * (dy - sum dy / M - x_hat * sum(dy x_hat) / M)``.
    PyTorch: https://pytorch.org/docs/stable/generated/torch.nn.SyncBatchNorm.html
    """

    def __init__(self, replica, layer, index: int):
        self.replica, self.layer, self.index = replica, layer, index
        self.plain_forward, self.plain_backward = layer.forward, layer.backward

    def _sum(self, phase: str, value):
        replica = self.replica
        key = (replica.step_id, self.index, phase)
        import ray

        return ray.get(replica.rendezvous.allreduce.remote(key, replica.rank,
                                                           replica.participants, value))

    def forward(self, x):
        layer = self.layer
        if not layer.training or layer.running_mean is None:
            return self.plain_forward(x)
        x = np.asarray(x)
        layer._check_shape(x.shape)
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        count_sums = self._sum("mean", np.concatenate([[x.size // x.shape[1]],
                                                       x.sum(axis=axes, dtype=np.float64)]))
        total = count_sums[0]
        mean = count_sums[1:] / total
        centred = x - mean.astype(x.dtype).reshape(shape)
        var = self._sum("var", np.square(centred).sum(axis=axes, dtype=np.float64)) / total
        inv_std = (1.0 / np.sqrt(var + layer.eps)).astype(x.dtype)
        x_hat = centred * inv_std.reshape(shape)
        weight = layer.weight.data if layer.weight is not None else np.ones_like(inv_std)
        bias = layer.bias.data if layer.bias is not None else np.zeros_like(inv_std)
        y = x_hat * weight.reshape(shape) + bias.reshape(shape)
        factor = layer.momentum if layer.momentum is not None else None
        layer.num_batches_tracked += 1
        if factor is None:
            factor = 1.0 / float(layer.num_batches_tracked)
        layer.running_mean[...] = (1 - factor) * layer.running_mean + factor * mean
        layer.running_var[...] = ((1 - factor) * layer.running_var
                                  + factor * var * total / max(total - 1, 1))
        self.cache = (x_hat, inv_std, weight, total, axes, shape)
        return y.astype(x.dtype, copy=False)

    def backward(self, grad_out):
        layer = self.layer
        if not layer.training or layer.running_mean is None:
            return self.plain_backward(grad_out)
        x_hat, inv_std, weight, total, axes, shape = self.cache
        self.cache = None
        dy = np.asarray(grad_out)
        sum_dy = dy.sum(axis=axes, dtype=np.float64)
        sum_dy_xhat = (dy * x_hat).sum(axis=axes, dtype=np.float64)
        if layer.weight is not None:  # this shard's share; the all-reduce adds the shares
            layer.weight.grad += sum_dy_xhat.astype(layer.weight.dtype)
            layer.bias.grad += sum_dy.astype(layer.bias.dtype)
        sums = self._sum("grad", np.concatenate([sum_dy, sum_dy_xhat]))
        c = dy.shape[1]
        mean_dy = (sums[:c] / total).astype(dy.dtype).reshape(shape)
        mean_dy_xhat = (sums[c:] / total).astype(dy.dtype).reshape(shape)
        scale = (weight * inv_std).astype(dy.dtype).reshape(shape)
        return scale * (dy - mean_dy - x_hat * mean_dy_xhat)


class _Replica:
    """One worker of :class:`DataParallel` (a Ray actor): a replica of the model, optimizer and
    loss; computes its shard's gradients, then all-reduces and steps."""

    def __init__(self, rank: int, seed: int):
        from . import _random

        self.rank = rank
        _random.manual_seed(seed)  # dropout masks etc.: the worker's own stream
        self.model = self.optimizer = self.criterion = None
        self.params = []
        self.rendezvous, self.step_id, self.participants = None, 0, 1

    def sync_batch_norm(self, rendezvous) -> None:
        """Normalise the batch-norm layers over the global batch (see :class:`_SyncBatchNorm`)."""
        self.rendezvous = rendezvous

    def load(self, state) -> None:
        """The driver's (model, optimizer, loss), pickled together so the optimizer holds this
        replica's own parameters."""
        import copy

        # a deep copy: arrays from the object store are read-only; the copy keeps the
        # optimizer's references to the model's parameters (one copy of the whole tuple)
        self.model, self.optimizer, self.criterion = copy.deepcopy(state)
        self.params = list(self.model.parameters())
        self.model.train()
        if self.rendezvous is not None:
            from . import nn

            layers = [m for m in self.model.modules()
                      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
            for index, layer in enumerate(layers):
                sync = _SyncBatchNorm(self, layer, index)
                object.__setattr__(layer, "forward", sync.forward)
                object.__setattr__(layer, "backward", sync.backward)

    def gradient(self, x, y, total: int, step_id: int = 0, participants: int = 1):
        """This shard's gradient, flat, weighted by its share ``len(x) / total`` of the global
        batch (a loss that sums instead of averaging: weight 1). Returns ``(stats, gradient,
        buffers)``; stats are ``(loss * len(x), correct, len(x))``. With the synchronised batch
        norm the weight is applied to the loss's gradient instead, before the backward pass,
        so that the batch-norm layers all-reduce gradients of the same (global) loss."""
        from .train import _labels

        self.step_id, self.participants = step_id, participants
        n = len(x)
        x, y = np.array(x), np.array(y)  # writable copies of the object store's arrays
        self.model.zero_grad()
        if n == 0:
            flat = np.zeros(sum(p.size for p in self.params), np.float32)
            return (0.0, 0, 0), flat, self._buffers()
        logits = self.model(x)
        loss = float(self.criterion(logits, y))
        mean = getattr(self.criterion, "reduction", "mean") == "mean"
        weight = n / total if mean else 1.0
        grad_logits = self.criterion.backward()
        if self.rendezvous is not None and weight != 1.0:
            grad_logits = grad_logits * np.asarray(weight, grad_logits.dtype)
            weight = 1.0
        self.model.backward_params(grad_logits)
        flat = np.concatenate([p.grad.reshape(-1) for p in self.params]).astype(np.float32)
        if weight != 1.0:
            flat *= np.float32(weight)
        correct = int(np.count_nonzero(np.asarray(logits).argmax(axis=1) == _labels(y)))
        return (loss * n, correct, n), flat, self._buffers()

    def _buffers(self):
        return {name: np.array(b, copy=True) for name, b in self.model.named_buffers()}

    def step(self, gradient_refs, buffers) -> bool:
        """All-reduce (fetch every worker's gradient, add them up in rank order) and step.

        ``gradient_refs`` is a list of ObjectRefs (fetched here); ``buffers``, rank 0's
        buffers, is passed as a top-level ObjectRef, which Ray resolves before the call."""
        import ray

        gradients = ray.get(list(gradient_refs))
        total = gradients[0].copy()
        for g in gradients[1:]:
            total += g
        offset = 0
        for p in self.params:
            p.grad[...] = total[offset:offset + p.size].reshape(p.shape)
            offset += p.size
        self.optimizer.step()
        if self.rank != 0 and self.rendezvous is None:  # rank 0's statistics, as DDP's broadcast
            state = dict(buffers)
            for module_name, module in self.model.named_modules():
                prefix = f"{module_name}." if module_name else ""
                for name in list(module._buffers):
                    if prefix + name in state and module._buffers[name] is not None:
                        module._buffers[name] = np.array(state[prefix + name], copy=True)
        return True

    def state(self):
        """The replica's model and optimizer state and the optimizer's step count (to the
        driver at the end of an epoch)."""
        return (self.model.state_dict(), self.optimizer.state_dict(),
                getattr(self.optimizer, "_step_count", 0))

    def weights(self):
        return self.model.state_dict()


class DataParallel:
    """N Ray actors training replicas of one model on shards of every global batch.

    Used by :func:`numcnn.train.fit` (``workers=N``): :meth:`push` sends the driver's model,
    optimizer and loss to every worker (at the start of each epoch, so a resumed run, a
    learning-rate schedule and the driver's state all reach them), :meth:`step` trains on one
    global batch, :meth:`pull` brings worker 0's weights and optimizer state back (at the end of
    each epoch, for validation, checkpoints and the run folder).

    Args:
        workers: N, the number of Ray actors (one CPU each, so the compiled kernels run on one
            thread per worker).
        address: the Ray cluster to join; default: this process's Ray, or a local one.
        seed: worker i seeds numcnn's generator with ``seed + i`` (dropout).
        sync_batch_norm: normalise the batch-norm layers over the global batch
            (:class:`_SyncBatchNorm`, PyTorch's ``SyncBatchNorm``): the statistics and the
            batch-norm gradients are all-reduced through a Ray actor, three times per layer and
            step, and the model trains as in one process. Default: False (each shard's own
            statistics, and rank 0's running statistics kept, as PyTorch's DDP).

    Shard i of a global batch of B samples is ``np.array_split(batch, N)[i]``; its gradient is
    weighted by ``len(shard) / B``, so the sum is the gradient of the global batch's mean loss.
    """

    def __init__(self, workers: int, address: str | None = None, seed: int = 0,
                 sync_batch_norm: bool = False):
        if not isinstance(workers, int) or workers < 1:
            raise RayError(f"workers must be a positive int, got {workers!r}")
        self._session = ray_session(address)
        self.ray = self._session.__enter__()
        actor = self.ray.remote(num_cpus=1)(_Replica)
        self.workers = [actor.remote(rank, seed + rank) for rank in range(workers)]
        self.n = workers
        self.steps = 0
        self.rendezvous = None
        if sync_batch_norm:
            self.rendezvous = self.ray.remote(num_cpus=0, max_concurrency=4 * workers + 8)(
                _Rendezvous).remote()
            self._get([w.sync_batch_norm.remote(self.rendezvous) for w in self.workers])

    def push(self, model, optimizer, criterion) -> None:
        state = self.ray.put((model, optimizer, criterion))
        self._get([w.load.remote(state) for w in self.workers])

    def step(self, x, y) -> tuple[float, int]:
        """Train every replica on one global batch; returns (mean loss, correct predictions)."""
        x, y = np.asarray(x), np.asarray(y)
        total = len(x)
        shards = list(zip(np.array_split(x, self.n), np.array_split(y, self.n)))
        participants = sum(len(xs) > 0 for xs, _ in shards)  # the synchronised batch norm's
        self.steps += 1
        results = [w.gradient.options(num_returns=3).remote(xs, ys, total, self.steps,
                                                            participants)
                   for w, (xs, ys) in zip(self.workers, shards)]
        gradients = [r[1] for r in results]
        buffers = results[0][2]
        done = [w.step.remote(gradients, buffers) for w in self.workers]
        stats = self._get([r[0] for r in results])
        self._get(done)
        loss = sum(s[0] for s in stats) / max(sum(s[2] for s in stats), 1)
        return loss, sum(s[1] for s in stats)

    def pull(self, model, optimizer) -> None:
        weights, optimizer_state, steps = self._get(self.workers[0].state.remote())
        model.load_state_dict(weights)
        optimizer.load_state_dict(optimizer_state)
        if hasattr(optimizer, "_step_count"):  # the steps were taken (schedulers check it)
            optimizer._step_count = steps

    def replica_weights(self) -> list[dict]:
        """Every worker's state_dict (to check that the replicas are identical)."""
        return self._get([w.weights.remote() for w in self.workers])

    def _get(self, refs):
        try:
            return self.ray.get(refs)
        except self.ray.exceptions.RayError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, NumcnnError):
                raise cause from None
            raise RayError(f"a training worker failed: {_short(error)}") from None

    def close(self) -> None:
        for w in self.workers:
            self.ray.kill(w)
        if self.rendezvous is not None:
            self.ray.kill(self.rendezvous)
            self.rendezvous = None
        self.workers = []
        self._session.__exit__(None, None, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
