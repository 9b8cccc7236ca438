"""A run folder: what it holds, the lock that guards it, and the config it records.

A run folder holds config.json (written before the first step), metrics.jsonl, summary.json,
checkpoints/ and plots/; `RunFolder` refuses to overwrite a run by accident, and never
empties a folder that holds anything else. The config a run records is the one that can
rebuild it: how `load_dataset` made the data, the model's own arguments, the `TrainConfig`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from .checkpoint import atomic_write_json, load_checkpoint, read_json
from .config import RESUMABLE, SECTIONS, Config, ModelConfig, TrainConfig, from_dict
from .data import Dataset
from .errors import AAEError
from .variants import defaults

CHECKPOINT = Path("checkpoints") / "latest.pt"


# What a run folder holds from its start (config.json is written before the first step).
RUN_MARKERS = ("config.json", "checkpoints", "metrics.jsonl", "summary.json")
# Everything the library writes at a run folder's top level (and temporary files, ".NAME.*.tmp"):
# --overwrite deletes these, and refuses a folder that holds anything else.
RUN_FILES = (*RUN_MARKERS, ".lock", "resumes.jsonl", "data.json", "labeled_indices.json", "plots",
             "tensorboard", "eval.json", "report.html")  # fmt: skip
# What file browsers leave in any folder they show: deleted with the run, not a user's file.
OS_LITTER = (".DS_Store", "Thumbs.db", "desktop.ini")


def recorded_config(run: Path) -> Config | None:
    """The config the run in `run` records: config.json's, else, where that file is gone and a
    checkpoint is left, the checkpoint's own copy; None where neither is."""
    path = Path(run) / "config.json"
    if path.is_file():
        try:
            return from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as e:
            raise AAEError(f"{path}: unreadable ({e})") from None
        except AAEError as e:  # valid JSON, not a config: say which file
            raise AAEError(f"{path}: {e}") from None
    if (Path(run) / CHECKPOINT).is_file():
        saved = load_checkpoint(Path(run) / CHECKPOINT)
        if saved.get("config") and "state" in saved:  # a training checkpoint, not save_model's
            return from_dict(saved["config"])
    return None


def refuse_broken_link(path: Path) -> None:
    """Refuse an --out that is a symbolic link to nothing: making the folder would fail with
    "File exists" only once the data had loaded."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        target = path.parent / os.readlink(path)  # a relative link is relative to its folder
        raise AAEError(f"--out {path} is a symbolic link to {os.path.normpath(target)}, which does not "
                       "exist: give another --out, or remove the link")  # fmt: skip


class RunFolder:
    """A run folder, locked while in use, refusing to overwrite an existing run by accident."""

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        exists = self.check(path, resume, overwrite)  # the path as given: "" is not "."
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path / ".lock", "a+")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise AAEError(f"{self.path} is in use by another training process") from None
        if overwrite and exists:
            for child in self.path.iterdir():
                if child.name != ".lock":
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()  # a link, not its target
        # Temporary files of writes that a crash interrupted (the files they were to replace
        # are intact): safe to delete now that the folder is ours.
        for stale in self.path.glob("**/.*.tmp"):
            stale.unlink()

    @staticmethod
    def check(path: Path, resume: bool, overwrite: bool) -> bool:
        """Refuse a bad request before anything is loaded or written; True if a run exists."""
        if not str(path).strip():
            raise AAEError("--out is empty; give the run folder")
        path = Path(path)
        if resume and overwrite:
            raise AAEError("--resume and --overwrite contradict each other; pick one")
        if path.exists() and not path.is_dir():
            raise AAEError(f"{path} is a file, not a run folder")
        refuse_broken_link(path)
        exists = path.exists() and any(p.name != ".lock" and p.name not in OS_LITTER for p in path.iterdir())
        if resume and not (path / CHECKPOINT).is_file():
            hint = ("; the run stopped before its first checkpoint: start it again with --overwrite"
                    if (path / "config.json").is_file() else "")  # fmt: skip
            raise AAEError(f"--resume: no checkpoint at {path / CHECKPOINT}{hint}")
        if exists and not any((path / name).exists() for name in RUN_MARKERS):
            # --overwrite empties the folder: never one that holds something other than a run.
            raise AAEError(f"{path} is not empty and holds no run (none of {', '.join(RUN_MARKERS)}); "
                           "give a new or empty folder")  # fmt: skip
        if exists and not (resume or overwrite):
            raise AAEError(
                f"{path} already holds a run; pass --resume to continue it or --overwrite "
                "to replace it (from Python: fit(..., resume=True) or overwrite=True)"
            )
        if exists and overwrite:
            # Never delete what the library did not write: a dataset, a user's notes, a run
            # branched into a subfolder.
            foreign = sorted(p.name for p in path.iterdir() if not _written_by_runs(p.name))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
                raise AAEError(f"--overwrite: {path} also holds files that a run does not write "
                               f"({shown}); move them out first, or give another --out")  # fmt: skip
        return exists

    def close(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()


def _written_by_runs(name: str) -> bool:
    """Whether a run folder's top-level entry `name` is one the library writes."""
    return name in RUN_FILES or name in OS_LITTER or (name.startswith(".") and name.endswith(".tmp"))


def model_fields(model) -> dict:
    """The ModelConfig fields that `model`'s constructor arguments set (its K clusters included)."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    fields = {k: v for k, v in model.model_args.items() if k in names}
    if model.kind in ("clustering", "dim-reduction"):
        fields["clusters"] = model.model_args["n_classes"]
    return fields


def default_config(model, data: Dataset, train: TrainConfig) -> Config:
    """The config of a run made from Python without one: the command line's defaults for the
    model (`variants.defaults`: e.g. the labels it trains on), its own arguments, how `load_dataset`
    made the data (a hand-built Dataset: its name only) and `train`."""
    base = defaults(model.kind)
    return run_config(dataclasses.replace(base, data=dataclasses.replace(base.data, dataset=data.name)),
                      model, data, train)  # fmt: skip


def run_config(config: Config, model, data: Dataset, train: TrainConfig) -> Config:
    """The config a run records: `config`'s kind, its data section with what `load_dataset` did
    to make `data` (its file, folder, subset and validation split), the model section set from
    `model`'s own arguments, and the `train` that runs."""
    if config.model_kind != model.kind:
        raise AAEError(f"config is for the {config.model_kind} model, not {model.kind}")
    data_cfg, src = config.data, data.source
    if src is not None:  # the validation split's seed is the data seed where it is not --seed
        if src["val_size"] and data_cfg.data_seed not in (None, src["seed"]):
            raise AAEError(f"the data's validation split was drawn with seed {src['seed']} "
                           f"(load_dataset(..., seed={src['seed']})), the config's data_seed is "
                           f"{data_cfg.data_seed}: a resume or an evaluation would split otherwise; "
                           "make them agree")  # fmt: skip
        seed = src["seed"] if src["val_size"] and src["seed"] != train.seed else None
        data_cfg = dataclasses.replace(data_cfg, dataset=src["dataset"], data_dir=src["data_dir"],
                                       subset=src["subset"], val_size=src["val_size"],
                                       data_seed=data_cfg.data_seed if data_cfg.data_seed is not None else seed)  # fmt: skip
    return dataclasses.replace(config, data=data_cfg, train=train,
                               model=dataclasses.replace(config.model, **model_fields(model)))  # fmt: skip


def _unresumable_differences(saved: Config, config: Config) -> list[tuple[str, object, object]]:
    """(section.name, saved value, config's value) of each setting outside RESUMABLE that differs."""
    differences = []
    for section in SECTIONS:
        before, after = getattr(saved, section), getattr(config, section)
        for f in dataclasses.fields(after):
            a, b = getattr(before, f.name), getattr(after, f.name)
            if f.name == "dataset" and a.endswith(".npz"):  # a run made before paths were absolute
                a, b = str(Path(a).absolute()), str(Path(b).absolute())
            if a != b and f.name not in RESUMABLE:
                differences.append((f"{section}.{f.name}", a, b))
    return differences


def check_resumable(saved: Config, config: Config, what: str = "resume: the run") -> None:
    """Refuse to resume a run, or to branch from its checkpoint, under settings other than its
    own (bar RESUMABLE's): the optimizers' states would bring back the saved learning rates,
    and the labeled images would be drawn again, whatever the new config says."""
    differences = _unresumable_differences(saved, config)
    if differences:
        name, a, b = differences[0]
        raise AAEError(f"{what} was made with {name}={a!r}, not {b!r}; start a new run for other settings")
    # The instance noise falls to 0 over the whole run, so its schedule is a function of --epochs.
    if config.train.disc_noise and saved.train.epochs != config.train.epochs:
        raise AAEError(f"{what} has --disc-noise {config.train.disc_noise}, which falls to 0 over its "
                       f"{saved.train.epochs} epochs: --epochs {config.train.epochs} would change that "
                       "schedule midway; start a new run for another length")  # fmt: skip


def check_config_file(run: Path, saved: dict | None = None, model_only: bool = False) -> None:
    """Refuse a run folder whose config.json and checkpoint disagree on the model or on a setting
    that a resume may not change: one of them was edited, replaced or damaged (a missing section
    of config.json reads as the defaults). A resume would go on under other settings than the
    run trained with, some of them (the learning rates, which the optimizers' states bring back)
    without effect; an evaluation would score another run's model on this run's data. An .npz
    dataset's path may differ (a moved file, its path edited in config.json): RUN/data.json's
    digest checks its content when it is loaded.

    Args:
        saved: the checkpoint, when the caller has loaded it; else RUN/checkpoints/latest.pt.
        model_only: compare the model alone, and pass over a config.json that cannot be read
            (for what rebuilds the model from the checkpoint and reads nothing else of the run).
    """
    path, checkpoint = Path(run) / "config.json", Path(run) / CHECKPOINT
    if not path.is_file() or (saved is None and not checkpoint.is_file()):
        return
    saved = load_checkpoint(checkpoint) if saved is None else saved
    if not (saved.get("config") and "state" in saved):  # not a training checkpoint
        return
    try:
        ours = recorded_config(run)
    except AAEError:
        if model_only:
            return
        raise
    theirs = from_dict(saved["config"])
    if theirs.model_kind != ours.model_kind:
        differences = [("model", theirs.model_kind, ours.model_kind)]
    else:
        differences = [
            (name, a, b) for name, a, b in _unresumable_differences(theirs, ours)
            if (name.startswith("model.") or not model_only)
            and not (name == "data.dataset" and a.endswith(".npz") and b.endswith(".npz"))
        ]  # fmt: skip
    if differences:
        shown = "; ".join(f"{name} {b!r} there, {a!r} in the checkpoint" for name, a, b in differences[:3])
        more = f" (and {len(differences) - 3} more)" if len(differences) > 3 else ""
        raise AAEError(f"{path} disagrees with {checkpoint.name}, the run's checkpoint: {shown}{more}; "
                       "one of them was edited, replaced or damaged since the run wrote them. Put "
                       "back the run's own, or delete config.json to go by the checkpoint's")  # fmt: skip


# What a run trained on (`data_record`), so that what loads its data again can tell other data:
# a Dataset built in Python (its config names it, but cannot load it), a changed .npz file.
DATA_RECORD = "data.json"


def data_record(data: Dataset) -> dict:
    """RUN/data.json: how the data was made ("load_dataset", or "python" for a Dataset built
    by hand), its name, the size of each split, and a digest of their images and labels."""
    size = lambda x: 0 if x is None else len(x)
    return {"made_by": "python" if data.source is None else "load_dataset", "name": data.name,
            "train": size(data.train_x), "val": size(data.val_x), "test": size(data.test_x),
            "sha1": data_digest(data)}  # fmt: skip


def data_digest(data: Dataset) -> str:
    """SHA-1 of the bytes of every split's images and labels (about 0.2 s for MNIST): the same
    files loaded the same way give the same digest, an edited Dataset or file another."""
    digest = hashlib.sha1()
    for name in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        t = getattr(data, name)
        digest.update(name.encode())
        if t is not None:
            digest.update(str((t.dtype, tuple(t.shape))).encode())
            digest.update(memoryview(t.detach().cpu().contiguous().numpy()).cast("B"))
    return digest.hexdigest()


def check_reloadable(run, instead: str) -> None:
    """Refuse to load the data of a run trained on a Dataset built in Python (`instead`: what
    to do, e.g. which function takes the data)."""
    record = read_json(Path(run) / DATA_RECORD)
    if record and record.get("made_by") == "python":
        raise AAEError(f"{run} trained on a Dataset built in Python ({record.get('name')!r}, "
                       f"{record.get('train')} training images), which its config cannot load "
                       f"again; {instead}")  # fmt: skip


def check_same_data(run, data: Dataset) -> None:
    """Refuse `data` for the run unless it holds the images and labels the run trained on (a
    run older than RUN/data.json is not checked)."""
    record = read_json(Path(run) / DATA_RECORD)
    if not record or record.get("sha1") is None or record["sha1"] == data_digest(data):
        return
    now = data_record(data)
    sizes = [f"{now[k]} {what} (it trained on {record.get(k)})" for k, what in
             (("train", "training images"), ("val", "validation images"), ("test", "test images"))
             if now[k] != record.get(k)]  # fmt: skip
    raise AAEError(f"{run}: these are not the images it trained on ({'; '.join(sizes) or 'the same sizes, other values'}; "
                   f"{DATA_RECORD}): its data file changed since, or the Dataset it trained on was "
                   "built or edited in Python (pass that one as data=...)")  # fmt: skip


RESUMES = "resumes.jsonl"


def check_epochs_left(epochs: int, done_epochs: int, done_batches: int, flag: str) -> None:
    """Refuse an --epochs below what a checkpoint has trained (its partial epoch included)."""
    done = done_epochs + (1 if done_batches else 0)
    if epochs < done:
        trained = f"{done_epochs} epochs" + (f" and {done_batches} steps of the next" if done_batches else "")
        raise AAEError(f"{flag}: --epochs {epochs}, but the checkpoint has trained {trained}; "
                       f"give --epochs {done} or more")  # fmt: skip


def record_resume(run_path: Path, config: Config, state, before: dict | None = None,
                  source: str | os.PathLike | None = None) -> None:  # fmt: skip
    """Keep config.json true to the resumed run, and log the resume and what it changed.

    config.json is rewritten with the config the run now continues under (a resume may change
    e.g. --epochs or --lr-step); resumes.jsonl gets one line per resume: where the run picked up
    and each changed setting as [before, after], so the first settings are not lost. A run
    branched from another run's checkpoint (`source`) gets its first line here: the checkpoint,
    and the changes from that run's config (`before`).
    """
    before = (read_json(run_path / "config.json") or {}) if before is None else before
    after = config.to_dict()
    changed = {
        f"{section}.{name}": [before.get(section, {}).get(name), value]
        for section, values in after.items() if isinstance(values, dict)
        for name, value in values.items() if before.get(section, {}).get(name) != value
    }  # fmt: skip
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "epoch": state.epoch, "step": state.step,
            "changed": changed}  # fmt: skip
    if source is not None:
        line["branched_from"] = str(Path(source).resolve())
    with open(run_path / RESUMES, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
    if changed:
        atomic_write_json(run_path / "config.json", after)
