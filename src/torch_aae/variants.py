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
- `make_plots(model, data, folder, device) -> list[Path]`.
"""

from __future__ import annotations

from types import ModuleType

from . import clustering, dim_reduction, semi_supervised, supervised, unsupervised
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
