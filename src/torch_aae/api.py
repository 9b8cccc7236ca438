"""Run-level helpers shared by the CLI and Python users: build a model from a config, and
evaluate or plot a finished run folder."""

from __future__ import annotations

import inspect
import os
import sys
import time
import warnings
from pathlib import Path

import torch

from .checkpoint import atomic_write_json, load_checkpoint, model_from_checkpoint, read_json_object, resolve_checkpoint
from .config import Config
from .data import Dataset, load_dataset
from .errors import AAEError, AAEWarning
from .logger import read_history
from .run_folder import check_config_file, check_reloadable, check_same_data, recorded_config
from .train import make_plots, resolve_device
from .variants import get_variant


def build_model(config: Config, data: Dataset):
    """A fresh model of `config.model_kind`, shaped for `data`, its weights drawn from
    `config.train.seed` as `aae train` draws them (the global random state is left as it was)."""
    if not isinstance(config, Config):
        raise AAEError(f"build_model takes a Config (e.g. defaults({config!r})), not {type(config).__name__}")
    model_cls = get_variant(config.model_kind).MODEL
    extra = {}
    if "n_classes" in inspect.signature(model_cls.from_config).parameters:
        if data.num_classes is None:
            raise AAEError(f"the {config.model_kind} model needs labels; {data.name} has none")
        extra["n_classes"] = data.num_classes
    with torch.random.fork_rng(devices=[]):  # the CPU generator alone, which the build draws from
        torch.random.default_generator.manual_seed(config.train.seed)
        return model_cls.from_config(config.model, data.features, data.image_shape, **extra)


def load_run_config(run: str | os.PathLike) -> Config:
    """The config a run folder records (its config.json, else its checkpoint's copy)."""
    if not Path(run).exists():
        raise AAEError(f"{run}: no such run folder")
    if Path(run).is_file():
        raise AAEError(f"{run}: a file; give the run folder that holds it")
    config = recorded_config(Path(run))  # config.json, else the checkpoint's copy
    if config is None:
        raise AAEError(f"{run}: not a run folder (no config.json)")
    return config


def _run_checkpoint(run) -> dict:
    """The run folder's latest checkpoint, checked against its config.json before its data is
    loaded: a checkpoint copied in from another run is not scored on this run's data."""
    load_run_config(run)  # first: it refuses what is not a run folder
    ckpt = load_checkpoint(resolve_checkpoint(run))
    check_config_file(Path(run), ckpt)
    return ckpt


def _run_data(run, data_dir, as_trained: bool = True) -> Dataset:
    """The run's data as its training loaded it (validation split, --subset), so that an
    evaluation scores what the training summary scored (the test set is never cut); with
    `as_trained` False, the whole dataset, as the Parzen protocol reads it."""
    config = load_run_config(run)
    check_reloadable(run, "pass that Dataset: evaluate_run, plot_run and encode_run take it as "
                          "data=... (`aae encode RUN --images FILE.npz` encodes any images)")  # fmt: skip
    d = config.data
    if data_dir is not None and d.dataset.endswith(".npz"):  # not ignored without a word
        raise AAEError(f"--data-dir {data_dir}: the run trained on {d.dataset}, not on files in a data folder")
    if not as_trained:
        return load_dataset(d.dataset, data_dir or d.data_dir)
    data = load_dataset(d.dataset, data_dir or d.data_dir, d.subset, d.val_size, config.data_draw_seed)
    check_same_data(run, data)
    return data


def evaluate_run(run: str | os.PathLike, device: str = "cpu", data_dir=None, parzen: bool = False,
                 n_samples: int = 10000, seed: int = 0, cache_dir=None, note=None,
                 sigmas=None, progress: bool = False, prior=None, data: Dataset | None = None) -> dict:  # fmt: skip
    """Final metrics of the run's latest checkpoint; also written to RUN/eval.json.

    Args:
        data: the Dataset the run trained on, for a run trained on one built in Python (the
            others load theirs as training did); also the Parzen protocol's then.
        parzen: also the sample metrics of `sample_metrics` (Parzen log-likelihood, and the
            classifier's Frechet distance and class histogram when it is cached), from
            `n_samples` samples drawn with `seed`; `cache_dir`, `note`, `sigmas` and `progress` are passed on.
        prior: the prior object of a model trained with a custom prior (see `load_model`).
    """
    device = resolve_device(device)
    given = data
    ckpt = _run_checkpoint(run)
    data = _run_data(run, data_dir) if given is None else _given_data(run, given)
    model = model_from_checkpoint(ckpt, run, device, prior)
    metrics = get_variant(model.kind).evaluate(model, data, device)
    step = ckpt["state"]["step"]  # the checkpoint's own, not latest.json's, which a crash can leave behind
    _note_unfinished(run, ckpt)
    if parzen:  # the width is chosen on the run's validation split, else on the Parzen protocol's
        # training images (parzen.validation_images of the whole training set)
        metrics.update(sample_metrics(model, _run_data(run, data_dir, as_trained=False) if given is None else given, device,
                                      n_samples, seed, cache_dir, note, sigmas=sigmas,
                                      progress=progress, val=_held_out_images(data)))  # fmt: skip
    else:  # keep the sample metrics an earlier --parzen evaluation made of this same checkpoint
        try:
            previous = read_json_object(Path(run) / "eval.json") or {}
        except AAEError as e:  # damaged: this evaluation replaces it (refusing would keep it so)
            warnings.warn(f"{e}; rewritten, without the metrics an earlier evaluation kept in it",
                          AAEWarning, stacklevel=2)  # fmt: skip
            previous = {}
        if previous.get("checkpoint_step") == step:
            metrics.update({k: v for k, v in previous.items() if k not in metrics})
    metrics["checkpoint_step"] = step
    try:
        atomic_write_json(Path(run) / "eval.json", metrics)
    except OSError as e:  # a read-only run folder: the metrics are still returned (and printed)
        warnings.warn(f"{Path(run) / 'eval.json'} not written ({e.strerror or e})", AAEWarning, stacklevel=2)
    return metrics


def _note_unfinished(run, ckpt: dict) -> None:
    """Warn that the metrics are those of an unfinished run's checkpoint (a stopped run, or one
    still training), which eval.json does not otherwise tell from a finished one's."""
    epochs, state = ckpt.get("config", {}).get("train", {}).get("epochs"), ckpt["state"]
    if epochs is not None and (state["epoch"] < epochs or state["batch"]):
        where = f"{state['epoch']} of its {epochs} epochs" + (f" and {state['batch']} steps" if state["batch"] else "")
        warnings.warn(f"{run}: an unfinished run; these are the metrics of its checkpoint after {where} "
                      f"(step {state['step']})", AAEWarning, stacklevel=3)  # fmt: skip


def _given_data(run, data: Dataset) -> Dataset:
    """`data`, passed for the run's own: a run folder's (as `_run_data` checks), a Dataset."""
    load_run_config(run)  # refuses what is not a run folder
    if not isinstance(data, Dataset):
        raise AAEError(f"data: a {type(data).__name__}; give the Dataset the run trained on")
    data.check()
    check_same_data(run, data)
    return data


def _held_out_images(data: Dataset):
    """The run's validation split (never seen in training), when it holds enough images for the
    Parzen width search (`parzen.VAL_SIZE`); else None."""
    from .parzen import VAL_SIZE

    if data.val_x is None or len(data.val_x) < VAL_SIZE:
        return None
    return data.val_x[:VAL_SIZE]


def plot_run(run: str | os.PathLike, device: str = "cpu", data_dir=None, prior=None,
             data: Dataset | None = None) -> list[Path]:  # fmt: skip
    """Redraw the run's plots from its latest checkpoint and metrics history (`prior`: that of a
    model trained with a custom prior; `data`: as for `evaluate_run`)."""
    device = resolve_device(device)
    ckpt = _run_checkpoint(run)
    data = _run_data(run, data_dir) if data is None else _given_data(run, data)
    model = model_from_checkpoint(ckpt, run, device, prior)
    try:
        history = read_history(run)
    except AAEError as e:  # the other plots come from the checkpoint: drawn all the same
        warnings.warn(f"{e}; losses.png not drawn", AAEWarning, stacklevel=2)
        history = []
    return make_plots(model, data, Path(run), device, history)


# ----------------------------------------------------------------------------------------------
# Codes of images: the learned representation, for use outside the library

ENCODE_SPLITS = ("test", "train", "val")


@torch.no_grad()
def encode_images(model, x, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """What the trained encoder makes of images `x` in [0, 1], (n, features) or (n, *image_shape),
    a float tensor or array, in eval mode (no dropout, no input noise; the model's mode is
    restored after), on the model's device. CPU tensors:

    - `z` (n, z_dim): the code (the style code of the models that have a class y);
    - `probs` (n, K) and `pred` (n,): q(y|x) and its argmax, for the semi-supervised (classes),
      clustering and dim-reduction (clusters) models;
    - `representation` (n, z_dim): the dim-reduction model's W^T softmax(y) + z.
    """
    x = _check_encode_input(model, x, batch_size)
    training, device = model.training, next(model.parameters()).device
    model.eval()
    out = {"z": [], "probs": [], "representation": []}
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size].to(device)
            if hasattr(model, "class_probabilities"):
                logits, z = model.encoder(xb)
                out["probs"].append(logits.float().softmax(1).cpu())
                if hasattr(model, "represent"):
                    out["representation"].append(model.decoder_input(logits.softmax(1), z).float().cpu())
            else:
                z = model.encode(xb)
            out["z"].append(z.float().cpu())
    finally:
        model.train(training)
    codes = {k: torch.cat(v) for k, v in out.items() if v}
    if "probs" in codes:
        codes["pred"] = codes["probs"].argmax(1)
    return codes


def _check_encode_input(model, x, batch_size: int) -> torch.Tensor:
    """`x` as a float32 (n, features) tensor, refused unless it is n >= 1 images of the model's
    shape, or flattened, with finite values in [0, 1] (what it trained on)."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise AAEError(f"batch_size {batch_size!r}: must be a positive integer")
    if not isinstance(x, torch.Tensor):
        import numpy as np

        if not isinstance(x, np.ndarray):
            raise AAEError(f"images: a {type(x).__name__}; give a tensor or array")
        if x.dtype.kind not in "fiub":
            raise AAEError(f"images of dtype {x.dtype}; give floats in [0, 1]")
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=x.dtype.newbyteorder("=")))
    shape, features = tuple(model.image_shape), model.model_args["in_dim"]
    if tuple(x.shape[1:]) not in ((features,), shape):
        raise AAEError(f"images of shape {tuple(x.shape)}; the {model.kind} model reads (n, "
                       f"{features}) or (n, {', '.join(map(str, shape))})")  # fmt: skip
    if len(x) == 0:
        raise AAEError("images: none (n = 0)")
    if not x.is_floating_point():
        hint = "; divide uint8 pixels by 255" if x.dtype == torch.uint8 else ""
        raise AAEError(f"images of dtype {x.dtype}; give floats in [0, 1]{hint}")
    x = x.reshape(len(x), features).float()
    if not torch.isfinite(x).all():
        raise AAEError("images: NaN or infinite values")
    if x.min() < 0 or x.max() > 1:
        raise AAEError(f"images: values in [{x.min().item():g}, {x.max().item():g}]; the model "
                       "trained on [0, 1]")  # fmt: skip
    return x


def encode_run(run: str | os.PathLike, split: str = "test", device: str = "cpu", data_dir=None,
               prior=None, data: Dataset | None = None) -> dict[str, torch.Tensor]:  # fmt: skip
    """`encode_images` of the run's latest checkpoint on one split of its data, as its training
    loaded it ("val": its validation split), with that split's labels as `labels` (n,). (Other
    images: `encode_images(load_model(run), x)`.)

    Args:
        prior: not needed: the encoder never reads the prior (a custom prior's run encodes
            without it).
        data: as for `evaluate_run`.
    """
    if split not in ENCODE_SPLITS:
        raise AAEError(f"split {split!r}: choose {', '.join(ENCODE_SPLITS)}")
    device = resolve_device(device)
    ckpt = _run_checkpoint(run)
    data = _run_data(run, data_dir) if data is None else _given_data(run, data)
    x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
    if x is None:
        why = ("the run has no validation split (it trained without --val-size)" if split == "val"
               else f"{data.name} has no test split")  # fmt: skip
        raise AAEError(f"--split {split}: {why}; encode another split, or other images (--images)")
    codes = encode_images(model_from_checkpoint(ckpt, run, device, prior if prior is not None else _PriorNotGiven.of(ckpt)), x)
    if y is not None:
        codes["labels"] = y.clone()
    return codes


class _PriorNotGiven:
    """Stands in for the custom prior (a Python object) of a run that `encode_run` or `aae
    encode` reads: the encoder never draws from it. For a model conditioned on labels it has
    the K parts that the discriminator's input was built for (z_dim + K + 1 values)."""

    def __init__(self, dim: int, num_classes: int | None = None):
        self.dim = dim
        if num_classes is not None:
            self.num_classes = num_classes

    def sample(self, n, labels=None):
        raise AAEError("the run's custom prior is a Python object, not given here")

    @classmethod
    def of(cls, ckpt: dict):
        """One for a checkpoint whose model has a custom prior; else None."""
        args = ckpt["model_args"]
        if args.get("prior") != "custom":
            return None
        from .checkpoint import saved_parts

        k = saved_parts(ckpt["networks"], args["z_dim"]) if args.get("condition_labels") else None
        return cls(args["z_dim"], k)


# ----------------------------------------------------------------------------------------------
# Sample evaluation: Parzen log-likelihood (paper's Table 1) and classifier-based sample quality


@torch.no_grad()
def draw_samples(model, n: int, device, seed: int = 0, batch_size: int = 1000) -> torch.Tensor:
    """`n` decoded prior samples (n, features) of `model`, drawn after torch.manual_seed(seed)."""
    if n < 2:
        raise AAEError(f"--samples {n}: need at least 2")
    model.eval()
    torch.manual_seed(seed)
    out = [model.sample(min(batch_size, n - i)).cpu() for i in range(0, n, batch_size)]
    return torch.cat(out).to(torch.float32)


def sample_metrics(model, data: Dataset, device, n_samples: int = 10000, seed: int = 0,
                   cache_dir=None, note=None, sigmas=None, progress: bool = False,
                   val=None) -> dict:  # fmt: skip
    """Parzen log-likelihood of the test images (see `torch_aae.parzen`) and, when the
    evaluation classifier of `data` is cached, `classifier_fd` (Frechet distance between the
    classifier's penultimate features of the samples and of the test images) and the class
    histogram of the samples, all from the same `n_samples` samples.

    Args:
        note: called with a one-line message when the classifier metrics are skipped
            (default: print to stderr).
        sigmas: the Parzen widths searched (default: `parzen.SIGMA_GRID`, the paper's protocol).
        progress: progress bars over the Parzen batches (on a terminal only).
        val: the images that choose the width: held-out images (`evaluate_run` passes the
            run's validation split); default: `parzen.validation_images` of the training set.
    Returns:
        parzen_* keys (see `parzen.parzen_evaluate`), parzen_val_held_out (1.0 when `val` was
        given, 0.0 for the training images), parzen_seconds, and when the classifier
        is cached classifier_fd and sample_class_* (see `metrics.class_histogram`).
    """
    from .classifier import cached_classifier, classifier_path, features, predict
    from .metrics import class_histogram, frechet_distance
    from .parzen import SIGMA_GRID, parzen_evaluate, validation_images

    if data.test_x is None:
        raise AAEError(f"{data.name}: sample metrics need a test split (x_test in the .npz)")
    note = note or (lambda msg: print(msg, file=sys.stderr))
    # The classifier first: a cache that cannot serve is told before minutes of Parzen scoring.
    classifier = why = None
    try:
        path = classifier_path(data, cache_dir)
        if path.is_file():
            classifier = cached_classifier(data, cache_dir, device)
        else:
            why = f"no evaluation classifier cached at {path} (`aae classifier train` makes it)"
    except AAEError as e:  # no labeled test split, a cache of other data, a corrupt file
        why = str(e)
    samples = draw_samples(model, n_samples, device, seed)  # (n_samples, features)
    start = time.perf_counter()
    held_out = val is not None
    out = parzen_evaluate(samples, data.test_x, val if held_out else validation_images(data.train_x),
                          SIGMA_GRID if sigmas is None else sigmas, progress=progress)  # fmt: skip
    out["parzen_val_held_out"] = float(held_out)
    out["parzen_seconds"] = round(time.perf_counter() - start, 1)
    if classifier is None:
        note(f"note: classifier_fd and the class histogram skipped: {why}")
        return out
    fd = frechet_distance(features(classifier, samples).numpy(),
                          features(classifier, data.test_x).numpy())  # fmt: skip
    out["classifier_fd"] = fd
    out.update(class_histogram(predict(classifier, samples).numpy(), data.num_classes))
    return out
