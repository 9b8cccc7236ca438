"""The `aae` command line: train, evaluate, report, sample, encode, plot, bench, download, classifier.

Every expected failure is one line on stderr (`aae: error: ...`) and exit status 1; a usage
error (a missing or malformed argument) is one line too, `aae ...: error: ...`, with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
import warnings
from pathlib import Path

import torch

from . import config as cfg
from .errors import AAEError, AAEWarning, Interrupted
from .variants import VARIANTS


# `aae sample`: the most images in its one grid, and the image formats it writes.
MAX_SAMPLES = 10_000
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")

# `aae bench NAME` over seeds -> the model it trains (`bench.BENCH_METRIC` says what it scores).
SEED_BENCHES = {"semi-supervised": "semi-supervised", "clustering": "clustering", "parzen": "unsupervised"}


class _Parser(argparse.ArgumentParser):
    """argparse's parser, whose usage errors are one line too (a model's full usage is 30 lines,
    which would bury the error): `PROG: error: ... (see PROG --help)`, exit status 2. The
    subcommands' parsers are of this class as well."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an unknown flag is reported by the subcommand it was given to
        (argparse leaves it to the top parser, whose help does not list that command's flags)."""
        known, unknown = self.parse_known_args(args, namespace)
        if unknown:
            words = [w for w in (getattr(known, d, None) for d in ("command", "model_kind", "bench", "classifier"))
                     if isinstance(w, str)]  # fmt: skip
            prog = " ".join([self.prog, *words])
            self.exit(2, f"{prog}: error: unrecognized arguments: {' '.join(unknown)} (see `{prog} --help`)\n")
        return known


NO_PROGRESS = "no progress bar (there is none anyway when stderr is not a terminal)"



def _seed(text: str) -> int:
    """argparse type of a seed: an integer below 2**46 in magnitude (config.check_seed)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: a seed is an integer") from None
    if not cfg.seed_in_range(value):
        raise argparse.ArgumentTypeError(f"{value}: a seed must be below 2**46 in magnitude")
    return value

def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="aae", description="Adversarial Autoencoders (Makhzani et al., 2015) on PyTorch."
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"torch-aae {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = sub.add_parser("train", help="train a model into a run folder")
    kinds = train.add_subparsers(dest="model_kind", required=True, metavar="MODEL")
    for kind, module in VARIANTS.items():
        first_paragraph = " ".join(module.__doc__.strip().split("\n\n")[0].split())
        p = kinds.add_parser(kind, help=first_paragraph)
        p.add_argument("--out", required=True, help="run folder (config, metrics, checkpoints, plots)")
        p.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its latest checkpoint")  # fmt: skip
        p.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
        p.add_argument("--branch-from", metavar="CHECKPOINT", default=None,
                       help="start the new run in --out from another run's checkpoint (e.g. "
                            "RUN/checkpoints/epoch-0040.pt, kept by --keep-checkpoints): its "
                            "settings, weights, optimizer states, history and random state; only "
                            "the flags --resume may change can differ")  # fmt: skip
        p.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
        for section in cfg.SECTIONS.values():
            cfg.add_arguments(p, section, getattr(module, "CLI_DEFAULTS", {}), suppress_defaults, kind)

    ev = sub.add_parser("evaluate", help="compute a run's final metrics; print and save them")
    ev.add_argument("run", help="run folder")
    _add_runtime_flags(ev)
    ev.add_argument("--parzen", action="store_true",
                    help="also the Parzen log-likelihood of the test set (paper's Table 1) and, when "
                         "the evaluation classifier is cached, classifier_fd and the class "
                         "histogram of the samples")  # fmt: skip
    # The --parzen options default to None here, so that one given without --parzen is refused.
    ev.add_argument("--samples", type=int, default=None, help="samples for --parzen (default: 10000)")
    ev.add_argument("--seed", type=_seed, default=None, help="seed of the --parzen samples (default: 0)")
    ev.add_argument("--sigma-grid", type=float, nargs=3, metavar=("LO", "HI", "N"), default=None,
                    help="the --parzen window widths searched: N values log-spaced over [LO, HI] "
                         "(default: 0.1 1 10, the protocol of the paper's Table 1)")  # fmt: skip
    ev.add_argument("--cache-dir", default=None, help="classifier cache (default: $TORCH_AAE_CACHE, else ~/.cache/torch_aae)")
    ev.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)

    rep = sub.add_parser("report", help="write a run's self-contained HTML report")
    rep.add_argument("run", help="run folder")
    rep.add_argument("--out", default=None,
                     help="HTML file to write (default: RUN/report.html, rewritten on each call)")
    rep.add_argument("--overwrite", action="store_true", help="replace an existing --out file")

    sample = sub.add_parser("sample", help="decode prior samples of a trained model into a PNG")
    sample.add_argument("run", help="run folder or checkpoint file")
    sample.add_argument("-n", type=int, default=100,
                        help=f"number of samples, at most {MAX_SAMPLES} (default: 100)")  # fmt: skip
    sample.add_argument("--out", required=True,
                        help=f"image file to write: {', '.join(IMAGE_SUFFIXES)}")  # fmt: skip
    sample.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    sample.add_argument("--seed", type=_seed, default=0, help="random seed (default: 0)")
    sample.add_argument("--class", dest="cls", type=int, default=None, metavar="K",
                        help="every sample of class (or cluster) K: the supervised, semi-supervised, "
                             "clustering and dim-reduction models, and a model trained with "
                             "--condition-labels (default: the model's own mix)")  # fmt: skip
    sample.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")

    enc = sub.add_parser("encode", help="write the codes of a run's images (z; q(y|x) where the model has it) to a .npz")
    enc.add_argument("run", help="run folder (with --images, a checkpoint file will do)")
    enc.add_argument("--out", required=True, help="the .npz file to write")
    enc.add_argument("--split", default=argparse.SUPPRESS if suppress_defaults else "test", choices=("test", "train", "val"),
                     help="which of the run's images: the test set, or as training loaded them, its "
                          "training images or its validation split (default: test)")  # fmt: skip
    enc.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    enc.add_argument("--images", default=None, metavar="FILE.npz",
                     help="encode the images of a .npz instead (array x, as `--dataset FILE.npz` "
                          "reads it; its y, if any, is kept as the labels)")  # fmt: skip
    _add_runtime_flags(enc)

    plot = sub.add_parser("plot", help="(re)draw a run's plots into RUN/plots")
    plot.add_argument("run", help="run folder")
    _add_runtime_flags(plot)

    bench = sub.add_parser("bench", help="benchmarks")
    what = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    tp = what.add_parser("throughput", help="training images/s vs. the machine's matmul throughput")
    tp.add_argument("--model", default="unsupervised", choices=sorted(VARIANTS),
                    help="the model whose training step is timed (default: unsupervised, the blog's architecture)")
    tp.add_argument("--batch-size", type=int, default=100, help="images per step, at most 60000 (default: 100)")
    tp.add_argument("--z-dim", type=int, default=2, help="dimension of the code z (default: 2)")
    tp.add_argument("--steps", type=int, default=200, help="timed training steps (default: 200)")
    tp.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    tp.add_argument("--precision", default="fp32", choices=cfg.PRECISIONS,
                    help="fp32, bf16 autocast, fp16 autocast with loss scaling, or tf32 (CUDA) "
                         "(default: fp32)")
    tp.add_argument("--compile", default="off", choices=cfg.COMPILE_MODES,
                    help="off, or a torch.compile mode for each network (default: off)")
    tp.add_argument("--cuda-graphs", action="store_true",
                    help="replay the step from one CUDA graph (CUDA; semi-supervised, clustering, dim-reduction)")
    tp.add_argument("--adam-kernel", default="torch", choices=cfg.ADAM_KERNELS,
                    help="Adam's update: torch's fused kernel, or triton (CUDA) (default: torch)")
    tp.add_argument("--paired-discriminators", action="store_true",
                    help="the two discriminators run together, one batched product per layer "
                         "(semi-supervised, clustering, dim-reduction)")
    for name, what_for in (("semi-supervised", "test error of the semi-supervised model over seeds"),
                           ("clustering", "test cluster error of the clustering model over seeds"),
                           ("parzen", "Parzen log-likelihood of the test set (the paper's Table 1) "
                                      "of the unsupervised model over seeds")):  # fmt: skip
        kind = SEED_BENCHES[name]
        seeds = what.add_parser(name, help=what_for)
        seeds.add_argument("--out", required=True, help="folder for the runs, bench.json and bench.md")
        seeds.add_argument("--seeds", type=int, default=5, help="number of seeds: --seed, --seed+1, ... (default: 5)")
        seeds.add_argument("--jobs", type=int, default=1,
                           help="seeds trained at once, in separate processes sharing the threads (default: 1)")
        seeds.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
        for section in cfg.SECTIONS.values():
            cfg.add_arguments(seeds, section, defaults=getattr(VARIANTS[kind], "CLI_DEFAULTS", {}),
                              suppress=suppress_defaults, model_kind=kind)  # fmt: skip

    dl = sub.add_parser("download", help="download MNIST (md5-checked) into DATA_DIR/mnist (or DATA_DIR itself, where training reads MNIST from there)")
    dl.add_argument("--data-dir", help="data root (default: $TORCH_AAE_DATA, else ./data)")

    clf = sub.add_parser("classifier", help="the evaluation classifier that scores generated images")
    clf_what = clf.add_subparsers(dest="classifier", required=True, metavar="ACTION")
    ct = clf_what.add_parser("train", help="train (or reuse) the cached classifier; print its test accuracy")
    ct.add_argument("--dataset", default="mnist", help="mnist, fashion-mnist or a .npz with test arrays (default: mnist)")
    ct.add_argument("--data-dir", default=None, help="data root (default: $TORCH_AAE_DATA, else ./data)")
    ct.add_argument("--cache-dir", default=None, help="classifier cache (default: $TORCH_AAE_CACHE, else ~/.cache/torch_aae)")
    given = argparse.SUPPRESS if suppress_defaults else None  # (args.explicit: the flags given)
    ct.add_argument("--epochs", type=int, default=given or 4, help="passes over the training set (default: 4)")
    ct.add_argument("--seed", type=_seed, default=given or 0, help="random seed (default: 0)")
    ct.add_argument("--retrain", action="store_true", help="train again even if a cached classifier exists")
    ct.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    ct.add_argument("--no-progress", action="store_true", help=NO_PROGRESS)
    return parser


def _add_runtime_flags(p):
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    p.add_argument("--data-dir", default=None, help="data root (default: the run's, else lookup)")


def _show_warning(message, category, filename, lineno, file=None, line=None, _shown=warnings.showwarning):
    """The library's own warnings as one line, like its errors; any other as Python shows it."""
    if issubclass(category, AAEWarning):
        print(f"aae: warning: {message}", file=sys.stderr)
    else:
        _shown(message, category, filename, lineno, file, line)


def main(argv: list[str] | None = None) -> int:
    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    # The flags actually given (a parse where no flag has a default), so that --resume can tell
    # `--epochs 10` from no --epochs at all.
    args.explicit = set(vars(build_parser(suppress_defaults=True).parse_args(argv)))
    try:
        return COMMANDS[args.command](args) or 0
    except Interrupted as e:  # a stop asked for (Ctrl-C, SIGTERM), checkpointed: the shell's 128 + SIGINT
        from .distributed import world_from_env

        if world_from_env().main:  # under torchrun, once (the other ranks know no run folder to name)
            print(f"aae: {e}", file=sys.stderr)
        return 130
    except AAEError as e:
        print(f"aae: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a read-only run folder, a full disk, ...: the system's own words
        where = f": {e.filename}" if e.filename else ""
        print(f"aae: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aae: interrupted", file=sys.stderr)
        return 130


def _shown(metrics: dict) -> dict:
    """Metrics as printed: 6 significant digits (float32 values carry noise beyond them) and
    whole numbers without a decimal point; the files keep the full values."""
    def one(v):
        if not isinstance(v, float) or not math.isfinite(v):
            return v
        return int(v) if v.is_integer() and abs(v) < 2**53 else float(f"{v:.6g}")

    return {k: one(v) for k, v in metrics.items()}


def cmd_train(args) -> int:
    from .api import build_model, load_run_config
    from .data import load_dataset
    from .train import fit

    from .train import RunFolder
    from .run_folder import check_reloadable

    if args.branch_from is not None and args.resume:
        raise AAEError("--branch-from starts a new run from a checkpoint; --resume continues the "
                       "run in --out: pick one")  # fmt: skip
    RunFolder.check(args.out, args.resume, args.overwrite)  # before loading any data
    config = _config_from_args(args)
    cfg.refuse_unread(config, args.explicit)  # a flag given to a model that does not read it
    python_only = "continue it from Python with that Dataset: fit(..., out=RUN, resume=True) or branch_from=..."
    if args.resume:
        check_reloadable(args.out, python_only)
        saved = load_run_config(args.out)
        if saved.model.prior == "custom":  # else make_prior("custom"): "unknown prior 'custom'"
            raise AAEError(f"{args.out} trained with a custom prior, a Python object: continue it from "
                           "Python: fit(load_model(RUN, prior=...), data, out=RUN, resume=True)")  # fmt: skip
        config = _resumed_config(saved, config, args.explicit)
        if "data_dir" in args.explicit and config.data.dataset.endswith(".npz"):
            raise AAEError(f"--data-dir {args.data_dir}: the run trained on {config.data.dataset}, not "
                           "on files in a data folder")  # fmt: skip
    elif args.branch_from is not None:
        from .checkpoint import load_checkpoint

        if Path(args.branch_from).is_dir():
            raise AAEError(f"--branch-from {args.branch_from}: a folder, not a checkpoint; give a "
                           "file such as RUN/checkpoints/latest.pt, or one that --keep-checkpoints "
                           "kept (RUN/checkpoints/epoch-NNNN.pt)")  # fmt: skip

        if Path(args.branch_from).resolve().parent.name == "checkpoints":  # RUN/checkpoints/NAME.pt
            check_reloadable(Path(args.branch_from).resolve().parent.parent, python_only)
        saved = cfg.from_dict(load_checkpoint(args.branch_from)["config"])
        config = _resumed_config(saved, config, args.explicit, "--branch-from")
    torch.manual_seed(config.train.seed)
    d = config.data
    data = load_dataset(d.dataset, d.data_dir, d.subset, d.val_size, config.data_draw_seed)
    model = build_model(config, data)
    summary = fit(model, data, config.train, out=args.out, resume=args.resume,
                  overwrite=args.overwrite, config=config, progress=not args.no_progress,
                  branch_from=args.branch_from)  # fmt: skip
    from .distributed import world_from_env

    if world_from_env().main:  # under torchrun, one summary
        print(json.dumps(_shown(summary), indent=2))
    return 0


def _refuse_data_dir_with_npz(dataset: str, data_dir: str | None) -> None:
    """--data-dir beside --dataset FILE.npz would be recorded and never read."""
    if data_dir is not None and dataset.endswith(".npz"):
        raise AAEError(f"--data-dir {data_dir}: --dataset {dataset} is read from its own path, not "
                       "from a data folder: drop one")  # fmt: skip


def _config_from_args(args) -> cfg.Config:
    from .data import absolute_path

    _refuse_data_dir_with_npz(args.dataset, args.data_dir)
    # Paths made absolute, as load_dataset records them: the bench compares its seeds' configs.
    paths = {"dataset": absolute_path(args.dataset) if args.dataset.endswith(".npz") else args.dataset,
             "data_dir": None if args.data_dir is None else absolute_path(args.data_dir)}  # fmt: skip
    sections = {name: cfg.from_namespace(cls, args, **(paths if name == "data" else {}))
                for name, cls in cfg.SECTIONS.items()}  # fmt: skip
    return cfg.Config(model_kind=args.model_kind, **sections)


RESUMABLE = cfg.RESUMABLE  # the flags a resume may change


def _resumed_config(saved: cfg.Config, given: cfg.Config, explicit: set | None = None,
                    flag: str = "--resume") -> cfg.Config:  # fmt: skip
    """The saved config, with the resumable flags taken from the command line when given.

    Args:
        explicit: the fields given on the command line (None: those that differ from the
            model's defaults).
        flag: the flag that continues a saved run (--resume, --branch-from), for the errors.
    """
    if saved.model_kind != given.model_kind:
        raise AAEError(f"{flag}: the run's model is {saved.model_kind}, not {given.model_kind}")
    if explicit is None:
        default = _config_from_args(build_parser().parse_args(["train", given.model_kind, "--out", "-"]))
        explicit = {name for section in cfg.SECTIONS
                    for name, value in vars(getattr(given, section)).items()
                    if value != getattr(getattr(default, section), name)}  # fmt: skip
    changes = {}
    for section in cfg.SECTIONS:
        s, g = getattr(saved, section), getattr(given, section)
        for name, value in vars(g).items():
            if name not in explicit or value == getattr(s, name):
                continue
            if name not in RESUMABLE:
                raise AAEError(
                    f"{flag}: the run was made with --{name.replace('_', '-')} "
                    f"{getattr(s, name)}, not {value}; drop the flag or start a new run"
                )
            changes.setdefault(section, {})[name] = value
    import dataclasses

    return dataclasses.replace(
        saved, **{k: dataclasses.replace(getattr(saved, k), **v) for k, v in changes.items()}
    )


def cmd_evaluate(args) -> int:
    from .api import evaluate_run
    from .parzen import log_grid

    parzen_only = {"--samples": args.samples, "--seed": args.seed, "--sigma-grid": args.sigma_grid,
                   "--cache-dir": args.cache_dir}  # fmt: skip
    given = [flag for flag, value in parzen_only.items() if value is not None]
    if given and not args.parzen:
        raise AAEError(f"{', '.join(given)}: only with --parzen")
    if args.samples is not None and args.samples <= 0:
        raise AAEError(f"--samples {args.samples}: must be positive")
    sigmas = None if args.sigma_grid is None else log_grid(*args.sigma_grid)
    metrics = evaluate_run(args.run, device=args.device, data_dir=args.data_dir, parzen=args.parzen,
                           n_samples=10000 if args.samples is None else args.samples,
                           seed=args.seed or 0, cache_dir=args.cache_dir, sigmas=sigmas,
                           progress=not args.no_progress)  # fmt: skip
    print(json.dumps(_shown(metrics), indent=2))
    return 0


def cmd_report(args) -> int:
    from .report import run_config, write_report

    run_config(args.run)  # a folder that is no run is named before --out's checks
    own = Path(args.run) / "report.html"  # the default, the run's own: rewritten on each call
    if args.out is None and args.overwrite:
        raise AAEError(f"--overwrite goes with --out; without it, {own} is rewritten on each call")
    if args.out is not None and Path(args.out).resolve() != own.resolve():
        _out_file(args.out, (".html", ".htm"), "report.html", args.overwrite)
    print(f"wrote {write_report(args.run, args.out)}")
    return 0


def cmd_sample(args) -> int:
    from . import plots
    from .checkpoint import load_model
    from .train import resolve_device

    if not 0 < args.n <= MAX_SAMPLES:
        raise AAEError(f"-n {args.n}: must be in 1..{MAX_SAMPLES} (one grid image)")
    out = _out_file(args.out, IMAGE_SUFFIXES, "samples.png", args.overwrite)
    model = load_model(args.run, device=resolve_device(args.device))
    torch.manual_seed(args.seed)
    title = f"{args.n} samples"
    if args.cls is None:
        images = model.sample(args.n)
    else:
        classes = getattr(model, "condition_classes", None) or getattr(model, "n_classes", 0)
        if not 0 <= args.cls < classes:
            parts = "clusters" if model.kind in ("clustering", "dim-reduction") else "classes"
            what = (f"{parts} 0..{classes - 1}" if classes
                    else "no classes (a model trained with --condition-labels has)")  # fmt: skip
            raise AAEError(f"--class {args.cls}: the {model.kind} model has {what}")
        images = model.sample(args.n, torch.full((args.n,), args.cls, dtype=torch.long))
        title += f" of class {args.cls}"
    nrow = max(1, int(round(args.n**0.5)))
    plots.save_image_grid(images.cpu().numpy(), model.image_shape, nrow, out, title)
    print(f"wrote {args.out}")
    return 0


def cmd_encode(args) -> int:
    import io

    import numpy as np

    from .api import _PriorNotGiven, encode_images, encode_run, load_run_config
    from .checkpoint import atomic_write_bytes, load_checkpoint, model_from_checkpoint, resolve_checkpoint
    from .data import load_npz_images
    from .run_folder import check_reloadable
    from .train import resolve_device

    out = _codes_file(args)
    if args.images is None:
        if Path(args.run).is_file():
            raise AAEError(f"{args.run}: a checkpoint file; give its run folder (which knows the "
                           "images), or images to encode with --images")  # fmt: skip
        load_run_config(args.run)  # first: it refuses what is not a run folder
        check_reloadable(args.run, "encode images of your own with --images FILE.npz")
        codes = encode_run(args.run, args.split, device=args.device, data_dir=args.data_dir)
    else:
        for flag, given in (("--split", "split" in args.explicit), ("--data-dir", args.data_dir is not None)):
            if given:
                raise AAEError(f"{flag} is for the run's own images; --images gives others: drop one")
        x, y = load_npz_images(args.images)
        ckpt = load_checkpoint(resolve_checkpoint(args.run))
        model = model_from_checkpoint(ckpt, args.run, resolve_device(args.device), _PriorNotGiven.of(ckpt))
        try:
            codes = encode_images(model, x)
        except AAEError as e:  # the images do not fit the model: name their file
            raise AAEError(f"{args.images}: {e}") from None
        if y is not None:
            codes["labels"] = y
    buffer = io.BytesIO()
    np.savez(buffer, **{k: v.numpy() for k, v in codes.items()})
    try:
        atomic_write_bytes(out, buffer.getvalue())
    except OSError as e:
        raise AAEError(f"--out {args.out}: cannot write it ({e.strerror or e})") from None
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in codes.items())
    print(f"wrote {args.out}: {shapes}")
    return 0


def _codes_file(args) -> Path:
    """`aae encode`'s --out, refused before any encoding if it cannot or may not be written."""
    out = Path(args.out)
    if args.images is not None and out.is_file() and out.resolve() == Path(args.images).resolve():
        raise AAEError(f"--out {args.out} is the --images file: give another name")
    return _out_file(args.out, (".npz",), "codes.npz", args.overwrite)


def _out_file(given: str, suffixes: tuple[str, ...], example: str, overwrite: bool) -> Path:
    """A command's --out file, refused before any work if it cannot or may not be written.

    An existing file is replaced only with --overwrite: it may be what the user meant to keep.
    """
    import os

    out = Path(given)
    if given.endswith("/") or out.is_dir():
        raise AAEError(f"--out {given}: a folder; give a file such as {out / example}")
    if out.suffix.lower() not in suffixes:
        raise AAEError(f"--out {given}: give a file name ending in {', '.join(suffixes)}")
    if out.exists() and not overwrite:
        raise AAEError(f"--out {given} exists: give another name, or --overwrite to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise AAEError(f"--out {given}: {out.parent} is a file, not a folder")
    if out.parent.exists() and not os.access(out.parent, os.W_OK):
        raise AAEError(f"--out {given}: {out.parent} is not writable")
    return out


def cmd_plot(args) -> int:
    from .api import plot_run

    for path in plot_run(args.run, device=args.device, data_dir=args.data_dir):
        print(f"wrote {path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import bench_markdown, bench_seeds, throughput

    if args.bench in SEED_BENCHES:
        if args.seeds <= 0:
            raise AAEError(f"--seeds {args.seeds}: must be positive")
        if args.jobs <= 0:
            raise AAEError(f"--jobs {args.jobs}: must be positive")
        args.model_kind = SEED_BENCHES[args.bench]
        command = "aae " + " ".join(shlex.quote(a) for a in sys.argv[1:])
        config = _config_from_args(args)
        cfg.refuse_unread(config, args.explicit)  # as `aae train` does
        result = bench_seeds(config, args.seeds, args.out, command,
                             progress=not args.no_progress, jobs=args.jobs)  # fmt: skip
        print(bench_markdown(result))
        return 0

    for name in ("batch_size", "steps", "z_dim"):
        if getattr(args, name) <= 0:
            raise AAEError(f"--{name.replace('_', '-')} {getattr(args, name)}: must be positive")
    result = throughput(args.model, args.batch_size, args.steps, args.device, args.z_dim,
                        precision=args.precision, compile=args.compile,
                        cuda_graphs=args.cuda_graphs, adam_kernel=args.adam_kernel,
                        paired_discriminators=args.paired_discriminators)  # fmt: skip
    print(json.dumps(_shown(result), indent=2))
    return 0


def cmd_download(args) -> int:
    from .data import data_roots
    from .download import download_mnist

    start = time.perf_counter()
    folder = download_mnist(data_roots(args.data_dir)[0])  # where training looks first
    print(f"MNIST ready in {folder} ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_classifier(args) -> int:
    from .classifier import train_and_cache
    from .data import load_dataset
    from .train import resolve_device

    _refuse_data_dir_with_npz(args.dataset, args.data_dir)
    data = load_dataset(args.dataset, args.data_dir)
    _, info = train_and_cache(data, args.cache_dir, args.epochs, args.seed,
                              resolve_device(args.device), args.retrain, not args.no_progress)  # fmt: skip
    how = "cached" if info["cached"] else f"trained in {info['train_seconds']} s"
    asked = {k: getattr(args, k) for k in ("epochs", "seed") if k in args.explicit}
    other = {k: info.get(k) for k, v in asked.items() if info.get(k) != v}
    if info["cached"] and other:  # flags the cached classifier was not trained with
        how += (f", trained with {' '.join(f'--{k} {v}' for k, v in other.items())}, not "
                f"{' '.join(f'--{k} {asked[k]}' for k in other)}: --retrain trains it again")  # fmt: skip
    print(f"test accuracy {info['test_accuracy']:.4f} ({how}; {info['path']})")
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "sample": cmd_sample,
    "encode": cmd_encode,
    "plot": cmd_plot,
    "bench": cmd_bench,
    "download": cmd_download,
    "classifier": cmd_classifier,
}

if __name__ == "__main__":
    sys.exit(main())
