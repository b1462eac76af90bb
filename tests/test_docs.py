"""The README and docs/ say what the code does: the command-line synopsis names exactly the flags the parser has, the
Nodes table names exactly the pack's nodes by their display names, the memory numbers are the estimator's output,
and every relative link (the README's pointers to the pages its long sections moved to) reaches a file and heading.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from lumina_core.app.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MOVED = ["docs/command_line.md", "docs/benchmarks.md", "docs/parallel.md", "docs/api.md", "docs/security.md",
         "docs/memory.md"]


def section(text: str, heading: str) -> str:
    """The text under a markdown heading, up to the next heading of the same or a higher level."""
    level = len(heading) - len(heading.lstrip("#"))
    start = text.index(heading + "\n")
    following = re.search(rf"^#{{1,{level}}} ", text[start + len(heading):], re.MULTILINE)
    return text[start: start + len(heading) + following.start()] if following else text[start:]


def parser_flags(command: str) -> set[str]:
    subcommands = next(action for action in build_parser()._actions if action.dest == "command").choices
    return {flag for action in subcommands[command]._actions for flag in action.option_strings
            if flag.startswith("--") and flag != "--help"}


@pytest.mark.parametrize("command", ["generate", "finetune"])
def test_synopsis_names_every_flag_of_the_parser_and_no_other(command):
    synopsis = section((ROOT / "docs" / "command_line.md").read_text(), "# Command line")
    block = re.search(r"```bash\n(.*?)```", synopsis, re.DOTALL).group(1)
    lines = re.findall(rf"lumina_core {command} (.*?)(?=\n\S|\Z)", block, re.DOTALL)
    assert len(lines) == 1, f"no synopsis line for {command}"
    assert set(re.findall(r"--[a-z][a-z-]*", lines[0])) == parser_flags(command)


def display_names() -> set[str]:
    """The pack's node display names, read from the node classes' schemas."""
    names = set()
    for path in (ROOT / "nodes").glob("*.py"):
        names |= set(re.findall(r'display_name="(Lumina-Video [^"]+)",\s*\n\s*category=', path.read_text()))
    return names


def test_the_nodes_table_names_every_node_by_its_display_name():
    table = section(README.read_text(), "## Nodes")
    rows = re.findall(r"^\| ([^|]+?) \|", table, re.MULTILINE)
    listed = {f"Lumina-Video {name.strip()}" for row in rows[1:] for name in row.split(" / ")}
    assert listed == display_names()
    for path in (ROOT / "nodes").glob("*.py"):
        for category in re.findall(r'category="Lumina-Video/(\w+)"', path.read_text()):
            assert f"*{category}*" in table, f"the menu category Lumina-Video/{category} is not named"


def test_the_memory_numbers_are_the_estimators():
    printed = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "memory_estimate.py")], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    assert printed.strip() in (ROOT / "docs" / "memory.md").read_text()
    readme = section(README.read_text(), "## Model files")
    for tokens, total_bf16, total_fp8 in [("82,368", "11.2", "9.5"), ("16,128", "5.0", "3.3"), ("3,432", "3.9", "2.1")]:
        row = next(line for line in printed.splitlines() if f": {tokens} x 2 " in line)
        assert f"| {total_bf16} GB | {total_fp8} GB |" in row
        assert re.search(rf"{tokens} × 2 \|[^\n]*~{total_bf16} / ~{total_fp8} GB", readme)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors of a markdown page, and its explicit <a id> anchors."""
    text = page.read_text()
    found = set(re.findall(r'<a id="([^"]+)"', text))
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.DOTALL), re.MULTILINE):
        found.add(re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-"))
    return found


def test_the_readme_points_to_the_moved_pages_and_every_link_arrives():
    readme = README.read_text()
    for page in MOVED:
        assert f"]({page}" in readme, f"the README does not point to {page}"
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            assert file.exists(), f"{page.name} links to {target}, which does not exist"
            if anchor and file.suffix == ".md":
                assert anchor in anchors(file), f"{page.name} links to {target}: no such heading"
