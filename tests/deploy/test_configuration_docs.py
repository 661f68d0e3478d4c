"""The configuration table (docs/configuration.md) names every environment variable the server
reads: each `Settings` field and each `os.environ` read in the functions, the layer and the runner."""

from __future__ import annotations

import re
from pathlib import Path

from roleplay.core.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "configuration.md"
CODE = ("functions", "layers/roleplay/python", "local_runner")
NAME = r"['\"]([A-Z][A-Z0-9_]+)['\"]"
# Reads only: `os.environ["X"] = ...` sets a variable for the rest of the process.
READS = (rf"os\.environ\.get\(\s*{NAME}", rf"os\.getenv\(\s*{NAME}",
         rf"os\.environ\[\s*{NAME}\s*\](?!\s*=[^=])", rf"{NAME}\s+(?:not\s+)?in\s+os\.environ",
         rf"os\.environ\.setdefault\(\s*{NAME}")


def read_by_code() -> dict[str, str]:
    """Each variable, with where it is read."""
    found = {name.upper(): "roleplay/core/settings.py (Settings)" for name in Settings.model_fields}
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for pattern in READS:
                for name in re.findall(pattern, text):
                    found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def documented() -> set[str]:
    section = DOCS.read_text(encoding="utf-8").split("\n## ", 1)[0]  # the page's table, before any section
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", row)}


def test_docs_document_every_variable_the_code_reads() -> None:
    missing = {name: where for name, where in read_by_code().items() if name not in documented()}
    assert not missing, "docs/configuration.md's table lacks these variables (read in): " + ", ".join(
        f"{name} ({where})" for name, where in sorted(missing.items()))


def test_docs_document_no_variable_the_code_ignores() -> None:
    stale = documented() - set(read_by_code())
    assert not stale, f"docs/configuration.md's table names variables nothing reads: {sorted(stale)}"
