"""The validation report: the same one on the Datasets tab and from `python -m backends.data check`.

`validate(table, kind, mapping, transform, ...)` converts every row to the kind's shape and lists what
is wrong with it, naming the file and line (or item/row) and the column:

  load        a line that could not be read (bad JSON line, ragged CSV row)
  transform   a row the dataset's transform cannot split (e.g. no Assistant turn)
  missing     the mapped column is absent in this row
  empty       the value is an empty string
  non_string  the value is a number, list, ... where text is needed
  same_pair   chosen == rejected (nothing to learn from)
  duplicate   the same row again (the first copy is kept)
  too_long    longer than max length in tokens of the chosen model's tokenizer
  missing_file, bad_image   (images) the file is not there, or is not an image

Rows with problems are dropped when `drop_bad` is on (too-long rows only with `drop_too_long`: training
truncates them otherwise); lines that could not be read are never rows. The report says how many rows it
dropped and how many with problems it kept, and how to change that: in the words of the CLI (`--keep-bad`,
`--drop-too-long`) unless the caller passes its own `hints` (the page names its checkboxes). It also gives
the token-length histogram with p50/p95/max and the language mix.
"""
from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from backends.common.data import Table, normalize_messages, parse_turns, user_text

from .shapes import KIND_LABELS, to_internal
from .transforms import RowProblem

CODES = ("load", "transform", "missing", "empty", "non_string", "same_pair", "duplicate", "too_long",
         "missing_file", "bad_image")
CODE_LABELS = {
    "load": ("unreadable lines", "无法读取的行"),
    "transform": ("rows the transform cannot convert", "无法转换的行"),
    "missing": ("missing fields", "缺少字段"),
    "empty": ("empty fields", "空字段"),
    "non_string": ("non-text values", "非文本值"),
    "same_pair": ("chosen == rejected", "chosen 与 rejected 相同"),
    "duplicate": ("duplicate rows", "重复行"),
    "too_long": ("longer than max length", "超过最大长度"),
    "missing_file": ("image files not found", "找不到的图片文件"),
    "bad_image": ("files that are not images", "不是图片的文件"),
}
# The report's split names (backends.common.data.split_counts) and sources without a file format, in Chinese.
SPLIT_LABELS_ZH = {"step1 sft": "第 1 步 SFT", "step2 reward": "第 2 步 奖励模型", "step3 rlhf": "第 3 步 RLHF",
                   "train": "训练", "eval": "验证"}
FORMAT_LABELS_ZH = {"bundled": "内置样例", "hub": "Hub 数据集", "studio": "工作室数据集",
                    "imagefolder": "图片文件夹"}
SHOW_PROBLEMS = 50  # listed one by one; the counts cover all of them
# How to drop the rows a report kept, in the words of `python -m backends.data` (en, zh); the page passes its own.
CLI_HINTS = {"kept_bad": ("run without --keep-bad to drop them", "去掉 --keep-bad 即可丢弃"),
             "kept_long": ("add --drop-too-long to drop them", "加上 --drop-too-long 即可丢弃")}


_WHERE_ZH = {"line": "第 {} 行", "row": "第 {} 行", "item": "第 {} 项"}


def where_zh(where: str) -> str:
    """ "demo.jsonl line 12" -> "demo.jsonl 第 12 行" (the places backends.common.data names)."""
    return re.sub(r"\b(line|row|item) (\d+)\b", lambda m: _WHERE_ZH[m[1]].format(m[2]), where)


@dataclass
class Problem:
    where: str        # "demo.jsonl line 12"
    column: str       # the source column ("" for the whole row)
    code: str
    message: str
    message_zh: str = ""  # the message in Chinese, where this module wrote it ("" for messages of other modules)

    def text(self, lang: str = "en") -> str:
        col = f" [{self.column}]" if self.column else ""
        if lang == "zh":
            return f"{where_zh(self.where)}{col}：{self.message_zh or where_zh(self.message)}"
        return f"{self.where}{col}: {self.message}"

    def __str__(self) -> str:
        return self.text()


@dataclass
class Report:
    source: str
    format: str
    kind: str
    mapping: dict[str, str]
    transform: str
    rows_read: int = 0
    rows_ok: int = 0              # rows without problems
    rows_kept: int = 0            # rows a save would write
    dropped: dict[str, int] = field(default_factory=dict)   # code -> rows dropped for it
    counts: dict[str, int] = field(default_factory=dict)    # code -> problems found
    problems: list[Problem] = field(default_factory=list)   # the first SHOW_PROBLEMS
    token_stats: dict[str, Any] = field(default_factory=dict)  # p50 p95 max mean max_len over tokenizer
    histogram: list[tuple[int, int, int]] = field(default_factory=list)  # (from, to, rows)
    languages: dict[str, int] = field(default_factory=dict)
    splits: dict[str, int] = field(default_factory=dict)    # "sft"/"reward"/"rlhf"/"train"/"eval" -> rows
    fatal: str = ""               # why the data cannot be used at all
    notes: list[str] = field(default_factory=list)
    drop_bad: bool = True
    kept_bad: int = 0             # rows kept although they have a problem (drop_bad off)
    kept_long: int = 0            # rows kept although longer than max_len (drop_too_long off)

    @property
    def usable(self) -> bool:
        return not self.fatal and self.rows_kept > 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["usable"] = self.usable
        d["problems"] = [asdict(p) for p in self.problems]
        return d

    # ------------------------------------------------------------------------------ rendering
    def lines(self, lang: str = "en", hints: dict[str, str] | None = None) -> list[str]:
        """hints: {"kept_bad": ..., "kept_long": ...}, how to drop kept rows (default: the CLI's flags)."""
        zh = lang == "zh"
        hints = {k: v[1 if zh else 0] for k, v in CLI_HINTS.items()} | (hints or {})
        out = [f"{'来源' if zh else 'source'}: {self.source}",
               (f"{'格式' if zh else 'format'}: {FORMAT_LABELS_ZH.get(self.format, self.format) if zh else self.format}"
                f" · {'用途' if zh else 'kind'}: {self.kind} "
                f"({KIND_LABELS.get(self.kind, ('', ''))[1 if zh else 0]}) · "
                f"{'转换' if zh else 'transform'}: {self.transform}"),
               f"{'列映射' if zh else 'mapping'}: " + (", ".join(f"{k} ← {v}" for k, v in self.mapping.items() if v)
                                                       or "—")]
        if self.fatal:
            out.append(("无法使用：" if zh else "CANNOT USE: ") + self.fatal)
            return out
        out.append(f"{'读取行数' if zh else 'rows read'}: {self.rows_read} · {'无问题' if zh else 'clean'}: "
                   f"{self.rows_ok} · {'保留' if zh else 'kept'}: {self.rows_kept}")
        if self.counts:
            parts = [f"{CODE_LABELS[c][1 if zh else 0]} {n}" for c, n in self.counts.items()]
            out.append(f"{'问题' if zh else 'problems'}: " + ", ".join(parts))
        dropped = sum(self.dropped.values())
        if dropped:
            out.append((f"丢弃 {dropped} 行（" if zh else f"dropped {_rows(dropped)} (")
                       + ", ".join(f"{CODE_LABELS[c][1 if zh else 0]} {n}" for c, n in self.dropped.items())
                       + ("）" if zh else ")"))
        if self.kept_bad:
            out.append(f"保留了 {self.kept_bad} 个有问题的行（{hints['kept_bad']}）" if zh else
                       f"{_rows(self.kept_bad)} with problems {'is' if self.kept_bad == 1 else 'are'} kept "
                       f"({hints['kept_bad']})")
        if self.kept_long:
            out.append(f"保留了 {self.kept_long} 个超长的行，训练时会截断（{hints['kept_long']}）" if zh else
                       f"{_rows(self.kept_long)} over max length {'is' if self.kept_long == 1 else 'are'} kept: "
                       f"training truncates {'it' if self.kept_long == 1 else 'them'} ({hints['kept_long']})")
        s = self.token_stats
        if s:
            out.append((f"token 数（{s.get('tokenizer', '')}）：中位数 {s['p50']} · p95 {s['p95']} · 最大 {s['max']} · "
                        f"平均 {s['mean']:.1f} · 超过 {s['max_len']}：{s['over']}") if zh else
                       (f"tokens ({s.get('tokenizer', '')}): p50 {s['p50']} · p95 {s['p95']} · max {s['max']} · "
                        f"mean {s['mean']:.1f} · over {s['max_len']}: {s['over']}"))
        if self.languages:
            total = sum(self.languages.values()) or 1
            out.append(f"{'语言' if zh else 'languages'}: " + ", ".join(
                f"{k} {100 * v / total:.0f}%" for k, v in sorted(self.languages.items(), key=lambda kv: -kv[1])))
        for n in self.notes:
            out.append(f"{'注' if zh else 'note'}: {n}")
        if self.splits:
            out.append(f"{'划分' if zh else 'split'}: " + ", ".join(
                f"{SPLIT_LABELS_ZH.get(k, k) if zh else k} {v}" for k, v in self.splits.items()))
        for p in self.problems:
            out.append(f"  - {p.text(lang)}")
        shown = len(self.problems)
        total_problems = sum(self.counts.values())
        if total_problems > shown:
            out.append(f"  … {total_problems - shown} {'个问题未列出' if zh else 'more problems not listed'}")
        return out

    def to_text(self, lang: str = "en", hints: dict[str, str] | None = None) -> str:
        return "\n".join(self.lines(lang, hints))


def _rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


# ---------------------------------------------------------------------------------- checks
_TEXT_FIELDS = {"sft": ("prompt", "response"), "preference": ("prompt", "chosen", "rejected"),
                "prompt": ("prompt",), "images": ("text",)}


def _column_of(mapping: dict[str, str], fld: str) -> str:
    return mapping.get(fld) or fld


def row_text(row: dict) -> str:
    """The text of an internal row that decides its language: the user's turns (not template words such as
    DS-Chat's "Human:"/"Assistant:", not the answers); an image row's caption."""
    if "prompt" in row or "messages" in row:
        return user_text(row)
    return " ".join(str(v) for k, v in row.items() if k != "file_name" and isinstance(v, str))


def language_of(text: str) -> str:
    """zh / ja / ko / en (Latin script) / ru (Cyrillic) / other, by the script of most letters."""
    counts: Counter[str] = Counter()
    for ch in text[:2000]:
        if not ch.isalpha():
            continue
        o = ord(ch)
        if 0x3040 <= o <= 0x30FF:
            counts["ja"] += 3  # kana decides Japanese even among many kanji
        elif 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF:
            counts["zh"] += 1
        elif 0xAC00 <= o <= 0xD7AF:
            counts["ko"] += 1
        elif o < 0x250 or unicodedata.name(ch, "").startswith("LATIN"):
            counts["en"] += 1
        elif 0x400 <= o <= 0x4FF:
            counts["ru"] += 1
        else:
            counts["other"] += 1
    if not counts:
        return "other"
    if counts["ja"] and counts["ja"] >= counts["zh"] / 2:
        return "ja"
    return counts.most_common(1)[0][0]


def _texts_for_length(row: dict, kind: str) -> list[str]:
    """The text(s) whose token length matters: prompt + answer (the longer pair for preference)."""
    if "messages" in row:
        return ["\n".join(m["content"] for m in row["messages"])]
    if kind == "images":
        return [str(row["text"])]
    prompt = row["prompt"]
    turns = [*(row.get("history") or []), *(prompt if isinstance(prompt, list) else [{"content": prompt}])]
    if len(turns) > 1:
        prompt = "\n".join(str(t.get("content", "")) for t in turns if isinstance(t, dict))
    if kind == "preference":
        return [f"{prompt}{row['chosen']}", f"{prompt}{row['rejected']}"]
    if kind == "sft":
        return [f"{prompt}\n{row['response']}"]
    return [str(prompt)]


def _value_problems(row: dict, kind: str, mapping: dict[str, str]) -> list[tuple[str, str, str, str]]:
    """[(column, code, message, message_zh)] for the text fields of one internal row."""
    out = []
    if "messages" in row:
        return out  # normalize_messages already checked roles and contents
    for fld in _TEXT_FIELDS[kind]:
        col = _column_of(mapping, fld)
        v = row.get(fld)
        if fld == "prompt" and isinstance(v, list):  # a multi-turn prompt: turns ending with the user's
            try:
                turns = parse_turns(v)
            except (TypeError, ValueError) as e:
                out.append((col, "non_string", f"{fld}: {e}"))
                continue
            if turns[-1]["role"] != "user" or not turns[-1]["content"].strip():
                out.append((col, "empty", f"{fld} has no user turn at its end"))
            continue
        if v is None:
            out.append((col, "missing", f"no value for {fld}", f"{fld} 没有值"))
        elif not isinstance(v, str):
            got = f"{type(v).__name__} {str(v)[:40]!r}"
            out.append((col, "non_string", f"{fld} must be text, got {got}", f"{fld} 必须是文本，实际为 {got}"))
        elif not v.strip():
            out.append((col, "empty", f"{fld} is empty", f"{fld} 为空"))
    if kind == "preference" and not out and row["chosen"].strip() == row["rejected"].strip():
        out.append((_column_of(mapping, "rejected"), "same_pair", "chosen and rejected are the same text",
                    "chosen 与 rejected 文本相同"))
    return out


def _image_problems(row: dict, folder: Path | None, mapping: dict[str, str]) -> list[tuple[str, str, str, str]]:
    col = _column_of(mapping, "image")
    name = row.get("file_name")
    if not isinstance(name, str) or not name.strip():
        return [(col, "missing", "no file_name", "没有 file_name")]
    if folder is None:
        return [(col, "missing_file", "image rows need an image folder", "图片行需要图片文件夹")]
    p = (folder / name)
    try:
        p.resolve().relative_to(folder.resolve())
    except ValueError:
        return [(col, "missing_file", f"{name} points outside the image folder", f"{name} 指向图片文件夹之外")]
    if not p.is_file():
        return [(col, "missing_file", f"{name} not found in {folder.name}/", f"{folder.name}/ 中找不到 {name}")]
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.verify()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        return [(col, "bad_image", f"{name} is not a readable image ({type(e).__name__})",
                 f"{name} 不是可读取的图片（{type(e).__name__}）")]
    return []


def _percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    k = min(len(sorted_vals) - 1, max(0, math.ceil(q / 100 * len(sorted_vals)) - 1))
    return int(sorted_vals[k])


def histogram(lengths: list[int], bins: int = 20) -> list[tuple[int, int, int]]:
    if not lengths:
        return []
    hi = max(lengths)
    width = max(1, math.ceil((hi + 1) / bins))
    counts = Counter(min(v // width, bins - 1) for v in lengths)
    return [(b * width, (b + 1) * width - 1, counts.get(b, 0)) for b in range(min(bins, hi // width + 1))]


def dedupe_key(row: dict) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False, default=str)


def validate(table: Table | None, kind: str, mapping: dict[str, str], transform: str, *,
             source: str = "", tokenizer=None, tokenizer_name: str = "", max_len: int = 512,
             drop_bad: bool = True, drop_too_long: bool = False, image_folder: Path | None = None,
             fatal: str = "") -> tuple[Report, list[dict]]:
    """(report, the rows a save would write, in the kind's shape)."""
    rep = Report(source=source or (str(table.path.name) if table else ""), format=table.format if table else "",
                 kind=kind, mapping=dict(mapping), transform=transform or "columns", fatal=fatal, drop_bad=drop_bad)
    if fatal or table is None:
        return rep, []
    name = table.path.name
    counts: Counter[str] = Counter()
    problems: list[Problem] = []
    bad_rows: dict[int, str] = {}

    def add(i: int | None, where: str, column: str, code: str, message: str, message_zh: str = "") -> None:
        counts[code] += 1
        if len(problems) < SHOW_PROBLEMS:
            problems.append(Problem(where, column, code, message, message_zh))
        if i is not None and i not in bad_rows:
            bad_rows[i] = code

    unreadable = 0  # lines that are not rows at all: never kept, whatever drop_bad says
    for i, col, msg in table.problems:  # load problems: lines that are not rows, or ragged rows
        if i is None:
            counts["load"] += 1
            unreadable += 1
            if len(problems) < SHOW_PROBLEMS:
                problems.append(Problem(name, col, "load", msg.removeprefix(f"{name} ")))
        else:
            where = f"{name} {table.where[i]}"
            add(i, where, col, "load", msg.removeprefix(f"{where} "))
    internal: list[dict | None] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(table.rows):
        where = f"{name} {table.where[i]}"
        try:
            row = to_internal(raw, kind, mapping, transform)
        except RowProblem as e:
            add(i, where, e.column, "transform", e.message)
            internal.append(None)
            continue
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            add(i, where, "", "transform", f"{type(e).__name__}: {e}")
            internal.append(None)
            continue
        if "messages" in row:
            try:
                row["messages"] = normalize_messages(row["messages"])
            except (TypeError, ValueError) as e:
                add(i, where, _column_of(mapping, "messages"), "transform", str(e))
                internal.append(None)
                continue
        probs = _value_problems(row, kind, mapping) if kind != "images" else (
            _value_problems(row, kind, mapping) + _image_problems(row, image_folder, mapping))
        for col, code, msg, msg_zh in probs:
            add(i, where, col, code, msg, msg_zh)
        if not probs:
            key = dedupe_key(row)
            if key in seen:
                add(i, where, "", "duplicate", f"same as {table.where[seen[key]]}",
                    f"与{where_zh(table.where[seen[key]])}相同")
            else:
                seen[key] = i
        internal.append(row)

    # token lengths (rows that are text-clean)
    lengths: dict[int, int] = {}
    if tokenizer is not None:
        idx = [i for i, r in enumerate(internal) if r is not None and (i not in bad_rows or bad_rows[i] == "duplicate")]
        texts: list[str] = []
        owners: list[int] = []
        for i in idx:
            for tx in _texts_for_length(internal[i], kind):
                texts.append(tx)
                owners.append(i)
        for start in range(0, len(texts), 1000):
            enc = tokenizer(texts[start:start + 1000], add_special_tokens=True)["input_ids"]
            for j, ids in enumerate(enc):
                o = owners[start + j]
                lengths[o] = max(lengths.get(o, 0), len(ids))
        over = 0
        for i in sorted(lengths):
            if lengths[i] > max_len:
                over += 1
                counts["too_long"] += 1
                if len(problems) < SHOW_PROBLEMS:
                    problems.append(Problem(f"{name} {table.where[i]}", "", "too_long",
                                            f"{lengths[i]} tokens > max length {max_len}",
                                            f"{lengths[i]} 个 token，超过最大长度 {max_len}"))
        vals = sorted(lengths.values())
        if vals:
            rep.token_stats = {"p50": _percentile(vals, 50), "p95": _percentile(vals, 95), "max": vals[-1],
                               "mean": sum(vals) / len(vals), "max_len": max_len, "over": over,
                               "tokenizer": tokenizer_name}
            rep.histogram = histogram(vals)

    kept: list[dict] = []
    dropped: Counter[str] = Counter()
    dropped["load"] += unreadable
    langs: Counter[str] = Counter()
    for i, row in enumerate(internal):
        code = bad_rows.get(i)
        if code is None and drop_too_long and lengths.get(i, 0) > max_len:
            code = "too_long"
        if row is None or (code is not None and drop_bad) or (code == "too_long"):
            dropped[code or "transform"] += 1
            continue
        rep.kept_bad += code is not None
        rep.kept_long += lengths.get(i, 0) > max_len
        kept.append(row)
        langs[language_of(row_text(row))] += 1
    rep.rows_read = len(table.rows) + sum(1 for i, _, _ in table.problems if i is None)
    rep.rows_ok = sum(1 for i, r in enumerate(internal) if r is not None and i not in bad_rows)
    rep.rows_kept = len(kept)
    rep.counts = {c: counts[c] for c in CODES if counts[c]}
    rep.dropped = {c: dropped[c] for c in CODES if dropped[c]}
    rep.problems = problems
    rep.languages = dict(langs)
    if not kept:
        rep.fatal = (f"no usable rows: {', '.join(f'{CODE_LABELS[c][0]} {n}' for c, n in rep.counts.items())}"
                     if rep.counts else "no rows")
    return rep, kept
