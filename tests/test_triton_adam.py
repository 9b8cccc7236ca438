"""The Triton Adam (`--adam-kernel triton`): the update of torch's Adam, the same state, and
refused where it cannot run. On a GPU its kernels run compiled, on CUDA tensors; without one
under Triton's interpreter, on the CPU (conftest sets TRITON_INTERPRET=1). tests/test_cuda.py
runs them in a CUDA graph too."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import subset_of, tiny_semi, tiny_train

from torch_aae import optim, triton_adam
from torch_aae.cli import main
from torch_aae.config import Config, DataConfig, ModelConfig, TrainConfig
from torch_aae.errors import AAEError
from torch_aae.train import fit

needs_triton = pytest.mark.skipif(triton_adam.triton is None, reason="Triton is not installed")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

# Six tensors (two launches of four slots, the second half empty), some longer than one
# program's BLOCK values, one of a single value.
SHAPES = [(3, 1000), (2500,), (1,), (7, 11), (1030,), (4,)]


def _start_and_grads(steps: int):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen).to(DEVICE) for s in SHAPES]
    grads = [[torch.randn(s, generator=gen).to(DEVICE) for s in SHAPES] for _ in range(steps)]
    return start, grads


def _run(make_opt, start, grads, skip=None):
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt = make_opt(params)
    for g in grads:
        for i, (p, gi) in enumerate(zip(params, g)):
            p.grad = None if i == skip else gi.clone()
        opt.step()
    return params, opt


@needs_triton
@pytest.mark.parametrize("betas, lr_tensor", [((0.9, 0.999), False), ((0.5, 0.999), True), ((0.0, 0.999), False)])
def test_the_triton_adam_equals_torchs_adam(betas, lr_tensor):
    start, grads = _start_and_grads(3)

    def lr():  # a device tensor as --cuda-graphs has it (graphs.make_capturable), or a number
        return torch.tensor(2e-3, device=DEVICE) if lr_tensor else 2e-3

    # The parameter without a gradient (index 3) is left alone, its step not counted: as torch's.
    ref, ref_opt = _run(lambda ps: torch.optim.Adam(ps, lr=2e-3, betas=betas), start, grads, skip=3)
    got, opt = _run(lambda ps: triton_adam.TritonAdam(ps, lr=lr(), betas=betas), start, grads, skip=3)
    for r, g in zip(ref, got):
        assert torch.allclose(g, r, rtol=0, atol=1e-6)
    assert torch.equal(got[3], start[3])
    assert float(opt.state[got[0]]["step"]) == 3 and got[3] not in opt.state
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(opt.state[got[1]][key], ref_opt.state[ref[1]][key], rtol=0, atol=1e-6)
    assert (got[0] - start[0]).abs().max() > 1e-3  # it moved


@needs_triton
@pytest.mark.parametrize("first, then", [("torch", "triton"), ("triton", "torch")])
def test_an_adam_state_moves_between_the_kernels(first, then):
    """A checkpoint's optimizer state, saved with one kernel, continues with the other."""
    start, grads = _start_and_grads(4)
    make = {"torch": lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.5, 0.999)),
            "triton": lambda ps: triton_adam.TritonAdam(ps, lr=1e-3, betas=(0.5, 0.999))}  # fmt: skip
    ref, _ = _run(make["torch"], start, grads)
    params, opt = _run(make[first], start, grads[:2])
    saved = opt.state_dict()
    after = make[then](params)
    after.load_state_dict(saved)
    for g in grads[2:]:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        after.step()
    for r, p in zip(ref, params):
        assert torch.allclose(p, r, rtol=0, atol=1e-6)


def test_optim_make_builds_the_kernel_the_config_names():
    params = [torch.nn.Parameter(torch.zeros(3))]
    assert type(optim.make(params, 1e-3, TrainConfig())) is torch.optim.Adam
    if triton_adam.triton is not None:
        assert isinstance(optim.make(params, 1e-3, TrainConfig(adam_kernel="triton")), triton_adam.TritonAdam)


def test_an_unknown_adam_kernel_is_refused():
    with pytest.raises(AAEError, match=r"--adam-kernel 'cuda': choose torch, triton"):
        TrainConfig(adam_kernel="cuda")


def test_the_triton_kernel_is_refused_with_sgd_on_a_cpu_and_without_triton(monkeypatch):
    with pytest.raises(AAEError, match="--adam-kernel triton is an Adam update; --optimizer is sgd"):
        optim.check_kernel(TrainConfig(adam_kernel="triton", optimizer="sgd"), torch.device("cpu"))
    optim.check_kernel(TrainConfig(), torch.device("cpu"))  # torch's kernel: anywhere
    monkeypatch.setattr(triton_adam, "triton", object())  # installed (or not: no kernel runs here)
    monkeypatch.setattr(triton_adam, "INTERPRETED", False)  # (a CPU without the interpreter)
    with pytest.raises(AAEError, match=r"run on a CUDA device, not cpu .*TRITON_INTERPRET=1"):
        optim.check_kernel(TrainConfig(adam_kernel="triton"), torch.device("cpu"))
    assert triton_adam.unavailable(torch.device("cuda")) is None
    monkeypatch.setattr(triton_adam, "triton", None)
    with pytest.raises(AAEError, match="Triton is not installed"):
        optim.check_kernel(TrainConfig(adam_kernel="triton"), torch.device("cuda"))


def test_the_cli_refuses_the_triton_kernel_on_a_cpu_before_the_run_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(triton_adam, "INTERPRETED", False)  # (a CPU without the interpreter)
    out = tmp_path / "run"
    code = main(["train", "semi-supervised", "--labels", "100", "--device", "cpu", "--adam-kernel", "triton",
                 "--epochs", "1", "--out", str(out), "--no-progress"])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "--adam-kernel triton" in err and not out.exists()


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU test (Triton's interpreter); on a GPU "
                    "tests/test_cuda.py trains with the Triton Adam")  # fmt: skip
def test_training_with_the_triton_adam_equals_training_with_torchs_and_resumes_across(mnist, tmp_path):
    """Two epochs of the semi-supervised model with either kernel: the same losses (the same
    random draws; only the update's rounding differs); and one epoch with torch's kernel resumed
    for the second with Triton's (--adam-kernel may change on resume) equals both."""
    data = subset_of(mnist, 200, 100)
    config = lambda train: Config("semi-supervised", DataConfig(labels="20"), ModelConfig(z_dim=2), train)  # noqa: E731
    rows = {}
    for name, kernel, epochs in [("torch", "torch", 2), ("triton", "triton", 2), ("mixed", "torch", 1)]:
        train = tiny_train(epochs=epochs, batch_size=50, input_noise=0.3, adam_kernel=kernel)
        fit(tiny_semi(disc_hidden=16), data, train, out=tmp_path / name, config=config(train), progress=False)
        if name == "mixed":
            train = tiny_train(epochs=2, batch_size=50, input_noise=0.3, adam_kernel="triton")
            fit(tiny_semi(disc_hidden=16), data, train, out=tmp_path / name, config=config(train), progress=False, resume=True)
        rows[name] = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").open()]
    saved = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert saved["train"]["adam_kernel"] == "triton"  # the resumed run's setting is recorded
    for name in ("triton", "mixed"):
        assert len(rows[name]) == 2
        for got, ref in zip(rows[name], rows["torch"]):
            for key in ("loss/recon", "loss/sup", "loss/disc_gauss", "loss/gen"):
                assert got[key] == pytest.approx(ref[key], rel=1e-4), (name, key)
    assert rows["torch"][1]["loss/recon"] < rows["torch"][0]["loss/recon"]  # it learns


@needs_triton
def test_fp16s_loss_scaler_steps_the_triton_adam_as_torchs_fused_adam():
    """Under a GradScaler (--precision fp16) each kernel takes the scale and the inf flag from
    the scaler, as torch's fused Adam does (no host sync): it unscales the gradients, and a
    step with an inf gradient updates nothing and is not counted."""
    start, grads = _start_and_grads(4)
    grads[2][1][7] = float("inf")  # the third step overflows: skipped, the scale halves
    results = []
    for make in (lambda ps: torch.optim.Adam(ps, lr=1e-3, betas=(0.5, 0.999), fused=True),
                 lambda ps: triton_adam.TritonAdam(ps, lr=1e-3, betas=(0.5, 0.999))):  # fmt: skip
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt, scaler = make(params), torch.amp.GradScaler(DEVICE.type, init_scale=2.0**10)
        after = []
        for g in grads:
            factor = scaler.scale(torch.tensor(1.0, device=DEVICE))  # what a scaled loss's backward pass multiplies by
            for p, gi in zip(params, g):
                p.grad = gi * factor
            scaler.step(opt)
            scaler.update()
            after.append([p.detach().clone() for p in params])
        if isinstance(opt, triton_adam.TritonAdam):  # unscaled inside the kernel, not in place
            assert torch.equal(params[0].grad, grads[-1][0] * factor)  # by the scaler (a host sync)
        results.append((after, float(opt.state[params[0]]["step"]), scaler.get_scale()))
    (ref, ref_steps, ref_scale), (got, steps, scale) = results
    assert steps == ref_steps == 3 and scale == ref_scale == 2.0**9
    for a, b in zip(got, ref):
        for p, r in zip(a, b):
            assert torch.allclose(p, r, rtol=0, atol=1e-6)
    assert all(torch.equal(p, q) for p, q in zip(got[2], got[1]))  # the skipped step


@needs_triton
def test_an_overflow_found_after_unscale_skips_the_triton_update():
    """After `scaler.unscale_(opt)` the scaler hands the step its overflow flag but no scale (the
    gradients are unscaled already): an inf gradient must still skip the update, as with torch's
    fused Adam."""
    start, grads = _start_and_grads(1)
    grads[0][1][3] = float("inf")
    params = [torch.nn.Parameter(t.clone()) for t in start]
    opt, scaler = triton_adam.TritonAdam(params, lr=1e-3), torch.amp.GradScaler(DEVICE.type, init_scale=4.0)
    factor = scaler.scale(torch.tensor(1.0, device=DEVICE))
    for p, g in zip(params, grads[0]):
        p.grad = g * factor
    scaler.unscale_(opt)
    scaler.step(opt)
    assert all(torch.equal(p, t) for p, t in zip(params, start))
    assert float(opt.state[params[0]]["step"]) == 0


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CPU test (Triton's interpreter)")
def test_a_triton_run_resumed_with_torchs_kernel_gets_the_fused_kernel(mnist, tmp_path, monkeypatch):
    """A checkpoint of a --adam-kernel triton run records fused None; resumed with torch's kernel,
    the optimizers stay fused (loading a state dict replaces its groups' settings)."""
    built = []
    make = optim.adam
    monkeypatch.setattr(optim, "adam", lambda *args, **kw: built.append(make(*args, **kw)) or built[-1])
    data = subset_of(mnist, 100, 50)
    for kernel, epochs, resume in (("triton", 1, False), ("torch", 2, True)):
        train = tiny_train(epochs=epochs, batch_size=50, adam_kernel=kernel)
        config = Config("semi-supervised", DataConfig(labels="20"), ModelConfig(z_dim=2), train)
        fit(tiny_semi(disc_hidden=16), data, train, out=tmp_path / "run", config=config, progress=False, resume=resume)
    resumed = built[4:]
    assert len(resumed) == 4 and all(type(o) is torch.optim.Adam for o in resumed)
    assert all(g["fused"] for o in resumed for g in o.param_groups)
