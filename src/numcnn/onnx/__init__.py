"""ONNX out and in: a numcnn model as a standard ONNX graph, and an ONNX graph as a numcnn model.

- :func:`export` writes a model as an ONNX file (opset 17 or later) that onnxruntime, TensorRT,
  OpenVINO, ONNX.js ... can run: each layer becomes standard ONNX operators (``Conv``,
  ``ConvTranspose``, ``MaxPool``, ``AveragePool``, ``BatchNormalization``, ``Gemm``, ``Add`` ...),
  the batch axis is dynamic, and the preprocessing and class names recorded by ``numcnn train``
  go into the model's ``metadata_props`` (or, with ``fold_preprocessing=True``, into the graph as
  its first two nodes, so the exported model takes raw pixels).
- :func:`load` turns an ONNX graph made of those operators (what ``torch.onnx.export`` emits for
  the same layers included) into a numcnn model with its weights. Sequential chains and residual
  additions ``x + f(x)`` are read; anything else is refused with a message naming the node.

Both need the ``onnx`` package: ``pip install "numcnn[onnx]"``. See docs/interop.md.

ONNX operators: https://onnx.ai/onnx/operators/
"""

from __future__ import annotations

from ..errors import NumcnnError

__all__ = ["export", "load", "OnnxError", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
INSTALL_HINT = 'pip install "numcnn[onnx]"'


class OnnxError(NumcnnError, ValueError):
    """A model that cannot be written as ONNX, or an ONNX file that cannot be read as a model.

    The message names the layer (export) or the node (import) and says what was expected.
    """


def _require_onnx():
    """The ``onnx`` package, or an OnnxError saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise OnnxError(f"ONNX support needs the 'onnx' package, which is not installed; "
                        f"install it with: {INSTALL_HINT}") from None
    return onnx


from ._export import export  # noqa: E402  (imports the onnx package when called)


def load(path, *, max_bytes: int | None = None):
    """Read an ONNX file as a numcnn model; see :func:`numcnn.onnx._import.load`."""
    from ._import import load as _load

    return _load(path, max_bytes=max_bytes)
