"""On a CUDA device (skipped elsewhere): the step makes no host sync, and the CUDA-graph replay
trains as the eager step does. CI has no GPU; benchmarks/gpu_check.sh runs these on one."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import subset_of, tiny_train

from torch_aae import graphs, optim
from torch_aae import semi_supervised as semi
from torch_aae.bench import throughput
from torch_aae.config import Config, DataConfig, ModelConfig
from torch_aae.train import autocast, fit

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def tiny_semi(seed: int = 0, **kw) -> semi.SemiSupervisedAAE:
    torch.manual_seed(seed)
    args = dict(z_dim=2, hidden=64, depth=2, disc_hidden=32, disc_depth=2, dropout=0.2)
    args.update(kw)
    return semi.SemiSupervisedAAE(784, (28, 28), 10, **args)


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "tf32"])
@pytest.mark.parametrize("augment", [(0.0, 0.0, 0.0, 0.0), (25.0, 0.15, 3.0, 0.0), (25.0, 0.15, 3.0, 34.0)])
@pytest.mark.parametrize("faster", [False, True])  # --adam-kernel triton --paired-discriminators
def test_the_semi_supervised_step_makes_no_host_sync(mnist, precision, augment, faster):
    dev = torch.device("cuda")
    data = subset_of(mnist, 500, 10)
    model = tiny_semi(z_dim=10).to(dev)
    train = tiny_train(device="cuda", input_noise=0.3, label_rotate=augment[0],
                       label_scale=augment[1], label_shift=augment[2], label_elastic=augment[3],
                       adam_kernel="triton" if faster else "torch", paired_discriminators=faster)  # fmt: skip
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=10), train)
    opt = semi.make_optimizers(model, train)
    scaler = optim.grad_scaler(precision, dev)  # fp16: its loss scaling must not sync either
    ctx = semi.setup(model, data, config, dev, None)
    rows = semi.step_inputs(ctx, 0, 4)["labeled_idx"].to(dev)
    x = data.train_x.to(dev)
    for step in range(4):
        ctx["labeled_idx"] = rows[step]
        # The first step creates the optimizer states; from the second on, any sync raises.
        torch.cuda.set_sync_debug_mode("error" if step else "default")
        try:
            with autocast(dev, precision), optim.loss_scaling(scaler):
                logs = semi.train_step(model, opt, x[step * 50:(step + 1) * 50], None, ctx, step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v) for v in logs.values())


def test_the_unsupervised_step_makes_no_host_sync(mnist):
    from torch_aae import unsupervised
    from torch_aae.unsupervised import UnsupervisedAAE

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = UnsupervisedAAE(784, (28, 28), z_dim=2, hidden=64, disc_hidden=32).to(dev)
    opt = unsupervised.make_optimizers(model, tiny_train(device="cuda"))
    x = subset_of(mnist, 200, 10).train_x.to(dev)
    ctx = {"disc_noise": 0.5, "total_steps": 10}
    for step in range(3):
        torch.cuda.set_sync_debug_mode("error" if step else "default")
        try:
            logs = unsupervised.train_step(model, opt, x[step * 50:(step + 1) * 50], None, ctx, step)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(v) for v in logs.values())


@pytest.mark.parametrize("precision, eval_codes, faster", [("fp32", False, False), ("bf16", False, False),
                                                      ("tf32", False, False), ("tf32", True, False),
                                                      ("tf32", False, True), ("bf16", False, True)])  # fmt: skip
def test_graphed_training_learns_as_eager_training(mnist, tmp_path, precision, eval_codes, faster):
    data = subset_of(mnist, 2000, 500)
    results = {}
    for graphed in (False, True):  # (faster: both with the Triton Adam and paired discriminators)
        train = tiny_train(device="cuda", epochs=3, batch_size=50, input_noise=0.3, lr_step=2,
                           precision=precision, cuda_graphs=graphed, adv_eval_codes=eval_codes,
                           adam_kernel="triton" if faster else "torch", paired_discriminators=faster)  # fmt: skip
        config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=2), train)
        out = tmp_path / f"graphed-{graphed}"
        summary = fit(tiny_semi(), data, train, out=out, config=config, progress=False)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").open()]
        results[graphed] = summary, rows
    (eager, eager_rows), (graph, graph_rows) = results[False], results[True]
    # Other random draws (the replay's Philox offsets), so not the same numbers: the same
    # learning, within what two seeds differ by.
    assert graph_rows[-1]["loss/recon"] == pytest.approx(eager_rows[-1]["loss/recon"], rel=0.1)
    assert graph_rows[-1]["loss/recon"] < 0.8 * graph_rows[0]["loss/recon"]
    assert graph["test_error"] < 0.6 and abs(graph["test_error"] - eager["test_error"]) < 0.15


def test_graph_replays_read_each_steps_batch(mnist):
    """With dropout and noise off and the learning rates at 0, a replay's reconstruction loss is
    the eager one of the batch it was given: the graph reads the batch buffer, not the batch
    it was captured with."""
    import torch.nn.functional as F

    dev = torch.device("cuda")
    data = subset_of(mnist, 400, 10)
    model = tiny_semi(dropout=0.0).to(dev)
    train = tiny_train(device="cuda")
    config = Config("semi-supervised", DataConfig(labels="100"), ModelConfig(z_dim=2), train)
    opt = semi.make_optimizers(model, train)
    ctx = semi.setup(model, data, config, dev, None)
    rows = semi.step_inputs(ctx, 0, 12)["labeled_idx"].to(dev)
    x = data.train_x.to(dev)
    step = graphs.GraphedStep(semi, model, opt, x, None, ctx, 50, "fp32", {"labeled_idx": rows})
    batches = torch.arange(400, device=dev).split(50)
    for i in range(graphs.WARMUP + 1):  # eager warm-up, then the capture and its first replay
        step(batches[i], {"labeled_idx": rows[i]})
    assert step.replay is not None
    for o in opt.values():
        for g in o.param_groups:
            g["lr"].fill_(0.0)

    def replayed(batch):
        before = step.sums["loss/recon"].clone()
        step(batch, {"labeled_idx": rows[0]})
        return float(step.sums["loss/recon"] - before)

    def eager(batch):
        with torch.no_grad():
            xb = x[batch]
            return float(F.binary_cross_entropy_with_logits(model.reconstruct_logits(xb), xb))

    for b in (5, 6, 5):
        assert replayed(batches[b]) == pytest.approx(eager(batches[b]), rel=1e-4)
    assert eager(batches[5]) != eager(batches[6])


def test_the_triton_adam_equals_torchs_adam_on_cuda_eager_and_replayed():
    """Five updates of the same parameters by the same gradients: torch's fused Adam (capturable,
    device learning rate, as a graphed run has it), the Triton Adam eagerly with a number as its
    rate, and the Triton Adam captured in a CUDA graph and replayed."""
    from torch_aae.triton_adam import TritonAdam

    dev = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    shapes = [(1000, 784), (1000,), (1,), (10, 1000), (3,), (1000, 1000)]  # 6: two launches
    start = [torch.randn(s, generator=gen) for s in shapes]
    grads = [[torch.randn(s, generator=gen).to(dev) for s in shapes] for _ in range(5)]

    def params():
        return [torch.nn.Parameter(t.clone().to(dev)) for t in start]

    def run(ps, opt, step=None):
        for g in grads:
            for p, gi in zip(ps, g):
                p.grad = gi.clone() if step is None else p.grad.copy_(gi)
            opt.step() if step is None else step()
        return ps

    ref = params()
    fused = torch.optim.Adam(ref, lr=torch.tensor(1e-3, device=dev), betas=(0.5, 0.999), fused=True, capturable=True)
    run(ref, fused)
    eager = params()
    run(eager, TritonAdam(eager, lr=1e-3, betas=(0.5, 0.999)))  # (this compiles the kernel)
    ps = params()
    opt = TritonAdam(ps, lr=1e-3, betas=(0.5, 0.999))
    graphs.make_capturable({"adam": opt}, dev)
    for p in ps:  # the states and gradient buffers exist before the capture
        p.grad = torch.zeros_like(p)
        opt._state(p)
    torch.cuda.synchronize()
    replay = graphs.capture(opt.step)
    replayed = run(ps, opt, step=replay)
    for r, e, g in zip(ref, eager, replayed):
        assert torch.allclose(e, r, rtol=0, atol=1e-6)
        assert torch.allclose(g, r, rtol=0, atol=1e-6)
    assert float(opt.state[ps[0]]["step"]) == 5


def test_throughput_bench_runs_graphed_on_cuda():
    result = throughput("semi-supervised", 100, 20, "cuda", z_dim=10, cuda_graphs=True)
    assert result["device"].startswith("cuda") and result["cuda_graphs"]
    assert result["images_per_second"] > 0 and 0 < result["fraction_of_peak"] < 2


def test_dropout_on_cuda_keeps_units_with_probability_1_minus_p_and_scales_them():
    from torch_aae.networks import Dropout

    p = 0.3
    torch.manual_seed(0)
    x = torch.ones(400, 1000, device="cuda", requires_grad=True)
    y = Dropout(p)(x)
    kept = y != 0
    assert kept.float().mean().item() == pytest.approx(1 - p, abs=0.003)
    assert torch.allclose(y[kept], torch.tensor(1 / (1 - p), device="cuda"))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient = mask / (1 - p)


def test_the_adversarial_losses_on_cuda_equal_the_cpu_ones():
    """CUDA takes the softplus form of the losses (`losses._few_kernels`), the CPU the
    cross-entropy form: the same values and gradients."""
    from torch_aae import losses

    torch.manual_seed(0)
    real, fake = torch.randn(2, 200) * 5
    out = {}
    for dev in ("cpu", "cuda"):
        r, f = real.to(dev).requires_grad_(), fake.to(dev).requires_grad_()
        d, g = losses.discriminator_loss(r, f), losses.generator_loss(f)
        out[dev] = [d.detach(), g.detach(), *torch.autograd.grad(d + 2 * g, [r, f])]
    assert losses._few_kernels(real.cuda()) and not losses._few_kernels(real)
    for a, b in zip(out["cuda"], out["cpu"]):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-5, atol=1e-8)
