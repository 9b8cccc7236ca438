"""The `aae` command line: a few real subprocesses (each costs a Python + torch start), and the
cheaper argument handling in-process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import pytest
import torch

from conftest import PNG_MAGIC, REPO_ROOT, assert_one_line_error, run_cli, tiny_model
from torch_aae import cli
from torch_aae import config as C
from torch_aae.checkpoint import load_checkpoint, save_model
from torch_aae.errors import AAEError, AAEWarning
from torch_aae.train import check_precision

TINY = ("--hidden", "32", "--disc-hidden", "32", "--no-progress")

# ----------------------------------------------------------------------------------------------
# One real training run, then evaluate / sample / plot on it


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    proc = run_cli("train", "unsupervised", "--subset", "300", "--epochs", "1", "--batch-size", "100",
                   *TINY, "--out", run)  # fmt: skip
    return run, proc


def test_train_prints_the_summary_and_writes_the_run(cli_run):
    run, proc = cli_run
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["epochs"] == 1 and 0 < summary["test_recon_bce"] < 1
    assert cli._shown(json.loads((run / "summary.json").read_text())) == summary  # printed: 6 digits
    config = C.from_dict(json.loads((run / "config.json").read_text()))
    assert (config.data.subset, config.model.hidden, config.train.epochs) == (300, 32, 1)
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["state"]["step"] == 3  # 300 images, batch 100
    assert "Traceback" not in proc.stderr


def test_evaluate(cli_run):
    run, train = cli_run
    proc = run_cli("evaluate", run)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(proc.stdout)
    assert cli._shown(json.loads((run / "eval.json").read_text())) == metrics
    # The same weights on the same (full) test set as the training summary.
    assert metrics["test_recon_bce"] == pytest.approx(json.loads(train.stdout)["test_recon_bce"], rel=1e-5)
    assert {"prior_mean_abs_max", "prior_std_ratio_min", "prior_std_ratio_max"} <= set(metrics)


def test_sample_and_plot(cli_run, tmp_path, capsys):
    run, _ = cli_run
    out = tmp_path / "x.png"
    proc = run_cli("sample", run, "-n", "16", "--out", out)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == PNG_MAGIC and f"wrote {out}" in proc.stdout
    # an existing file is kept unless --overwrite says otherwise
    out.write_bytes(b"mine")
    assert cli.main(["sample", str(run), "-n", "4", "--out", str(out)]) == 1  # in process: no import to wait for
    assert "exists: give another name, or --overwrite to replace it" in capsys.readouterr().err
    assert out.read_bytes() == b"mine"
    assert cli.main(["sample", str(run), "-n", "4", "--out", str(out), "--overwrite"]) == 0
    assert out.read_bytes()[:8] == PNG_MAGIC
    for png in (run / "plots").iterdir():
        png.unlink()
    proc = run_cli("plot", run)
    assert proc.returncode == 0, proc.stderr
    expected = {"latent.png", "samples.png", "manifold.png", "losses.png"}
    assert {p.name for p in (run / "plots").iterdir()} == expected
    for name in expected:
        assert f"wrote {run / 'plots' / name}" in proc.stdout
        assert (run / "plots" / name).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("train", "unsupervised", "--epochs", "0", *TINY), "--epochs 0: must be positive"),
        (("train", "unsupervised", "--dataset", "nope", *TINY), "unknown dataset 'nope'"),
        (("train", "unsupervised", "--subset", "0", *TINY), "--subset 0: must be positive"),
        (("evaluate", "{tmp}/missing-run"), "missing-run: no such run folder"),
    ],
    ids=["epochs-0", "dataset-nope", "subset-0", "evaluate-missing"],
)
def test_errors_are_one_line(tmp_path, args, fragment):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "train":
        args += ["--out", str(tmp_path / "run")]
    proc = run_cli(*args)
    assert proc.returncode == 1
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "run").exists()  # no run folder left behind by a refused run


def test_resume_with_a_changed_z_dim_is_refused(cli_run):
    run, _ = cli_run
    before = (run / "metrics.jsonl").read_text()
    proc = run_cli("train", "unsupervised", "--subset", "300", "--epochs", "2", *TINY, "--z-dim", "3",
                   "--out", run, "--resume")  # fmt: skip
    assert_one_line_error(proc, "--resume: the run was made with --z-dim 2, not 3")
    assert (run / "metrics.jsonl").read_text() == before


def test_sigkill_then_resume_finishes(tmp_path):
    run = tmp_path / "run"
    args = ["train", "unsupervised", "--subset", "3000", "--hidden", "64", "--disc-hidden", "64",
            "--epochs", "4", "--batch-size", "20", "--checkpoint-every", "10", "--no-progress",
            "--out", str(run)]  # fmt: skip
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "torch_aae", *args], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    ckpt = run / "checkpoints" / "latest.pt"
    meta_path = ckpt.with_suffix(".json")  # written right after latest.pt
    try:
        deadline = time.monotonic() + 90
        while not meta_path.exists():
            assert proc.poll() is None, "training ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    meta = json.loads(meta_path.read_text())
    assert meta["epoch"] < 4 and meta["step"] < 600  # killed mid-training
    assert not (run / "summary.json").exists()
    load_checkpoint(ckpt)  # the checkpoint on disk is whole (atomic write)

    resumed = run_cli(*args, "--resume", timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["epochs"] == 4
    assert json.loads((run / "summary.json").read_text())["epochs"] == 4
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    final = json.loads((run / "checkpoints" / "latest.json").read_text())
    assert (final["epoch"], final["step"]) == (4, 600)


# ----------------------------------------------------------------------------------------------
# In-process: argument handling and error paths that need no real training


def _main_error(capsys, argv) -> str:
    assert cli.main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("aae: error:"), err
    return err[0]


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--resume"], "--branch-from starts a new run from a checkpoint; --resume continues"),
        (["--z-dim", "3"], "--branch-from: the run was made with --z-dim 2, not 3"),
        (["--out", "{run}", "--overwrite"], "the checkpoint is inside --out"),
    ],
    ids=["with-resume", "other-z-dim", "into-its-own-folder"],
)
def test_branch_from_errors(capsys, cli_run, tmp_path, flags, fragment):
    run, _ = cli_run
    before = sorted(p.name for p in run.rglob("*"))
    flags = [f.replace("{run}", str(run)) for f in flags]
    out = [] if "--out" in flags else ["--out", tmp_path / "branch"]
    source = run / "checkpoints" / "latest.pt"
    line = _main_error(capsys, ["train", "unsupervised", "--subset", "300", "--batch-size", "100",
                                *TINY, "--branch-from", source, *out, *flags])  # fmt: skip
    assert fragment in line
    assert sorted(p.name for p in run.rglob("*")) == before and not (tmp_path / "branch").exists()


def test_branch_from_a_folder_asks_for_a_checkpoint_file(capsys, cli_run, tmp_path):
    run, _ = cli_run
    line = _main_error(capsys, ["train", "unsupervised", *TINY, "--branch-from", run,
                                "--out", tmp_path / "branch"])  # fmt: skip
    assert "a folder, not a checkpoint" in line and "epoch-NNNN.pt" in line


def test_branch_from_trains_on_in_a_new_folder(capsys, cli_run, tmp_path):
    run, _ = cli_run
    new = tmp_path / "branch"
    argv = ["train", "unsupervised", "--subset", "300", "--batch-size", "100", *TINY, "--epochs", "2",
            "--branch-from", run / "checkpoints" / "latest.pt", "--out", new]  # fmt: skip
    assert cli.main([str(a) for a in argv]) == 0
    assert json.loads(capsys.readouterr().out)["epochs"] == 2
    rows = [json.loads(x) for x in (new / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert rows[0] == json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert json.loads((new / "config.json").read_text())["train"]["epochs"] == 2


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--dropout", "1"], "--dropout 1.0"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--val-size", "-1"], "--val-size -1"),
        (["--prior", "bogus"], "unknown prior 'bogus'"),
        (["--prior", "mixture", "--z-dim", "3"], "--prior mixture is 2-D: use --z-dim 2, not 3"),
        (["--prior", "gaussian", "--condition-labels", "100"], "--condition-labels needs a prior"),
        (["--resume"], "--resume: no checkpoint at"),
        (["--dataset", "{tmp}/absent.npz"], "no such file"),
    ],
)
def test_train_errors_in_process(capsys, tmp_path, monkeypatch, flags, fragment):
    monkeypatch.chdir(tmp_path)
    flags = [f.replace("{tmp}", str(tmp_path)) for f in flags]
    data_dir = [] if "--dataset" in flags else ["--data-dir", REPO_ROOT / "data"]  # a .npz takes none
    line = _main_error(capsys, ["train", "unsupervised", "--out", tmp_path / "run", *TINY,
                                "--subset", "100", "--epochs", "1", *data_dir, *flags])  # fmt: skip
    assert fragment in line
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sample_errors_in_process(capsys, tmp_path):
    save_model(tiny_model(), tmp_path / "m.pt")
    assert "-n 0: must be in 1..10000" in _main_error(capsys, ["sample", tmp_path / "m.pt", "-n", "0",
                                                             "--out", tmp_path / "x.png"])  # fmt: skip
    assert "no such checkpoint" in _main_error(capsys, ["sample", tmp_path / "nope", "--out", tmp_path / "x.png"])
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("command", ["evaluate", "plot", "report"])
def test_commands_on_a_run_say_the_same_of_a_missing_folder_or_a_file(command, capsys, tmp_path):
    (tmp_path / "file.pt").write_bytes(b"")
    assert _main_error(capsys, [command, tmp_path / "nope"]).endswith("nope: no such run folder")
    assert _main_error(capsys, [command, tmp_path / "file.pt"]).endswith("file.pt: a file; give the run folder that holds it")


def test_evaluate_needs_a_run_folder_not_just_a_checkpoint(capsys, tmp_path):
    save_model(tiny_model(), tmp_path / "run" / "checkpoints" / "latest.pt")
    assert "not a run folder" in _main_error(capsys, ["evaluate", tmp_path / "run"])


@pytest.mark.parametrize(
    "argv", [[], ["train"], ["train", "no-such-model", "--out", "x"], ["train", "unsupervised"],
             ["train", "unsupervised", "--out", "x", "--epochs", "two"], ["sample", "x"]],  # fmt: skip
)
def test_usage_errors_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, but never into the repo
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("aae") and ": error: " in err  # not the usage
    assert err.rstrip().endswith("--help`)")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, prog", [
    (["train", "unsupervised", "--out", "x", "--bogus"], "aae train unsupervised"),
    (["bench", "throughput", "--bogus", "3"], "aae bench throughput"),
    (["classifier", "train", "--bogus"], "aae classifier train"),
    (["download", "--bogus"], "aae download"),
])
def test_an_unknown_flag_points_to_its_commands_help(argv, prog, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: unrecognized arguments: --bogus") and f"(see `{prog} --help`)" in err


def test_version(capsys):
    from torch_aae import __version__

    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"torch-aae {__version__}"


def test_resumed_config_takes_the_saved_run_and_resumable_flags():
    saved = C.Config(model=C.ModelConfig(hidden=32, z_dim=3), train=C.TrainConfig(epochs=2, seed=4))
    # Flags left at their defaults keep the saved values; resumable ones may change.
    given = C.Config(train=C.TrainConfig(epochs=5, device="cpu", checkpoint_every=7))
    out = cli._resumed_config(saved, given)
    assert out.model == saved.model and out.data == saved.data
    assert (out.train.epochs, out.train.device, out.train.checkpoint_every, out.train.seed) == (5, "cpu", 7, 4)
    # Repeating the saved values is fine too.
    assert cli._resumed_config(saved, saved) == saved


@pytest.mark.parametrize(
    "given, fragment",
    [
        (C.Config(model=C.ModelConfig(z_dim=4)), "--z-dim 2, not 4"),
        (C.Config(train=C.TrainConfig(lr_recon=0.5)), f"--lr-recon {C.TrainConfig().lr_recon}, not 0.5"),
        (C.Config(data=C.DataConfig(subset=10)), "--subset None, not 10"),
    ],
)
def test_resumed_config_refuses_other_changes(given, fragment):
    with pytest.raises(AAEError, match="--resume: the run was made with") as err:
        cli._resumed_config(C.Config(), given)
    assert fragment in str(err.value)


def test_cuda_graphs_can_be_switched_off_on_resume():
    saved = C.Config(model_kind="semi-supervised", train=C.TrainConfig(cuda_graphs=True, checkpoint_epochs=5))
    args = cli.build_parser().parse_args(
        ["train", "semi-supervised", "--out", "r", "--no-cuda-graphs", "--checkpoint-epochs", "1"])
    assert args.cuda_graphs is False
    out = cli._resumed_config(saved, cli._config_from_args(args), {"cuda_graphs", "checkpoint_epochs"})
    assert (out.train.cuda_graphs, out.train.checkpoint_epochs) == (False, 1)
    assert cli.build_parser().parse_args(["train", "semi-supervised", "--out", "r"]).cuda_graphs is False


def test_resumed_config_can_set_epochs_to_the_default_value():
    default = C.TrainConfig().epochs
    saved = C.Config(train=C.TrainConfig(epochs=2))
    given = C.Config(train=C.TrainConfig(epochs=default))  # what `--epochs DEFAULT` parses to
    assert cli._resumed_config(saved, given, explicit={"epochs"}).train.epochs == default
    # Without the flag, the saved value stays.
    assert cli._resumed_config(saved, given, explicit=set()).train.epochs == 2


def test_data_paths_are_recorded_absolute_and_data_dir_may_change_on_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = cli.build_parser().parse_args(["train", "unsupervised", "--out", "r", "--dataset", "mine.npz"])
    assert cli._config_from_args(args).data.dataset == str(tmp_path / "mine.npz")
    args = cli.build_parser().parse_args(["train", "unsupervised", "--out", "r", "--data-dir", "~/data"])
    assert cli._config_from_args(args).data.data_dir == os.path.expanduser("~/data")
    args = cli.build_parser().parse_args(["train", "unsupervised", "--out", "r", "--dataset", "mine.npz",
                                          "--data-dir", "~/data"])  # fmt: skip
    with pytest.raises(AAEError, match=r"^--data-dir ~/data: --dataset mine.npz is read from its own path"):
        cli._config_from_args(args)  # it was recorded and never read
    named = cli._config_from_args(cli.build_parser().parse_args(["train", "unsupervised", "--out", "r"])).data
    assert (named.dataset, named.data_dir) == ("mnist", None)  # a name stays a name; no dir: the lookup
    # A run made elsewhere resumes with its files found through another --data-dir.
    saved = C.Config(data=C.DataConfig(data_dir=None))
    moved = cli._resumed_config(saved, C.Config(data=C.DataConfig(data_dir="/elsewhere")), {"data_dir"})
    assert moved.data.data_dir == "/elsewhere"


@pytest.mark.parametrize("kind", ["unsupervised", "supervised", "semi-supervised", "clustering", "dim-reduction"])
def test_a_models_help_lists_the_flags_it_reads_and_only_those(kind, capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", kind, "--help"])
    listed = set(re.findall(r"^  (--[a-z0-9-]+)", capsys.readouterr().out, flags=re.M))
    for name, kinds in C.MODEL_FIELDS.items():
        assert (f"--{name.replace('_', '-')}" in listed) == (kind in kinds), name
    assert {"--epochs", "--z-dim", "--out", "--resume"} <= listed
    # A flag left out of the help is still parsed, so that the model's own error names it.
    args = cli.build_parser().parse_args(["train", kind, "--out", "r", "--view-shift", "2"])
    assert args.view_shift == 2.0


def test_fp16_on_a_cpu_trains_with_a_one_line_warning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPO_ROOT)  # ./data
    with warnings.catch_warnings():  # as outside pytest, which records warnings instead
        warnings.simplefilter("always")
        rc = cli.main(["train", "unsupervised", "--subset", "100", "--epochs", "1", "--batch-size", "50",
                       *TINY, "--precision", "fp16", "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 0 and (tmp_path / "run" / "summary.json").is_file()
    assert "aae: warning: --precision fp16 on a CPU: float16 autocast is for GPUs" in err
    assert "AAEWarning" not in err and "warnings.warn" not in err  # not Python's two-line form
    with pytest.warns(AAEWarning, match="fp16 on a CPU"):  # the library warns; bf16 does not
        check_precision("fp16", "cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_precision("bf16", "cpu")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "clustering", "--lr-sup", "1e-3"], "--lr-sup 0.001: the clustering model has no supervised phase"),
        (["bench", "clustering", "--lr-sup", "1e-3", "--seeds", "1"], "the clustering model has no supervised phase"),
        (["bench", "parzen", "--prior-components", "10", "--seeds", "1"], "the gaussian prior does not read it"),
    ],
)
def test_a_flag_given_at_its_default_to_a_model_that_does_not_read_it_is_refused(argv, fragment, capsys, tmp_path):
    assert fragment in _main_error(capsys, [*argv, "--out", tmp_path / "out"])
    assert not (tmp_path / "out").exists()


def test_sample_of_one_class(tmp_path, capsys):
    from torch_aae import SemiSupervisedAAE, UnsupervisedAAE, save_model

    torch.manual_seed(0)
    semi = SemiSupervisedAAE(hidden=16, disc_hidden=16)
    seen = []
    decode = semi.decode
    semi.decode = lambda y, z: seen.append(y) or decode(y, z)
    assert semi.sample(4, torch.full((4,), 3)).shape == (4, 784)
    assert seen[0].argmax(1).tolist() == [3, 3, 3, 3] and seen[0].sum().item() == 4
    del semi.decode
    with pytest.raises(AAEError, match=r"labels must be in 0\.\.9"):
        semi.sample(2, torch.tensor([0, 10]))
    save_model(semi, tmp_path / "semi.pt")
    assert cli.main(["sample", str(tmp_path / "semi.pt"), "-n", "4", "--class", "3",
                     "--out", str(tmp_path / "s.png")]) == 0  # fmt: skip
    assert (tmp_path / "s.png").is_file()
    assert cli.main(["sample", str(tmp_path / "semi.pt"), "-n", "4", "--class", "10",
                     "--out", str(tmp_path / "t.png")]) == 1  # fmt: skip
    assert "--class 10: the semi-supervised model has classes 0..9" in capsys.readouterr().err
    save_model(UnsupervisedAAE(z_dim=2, hidden=16, disc_hidden=16), tmp_path / "u.pt")
    assert cli.main(["sample", str(tmp_path / "u.pt"), "-n", "4", "--class", "1",
                     "--out", str(tmp_path / "u.png")]) == 1  # fmt: skip
    assert "a model trained with --condition-labels has" in capsys.readouterr().err
    assert not (tmp_path / "t.png").exists() and not (tmp_path / "u.png").exists()


def test_a_stopped_training_exits_130_as_ctrl_c_does_not_1_as_an_error(tmp_path, monkeypatch, capsys):
    """A training stopped by a signal (checkpointed, to be resumed) printed `aae: error:` and
    exited 1, as a failed one does; a Ctrl-C outside training already exited 130."""
    import torch_aae.train as train_module
    from torch_aae.errors import Interrupted

    def stopped(*args, **kwargs):
        raise Interrupted("interrupted at epoch 1, step 3; continue with `aae train ... --resume`")

    monkeypatch.setattr(train_module, "fit", stopped)
    argv = ["train", "unsupervised", "--data-dir", str(REPO_ROOT / "data"), "--subset", "100",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == "aae: interrupted at epoch 1, step 3; continue with `aae train ... --resume`\n"
    # Under torchrun the main rank says it once; another rank, which names no run folder, is silent.
    monkeypatch.setenv("WORLD_SIZE", "2"), monkeypatch.setenv("RANK", "1")
    assert cli.main(argv) == 130
    assert capsys.readouterr().err == ""


def test_a_custom_prior_run_resumed_from_the_command_line_says_to_resume_it_from_python(tmp_path, capsys):
    """It said "unknown prior 'custom'; choose one of gaussian, ...", as if the flag were wrong."""
    from torch_aae import load_dataset
    from torch_aae.priors import GaussianPrior
    from torch_aae.train import fit

    from conftest import tiny_train

    class Shifted(GaussianPrior):  # a prior class of the user's: recorded as "custom"
        pass

    run = tmp_path / "run"
    data = load_dataset("mnist", REPO_ROOT / "data", subset=100)
    fit(tiny_model(prior=Shifted(2, 1.0)), data, tiny_train(epochs=1), out=run, progress=False)
    capsys.readouterr()
    assert cli.main(["train", "unsupervised", "--out", str(run), "--resume", "--data-dir", str(REPO_ROOT / "data")]) == 1
    assert capsys.readouterr().err == (f"aae: error: {run} trained with a custom prior, a Python object: continue "
                                       "it from Python: fit(load_model(RUN, prior=...), data, out=RUN, resume=True)\n")


def test_sample_class_of_a_cluster_model_names_clusters(tmp_path, capsys):
    from torch_aae.clustering import ClusteringAAE

    save_model(ClusteringAAE(784, (28, 28), n_classes=4, z_dim=2, hidden=32, disc_hidden=32), tmp_path / "m.pt")
    assert cli.main(["sample", str(tmp_path / "m.pt"), "--class", "7", "--out", str(tmp_path / "s.png")]) == 1
    assert capsys.readouterr().err == "aae: error: --class 7: the clustering model has clusters 0..3\n"
