"""The README and the manual stay connected: every relative link names a file that exists and, when it has
an anchor, a heading of that file (GitHub's anchor rules); every runnable example marker is unique."""

from __future__ import annotations

import re
from pathlib import Path

from airflow_mlops.settings import PROJECT_ROOT
from tests.doc_examples import PAGES

LINK = re.compile(r"\[[^\]]+\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"^#+ (.*)$", line)):
            found.add(_anchor(match.group(1)))
    return found


def test_every_relative_link_and_anchor_resolves() -> None:
    pages = [*PAGES, PROJECT_ROOT / "docker" / "README.md", PROJECT_ROOT / "feature_repo" / "README.md"]
    broken = []
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{page.relative_to(PROJECT_ROOT)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in _anchors(linked):
                broken.append(f"{page.relative_to(PROJECT_ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_readme_is_a_front_door_not_the_manual() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    for page in ("bring-your-own", "dags", "validation", "features", "training", "serving-and-deploy"):
        assert f"(docs/{page}.md)" in readme, page
    for page in ("monitoring", "operations", "testing", "architecture"):
        assert f"(docs/{page}.md)" in readme, page


def test_example_markers_are_unique() -> None:
    names = [m for page in PAGES for m in re.findall(r"<!-- example: ([\w-]+) -->", page.read_text())]
    assert names and len(names) == len(set(names)), names


RUNNABLE_FENCE = re.compile(r"^```(bash|sh|shell|console|python)\s*$")
MARKER = re.compile(r"^<!-- (example: [\w-]+|not run: .{20,}) -->$")


def test_every_runnable_block_is_run_or_says_why_not() -> None:
    """A shell or Python block follows ``<!-- example: NAME -->`` (a test runs it) or ``<!-- not run: REASON -->``.

    The reason says what these machines lack and what the tests check instead, so a reader can tell a command
    proven on every run from one shown for a cluster, a container engine or a cloud account.
    """
    unmarked = []
    for page in PAGES:
        lines = page.read_text().splitlines()
        fenced = False
        for number, line in enumerate(lines):
            if line.startswith("```"):
                if not fenced and RUNNABLE_FENCE.match(line):
                    before = next((lines[i] for i in range(number - 1, -1, -1) if lines[i].strip()), "")
                    if not MARKER.match(before):
                        unmarked.append(f"{page.relative_to(PROJECT_ROOT)}:{number + 1}")
                fenced = not fenced
    assert unmarked == []


def test_every_example_marker_is_run_by_a_test() -> None:
    names = {m for page in PAGES for m in re.findall(r"<!-- example: ([\w-]+) -->", page.read_text())}
    sources = [path.read_text() for path in (PROJECT_ROOT / "tests").rglob("test_*.py")]
    tests = "\n".join(text for text in sources if "example_block" in text)  # modules that run page blocks
    assert sorted(name for name in names if f'"{name}"' not in tests) == []
