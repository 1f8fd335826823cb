"""The studio's internal row shapes, the column mapping onto them, and its auto-detection.

Every training program reads one of four shapes, which keep the conversation, never a rendered template:

  sft         {"prompt", "response"}  or  {"messages": [{"role", "content"}, ..., assistant answer]}
  preference  {"prompt", "chosen", "rejected"}
  prompt      {"prompt"}
  images      {"file_name", "text"}          (the diffusers `imagefolder` convention)

"prompt" is the user's last message; a multi-turn conversation adds "history": [{"role", "content"}, ...], the
turns before it. Answers are plain text. A `messages` mapping keeps the file's own chat rows as they are. Text in DeepSpeed-Chat form
(" Human: q Assistant:", "\\n\\nHuman: …\\n\\nAssistant:") is parsed into turns on the way in. The job's
template is applied only at training and generation time, by `backends.common.data.row_turns` (any stored
row, also one saved before this shape: -> turns) and `format_prompt` (turns -> text).

A mapping says which source column feeds which field (`{"prompt": "instruction", ...}`); a transform
turns one source row into the shape. `columns` (here) just renames; the named transforms of
`backends.data.transforms` implement the catalog's datasets (DeepSpeed-Chat's rules for webgpt, SHP,
Anthropic HH, alpaca, ShareGPT, ...).
"""
from __future__ import annotations

from typing import Any

from backends.common.data import normalize_messages, parse_turns, prompt_fields
from backends.common.errors import FieldError

from . import transforms as tf
from .transforms import RowProblem

KINDS = ("sft", "preference", "prompt", "images")
KIND_LABELS = {
    "sft": ("instruction pairs (SFT)", "指令对（SFT）"),
    "preference": ("preference pairs (reward model, DPO)", "偏好对（奖励模型、DPO）"),
    "prompt": ("prompts only (RLHF rollouts, A/B eval)", "仅提示（RLHF 采样、A/B 评测）"),
    "images": ("captioned images (SD LoRA)", "带描述的图片（SD LoRA）"),
}
# The fields the `columns` transform reads, per kind. For sft, messages replaces prompt + response.
FIELDS = {
    "sft": ("prompt", "response", "messages"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt": ("prompt",),
    "images": ("image", "text"),
}
# Column names that mean a field, most common first (alpaca, DS-Chat, ShareGPT, imagefolder, ...).
CANDIDATES = {
    "prompt": ("prompt", "instruction", "question", "query", "input_text", "human", "user", "context"),
    "response": ("response", "output", "answer", "completion", "target", "assistant", "chosen"),
    "messages": ("messages", "conversations", "conversation", "dialog", "dialogue", "chat"),
    "chosen": ("chosen", "response_j", "preferred", "better", "good", "positive"),
    "rejected": ("rejected", "response_k", "dispreferred", "worse", "bad", "negative"),
    "image": ("file_name", "image", "image_path", "path", "file", "filename"),
    "text": ("text", "caption", "prompt", "description", "label"),
}
OUTPUT_FIELDS = {
    "sft": ("prompt", "response"),
    "preference": ("prompt", "chosen", "rejected"),
    "prompt": ("prompt",),
    "images": ("file_name", "text"),
}


def check_kind(kind: str, *, field: str = "kind") -> str:
    if kind not in KINDS:
        raise FieldError(field, f"must be one of {', '.join(KINDS)}; got {kind!r}")
    return kind


def reads(kind: str, transform: str) -> tuple[str, ...]:
    """The mapping fields a transform reads (the UI shows one column dropdown per field)."""
    if transform in ("", "columns"):
        return FIELDS[kind]
    return tf.TRANSFORMS[transform].reads


def _pick(columns: list[str], names: tuple[str, ...], taken: set[str]) -> str:
    lower = {c.lower(): c for c in columns}
    for n in names:
        c = lower.get(n)
        if c is not None and c not in taken:
            return c
    return ""


def detect_transform(columns: list[str], rows: list[dict], kind: str) -> str:
    """A named transform when the columns have a known layout (alpaca, ShareGPT, Anthropic HH, webgpt, SHP)."""
    cols = {c.lower() for c in columns}

    def ok(name: str) -> bool:
        t = tf.TRANSFORMS.get(name)
        return t is not None and kind in t.kinds

    if {"instruction", "output"} <= cols and "prompt" not in cols and ok("alpaca"):
        return "alpaca"
    if "conversations" in cols and "prompt" not in cols and ok("sharegpt"):
        conv = next((r.get("conversations") for r in rows if r.get("conversations")), None)
        if isinstance(conv, list) and conv and isinstance(conv[0], dict) and "from" in conv[0]:
            return "sharegpt"
    if {"chosen", "rejected"} <= cols and "prompt" not in cols and ok("hh_split"):
        sample = next((r.get("chosen") for r in rows if isinstance(r.get("chosen"), str)), "")
        if "Assistant:" in sample:
            return "hh_split"
    if {"question", "answer_0", "answer_1", "score_0", "score_1"} <= cols and ok("webgpt"):
        return "webgpt"
    if {"history", "human_ref_a", "human_ref_b", "labels"} <= cols and ok("shp"):
        return "shp"
    return "columns"


def auto_mapping(columns: list[str], rows: list[dict], kind: str) -> tuple[dict[str, str], str]:
    """(mapping field -> column, transform) guessed from the column names and a few rows."""
    check_kind(kind)
    transform = detect_transform(columns, rows, kind)
    mapping: dict[str, str] = {}
    taken: set[str] = set()
    for f in reads(kind, transform):
        if transform == "columns":
            names = CANDIDATES.get(f, (f,))
            if kind == "sft" and f == "response":
                names = tuple(n for n in names if n != "chosen") + ("chosen",)
        else:
            names = (f, *CANDIDATES.get(f, ()))
        col = _pick(columns, names, taken)
        mapping[f] = col
        if col:
            taken.add(col)
    if kind == "sft" and transform == "columns":
        if mapping["prompt"] and mapping["response"]:
            mapping["messages"] = ""  # prompt/response wins; messages would be ignored
        elif mapping["messages"]:
            mapping["prompt"] = mapping["response"] = ""
    return mapping, transform


def missing_fields(columns: list[str], kind: str, mapping: dict[str, str], transform: str) -> list[tuple[str, str]]:
    """[(field, why)] for mapping fields that name no column of the data."""
    cols = set(columns)
    out = []
    fields = reads(kind, transform)
    if kind == "sft" and transform == "columns":
        if mapping.get("messages") and not (mapping.get("prompt") or mapping.get("response")):
            fields = ("messages",)
        else:
            fields = ("prompt", "response")
    optional = tf.TRANSFORMS[transform].optional if transform not in ("", "columns") else ()
    for f in fields:
        col = mapping.get(f, "")
        if not col:
            if f in optional:
                continue
            out.append((f, "is not mapped to a column"))
        elif col not in cols:
            out.append((f, f"names column {col!r}, which the data does not have"))
    return out


def check_mapping(columns: list[str], kind: str, mapping: dict[str, str], transform: str, *, source: str) -> None:
    """A FieldError naming the first unmapped field, the columns found and how to fix it."""
    check_kind(kind)
    if transform not in ("", "columns") and transform not in tf.TRANSFORMS:
        raise FieldError("transform", f"unknown transform {transform!r}; known: columns, {', '.join(tf.TRANSFORMS)}")
    if transform not in ("", "columns") and kind not in tf.TRANSFORMS[transform].kinds:
        raise FieldError("kind", f"the {transform} transform makes {', '.join(tf.TRANSFORMS[transform].kinds)} "
                                 f"rows, not {kind}")
    bad = missing_fields(columns, kind, mapping, transform)
    if bad:
        f, why = bad[0]
        found = ", ".join(columns) or "(none)"
        raise FieldError(f"map {f}", f"{why}. {source} has the columns: {found}. "
                                     f"Map {f} with --map {f}=COLUMN (or the dropdown on the Datasets tab)")


def servable_kinds(columns: list[str], rows: list[dict]) -> list[str]:
    """The kinds this data can feed without hand mapping (what the Datasets tab offers first)."""
    out = []
    for kind in KINDS:
        if kind == "images":
            continue  # image folders are recognised by their layout, not their columns
        mapping, transform = auto_mapping(columns, rows, kind)
        if not missing_fields(columns, kind, mapping, transform):
            out.append(kind)
    return out


def to_internal(row: dict, kind: str, mapping: dict[str, str], transform: str) -> dict[str, Any]:
    """One source row in the kind's shape. Values are passed through (the validator judges them);
    a row that cannot be converted raises RowProblem naming the source column."""
    if transform not in ("", "columns"):
        return tf.apply(transform, row, mapping, kind)
    if kind == "sft" and mapping.get("messages") and not (mapping.get("prompt") or mapping.get("response")):
        col = mapping["messages"]
        try:
            return {"messages": normalize_messages(row.get(col))}
        except (TypeError, ValueError) as e:
            raise RowProblem(col, str(e)) from None
    if kind == "images":
        return {"file_name": row.get(mapping["image"]), "text": row.get(mapping["text"])}
    out = {f: row.get(mapping[f]) for f in OUTPUT_FIELDS[kind]}
    prompt = out["prompt"]
    if isinstance(prompt, (str, list)):  # DS-Chat text or a list of turns -> the stored prompt shape
        try:
            turns = parse_turns(prompt)
        except (TypeError, ValueError) as e:
            raise RowProblem(mapping["prompt"], str(e)) from None
        if turns[-1]["role"] == "user" and not (isinstance(prompt, str) and turns[0]["content"] == prompt):
            out.update(prompt_fields(turns))  # parsed DS-Chat text or turns: drop the answers' leading space too
            out.update({f: v.strip() for f, v in out.items() if f not in ("prompt", "history") and isinstance(v, str)})
    return out


def parse_map_args(items: list[str] | None) -> dict[str, str]:
    """`["prompt=question", "response=answer"]` -> dict; FieldError on a malformed item."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise FieldError("map", f"expected FIELD=COLUMN, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out
