"""Can the graphed step's Adam updates get faster? (issue 7: 500 epochs under 5 minutes)

On an H200 the four Adam updates of the semi-supervised step take about 296 of its 1,064 us of
kernels (session 8, `gpu_kernels.py`): torch's fused Adam moves ~258 MB per step at ~0.9 TB/s,
a fifth of the card's copy rate, because its multi-tensor kernel gives each block a 64K-element
chunk and the model's ~9M updated values make only ~140 blocks for 132 SMs. This script times
the four updates of the real model (z-dim 10, hidden 1000; the library's optimizers and
parameter lists), each variant captured once in a CUDA graph and replayed, with fixed gradients:

  fused     torch's fused Adam, capturable: what the graphed step runs today;
  compiled  torch.compile of a foreach, capturable Adam's step (Inductor's Triton kernels);
  triton    the library's Triton Adam (`--adam-kernel triton`, `torch_aae.triton_adam`): 1,024
            values per program, up to four tensors per launch.

It prints one JSON line per variant: microseconds per step (all four updates), GB/s of the
update's traffic (7 float32 values moved per parameter), and the largest difference of any
parameter from the fused variant's after 5 steps from the same start (rounding only, if right).

    python benchmarks/gpu_adam.py                    # CUDA: all three variants
    TRITON_INTERPRET=1 python benchmarks/gpu_adam.py --device cpu --variants triton --hidden 64
        # CPU, Triton's interpreter: checks the kernel against torch's Adam, times nothing
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from torch_aae import graphs  # noqa: E402
from torch_aae import semi_supervised as semi  # noqa: E402
from torch_aae.config import TrainConfig  # noqa: E402


def build(variant: str, device, hidden: int):
    """The model, its four optimizers for `variant`, and fixed gradients; (step function, params,
    bytes one step moves)."""
    torch.manual_seed(0)
    model = semi.SemiSupervisedAAE(784, (28, 28), 10, z_dim=10, hidden=hidden, depth=2,
                                   disc_hidden=hidden, disc_depth=2, dropout=0.2).to(device)  # fmt: skip
    cfg = TrainConfig(lr_recon=1e-3, lr_reg=2e-4, beta1_reg=0.5, lr_sup=1e-3)
    opts = semi.make_optimizers(model, cfg)
    params = list(model.parameters())
    gen = torch.Generator(device="cpu").manual_seed(1)
    for p in params:
        p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
    nbytes = traffic_bytes(opts)
    if variant == "fused":
        graphs.make_capturable(opts, device)
        return (lambda: [o.step() for o in opts.values()]), params, nbytes
    if variant == "compiled":
        compiled = []
        for o in opts.values():
            g = o.param_groups[0]
            new = torch.optim.Adam(g["params"], lr=torch.tensor(float(g["lr"]), device=device),
                                   betas=g["betas"], foreach=True, capturable=True)  # fmt: skip
            compiled.append(torch.compile(new.step))
        return (lambda: [step() for step in compiled]), params, nbytes
    if variant == "triton":
        opts = semi.make_optimizers(model, TrainConfig(lr_recon=1e-3, lr_reg=2e-4, beta1_reg=0.5, lr_sup=1e-3,
                                                       adam_kernel="triton"))  # fmt: skip
        graphs.make_capturable(opts, device)
        return (lambda: [o.step() for o in opts.values()]), params, nbytes
    raise SystemExit(f"unknown variant {variant}")


def traffic_bytes(opts) -> int:
    """Bytes one step of the four updates moves: each updated value reads p, g, m, v and writes
    p, m, v (float32), once per optimizer that holds it (the encoder is in three)."""
    n = sum(p.numel() for o in opts.values() for g in o.param_groups for p in g["params"])
    return 7 * 4 * n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--variants", nargs="+", default=["fused", "compiled", "triton"],
                    choices=["fused", "compiled", "triton"])  # fmt: skip
    ap.add_argument("--hidden", type=int, default=1000)
    ap.add_argument("--replays", type=int, default=200)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    reference = None
    for variant in ["fused", *[v for v in args.variants if v != "fused"]]:
        try:
            step, params, nbytes = build(variant, device, args.hidden)
            for _ in range(5):  # the same 5 steps from the same start: compared below
                step()
            after = [p.detach().clone() for p in params]
            if reference is None:
                reference = after
            diff = max(float((a - b).abs().max()) for a, b in zip(after, reference))
            row = {"variant": variant, "max_abs_diff_vs_fused": diff,
                   "max_abs_param": max(float(p.abs().max()) for p in after)}  # fmt: skip
            if device.type == "cuda":
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(3):
                        step()
                torch.cuda.current_stream().wait_stream(side)
                replay = graphs.capture(step)
                replay()
                torch.cuda.synchronize()
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(args.replays):
                    replay()
                end.record()
                torch.cuda.synchronize()
                us = 1000 * start.elapsed_time(end) / args.replays
                row.update(us_per_step=round(us, 1),
                           gb_per_s=round(nbytes / us / 1e3, 1))  # fmt: skip
        except Exception as e:  # one variant failing must not hide the others' figures
            row = {"variant": variant, "error": f"{type(e).__name__}: {e}"[:500]}
        if variant == "fused" and "error" in row:
            print(json.dumps(row), flush=True)
            return 1
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    rc = main()
    print(json.dumps({"seconds": round(time.perf_counter() - t0, 1)}))
    sys.exit(rc)
