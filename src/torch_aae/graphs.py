"""The whole training step as one CUDA graph (`--cuda-graphs`).

At batch 100 the networks' matrix products take microseconds on a GPU, and an eager step is
bound by its hundreds of kernel launches (forward, backward and optimizer update of four
phases) and by Python. Capturing the step once and replaying it makes it one launch.

What changes from one step to the next lives in static device buffers that the graph reads:
the batch's indices into the device-resident training set and the variant's step inputs
(`step_inputs`: for the semi-supervised model the labeled batch's indices). The loss sums of the
epoch accumulate inside the graph. Random draws (input noise, dropout, prior samples) are fresh
at every replay: PyTorch's CUDA generator advances its Philox offset per replay. The optimizers
are made capturable, with their learning rates held in device tensors, so that the epoch
schedule (`--lr-step`) changes the rate the graph reads.

The first `WARMUP` steps run eagerly on a side stream (as PyTorch's whole-network capture
recipe asks), as ordinary training steps: they create the optimizer states and the gradients'
allocations; the capture follows and every later full batch is a replay. A batch of another
size (an incomplete last batch) runs eagerly.
"""

from __future__ import annotations

import torch

from .errors import AAEError

# Models whose step is a pure function of device tensors (no host values, no host sync).
GRAPH_MODELS = ("semi-supervised", "clustering", "dim-reduction")
WARMUP = 3


def check(model_kind: str, device: torch.device, train_cfg, distributed: bool = False) -> None:
    """Refuse --cuda-graphs where it cannot work, before anything is trained."""
    if model_kind not in GRAPH_MODELS:  # first: no device makes it work
        raise AAEError(f"--cuda-graphs: the {model_kind} model's step is not captured; it "
                       f"works with {', '.join(GRAPH_MODELS)}")  # fmt: skip
    if device.type != "cuda":
        raise AAEError(f"--cuda-graphs needs a CUDA device, not {device} (pass --device cuda)")
    if train_cfg.optimizer != "adam":
        raise AAEError("--cuda-graphs works with --optimizer adam (capturable), not "
                       f"{train_cfg.optimizer}")  # fmt: skip
    if train_cfg.compile != "off":
        raise AAEError("--cuda-graphs and --compile exclude each other: pick one")
    if train_cfg.precision == "fp16":
        raise AAEError("--cuda-graphs does not capture fp16's loss scaler (not tried on a GPU "
                       "yet); use --precision bf16 with it")  # fmt: skip
    if distributed:
        raise AAEError("--cuda-graphs does not run under torchrun (the gradient all-reduce "
                       "is not captured)")  # fmt: skip


def make_capturable(optimizers: dict, device: torch.device) -> None:
    """Optimizers whose step a graph can capture: learning rate in a device tensor (set in
    place by `train.set_learning_rates`), `capturable` on CUDA."""
    for opt in optimizers.values():
        for group in opt.param_groups:
            group["capturable"] = device.type == "cuda"
            if not isinstance(group["lr"], torch.Tensor):
                group["lr"] = torch.tensor(float(group["lr"]), device=device)


def capture(fn):
    """Capture `fn()` as a CUDA graph; return the graph's replay (which runs it)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def side_stream(device: torch.device):
    """A context that runs work on a side stream, joined back to the current stream at exit
    (the warm-up steps before a capture)."""
    import contextlib

    @contextlib.contextmanager
    def run():
        current, side = torch.cuda.current_stream(device), torch.cuda.Stream(device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            yield
        current.wait_stream(side)

    return run()


class GraphedStep:
    """Calls of `variant.train_step` on batches of `train_x`, replayed from one CUDA graph.

    Args:
        ctx: the variant's step context; its step inputs are replaced by static buffers.
        input_rows: the variant's `step_inputs` for any number of steps, {name: (steps, ...)}:
            the static buffers take the shape and dtype of one row.
    Call with the batch's indices (device tensor) and that step's inputs; the epoch's loss sums
    (device tensors) are in `sums`, started from `start_epoch(initial)`.
    """

    def __init__(self, variant, model, optimizers, train_x, train_y, ctx, batch_size: int,
                 precision: str, input_rows: dict):  # fmt: skip
        self.variant, self.model, self.optimizers = variant, model, optimizers
        self.train_x, self.train_y, self.precision = train_x, train_y, precision
        self.device = train_x.device
        self.batch_size = batch_size
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=self.device)
        self.inputs = {name: torch.zeros(rows.shape[1:], dtype=rows.dtype, device=self.device)
                       for name, rows in input_rows.items()}  # fmt: skip
        self.ctx = {**ctx, **self.inputs}
        self.sums: dict[str, torch.Tensor] = {}
        self._initial: dict = {}
        self.replay = None  # the captured step
        self.eager_steps = 0
        make_capturable(optimizers, self.device)

    def start_epoch(self, initial: dict) -> dict:
        """Set the loss sums to `initial` (a resumed epoch's) or zero; return them."""
        if self.sums:
            for key, buf in self.sums.items():
                buf.copy_(initial[key]) if key in initial else buf.zero_()
        else:
            self._initial = dict(initial)
        return self.sums

    def __call__(self, idx: torch.Tensor, inputs: dict) -> dict:
        for name, value in inputs.items():
            self.inputs[name].copy_(value)
        if len(idx) != self.batch_size:  # an incomplete batch: eagerly, outside the graph
            self._body(idx)
            return self.sums
        self.idx.copy_(idx)
        if self.replay is not None:
            self.replay()
        elif self.eager_steps < WARMUP:
            with side_stream(self.device):
                self._body(self.idx)
            self.eager_steps += 1
        else:
            try:
                self.replay = capture(lambda: self._body(self.idx))
            except RuntimeError as e:
                raise AAEError(f"--cuda-graphs: the {self.model.kind} step could not be "
                               f"captured: {e}") from e  # fmt: skip
            self.replay()  # capturing does not run the step: this replay does
        return self.sums

    def _body(self, idx: torch.Tensor) -> None:
        from .train import autocast

        x = self.train_x[idx]
        y = None if self.train_y is None else self.train_y[idx]
        with autocast(self.device, self.precision):  # its cache off, as a capture needs
            logs = self.variant.train_step(self.model, self.optimizers, x, y, self.ctx, 0)
        if not self.sums:  # first call, eager: the sums' buffer exists before any capture
            self._sum_buffer = torch.tensor([float(self._initial.get(key, 0.0)) for key in logs],
                                            dtype=torch.float32, device=self.device)  # fmt: skip
            self.sums = dict(zip(logs, self._sum_buffer.unbind()))  # views of the one buffer
        # One addition of all the step's values (two kernels, not one per value).
        self._sum_buffer.add_(torch.stack([value.float() for value in logs.values()]))
