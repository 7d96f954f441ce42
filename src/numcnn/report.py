"""``report.html``: one self-contained page describing a training run, for any browser, offline.

>>> from numcnn.report import write_report
>>> write_report("runs/convnet-bn-20261130-120000")     # -> runs/.../report.html

The page is built from the run folder that ``numcnn train`` writes: the settings
(``config.json``), the results (``metrics.json``), the history per epoch (``history.json``, with
the health statistics), the pictures (learning curves, confusion matrix, misclassified images,
filters, a test image's feature maps and saliency, health) and the explain table of the model
(:mod:`numcnn.explain`). Every picture is embedded as a ``data:`` URI, and the page has no script
and no external resource, so the one file opens anywhere, offline. Pictures missing from the
folder are left out. ``scripts/render_report.py`` renders it with headless Chromium.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path

from .errors import NumcnnError

__all__ = ["write_report", "build_report"]

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1150px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; border: 1px solid #eee; margin: 0.4em 0; }
figure { margin: 0.8em 0; } figcaption { color: #555; font-size: 0.9em; }
code, pre { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 0.85em; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; }
.big { font-size: 1.3em; font-weight: 600; }
nav a { margin-right: 1em; }
"""

_SECTIONS = (("config", "Configuration"), ("results", "Results"), ("curves", "Learning curves"),
             ("confusion", "Confusion matrix"), ("mistakes", "Misclassified"),
             ("explain", "Layers explained"), ("seeing", "What the network sees"),
             ("health", "Training health"))


def _esc(value) -> str:
    return html.escape(str(value))


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _read_json(path: Path):
    try:
        with open(path, encoding="utf-8") as file:
            return json.load(file)
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as error:
        raise NumcnnError(f"{path}: not valid JSON ({error.msg}); is this a run folder?") from None


def _table(header, rows, numeric=()) -> str:
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(
        f'<td class="n">{_esc(v)}</td>' if i in numeric else f"<td>{_esc(v)}</td>"
        for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _explain_html(model, input_shape, batch_size) -> str:
    report = model.explain(tuple(input_shape), batch_size=batch_size)
    rows = [(r["name"], r["type"], "x".join(map(str, r["output_shape"])), f"{r['params']:,}",
             f"{r['flops_forward']:,}" if r["flops_forward"] is not None else "?",
             f"{r['flops_backward']:,}" if r["flops_backward"] is not None else "?",
             f"{r['bytes_kept']:,}" if r["bytes_kept"] is not None else "?")
            for r in report.rows]
    parts = [f"<p>For a batch of {batch_size} images of shape "
             f"{_esc('x'.join(map(str, input_shape)))} (a multiply-add counts 2 FLOPs).</p>",
             _table(("Layer", "Type", "Output shape", "Params", "FLOPs forward",
                     "FLOPs backward", "Bytes kept for backward"), rows,
                    numeric=(3, 4, 5, 6))]
    t = report.totals
    parts.append(f"<p>Parameters <b>{t['params']:,}</b>; FLOPs per image: inference "
                 f"<b>{t['flops_per_image_inference']:,}</b>, training "
                 f"<b>{t['flops_per_image_training']:,}</b>; peak activation memory at batch "
                 f"{batch_size}: <b>{(t['peak_activation_bytes'] or 0) / 2**20:.1f} MiB</b>.</p>")
    for r in report.rows:
        lines = [*r["output_size"], f"params: {r['params_formula']}"]
        if r["im2col"]:
            lines.append(f"im2col: {r['im2col']['text']}")
        lines.append(f"backward: {r['backward']}")
        parts.append(f"<details><summary>{_esc(r['name'])} ({_esc(r['type'])})</summary>"
                     f"<pre>{_esc(chr(10).join(lines))}</pre></details>")
    return "\n".join(parts)


def build_report(run_dir, model=None) -> str:
    """The HTML text of the report of ``run_dir`` (see the module docstring)."""
    from . import io
    from .health import format_epoch

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NumcnnError(f"{run_dir}: no such run folder")
    config = _read_json(run_dir / "config.json") or {}
    metrics = _read_json(run_dir / "metrics.json") or {}
    history = _read_json(run_dir / "history.json") or {}
    if model is None and (run_dir / "model.numcnn").exists():
        model = io.load(run_dir / "model.numcnn")
    test = metrics.get("test", {})
    title = f"numcnn run: {config.get('model', '?')} on {metrics.get('dataset', '?')}"
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
           f"<h1>{_esc(title)}</h1>",
           f"<p>Run folder <code>{_esc(run_dir.name)}</code>.</p>",
           "<nav>" + "".join(f'<a href="#{key}">{_esc(name)}</a>' for key, name in _SECTIONS)
           + "</nav>"]

    out.append('<h2 id="config">Configuration</h2>')
    out.append(_table(("Setting", "Value"), [(k, v) for k, v in config.items()]))

    out.append('<h2 id="results">Results</h2>')
    if test:
        correct = round(test.get("accuracy", 0) * test.get("n", 0))
        out.append(f"<p class='big'>Test accuracy {100 * test.get('accuracy', 0):.2f}% "
                   f"({correct:,}/{test.get('n', 0):,}), loss {test.get('loss', 0):.4f}</p>")
        out.append(f"<p>Best epoch {_esc(metrics.get('best_epoch'))} of "
                   f"{_esc(metrics.get('epochs'))}; {metrics.get('train_images', 0):,} training "
                   f"and {metrics.get('val_images', 0):,} validation images.</p>")
    epochs = history.get("epoch", [])
    if epochs:
        def cell(name, i, fmt):
            values = history.get(name) or []
            return fmt(values[i]) if i < len(values) else ""
        rows = [(e, cell("loss", i, "{:.4f}".format), cell("accuracy", i, lambda v:
                                                             f"{100 * v:.2f}%"),
                 cell("val_loss", i, "{:.4f}".format),
                 cell("val_accuracy", i, lambda v: f"{100 * v:.2f}%"),
                 cell("lr", i, "{:.3g}".format), cell("seconds", i, "{:.1f}".format))
                for i, e in enumerate(epochs)]
        out.append(_table(("Epoch", "Loss", "Accuracy", "Val. loss", "Val. accuracy", "LR",
                           "Seconds"), rows, numeric=(1, 2, 3, 4, 5, 6)))

    for key, name, files in (("curves", "Learning curves", [("curves.png", "loss and accuracy "
                                                                           "per epoch")]),
                             ("confusion", "Confusion matrix",
                              [("confusion_matrix.png", "rows: true class, columns: predicted "
                                                        "class (test set)")]),
                             ("mistakes", "Misclassified",
                              [("misclassified.png", "the most confident mistakes on the test "
                                                     "set")])):
        out.append(f'<h2 id="{key}">{_esc(name)}</h2>')
        out += [_image(run_dir / f, caption) for f, caption in files if (run_dir / f).exists()]

    out.append('<h2 id="explain">Layers explained</h2>')
    shape = (getattr(model, "metadata", {}) or {}).get("input_shape") if model else None
    if model is not None and shape:
        # the training batch, but never more images than the run trained on (a batch size
        # larger than the data would make explain trace memory for images that never existed)
        batch = int(config.get("batch_size", 1) or 1)
        trained = metrics.get("train_images")
        batch = min(batch, int(trained)) if trained else min(batch, 1024)
        out.append(_explain_html(model, shape, max(1, batch)))
    else:
        out.append("<p>(no model in the run folder)</p>")

    out.append('<h2 id="seeing">What the network sees</h2>')
    out += [_image(run_dir / "filters.png", "the first convolution's filters")
            ] if (run_dir / "filters.png").exists() else []
    for path in sorted(run_dir.glob("sample_feature_maps_*.png")):
        layer = path.stem[len("sample_feature_maps_"):].replace("_", ".")
        out.append(_image(path, f"feature maps of layer {layer} for the first test image"))
    if (run_dir / "sample_saliency.png").exists():
        out.append(_image(run_dir / "sample_saliency.png",
                          "saliency: the gradient of the predicted class's score with respect "
                          "to the pixels of the first test image"))

    out.append('<h2 id="health">Training health</h2>')
    if (run_dir / "health.png").exists():
        out.append(_image(run_dir / "health.png", "per layer and epoch: gradient norm, update "
                                                  "/ weight ratio, dead ReLU units, activation "
                                                  "spread"))
    for summary in history.get("health", []):
        out.append(f"<p><code>{_esc(format_epoch(summary))}</code></p>")
    out.append("<p style='color:#777'>Written by numcnn.</p></body></html>")
    return "\n".join(out)


def write_report(run_dir, model=None, path=None) -> str:
    """Write ``report.html`` (or ``path``) for ``run_dir``, atomically; return its path."""
    from .io import atomic_write

    path = os.fspath(path) if path is not None else os.path.join(os.fspath(run_dir),
                                                                 "report.html")
    atomic_write(path, build_report(run_dir, model).encode("utf-8"))
    return path
