"""Adam's update in Triton kernels (`--adam-kernel triton`): the same update as torch's Adam, at
the GPU's memory rate.

The kernels of one semi-supervised step on an H200 (`benchmarks/gpu_kernels.py`) spent 296 of
their 1,064 us in torch's fused Adam (`docs/results.md`, "On a GPU"). That kernel hands each
thread block a chunk of 65,536 values, so the model's ~9M updated values make only ~140 blocks
for the card's 132 SMs: captured in a graph on an H100, its four updates moved their bytes at
1.4 TB/s, these kernels' at 2.2 TB/s. Here each program updates `BLOCK` (1,024) values, and one
launch updates up to `GROUP` tensors: thousands of programs per launch, two to four launches per
optimizer.

The state is torch's Adam's (`step`, `exp_avg`, `exp_avg_sq`; the step a float32 tensor on the
parameters' device), so checkpoints move between the two kernels either way. The learning rate
may be a number or a device tensor (`graphs.make_capturable`), and the step makes no host sync,
so a CUDA graph can capture it. No weight decay, amsgrad or maximize (the library uses none).
Under a GradScaler (fp16) the kernels unscale the gradients as they read them and skip the
update after an overflow, as torch's fused Adam does; unlike it, they leave `.grad` scaled.

Triton compiles for CUDA devices; on a CPU its interpreter (`TRITON_INTERPRET=1`, read when this
module is first imported) runs the kernels slowly in numpy, for the tests.
"""

from __future__ import annotations

import math
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # the CPU wheel of torch comes without Triton
    triton = None

GROUP = 4  # tensors per launch
BLOCK = 1024  # values per program


# Whether Triton's interpreter runs the kernels: TRITON_INTERPRET=1 when this module was imported,
# which is when the kernels were built (for the interpreter, or for compilation).
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def unavailable(device: torch.device) -> str | None:
    """Why the Triton kernels cannot update parameters on `device`; None if they can."""
    if triton is None:
        return "Triton is not installed (it comes with torch's CUDA builds; or pip install triton)"
    if device.type != "cuda" and not INTERPRETED:
        return (f"Triton kernels run on a CUDA device, not {device} (on a CPU only under Triton's "
                "interpreter, TRITON_INTERPRET=1, which is for tests: slow)")  # fmt: skip
    return None


if triton is not None:

    @triton.jit
    def _update_block(p_ptr, g_ptr, m_ptr, v_ptr, step_ptr, n, block, lr, beta1, beta2, log_beta1,
                      log_beta2, eps, scale_ptr, found_ptr, SCALE: tl.constexpr, FOUND: tl.constexpr,
                      BLOCK: tl.constexpr):  # fmt: skip
        """Adam on values block*BLOCK .. of one tensor, as torch's (capturable) Adam computes it.
        A GradScaler's (fp16), as torch's fused Adam takes them: SCALE, the gradients come
        multiplied by *scale_ptr and are divided by it; FOUND, nothing is updated where
        *found_ptr is not 0 (an inf or NaN among the gradients)."""
        offs = block * BLOCK + tl.arange(0, BLOCK)
        if FOUND:  # an inf or NaN: no value is updated
            mask = offs < tl.where(tl.load(found_ptr) == 0, n, 0)
        else:
            mask = offs < n
        step = tl.load(step_ptr)  # already counted this step, as in torch's Adam
        g = tl.load(g_ptr + offs, mask=mask)
        if SCALE:
            g = g / tl.load(scale_ptr)
        m = tl.load(m_ptr + offs, mask=mask)
        m = m + (1 - beta1) * (g - m)  # lerp, as torch
        v = beta2 * tl.load(v_ptr + offs, mask=mask) + (1 - beta2) * g * g
        bias1 = 1 - tl.exp(step * log_beta1)  # 1 - beta1 ** step (beta1 = 0: 1)
        bias2 = 1 - tl.exp(step * log_beta2)
        denom = tl.sqrt(v) / tl.sqrt(bias2) + eps
        p = tl.load(p_ptr + offs, mask=mask) - (lr / bias1) * m / denom
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(p_ptr + offs, p, mask=mask)

    @triton.jit
    def _update_group(p0, g0, m0, v0, s0, n0, e0, p1, g1, m1, v1, s1, n1, e1,
                      p2, g2, m2, v2, s2, n2, e2, p3, g3, m3, v3, s3, n3,
                      lr_ptr, beta1, beta2, log_beta1, log_beta2, eps, scale_ptr, found_ptr,
                      SCALE: tl.constexpr, FOUND: tl.constexpr, BLOCK: tl.constexpr):  # fmt: skip
        """Up to four tensors in one launch: programs 0 .. e0-1 update the first, e0 .. e1-1 the
        second, and so on (e: each tensor's last program + 1; an unused slot has no programs)."""
        pid = tl.program_id(0)
        lr = tl.load(lr_ptr)
        if pid < e0:
            _update_block(p0, g0, m0, v0, s0, n0, pid, lr, beta1, beta2, log_beta1, log_beta2, eps,
                          scale_ptr, found_ptr, SCALE, FOUND,
                          BLOCK)
        elif pid < e1:
            _update_block(p1, g1, m1, v1, s1, n1, pid - e0, lr, beta1, beta2, log_beta1, log_beta2, eps,
                          scale_ptr, found_ptr, SCALE, FOUND,
                          BLOCK)
        elif pid < e2:
            _update_block(p2, g2, m2, v2, s2, n2, pid - e1, lr, beta1, beta2, log_beta1, log_beta2, eps,
                          scale_ptr, found_ptr, SCALE, FOUND,
                          BLOCK)
        else:
            _update_block(p3, g3, m3, v3, s3, n3, pid - e2, lr, beta1, beta2, log_beta1, log_beta2, eps,
                          scale_ptr, found_ptr, SCALE, FOUND,
                          BLOCK)


class TritonAdam(torch.optim.Adam):
    """torch.optim.Adam whose step runs `_update_group` (see the module's docstring)."""

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=betas, eps=eps)  # its state dict: a plain Adam's
        self._lr_buffers: dict = {}  # (group, device) -> a device tensor of a number rate
        # A GradScaler (fp16) hands the step its scale and inf flag as the attributes grad_scale
        # and found_inf, as it does for torch's fused Adam: no host sync.
        self._step_supports_amp_scaling = True

    @torch.no_grad()
    def step(self, closure=None):
        if closure is not None:
            raise ValueError("TritonAdam.step takes no closure")
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            device = params[0].device
            if any(p.device != device for p in params):
                raise RuntimeError("TritonAdam: a parameter group's parameters are on several devices")
            reason = unavailable(device)
            if reason is not None:
                raise RuntimeError(f"TritonAdam: {reason}")
            states = [self._state(p) for p in params]
            steps = [s["step"] for s in states]
            torch._foreach_add_(steps, 1.0)
            scale, found = getattr(self, "grad_scale", None), getattr(self, "found_inf", None)
            lr = group["lr"]
            if not isinstance(lr, torch.Tensor):  # the kernel reads it from device memory
                lr = self._lr_buffer(group, device).fill_(float(lr))  # no host sync
            elif lr.device != device:
                lr = lr.to(device, torch.float32)
            beta1, beta2 = group["betas"]
            for first in range(0, len(params), GROUP):
                self._launch(params[first : first + GROUP], states[first : first + GROUP], lr,
                             float(beta1), float(beta2), float(group["eps"]), scale, found)  # fmt: skip
            if found is not None:  # a skipped update does not count, as in torch's fused Adam
                torch._foreach_sub_(steps, [found] * len(steps))
        return None

    def _lr_buffer(self, group: dict, device: torch.device) -> torch.Tensor:
        """A device tensor for a group whose rate is a number (an eager run's)."""
        key = (id(group), device)
        if key not in self._lr_buffers:
            self._lr_buffers[key] = torch.zeros((), dtype=torch.float32, device=device)
        return self._lr_buffers[key]

    def _state(self, p: torch.Tensor) -> dict:
        if p.grad.is_sparse or p.dtype != torch.float32 or not p.is_contiguous():
            raise RuntimeError("TritonAdam updates dense, contiguous float32 parameters only")
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.contiguous_format)
        elif state["step"].device != p.device or state["step"].dtype != torch.float32:
            state["step"] = state["step"].to(p.device, torch.float32)  # as a loaded plain Adam's
        return state

    @staticmethod
    def _launch(params, states, lr, beta1, beta2, eps, scale=None, found=None) -> None:
        args, end = [], 0
        for i in range(GROUP):
            j = min(i, len(params) - 1)  # an unused slot repeats the last tensor, with no programs
            p, s = params[j], states[j]
            n = p.numel() if i < len(params) else 0
            end += triton.cdiv(n, BLOCK)
            args += [p, p.grad.contiguous(), s["exp_avg"], s["exp_avg_sq"], s["step"], n]
            if i < GROUP - 1:  # the tensor's last program + 1 (the last slot's is the grid's size)
                args.append(end)
        logs = [math.log(b) if b > 0 else -math.inf for b in (beta1, beta2)]  # beta ** step = exp(step log beta)
        _update_group[(end,)](*args, lr, beta1, beta2, *logs, eps, lr if scale is None else scale,
                              lr if found is None else found, SCALE=scale is not None,
                              FOUND=found is not None, BLOCK=BLOCK)  # fmt: skip
