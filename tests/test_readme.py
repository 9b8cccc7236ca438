"""The README's code cannot rot: its Python example runs, CI runs its test command, the docs name
every flag and their links lead somewhere."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
USAGE = (ROOT / "docs" / "usage.md").read_text()
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = python_blocks(README)
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_AAE_DATA", str(ROOT / "data"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    # The example trains, samples, saves and reloads: its names must hold what it says.
    assert namespace["images"].shape == (16, 784)
    assert (tmp_path / "runs" / "demo" / "summary.json").is_file()
    # The semi-supervised example trains as the command line would: its labels, its rates.
    from torch_aae import load_run_config

    recorded = load_run_config(tmp_path / "runs" / "semi-py")
    assert recorded.data.labels == "100" and recorded.train.lr_recon == 1e-3 and 0 <= namespace["semi"]["test_error"] <= 1


def test_ci_runs_the_readme_test_command():
    command = re.search(r"Run the tests:.*?```bash\n(.*?)\n```", README, flags=re.S).group(1)
    assert command.strip() in (ROOT / ".ci" / "run").read_text()


def test_readme_names_every_flag_a_resume_may_change():
    from torch_aae.cli import RESUMABLE

    sentence = re.search(r"only (`--epochs`.*?) may\s+change on resume", USAGE, flags=re.S).group(1)
    named = set(re.findall(r"`--([a-z-]+)", sentence))
    assert named - {"no-cuda-graphs"} == {name.replace("_", "-") for name in RESUMABLE}


def test_usage_names_every_flag_of_aae_train(capsys, monkeypatch):
    from torch_aae.cli import build_parser
    from torch_aae.variants import VARIANTS

    monkeypatch.setenv("COLUMNS", "10000")  # argparse would wrap "--branch-from" at its hyphen
    flags = set()
    for kind in VARIANTS:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", kind, "--help"])
        flags |= set(re.findall(r"(?<![\w-])--[a-z0-9-]+", capsys.readouterr().out))
    flags -= {"--help"} | {f for f in flags if f.startswith("--no-") and "--" + f[5:] in flags}
    assert len(flags) > 40
    missing = sorted(f for f in flags if not re.search(re.escape(f) + r"(?![\w-])", USAGE))
    assert not missing, f"docs/usage.md does not name {missing}"


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_between_the_docs_lead_somewhere(doc):
    text = doc.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert local, f"{doc.name} links to nothing in the repository"
    for link in local:
        path, _, fragment = link.partition("#")
        target = (doc.parent / path).resolve() if path else doc
        assert target.exists(), f"{doc.name}: {link} leads to no file"
        if fragment:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.M)
            assert fragment in {github_anchor(h) for h in headings}, f"{doc.name}: no heading #{fragment}"
