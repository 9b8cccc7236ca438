"""A run folder after a crash at an awkward moment, a divergence the losses did not show, or a
file lost or damaged: what is refused, what a resume brings level, what stays one-line."""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings

import pytest
import torch

from conftest import REPO_ROOT, tiny_model, tiny_train
from torch_aae import cli, load_dataset, unsupervised
from torch_aae.api import evaluate_run, load_run_config
from torch_aae.errors import AAEError, AAEWarning
from torch_aae.logger import RunLogger, read_history
from torch_aae.train import fit


@pytest.fixture(scope="module")
def data():
    # As load_dataset makes it (evaluate_run loads it again); batch 50: 4 steps per epoch
    return load_dataset("mnist", REPO_ROOT / "data", subset=200)


def _fit(data, run, epochs, resume=False, **train):
    model = tiny_model(seed=3)
    return fit(model, data, tiny_train(epochs=epochs, seed=3, **train), out=run, resume=resume, progress=False)


def _lines(path):
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_weights_made_nan_by_the_last_update_are_never_checkpointed_or_scored(data, tmp_path, monkeypatch):
    step = unsupervised.train_step

    def poisoned(model, opt, x, y=None, ctx=None, step_index=0):
        logs = step(model, opt, x, y, ctx, step_index)  # finite losses, computed before this:
        if step_index == 3:  # the epoch's last step
            with torch.no_grad():
                model.decoder.net[0].weight.fill_(math.nan)
        return logs

    monkeypatch.setattr(unsupervised, "train_step", poisoned)
    run = tmp_path / "run"
    with pytest.raises(AAEError, match=r"training diverged: non-finite weights in decoder\.net\.0\.weight"):
        _fit(data, run, epochs=1)
    assert not (run / "checkpoints" / "latest.pt").exists() and not (run / "summary.json").exists()
    with pytest.raises(AAEError, match="non-finite weights"):  # without a run folder too
        fit(tiny_model(seed=3), data, tiny_train(epochs=1), progress=False)


def test_a_resume_brings_the_files_written_after_a_checkpoint_level_with_it(data, tmp_path):
    run = tmp_path / "run"
    _fit(data, run, epochs=2, keep_checkpoints=True)
    # As if killed after latest.pt was written and before the rest: an old latest.json, one
    # epoch of metrics, no kept copy of the last epoch.
    meta = run / "checkpoints" / "latest.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "step": 4, "epoch": 1}))
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().splitlines()[0] + "\n")
    (run / "checkpoints" / "epoch-0002.pt").unlink()
    _fit(data, run, epochs=2, resume=True, keep_checkpoints=True)  # evaluates only
    assert (json.loads(meta.read_text())["step"], json.loads(meta.read_text())["epoch"]) == (8, 2)
    assert [row["epoch"] for row in _lines(run / "metrics.jsonl")] == [1, 2]
    assert (run / "checkpoints" / "epoch-0002.pt").is_file()


def test_evaluate_names_the_step_of_the_checkpoint_it_scored_not_that_of_latest_json(data, tmp_path):
    run = tmp_path / "run"
    _fit(data, run, epochs=2)
    meta = run / "checkpoints" / "latest.json"  # as if killed between latest.pt and latest.json
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "step": 4, "epoch": 1}))
    assert evaluate_run(run)["checkpoint_step"] == 8


def test_a_lost_config_json_is_taken_from_the_checkpoint_and_still_guards_the_resume(data, tmp_path):
    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    recorded = json.loads((run / "config.json").read_text())
    (run / "config.json").unlink()
    assert load_run_config(run).to_dict() == recorded  # evaluate, plot and report read it
    with pytest.raises(AAEError, match="the run was made with train.lr_recon=0.001, not 0.5"):
        _fit(data, run, epochs=2, resume=True, lr_recon=0.5)
    _fit(data, run, epochs=2, resume=True)
    assert json.loads((run / "config.json").read_text())["train"]["epochs"] == 2
    # logged against the checkpoint's settings: every setting was "changed" from none before
    assert _lines(run / "resumes.jsonl")[-1]["changed"] == {"train.epochs": [1, 2]}


def test_a_config_json_edited_against_its_checkpoint_is_refused_on_resume(data, tmp_path):
    """A resume takes its settings from config.json (the command line's `--resume`, or fit without
    train=): edited by hand, it resumed at batch 20 where the run trained at 50, and with a
    learning rate that the optimizer's saved state then overrode; a missing section read as the
    defaults. resumes.jsonl logged no change."""
    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    recorded = json.loads((run / "config.json").read_text())

    def resume_with(config):
        (run / "config.json").write_text(json.dumps(config))
        return fit(tiny_model(seed=3), data, out=run, resume=True, progress=False)

    with pytest.raises(AAEError, match=r"config.json disagrees with latest.pt, the run's checkpoint: "
                                       r"train.batch_size 20 there, 50 in the checkpoint; train.lr_recon "
                                       r"0.01 there, 0.001 in the checkpoint; one of them was edited"):  # fmt: skip
        resume_with({**recorded, "train": {**recorded["train"], "batch_size": 20, "lr_recon": 0.01}})
    with pytest.raises(AAEError, match=r"train.batch_size 100 there, 50 in the checkpoint; .* \(and \d+ more\)"):
        resume_with({k: v for k, v in recorded.items() if k != "train"})
    assert not (run / "resumes.jsonl").exists()  # refused before anything was written
    # What a resume may change, config.json may hold (a resume stopped before its checkpoint).
    summary = resume_with({**recorded, "train": {**recorded["train"], "epochs": 2}})
    assert summary["epochs"] == 2


def test_a_checkpoint_of_another_run_copied_in_is_refused_by_what_reads_the_run(data, tmp_path, capsys):
    """`aae evaluate`, `plot`, `encode` and `sample` scored and drew a checkpoint copied in from
    another run (another --hidden here; another model kind alike) on this run's data."""
    run, other = tmp_path / "run", tmp_path / "other"
    _fit(data, run, epochs=1)
    fit(tiny_model(seed=3, hidden=16), data, tiny_train(epochs=1, seed=3), out=other, progress=False)
    shutil.copy(other / "checkpoints" / "latest.pt", run / "checkpoints" / "latest.pt")
    capsys.readouterr()
    message = (f"aae: error: {run / 'config.json'} disagrees with latest.pt, the run's checkpoint: "
               "model.hidden 32 there, 16 in the checkpoint; one of them was edited, replaced or damaged")
    for argv in (["evaluate", str(run)], ["plot", str(run)], ["encode", str(run), "--out", str(tmp_path / "c.npz")],
                 ["sample", str(run), "--out", str(tmp_path / "s.png")]):  # fmt: skip
        assert cli.main(argv) == 1, argv
        assert capsys.readouterr().err.startswith(message), argv
    assert not (run / "eval.json").exists() and not (tmp_path / "c.npz").exists()
    assert cli.main(["sample", str(run / "checkpoints" / "latest.pt"), "--out", str(tmp_path / "s.png")]) == 0  # a file alone


@pytest.mark.parametrize("command, content, message", [
    ("report", "[1]", r"config.json: not a run's config \(a JSON list, not an object\)"),
    ("evaluate", "[1]", r"config.json: config must be a mapping, got list"),
    ("evaluate", '{"model_kind": "unsupervised", "train": {"bogus": 1}}',
     r"config.json: unknown keys in config section 'train': bogus"),
])
def test_a_config_json_that_is_json_but_no_config_is_named(tmp_path, capsys, command, content, message):
    """`aae report` on a config.json holding a list ended in an AttributeError traceback; the
    other commands' errors did not name the file ("unknown keys in config section 'train'")."""
    (tmp_path / "config.json").write_text(content)
    assert cli.main([command, str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"aae: error: {tmp_path}") and re.search(message, err) and err.count("\n") == 1, err


def test_what_reads_only_the_model_passes_over_a_config_json_it_does_not_need(data, tmp_path, capsys):
    """`aae sample` and `aae encode --images` rebuild the model from the checkpoint alone: a
    damaged config.json must not stop them (the check against the checkpoint refused it)."""
    import numpy as np

    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    (run / "config.json").write_text('{"model_kind": "unsup')
    np.savez(tmp_path / "mine.npz", x=data.test_x[:5].numpy())
    assert cli.main(["sample", str(run), "-n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert cli.main(["encode", str(run), "--images", str(tmp_path / "mine.npz"), "--out", str(tmp_path / "c.npz")]) == 0
    assert cli.main(["evaluate", str(run)]) == 1  # which reads the run's data by its config
    assert "config.json: unreadable" in capsys.readouterr().err


def test_a_moved_npz_dataset_may_be_pointed_to_in_config_json(tmp_path):
    """The check of config.json against the checkpoint refused an .npz path edited after the
    file moved; RUN/data.json's digest checks the content."""
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((60, 4, 4)).astype(np.float32), y=np.arange(60) % 3,
             x_test=rng.random((10, 4, 4)).astype(np.float32), y_test=np.arange(10) % 3)  # fmt: skip
    run = tmp_path / "run"
    argv = ["--hidden", "16", "--disc-hidden", "16", "--z-dim", "2", "--batch-size", "20", "--out", str(run)]
    assert cli.main(["train", "unsupervised", "--dataset", str(tmp_path / "d.npz"), "--epochs", "1", *argv]) == 0
    (tmp_path / "moved").mkdir()
    (tmp_path / "d.npz").rename(tmp_path / "moved" / "d.npz")
    config = json.loads((run / "config.json").read_text())
    config["data"]["dataset"] = str(tmp_path / "moved" / "d.npz")
    (run / "config.json").write_text(json.dumps(config))
    assert cli.main(["evaluate", str(run)]) == 0
    assert cli.main(["train", "unsupervised", "--epochs", "2", "--resume", "--out", str(run)]) == 0


def test_a_damaged_metrics_file_is_one_error_that_names_its_line(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": 2, "loss/re')
    with pytest.raises(AAEError, match=r"metrics.jsonl:2: unreadable .*--resume` rewrites"):
        read_history(tmp_path)


def test_plot_draws_what_the_checkpoint_gives_when_metrics_jsonl_is_damaged(data, tmp_path):
    """A truncated metrics.jsonl made `aae plot` refuse every plot, not just losses.png."""
    from torch_aae.api import plot_run

    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss/re')
    for plot in (run / "plots").iterdir():
        plot.unlink()
    with pytest.warns(AAEWarning, match=r"metrics.jsonl:1: unreadable \(Unterminated string starting at: column 14\); "
                                        r".*; losses.png not drawn"):  # fmt: skip
        written = plot_run(run)
    assert written and "losses.png" not in [p.name for p in written]
    assert sorted(p.name for p in (run / "plots").iterdir()) == sorted(p.name for p in written)


def test_evaluate_says_when_the_run_is_unfinished(data, tmp_path, monkeypatch):
    """`aae evaluate` on a stopped run gave its checkpoint's metrics as if they were the run's."""
    import os
    import signal

    from torch_aae.errors import Interrupted

    step, calls = unsupervised.train_step, []

    def stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # epoch 2, its second step: stops at that step's end
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args, **kwargs)

    monkeypatch.setattr(unsupervised, "train_step", stopped)
    run = tmp_path / "run"
    with pytest.raises(Interrupted):
        _fit(data, run, epochs=2)
    with pytest.warns(AAEWarning, match=r"run: an unfinished run; these are the metrics of its checkpoint after "
                                        r"1 of its 2 epochs and 2 steps \(step 6\)"):  # fmt: skip
        evaluate_run(run)
    monkeypatch.setattr(unsupervised, "train_step", step)
    _fit(data, run, epochs=2, resume=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # finished: no word
        evaluate_run(run)


def test_unwritable_eval_json_warns_and_still_returns_the_metrics(data, tmp_path):
    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    (run / "eval.json").mkdir()  # in the way of the atomic rename, as a read-only folder would be
    with pytest.warns(AAEWarning, match="eval.json not written"):
        metrics = evaluate_run(run, data_dir=None)
    assert 0 < metrics["test_recon_bce"] < 1


def test_a_damaged_eval_json_is_rewritten_by_evaluate_with_a_warning(data, tmp_path):
    """A truncated eval.json made `aae evaluate`, the command that writes it, refuse to run."""
    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    (run / "eval.json").write_text('{"test_recon_bce": 0.2, "parz')
    with pytest.warns(AAEWarning, match=r"eval.json: unreadable \(.*\); rewritten, without the metrics"):
        metrics = evaluate_run(run)
    assert json.loads((run / "eval.json").read_text()) == metrics
    (run / "eval.json").write_text("[1]")  # JSON, but no object: replaced without a word before
    with pytest.warns(AAEWarning, match=r"eval.json: a JSON list, not the object .*; rewritten"):
        assert evaluate_run(run) == metrics


def test_an_os_error_is_one_line(data, tmp_path, capsys):
    run = tmp_path / "run"
    _fit(data, run, epochs=1)
    for plot in (run / "plots").iterdir():
        plot.unlink()
    (run / "plots").rmdir()
    (run / "plots").write_text("a file where the plots go")
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["plot", str(run)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("aae: error: ") and "plots" in err


def test_tensorboard_restarts_at_the_resumed_epoch(tmp_path):
    writers = []

    class Writer:  # SummaryWriter's part that the logger uses (tensorboard is optional)
        def __init__(self, folder, purge_step=None):
            writers.append(purge_step)

        add_scalar = flush = close = lambda *a, **k: None

    logger = RunLogger(tmp_path)
    logger._writer = Writer
    logger.write_epoch([{"epoch": 1}, {"epoch": 2}], tensorboard=False)  # a resume's levelling
    assert writers == []
    logger.write_epoch([{"epoch": 1}, {"epoch": 2}, {"epoch": 3, "loss/recon": 0.5}])
    logger.write_epoch([{"epoch": 1}, {"epoch": 2}, {"epoch": 3}, {"epoch": 4}])
    assert writers == [3]  # one writer, which drops any events of epoch 3 on that a crash left
