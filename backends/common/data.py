"""Datasets and prompt templates shared by the backends.

- :func:`resolve_dataset` finds a dataset file (path, `bundled:demo_sft`, a name under `<data-dir>/datasets`);
- :func:`peek` reads only the first rows (cheap validation from the UI);
- :func:`load_rows` loads json / jsonl / csv / parquet (or a `save_to_disk` folder) into a `datasets.Dataset`;
- :func:`check_columns` names the missing mapped column and the columns found;
- :func:`to_prompt_completion` turns prompt/response rows or chat `messages` rows into TRL's prompt-completion
  format, so TRL masks the prompt (completion-only loss) and pads per batch;
- :func:`row_turns` reads any stored row (the studio's shapes, DS-Chat / Anthropic text, messages) as turns;
- :func:`format_prompt` renders turns with a template: the one render path of training and generation.

Templates:
  chat    the model's own chat template (conversational prompt/completion; the tokenizer renders it)
  dschat  DeepSpeed-Chat's `Human: …\\n\\nAssistant: …` (the response starts with a space, like DS-Chat)
  plain   `prompt\\n` then the response, no markup
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any

from .config import TEMPLATES  # declared with the schema field that offers them (DataFields.template)
from .errors import FieldError
from . import paths
from .paths import ROOT, datasets_dir

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
_SUFFIX_LIST = "/".join(SUFFIXES)  # ".jsonl/.json/.csv/.tsv/.parquet", for messages
MAX_FOLDER_ENTRIES = 10_000  # a folder given as a dataset is walked at most this far
BUNDLED_DIR = ROOT / "presets" / "datasets"  # the samples the project ships: nameable from the page
BUNDLED_DATASETS = {"demo_sft": BUNDLED_DIR / "demo_sft.jsonl"}
DEMO_SFT = BUNDLED_DATASETS["demo_sft"]
# A studio dataset (made on the Datasets tab or by `python -m backends.data save`) is a folder under
# <data-dir>/datasets holding the card and the mapped, validated rows.
STUDIO_CARD = "studio-dataset.yaml"
STUDIO_DATA = "data.jsonl"


# ------------------------------------------------------------------------------------ locating
def resolve_dataset(value: str, data_dir: str | os.PathLike | None = None, *, field: str = "dataset",
                    confine: bool | None = None) -> Path:
    """The dataset file (or save_to_disk folder) named by `value`.

    Tries, in order: `bundled:<name>`; the path as given (absolute, or relative to the working dir);
    `<data-dir>/datasets/<value>`; the project root (so `presets/datasets/demo_sft.jsonl` works from anywhere).

    Confined (the default when a data dir is given, as the studio always gives one): the path must resolve,
    symlinks included, inside the data dir or the bundled samples (presets/datasets); a relative path is tried
    under `<data-dir>/datasets`, the data dir (as the Datasets tab lists it) and the project root, not the working
    dir. Anything else gets the Datasets tab's "outside the data dir" message, whether it exists or not. By hand,
    without --data_dir, any readable file may be named.
    """
    v = str(value or "").strip()
    if not v:
        raise FieldError(field, f"is empty: give a {_SUFFIX_LIST} file of prompt/response rows")
    if v.startswith("bundled:"):
        name = v.split(":", 1)[1]
        if name not in BUNDLED_DATASETS:
            raise FieldError(field, f"unknown bundled dataset {name!r}; known: {', '.join(BUNDLED_DATASETS)}")
        return BUNDLED_DATASETS[name]
    confine = data_dir is not None if confine is None else confine
    dd = paths.data_dir(data_dir)

    def allowed(c: Path) -> bool:
        return not confine or paths.inside(c, dd) or paths.inside(c, BUNDLED_DIR)

    def checked(found: Path, shown: str) -> Path:
        if not allowed(found):  # a link inside the data dir that points out of it
            raise paths.outside_data_dir(shown, dd, found, field=field)
        return found.resolve()

    p = Path(v).expanduser()
    candidates = [p]
    if not p.is_absolute():
        # confined: not the working dir, only the data dir and the bundled samples under the project root
        candidates = [datasets_dir(dd) / p, dd / p, ROOT / p] if confine else [p, datasets_dir(dd) / p, ROOT / p]
    if not any(allowed(c) for c in candidates):  # refused before anything is read or walked
        raise paths.outside_data_dir(v, dd, p if p.is_absolute() else dd / p, field=field)
    for c in candidates:
        if not allowed(c):
            if os.path.lexists(c):  # there, but a link (or ../) leads out of the data dir
                raise paths.outside_data_dir(v, dd, c, field=field)
            continue
        if c.is_dir() and (c / STUDIO_CARD).is_file():  # a studio dataset: its mapped rows
            return checked(c / STUDIO_DATA, v)
        if c.is_file() or (c.is_dir() and (_is_saved_dataset(c) or data_files(c, field=field))):
            for f in data_files(c, field=field) if confine and c.is_dir() else []:
                checked(f, str(f))
            return checked(c, v)
    for c in candidates:
        if c.is_dir() and allowed(c):
            raise FieldError(field, f"{c} is a folder without {_SUFFIX_LIST} files")
    if confine:
        where = f" (looked in {dd})"
    else:
        where = f" (looked in the working dir, {datasets_dir(dd)} and {ROOT})" if not p.is_absolute() else ""
    raise FieldError(field, f"file not found: {v}{where}")


def split_dataset_list(value: str) -> list[str]:
    """`a.jsonl, Dahoas/rm-static` -> ["a.jsonl", "Dahoas/rm-static"] (DeepSpeed-Chat blends several sets)."""
    return [x.strip() for x in str(value or "").split(",") if x.strip()]


def resolve_datasets(value: str, data_dir: str | os.PathLike | None = None, *, field: str = "dataset") -> list[Path]:
    names = split_dataset_list(value)
    if not names:
        raise FieldError(field, f"is empty: give a {_SUFFIX_LIST} file of prompt/response rows")
    return [resolve_dataset(n, data_dir, field=field) for n in names]


def _is_saved_dataset(p: Path) -> bool:
    return (p / "state.json").is_file() or (p / "dataset_dict.json").is_file()


def data_files(folder: Path, *, field: str = "dataset", limit: int = MAX_FOLDER_ENTRIES) -> list[Path]:
    """Data files of a dataset folder (e.g. a hub snapshot with data/train-*.parquet): the train files if
    any file name says 'train', else all of them. Hidden entries are skipped and links to folders are not
    followed; a folder of more than `limit` entries is refused, so a typed `/usr` cannot hold a worker."""
    folder = Path(folder)
    files: list[Path] = []
    seen = 0
    for top, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        seen += len(dirs) + len(names)
        if seen > limit:
            raise FieldError(field, f"{folder} holds more than {limit} entries; give the data file itself or a "
                                    f"folder of only the data files")
        files += [Path(top) / n for n in names if not n.startswith(".") and Path(n).suffix.lower() in SUFFIXES
                  and (Path(top) / n).is_file()]
    files.sort()
    train = [f for f in files if "train" in f.name.lower()]
    return train or files


def _kind(path: Path, field: str = "dataset") -> str:
    if path.is_dir():
        return "arrow" if _is_saved_dataset(path) else "folder"
    suf = path.suffix.lower()
    if suf in (".jsonl", ".ndjson"):
        return "jsonl"
    if suf == ".json":
        return "json"
    if suf in (".csv", ".tsv"):
        return "csv"
    if suf == ".parquet":
        return "parquet"
    raise FieldError(field, f"unsupported file type {path.suffix!r} ({path.name}); use "
                            f"{', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]}")


# --------------------------------------------------------------------------------------- reading
@dataclass
class Table:
    """A data file read into rows, with where each row came from (for messages that name the line).

    `problems` holds rows that could not be read cleanly (a bad JSON line, a ragged CSV row), as
    (row index or None, column or "", message); `strict` readers raise on the first one instead.
    """
    path: Path
    format: str                       # jsonl json csv tsv parquet arrow
    rows: list[dict]
    where: list[str]                  # per row: "line 12", "item 3", "row 7"
    columns: list[str]
    problems: list[tuple[int | None, str, str]] = dc_field(default_factory=list)


def _columns_of(rows: Iterable[dict]) -> list[str]:
    cols: list[str] = []
    seen: set[str] = set()
    for r in rows:
        for k in r:
            if k not in seen:
                seen.add(k)
                cols.append(k)
    return cols


def read_text(path: Path, field: str = "dataset") -> str:
    """The file as text, or a FieldError saying plainly why not: empty, binary, UTF-16, not UTF-8."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FieldError(field, f"cannot read {path.name}: {e.strerror or e}") from None
    if not raw.strip():
        raise FieldError(field, f"{path.name} is empty ({len(raw)} bytes)")
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise FieldError(field, f"{path.name} is UTF-16 text; save it as UTF-8")
    head = raw[:65536]
    if b"\x00" in head:
        at = head.index(b"\x00")
        raise FieldError(field, f"{path.name} is not a text file (binary data at byte {at}); "
                                f"is it really {path.suffix.lstrip('.') or 'text'}?")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise FieldError(field, f"{path.name} is not UTF-8 text: byte 0x{raw[e.start]:02X} at line {line}. "
                                f"Save it as UTF-8 (for GBK/GB18030 files: iconv -f GB18030 -t UTF-8 "
                                f"{path.name} > fixed.{path.suffix.lstrip('.')})") from None


def _jsonl_rows(path: Path, text: str, field: str, strict: bool) -> Table:
    rows, where, problems = [], [], []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            msg = f"{path.name} line {i} is not valid JSON: {e.msg} (column {e.colno})"
            if strict:
                raise FieldError(field, msg) from None
            problems.append((None, "", msg))
            continue
        if not isinstance(row, dict):
            msg = f"{path.name} line {i} must be a JSON object, got {type(row).__name__}"
            if strict:
                raise FieldError(field, msg)
            problems.append((None, "", msg))
            continue
        rows.append(row)
        where.append(f"line {i}")
    if not rows:
        if problems:
            raise FieldError(field, problems[0][2] + (f" (and {len(problems) - 1} more bad lines; no line could "
                                                       f"be read)" if len(problems) > 1 else ""))
        raise FieldError(field, f"{path.name} has no rows")
    return Table(path, "jsonl", rows, where, _columns_of(rows), problems)


def _json_rows(path: Path, text: str, field: str, strict: bool) -> Table:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        first = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
        try:  # JSON lines saved as .json: the first line alone is an object
            json_lines = isinstance(json.loads(first), dict)
        except json.JSONDecodeError:
            json_lines = False
        if json_lines:
            t = _jsonl_rows(path, text, field, strict)
            return Table(path, "jsonl", t.rows, t.where, t.columns, t.problems)
        raise FieldError(field, f"{path.name} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if isinstance(data, dict):
        for key in ("data", "rows", "train"):
            if isinstance(data.get(key), list):
                data = data[key]
                break
    if not isinstance(data, list):
        raise FieldError(field, f"{path.name} must be a JSON list of objects (or JSON lines), "
                                f"got a JSON {type(data).__name__}")
    if not data:
        raise FieldError(field, f"{path.name} has no rows (an empty list)")
    for i, r in enumerate(data, 1):
        if not isinstance(r, dict):
            raise FieldError(field, f"{path.name} item {i} must be a JSON object, got {type(r).__name__}")
    return Table(path, "json", data, [f"item {i}" for i in range(1, len(data) + 1)], _columns_of(data))


def _csv_rows(path: Path, text: str, field: str, strict: bool) -> Table:
    delim = "\t" if path.suffix.lower() == ".tsv" else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delim)
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)
        if header is None:
            raise FieldError(field, f"{path.name} has no header row")
        header = [h.strip() for h in header]
        rows, where, problems = [], [], []
        line = reader.line_num
        for rec in reader:
            start, line = line + 1, reader.line_num
            if not rec or not any(c.strip() for c in rec):
                continue
            if len(rec) != len(header):
                msg = (f"{path.name} line {start} has {len(rec)} fields, the header has {len(header)} "
                       f"({', '.join(header)})")
                if strict:
                    raise FieldError(field, msg)
                problems.append((len(rows), "", msg))
            row = {h: (rec[j] if j < len(rec) else None) for j, h in enumerate(header)}
            rows.append(row)
            where.append(f"line {start}")
    except csv.Error as e:
        raise FieldError(field, f"{path.name} line {reader.line_num} is not valid CSV: {e}") from None
    if not rows:
        raise FieldError(field, f"{path.name} has a header but no rows")
    return Table(path, "tsv" if delim == "\t" else "csv", rows, where, header, problems)


def _parquet_rows(path: Path, field: str) -> Table:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise FieldError(field, f"{path.name} is not a readable parquet file: {str(e).splitlines()[0]}") from None
    if table.num_rows == 0:
        raise FieldError(field, f"{path.name} has 0 rows (columns: {', '.join(table.column_names) or 'none'})")
    rows = table.to_pylist()
    return Table(path, "parquet", rows, [f"row {i}" for i in range(1, len(rows) + 1)], list(table.column_names))


def _arrow_rows(path: Path, field: str, split: str | None = None) -> Table:
    ds = _load_arrow(path, split)
    if len(ds) == 0:
        raise FieldError(field, f"{path.name} has 0 rows")
    rows = ds.to_list()
    return Table(path, "arrow", rows, [f"row {i}" for i in range(1, len(rows) + 1)], list(ds.column_names))


def read_table(path: Path, *, field: str = "dataset", strict: bool = False, split: str | None = None) -> Table:
    """Any supported file (or a save_to_disk folder, or a folder of data files) as a Table."""
    kind = _kind(path, field)
    if kind == "folder":
        files = data_files(path)
        if not files:
            raise FieldError(field, f"{path} holds no {_SUFFIX_LIST} files")
        tables = [read_table(f, field=field, strict=strict) for f in files]
        if len(tables) == 1:
            return tables[0]
        rows, where, problems = [], [], []
        for tb in tables:
            problems += [(None if i is None else i + len(rows), c, m) for i, c, m in tb.problems]
            rows += tb.rows
            where += [f"{tb.path.name} {w}" for w in tb.where]
        return Table(path, tables[0].format, rows, where, _columns_of(rows), problems)
    if kind == "arrow":
        return _arrow_rows(path, field, split)
    if kind == "parquet":
        return _parquet_rows(path, field)
    text = read_text(path, field)
    if kind == "jsonl":
        return _jsonl_rows(path, text, field, strict)
    if kind == "json":
        return _json_rows(path, text, field, strict)
    return _csv_rows(path, text, field, strict)


def peek(path: Path, n: int = 5, *, field: str = "dataset") -> tuple[list[str], list[dict]]:
    """(column names, first `n` rows); a bad row anywhere in the file is an error (training reads it all)."""
    tb = read_table(path, field=field, strict=True)
    return tb.columns, tb.rows[:n]


def _load_arrow(path: Path, split: str | None = None):
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if split and split in ds:
            return ds[split]
        ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
    return ds


def load_rows(path: Path, *, field: str = "dataset"):
    """The whole file as an in-memory `datasets.Dataset` (no cache files: safe with several ranks)."""
    from datasets import Dataset

    kind = _kind(path, field)
    if kind == "arrow":
        return _load_arrow(path)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return Dataset(pq.read_table(path))
    if kind == "folder":
        from datasets import concatenate_datasets

        return concatenate_datasets([load_rows(f, field=field) for f in data_files(path)])
    tb = read_table(path, field=field, strict=True)
    # every column of every row (from_list would keep only the first row's keys: a later `history` was lost)
    return Dataset.from_dict({c: [r.get(c) for r in tb.rows] for c in tb.columns})


# ------------------------------------------------------------------------------------- columns
def detect_format(columns: Iterable[str], prompt_column: str, response_column: str, messages_column: str) -> str:
    """'prompt_response' or 'messages' (prompt/response wins when both are present)."""
    cols = set(columns)
    if prompt_column in cols and response_column in cols:
        return "prompt_response"
    if messages_column and messages_column in cols:
        return "messages"
    return ""


def check_columns(columns: list[str], prompt_column: str, response_column: str, messages_column: str,
                  *, source: str = "dataset") -> str:
    """The format, or a FieldError naming the mapping field, the missing column and the columns found."""
    fmt = detect_format(columns, prompt_column, response_column, messages_column)
    if fmt:
        return fmt
    found = ", ".join(columns) or "(none)"
    cols = set(columns)
    if prompt_column not in cols and (response_column in cols or not messages_column):
        fld, col = "prompt_column", prompt_column
    elif response_column not in cols and prompt_column in cols:
        fld, col = "response_column", response_column
    else:
        fld, col = "prompt_column", prompt_column
    also = f" (and no {messages_column!r} column for chat rows)" if messages_column else ""
    raise FieldError(fld, f"column {col!r} not found in {source}{also}; columns found: {found}. "
                          f"Set {fld} to one of them")


def check_rows(rows: list[dict], fmt: str, prompt_column: str, response_column: str, messages_column: str,
               *, source: str = "dataset") -> None:
    """Light checks on a few rows: text in the mapped columns, messages as a list of role/content dicts."""
    for i, row in enumerate(rows, 1):
        if fmt == "prompt_response":
            for fld, col in (("prompt_column", prompt_column), ("response_column", response_column)):
                v = row.get(col)
                if fld == "prompt_column" and isinstance(v, list):  # a multi-turn prompt (turns)
                    try:
                        parse_turns(v)
                    except (ValueError, TypeError) as e:
                        raise FieldError(fld, f"row {i} of {source}: column {col!r}: {e}") from None
                    continue
                if v is not None and not isinstance(v, (str, int, float)):
                    raise FieldError(fld, f"row {i} of {source}: column {col!r} must hold text, "
                                          f"got {type(v).__name__}")
        else:
            msgs = row.get(messages_column)
            try:
                normalize_messages(msgs)
            except (ValueError, TypeError) as e:
                raise FieldError("messages_column", f"row {i} of {source}: {e}") from None


_ROLE_ALIASES = {"human": "user", "gpt": "assistant", "bot": "assistant", "model": "assistant", "user": "user",
                 "assistant": "assistant", "system": "system"}


def _normalize_turns(msgs: Any) -> list[dict[str, str]]:
    """[{"role", "content"}] with roles user/assistant/system (accepts ShareGPT's from/value, a JSON string)."""
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            raise ValueError("messages must be a list of {role, content} objects, got a string") from None
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("messages must be a non-empty list of {role, content} objects")
    out = []
    for m in msgs:
        if not isinstance(m, dict):
            raise TypeError("each message must be an object with role and content")
        role = m.get("role", m.get("from"))
        content = m.get("content", m.get("value"))
        role = _ROLE_ALIASES.get(str(role).lower()) if role is not None else None
        if role is None or content is None:
            raise ValueError(f"message without role/content: {m}")
        out.append({"role": role, "content": str(content)})
    return out


def normalize_messages(msgs: Any) -> list[dict[str, str]]:
    """[{"role", "content"}] with roles user/assistant/system (accepts ShareGPT's from/value)."""
    out = _normalize_turns(msgs)
    if out[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's answer (the part that is trained)")
    return out


# -------------------------------------------------------------------------------------- turns
# Stored rows keep the conversation, never a rendered template (see backends/data/shapes.py):
#   sft         {"prompt": str, "response": str}            or {"messages": [{"role", "content"}, ..., answer]}
#   preference  {"prompt": str, "chosen": str, "rejected": str}
#   prompt      {"prompt": str}
# "prompt" is the user's last message as they wrote it, with no template words; a multi-turn conversation adds
# "history": [{"role", "content"}, ...], the turns before it (system / user / assistant). `row_turns` reads any
# of these, and also text in DeepSpeed-Chat's form (" Human: q Assistant:", Anthropic's "\n\nHuman: q\n\n
# Assistant: a\n\nHuman: …", studio datasets saved before turns were kept); `format_prompt` renders turns with
# a template. Training (SFT, reward, DPO, PPO) and inference (A/B chat, ab_eval) go through these two, so a
# model is asked in exactly the form it was trained on.
_DS_MARK = re.compile(r"(?:^|(?<=\s))(Human|Assistant):")


def _is_dschat_text(text: str) -> bool:
    """Text in DS-Chat / Anthropic form: starts with `Human:`, or holds a `Human:` turn and ends with `Assistant:`."""
    s = text.strip()
    if s.startswith("Human:"):
        return True
    return s.endswith("Assistant:") and any(m.group(1) == "Human" for m in _DS_MARK.finditer(s))


def _parse_dschat(text: str) -> list[dict[str, str]]:
    """DS-Chat / Anthropic text -> turns; a trailing empty `Assistant:` (the generation cue) is dropped, text
    before the first `Human:` becomes a system turn."""
    s = text.strip()
    marks = list(_DS_MARK.finditer(s))
    turns = []
    head = s[:marks[0].start()].strip() if marks else s
    if head:
        turns.append({"role": "system", "content": head})
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(s)
        content = s[m.end():end].strip()
        role = "user" if m.group(1) == "Human" else "assistant"
        if role == "assistant" and not content and i == len(marks) - 1:
            continue
        turns.append({"role": role, "content": content})
    return turns


def parse_turns(value: Any) -> list[dict[str, str]]:
    """A stored prompt as turns: plain text is one user turn; DS-Chat-shaped text is split into its turns; a list
    of {role, content} (or ShareGPT {from, value}) turns is normalised. ValueError/TypeError when it is none."""
    if isinstance(value, str):
        if _is_dschat_text(value):
            return _parse_dschat(value)
        return [{"role": "user", "content": value}]
    turns = _normalize_turns(value)
    if len(turns) == 1 and turns[0]["role"] == "user" and _is_dschat_text(turns[0]["content"]):
        return _parse_dschat(turns[0]["content"])
    return turns


def prompt_fields(turns: list[dict[str, str]]) -> dict[str, Any]:
    """How a prompt is stored: {"prompt": the last user turn's text} plus {"history": the turns before it} when
    there are any. ValueError when the turns do not end with the user's."""
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the prompt must end with the user's turn")
    out: dict[str, Any] = {"prompt": turns[-1]["content"]}
    if len(turns) > 1:
        out["history"] = [dict(t) for t in turns[:-1]]
    return out


def _answer_text(value: Any) -> str:
    """An answer field: text (DS-Chat's leading space dropped), or a TRL-style [{"role": "assistant", ...}]."""
    if isinstance(value, list):
        turns = _normalize_turns(value)
        if turns[-1]["role"] != "assistant":
            raise ValueError("the answer's last turn is not the assistant's")
        value = turns[-1]["content"]
    return str(value).strip()


def row_turns(row: dict, answer: str | None = "response", *, prompt_column: str = "prompt",
              messages_column: str = "messages") -> list[dict[str, str]]:
    """Any stored row as turns [{role, content}]: its `history`, then its prompt (parsed by :func:`parse_turns`,
    so DS-Chat text and lists of turns are read too), then its answer.

    `answer` names the field holding the assistant's answer (response for SFT, chosen or rejected for preference
    rows), appended as the last assistant turn. answer=None gives the prompt's turns only (what a model is asked),
    also for a `messages` row (its turns before the last assistant answer). A row with `messages` and no prompt
    value reads its messages.
    """
    if messages_column and row.get(messages_column) is not None and row.get(prompt_column) is None:
        turns = _normalize_turns(row[messages_column])
        if answer is None and turns[-1]["role"] == "assistant":
            turns = turns[:-1]
        if not turns:
            raise ValueError("messages hold no turn before the assistant's answer")
        return turns
    if row.get(prompt_column) is None:
        raise ValueError(f"no {prompt_column!r} value")
    history = _normalize_turns(row["history"]) if row.get("history") else []
    turns = [*history, *parse_turns(row[prompt_column])]
    if answer is not None:
        if row.get(answer) is None:
            raise ValueError(f"no {answer!r} value")
        turns.append({"role": "assistant", "content": _answer_text(row[answer])})
    return turns


def user_text(row: dict) -> str:
    """The user's words of a stored row (its user turns), without template words: what a language mix counts."""
    try:
        turns = row_turns(row, answer=None)
    except (TypeError, ValueError):
        return ""
    return "\n".join(t["content"] for t in turns if t["role"] == "user")


# ----------------------------------------------------------------------------------- templates
def dschat_prompt(turns: list[dict[str, str]]) -> str:
    """DeepSpeed-Chat / Anthropic-HH style history ending with `Assistant:` (the answer adds ' ...')."""
    parts = []
    for m in turns:
        if m["role"] == "system":
            parts.append(m["content"])
        elif m["role"] == "user":
            parts.append(f"Human: {m['content']}")
        else:
            parts.append(f"Assistant: {m['content']}")
    parts.append("Assistant:")
    return "\n\n".join(parts)


def plain_prompt(turns: list[dict[str, str]]) -> str:
    return "".join(m["content"] + "\n" for m in turns)


def format_prompt(prompt: str | list[dict[str, str]], template: str, tokenizer=None) -> str:
    """The text a model is given before its answer, for training and generation alike (the one render path).

    `prompt` is a stored prompt (see :func:`parse_turns`: text, DS-Chat text, or turns ending with the user's).
    chat: tokenizer.apply_chat_template(turns, add_generation_prompt=True), the call TRL makes on a
    conversational prompt; dschat: `Human: …\\n\\nAssistant:`; plain: each turn on its own line.
    """
    turns = parse_turns(prompt)
    if template == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template 'chat' needs a tokenizer with a chat template")
        return tokenizer.apply_chat_template(turns, add_generation_prompt=True, tokenize=False)
    if template == "dschat":
        return dschat_prompt(turns)
    if template == "plain":
        return plain_prompt(turns)
    raise ValueError(f"unknown template {template!r}")


def format_answer(answer: str, template: str) -> str:
    """An answer as it follows the prompt: DS-Chat's leading space for dschat, as is otherwise (for chat the
    tokenizer's template adds its markup when the answer is given as an assistant turn)."""
    return " " + answer.lstrip() if template == "dschat" else answer


def reward_text(prompt_text: str, answer: str, template: str, eos_token: str = "") -> str:
    """What a reward model reads, the one rendering for training and scoring: the rendered prompt, the answer as
    the template joins it (:func:`format_answer`), and the end-of-sequence token TRL's RewardTrainer appends to
    every answer it trains on. The A/B tab, score-a-pair, PPO and GRPO/RLOO score this text."""
    text = prompt_text + format_answer(str(answer).strip(), template)
    return text if not eos_token or text.endswith(eos_token) else text + eos_token


def to_prompt_completion(ds, *, template: str, prompt_column: str = "prompt", response_column: str = "response",
                         messages_column: str = "messages", fmt: str | None = None):
    """Rows -> TRL prompt-completion rows (TRL masks the prompt unless completion_only_loss=False).

    Each row is read as turns by :func:`row_turns` (so DS-Chat-shaped text is parsed, never wrapped twice).
    chat: conversational `prompt` (turns before the last answer) and `completion` ([last answer]), which TRL
    renders with the tokenizer's chat template (add_generation_prompt=True, as :func:`format_prompt`);
    dschat/plain: strings from :func:`format_prompt` / :func:`format_answer`.
    """
    if template not in TEMPLATES:
        raise FieldError("template", f"must be one of {', '.join(TEMPLATES)}; got {template!r}")
    fmt = fmt or check_columns(list(ds.column_names), prompt_column, response_column, messages_column)

    def convert(row):
        if fmt == "prompt_response" and row.get(prompt_column) is not None:
            turns = row_turns(row, response_column, prompt_column=prompt_column, messages_column="")
        else:
            turns = normalize_messages(row[messages_column])
        history, answer = turns[:-1], turns[-1]
        if template == "chat":  # TRL renders it: apply_chat_template(prompt, add_generation_prompt=True)
            return {"prompt": history, "completion": [answer]}
        return {"prompt": format_prompt(history, template), "completion": format_answer(answer["content"], template)}

    if fmt == "prompt_response":
        msgs = messages_column if messages_column in ds.column_names else ""
        ds = ds.filter(lambda r: (r[prompt_column] is not None and r[response_column] is not None)
                       or bool(msgs and r[msgs] is not None))
    return ds.map(convert, remove_columns=list(ds.column_names))


def to_preference(ds, *, template: str, prompt_column: str = "prompt", chosen_column: str = "chosen",
                  rejected_column: str = "rejected"):
    """Preference rows (any stored shape, see :func:`row_turns`) -> TRL's preference rows, for the reward model and
    DPO. chat: conversational `prompt` (turns) and `chosen` / `rejected` ([assistant answer]), which TRL renders
    with the tokenizer's chat template; dschat/plain: strings from :func:`format_prompt` / :func:`format_answer`
    (a reward text is then prompt + answer, as `backends.infer.chat.RewardScorer.score` builds it)."""
    if template not in TEMPLATES:
        raise FieldError("template", f"must be one of {', '.join(TEMPLATES)}; got {template!r}")

    def convert(row):
        turns = row_turns(row, None, prompt_column=prompt_column, messages_column="")
        pair = {k: _answer_text(row[c]) for k, c in (("chosen", chosen_column), ("rejected", rejected_column))}
        if template == "chat":
            return {"prompt": turns, **{k: [{"role": "assistant", "content": v}] for k, v in pair.items()}}
        return {"prompt": format_prompt(turns, template), **{k: format_answer(v, template) for k, v in pair.items()}}

    ds = ds.filter(lambda r: all(r[c] is not None for c in (prompt_column, chosen_column, rejected_column)))
    return ds.map(convert, remove_columns=list(ds.column_names))


def to_prompt_only(ds, *, template: str, tokenizer=None, prompt_column: str = "prompt",
                   messages_column: str = "messages"):
    """Rows of any stored shape -> {"prompt": the text a model is asked} (RLHF rollouts, evaluation), rendered by
    :func:`format_prompt` (chat needs the tokenizer), the same text the A/B tab sends."""
    if template not in TEMPLATES:
        raise FieldError("template", f"must be one of {', '.join(TEMPLATES)}; got {template!r}")
    msgs = messages_column if messages_column in ds.column_names else ""
    ds = ds.filter(lambda r: r.get(prompt_column) is not None or bool(msgs and r[msgs] is not None))
    return ds.map(lambda r: {"prompt": format_prompt(row_turns(r, None, prompt_column=prompt_column,
                                                               messages_column=msgs), template, tokenizer)},
                  remove_columns=list(ds.column_names))


def load_prompt_data(cfg: Any, paths_: list[Path], tokenizer, *, phase: int = 2, log=print):
    """(train, eval or None) of rendered prompts {"prompt"} for RLHF (PromptFields): each dataset cut by data_split
    (DS-Chat's phase 3 = `phase` 2 of apply_data_split: the third part), blended, prompts over max_prompt_seq_len
    tokens dropped and counted (DeepSpeed-Chat's rule), split by eval_ratio."""
    from datasets import concatenate_datasets

    parts = []
    for path in paths_:
        raw = load_rows(path)
        split, split_seed = split_for(path, cfg.data_split, cfg.seed)
        raw = apply_data_split(raw, split, phase=phase, seed=split_seed)
        parts.append(to_prompt_only(raw, template=cfg.template, tokenizer=tokenizer, prompt_column=cfg.prompt_column))
    data = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    n = len(data)
    limit = cfg.max_prompt_seq_len
    data = data.filter(lambda r: len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"]) <= limit)
    if len(data) < n:
        log(f"[studio] {n - len(data)} of {n} prompt(s) are longer than max_prompt_seq_len {limit} tokens: left out")
    if len(data) < 2:
        raise FieldError("max_prompt_seq_len" if n >= 2 else "dataset",
                         f"only {len(data)} usable prompt(s) of {n}; raise max_prompt_seq_len or add prompts")
    return split_train_eval(data, cfg.eval_ratio, cfg.seed)


def parse_data_split(value: str, *, field: str = "data_split") -> list[float]:
    """DeepSpeed-Chat's `data_split` ("2,4,4") as normalised fractions; "" -> [1.0]."""
    v = str(value or "").strip()
    if not v:
        return [1.0]
    try:
        parts = [float(x) for x in v.split(",")]
    except ValueError:
        raise FieldError(field, f"must be comma-separated numbers like 2,4,4, got {value!r}") from None
    if not parts or any(p < 0 for p in parts) or sum(parts) <= 0:
        raise FieldError(field, f"must be non-negative numbers with a positive sum, got {value!r}")
    total = sum(parts)
    return [p / total for p in parts]


def split_bounds(n: int, fractions: list[float]) -> list[int]:
    """Cut points of n rows by normalised fractions, like DeepSpeed-Chat's get_raw_dataset_split_index."""
    bounds = [0]
    for f in fractions:
        bounds.append(bounds[-1] + round(f * n))
    bounds[-1] = n
    return bounds


def split_counts(n: int, data_split: str, eval_ratio: float) -> dict[str, int]:
    """Rows per DeepSpeed-Chat step (sft / reward / rlhf) and the train/eval cut of step 1, for n rows."""
    fractions = parse_data_split(data_split)
    out: dict[str, int] = {}
    first = n
    if len(fractions) > 1:
        b = split_bounds(n, fractions)
        for i, name in enumerate(("sft", "reward", "rlhf")[:len(fractions)]):
            out[f"step{i + 1} {name}"] = b[i + 1] - b[i]
        first = b[1] - b[0]
    n_eval = eval_count(first, eval_ratio)
    out["train"] = first - n_eval
    out["eval"] = n_eval
    return out


def apply_data_split(ds, data_split: str, phase: int, seed: int, *, field: str = "data_split"):
    """The rows of `phase` (0 = SFT, 1 = reward model, 2 = RLHF) under DeepSpeed-Chat's split.

    Like dschat/utils/data/data_utils.py: one seeded permutation of the rows (numpy RandomState(seed)), cut into
    contiguous chunks by the normalised fractions, so the three steps see disjoint rows of one dataset.
    """
    fractions = parse_data_split(data_split, field=field)
    if len(fractions) == 1:
        return ds
    if phase >= len(fractions):
        raise FieldError(field, f"has {len(fractions)} parts; step {phase + 1} needs at least {phase + 1}")
    import numpy as np

    n = len(ds)
    bounds = split_bounds(n, fractions)
    order = np.random.RandomState(seed=seed).permutation(n)
    idx = sorted(int(i) for i in order[bounds[phase]:bounds[phase + 1]])
    if not idx:
        raise FieldError(field, f"leaves no rows for step {phase + 1} of {n} rows")
    return ds.select(idx)


def split_for(path: Path, data_split: str, seed: int) -> tuple[str, int]:
    """The (data_split, seed) to cut `path` with: the job's own, or, when the job sets none, the split saved on
    the studio dataset's card (so SFT, reward model and RLHF see the same disjoint parts of one dataset)."""
    if str(data_split or "").strip():
        return data_split, seed
    card = Path(path).parent / STUDIO_CARD
    if Path(path).name == STUDIO_DATA and card.is_file():
        import yaml

        info = yaml.safe_load(card.read_text(encoding="utf-8")) or {}
        if str(info.get("data_split") or "").strip():
            return str(info["data_split"]), int(info.get("seed", seed))
    return data_split, seed


def eval_count(n: int, eval_ratio: float) -> int:
    """Eval rows out of n: at least one when eval_ratio > 0, never all of them."""
    if eval_ratio <= 0 or n < 2:
        return 0
    return min(max(1, round(n * eval_ratio)), n - 1)


def split_train_eval(ds, eval_ratio: float, seed: int):
    """(train, eval or None): a seeded split; at least one eval row when eval_ratio > 0 and rows allow it."""
    n_eval = eval_count(len(ds), eval_ratio)
    if not n_eval:
        return ds, None
    parts = ds.train_test_split(test_size=n_eval, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def count_rows(path: Path) -> int | None:
    """Number of rows for line-based files (cheap); None when it would need a full parse."""
    kind = _kind(path)
    if kind == "jsonl":
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    if kind == "parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


__all__ = [
    "DEMO_SFT",
    "TEMPLATES",
    "apply_data_split",
    "check_columns",
    "check_rows",
    "count_rows",
    "data_files",
    "detect_format",
    "dschat_prompt",
    "format_answer",
    "format_prompt",
    "load_rows",
    "normalize_messages",
    "parse_data_split",
    "parse_turns",
    "prompt_fields",
    "peek",
    "plain_prompt",
    "resolve_dataset",
    "resolve_datasets",
    "row_turns",
    "split_dataset_list",
    "split_train_eval",
    "to_preference",
    "to_prompt_completion",
    "to_prompt_only",
    "user_text",
]
