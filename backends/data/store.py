"""Studio datasets: named, validated, mapped datasets under <data-dir>/datasets/<name>/ that every
training tab lists.

  <name>/studio-dataset.yaml   the card: kind, rows, source, mapping, transform, split, report summary
  <name>/data.jsonl            the rows in the kind's shape (prompt/response, prompt/chosen/rejected, ...):
                               the conversation, not text rendered with a template (backends/data/shapes.py)
  <name>/images/               (images) the image files; data.jsonl holds file_name/text

A save writes a temporary folder and renames it into place: a crash leaves no half-written dataset.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from pathlib import Path

import yaml

from backends.common import paths
from backends.common.data import STUDIO_CARD, STUDIO_DATA
from backends.common.errors import FieldError

from .report import Report

NAME_RE = re.compile(r"^[A-Za-z0-9\u4e00-\u9fff][\w\u4e00-\u9fff.-]{0,63}$")
RESERVED = {"uploads", "hub", "local", "samples"}


def check_name(name: str) -> str:
    n = str(name or "").strip()
    if not n:
        raise FieldError("name", "is empty: give the studio dataset a name, e.g. my-sft-set")
    if not NAME_RE.match(n) or n.endswith("."):
        raise FieldError("name", f"{n!r}: use letters, digits, '-', '_' or '.' (at most 64), starting with a "
                                 f"letter or digit")
    if n.lower() in RESERVED:
        raise FieldError("name", f"{n!r} is reserved for {', '.join(sorted(RESERVED))} folders; choose another")
    return n


def save(name: str, rows: list[dict], report: Report, *, data_dir, source: str, data_split: str = "",
         eval_ratio: float = 0.0, seed: int = 1234, overwrite: bool = False,
         image_folder: Path | None = None) -> Path:
    """Writes the studio dataset and returns its folder."""
    name = check_name(name)
    if not report.usable:
        raise FieldError("dataset", f"cannot save {source}: {report.fatal or 'no usable rows'}")
    root = paths.datasets_dir(data_dir)
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if target.exists() and not overwrite:
        raise FieldError("name", f"a studio dataset named {name!r} exists; choose another name or overwrite it")
    if target.exists() and not (target / STUDIO_CARD).is_file():
        raise FieldError("name", f"{target} exists and is not a studio dataset; choose another name")
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with open(tmp / STUDIO_DATA, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        if report.kind == "images":
            if image_folder is None:
                raise FieldError("dataset", "image rows need their image folder")
            (tmp / "images").mkdir()
            for i, r in enumerate(rows, 1):
                src, dest = _image_paths(i, r.get("file_name"), Path(image_folder), tmp / "images")
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest)
            # the imagefolder convention: metadata.jsonl next to the images
            shutil.copyfile(tmp / STUDIO_DATA, tmp / "images" / "metadata.jsonl")
        card = {
            "name": name,
            "kind": report.kind,
            "rows": len(rows),
            "source": source,
            "format": report.format,
            "mapping": {k: v for k, v in report.mapping.items() if v},
            "transform": report.transform,
            "data_split": data_split,
            "eval_ratio": eval_ratio,
            "seed": seed,
            "splits": report.splits,
            "languages": report.languages,
            "dropped": report.dropped,
            "problems": report.counts,
            "token_stats": report.token_stats,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (tmp / STUDIO_CARD).write_text(yaml.safe_dump(card, allow_unicode=True, sort_keys=False), encoding="utf-8")
        paths.replace_dir(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _image_paths(i: int, name, folder: Path, dest_root: Path) -> tuple[Path, Path]:
    """(source, destination) of row i's image, both resolved (symlinks included). A name that leads out of the
    image folder is never copied, whatever "drop rows with problems" says; a missing file fails the save."""
    shown = f"row {i} ({name!r})"
    if not isinstance(name, str) or not name.strip():
        raise FieldError("image", f"{shown}: no file_name; fix the row or tick \"Drop rows with problems\"")
    try:
        src = paths.join_inside(folder, name, field="image", what="the image folder")
        dest = paths.join_inside(dest_root, name, field="image", what="the new dataset's images folder")
    except FieldError as e:
        raise FieldError("image", f"{shown}: {e.message}; nothing was saved. Fix its file_name or tick "
                                  f"\"Drop rows with problems\"") from None
    if not src.is_file():
        raise FieldError("image", f"{shown}: image file not found in {folder}; nothing was saved. Add the file "
                                  f"or tick \"Drop rows with problems\"")
    return src, dest


def read_card(folder: Path) -> dict:
    card = yaml.safe_load((folder / STUDIO_CARD).read_text(encoding="utf-8")) or {}
    card.setdefault("name", folder.name)
    card["path"] = str(folder)
    return card


def list_datasets(data_dir, kind: str | None = None) -> list[dict]:
    """The studio datasets' cards, newest first; `kind` keeps those of one kind."""
    root = paths.datasets_dir(data_dir)
    out = []
    if root.is_dir():
        for d in root.iterdir():
            if d.is_dir() and not d.name.startswith(".") and (d / STUDIO_CARD).is_file():
                try:
                    card = read_card(d)
                except (OSError, yaml.YAMLError):
                    continue
                if kind is None or card.get("kind") == kind:
                    out.append(card)
    out.sort(key=lambda c: str(c.get("created", "")), reverse=True)
    return out


def card_for(dataset_path: str | os.PathLike) -> dict | None:
    """The card of the studio dataset a resolved dataset file belongs to (None for other files)."""
    p = Path(dataset_path)
    folder = p.parent if p.name == STUDIO_DATA else p
    return read_card(folder) if (folder / STUDIO_CARD).is_file() else None
