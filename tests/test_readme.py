"""The README's promises that CI keeps: its two quick-start commands are the ones
.ci/run runs, the figure it shows exists, and it cites the paper and links the docs."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def _quick_start_commands():
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL).group(1)
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_quick_start_commands_are_the_ones_ci_runs():
    commands = _quick_start_commands()
    assert len(commands) == 2
    assert commands[0].endswith("python -m flowpca demo")
    assert commands[1].endswith("python -m pytest")
    ci_lines = (REPO / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert any(line.startswith(command) for line in ci_lines), command


def test_figure_citation_and_documentation_links():
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README):
        assert (REPO / target).is_file(), target
    assert "arXiv:2007.06280" in README  # Feinman & Parthasarathy (2020)
    assert "## Documentation" in README
    for link in ("docs/", "examples/"):
        assert f"]({link})" in README and (REPO / link).is_dir(), link
