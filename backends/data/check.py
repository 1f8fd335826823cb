"""Open + map + validate + split: the one routine behind the Datasets tab and `python -m backends.data`."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from backends.common import data as datalib
from backends.common import modeling, paths
from backends.common.errors import FieldError

from . import catalog
from .report import Report, validate
from .shapes import auto_mapping, check_kind, check_mapping, reads
from .sources import Opened, open_source

DEFAULT_MODEL = {"images": "bundled:tiny-sd"}
DEFAULT_LM = "bundled:smollm2"


@dataclass
class CheckOptions:
    kind: str = "sft"
    mapping: dict[str, str] | None = None     # None: auto-detect (or the catalog entry's)
    transform: str | None = None              # None: auto-detect (or the catalog entry's)
    model: str = ""                           # tokenizer for token lengths ("" = the kind's bundled default)
    max_len: int = 512
    drop_bad: bool = True
    drop_too_long: bool = False
    data_split: str = ""
    eval_ratio: float = 0.0
    seed: int = 1234
    split: str | None = None                  # a split of a saved DatasetDict / hub set, or eval for local/jsonfile

    def validated(self) -> CheckOptions:
        check_kind(self.kind)
        if not isinstance(self.max_len, int) or self.max_len < 1:
            raise FieldError("max_len", f"must be a positive whole number, got {self.max_len!r}")
        if not 0 <= float(self.eval_ratio) < 1:
            raise FieldError("eval_ratio", f"must be in [0, 1), got {self.eval_ratio!r}")
        datalib.parse_data_split(self.data_split)
        return self


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str, subfolder: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path, subfolder=subfolder or "")


def load_tokenizer(model: str, data_dir, kind: str):
    """(tokenizer, label, note): note says why lengths are skipped when the tokenizer is not there."""
    spec = model or DEFAULT_MODEL.get(kind, DEFAULT_LM)
    path = modeling.resolve_model(spec, data_dir, field="model")
    p = Path(path)
    if not p.is_dir():
        hint = " (python -m backends.bundled prepare)" if spec.startswith("bundled:") else ""
        return None, spec, f"token lengths skipped: no local model at {spec}{hint}"
    sub = "tokenizer" if (p / "model_index.json").is_file() else ""
    try:
        return _tokenizer(str(p), sub), spec, ""
    except (OSError, ValueError) as e:
        return None, spec, f"token lengths skipped: cannot load the tokenizer of {spec}: {str(e).splitlines()[0]}"


def default_mapping(opened: Opened, kind: str, transform: str | None = None) -> tuple[dict[str, str], str]:
    """The catalog entry's mapping when it fits the kind (and the transform, if one is asked for), else the
    auto-detected one; with a transform the columns do not suggest, each field maps to a column of its name."""
    e = opened.entry
    if e is not None and kind in e.kinds and transform in (None, e.transform):
        fields = reads(kind, e.transform)
        if e.transform != "columns" or all(e.mapping.get(f) for f in fields if f != "messages"):
            return dict(e.mapping), e.transform
    mapping, auto_tr = auto_mapping(opened.columns, opened.table.rows[:20], kind)
    if transform is not None and transform != auto_tr:
        return {f: (f if f in opened.columns else "") for f in reads(kind, transform)}, transform
    return mapping, auto_tr


def resolve_mapping(opened: Opened, opts: CheckOptions) -> tuple[dict[str, str], str]:
    """The mapping and transform to use: given ones win, else the catalog entry's, else auto-detected."""
    mapping, transform = default_mapping(opened, opts.kind)
    if opts.transform:
        transform = opts.transform
        if opts.mapping is None and transform != "columns":
            mapping = {f: mapping.get(f) or f for f in reads(opts.kind, transform)}
    if opts.mapping:
        mapping = {**mapping, **opts.mapping}
        if opts.kind == "sft" and "messages" in opts.mapping and opts.mapping["messages"]:
            mapping["prompt"] = mapping["response"] = ""
    return mapping, transform


def check_opened(opened: Opened, opts: CheckOptions, data_dir) -> tuple[Report, list[dict]]:
    mapping, transform = resolve_mapping(opened, opts)
    label = opened.label
    try:
        check_mapping(opened.columns, opts.kind, mapping, transform, source=label)
    except FieldError as e:
        rep, _ = validate(opened.table, opts.kind, mapping, transform, source=label, fatal=f"{e.field}: {e.message}")
        rep.format = opened.format
        return rep, []
    tok, tok_name, note = load_tokenizer(opts.model, data_dir, opts.kind)
    rep, rows = validate(opened.table, opts.kind, mapping, transform, source=label, tokenizer=tok,
                         tokenizer_name=tok_name, max_len=opts.max_len, drop_bad=opts.drop_bad,
                         drop_too_long=opts.drop_too_long, image_folder=opened.image_folder)
    rep.format = opened.format
    rep.notes += opened.notes + ([note] if note else [])
    if rows:
        rep.splits = datalib.split_counts(len(rows), opts.data_split, float(opts.eval_ratio))
    return rep, rows


def check(spec: str, opts: CheckOptions, data_dir: str | os.PathLike | None = None, *, offline: bool = False,
          confine: bool = False) -> tuple[Opened | None, Report, list[dict]]:
    """(what was opened or None, the report, the rows a save would write). Never raises for bad data:
    an unreadable source becomes a report with `fatal` set; bad options raise FieldError."""
    opts.validated()
    dd = paths.data_dir(data_dir)
    try:
        opened = open_source(spec, dd, offline=offline, confine_to_data_dir=confine, split=opts.split)
    except (FieldError, catalog.DatasetUnavailable) as e:
        msg = f"{e.field}: {e.message}" if isinstance(e, FieldError) else str(e)
        return None, Report(source=str(spec), format="", kind=opts.kind, mapping=opts.mapping or {},
                            transform=opts.transform or "", fatal=msg, drop_bad=opts.drop_bad), []
    rep, rows = check_opened(opened, opts, dd)
    return opened, rep, rows
