"""Run-level helpers shared by the CLI and Python users: build a model from a config, and
evaluate or plot a finished run folder."""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from .checkpoint import atomic_write_json, load_model
from .config import Config, from_dict
from .data import Dataset, load_dataset
from .errors import AAEError
from .logger import read_history
from .train import make_plots, resolve_device
from .variants import get_variant


def build_model(config: Config, data: Dataset):
    """A fresh model of `config.model_kind`, shaped for `data`."""
    model_cls = get_variant(config.model_kind).MODEL
    extra = {}
    if "n_classes" in inspect.signature(model_cls.from_config).parameters:
        if data.num_classes is None:
            raise AAEError(f"the {config.model_kind} model needs labels; {data.name} has none")
        extra["n_classes"] = data.num_classes
    return model_cls.from_config(config.model, data.features, data.image_shape, **extra)


def load_run_config(run: str | os.PathLike) -> Config:
    path = Path(run) / "config.json"
    if not path.is_file():
        raise AAEError(f"{run}: not a run folder (no config.json)")
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AAEError(f"{path}: unreadable ({e})") from None
    return from_dict(raw)


def _run_data(run, data_dir) -> Dataset:
    """The run's dataset with its test split (no --subset: metrics use the full test set)."""
    d = load_run_config(run).data
    return load_dataset(d.dataset, data_dir or d.data_dir)


def evaluate_run(run: str | os.PathLike, device: str = "cpu", data_dir=None) -> dict:
    """Final metrics of the run's latest checkpoint; also written to RUN/eval.json."""
    device = resolve_device(device)
    model = load_model(run, device)
    metrics = get_variant(model.kind).evaluate(model, _run_data(run, data_dir), device)
    atomic_write_json(Path(run) / "eval.json", metrics)
    return metrics


def plot_run(run: str | os.PathLike, device: str = "cpu", data_dir=None) -> list[Path]:
    """Redraw the run's plots from its latest checkpoint and metrics history."""
    device = resolve_device(device)
    model = load_model(run, device)
    return make_plots(model, _run_data(run, data_dir), Path(run), device, read_history(run))
