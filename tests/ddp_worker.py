"""One process of the data-parallel test (tests/test_distributed.py): trains a tiny unsupervised
AAE on 400 MNIST images and saves rank 0's weights. Run with RANK / WORLD_SIZE / MASTER_* set (or
none of them, for the single-process reference).

The step's only randomness is the prior's: here a deterministic prior that, on its k-th call,
returns this rank's rows of a fixed global block, so that N processes on shards of a global batch
see exactly the prior samples one process sees on the whole batch.
"""

from __future__ import annotations

import os
import sys

import torch

torch.set_num_threads(1)

from torch_aae import TrainConfig, UnsupervisedAAE, fit, load_dataset, optim

GLOBAL_BATCH = 40


class ShardedFixedPrior:
    dim = 2

    def __init__(self):
        self.calls = 0

    def sample(self, n, labels=None, device=None):
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        g = torch.Generator().manual_seed(self.calls)
        self.calls += 1
        block = 5 * torch.randn(GLOBAL_BATCH, self.dim, generator=g)
        return block.tensor_split(world)[rank].to(device)


def main(data_dir: str, out: str, precision: str = "fp32", init_scale: str = "0", inf_at: str = "0") -> None:
    """precision fp16 takes a loss scaler that starts at `init_scale`; `inf_at` k > 0 makes the
    last rank's k-th reconstruction gradient of the decoder infinite, on that rank alone."""
    scalers = []
    if precision == "fp16":

        def scaler_at(precision, device):
            scalers.append(torch.amp.GradScaler("cpu", init_scale=float(init_scale)))
            return scalers[-1]

        optim.grad_scaler = scaler_at
    data = load_dataset("mnist", data_dir=data_dir, subset=400)
    torch.manual_seed(0)
    model = UnsupervisedAAE(z_dim=2, hidden=32, disc_hidden=32, dropout=0.0, prior=ShardedFixedPrior())
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    if int(inf_at) > 0 and rank == world - 1:
        calls = []

        def poison(grad):  # the decoder's weights get gradients in the reconstruction phase only
            calls.append(1)
            return grad * float("inf") if len(calls) == int(inf_at) else grad

        next(model.decoder.parameters()).register_hook(poison)
    train = TrainConfig(epochs=2, batch_size=GLOBAL_BATCH, device="cpu", lr_recon=1e-3, lr_reg=2e-4,
                        beta1_reg=0.5, log_every=5, precision=precision)  # fmt: skip
    summary = fit(model, data, train, progress=False)
    scale = scalers[0].get_scale() if scalers else None
    torch.save({"weights": model.state_dict(), "summary": summary, "scale": scale}, f"{out}.rank{rank}")


if __name__ == "__main__":
    main(*sys.argv[1:])
