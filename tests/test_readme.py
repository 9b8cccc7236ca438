"""The README's code cannot rot: its Python example runs, and CI runs its test command."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


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

    sentence = re.search(r"only (`--epochs`.*?) may\s+change on resume", README, flags=re.S).group(1)
    named = set(re.findall(r"`--([a-z-]+)", sentence))
    assert named - {"no-cuda-graphs"} == {name.replace("_", "-") for name in RESUMABLE}
