"""Where a GPU step's time goes: the kernels of one eager semi-supervised training step.

    python3 benchmarks/gpu_kernels.py [--precision bf16 tf32 ...] [--device cuda]

A graphed step (`--cuda-graphs`) replays the same kernels back to back, so their number and
their summed device time say what a replay costs: the products (gemm kernels) against the
hundreds of small elementwise ones. Prints one JSON line per precision: kernels per step,
their summed microseconds, and the kernels by name (count, microseconds), largest first.
On a CPU (--device cpu) it counts the operators instead, a rough guide only.
"""

from __future__ import annotations

import argparse
import collections
import json

import torch

from torch_aae import semi_supervised as semi
from torch_aae.config import Config, DataConfig, ModelConfig, TrainConfig
from torch_aae.data import Dataset
from torch_aae.train import autocast


def step_kernels(precision: str, device: str, batch_size: int = 100) -> dict:
    dev = torch.device(device)
    torch.manual_seed(0)
    model_cfg = ModelConfig(z_dim=10)
    train = TrainConfig(input_noise=0.3, label_rotate=25, label_scale=0.15, label_shift=3,
                        precision=precision, batch_size=batch_size)  # the recipe's step
    model = semi.SemiSupervisedAAE.from_config(model_cfg, 784, (28, 28)).to(dev)
    optimizers = semi.make_optimizers(model, train)
    n = batch_size * 4
    data = Dataset("synthetic", torch.rand(n, 784), torch.arange(n) % 10, None, None, (28, 28), 10)
    config = Config("semi-supervised", DataConfig(labels="100"), model_cfg, train)
    ctx = semi.setup(model, data, config, dev, None)
    x = data.train_x.to(dev)
    rows = semi.step_inputs(ctx, 0, 4)["labeled_idx"].to(dev)
    model.train()

    def step(i):
        ctx["labeled_idx"] = rows[i]
        with autocast(dev, precision):
            semi.train_step(model, optimizers, x[i * batch_size:(i + 1) * batch_size], None, ctx, i)

    for i in range(3):  # optimizer states, allocator, cuBLAS handles
        step(i)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if dev.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        step(3)
        if dev.type == "cuda":
            torch.cuda.synchronize()
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.events():
        on_device = e.device_type == torch.autograd.DeviceType.CUDA
        if getattr(e, "is_user_annotation", False) or e.name.startswith("Optimizer."):
            continue  # a span around kernels (e.g. "Optimizer.step#Adam.step"), not a kernel
        if (dev.type == "cuda" and on_device) or (dev.type == "cpu" and not e.cpu_children
                                                  and e.name.startswith("aten::")):  # fmt: skip
            entry = by_name[e.name[:90]]
            entry[0] += 1
            entry[1] += e.device_time_total if on_device else e.cpu_time_total
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1][1])
    return {
        "precision": precision,
        "device": str(dev),
        "batch_size": batch_size,
        "kernels": sum(c for c, _ in by_name.values()),
        "microseconds": round(sum(t for _, t in by_name.values()), 1),
        "gemm_microseconds": round(sum(t for name, (_, t) in by_name.items()
                                       if "gemm" in name.lower() or "cutlass" in name.lower()
                                       or "aten::mm" in name or "addmm" in name), 1),  # fmt: skip
        "top": [[name, c, round(t, 1)] for name, (c, t) in ranked[:25]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", nargs="+", default=["bf16", "tf32"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    for precision in args.precision:
        print(json.dumps(step_kernels(precision, args.device, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
