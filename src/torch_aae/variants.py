"""The registry of AAE variants. Each variant module provides:

- `MODEL`: the nn.Module class, with `kind`, `model_args`, `from_config(cfg, in_dim, image_shape)`;
- `make_optimizers(model, train_cfg) -> dict[str, Optimizer]`, one per phase;
- `setup(model, data, config, device, run_path) -> ctx`: fixed inputs of the step built once
  (e.g. the labeled subset), called before the run folder is created so that it can refuse a
  bad request first; files for the run folder go in ctx["run_files"] ({name: JSON data});
  ctx["train_y"], when given, replaces the training labels the loop passes to the step;
- `train_step(model, optimizers, x, y, ctx, step) -> dict[str, 0-d Tensor]`: one mini-batch of
  the phases, each with its own zero_grad, then `optim.backward_step(loss, optimizer)` (the
  backward pass, the gradients' average over processes under torchrun, fp16's loss scaling,
  the step); no host sync;
- `epoch_metrics(model, data, device) -> dict` logged after each epoch (keys `eval/...`);
- `evaluate(model, data, device) -> dict` the final metrics for summary.json;
- `make_plots(model, data, folder, device) -> list[Path]`;
- optionally `check_evaluable(data)`: refuses, before `fit` trains, data that `evaluate` could
  not score (a split without labels; the supervised model's missing evaluation classifier).
"""

from __future__ import annotations

import dataclasses
from types import ModuleType

from . import clustering, dim_reduction, semi_supervised, supervised, unsupervised
from .config import SECTIONS, Config, refuse_unread
from .errors import AAEError

VARIANTS: dict[str, ModuleType] = {
    "unsupervised": unsupervised,
    "semi-supervised": semi_supervised,
    "supervised": supervised,
    "clustering": clustering,
    "dim-reduction": dim_reduction,
}


def get_variant(kind: str) -> ModuleType:
    if kind not in VARIANTS:
        raise AAEError(f"unknown model {kind!r}; choose one of {', '.join(VARIANTS)}")
    return VARIANTS[kind]


def defaults(kind: str, **fields) -> Config:
    """The settings of `aae train KIND` given no flag: each model's own defaults (e.g. the
    semi-supervised model's 100 labels, 100 epochs and learning rates) over the dataclasses',
    with `fields` (names of any section's fields) set on top, e.g.
    `defaults("semi-supervised", epochs=10, input_noise=0.3)`."""
    own = {**getattr(get_variant(kind), "CLI_DEFAULTS", {}), **fields}
    sections, known = {}, set()
    for name, cls in SECTIONS.items():
        names = {f.name for f in dataclasses.fields(cls)}
        known |= names
        sections[name] = cls(**{k: v for k, v in own.items() if k in names})
    unknown = sorted(set(fields) - known)
    if unknown:
        raise AAEError(f"defaults: no setting named {', '.join(unknown)} (see `aae train {kind} --help`)")
    config = Config(kind, **sections)
    refuse_unread(config, set(fields))  # a setting the model would not read: now, not in fit
    return config
