"""The dataset catalog (presets/datasets.yaml): known datasets, where their local copies go, how they load.

- :func:`load_catalog` reads and validates the YAML (a bad entry is a ValueError naming its id and key);
- :func:`get_entry` finds one entry by id (KeyError with close matches);
- :func:`local_copy_dirs` / :func:`find_local_copy`: without internet a hub dataset is read from
  `<data-dir>/datasets/hub/<hub_id>` (or `<data-dir>/datasets/<hub_id>`): a `save_to_disk` folder, or the
  repo's parquet/json/jsonl/csv files (the hub snapshot layout `data/train-*.parquet` included);
- :func:`load_entry` returns a `datasets.Dataset`, or raises :class:`DatasetUnavailable` whose message says
  where to put a local copy and the one-line command that makes it on a machine with internet.
"""
from __future__ import annotations

import difflib
import fnmatch
import functools
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import paths
from backends.common.paths import ROOT, datasets_dir

from . import transforms as tf

CATALOG_PATH = ROOT / "presets" / "datasets.yaml"
SOURCES = ("hub", "local", "bundled")
ORIGINS = ("DeepSpeed-Chat", "ColossalChat", "MedicalGPT", "Finetune Studio")
REQUIRED = ("id", "source", "kinds", "languages", "license", "size", "origin", "url", "description",
            "description_zh", "mapping", "transform")
OPTIONAL = ("hub_id", "hub_config", "hub_split", "eval_split", "path", "hub_revision", "hub_data_files")
DATA_SUFFIXES = (".parquet", ".jsonl", ".json", ".csv")
LOCAL_JSONFILE = "local/jsonfile"


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    source: str
    hub_id: str | None
    hub_config: str | None
    hub_split: str
    eval_split: str | None
    kinds: tuple[str, ...]
    languages: tuple[str, ...]
    license: str
    size: str
    origin: tuple[str, ...]
    url: str
    description: str
    description_zh: str
    mapping: dict[str, str] = field(hash=False)
    transform: str = "columns"
    path: str | None = None
    # Repos whose loading script `datasets` >= 4 refuses: read the hub's parquet export or named files.
    hub_revision: str | None = None
    hub_data_files: dict[str, str] | None = field(default=None, hash=False)

    def describe(self, lang: str = "en") -> str:
        return self.description_zh if lang == "zh" and self.description_zh else self.description


class DatasetUnavailable(Exception):
    """A catalog dataset that cannot be loaded here; the message names it and says what to do."""

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


# ------------------------------------------------------------------------------------ loading
def _bad(eid: str, key: str, why: str) -> ValueError:
    return ValueError(f"dataset catalog entry {eid!r}: {key}: {why}")


def _str_list(raw: dict, key: str, eid: str) -> tuple[str, ...]:
    v = raw.get(key)
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise _bad(eid, key, f"must be a non-empty list of names, got {v!r}")
    return tuple(v)


def _opt_str(raw: dict, key: str, eid: str) -> str | None:
    v = raw.get(key)
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise _bad(eid, key, f"must be text, got {type(v).__name__}")
    return v


def _entry(raw: Any, index: int) -> CatalogEntry:
    if not isinstance(raw, dict):
        raise ValueError(  # noqa: TRY004 - the catalog contract: every bad entry is a ValueError
            f"dataset catalog entry #{index + 1} must be a mapping of keys, got {type(raw).__name__}")
    eid = raw.get("id")
    if not isinstance(eid, str) or not eid.strip():
        raise ValueError(f"dataset catalog entry #{index + 1}: id: missing or empty")
    for key in REQUIRED:
        if key not in raw:
            raise _bad(eid, key, "missing")
    unknown = sorted(set(raw) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise _bad(eid, unknown[0], f"unknown key (known: {', '.join(REQUIRED + OPTIONAL)})")
    source = raw["source"]
    if source not in SOURCES:
        raise _bad(eid, "source", f"must be one of {', '.join(SOURCES)}, got {source!r}")
    kinds = _str_list(raw, "kinds", eid)
    for k in kinds:
        if k not in tf.KINDS:
            raise _bad(eid, "kinds", f"unknown kind {k!r} (known: {', '.join(tf.KINDS)})")
    languages = _str_list(raw, "languages", eid)
    origin = _str_list(raw, "origin", eid)
    for o in origin:
        if o not in ORIGINS:
            raise _bad(eid, "origin", f"unknown origin {o!r} (known: {', '.join(ORIGINS)})")
    for key in ("license", "size", "description", "description_zh"):
        if not isinstance(raw[key], str) or not raw[key].strip():
            raise _bad(eid, key, "must be non-empty text")
    url = raw["url"] or ""
    if not isinstance(url, str) or (source != "bundled" and not url.strip()):
        raise _bad(eid, "url", "must be a web address")
    transform = raw["transform"]
    if not isinstance(transform, str) or transform not in set(tf.TRANSFORMS) | set(tf.RESERVED):
        raise _bad(eid, "transform", f"unknown transform {transform!r} (known: {', '.join(tf.known_names())})")
    mapping = raw["mapping"]
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise _bad(eid, "mapping", "must map internal fields to source column names")
    if transform in tf.TRANSFORMS:
        t = tf.TRANSFORMS[transform]
        for k in kinds:
            if k not in t.kinds:
                raise _bad(eid, "kinds", f"transform {transform!r} cannot produce {k!r} (it makes {', '.join(t.kinds)})")
        for f in mapping:
            if f not in t.reads:
                raise _bad(eid, "mapping", f"field {f!r} is not read by {transform!r} (it reads {', '.join(t.reads)})")
    elif "images" in kinds and not {"image", "text"} <= set(mapping):
        raise _bad(eid, "mapping", "images entries map the fields image and text")
    hub_id = _opt_str(raw, "hub_id", eid)
    path = _opt_str(raw, "path", eid)
    if source == "hub" and not hub_id:
        raise _bad(eid, "hub_id", "missing (hub entries name the Hugging Face dataset repo)")
    if source == "bundled" and not path:
        raise _bad(eid, "path", "missing (bundled entries name their file)")
    data_files = raw.get("hub_data_files")
    if isinstance(data_files, str):
        data_files = {_opt_str(raw, "hub_split", eid) or "train": data_files}
    if data_files is not None and (not isinstance(data_files, dict) or not data_files or not all(
            isinstance(k, str) and isinstance(v, str) and v for k, v in data_files.items())):
        raise _bad(eid, "hub_data_files", "must map split names to file patterns")
    return CatalogEntry(
        id=eid, source=source, hub_id=hub_id, hub_config=_opt_str(raw, "hub_config", eid),
        hub_split=_opt_str(raw, "hub_split", eid) or "train", eval_split=_opt_str(raw, "eval_split", eid),
        kinds=kinds, languages=languages, license=raw["license"], size=raw["size"], origin=origin, url=url,
        description=raw["description"].strip(), description_zh=raw["description_zh"].strip(),
        mapping=dict(mapping), transform=transform, path=path,
        hub_revision=_opt_str(raw, "hub_revision", eid), hub_data_files=data_files,
    )


def load_catalog(path: Path | None = None) -> list[CatalogEntry]:
    """All entries of the catalog file (default presets/datasets.yaml), validated."""
    import yaml

    p = Path(path) if path is not None else CATALOG_PATH
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ValueError(f"dataset catalog {p}: not valid YAML: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"dataset catalog {p}: must be a YAML list of entries")  # noqa: TRY004
    entries: list[CatalogEntry] = []
    seen: set[str] = set()
    for i, raw in enumerate(data):
        e = _entry(raw, i)
        if e.id in seen:
            raise _bad(e.id, "id", "duplicate id (each entry needs its own)")
        seen.add(e.id)
        entries.append(e)
    return entries


@functools.lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> tuple[CatalogEntry, ...]:
    return tuple(load_catalog(Path(path)))


def catalog(path: Path | None = None) -> tuple[CatalogEntry, ...]:
    """The catalog, re-read when the file changes."""
    p = Path(path) if path is not None else CATALOG_PATH
    return _cached(str(p), p.stat().st_mtime)


def get_entry(entry_id: str, path: Path | None = None) -> CatalogEntry:
    """The entry with this id (exact, else case-insensitive); KeyError naming close matches."""
    entries = catalog(path)
    key = str(entry_id or "").strip()
    for e in entries:
        if e.id == key:
            return e
    for e in entries:
        if e.id.lower() == key.lower():
            return e
    ids = [e.id for e in entries]
    close = difflib.get_close_matches(key, ids, n=3, cutoff=0.5)
    close += [i for i in ids if key and key.lower() in i.lower() and i not in close][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(ids)}"
    raise KeyError(f"no dataset {key!r} in the catalog{hint}")


# -------------------------------------------------------------------------------- local copies
def _local_names(entry: CatalogEntry) -> list[str]:
    if entry.source == "local":
        return [entry.id]
    if entry.source != "hub":
        return []
    names = [entry.hub_id]
    if entry.id != entry.hub_id:
        names.insert(0, entry.id)  # e.g. mkqa-Chinese, InstructionWild-en: own folder first
    return names


def local_copy_dirs(entry: CatalogEntry, data_dir: str | os.PathLike) -> list[Path]:
    """Where a local copy is looked for, first match wins."""
    root = datasets_dir(data_dir)
    if entry.source == "local":
        return [root / entry.id]
    out: list[Path] = []
    for name in _local_names(entry):
        for d in (root / "hub" / name, root / name):
            if d not in out:
                out.append(d)
    return out


def _is_saved(folder: Path) -> bool:
    return (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()


def _data_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in DATA_SUFFIXES
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def find_local_copy(entry: CatalogEntry, data_dir: str | os.PathLike) -> Path | None:
    """The first folder of :func:`local_copy_dirs` holding a saved dataset or data files."""
    for d in local_copy_dirs(entry, data_dir):
        if d.is_dir() and (_is_saved(d) or _data_files(d)):
            return d
    return None


def _load_dataset_call(entry: CatalogEntry) -> str:
    """The `datasets.load_dataset(...)` call that fetches this entry (for messages)."""
    args = [repr(entry.hub_id)]
    if entry.hub_config:
        args.append(repr(entry.hub_config))
    if entry.hub_revision:
        args.append(f"revision={entry.hub_revision!r}")
    if entry.hub_data_files:
        args.append(f"data_files={entry.hub_data_files!r}")
    return f"datasets.load_dataset({', '.join(args)})"


def unavailable_message(entry: CatalogEntry, data_dir: str | os.PathLike, lang: str = "en") -> str:
    """Plain words: why it can't load here and how to make a local copy that will."""
    dirs = local_copy_dirs(entry, data_dir)
    if entry.source == "local":
        folder = dirs[0]
        if lang == "zh":
            return (f"{entry.id}：没有找到 {folder / 'data' / 'train.json'}。请按 DeepSpeed-Chat 的格式放置 "
                    f"data/train.json（可选 data/eval.json），每个文件是 {{prompt, chosen, rejected}} 的 JSON 列表。")
        return (f"{entry.id}: {folder / 'data' / 'train.json'} not found. Put DeepSpeed-Chat's layout there: "
                f"data/train.json (and optionally data/eval.json), each a JSON list of {{prompt, chosen, rejected}}.")
    if entry.source == "bundled":
        if lang == "zh":
            return f"{entry.id}：内置文件 {entry.path} 缺失或不能在这里直接加载。"
        return f"{entry.id}: the bundled file {entry.path} is missing or is not loaded here."
    folder = dirs[0]
    short = folder.name
    name = entry.hub_id if entry.id == entry.hub_id else f"{entry.hub_id} ({entry.id})"
    cmd = (f"python -c \"import datasets; {_load_dataset_call(entry)}.save_to_disk('{short}')\"")
    if lang == "zh":
        return (f"没有网络/离线模式：无法在这里下载 {name}。请把本地副本放到 {folder} —— "
                f"在能联网的机器上运行：{cmd}，然后把 {short} 文件夹复制到那里（或只复制其中的 parquet/json 文件）。")
    return (f"no internet / offline mode: {name} can't be downloaded here. "
            f"Put a local copy at {folder} — on a machine with internet run: {cmd} "
            f"and copy the folder {short} there (or its parquet/json files).")


# ---------------------------------------------------------------------------------------- loading
def _split_re(split: str) -> re.Pattern:
    return re.compile(rf"(^|[/_.\-]){re.escape(split)}([/_.\-]|$)", re.IGNORECASE)


_KNOWN_SPLITS = ("train", "test", "validation", "valid", "dev", "eval")


def _split_files(entry: CatalogEntry, folder: Path, split: str) -> list[Path]:
    """The data files of `split` in a snapshot folder: the entry's file patterns when they match, else
    the files whose path names the split, else (for the training split) all files."""
    files = _data_files(folder)
    if entry.hub_data_files and split in entry.hub_data_files:
        pattern = entry.hub_data_files[split]
        hit = [f for f in files if fnmatch.fnmatch(f.relative_to(folder).as_posix(), pattern)]
        if hit:
            return hit
    rel = {f: f.relative_to(folder).as_posix() for f in files}
    hit = [f for f in files if _split_re(split).search(rel[f])]
    if hit:
        return hit
    if split == entry.hub_split:  # files that name no split are the training data
        return [f for f in files if not any(_split_re(s).search(rel[f]) for s in _KNOWN_SPLITS)]
    return []


def _load_local(entry: CatalogEntry, folder: Path, split: str):
    from datasets import DatasetDict, concatenate_datasets, load_from_disk

    if _is_saved(folder):
        ds = load_from_disk(str(folder))
        if isinstance(ds, DatasetDict):
            if split in ds:
                return ds[split]
            raise DatasetUnavailable(f"{entry.id}: the local copy at {folder} has no split {split!r}; "
                                     f"it has: {', '.join(ds)}")
        if split == entry.hub_split:
            return ds
        raise DatasetUnavailable(f"{entry.id}: the local copy at {folder} is one split (used as "
                                 f"{entry.hub_split}); there is no {split!r} split in it")
    files = _split_files(entry, folder, split)
    if not files:
        raise DatasetUnavailable(f"{entry.id}: the local copy at {folder} has no files for split {split!r} "
                                 f"(file names should contain it, e.g. data/{split}-00000-of-00001.parquet)")
    from backends.common.data import load_rows

    parts = [load_rows(f) for f in files]
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def _hub_kwargs(entry: CatalogEntry, split: str) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if entry.hub_revision:
        kw["revision"] = entry.hub_revision
    if entry.hub_data_files:
        if split not in entry.hub_data_files:
            raise DatasetUnavailable(f"{entry.id}: no {split!r} split is known for {entry.hub_id} "
                                     f"(known: {', '.join(entry.hub_data_files)})")
        kw["data_files"] = {split: entry.hub_data_files[split]}
    return kw


_PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_unreachable() -> str | None:
    """Why the hub surely can't be reached (its host name does not resolve), else None.

    huggingface_hub retries a failed lookup five times with back-off (~25 s); this answers at once.
    Behind a proxy the proxy resolves names, so no verdict is given there.
    """
    if any(os.environ.get(v) for v in _PROXY_VARS):
        return None
    from urllib.parse import urlparse

    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname
    if not host:
        return None
    try:
        socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve {host}: {e.strerror or e}"
    except OSError:
        return None
    return None


def load_entry(entry: CatalogEntry, data_dir: str | os.PathLike, *, offline: bool, split: str | None = None):
    """The rows of `entry` (split: None -> hub_split) as a `datasets.Dataset`, or DatasetUnavailable."""
    from backends.common.data import load_rows

    want = split or entry.hub_split
    if "images" in entry.kinds:
        raise DatasetUnavailable(f"{entry.id}: image folders are not loaded as a table here "
                                 f"(open it through backends.data.sources)")
    if entry.source == "bundled":
        p = ROOT / entry.path
        if not p.exists():
            raise DatasetUnavailable(unavailable_message(entry, data_dir))
        return load_rows(p)
    if entry.source == "local":
        folder = local_copy_dirs(entry, data_dir)[0]
        name = "train.json" if want == entry.hub_split else "eval.json"
        f = folder / "data" / name
        if not (folder / "data" / "train.json").is_file():
            raise DatasetUnavailable(unavailable_message(entry, data_dir))
        if not f.is_file():
            raise DatasetUnavailable(f"{entry.id}: {f} not found (the eval split is optional in "
                                     f"DeepSpeed-Chat's layout; add it or use the train split)")
        return load_rows(f)
    copy = find_local_copy(entry, data_dir)
    if copy is not None:
        return _load_local(entry, copy, want)
    if offline:
        raise DatasetUnavailable(unavailable_message(entry, data_dir))
    kwargs = _hub_kwargs(entry, want)
    reason = hub_unreachable()
    if reason:
        raise DatasetUnavailable(f"{unavailable_message(entry, data_dir)}\n({reason})")
    import datasets

    try:
        return datasets.load_dataset(entry.hub_id, entry.hub_config, split=want,
                                     cache_dir=str(paths.data_dir(data_dir) / "hf-cache"), **kwargs)
    except Exception as e:  # ConnectionError, OSError, datasets' own errors: all mean "not here"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DatasetUnavailable(f"{unavailable_message(entry, data_dir)}\n({type(e).__name__}: {first})") from e


__all__ = [
    "CATALOG_PATH",
    "CatalogEntry",
    "DatasetUnavailable",
    "catalog",
    "find_local_copy",
    "get_entry",
    "hub_unreachable",
    "load_catalog",
    "load_entry",
    "local_copy_dirs",
    "unavailable_message",
]
