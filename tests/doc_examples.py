"""The runnable examples of the README and the manual (``docs/*.md``), found by their markers.

A block that a page presents as runnable follows a marker ``<!-- example: NAME -->``; tests run the block's
text as it is on the page, so a page that changes is tested as it now reads. Markers are unique across the
README and the manual.
"""

from __future__ import annotations

import re
from pathlib import Path

from airflow_mlops.settings import PROJECT_ROOT

PAGES = [PROJECT_ROOT / "README.md", *sorted((PROJECT_ROOT / "docs").glob("*.md"))]


def example_block(name: str) -> str:
    """The fenced code block right after ``<!-- example: NAME -->`` (exactly one in the README and docs/)."""
    pattern = re.compile(rf"<!-- example: {re.escape(name)} -->\n```\w+\n(.*?)\n```", re.DOTALL)
    found = [(page, match.group(1)) for page in PAGES for match in pattern.finditer(page.read_text())]
    assert len(found) == 1, f"example {name!r}: {len(found)} blocks in {[str(p) for p, _ in found] or 'no page'}"
    return found[0][1]


def example_page(name: str) -> Path:
    """The page that holds the example ``name``."""
    return next(page for page in PAGES if f"<!-- example: {name} -->" in page.read_text())
