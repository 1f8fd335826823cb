"""Where data comes from: catalog entries, files and folders under the data dir, uploads.

`open_source(spec, data_dir, ...)` understands
  - a catalog id (`Dahoas/rm-static`, `demo_sft`, `local/jsonfile`; see presets/datasets.yaml),
  - `bundled:<name>` (the samples the project ships),
  - the name of a studio dataset (`<data-dir>/datasets/<name>/`),
  - a path: a json / jsonl / csv / tsv / parquet file, a folder saved by `datasets.save_to_disk`, a folder of
    data files, DeepSpeed-Chat's `local/jsonfile` layout (`data/train.json` + `data/eval.json`), or an image
    folder with `metadata.jsonl` / `metadata.csv` (diffusers' `imagefolder`: `file_name`, `text`).
With `confine=True` (the web page) a path must stay inside the data dir, symlinks included.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from backends.common import data as datalib
from backends.common import paths
from backends.common.data import STUDIO_CARD, STUDIO_DATA, Table
from backends.common.errors import FieldError

from . import catalog
from .shapes import servable_kinds

PREVIEW_ROWS = 20
PREVIEW_CELL = 160
IMAGE_METADATA = ("metadata.jsonl", "metadata.csv")
DEFAULT_MAX_UPLOAD_MB = 512


@dataclass
class Opened:
    spec: str
    label: str                      # what messages call it: a file name, a catalog id
    format: str                     # jsonl json csv tsv parquet arrow dschat_jsonfile imagefolder hub studio
    table: Table
    entry: catalog.CatalogEntry | None = None
    image_folder: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        return self.table.columns

    @property
    def kinds(self) -> list[str]:
        if self.image_folder is not None:
            return ["images"]
        if self.entry is not None:
            return list(self.entry.kinds)
        return servable_kinds(self.table.columns, self.table.rows[:20])

    def preview(self, n: int = PREVIEW_ROWS) -> tuple[list[str], list[list[str]]]:
        """(header, rows) of the first n rows, long cells cut, everything as text."""
        cols = self.table.columns
        return cols, [[_cell(r.get(c)) for c in cols] for r in self.table.rows[:n]]


def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        s = v
    elif isinstance(v, (list, dict)):
        s = json.dumps(v, ensure_ascii=False, default=str)
    else:
        s = repr(v)
    s = s.replace("\n", "⏎ ")
    return s if len(s) <= PREVIEW_CELL else s[:PREVIEW_CELL - 1] + "…"


# ------------------------------------------------------------------------------------- paths
def confine(value: str | os.PathLike, data_dir: str | os.PathLike, *, field: str = "path") -> Path:
    """`value` (relative to the data dir, or absolute) as a real path inside the data dir, or a FieldError."""
    return paths.confine(value, data_dir, field=field)


def is_image_folder(p: Path) -> bool:
    return p.is_dir() and any((p / m).is_file() for m in IMAGE_METADATA)


def is_dschat_jsonfile(p: Path) -> bool:
    return p.is_dir() and (p / "data" / "train.json").is_file()


def is_studio_dataset(p: Path) -> bool:
    return p.is_dir() and (p / STUDIO_CARD).is_file()


def local_candidates(data_dir: str | os.PathLike, limit: int = 500) -> list[str]:
    """Data files and dataset folders under <data-dir>/datasets, as paths relative to the data dir."""
    dd = paths.data_dir(data_dir)
    root = paths.datasets_dir(dd)
    out: list[str] = []
    if not root.is_dir():
        return out

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        for e in entries:
            if len(out) >= limit or e.name.startswith("."):
                continue
            if e.is_dir():
                if is_studio_dataset(e) or is_image_folder(e) or is_dschat_jsonfile(e) or datalib._is_saved_dataset(e):
                    out.append(str(e.relative_to(dd)))
                elif depth < 4:
                    walk(e, depth + 1)
            elif e.suffix.lower() in datalib.SUFFIXES:
                out.append(str(e.relative_to(dd)))

    walk(root, 0)
    return out


# ------------------------------------------------------------------------------------- opening
def _table_from_dataset(ds, label: str, fmt: str) -> Table:
    rows = ds.to_list()
    if not rows:
        raise FieldError("dataset", f"{label} has 0 rows")
    return Table(Path(label), fmt, rows, [f"row {i}" for i in range(1, len(rows) + 1)], list(ds.column_names))


def open_path(p: Path, *, split: str | None = None, field: str = "path") -> Opened:
    if is_studio_dataset(p):
        tb = datalib.read_table(p / STUDIO_DATA, field=field)
        img = p if (p / "images").is_dir() else None
        return Opened(str(p), p.name, "studio", tb, image_folder=img)
    if is_image_folder(p):
        meta = next(p / m for m in IMAGE_METADATA if (p / m).is_file())
        tb = datalib.read_table(meta, field=field)
        return Opened(str(p), p.name, "imagefolder", tb, image_folder=p)
    if is_dschat_jsonfile(p):
        which = "eval" if split in ("eval", "test") else "train"
        f = p / "data" / f"{which}.json"
        if not f.is_file():
            raise FieldError(field, f"{p.name}/data/{which}.json not found (DeepSpeed-Chat's local/jsonfile "
                                    f"layout: data/train.json and data/eval.json)")
        tb = datalib.read_table(f, field=field)
        notes = []
        other = p / "data" / ("eval.json" if which == "train" else "train.json")
        if other.is_file():
            notes.append(f"{other.name} is there too (use --split {'eval' if which == 'train' else 'train'})")
        return Opened(str(p), f"{p.name}/data/{f.name}", "dschat_jsonfile", tb, notes=notes)
    if p.is_dir() and not datalib._is_saved_dataset(p) and not datalib.data_files(p):
        raise FieldError(field, f"{p} holds no data files (.jsonl .json .csv .tsv .parquet), no metadata.jsonl "
                                f"and no dataset saved by datasets.save_to_disk")
    tb = datalib.read_table(p, field=field, split=split)
    return Opened(str(p), p.name, tb.format, tb)


def open_source(spec: str, data_dir: str | os.PathLike | None, *, offline: bool = False, confine_to_data_dir: bool = False,
                split: str | None = None, field: str = "path") -> Opened:
    """Reads the data named by `spec` (see the module doc); FieldError/DatasetUnavailable say what is wrong."""
    dd = paths.data_dir(data_dir)
    v = str(spec or "").strip()
    if not v:
        raise FieldError(field, "is empty: pick a catalog entry, a file under the data dir, or upload one")
    name = v.split(":", 1)[1] if v.startswith("bundled:") else v
    entry = _catalog_get(name)
    if entry is not None and not Path(v).exists():
        return open_entry(entry, dd, offline=offline, split=split)
    studio = paths.datasets_dir(dd) / v
    if "/" not in v and is_studio_dataset(studio):
        return open_path(studio, split=split, field=field)
    p = confine(v, dd, field=field) if confine_to_data_dir else _find(v, dd, field)
    return open_path(p, split=split, field=field)


def _find(v: str, dd: Path, field: str) -> Path:
    p = Path(v).expanduser()
    for c in ([p] if p.is_absolute() else [p, dd / p, paths.datasets_dir(dd) / p]):
        if c.exists():
            return c.resolve()
    raise FieldError(field, f"not found: {v}" + ("" if p.is_absolute() else f" (looked in the working dir and {dd})"))


def _catalog_get(name: str) -> catalog.CatalogEntry | None:
    try:
        return catalog.get_entry(name)
    except KeyError:
        return None


def open_entry(entry: catalog.CatalogEntry, data_dir: Path, *, offline: bool, split: str | None = None) -> Opened:
    if "images" in entry.kinds and entry.source == "bundled":
        from .samples import ensure_shapes

        folder = ensure_shapes(data_dir)
        op = open_path(folder)
        op.entry, op.spec, op.label = entry, entry.id, entry.id
        return op
    if entry.source == "bundled":
        tb = datalib.read_table(paths.ROOT / entry.path)
        return Opened(entry.id, entry.id, "bundled", tb, entry=entry)
    if entry.source == "local" and entry.id == "local/jsonfile":
        folder = paths.datasets_dir(data_dir) / "local" / "jsonfile"
        if not is_dschat_jsonfile(folder):
            raise catalog.DatasetUnavailable(
                f"local/jsonfile: put DeepSpeed-Chat's layout at {folder} (data/train.json and data/eval.json, "
                f"each a JSON list of {{prompt, chosen, rejected}})")
        op = open_path(folder, split=split)
        op.entry, op.spec = entry, entry.id
        return op
    copy = catalog.find_local_copy(entry, data_dir)
    ds = catalog.load_entry(entry, data_dir, offline=offline, split=split)
    op = Opened(entry.id, entry.id, "hub", _table_from_dataset(ds, entry.id, "hub"), entry=entry)
    if copy is not None:
        op.notes.append(f"local copy: {copy}")
    return op


# ------------------------------------------------------------------------------------- uploads
def max_upload_bytes() -> int:
    try:
        mb = float(os.environ.get("STUDIO_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB))
    except ValueError:
        mb = DEFAULT_MAX_UPLOAD_MB
    return int(mb * 1024 * 1024)


def _safe_name(name: str) -> str:
    base = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name).lstrip(".")
    return base or "upload"


def store_upload(files: list[str | os.PathLike], data_dir: str | os.PathLike, *, limit: int | None = None,
                 original_names: list[str] | None = None) -> Path:
    """Copies uploaded files into <data-dir>/datasets/uploads/ and returns the file (or, for several files such as
    an image folder with its metadata.jsonl, the folder). Over the size limit nothing is written."""
    limit = max_upload_bytes() if limit is None else limit
    srcs = [Path(f) for f in files if f]
    if not srcs:
        raise FieldError("upload", "no file received")
    names = [_safe_name(n) for n in (original_names or [s.name for s in srcs])]
    total = sum(s.stat().st_size for s in srcs)
    if total > limit:
        raise FieldError("upload", f"{names[0] if len(srcs) == 1 else f'{len(srcs)} files'} is "
                                   f"{total / 1048576:.1f} MB, over the {limit / 1048576:.0f} MB upload limit "
                                   f"(STUDIO_MAX_UPLOAD_MB); copy large files into the data dir instead")
    up = paths.datasets_dir(data_dir) / "uploads"
    up.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if len(srcs) == 1:
        target = up / names[0]
        if target.exists():
            target = up / f"{Path(names[0]).stem}-{stamp}{Path(names[0]).suffix}"
        tmp = up / f".tmp-{os.getpid()}-{names[0]}"
        shutil.copyfile(srcs[0], tmp)
        os.replace(tmp, target)
        return target
    folder = up / f"{Path(names[0]).stem}-{stamp}"
    tmpdir = up / f".tmp-{os.getpid()}-{folder.name}"
    tmpdir.mkdir()
    for s, n in zip(srcs, names):
        shutil.copyfile(s, tmpdir / n)
    os.replace(tmpdir, folder)
    return folder
