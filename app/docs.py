"""Keeps the README's generated blocks in step with the code: `python -m app.docs` rewrites them.

A block sits between `<!-- BEGIN name -->` and `<!-- END name -->`; tests/test_docs.py fails when a block
is stale, so an option added to a backend's dataclass shows up in the README in the same commit.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

from app import kinds
from backends.common import config as cfgmod

README = Path(__file__).resolve().parent.parent / "README.md"


def catalog_table() -> str:
    """The dataset catalog (presets/datasets.yaml) as a Markdown table."""
    from backends.data import catalog

    rows = ["| id | source | kinds | languages | transform | origin | size |", "|---|---|---|---|---|---|---|"]
    for e in catalog.load_catalog():
        rows.append(f"| `{e.id}` | {e.source} | {', '.join(e.kinds)} | {', '.join(e.languages)} | `{e.transform}` | "
                    f"{', '.join(e.origin)} | {e.size} |")
    return "\n".join(rows)


def schemas() -> dict[str, type]:
    """Every job kind of the registry (app/kinds.py) that has a README block -> its schema."""
    return {k.name: k.schema for k in kinds.all_kinds() if k.docs and k.schema is not None}


def blocks() -> dict[str, str]:
    out = {kinds.get(kind).docs: cfgmod.markdown_table(schema) for kind, schema in schemas().items()}
    out["catalog"] = catalog_table()
    return out


def render(text: str) -> str:
    for name, body in blocks().items():
        pattern = re.compile(rf"(<!-- BEGIN {re.escape(name)} -->).*?(<!-- END {re.escape(name)} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no block {name!r}")
        text = pattern.sub(lambda m: f"{m.group(1)}\n{body.strip()}\n{m.group(2)}", text)
    return text


if __name__ == "__main__":
    old = README.read_text(encoding="utf-8")
    new = render(old)
    if "--check" in sys.argv:
        sys.exit(0 if new == old else 1)
    README.write_text(new, encoding="utf-8")
    print("README.md blocks are up to date" if new == old else "README.md blocks rewritten")
