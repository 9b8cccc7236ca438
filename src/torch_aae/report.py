"""A run's report: one self-contained HTML file (no server, no network, no scripts).

It holds the resolved config (config.json), the final metrics (summary.json, and eval.json when
`aae evaluate` has been run), the per-epoch curves and history table (metrics.jsonl), and every
PNG of RUN/plots but losses.png (the per-epoch curves stand for it), each image embedded as a base64 `data:` URI. It reads the run's files only: no
model is loaded, so it takes a second whatever the model.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import math
import os
from pathlib import Path

from .checkpoint import atomic_write_bytes, read_json
from .errors import AAEError
from .logger import read_history

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; }
td.num { text-align: right; font-family: monospace; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
.scroll { overflow-x: auto; }
"""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if value is None or isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def _table(rows: dict, caption: str | None = None) -> str:
    """A two-column key/value table."""
    def cls(v) -> str:  # numbers right-aligned; True and False are words
        return "num" if isinstance(v, (int, float)) and not isinstance(v, bool) else ""

    cells = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td class='{cls(v)}'>{html.escape(_fmt(v))}</td></tr>"
        for k, v in rows.items()
    )
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    return f"<table>{cap}{cells}</table>"


def _history_table(history: list[dict]) -> str:
    keys = ["epoch"] + sorted({k for row in history for k in row} - {"epoch"})
    head = "".join(f"<th>{html.escape(k)}</th>" for k in keys)
    body = "".join(
        "<tr>" + "".join(f"<td class='num'>{html.escape(_fmt(row.get(k, '')))}</td>" for k in keys)
        + "</tr>"
        for row in history
    )  # fmt: skip
    return f"<div class='scroll'><table><tr>{head}</tr>{body}</table></div>"


def _img(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    cap = html.escape(caption)
    return (f"<figure><img alt='{cap}' src='data:image/png;base64,{data}'>"
            f"<figcaption>{cap}</figcaption></figure>")  # fmt: skip


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    return buf.getvalue()


def curves_png(history: list[dict]) -> bytes | None:
    """One panel per logged key (loss/..., acc/..., eval/..., time/...) against the epoch."""
    from matplotlib.ticker import MaxNLocator

    from .plots import subplots

    keys = sorted({k for row in history for k in row if "/" in k})
    if not keys:
        return None
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig, axes = subplots(nrows, ncols, figsize=(4.2 * ncols, 2.8 * nrows), squeeze=False)
    epochs = [row["epoch"] for row in history]
    for ax, key in zip(axes.flat, keys):
        ax.plot(epochs, [row.get(key, math.nan) for row in history], marker=".")
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    for ax in axes.flat[len(keys) :]:
        ax.axis("off")
    return _png(fig)


def histogram_png(metrics: dict) -> bytes | None:
    """Bar chart of the sample_class_<k> fractions of eval.json, if there are any."""
    from .plots import subplots

    prefix = "sample_class_"
    classes = sorted(int(k[len(prefix) :]) for k in metrics
                     if k.startswith(prefix) and k[len(prefix) :].isdigit())  # fmt: skip
    if not classes:
        return None
    fig, ax = subplots(figsize=(5, 2.8))
    ax.bar(classes, [metrics[f"sample_class_{k}"] for k in classes])
    ax.axhline(1 / len(classes), color="k", lw=0.8, ls="--", label="uniform")
    ax.set_xticks(classes)
    ax.set_xlabel("class predicted by the evaluation classifier")
    ax.set_ylabel("fraction of samples")
    ax.legend(fontsize=8)
    return _png(fig)


def run_config(run: str | os.PathLike) -> dict:
    """The config of run folder `run` as a dict, or an AAEError that says why it is not one."""
    run = Path(run)
    if not run.exists():
        raise AAEError(f"{run}: no such run folder")
    if run.is_file():
        raise AAEError(f"{run}: a file; give the run folder that holds it")
    from .run_folder import recorded_config

    config = read_json(run / "config.json")
    if config is None:  # gone: the checkpoint's own copy, if there is a checkpoint
        recorded = recorded_config(run)
        if recorded is None:
            raise AAEError(f"{run}: not a run folder (no config.json)")
        config = recorded.to_dict()
    if not isinstance(config, dict):
        raise AAEError(f"{run / 'config.json'}: not a run's config (a JSON {type(config).__name__}, not an object)")
    return config


def render_report(run: str | os.PathLike) -> str:
    """The HTML text of the report of run folder `run`."""
    config, run = run_config(run), Path(run)
    summary, evaluation = read_json(run / "summary.json"), read_json(run / "eval.json")
    history = read_history(run)
    plots = sorted((run / "plots").glob("*.png"))
    name = html.escape(run.resolve().name)
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    parts = [f"<h1>AAE run {name}</h1>",
             f"<p>{html.escape(str(config.get('model_kind', '?')))} model; report written "
             f"{stamp} from {html.escape(str(run.resolve()))}.</p>", "<h2>Final metrics</h2>"]  # fmt: skip
    if summary is None and evaluation is None:
        parts.append("<p>No summary.json or eval.json yet (an unfinished run?).</p>")
    meta = read_json(run / "checkpoints" / "latest.json") or {}
    if summary is not None:
        if meta.get("epoch") is not None and summary.get("epochs") is not None and meta["epoch"] > summary["epochs"]:
            parts.append(f"<p><b>summary.json is stale:</b> it ended training at epoch "
                         f"{summary['epochs']}; a resume has since trained the checkpoint to epoch "
                         f"{meta['epoch']} without finishing. <code>aae train ... --resume</code> "
                         "finishes it.</p>")  # fmt: skip
        parts.append(_table(summary, "summary.json (end of training)"))
    if evaluation is not None:
        latest = meta.get("step")
        if latest is not None and evaluation.get("checkpoint_step") != latest:
            parts.append(f"<p><b>eval.json is stale:</b> it scored the checkpoint of step "
                         f"{evaluation.get('checkpoint_step')}; the latest is of step {latest}. "
                         "Run <code>aae evaluate RUN</code> again.</p>")  # fmt: skip
        parts.append(_table(evaluation, "eval.json (aae evaluate)"))
        hist = histogram_png(evaluation)
        if hist is not None:
            parts.append(_img(hist, "class histogram of samples (eval.json)"))
    parts.append("<h2>Per-epoch curves</h2>")
    curves = curves_png(history) if history else None
    parts.append(_img(curves, "metrics.jsonl, one panel per key") if curves
                 else "<p>No per-epoch history (metrics.jsonl).</p>")  # fmt: skip
    if history:
        parts.append(_history_table(history))
    parts.append("<h2>Plots</h2>")
    # (plots/losses.png: the per-epoch curves above, by family)
    parts += [_img(p.read_bytes(), f"plots/{p.name}") for p in plots if p.name != "losses.png"] or ["<p>No plots.</p>"]
    parts.append("<h2>Config</h2>")
    for section, values in config.items():
        parts.append(_table(_read_by(values, config), section) if isinstance(values, dict)
                     else _table({section: values}))  # fmt: skip
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>AAE run {name}</title><style>{STYLE}</style></head>\n<body>\n{body}\n"
            "</body></html>\n")  # fmt: skip


def _read_by(values: dict, config: dict) -> dict:
    """A config section without the settings its model (and prior) does not read, which are
    only their defaults (`config.MODEL_FIELDS`, `config.PRIOR_FIELDS`)."""
    from .config import MODEL_FIELDS, PRIOR_FIELDS

    kind = config.get("model_kind")
    prior = config.get("model", {}).get("prior", "gaussian")
    prior_fields = {f for fields in PRIOR_FIELDS.values() for f in fields}
    return {k: v for k, v in values.items()
            if kind in MODEL_FIELDS.get(k, (kind,))
            and not (kind == "unsupervised" and k in prior_fields and k not in PRIOR_FIELDS.get(prior, (k,)))}  # fmt: skip


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the report of `run` to `out` (default RUN/report.html), atomically.

    Returns:
        The path written.
    """
    out = Path(run) / "report.html" if out is None else Path(out)
    if out.suffix.lower() not in (".html", ".htm"):
        raise AAEError(f"--out {out}: the report is an .html file")
    atomic_write_bytes(out, render_report(run).encode("utf-8"))
    return out
