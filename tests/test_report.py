"""`aae report`: one self-contained HTML file for a finished run, checked in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import PNG_MAGIC, subset_of, tiny_model, tiny_train
from torch_aae import cli
from torch_aae.errors import AAEError
from torch_aae.report import _table, render_report, write_report
from torch_aae.train import fit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run(tmp_path_factory, mnist):
    """A finished tiny run (2 epochs on 300 MNIST images) with an eval.json holding a histogram."""
    run = tmp_path_factory.mktemp("report") / "run"
    fit(tiny_model(), subset_of(mnist, 300, 100), tiny_train(epochs=2), out=run, progress=False)
    evaluation = {"test_recon_bce": 0.2, "parzen_ll": 123.4, "parzen_se": 2.0,
                  **{f"sample_class_{k}": 0.1 for k in range(10)}}  # fmt: skip
    (run / "eval.json").write_text(json.dumps(evaluation))
    return run


class _Images(HTMLParser):
    """Collects the src of every <img>."""

    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def embedded_pngs(text: str) -> list[bytes]:
    parser = _Images()
    parser.feed(text)
    prefix = "data:image/png;base64,"
    assert all(src.startswith(prefix) for src in parser.srcs), "every image is embedded"
    return [base64.b64decode(src[len(prefix) :], validate=True) for src in parser.srcs]


def test_report_holds_config_metrics_curves_and_every_plot(run, capsys):
    assert cli.main(["report", str(run)]) == 0
    assert str(run / "report.html") in capsys.readouterr().out
    text = (run / "report.html").read_text()
    pngs = embedded_pngs(text)
    plots = sorted((run / "plots").glob("*.png"))
    assert len(plots) >= 3 and (run / "plots" / "losses.png") in plots
    # every plot byte for byte but losses.png (the curves, by family), plus the curves of each
    # key and the class histogram
    shown = [p for p in plots if p.name != "losses.png"]
    assert [p.read_bytes() in pngs for p in shown] == [True] * len(shown)
    assert (run / "plots" / "losses.png").read_bytes() not in pngs
    assert len(pngs) == len(shown) + 2 and all(png.startswith(PNG_MAGIC) for png in pngs)
    for fragment in ("parzen_ll", "123.4", "test_recon_bce", "loss/recon", "z_dim",
                     "plots/samples.png", "Per-epoch curves"):  # fmt: skip
        assert fragment in text, fragment
    # self-contained: no external resource, no script
    assert not re.search(r"""(src|href)=['"](?!data:)""", text) and "<script" not in text


def test_report_out_flag_and_errors(run, tmp_path):
    out = write_report(run, tmp_path / "sub" / "r.html")
    assert out.is_file() and out.read_text().startswith("<!DOCTYPE html>")
    with pytest.raises(AAEError, match="not a run folder"):
        write_report(tmp_path)
    with pytest.raises(AAEError, match=".html"):
        write_report(run, tmp_path / "r.png")


def test_report_keeps_an_existing_out_file_without_overwrite(run, tmp_path, capsys):
    """`aae report --out FILE` replaced FILE without a word; RUN/report.html, the run's own, is rewritten."""
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    assert cli.main(["report", str(run), "--out", str(mine)]) == 1
    assert capsys.readouterr().err.strip() == (f"aae: error: --out {mine} exists: give another name, "
                                               "or --overwrite to replace it")  # fmt: skip
    assert mine.read_text() == "my notes"
    assert cli.main(["report", str(run), "--out", str(mine), "--overwrite"]) == 0
    assert mine.read_text().startswith("<!DOCTYPE html>")
    for _ in range(2):
        assert cli.main(["report", str(run)]) == 0
    assert cli.main(["report", str(run), "--out", str(run / "report.html")]) == 0  # the default, named
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")


def test_report_names_a_bad_run_before_the_out_file_and_refuses_a_lone_overwrite(run, tmp_path, capsys):
    """`aae report NOSUCH --out existing.html` said "--out exists" before "no such run folder";
    `--overwrite` without `--out` did nothing without a word."""
    mine = tmp_path / "notes.html"
    mine.write_text("my notes")
    assert cli.main(["report", str(tmp_path / "nosuch"), "--out", str(mine)]) == 1
    assert capsys.readouterr().err.strip() == f"aae: error: {tmp_path / 'nosuch'}: no such run folder"
    assert cli.main(["report", str(tmp_path), "--out", str(mine)]) == 1
    assert capsys.readouterr().err.strip() == f"aae: error: {tmp_path}: not a run folder (no config.json)"
    assert cli.main(["report", str(run), "--overwrite"]) == 1
    assert capsys.readouterr().err.strip() == (f"aae: error: --overwrite goes with --out; without it, "
                                               f"{run / 'report.html'} is rewritten on each call")  # fmt: skip
    assert mine.read_text() == "my notes"


def test_report_flags_an_eval_json_of_an_older_checkpoint(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    step = json.loads((folder / "checkpoints" / "latest.json").read_text())["step"]
    (folder / "eval.json").write_text(json.dumps({"test_recon_bce": 0.2, "checkpoint_step": step}))
    assert "stale" not in render_report(folder)
    (folder / "eval.json").write_text(json.dumps({"test_recon_bce": 0.2, "checkpoint_step": step - 3}))
    assert (f"eval.json is stale:</b> it scored the checkpoint of step {step - 3}; the latest is of "
            f"step {step}") in render_report(folder)  # fmt: skip
    with pytest.raises(AAEError, match="config.json: a file; give the run folder"):
        render_report(folder / "config.json")


def test_report_flags_a_summary_that_a_resume_has_trained_past(run, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(run, folder)
    meta = json.loads((folder / "checkpoints" / "latest.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["epochs"] == meta["epoch"] and "summary.json is stale" not in render_report(folder)
    meta["epoch"] += 2  # as after an interrupted resume with more --epochs
    (folder / "checkpoints" / "latest.json").write_text(json.dumps(meta))
    assert (f"summary.json is stale:</b> it ended training at epoch {summary['epochs']}; a resume "
            f"has since trained the checkpoint to epoch {meta['epoch']}") in render_report(folder)  # fmt: skip
    (folder / "config.json").unlink()  # the checkpoint's copy stands in for it
    assert "z_dim" in render_report(folder)


def test_report_of_an_unfinished_run_says_what_is_missing(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_kind": "unsupervised"}))
    text = render_report(tmp_path)
    assert "No summary.json" in text and "No plots" in text and "No per-epoch history" in text


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (CI installs it)")
def test_chromium_renders_the_report_with_its_figures(run, tmp_path):
    html_path = write_report(run)
    png = tmp_path / "report.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}",
           "--window-size=1200,3000", html_path.resolve().as_uri()]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stderr and "ERR_" not in proc.stderr, proc.stderr
    data = png.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 50_000  # a blank page is a few kB
    pixels = np.asarray(Image.open(png).convert("L"))  # (3000, 1200)
    assert pixels.shape == (3000, 1200)
    # The figures show: many grey levels and a good share of non-white pixels (text alone
    # covers a few percent of a page).
    assert len(np.unique(pixels)) > 50 and (pixels < 200).mean() > 0.05


def test_the_config_tables_leave_out_what_the_model_does_not_read():
    from torch_aae.config import Config, ModelConfig
    from torch_aae.report import _read_by

    semi = Config("semi-supervised").to_dict()
    shown = _read_by(semi["train"], semi)
    assert "view_rotate" not in shown and "lr_sup" in shown and "label_elastic" in shown
    assert "prior_std" in _read_by(semi["model"], semi) and "clusters" not in _read_by(semi["model"], semi)
    mixture = Config("unsupervised", model=ModelConfig(prior="mixture", prior_components=10)).to_dict()
    model = _read_by(mixture["model"], mixture)
    assert model["prior_components"] == 10 and "prior_std_along" in model and "prior_std" not in model


def test_tables_right_align_numbers_but_not_booleans():
    text = _table({"epochs": 3, "lr": 0.001, "resume": True, "name": "x"})
    assert "<th>epochs</th><td class='num'>3</td>" in text and "<th>lr</th><td class='num'>0.001</td>" in text
    assert "<th>resume</th><td class=''>True</td>" in text and "<th>name</th><td class=''>x</td>" in text


def test_the_class_histogram_draws_each_class_fraction_at_its_class(monkeypatch):
    # 12 classes, fractions of their own: each bar at its class (10 and 11 after 9), the
    # "uniform" line at 1/12.
    from torch_aae import report

    figs = []
    monkeypatch.setattr(report, "_png", lambda fig: figs.append(fig) or b"png")
    fractions = np.array([5, 12, 1, 9, 3, 11, 7, 2, 10, 4, 8, 6]) / 78  # in no order, summing to 1
    metrics = {f"sample_class_{k}": float(f) for k, f in enumerate(fractions)}
    report.histogram_png({**metrics, "sample_class_entropy": 0.9, "parzen_ll": 1.0})
    ax = figs[0].axes[0]
    bars = sorted((p.get_x() + p.get_width() / 2, p.get_height()) for p in ax.patches)
    assert [x for x, _ in bars] == pytest.approx(list(range(12)))
    assert [h for _, h in bars] == pytest.approx(list(fractions))
    (uniform,) = ax.lines
    assert list(uniform.get_ydata()) == pytest.approx([1 / 12, 1 / 12])


def test_the_report_curves_leave_a_gap_where_an_epoch_lacks_a_key(monkeypatch):
    from torch_aae import report

    figs = []
    monkeypatch.setattr(report, "_png", lambda fig: figs.append(fig) or b"png")
    history = [{"epoch": 1, "loss/recon": 0.3, "eval/val_error": 0.2}, {"epoch": 2, "loss/recon": 0.25},
               {"epoch": 3, "loss/recon": 0.2, "eval/val_error": 0.1}]  # fmt: skip
    report.curves_png(history)
    panels = {ax.get_title(): ax.lines[0] for ax in figs[0].axes if ax.lines}
    assert sorted(panels) == ["eval/val_error", "loss/recon"]
    assert list(panels["loss/recon"].get_xdata()) == [1, 2, 3]
    assert list(panels["loss/recon"].get_ydata()) == [0.3, 0.25, 0.2]
    errors = panels["eval/val_error"].get_ydata()
    assert errors[0] == 0.2 and np.isnan(errors[1]) and errors[2] == 0.1  # not drawn as 0
