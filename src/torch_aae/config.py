"""Configuration: small frozen dataclasses, one per concern, with a help line per field.

The CLI is generated from these fields (`add_arguments` / `from_namespace`); a config read from
JSON rejects unknown keys (`from_dict`). The resolved config is written to every run folder.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from dataclasses import dataclass, field
from typing import Any, get_type_hints

from .errors import AAEError


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class DataConfig:
    dataset: str = _f("mnist", "mnist, fashion-mnist, or a path to a .npz with x (n, ...) in [0,1] and optional y")
    data_dir: str | None = _f(None, "data root (default: $TORCH_AAE_DATA, else ./data)")
    subset: int | None = _f(None, "use only the first N training images left after the validation split, for quick runs (default: all)")
    val_size: int = _f(0, "carve a validation split of this many training images (by --data-seed)")
    labels: str | None = _f(None, "labeled training images for the models that use labels: N (class-balanced, by --data-seed) or all; none: the dim-reduction model then trains without labels",
                            help_for={"supervised": "labeled training images: N (class-balanced, by --data-seed) or all",
                                      "semi-supervised": "labeled training images for the supervised phase: N (class-balanced, by --data-seed) or all",
                                      "dim-reduction": "labeled training images for a supervised phase: N (class-balanced, by --data-seed) or all; none: it trains without labels"})  # fmt: skip
    data_seed: int | None = _f(None, "seed of the data's draws: the validation split, the labeled images, the images whose labels condition the prior (default: --seed; fixed, it keeps them while --seed, or a bench's seeds, vary the rest)")

    def __post_init__(self):
        if isinstance(self.labels, int) and not isinstance(self.labels, bool):  # as on the command line
            raise AAEError(f"labels {self.labels}: give it as a string, labels=\"{self.labels}\" (or \"all\")")
        _check_field_types(self)
        _positive(self, "subset", allow_none=True)
        if self.labels is not None and self.labels != "all":
            if not self.labels.lstrip("-").isdigit():
                raise AAEError(f"--labels {self.labels!r}: give a number of images or 'all'")
            if int(self.labels) <= 0:
                raise AAEError(f"--labels {self.labels}: must be positive")
        if self.val_size < 0:
            raise AAEError(f"--val-size {self.val_size}: must be >= 0")
        check_seed(self.data_seed, "--data-seed")


@dataclass(frozen=True)
class ModelConfig:
    z_dim: int = _f(2, "dimension of the latent code z")
    prior: str = _f("gaussian", "prior p(z) the codes are pushed towards: gaussian, mixture, swiss-roll (both 2-D) or uniform")
    prior_std: float = _f(5.0, "standard deviation of the Gaussian prior (the blog: 5 with z-dim 2)")
    prior_scale: float | None = _f(None, "size of the other priors: mixture radius (default 1.4), swiss-roll outer radius (3), uniform box half-width (1)")
    prior_components: int = _f(10, "mixture components / swiss-roll segments (with --condition-labels: the classes)")
    prior_std_along: float = _f(0.5, "std of each mixture component along its radius")
    prior_std_across: float = _f(0.05, "std of each mixture component across its radius; the swiss roll's width (std of isotropic noise around the curve)")
    condition_labels: int = _f(0, "unsupervised: condition the prior on the labels of N training images (class-balanced, by --data-seed); 0: off")
    clusters: int = _f(0, "clustering and dim-reduction models: number of clusters K of the categorical code (the paper: 16 or 30; 20 for dim-reduction)")
    head_distance: float = _f(0.0, "dim-reduction model: least distance eta between two cluster heads (a penalty below it)")
    hidden: int = _f(1000, "units per hidden layer of the encoder and decoder")
    depth: int = _f(2, "hidden layers of the encoder and decoder")
    disc_hidden: int = _f(1000, "units per hidden layer of the discriminator(s)")
    disc_depth: int = _f(2, "hidden layers of the discriminator(s)")
    dropout: float = _f(0.2, "dropout in the encoder: after each hidden layer (unsupervised, supervised), after the last one, which the class and style heads share (semi-supervised, clustering, dim-reduction)")

    def __post_init__(self):
        _check_field_types(self)
        for name in ("z_dim", "prior_std", "hidden", "depth", "disc_hidden", "disc_depth",
                     "prior_components", "prior_std_along"):  # fmt: skip
            _positive(self, name)
        if not (self.prior_std_across >= 0 and math.isfinite(self.prior_std_across)):  # 0: a bare swiss roll
            raise AAEError(f"--prior-std-across {self.prior_std_across}: must be >= 0 and finite")
        _positive(self, "prior_scale", allow_none=True)
        if not 0 <= self.dropout < 1:
            raise AAEError(f"--dropout {self.dropout}: must be in [0, 1)")
        from .priors import PRIORS

        if self.prior not in (*PRIORS, "custom"):
            raise AAEError(f"unknown prior {self.prior!r}; choose one of {', '.join(PRIORS)}")
        if self.condition_labels < 0:
            raise AAEError(f"--condition-labels {self.condition_labels}: must be >= 0")


PRECISIONS = ("fp32", "bf16", "fp16", "tf32")
ELASTIC_SIGMA = 4.0  # --label-elastic-sigma's default: Simard et al.'s smoothing, in pixels
ADAM_KERNELS = ("torch", "triton")  # optim.adam's
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")
# The models with a categorical code y and the adversarial autoencoder phases of semi_supervised.
MODEL_KINDS = ("unsupervised", "supervised", "semi-supervised", "clustering", "dim-reduction")
CATEGORICAL_MODELS = ("semi-supervised", "clustering", "dim-reduction")
_CLUSTER_MODELS = ("clustering", "dim-reduction")

# Fields that only some models read, and those models. Another model refuses a value given for
# one (in Config, or in refuse_unread when training starts), and its --help leaves the flag out.
MODEL_FIELDS = {
    "labels": ("supervised", "semi-supervised", "dim-reduction"),
    "condition_labels": ("unsupervised",), "prior": ("unsupervised",), "prior_scale": ("unsupervised",),
    "prior_components": ("unsupervised",), "prior_std_along": ("unsupervised",),
    "prior_std_across": ("unsupervised",), "disc_noise": ("unsupervised",),
    "clusters": _CLUSTER_MODELS, "head_distance": ("dim-reduction",),
    "input_noise": ("unsupervised", *CATEGORICAL_MODELS), "cat_noise": CATEGORICAL_MODELS,
    "adv_eval_codes": CATEGORICAL_MODELS, "paired_discriminators": CATEGORICAL_MODELS,
    "lr_sup": ("semi-supervised", "dim-reduction"), "cuda_graphs": CATEGORICAL_MODELS,
    **{f"label_{kind}": ("semi-supervised",) for kind in ("shift", "rotate", "scale", "elastic", "elastic_sigma")},
    **{f"view_{kind}": _CLUSTER_MODELS for kind in ("rotate", "scale", "shift", "elastic", "thickness")},
}  # fmt: skip
# The unsupervised model's priors and the ModelConfig fields each reads (besides z_dim); a value
# given to a field that the chosen prior does not read is refused (refuse_unread).
PRIOR_FIELDS = {
    "gaussian": ("prior_std",), "uniform": ("prior_scale",),
    "mixture": ("prior_scale", "prior_components", "prior_std_along", "prior_std_across"),
    "swiss-roll": ("prior_scale", "prior_components", "prior_std_across"), "custom": (),
}  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _f(10, "passes over the training set")
    batch_size: int = _f(100, "images per mini-batch")
    lr_recon: float = _f(1e-4, "learning rate of the reconstruction phase (encoder + decoder)")
    lr_reg: float = _f(5e-5, "learning rate of the regularization phases (discriminator, generator)")
    beta1_reg: float = _f(0.9, "Adam beta1 (SGD: momentum) of the regularization phases")
    lr_sup: float = _f(1e-3, "learning rate of the supervised phase (semi-supervised model; dim-reduction with --labels)")
    input_noise: float = _f(0.0, "std of Gaussian noise added to the encoder's input in training; the reconstruction target stays clean (unsupervised, semi-supervised, clustering and dim-reduction models)")
    code_noise: float = _f(0.0, "std of Gaussian noise added to the code z in training: q(z|x) = N(encoder(x), s^2 I) (every model)")
    optimizer: str = _f("adam", "adam, or sgd (with momentum 0.9, and --beta1-reg as the regularization phases' momentum: the paper's choice)")
    cat_noise: float = _f(0.0, "std of Gaussian noise on the categorical discriminator's inputs, prior and encoder alike (semi-supervised, clustering, dim-reduction)")
    adv_eval_codes: bool = _f(False, "the discriminator and generator phases read the encoder's codes with its dropout off (eval mode; the input noise stays), as the blog's discriminator phase does, not the training-mode codes (semi-supervised, clustering, dim-reduction)")
    paired_discriminators: bool = _f(False, "the two discriminators run together, one batched matrix product per layer for both, where their layers' shapes match (a GPU step at batch 100 is bound by its kernels: the same math in fewer of them; semi-supervised, clustering, dim-reduction)")
    disc_noise: float = _f(0.0, "std of Gaussian noise added to both inputs of the latent discriminator, prior samples and codes alike (instance noise), falling linearly to 0 by the last step (unsupervised model)")
    label_shift: float = _f(0.0, "move each labeled image of the supervised phase by a random offset of up to N pixels along each axis (semi-supervised model; these label-* flags use the pixels' layout, so a run with them is not permutation-invariant)")
    label_rotate: float = _f(0.0, "rotate each labeled image of the supervised phase by a random angle of up to N degrees either way (semi-supervised model)")
    label_scale: float = _f(0.0, "zoom each labeled image of the supervised phase by a random factor in [1 - F, 1 + F] (semi-supervised model)")
    label_elastic: float = _f(0.0, "distort each labeled image of the supervised phase elastically: a random displacement field, uniform in [-1, 1] per pixel and axis, smoothed by a Gaussian of --label-elastic-sigma pixels and multiplied by N (Simard et al. 2003: 34 with sigma 4; semi-supervised model)")
    label_elastic_sigma: float = _f(ELASTIC_SIGMA, "smoothing of --label-elastic's field, in pixels")
    view_rotate: float = _f(0.0, "clustering and dim-reduction models: the reconstruction phase reads the cluster code y from a randomly transformed copy of each image (and the style z from the image itself), so that what the transformation changes goes to z, not y; this flag rotates the copy by up to N degrees either way (the view-* flags use the pixels' layout)")
    view_scale: float = _f(0.0, "clustering, dim-reduction: zoom y's copy by a random factor in [1 - F, 1 + F]")
    view_shift: float = _f(0.0, "clustering, dim-reduction: move y's copy by up to N pixels along each axis")
    view_elastic: float = _f(0.0, "clustering, dim-reduction: distort y's copy elastically, as --label-elastic does (smoothing 4 pixels)")
    view_thickness: float = _f(0.0, "clustering, dim-reduction: thicken or thin the strokes of y's copy by a random amount in [-T, T] (at most 1: a pixel wider or narrower)")
    lr_step: int = _f(0, "after this many epochs, every learning rate is divided by 10 (0: constant)")
    seed: int = _f(0, "random seed (weights, permutations, prior samples, dropout)")
    device: str = _f("auto", "auto (cuda if available), cpu, or cuda[:N]")
    compile: str = _f("off", "off, or a torch.compile mode for each network: default, reduce-overhead or max-autotune (on CPU it needs a C++ compiler)")
    precision: str = _f("fp32", "fp32; bf16: run the step under bfloat16 autocast (matrix products in bf16, weights and losses in fp32); fp16: float16 autocast with loss scaling (a GradScaler; for GPUs: a CPU without float16 matrix units runs it several times slower than fp32); tf32 (CUDA): float32 throughout, matrix products on the tensor cores in TensorFloat-32")
    adam_kernel: str = _f("torch", "Adam's update: torch (its fused kernel), or triton: the same update in Triton kernels that spread it over the whole GPU (CUDA; Triton comes with torch's CUDA builds)")
    cuda_graphs: bool = _f(False, "capture the whole training step (every phase and optimizer update) once as a CUDA graph and replay it: one launch per step instead of hundreds (CUDA; semi-supervised, clustering, dim-reduction)")
    checkpoint_every: int = _f(0, "also checkpoint every N steps within an epoch (0: only at epoch ends)")
    checkpoint_epochs: int = _f(1, "checkpoint at the end of every N-th epoch and of the last one (short GPU epochs would otherwise spend their time writing checkpoints)")
    keep_checkpoints: bool = _f(False, "also keep each epoch-end checkpoint as checkpoints/epoch-NNNN.pt (a hard link to the file written, where the file system allows), for --branch-from")
    log_every: int = _f(50, "refresh the progress bar's losses every N steps")

    @property
    def view(self) -> tuple[float, ...]:
        """The transformation of the copy the cluster code y is read from in the reconstruction
        phase (the view-* flags): (rotate degrees, zoom, shift pixels, elastic scale, thickness),
        all 0 for none; `semi_supervised.adversarial_autoencoder_phases` applies it."""
        return (self.view_rotate, self.view_scale, self.view_shift, self.view_elastic, self.view_thickness)

    def __post_init__(self):
        _check_field_types(self)
        for name in ("epochs", "batch_size", "lr_recon", "lr_reg", "lr_sup", "log_every", "checkpoint_epochs"):
            _positive(self, name)
        for name in ("input_noise", "cat_noise", "code_noise", "disc_noise", "label_shift", "label_rotate", "label_scale", "label_elastic",
                     "view_rotate", "view_scale", "view_shift", "view_elastic", "view_thickness"):  # fmt: skip
            if not getattr(self, name) >= 0:
                raise AAEError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 0")
        if self.view_thickness > 1:
            raise AAEError(f"--view-thickness {self.view_thickness}: must be at most 1")
        for name in ("label_scale", "view_scale"):
            if getattr(self, name) >= 1:
                raise AAEError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be below 1")
        if not self.label_elastic_sigma > 0:
            raise AAEError(f"--label-elastic-sigma {self.label_elastic_sigma}: must be > 0")
        for images in ("label", "view"):  # random_affine's rule for its shift
            shift = getattr(self, f"{images}_shift")
            if shift != int(shift) and not any(getattr(self, f"{images}_{k}") for k in ("rotate", "scale", "elastic")):
                raise AAEError(f"--{images}-shift {shift}: alone, it moves whole pixels (an integer)")
        if not 0 <= self.beta1_reg < 1:
            raise AAEError(f"--beta1-reg {self.beta1_reg}: must be in [0, 1)")
        if self.lr_step < 0:
            raise AAEError(f"--lr-step {self.lr_step}: must be >= 0")
        check_seed(self.seed)
        if self.checkpoint_every < 0:
            raise AAEError(f"--checkpoint-every {self.checkpoint_every}: must be >= 0")
        if self.optimizer not in ("adam", "sgd"):
            raise AAEError(f"--optimizer {self.optimizer!r}: choose adam or sgd")
        if self.adam_kernel not in ADAM_KERNELS:
            raise AAEError(f"--adam-kernel {self.adam_kernel!r}: choose {', '.join(ADAM_KERNELS)}")
        if self.compile not in COMPILE_MODES:
            raise AAEError(f"--compile {self.compile!r}: choose {', '.join(COMPILE_MODES)}")
        if self.precision not in PRECISIONS:
            raise AAEError(f"--precision {self.precision!r}: choose {', '.join(PRECISIONS)}")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.device):
            raise AAEError(f"--device {self.device!r}: choose auto, cpu or cuda[:N]")


@dataclass(frozen=True)
class Config:
    """Everything that defines a run; written to RUN/config.json."""

    model_kind: str = "unsupervised"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def data_draw_seed(self) -> int:
        """The seed of the data's draws (validation split, labeled images): --data-seed, else --seed."""
        return self.train.seed if self.data.data_seed is None else self.data.data_seed

    def __post_init__(self):
        if self.model_kind not in MODEL_KINDS:
            raise AAEError(f"unknown model kind {self.model_kind!r}; choose one of {', '.join(MODEL_KINDS)}")
        # Fields that only some models read: refuse them elsewhere rather than ignore them.
        t = self.train
        switched = ("input_noise", "cat_noise", "disc_noise", "adv_eval_codes",
                    *(f"label_{k}" for k in ("shift", "rotate", "scale", "elastic")),
                    *(f"view_{k}" for k in ("rotate", "scale", "shift", "elastic", "thickness")))  # fmt: skip
        for name in switched:  # off at 0: a value other than 0 is refused by the others
            kinds = MODEL_FIELDS[name]
            value = getattr(t, name)
            if value and self.model_kind not in kinds:
                flag = f"--{name.replace('_', '-')}" + ("" if value is True else f" {value}")
                takers = f"only the {kinds[0]} model does" if len(kinds) == 1 else f"{', '.join(kinds)} do"
                raise AAEError(f"{flag}: the {self.model_kind} model does not take it ({takers})")
        # Only the unsupervised model builds its prior from these fields.
        m = self.model
        if m.clusters < 0:
            raise AAEError(f"--clusters {m.clusters}: must be >= 0")
        if m.clusters and self.model_kind not in ("clustering", "dim-reduction"):
            raise AAEError(f"--clusters {m.clusters}: only the clustering and dim-reduction models "
                           f"take it, not {self.model_kind}")  # fmt: skip
        if m.head_distance < 0:
            raise AAEError(f"--head-distance {m.head_distance}: must be >= 0")
        if m.head_distance and self.model_kind != "dim-reduction":
            raise AAEError(f"--head-distance {m.head_distance}: only the dim-reduction model takes "
                           f"it, not {self.model_kind}")  # fmt: skip
        if self.model_kind != "unsupervised":
            if m.condition_labels:
                raise AAEError(f"--condition-labels {m.condition_labels}: only the unsupervised model "
                               f"takes it, not {self.model_kind}")  # fmt: skip
            if m.prior not in ("gaussian", "custom"):
                raise AAEError(f"--prior {m.prior}: only the unsupervised model takes it, not "
                               f"{self.model_kind}")  # fmt: skip
        # Then the values, once the model is known to take them.
        from .priors import TWO_D_PRIORS

        if m.prior in TWO_D_PRIORS and m.z_dim != 2:
            raise AAEError(f"--prior {m.prior} is 2-D: use --z-dim 2, not {m.z_dim}")
        if m.condition_labels and m.prior not in (*TWO_D_PRIORS, "custom"):
            raise AAEError(f"--condition-labels needs a prior made of one part per class: "
                           f"--prior {' or '.join(TWO_D_PRIORS)}, not {m.prior}")  # fmt: skip
        if t.label_elastic_sigma != ELASTIC_SIGMA and not t.label_elastic:
            if self.model_kind not in MODEL_FIELDS["label_elastic_sigma"]:
                raise AAEError(f"--label-elastic-sigma {t.label_elastic_sigma}: the {self.model_kind} model "
                               f"does not read it; only {_readers(MODEL_FIELDS['label_elastic_sigma'], 'model')}")  # fmt: skip
            raise AAEError(f"--label-elastic-sigma {t.label_elastic_sigma}: it smooths --label-elastic's "
                           "field, and --label-elastic is 0")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}

# Settings that may change when a run is resumed; every other one must match the saved run.
# (--data-dir only says where the files are: they are checked against their checksums.)
RESUMABLE = {"epochs", "device", "log_every", "checkpoint_every", "checkpoint_epochs", "lr_step",
             "compile", "cuda_graphs", "adam_kernel", "paired_discriminators", "keep_checkpoints",
             "data_dir"}  # fmt: skip


# Why a model that takes no --labels takes none, for its error.
_NO_LABELS_HINT = {"unsupervised": " (--condition-labels N conditions its prior on N labeled images)",
                   "clustering": " (labels only score its clusters)"}  # fmt: skip


def refuse_unread(config: Config, given: set[str] | frozenset = frozenset()) -> None:
    """Refuse a value given to a model that would not read it (MODEL_FIELDS): --labels, --lr-sup
    (the dim-reduction model has a supervised phase only with --labels), and the rest. Called when training
    starts, not when a config is loaded, so that an old run that carries such a value still
    evaluates."""
    kind = config.model_kind

    def set_(section, name: str) -> bool:  # given (the CLI's flags), or not at its default
        return name in given or getattr(section, name) != type(section).__dataclass_fields__[name].default

    if config.data.labels is not None and kind not in MODEL_FIELDS["labels"]:
        raise AAEError(f"--labels {config.data.labels}: the {kind} model uses no labeled images"
                       f"{_NO_LABELS_HINT.get(kind, '')}")  # fmt: skip
    supervised = kind in MODEL_FIELDS["lr_sup"] and (kind != "dim-reduction" or config.data.labels is not None)
    if set_(config.train, "lr_sup") and not supervised:
        without = " without --labels" if kind == "dim-reduction" else ""
        raise AAEError(f"--lr-sup {config.train.lr_sup}: the {kind} model has no supervised phase{without}")
    if kind == "unsupervised":  # each prior reads its own fields
        reads = PRIOR_FIELDS[config.model.prior]
        for name in sorted({n for fields in PRIOR_FIELDS.values() for n in fields} - set(reads)):
            value = getattr(config.model, name)
            if set_(config.model, name):
                users = [p for p, fields in PRIOR_FIELDS.items() if name in fields]
                raise AAEError(f"--{name.replace('_', '-')} {value}: the {config.model.prior} prior does "
                               f"not read it; only {_readers(users, 'prior')}")  # fmt: skip
    # The other model-specific fields (the prior's shape, --label-elastic-sigma, ...): a value
    # given to a model that never reads it is refused too. (A value other than the default of
    # --prior and --cuda-graphs has its own error first: Config, graphs.check.)
    for section in (config.data, config.model, config.train):
        for f in dataclasses.fields(section):
            kinds = MODEL_FIELDS.get(f.name)
            if kinds is None or kind in kinds or f.name in ("labels", "lr_sup"):
                continue
            value = getattr(section, f.name)
            if set_(section, f.name):
                raise AAEError(f"--{f.name.replace('_', '-')} {value}: the {kind} model does not "
                               f"read it; only {_readers(kinds, 'model')}")  # fmt: skip


def _readers(names, noun: str) -> str:
    """'the mixture prior does', 'the mixture, swiss-roll priors do'."""
    return f"the {names[0]} {noun} does" if len(names) == 1 else f"the {', '.join(names)} {noun}s do"


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a Config from `to_dict()` output; unknown keys are an error."""
    if not isinstance(d, dict):
        raise AAEError(f"config must be a mapping, got {type(d).__name__}")
    unknown = set(d) - {"model_kind", *SECTIONS}
    if unknown:
        raise AAEError(f"unknown config keys: {', '.join(sorted(unknown))}")
    sections = {}
    for name, cls in SECTIONS.items():
        values = d.get(name, {})
        if not isinstance(values, dict):
            raise AAEError(f"config section {name!r} must be a mapping")
        sections[name] = section_from_dict(cls, values, name)
    kind = d.get("model_kind", "unsupervised")
    if not isinstance(kind, str):
        raise AAEError(f"config model_kind must be a string, got {kind!r}")
    return Config(model_kind=kind, **sections)


def section_from_dict(cls, values: dict[str, Any], where: str):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise AAEError(f"unknown keys in config section {where!r}: {', '.join(sorted(unknown))}")
    return cls(**values)  # its __post_init__ checks each field's type


def _check_type(value, hint, where):
    if hint is bool:
        if not isinstance(value, bool):
            raise AAEError(f"config {where}: expected true or false, got {value!r}")
        return
    allowed = {int: (int,), float: (int, float), str: (str,)}
    for t, ok in allowed.items():
        if hint in (t, t | None):
            if value is None and hint != t:
                return
            if isinstance(value, bool) or not isinstance(value, ok):
                raise AAEError(f"config {where}: expected {t.__name__}, got {value!r}")
            return


def _check_field_types(section) -> None:
    """Refuse a field of the wrong type (e.g. TrainConfig(epochs=1.5)) when the section is made,
    and a float that is not finite (no setting reads inf or NaN: --input-noise inf trained, then
    was blamed on the learning rates as a diverged loss)."""
    name = type(section).__name__.replace("Config", "").lower()
    for key, hint in get_type_hints(type(section)).items():
        value = getattr(section, key)
        _check_type(value, hint, f"{name}.{key}")
        if isinstance(value, float) and not math.isfinite(value):
            raise AAEError(f"--{key.replace('_', '-')} {value}: must be finite")


SEED_LIMIT = 2**46  # |seed| below it: the seeds derived from it (seed * 100003 + epoch) fit int64


def seed_in_range(value: int) -> bool:
    return -SEED_LIMIT < value < SEED_LIMIT


def check_seed(value: int | None, flag: str = "--seed") -> None:
    """Refuse a seed of magnitude 2**46 or more (a seed derived from it overflowed int64: a
    traceback). Every seed that trained before this check, but absurd ones, passes it."""
    if value is not None and not seed_in_range(value):
        raise AAEError(f"{flag} {value}: must be below 2**46 in magnitude")


def _positive(obj, name: str, allow_none: bool = False):
    value = getattr(obj, name)
    if value is None and allow_none:
        return
    if not (value > 0 and math.isfinite(value)):
        finite = "" if isinstance(value, int) else " and finite"
        raise AAEError(f"--{name.replace('_', '-')} {value}: must be positive{finite}")


# ----------------------------------------------------------------------------------------------
# CLI generation


def add_arguments(
    parser: argparse.ArgumentParser, cls, defaults: dict | None = None, suppress: bool = False,
    model_kind: str | None = None,
) -> None:
    """Add one --flag per field of the dataclass `cls`, with its help line and default
    (from `defaults` where given: a model's own defaults; none at all when `suppress`).
    With `model_kind`, the flags that model does not read (MODEL_FIELDS) stay out of --help;
    they are still parsed, so that giving one gets the model's own error."""
    group = parser.add_argument_group(cls.__name__.replace("Config", "").lower())
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        default = (defaults or {}).get(f.name, f.default)
        text = f.metadata.get("help_for", {}).get(model_kind, f.metadata["help"])  # a model's own words
        hidden = model_kind is not None and model_kind not in MODEL_FIELDS.get(f.name, (model_kind,))
        if hint is bool:  # a switch: --flag turns it on, --no-flag off (e.g. on --resume)
            help = f"{text} (default: {'on' if default else 'off'})"
            group.add_argument("--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS if suppress else default,
                               help=argparse.SUPPRESS if hidden else help)  # fmt: skip
            continue
        kind = next(t for t in (int, float, str) if hint in (t, t | None))
        # A help line that says its default in words, or whose default None (unset) it explains
        said = "(default" in text or default is None
        help = text if said else f"{text} (default: {default})"
        group.add_argument(
            "--" + f.name.replace("_", "-"),
            type=kind,
            default=argparse.SUPPRESS if suppress else default,
            help=argparse.SUPPRESS if hidden else help,
        )


def from_namespace(cls, ns: argparse.Namespace, **overrides):
    """Build the dataclass `cls` from parsed CLI arguments."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    values.update(overrides)
    return cls(**values)
