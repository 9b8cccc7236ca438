"""The training loop shared by every AAE variant, and what it writes to the run folder
(`run_folder.py` guards the folder and says what config it records).

RUN/
  config.json           the resolved config
  metrics.jsonl         one line per epoch: each phase's loss, discriminator accuracies, eval
  summary.json          final metrics (test_recon_bce, epochs, train_seconds, samples_per_second, ...)
  checkpoints/latest.pt the latest checkpoint (+ latest.json, its readable metadata)
  plots/*.png           latent scatter, samples, manifold grid, loss curves
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from pathlib import Path

import torch
from tqdm.auto import tqdm

from . import distributed, graphs, optim, plots
from .checkpoint import (
    atomic_write_json,
    load_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
    write_checkpoint_meta,
)
from .config import Config, TrainConfig, from_dict, refuse_unread
from .data import Dataset
from .errors import AAEError, AAEWarning, Interrupted
from .logger import RunLogger
from .run_folder import (  # noqa: F401  (RunFolder, RESUMES: torch_aae.train's names too)
    CHECKPOINT, DATA_RECORD, RESUMES, RunFolder, check_config_file, check_epochs_left, check_resumable,
    check_same_data,
    data_record, default_config, record_resume, recorded_config, run_config,
)  # fmt: skip
from .stopping import SigtermInterrupts, StopOnSignal
from .variants import defaults, get_variant

def resolve_device(name: str | torch.device) -> torch.device:
    """The torch device of --device auto, cpu or cuda[:N] (or such a torch.device), refused
    where it does not exist."""
    name = str(name) if isinstance(name, torch.device) else name
    if not isinstance(name, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", name):
        raise AAEError(f"--device {name!r}: choose auto, cpu or cuda[:N]")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AAEError(f"--device {name}: CUDA is not available on this machine")
    device = torch.device(name)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise AAEError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
    return device


@dataclasses.dataclass
class TrainState:
    """Where training stands: enough to continue exactly where it stopped."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps so far
    batch: int = 0  # batches done in the current epoch
    perm: torch.Tensor | None = None  # the current epoch's permutation
    sums: dict = dataclasses.field(default_factory=dict)  # running sums of this epoch's logs
    history: list = dataclasses.field(default_factory=list)  # one dict per completed epoch
    train_seconds: float = 0.0
    epoch_seconds: float = 0.0  # training time of the current epoch so far
    images_seen: int = 0


def fit(
    model: torch.nn.Module,
    data: Dataset,
    train: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    config: Config | None = None,
    progress: bool = True,
    branch_from: str | os.PathLike | None = None,
) -> dict:
    """Train `model` on `data` and return the final metrics.

    Args:
        model: an AAE variant (e.g. `UnsupervisedAAE`); trained in place.
        train: optimisation settings (default: `config.train`, else those of `aae train KIND`
            given no flag, `defaults(model.kind).train`: each model's own epochs and rates).
        out: run folder for config, metrics, checkpoints and plots (None: keep nothing on disk).
        resume: continue the run in `out` from its latest checkpoint, under its own settings
            (only those that `aae train --resume` may change can differ). Without `config`
            and `train`, those of the run (its config.json); with `train` alone, the run's
            config with that `train`.
        overwrite: replace an existing run in `out`.
        config: the run's model kind and data section, recorded in `out` with the model's own
            arguments and `train` (default: `defaults(model.kind)`, with how `load_dataset` made
            `data`). Its data section holds what the model's setup reads: `labels` (the labeled
            images of the supervised, semi-supervised and dim-reduction models: N, or None for
            all of them; by default the command line's: 10000, 100 and none) and `data_seed`;
            e.g. `config=defaults("semi-supervised", labels="1000")`.
        progress: a progress bar, on a terminal (one line per epoch is printed to stderr either way).
        branch_from: a checkpoint of another run (e.g. one kept by `keep_checkpoints`) to start
            this new run from: its weights, optimizer states, history and random state, so
            that the new run continues that trajectory under its own schedule. Only the
            settings a resume may change (config.RESUMABLE: epochs, lr_step, ...) may differ
            from that run's; others are refused, as by the CLI's --branch-from.
    Returns:
        The summary: final evaluation metrics plus epochs, train_seconds, samples_per_second.
    """
    variant = get_variant(model.kind)
    _record_as_before(model, Path(out) / CHECKPOINT if resume and out is not None else branch_from)
    if resume and config is None and out is not None:  # the run's own settings, as --resume takes them
        config = recorded_config(Path(out))
        if config is not None and config.model_kind != model.kind:
            raise AAEError(f"resume: {out} holds a run of the {config.model_kind} model, not {model.kind}")
    if train is None:  # else the command line's defaults for the model
        train = config.train if config is not None else defaults(model.kind).train
    if not isinstance(train, TrainConfig):
        raise AAEError(f"train must be a TrainConfig, not {type(train).__name__}")
    config = default_config(model, data, train) if config is None else run_config(config, model, data, train)
    _check_model_and_data(model, data, train, resume)
    if resume and out is None:
        raise AAEError("resume needs the run folder to resume from (out=...)")
    branch_ckpt = None if branch_from is None else _branch_checkpoint(branch_from, out, resume, config)
    run_path = Path(out) if out is not None else None
    # Under torchrun: join the process group; rank 0 alone writes the run folder.
    distributed.check_batch(train.batch_size, distributed.world_from_env())
    world, device, joined = distributed.init(resolve_device(train.device))
    writes = run_path if world.main else None
    check_precision(train.precision, device)  # refused before the run folder is touched
    if train.cuda_graphs:
        graphs.check(model.kind, device, train, world.active)
    optim.check_kernel(train, device)
    if run_path is not None:
        RunFolder.check(out, resume, overwrite)
        if resume:  # loaded once: checked against config.json here, restored below
            resume_ckpt = load_checkpoint(run_path / CHECKPOINT)
            check_config_file(run_path, resume_ckpt)
        saved = recorded_config(run_path) if resume else None  # config.json, or the checkpoint's
        if saved is not None:
            check_resumable(saved, config)
        if resume:
            check_same_data(run_path, data)
    # Variant-specific fixed inputs of the step (e.g. the labeled subset), built once, and
    # validated before the run folder is touched: a bad request leaves no half-made run.
    refuse_unread(config)  # --labels / --lr-sup where no phase reads them
    if hasattr(variant, "check_evaluable"):  # what the final evaluation needs: labels, a classifier
        variant.check_evaluable(data)
    ctx = variant.setup(model, data, config, device, run_path)
    run_files = ctx.pop("run_files", {}) if isinstance(ctx, dict) else {}
    folder = RunFolder(run_path, resume, overwrite) if writes is not None else None
    logger = RunLogger(writes)
    try:
        torch.manual_seed(train.seed)
        model.to(device)
        if train.compile != "off":  # in place: parameter names (and checkpoints) stay the same
            for network in model.children():
                network.compile(mode=train.compile)
        optimizers = variant.make_optimizers(model, train)
        scaler = optim.grad_scaler(train.precision, device)  # fp16's loss scaling; else None
        if world.active:
            distributed.broadcast_parameters(model)
            distributed.average_gradients_of(optimizers, world)
        state = TrainState()
        if resume:
            state = _restore_loaded(resume_ckpt, run_path / CHECKPOINT, model, optimizers, device, scaler)
            resume_ckpt = None  # the model and optimizers hold what they need of it
            check_epochs_left(train.epochs, state.epoch, state.batch, "--resume")
            if writes is not None:
                record_resume(run_path, config, state, before=None if saved is None else saved.to_dict())
                _level_with_checkpoint(run_path, model, state, train, logger)
                if not (run_path / "config.json").is_file():  # deleted: the checkpoint's, checked above
                    atomic_write_json(run_path / "config.json", config.to_dict())
                if not (run_path / DATA_RECORD).is_file():  # a run older than data.json: checked from now on
                    atomic_write_json(run_path / DATA_RECORD, data_record(data))
                if state.epoch == train.epochs and not state.batch:
                    more = ("its --disc-noise schedule spans them: a new run trains longer" if train.disc_noise
                            else "raise --epochs to train on")  # fmt: skip
                    print(f"{run_path}: already trained {train.epochs} epochs; evaluating only ({more})",
                          file=sys.stderr)  # fmt: skip
        else:
            if writes is not None:
                atomic_write_json(run_path / "config.json", config.to_dict())
                for name, content in run_files.items():
                    atomic_write_json(run_path / name, content)
                atomic_write_json(run_path / DATA_RECORD, data_record(data))
            if branch_ckpt is not None:
                state = _restore_loaded(branch_ckpt, Path(branch_from), model, optimizers, device, scaler)
                if writes is not None:
                    record_resume(run_path, config, state, before=branch_ckpt["config"], source=branch_from)
        if world.active and not world.main:  # other ranks draw other prior samples and noise
            torch.manual_seed(train.seed + 1_000_003 * world.rank + state.step)
        with StopOnSignal() as stop:
            _train_epochs(model, variant, optimizers, data, train, state, device, writes,
                          logger, config, progress and world.main, ctx, stop, world, scaler)  # fmt: skip
        # A signal during the last epoch's end: its checkpoint is written. (Under torchrun the
        # ranks agree on a signal only inside the loop; there the run goes on to its summary.)
        if stop.requested and not world.active:
            where = f"; {_resume_command(model.kind, run_path, data)} evaluates it" if run_path else ""
            raise Interrupted(f"interrupted after the last epoch{where}")
        summary = None
        if world.main:
            try:
                with SigtermInterrupts():
                    summary = variant.evaluate(model, data, device)
                    summary.update(
                        epochs=state.epoch,
                        train_seconds=round(state.train_seconds, 3),
                        samples_per_second=round(state.images_seen / max(state.train_seconds, 1e-9), 1),
                    )
                    if world.active:
                        summary["processes"] = world.size
                    if run_path is not None:  # summary.json last: a run with one has its plots too
                        make_plots(model, data, run_path, device, state.history)
                        atomic_write_json(run_path / "summary.json", summary)
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: training is done and checkpointed
                where = (f" and its last checkpoint written; {_resume_command(model.kind, run_path, data)} "
                         "evaluates it and writes summary.json" if run_path else "")  # fmt: skip
                raise Interrupted(f"interrupted in the final evaluation; the training is finished{where}") from None
        return distributed.broadcast_object(summary, world)
    finally:
        model.eval()  # as after a finished fit, also when a signal or an error stopped it mid-epoch
        logger.close()
        if folder:
            folder.close()
        if joined:
            distributed.shutdown()


def _check_model_and_data(model, data: Dataset, train: TrainConfig, resume: bool) -> None:
    """Refuse, before anything is written, data the model cannot train on: late, deep failures
    (a matrix-product error in step 1) or silently wrong results (plots, a shrunk batch)."""
    data.check()
    if model.model_args["in_dim"] != data.features:
        raise AAEError(f"the model reads images of {model.model_args['in_dim']} values, {data.name}'s have "
                       f"{data.features} ({'x'.join(map(str, data.image_shape))}): build it with "
                       f"in_dim={data.features}, image_shape={tuple(data.image_shape)} (build_model does)")  # fmt: skip
    # Two image shapes that disagree (a flat .npz may be viewed as images; a run made before this
    # check resumes): else the plots tile the pixels wrongly.
    if (not resume and len(data.image_shape) > 1 and len(model.image_shape) > 1
            and tuple(model.image_shape) != tuple(data.image_shape)):  # fmt: skip
        raise AAEError(f"the model views images as {'x'.join(map(str, model.image_shape))}, {data.name}'s are "
                       f"{'x'.join(map(str, data.image_shape))}: build it with image_shape={tuple(data.image_shape)}")  # fmt: skip
    if train.batch_size > len(data.train_x):  # not shrunk without a word: config.json would lie
        raise AAEError(f"--batch-size {train.batch_size} is larger than the {len(data.train_x)} "
                       "training images")  # fmt: skip


def _branch_checkpoint(branch_from, out, resume: bool, config: Config) -> dict:
    """The checkpoint a new run branches from, refused under settings its run may not change."""
    if resume:
        raise AAEError("branch_from starts a new run; resume continues the one in out: pick one")
    if out is not None and Path(out).resolve() in Path(branch_from).resolve().parents:
        raise AAEError(f"--branch-from {branch_from}: the checkpoint is inside --out {out}; "
                       "branch into another folder")  # fmt: skip
    ckpt = load_checkpoint(Path(branch_from))
    if ckpt.get("config"):  # what the CLI's --branch-from refuses too
        check_resumable(from_dict(ckpt["config"]), config, f"branch_from: {branch_from}'s run")
    saved = ckpt["state"]
    check_epochs_left(config.train.epochs, saved["epoch"], saved["batch"], "--branch-from")
    return ckpt


def _resume_command(kind: str, run_path: Path, data: Dataset) -> str:
    if data.source is None:  # a Dataset built in Python, which the command line cannot load
        return f"fit(model, data, out={str(run_path)!r}, resume=True) and the same Dataset"
    return f"`aae train {kind} --out {run_path} --resume`"


def _train_epochs(model, variant, optimizers, data, train, state, device, run_path, logger,
                  config, progress, ctx, stop=None, world=distributed.SINGLE, scaler=None):  # fmt: skip
    train_x = data.train_x.to(device)  # the whole training set, moved once
    # The labels the step sees: the dataset's, unless the variant's setup gave its own (the
    # conditioned unsupervised AAE hides the labels of its unlabeled images as -1).
    train_y = ctx.get("train_y", data.train_y) if isinstance(ctx, dict) else data.train_y
    train_y = None if train_y is None else train_y.to(device)
    n, bs = len(train_x), train.batch_size
    # Several processes split each global batch evenly: an incomplete last batch is dropped.
    steps_per_epoch = n // bs if world.active else math.ceil(n / bs)

    def checkpoint():
        _check_weights(model)  # also without a run folder: nothing is evaluated from NaN weights
        if run_path is not None:
            _save(run_path / CHECKPOINT, model, optimizers, state, config, scaler)

    step_inputs = getattr(variant, "step_inputs", None)  # host-side inputs, drawn ahead per epoch
    graphed = None
    if train.cuda_graphs:
        example = step_inputs(ctx, 0, 1) if step_inputs else {}  # for the buffers' shapes
        graphed = graphs.GraphedStep(variant, model, optimizers, train_x, train_y, ctx, bs,
                                     train.precision, example)  # fmt: skip
    for epoch in range(state.epoch, train.epochs):
        if state.perm is None:
            state.perm, state.batch, state.sums, state.epoch_seconds = epoch_permutation(n, train.seed, epoch), 0, {}, 0.0
        index_batches = state.perm.to(device).split(bs)
        first = state.batch  # this epoch's step inputs, rows from its current batch on
        inputs = step_inputs(ctx, state.step, steps_per_epoch - first) if step_inputs else {}
        inputs = {k: v.to(device) for k, v in inputs.items()}
        if graphed is not None:
            state.sums = graphed.start_epoch(state.sums)
        bar = tqdm(total=steps_per_epoch, initial=state.batch, disable=None if progress else True,  # None: a terminal only
                   desc=f"epoch {epoch + 1}/{train.epochs}", leave=False, dynamic_ncols=True)  # fmt: skip
        set_learning_rates(optimizers, epoch, train.lr_step)
        model.train()  # the epoch-end metrics below switch to eval mode
        start = time.perf_counter()
        try:
            for b in range(state.batch, steps_per_epoch):
                idx = distributed.shard(index_batches[b], world)
                row = {k: v[b - first] for k, v in inputs.items()}
                if graphed is not None:  # the sums accumulate inside the graph
                    state.sums = graphed(idx, row)
                else:
                    y = None if train_y is None else train_y[idx]
                    if row:
                        ctx.update(row)
                    with autocast(device, train.precision), optim.loss_scaling(scaler):
                        logs = variant.train_step(model, optimizers, train_x[idx], y, ctx, state.step)
                    for key, value in logs.items():  # accumulate on the device: no host sync
                        state.sums[key] = state.sums.get(key, 0.0) + value
                state.batch, state.step = b + 1, state.step + 1
                state.images_seen += len(idx) * world.size
                bar.update(1)
                if state.step % train.log_every == 0:
                    means = _means(distributed.average_sums(state.sums, world), state.batch, check=True)
                    bar.set_postfix(means, refresh=False)
                # (not at an epoch's last step whose epoch-end checkpoint follows at once)
                ends_epoch = b + 1 == steps_per_epoch and ((epoch + 1) % train.checkpoint_epochs == 0
                                                           or epoch + 1 == train.epochs)  # fmt: skip
                if train.checkpoint_every and state.step % train.checkpoint_every == 0 and not ends_epoch:
                    _means(distributed.average_sums(state.sums, world), state.batch, check=True)
                    start = _tick(state, start)
                    checkpoint()
                # A signal: stop between two steps. Several processes agree on it every few
                # steps (STOP_AGREE_STEPS), so that all stop at the same step.
                if stop is not None and _stop_now(stop, state.step, train.log_every, world, device,
                                                  epoch_end=b + 1 == steps_per_epoch):  # fmt: skip
                    _tick(state, start)
                    bar.close()
                    _means(distributed.average_sums(state.sums, world), state.batch, check=True)
                    checkpoint()
                    where = f"; continue with {_resume_command(model.kind, run_path, data)}" if run_path else ""
                    raise Interrupted(f"interrupted at epoch {epoch + 1}, step {state.step}{where}")
        except KeyboardInterrupt:  # inside a step: its updates are partial, do not save them
            bar.close()
            kept = f"; the checkpoint of step {_saved_step(run_path)} is kept" if run_path else ""
            raise AAEError(f"stopped in the middle of step {state.step + 1}{kept}") from None
        bar.close()
        _tick(state, start)
        row = {"epoch": epoch + 1,
               **_means(distributed.average_sums(state.sums, world), steps_per_epoch, check=True)}
        model.eval()
        row.update(variant.epoch_metrics(model, data, device))
        row["time/epoch_seconds"] = round(state.epoch_seconds, 3)
        state.history.append(row)
        state.epoch, state.perm, state.batch, state.sums = epoch + 1, None, 0, {}
        if state.epoch % train.checkpoint_epochs == 0 or state.epoch == train.epochs:
            checkpoint()
            if train.keep_checkpoints and run_path is not None:
                kept = run_path / CHECKPOINT.parent / f"epoch-{state.epoch:04d}.pt"
                keep_file(run_path / CHECKPOINT, kept)
        logger.write_epoch(state.history)
        # Losses and evaluations by their names alone; accuracies keep their family (acc/).
        shown = " ".join(f"{k if k.startswith('acc/') else k.split('/')[-1]}={v:.4g}"
                         for k, v in row.items() if k != "epoch")  # fmt: skip
        if world.main:
            tqdm.write(f"epoch {epoch + 1}/{train.epochs} {shown}", file=sys.stderr)


# Under torchrun the processes agree on a stop request (one small all-reduce, a host sync) every
# this many steps at most, and at each epoch's end: a SIGTERM is honoured within that many steps
# whatever --log-every (it was agreed only every --log-every steps, so a large one ignored it).
STOP_AGREE_STEPS = 10


def _stop_now(stop, step: int, every: int, world, device, epoch_end: bool = False) -> bool:
    if not world.active:
        return stop.requested
    due = step % min(every, STOP_AGREE_STEPS) == 0 or epoch_end
    return due and distributed.any_rank(stop.requested, world, device)


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The order of the training images in `epoch`: a function of (seed, epoch) alone, so that
    every process of a distributed run, and a resumed run, draw the same one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


@contextlib.contextmanager
def _tf32_matmuls():
    """CUDA float32 matrix products on the tensor cores' TensorFloat-32 (10-bit mantissa) within."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def check_precision(precision: str, device) -> None:
    if precision == "tf32" and torch.device(device).type != "cuda":
        raise AAEError(f"--precision tf32 is a CUDA mode (TensorFloat-32 matrix products), not for "
                       f"{device}: use fp32 or bf16")  # fmt: skip
    if precision == "fp16" and torch.device(device).type == "cpu":
        warnings.warn("--precision fp16 on a CPU: float16 autocast is for GPUs; a CPU without "
                      "float16 matrix units runs it several times slower than fp32 (bf16 is the "
                      "CPU's fast mode)", AAEWarning, stacklevel=2)  # fmt: skip


def autocast(device, precision: str):
    """The step's numeric precision: a bfloat16 (float16) autocast region for "bf16" ("fp16",
    whose loss scaling is `optim.loss_scaling`'s), float32 matrix products in TensorFloat-32 for
    "tf32" (CUDA; weights and activations stay float32, no casts), nothing for "fp32".

    The region spans a whole step, optimizer updates included, so autocast's cache of bf16
    weight copies is off: it would serve a phase the copy of a weight made before an earlier
    phase's update changed it in place (the cache does not see in-place changes). A CUDA graph's
    capture needs it off too."""
    device = torch.device(device)
    if precision == "tf32":
        return _tf32_matmuls()
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    return torch.autocast(device.type, dtype=dtype, enabled=precision in ("bf16", "fp16"),
                          cache_enabled=False)  # fmt: skip


def set_learning_rates(optimizers: dict, epoch: int, lr_step: int) -> None:
    """The step schedule: each optimizer's initial rate, divided by 10 from epoch `lr_step` on
    (counting from 0). A function of the epoch alone, so a resumed run gets the same rates."""
    factor = 0.1 if lr_step and epoch >= lr_step else 1.0
    for opt in optimizers.values():
        for group in opt.param_groups:
            if "initial_lr" not in group:
                group["initial_lr"] = float(group["lr"])
            if isinstance(group["lr"], torch.Tensor):  # a CUDA graph reads it: set in place
                group["lr"].fill_(group["initial_lr"] * factor)
            else:
                group["lr"] = group["initial_lr"] * factor


def keep_file(path: Path, kept: Path) -> None:
    """`kept` holds what `path` holds now: a hard link (no copy; the next checkpoint replaces
    `path` by a rename, so the link keeps this one), or a copy written atomically where the file
    system has no hard links."""
    tmp = kept.with_name(f".{kept.name}.tmp")  # hidden: a killed run's is cleaned up (RunFolder)
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, kept)


def _saved_step(run_path: Path):
    meta = run_path / CHECKPOINT.with_suffix(".json")
    return json.loads(meta.read_text())["step"] if meta.is_file() else "none"


def _tick(state: TrainState, start: float) -> float:
    """Add the time since `start` to the run's and the epoch's training time; return now."""
    now = time.perf_counter()
    state.train_seconds += now - start
    state.epoch_seconds += now - start
    return now


def _means(sums: dict, count: int, check: bool = False) -> dict[str, float]:
    """Per-batch means of the accumulated logs (one host sync); non-finite losses stop training."""
    means = {k: float(v) / count for k, v in sums.items()}
    if check:
        for key, value in means.items():
            if not math.isfinite(value):
                raise AAEError(
                    f"training diverged: {key} became {value} (phase {key.split('/')[-1]!r}); "
                    "no checkpoint is written from it (an earlier one, if any, is kept); lower the "
                    "learning rates"
                )
    return means


def _save(path: Path, model, optimizers, state: TrainState, config: Config, scaler=None) -> None:
    payload = {
        "model_kind": model.kind,
        "model_args": model.model_args,
        "config": config.to_dict(),
        "networks": {k: v for k, v in model.state_dict().items()},
        "optimizers": {name: _portable(opt.state_dict()) for name, opt in optimizers.items()},
        "grad_scaler": None if scaler is None else scaler.state_dict(),  # fp16: the loss scale
        "state": {
            "epoch": state.epoch, "step": state.step, "batch": state.batch, "perm": state.perm,
            "sums": {k: torch.as_tensor(v).cpu() for k, v in state.sums.items()},
            "history": state.history, "train_seconds": state.train_seconds,
            "epoch_seconds": state.epoch_seconds,
            "images_seen": state.images_seen,
        },
        "rng": rng_state(),
    }  # fmt: skip
    save_checkpoint(path, payload, _meta(model, state))


def _meta(model, state: TrainState) -> dict:
    """A checkpoint's readable metadata (checkpoints/latest.json)."""
    return {"model_kind": model.kind, "model_args": model.model_args, "epoch": state.epoch,
            "step": state.step, "batch_in_epoch": state.batch}  # fmt: skip


def _check_weights(model) -> None:
    """Refuse to checkpoint or evaluate non-finite weights: the losses that `_means` checks were
    computed before the step's last update, which can still have made them NaN (one host sync)."""
    params = list(model.parameters())
    if torch.stack([p.detach().isfinite().all() for p in params]).all():
        return
    bad = [name for name, p in model.named_parameters() if not p.detach().isfinite().all()]
    raise AAEError(f"training diverged: non-finite weights in {', '.join(bad[:3])}"
                   f"{' and more' if len(bad) > 3 else ''}; no checkpoint is written from them (an "
                   "earlier one, if any, is kept); lower the learning rates")  # fmt: skip


def _level_with_checkpoint(run_path: Path, model, state: TrainState, train: TrainConfig, logger) -> None:
    """On resume: bring the files written after a checkpoint level with it, for a crash may have
    come between them (latest.pt written, then latest.json, the kept copy, metrics.jsonl)."""
    write_checkpoint_meta(run_path / CHECKPOINT, _meta(model, state))
    logger.write_epoch(state.history, tensorboard=False)
    kept = run_path / CHECKPOINT.parent / f"epoch-{state.epoch:04d}.pt"
    if train.keep_checkpoints and state.epoch and not state.batch and not kept.exists():
        keep_file(run_path / CHECKPOINT, kept)  # an epoch-end checkpoint


def _portable(opt_state: dict) -> dict:
    """An optimizer's state dict as an eager run saves it: --cuda-graphs' device-tensor learning
    rates as numbers, `capturable` off (a graphed run turns both on again when it resumes)."""
    for group in opt_state["param_groups"]:  # state_dict() made these dicts: ours to change
        if isinstance(group["lr"], torch.Tensor):
            group["lr"] = float(group["lr"])
        if "capturable" in group:
            group["capturable"] = False
    return opt_state


def _restore_loaded(ckpt: dict, path: Path, model, optimizers, device, scaler=None) -> TrainState:
    """Load a checkpoint's weights, optimizer states, loss scale and random state; its state."""
    check_compatible(ckpt, model)
    load_state(model, ckpt["networks"], "networks")
    for name, opt in optimizers.items():
        # How this run's optimizer computes (torch's fused kernel or not): a checkpoint written
        # with --adam-kernel triton carries fused None, which would replace the fused kernel.
        built = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in opt.param_groups]
        try:
            opt.load_state_dict(ckpt["optimizers"][name])
        except (KeyError, ValueError) as e:
            raise AAEError(f"{path}: optimizer {name!r} does not fit: {e}") from None
        for group, flags in zip(opt.param_groups, built):
            group.update(flags)
    if scaler is not None and ckpt.get("grad_scaler"):  # (--precision cannot change on resume)
        scaler.load_state_dict(ckpt["grad_scaler"])
    s = ckpt["state"]
    set_rng_state(ckpt["rng"])
    return TrainState(
        epoch=s["epoch"], step=s["step"], batch=s["batch"], perm=s["perm"],
        sums={k: v.to(device) for k, v in s["sums"].items()}, history=list(s["history"]),
        train_seconds=s["train_seconds"], epoch_seconds=s["epoch_seconds"],
        images_seen=s["images_seen"],
    )  # fmt: skip


def _record_as_before(model, checkpoint) -> None:
    """A run trained with a built-in prior object before such objects were recorded by name
    recorded "custom": resumed or branched with the same object, the model records it so again."""
    before = getattr(model, "model_args_before", None)
    if before is None or checkpoint is None or not Path(checkpoint).is_file():
        return  # (a missing checkpoint is refused later, with the usual message)
    if load_checkpoint(Path(checkpoint)).get("model_args") == before:
        model.model_args = dict(before)


def check_compatible(ckpt: dict, model) -> None:
    if ckpt["model_kind"] != model.kind:
        raise AAEError(f"the checkpoint's model is {ckpt['model_kind']}, not {model.kind}")
    if ckpt["model_args"] != model.model_args:
        diff = {k: (v, model.model_args.get(k)) for k, v in ckpt["model_args"].items()
                if model.model_args.get(k) != v}  # fmt: skip
        raise AAEError(f"checkpoint's model differs (saved, requested): {diff}")


def make_plots(model, data: Dataset, run_path: Path, device, history: list[dict]) -> list[Path]:
    folder = run_path / "plots"
    written = get_variant(model.kind).make_plots(model, data, folder, device)
    if history:
        plots.save_loss_curves(history, folder / "losses.png")
        written.append(folder / "losses.png")
    return written
