"""The README documents what the code declares."""
from __future__ import annotations

import yaml

from app import docs
from conftest import ROOT


def test_readme_option_tables_match_the_dataclasses():
    text = docs.README.read_text(encoding="utf-8")
    assert docs.render(text) == text, "README option / catalog tables are stale: run `python -m app.docs`"
    assert "`Dahoas/rm-static`" in text and "`local/jsonfile`" in text  # the catalog block is rendered


def test_readme_names_every_preset_and_recipe():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for folder in ("presets/accelerate", "presets/deepspeed", "presets/recipes"):
        for f in sorted((ROOT / folder).iterdir()):
            assert f"`{f.stem}`" in text, f"README does not document {folder}/{f.name}"
    for f in sorted((ROOT / "presets/recipes").glob("*.yaml")):
        kind = yaml.safe_load(f.read_text())["kind"]
        assert kind in docs.schemas() or kind == "pipeline", f  # a kind whose backend exists (or a pipeline)


def test_readme_has_an_options_table_for_every_backend():
    text = docs.README.read_text(encoding="utf-8")
    for kind in ("sft", "reward", "dpo", "ab_eval"):
        assert f"<!-- BEGIN options:{kind} -->\n| Option |" in text, kind
