"""Throughput benchmark: training images/s against this machine's matrix-multiply throughput.

In one process: (1) one training step runs under a dispatch mode that records every matrix
product (shapes, operand layouts) and its FLOPs, which gives the FLOPs per image analytically
from the shapes actually executed; (2) the recorded products alone are replayed in a loop, which
measures the machine's matmul throughput *for these shapes* (the step's ceiling); (3) the real
training step is timed. `fraction_of_peak` = achieved model GFLOP/s / replayed matmul GFLOP/s.
"""

from __future__ import annotations

import dataclasses
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .config import MODEL_FIELDS, Config, ModelConfig, TrainConfig
from .data import Dataset
from .errors import AAEError
from .parallel import _train_in_parallel, _train_seed
from .train import resolve_device
from .variants import defaults, get_variant

aten = torch.ops.aten


class MatmulRecorder(TorchDispatchMode):
    """Records (a_shape, a_transposed, b_shape, b_transposed, has_bias) of every mm/addmm, and of
    each product of a bmm/baddbmm (`--paired-discriminators`' batched products: the same math)."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default):
            a, b = (args[0], args[1]) if func in (aten.mm.default, aten.bmm.default) else (args[1], args[2])
            call = (tuple(a.shape[-2:]), _transposed(a), tuple(b.shape[-2:]), _transposed(b),
                    func in (aten.addmm.default, aten.baddbmm.default))  # fmt: skip
            self.calls.extend([call] * (a.shape[0] if a.dim() == 3 else 1))
        return func(*args, **kwargs)

    @property
    def flops(self) -> int:
        return sum(2 * a[0] * a[1] * b[1] for a, _, b, _, _ in self.calls)


def _transposed(t: torch.Tensor) -> bool:
    """Whether the (last two dimensions of the) matrix are stored column by column."""
    return t.stride(-2) == 1 and t.shape[-1] > 1


def _operand(shape, transposed, device, dtype):
    if transposed:
        return torch.randn(shape[1], shape[0], device=device, dtype=dtype).t()
    return torch.randn(*shape, device=device, dtype=dtype)


def matmul_throughput(calls, device, min_seconds: float = 1.0, dtype=torch.float32) -> float:
    """GFLOP/s of replaying exactly these matrix products, back to back, in `dtype`."""
    ops = []
    for a_shape, a_t, b_shape, b_t, bias in calls:
        a, b = _operand(a_shape, a_t, device, dtype), _operand(b_shape, b_t, device, dtype)
        out = torch.empty(a_shape[0], b_shape[1], device=device, dtype=dtype)
        c = torch.randn(b_shape[1], device=device, dtype=dtype) if bias else None
        ops.append((a, b, c, out))
    flops = sum(2 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _, _ in ops)

    def replay():
        for a, b, c, out in ops:
            torch.addmm(c, a, b, out=out) if c is not None else torch.mm(a, b, out=out)

    if device.type == "cuda":  # the products alone, launched as one graph: the kernels' rate
        replay()
        torch.cuda.synchronize(device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            replay()
        replay = graph.replay
    return flops * _repeat_rate(replay, device, min_seconds) / 1e9


def _repeat_rate(fn, device, min_seconds: float) -> float:
    """Calls of `fn` per second, after warm-up, timed over at least `min_seconds`."""
    for _ in range(3):
        fn()
    _sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        for _ in range(5):
            fn()
        calls += 5
        _sync(device)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls / elapsed


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


MAX_THROUGHPUT_BATCH = 60_000  # the bench holds 8 batches of synthetic images: 1.5 GB at this size


def throughput(
    model_kind: str = "unsupervised",
    batch_size: int = 100,
    steps: int = 200,
    device: str = "cpu",
    z_dim: int = 2,
    model_config: ModelConfig | None = None,
    precision: str = "fp32",
    compile: str = "off",
    cuda_graphs: bool = False,
    adam_kernel: str = "torch",
    paired_discriminators: bool = False,
) -> dict:
    """Measure training throughput of `model_kind` (default: the blog's architecture).

    Returns:
        images_per_second, flops_per_image, model_gflops (achieved), matmul_gflops (replayed
        products of the same shapes), fraction_of_peak, plus the settings. With precision "bf16"
        ("fp16") the step runs under bfloat16 (float16, with loss scaling) autocast and the
        products are replayed in that type; with compile (a torch.compile mode) the networks
        are compiled after the recording step; with cuda_graphs the step is replayed from a
        CUDA graph (`graphs.GraphedStep`); adam_kernel "triton" updates with `triton_adam`'s
        kernels; paired_discriminators runs the two discriminators together. On CUDA the products are replayed from a CUDA graph
        too, so that their rate is the kernels', not the launches'.
    """
    from . import optim
    from .train import autocast, check_precision

    if not 0 < batch_size <= MAX_THROUGHPUT_BATCH:
        raise AAEError(f"--batch-size {batch_size}: must be in 1..{MAX_THROUGHPUT_BATCH} (MNIST's training "
                       "set, the largest batch `aae train` takes on it)")  # fmt: skip
    dev = resolve_device(device)
    check_precision(precision, dev)
    train_cfg = TrainConfig(compile=compile, precision=precision, adam_kernel=adam_kernel,
                            paired_discriminators=paired_discriminators)  # fmt: skip
    optim.check_kernel(train_cfg, dev)
    if paired_discriminators and model_kind not in MODEL_FIELDS["paired_discriminators"]:
        raise AAEError(f"--paired-discriminators: the {model_kind} model has one discriminator; it works "
                       f"with {', '.join(MODEL_FIELDS['paired_discriminators'])}")  # fmt: skip
    variant = get_variant(model_kind)
    if model_config is None:  # the model's own CLI defaults for its structure (e.g. clusters)
        model_config = defaults(model_kind, z_dim=z_dim).model
    mcfg = model_config
    torch.manual_seed(0)
    model = variant.MODEL.from_config(mcfg, 784, (28, 28)).to(dev)
    optimizers = variant.make_optimizers(model, train_cfg)
    scaler = optim.grad_scaler(precision, dev)  # fp16: the loss scaling a training run does
    # Synthetic images and labels: the speed of the step does not depend on the pixel values.
    n = batch_size * 8
    data = Dataset("synthetic", torch.rand(n, 784), torch.arange(n) % 10, None, None, (28, 28), 10)
    ctx = variant.setup(model, data, Config(model_kind, model=mcfg, train=train_cfg), dev, None)
    x, y = data.train_x.to(dev), data.train_y.to(dev)
    batches = list(zip(x.split(batch_size), y.split(batch_size)))

    model.train()
    with MatmulRecorder() as rec, autocast(dev, precision), optim.loss_scaling(scaler):
        variant.train_step(model, optimizers, *batches[0], ctx, 0)
    if compile != "off":  # after the (eager) recording step; warm-up below includes compilation
        for network in model.children():
            network.compile(mode=compile)
    warmup = 10
    # As the training loop: the step's host-side inputs drawn ahead and moved to the device once.
    step_inputs = getattr(variant, "step_inputs", None)
    inputs = step_inputs(ctx, 1, warmup + steps) if step_inputs else {}
    inputs = {k: v.to(dev) for k, v in inputs.items()}
    index_batches = torch.arange(n, device=dev).split(batch_size)
    graphed = None
    if cuda_graphs:
        from . import graphs

        graphs.check(model_kind, dev, train_cfg)
        graphed = graphs.GraphedStep(variant, model, optimizers, x, y, ctx, batch_size, precision, inputs)
    i = 0

    def step():
        nonlocal i
        row = {k: v[i] for k, v in inputs.items()}
        if graphed is not None:
            graphed(index_batches[i % len(index_batches)], row)
        else:
            xb, yb = batches[i % len(batches)]
            if row:
                ctx.update(row)
            with autocast(dev, precision), optim.loss_scaling(scaler):
                variant.train_step(model, optimizers, xb, yb, ctx, i + 1)
        i += 1

    for _ in range(warmup):  # warm-up (allocator, Adam state; the graph's capture)
        step()
    _sync(dev)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    seconds = time.perf_counter() - start

    images_per_second = steps * batch_size / seconds
    flops_per_image = rec.flops / batch_size
    model_gflops = images_per_second * flops_per_image / 1e9
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    with autocast(dev, "tf32" if precision == "tf32" else "fp32"):  # (tf32: the products' mode)
        matmul_gflops = matmul_throughput(rec.calls, dev, dtype=dtype)
    return {
        "model": model_kind,
        "device": str(dev),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "precision": precision,
        "compile": compile,
        "cuda_graphs": cuda_graphs,
        "adam_kernel": adam_kernel,
        "paired_discriminators": paired_discriminators,
        "steps": steps,
        "images_per_second": round(images_per_second, 1),
        "flops_per_image": flops_per_image,
        "model_gflops": round(model_gflops, 2),
        "matmul_gflops": round(matmul_gflops, 2),
        "fraction_of_peak": round(model_gflops / matmul_gflops, 3),
        "torch": torch.__version__,
    }


# ----------------------------------------------------------------------------------------------
# Accuracy over seeds

# The paper's figures (%, mean and std): semi-supervised test error by number of labels
# (Table 2), clustering error by number of clusters (section 6).
PAPER_ERROR = {"100": (1.90, 0.10), "1000": (1.60, 0.08), "all": (0.85, 0.02)}
PAPER_CLUSTER_ERROR = {16: (9.55, 2.05), 30: (4.10, 1.13)}
# Table 1: the Parzen log-likelihood of the MNIST test set (nats, mean and standard error) of
# the paper's model, an 8-D code with a Gaussian prior of std 5.
PAPER_PARZEN = (340.0, 2.0)
# The key each benchmarked model is scored by: a summary key, or for the unsupervised model
# the Parzen log-likelihood of `aae evaluate --parzen` (the paper's protocol, 10,000 samples).
BENCH_METRIC = {"semi-supervised": "test_error", "clustering": "test_cluster_error_paper_rule",
                "unsupervised": "parzen_ll"}  # fmt: skip
# A second score shown beside it: clustering's error by majority vote, the more lenient and more
# usual labeling of clusters (see clustering.py).
BENCH_ALSO = {"clustering": "test_cluster_error"}
PARZEN_SAMPLES = 10000


def _setting(config) -> tuple[str, object, tuple[float, float] | None]:
    """The benchmark's varied setting (name, value) and the paper's figure for it (the paper's
    figures are all of MNIST: none for another dataset)."""
    mnist = config.data.dataset == "mnist"
    if config.model_kind == "clustering":
        k = config.model.clusters
        return "clusters", k, PAPER_CLUSTER_ERROR.get(k) if mnist else None
    if config.model_kind == "unsupervised":
        m = config.model
        papers = mnist and m.prior == "gaussian" and m.prior_std == 5
        return "z_dim", m.z_dim, PAPER_PARZEN if papers and m.z_dim == 8 else None
    return "labels", config.data.labels, PAPER_ERROR.get(str(config.data.labels)) if mnist else None


def _scored(run, summary: dict, metric: str, device: str, parzen_samples: int) -> dict:
    """A seed's summary, plus for the Parzen bench the metrics of `aae evaluate RUN --parzen`
    on its final checkpoint (recomputed each time: about 10 s on a CPU, and never stale), and
    those of `aae evaluate RUN` for a run finished before its summary held the bench's key."""
    from .api import evaluate_run

    if metric == "parzen_ll":
        return {**summary, **evaluate_run(run, device=device, parzen=True, n_samples=parzen_samples)}
    if metric not in summary:
        return {**summary, **evaluate_run(run, device=device)}
    return summary


# Settings that do not change what a seed's run computes: a finished run may differ in these
# (data_dir only locates the files, which are checked against their checksums).
_NOT_COMPARED = {"device", "log_every", "checkpoint_every", "checkpoint_epochs", "data_dir"}


def bench_seeds(config, seeds: int, out, command: str, progress: bool = True, jobs: int = 1,
                parzen_samples: int | None = None) -> dict:  # fmt: skip
    """Train `config` once per seed (seed, seed+1, ...) into OUT/seed-K and report its score:
    q(y|x)'s test error for the semi-supervised model, the cluster error for clustering, the
    Parzen log-likelihood of the test set for the unsupervised model (`BENCH_METRIC`; from
    `parzen_samples` samples, default `PARZEN_SAMPLES`); the result's keys are named after it
    (test_error_mean, ...).

    A seed whose run folder already holds a finished run (summary.json) of the same config is not
    trained again, so an interrupted benchmark continues where it stopped; a run of another config
    there is an error. With jobs > 1, that many seeds train at once in separate processes, the
    machine's threads shared out between them.

    Returns:
        The content of OUT/bench.json (also written, with OUT/bench.md).
    """
    from pathlib import Path

    import numpy as np

    from .checkpoint import atomic_write_bytes, atomic_write_json, read_json_object
    from .errors import Interrupted

    if config.model_kind not in BENCH_METRIC:
        raise AAEError(f"bench: no test score to report for the {config.model_kind} model "
                       f"(choose {', '.join(BENCH_METRIC)})")  # fmt: skip
    metric = BENCH_METRIC[config.model_kind]
    out = Path(out)
    _check_bench_folder(out)
    earlier = read_json_object(out / "bench.json")  # read before training: unreadable is an error now, not after it
    left_out = _seeds_left_out(out, config.train.seed, seeds)
    todo, summaries = [], {}
    for k in range(seeds):
        seed = config.train.seed + k
        cfg = dataclasses.replace(config, train=dataclasses.replace(config.train, seed=seed))
        run = out / f"seed-{seed}"
        _check_same_config(run, cfg)
        summary = read_json_object(run / "summary.json")
        # A summary of fewer epochs is stale: the seed was resumed with more (`aae train
        # --resume --epochs N`) and has not finished them; it was taken as this bench's result.
        if summary is not None and summary.get("epochs") == cfg.train.epochs:
            summaries[seed] = summary
        else:
            todo.append((seed, cfg, run))
    try:
        if jobs > 1 and len(todo) > 1:
            summaries.update(_train_in_parallel(todo, jobs))
        else:
            for seed, cfg, run in todo:
                summaries[seed] = _train_seed(cfg.to_dict(), str(run), progress)
    except Interrupted:
        raise Interrupted("interrupted; each unfinished seed keeps its last checkpoint: run the same "
                          "`aae bench` command again to continue") from None  # fmt: skip
    runs = []
    for seed in sorted(summaries):
        summary = _scored(out / f"seed-{seed}", summaries[seed], metric, config.train.device,
                          parzen_samples or PARZEN_SAMPLES)  # fmt: skip
        if metric not in summary:
            raise AAEError(f"{out / f'seed-{seed}'}: its summary has no {metric}")
        runs.append({"seed": seed, metric: summary[metric],
                     "epochs": summary["epochs"], "train_seconds": summary["train_seconds"]})  # fmt: skip
        if metric == "parzen_ll":  # each seed's standard error over the test images, its width
            runs[-1].update(parzen_se=summary["parzen_se"], parzen_sigma=summary["parzen_sigma"])
        also = BENCH_ALSO.get(config.model_kind)
        if also is not None:
            runs[-1][also] = summary[also]
    errors = np.array([r[metric] for r in runs])
    setting, value, paper = _setting(config)
    result = {
        "model": config.model_kind,
        "metric": metric,
        "setting": setting,
        setting: value,
        "seeds": [r["seed"] for r in runs],
        metric: [r[metric] for r in runs],
        f"{metric}_mean": float(errors.mean()),
        f"{metric}_std": float(errors.std(ddof=1)) if len(errors) > 1 else 0.0,
        "runs": runs,
        "left_out": left_out,
        f"paper_{metric}": paper,
        **_also(config.model_kind, runs),
        "command": command,
        "config": config.to_dict(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "jobs": jobs,
        "calls": _calls(earlier, command, jobs, [seed for seed, _, _ in todo]),
    }
    atomic_write_json(out / "bench.json", result)
    atomic_write_bytes(out / "bench.md", bench_markdown(result).encode())
    return result


def _calls(old: dict | None, command: str, jobs: int, trained: list[int]) -> list[dict]:
    """bench.json's `calls`: every call of the bench on OUT, oldest first (command, jobs, the
    seeds it trained or continued, when it ended), after those of OUT's earlier bench.json `old`;
    `command` and `jobs` beside them are the latest's. A bench.json from before `calls` gives its
    one recorded call, marked so."""
    previous = []
    if old is not None:
        previous = old.get("calls") or [{"command": old.get("command"), "jobs": old.get("jobs"),
                                         "trained": None, "note": "recorded before calls were"}]  # fmt: skip
    return [*previous, {"command": command, "jobs": jobs, "trained": trained,
                        "ended": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]  # fmt: skip


def _also(model_kind: str, runs: list) -> dict:
    """The second score's values, mean and std over the seeds (`BENCH_ALSO`), if the model has one."""
    import numpy as np

    also = BENCH_ALSO.get(model_kind)
    if also is None:
        return {}
    values = np.array([r[also] for r in runs])
    return {"also": also, also: values.tolist(), f"{also}_mean": float(values.mean()),
            f"{also}_std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}  # fmt: skip


def _check_bench_folder(out) -> None:
    """Refuse an OUT that is not a bench's: a training run's folder (whose --overwrite would then
    delete the bench's seeds) or a folder of other files."""
    from .errors import AAEError
    from .run_folder import RUN_MARKERS, refuse_broken_link

    refuse_broken_link(out)
    if out.exists() and not out.is_dir():
        raise AAEError(f"{out} is a file, not a bench folder")
    if not out.is_dir():
        return
    if any((out / name).exists() for name in RUN_MARKERS):
        raise AAEError(f"{out} holds a training run; a bench writes OUT/seed-K runs and "
                       f"OUT/bench.json: give a new or empty folder")  # fmt: skip
    others = sorted(p.name for p in out.iterdir()
                    if p.name not in ("bench.json", "bench.md") and not p.name.startswith("."))
    others = [name for name in others if not (name.startswith("seed-") and (out / name).is_dir())]
    if others:
        raise AAEError(f"{out} holds {others[0]!r}, which no bench writes: give a new or empty folder")


def _seeds_left_out(out, first: int, seeds: int) -> list[int]:
    """The seed folders in OUT outside this call's seeds, which its table leaves out: said in a
    warning and in bench.json (a call with fewer --seeds rewrote the table without a word)."""
    import warnings

    from .errors import AAEWarning

    if not out.is_dir():
        return []
    held = sorted(int(p.name[5:]) for p in out.glob("seed-*") if p.name[5:].removeprefix("-").isdigit())  # seed--1 too
    outside = [k for k in held if not first <= k < first + seeds]
    if outside:
        warnings.warn(f"{out}: {', '.join(f'seed-{k}' for k in outside)} outside --seed {first} "
                      f"--seeds {seeds}, left out of the table (bench.json's left_out)", AAEWarning, stacklevel=3)  # fmt: skip
    return outside


def _check_same_config(run, cfg) -> None:
    """Refuse a run folder that holds a run of another config (it would mix into the table)."""
    from .checkpoint import read_json_object
    from .config import SECTIONS

    saved, wanted = read_json_object(run / "config.json"), cfg.to_dict()
    if saved is None:
        return
    if saved.get("model_kind") != wanted["model_kind"]:  # before its settings, which differ anyway
        raise AAEError(f"{run} holds a run of the {saved.get('model_kind')} model, not "
                       f"{wanted['model_kind']}: use another --out")  # fmt: skip
    for section, cls in SECTIONS.items():
        # A key the saved run lacks predates its field: that run had the field's default.
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        for key in sorted(set(saved.get(section, {})) | set(wanted[section])):
            if key in _NOT_COMPARED:
                continue
            a, b = saved.get(section, {}).get(key, defaults.get(key)), wanted[section].get(key)
            if a != b:
                raise AAEError(f"{run} holds a run with {section}.{key}={a!r}, not {b!r}: "
                               f"use another --out, or delete that run")  # fmt: skip


def _minutes(seconds: float) -> str:
    """Minutes to one decimal, or to two significant digits under a minute (not 0.0)."""
    return f"{seconds / 60:.1f}" if seconds >= 60 else f"{seconds / 60:.2g}"


def bench_markdown(r: dict) -> str:
    """A Markdown table of a `bench_seeds` result, next to the paper's number."""
    metric = r.get("metric", "test_error")  # bench.json files written before "metric" existed
    setting = r.get("setting") or ("clusters" if "clusters" in r else "labels")
    if metric == "parzen_ll":  # nats, as the paper's Table 1
        unit, scale, digits, suffix = "nats", 1, 1, ""
    else:
        unit, scale, digits, suffix = "%", 100, 2, "%"
    paper = r[f"paper_{metric}"]
    paper_txt = f"{paper[0]:.{digits}f} ± {paper[1]:.{digits}f}" if paper else "-"
    mean = f"{scale * r[f'{metric}_mean']:.{digits}f}"
    spread = f" ± {scale * r[f'{metric}_std']:.{digits}f}" if len(r["seeds"]) > 1 else " (one seed)"

    def one(x):
        se = f" (se {x['parzen_se']:.1f})" if "parzen_se" in x else ""
        return f"seed {x['seed']}: {scale * x[metric]:.{digits}f}{suffix}{se}"

    lines = [
        f"| model | {setting.replace('_', ' ')} | seeds | {metric.replace('_', ' ')} ({unit}) | "
        f"paper ({unit}) | epochs | minutes per seed |",
        "|---|---|---|---|---|---|---|",
        f"| {r['model']} | {r[setting]} | {len(r['seeds'])} | {mean}{spread} | {paper_txt} | "
        f"{r['runs'][0]['epochs']} | "
        f"{_minutes(sum(x['train_seconds'] for x in r['runs']) / len(r['runs']))} |",
        "",
        "Per seed: " + ", ".join(one(x) for x in r["runs"]),
        "",
    ]
    if metric == "parzen_ll":
        lines += ["The spread is over seeds; each seed's standard error (se) is over the test "
                  "images, which every seed shares.", ""]  # fmt: skip
    if metric == "test_cluster_error_paper_rule":
        held_out = r.get("config", {}).get("data", {}).get("val_size")
        images = "validation image" if held_out else "training image (the run has no validation split)"
        lines += [f"The paper's rule: each cluster takes the label of the {images} it is most "
                  "confident of.", ""]  # fmt: skip
    also = r.get("also")
    if also is not None:
        spread = f" ± {scale * r[f'{also}_std']:.{digits}f}" if len(r["seeds"]) > 1 else ""
        each = ", ".join(f"{scale * x[also]:.{digits}f}" for x in r["runs"])
        lines += [f"{also.replace('_', ' ')}, by majority vote (each cluster takes the most frequent "
                  f"label of its training images): {scale * r[f'{also}_mean']:.{digits}f}{spread}{suffix} "
                  f"({each})", ""]  # fmt: skip
    return "\n".join([*lines, f"Command: `{r['command']}`", ""])
