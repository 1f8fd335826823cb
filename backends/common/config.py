"""One schema per recipe: generic helpers over the backends' option dataclasses.

A backend declares its options once, as a dataclass whose fields carry metadata::

    learning_rate: float = field(default=2e-4, metadata={
        "help": "Peak learning rate of AdamW.", "help_zh": "AdamW 的峰值学习率。",
        "label": "Learning rate", "label_zh": "学习率",
        "min": 0, "min_exclusive": True, "group": "training"})

Recognised metadata keys: ``help``, ``help_zh``, ``label``, ``label_zh``, ``group`` (model | data | training
| ppo | lora | memory | launcher | output), ``choices`` (list), ``min`` / ``max`` (inclusive bounds), ``min_exclusive`` /
``max_exclusive`` (make the bound strict), ``allow`` (extra values accepted besides the range, e.g. ``[-1]``
for "-1 = off"), ``widget`` (a hint for the UI: "file", "dir", "textbox", ...), ``order`` (position within
its group: lower first, default 0, ties in declaration order; lets a schema's own fields sit among an
inherited group's). Any other key is passed through to the field descriptor unchanged.

From that one declaration this module gives:

- :func:`load_config` / :func:`parse_cli` -- YAML file + ``--field value`` overrides into a validated instance
  (unknown keys raise :class:`FieldError` naming the key; the CLI flags come from ``HfArgumentParser``);
- :func:`from_dict` / :func:`coerce_value` / :func:`validate_fields` -- strings from a web form ("1e-4",
  "true", "abc") are coerced to the field's type or rejected with a ``FieldError`` naming the field and the fix;
- :func:`field_descriptors` -- a list of plain dicts the UI builds its form from (and the README its table,
  see :func:`markdown_table`);
- :func:`to_dict` / :func:`to_yaml` -- the instance back to a ``config.yaml``.

Shared field groups (declared once here, inherited by every schema the way TRL's configs inherit
``TrainingArguments``): :class:`JobFields` (what the job engine owns: deepspeed, run_dir, resume_from_checkpoint,
recipe, data_dir), :class:`TrainingFields` (epochs, steps, batch sizes, optimiser, schedule, precision, logging /
eval / save intervals, seed), :class:`LoraFields`, :class:`DataFields` (data_split, prompt_column, template,
max_seq_len, eval_ratio of a training recipe) and :class:`GenerationFields` (max_new_tokens, sampling; seed).
A schema is ``@dataclass class XArgs(TrainingFields, LoraFields, JobFields, DataFields)`` plus its own model/data
fields; :func:`redefault` changes an inherited field's default (and help) without re-declaring it. Field order
(form, README table, config.yaml) is by :data:`GROUPS`, then the ``order`` key, then declaration order (inherited
groups first), whatever the inheritance order.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from .errors import FieldError

GROUPS = ("model", "data", "training", "ppo", "lora", "memory", "launcher", "output")
# Keys of a recipe file (presets/recipes/*.yaml) around its `config:` block.
RECIPE_KEYS = ("kind", "name", "description", "description_zh", "launcher", "config")
# How prompt and answer are joined (backends/common/data.py renders them; DataFields.template offers them).
TEMPLATES = ("chat", "dschat", "plain")
_KNOWN_META = ("help", "help_zh", "label", "label_zh", "group", "choices", "min", "max", "min_exclusive",
               "max_exclusive", "allow", "widget", "order")
_TRUE = {"true", "yes", "y", "on", "1"}
_FALSE = {"false", "no", "n", "off", "0"}


# ----------------------------------------------------------------------------------------------- types
def meta(group: str, label: str, label_zh: str, help: str, help_zh: str, **extra: Any) -> dict[str, Any]:
    """The metadata of one schema field: its group, en/zh label and help, and any extra keys (min, choices, ...)."""
    return {"group": group, "label": label, "label_zh": label_zh, "help": help, "help_zh": help_zh, **extra}


def _is_dataclass_type(cls) -> bool:
    return isinstance(cls, type) and dataclasses.is_dataclass(cls)


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(tp: Any) -> tuple[type, bool]:
    """(the scalar type, whether None is allowed) for int, float, bool, str and `X | None`."""
    args = typing.get_args(tp)
    if args and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else str), True
    if typing.get_origin(tp) is typing.Literal:
        return type(args[0]), False
    return (tp if isinstance(tp, type) else str), False


def _type_name(tp: type) -> str:
    return {int: "int", float: "float", bool: "bool", str: "str"}.get(tp, getattr(tp, "__name__", str(tp)))


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _fmt_num(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return str(x)


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("min") is not None:
        parts.append(f"{'>' if meta.get('min_exclusive') else '>='} {_fmt_num(meta['min'])}")
    if meta.get("max") is not None:
        parts.append(f"{'<' if meta.get('max_exclusive') else '<='} {_fmt_num(meta['max'])}")
    text = " and ".join(parts)
    if meta.get("allow"):
        allowed = ", ".join(_fmt_num(a) for a in meta["allow"])
        text = f"{text} (or {allowed})" if text else f"{allowed}"
    return text


def _expectation(tp: type, meta: Mapping[str, Any]) -> str:
    """'a number > 0', 'an integer >= 1 (or -1)', 'true or false', 'one of fp32, bf16, fp16'."""
    if meta.get("choices"):
        return "one of " + ", ".join(str(c) for c in meta["choices"])
    noun = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, _type_name(tp))
    rng = _range_text(meta)
    return f"{noun} {rng}" if rng else noun


def _fail(name: str, tp: type, meta: Mapping[str, Any], value: Any, why: str = "") -> FieldError:
    msg = f"must be {_expectation(tp, meta)}, got {value!r}"
    if why:
        msg += f" ({why})"
    return FieldError(name, msg)


# ----------------------------------------------------------------------------------------- coercion
def coerce_value(f: dataclasses.Field | str, value: Any, cls: type | None = None) -> Any:
    """Turn `value` (maybe a string from a web form or the CLI) into the field's type, then check range/choices.

    `f` is a dataclasses.Field (with `cls` to resolve string annotations) or a field name with `cls` given.
    Raises FieldError("name", "must be a number > 0, got 'abc'").
    """
    if isinstance(f, str):
        if cls is None:
            raise TypeError("coerce_value(name, value) needs cls=")
        f = {x.name: x for x in dataclasses.fields(cls)}[f]
    tp_raw = _hints(cls)[f.name] if cls is not None else f.type
    if isinstance(tp_raw, str):  # unresolved annotation and no cls: best effort
        tp_raw = {"int": int, "float": float, "bool": bool, "str": str}.get(tp_raw.split("|")[0].strip(), str)
    tp, nullable = _base_type(tp_raw)
    meta = f.metadata
    name = f.name

    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null") and tp is not str):
        if nullable:
            return None
        if tp is str:
            return ""
        raise _fail(name, tp, meta, value)

    if tp is bool:
        if isinstance(value, bool):
            out = value
        elif isinstance(value, (int, float)) and value in (0, 1):
            out = bool(value)
        elif isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            out = value.strip().lower() in _TRUE
        else:
            raise _fail(name, tp, meta, value)
    elif tp is int:
        if isinstance(value, bool):
            raise _fail(name, tp, meta, value)
        if isinstance(value, int):
            out = value
        else:
            try:
                num = float(value.strip().replace("_", "")) if isinstance(value, str) else float(value)
            except (TypeError, ValueError):
                raise _fail(name, tp, meta, value) from None
            if not math.isfinite(num) or not num.is_integer():
                raise _fail(name, tp, meta, value, "not a whole number")
            out = int(num)
    elif tp is float:
        if isinstance(value, bool):
            raise _fail(name, tp, meta, value)
        try:
            out = float(value.strip().replace("_", "")) if isinstance(value, str) else float(value)
        except (TypeError, ValueError):
            raise _fail(name, tp, meta, value) from None
        if not math.isfinite(out):
            raise _fail(name, tp, meta, value)
    elif tp is str:
        if isinstance(value, (list, tuple)):  # e.g. lora_target_modules written as a YAML list
            out = ",".join(str(v).strip() for v in value)
        elif isinstance(value, (dict, set)):
            raise _fail(name, tp, meta, value)
        else:
            out = str(value) if not isinstance(value, str) else value
            out = out.strip()
    else:  # pragma: no cover - only scalar fields are used by the backends
        out = value

    if meta.get("choices") is not None:
        choices = list(meta["choices"])
        if out not in choices:
            # be lenient with case for string choices typed by hand
            lowered = {str(c).lower(): c for c in choices}
            if isinstance(out, str) and out.lower() in lowered:
                out = lowered[out.lower()]
            else:
                raise FieldError(name, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
    if tp in (int, float) and out not in (meta.get("allow") or ()):
        lo, hi = meta.get("min"), meta.get("max")
        if lo is not None and (out < lo or (meta.get("min_exclusive") and out == lo)):
            raise _fail(name, tp, meta, value)
        if hi is not None and (out > hi or (meta.get("max_exclusive") and out == hi)):
            raise _fail(name, tp, meta, value)
    return out


def validate_fields(instance: Any) -> Any:
    """Coerce and range-check every field of `instance` in place (from its metadata); returns it."""
    cls = type(instance)
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        coerced = _coerce_with_type(f, hints[f.name], getattr(instance, f.name))
        object.__setattr__(instance, f.name, coerced)
    return instance


def _coerce_with_type(f: dataclasses.Field, tp: Any, value: Any) -> Any:
    shim = _FieldShim(f.name, tp, f.metadata)
    return coerce_value(shim, value)  # type: ignore[arg-type]


class _FieldShim:
    """A Field look-alike with a resolved type (dataclasses.Field.type may be a string annotation)."""

    def __init__(self, name: str, tp: Any, metadata: Mapping[str, Any]):
        self.name, self.type, self.metadata = name, tp, metadata


# ------------------------------------------------------------------------------------- dict <-> instance
def ordered_fields(cls) -> list[dataclasses.Field]:
    """The init fields of `cls` by GROUPS order, the engine-owned JobFields last within their group, then the
    ``order`` metadata key (default 0), then declaration order (a dataclass lists inherited fields first; this
    puts model and data fields first again)."""
    fs = [f for f in dataclasses.fields(cls) if f.init]
    rank = {g: i for i, g in enumerate(GROUPS)}
    job = {f.name for f in dataclasses.fields(JobFields)}
    return sorted(fs, key=lambda f: (rank.get(f.metadata.get("group", "training"), len(GROUPS)), f.name in job,
                                     f.metadata.get("order", 0)))


def field_names(cls) -> list[str]:
    return [f.name for f in ordered_fields(cls)]


def from_dict(cls, data: Mapping[str, Any] | None, *, source: str = "config") -> Any:
    """Build a validated `cls` from a mapping; unknown keys raise FieldError naming the key."""
    data = dict(data or {})
    names = field_names(cls)
    unknown = [k for k in data if k not in names]
    if unknown:
        k = unknown[0]
        close = _close_matches(k, names)
        hint = f"; did you mean {close}?" if close else f"; known fields: {', '.join(names)}"
        raise FieldError(k, f"unknown option in {source}{hint}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        value = data[f.name] if f.name in data else _default_of(f)
        kwargs[f.name] = _coerce_with_type(f, hints[f.name], value)
    return cls(**kwargs)


def _close_matches(key: str, names: Iterable[str]) -> str:
    import difflib

    m = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return m[0] if m else ""


def to_dict(instance: Any) -> dict[str, Any]:
    return {f.name: getattr(instance, f.name) for f in ordered_fields(type(instance))}


def to_yaml(instance: Any, *, header: str | None = None) -> str:
    """The instance as a flat YAML mapping in field order (a valid `--config` file)."""
    text = yaml.safe_dump(to_dict(instance), sort_keys=False, allow_unicode=True, default_flow_style=False)
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return text


def save_yaml(instance: Any, path: str | Path, *, header: str | None = None) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(to_yaml(instance, header=header), encoding="utf-8")
    return p


# ------------------------------------------------------------------------------------------ files
def read_yaml(path: str | Path, *, kind: str | None = None, field: str = "config") -> dict[str, Any]:
    """Read a config file: a flat mapping of fields, or a recipe (`kind:`, `launcher:`, `config:` block).

    For a recipe, returns its `config:` block (after checking `kind` when given).
    """
    p = Path(path)
    if not p.is_file():
        raise FieldError(field, f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FieldError(field, f"{p} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise FieldError(field, f"{p} must hold a mapping of option: value, got {type(data).__name__}")
    if is_recipe(data):
        if kind and data.get("kind") not in (None, kind):
            raise FieldError("kind", f"{p} is a '{data.get('kind')}' recipe, this program runs '{kind}'")
        data = dict(data.get("config") or {})
    return data


def is_recipe(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("config"), dict) and set(data) <= set(RECIPE_KEYS)


def load_config(cls, path: str | Path | None = None, overrides: Mapping[str, Any] | None = None, *,
                kind: str | None = None) -> Any:
    """YAML file (flat or recipe) + overrides (strings are fine) -> validated instance of `cls`."""
    data = read_yaml(path, kind=kind) if path else {}
    data.update(dict(overrides or {}))
    return from_dict(cls, data, source=str(path) if path else "overrides")


# ------------------------------------------------------------------------------------------- CLI
def _hf_parser_class():
    from transformers import HfArgumentParser

    class StudioArgumentParser(HfArgumentParser):
        """HfArgumentParser that ignores our UI metadata (label_zh, min, group, ...) when adding flags."""

        @staticmethod
        def _parse_dataclass_field(parser, field):  # type: ignore[override]
            shim = dataclasses.field(default=field.default, default_factory=field.default_factory)
            shim.name, shim.type = field.name, field.type
            shim.metadata = MappingProxyType({"help": _cli_help(field.metadata)})
            HfArgumentParser._parse_dataclass_field(parser, shim)

    return StudioArgumentParser


def _cli_help(meta: Mapping[str, Any]) -> str:
    text = str(meta.get("help", ""))
    extra = []
    if meta.get("choices"):
        extra.append("choices: " + ", ".join(map(str, meta["choices"])))
    rng = _range_text(meta)
    if rng:
        extra.append(rng)
    if extra:
        text += " [" + "; ".join(extra) + "]"
    return text.replace("%", "%%")


def build_parser(cls, prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """`--config FILE` plus one `--<field>` flag per dataclass field (from HfArgumentParser).

    Flags default to "not given" (argparse.SUPPRESS) and keep their raw string, so that the YAML value is kept
    when a flag is absent and a bad value raises the same FieldError as in the form.
    """
    parser = _hf_parser_class()(cls, prog=prog, description=description)
    names = set(field_names(cls))
    for action in parser._actions:
        if action.dest in names:
            action.default = argparse.SUPPRESS
            if action.type is not None:
                action.type = None  # keep strings: coerce_value gives the field-named error
            action.choices = None
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="YAML file with the options (flat, or a recipe with a config: block)")
    # The `deepspeed` launcher appends --local_rank=N; torchrun/accelerate set LOCAL_RANK instead.
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    return parser


def parse_cli(cls, argv: list[str] | None = None, *, kind: str | None = None, prog: str | None = None,
              description: str | None = None) -> Any:
    """`--config FILE [--field value ...]` -> validated instance (CLI values override the file)."""
    parser = build_parser(cls, prog=prog, description=description)
    ns, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if rest:
        flag = rest[0].lstrip("-").split("=")[0].replace("-", "_")
        close = _close_matches(flag, field_names(cls))
        raise FieldError(flag, "unknown command-line option" + (f"; did you mean --{close}?" if close else ""))
    values = vars(ns)
    config_path = values.pop("config", None)
    values.pop("local_rank", None)
    return load_config(cls, config_path, values, kind=kind)


# ----------------------------------------------------------------------------------- descriptors
def field_descriptors(cls) -> list[dict[str, Any]]:
    """One plain dict per field, in declaration order, for the UI form and the README table::

        {"name": "learning_rate", "type": "float", "default": 0.0002, "choices": None,
         "min": 0, "max": None, "min_exclusive": True, "max_exclusive": False, "allow": None,
         "label": "Learning rate", "label_zh": "学习率", "help": "...", "help_zh": "...",
         "group": "training", "widget": None}

    `type` is one of int, float, bool, str; `label` falls back to the field name.
    """
    hints = _hints(cls)
    out = []
    for f in ordered_fields(cls):
        tp, nullable = _base_type(hints[f.name])
        meta = dict(f.metadata)
        d = {
            "name": f.name,
            "type": _type_name(tp),
            "nullable": nullable,
            "default": _default_of(f),
            "choices": list(meta["choices"]) if meta.get("choices") is not None else None,
            "min": meta.get("min"),
            "max": meta.get("max"),
            "min_exclusive": bool(meta.get("min_exclusive", False)),
            "max_exclusive": bool(meta.get("max_exclusive", False)),
            "allow": list(meta["allow"]) if meta.get("allow") else None,
            "label": meta.get("label") or f.name,
            "label_zh": meta.get("label_zh") or meta.get("label") or f.name,
            "help": meta.get("help", ""),
            "help_zh": meta.get("help_zh") or meta.get("help", ""),
            "group": meta.get("group", "training"),
            "widget": meta.get("widget"),
        }
        for k, v in meta.items():
            if k not in _KNOWN_META and k not in d:
                d[k] = v
        out.append(d)
    return out


def markdown_table(cls, lang: str = "en") -> str:
    """The options as a Markdown table (README), from the same descriptors as the UI form."""
    zh = lang.startswith("zh")
    head = "| 选项 | 类型 | 默认值 | 范围/选项 | 说明 |" if zh else "| Option | Type | Default | Range / choices | Description |"
    lines = [head, "|---|---|---|---|---|"]
    for d in field_descriptors(cls):
        rng = ", ".join(map(str, d["choices"])) if d["choices"] else _range_text(d)
        default = d["default"]
        default = '""' if default == "" else str(default)
        help_ = (d["help_zh"] if zh else d["help"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{d['name']}` | {d['type']} | `{default}` | {rng} | {help_} |")
    return "\n".join(lines) + "\n"


def groups(cls) -> dict[str, list[str]]:
    """Field names by group, in declaration order."""
    out: dict[str, list[str]] = {}
    for d in field_descriptors(cls):
        out.setdefault(d["group"], []).append(d["name"])
    return out


# ------------------------------------------------------------------------------ shared field groups
def redefault(group_cls: type, name: str, default: Any, **meta_overrides: Any) -> Any:
    """An inherited field with another default (and optionally other metadata), for a schema's class body::

        learning_rate: float = redefault(TrainingFields, "learning_rate", 5e-5)
    """
    f = {x.name: x for x in dataclasses.fields(group_cls)}[name]
    return dataclasses.field(default=default, metadata={**f.metadata, **meta_overrides})


MAX_NEW_TOKENS_LIMIT = 4096  # the longest answer any inference tool generates


@dataclasses.dataclass
class JobFields:
    """Fields the job engine owns and writes into every job's config.yaml (not shown in a tab's form)."""

    deepspeed: str = dataclasses.field(default="", metadata=meta(
        "launcher", "DeepSpeed config", "DeepSpeed 配置",
        "Path of a DeepSpeed JSON (presets/deepspeed/zero2.json, …); empty = no DeepSpeed. Programs that run in "
        "one process (A/B evaluation) refuse it.",
        "DeepSpeed JSON 配置路径（presets/deepspeed/zero2.json 等）；留空表示不用 DeepSpeed。单进程程序（A/B 评测）不接受。",
        widget="file"))
    run_dir: str = dataclasses.field(default="", metadata=meta(
        "output", "Run folder", "运行目录",
        "Where metrics.jsonl, checkpoints/ and output/ go; relative to the data dir when one is set. "
        "Empty = runs/manual-<kind>.",
        "metrics.jsonl、checkpoints/ 和 output/ 的存放目录；设置了数据目录时相对于数据目录。留空 = runs/manual-<类型>。",
        widget="dir"))
    resume_from_checkpoint: str = dataclasses.field(default="", metadata=meta(
        "output", "Resume from", "从检查点恢复",
        "Empty = start fresh; `latest` = the newest complete checkpoint in run_dir/checkpoints; or a checkpoint "
        "folder. Programs without checkpoints (A/B evaluation) ignore it.",
        "留空 = 从头开始；`latest` = run_dir/checkpoints 中最新的完整检查点；也可填检查点目录。没有检查点的程序（A/B 评测）忽略此项。"))
    recipe: str = dataclasses.field(default="", metadata=meta(
        "output", "Recipe", "配方", "Name of the recipe these options started from (recorded in studio.json).",
        "这些选项来源的配方名称（记录在 studio.json 中）。"))
    data_dir: str = dataclasses.field(default="", metadata=meta(
        "output", "Data dir", "数据目录",
        "The studio's data dir (bundled models, datasets, runs); set by the studio. When set, run_dir must be "
        "inside it.", "工作室的数据目录（内置模型、数据集、运行记录），由工作室设置；设置后 run_dir 必须在其中。",
        widget="dir"))


@dataclasses.dataclass
class TrainingFields:
    """Optimiser, schedule, batch, precision and the logging / eval / checkpoint intervals of a Trainer recipe."""

    num_train_epochs: float = dataclasses.field(default=1.0, metadata=meta(
        "training", "Epochs", "训练轮数", "Passes over the training rows (ignored when max_steps > 0).",
        "遍历训练数据的轮数（max_steps > 0 时忽略）。", min=0, min_exclusive=True, max=1000))
    max_steps: int = dataclasses.field(default=-1, metadata=meta(
        "training", "Max steps", "最大步数", "Optimizer steps to run; -1 = use the epochs.",
        "优化器更新步数；-1 表示按轮数训练。", min=1, max=10_000_000, allow=[-1]))
    per_device_train_batch_size: int = dataclasses.field(default=4, metadata=meta(
        "training", "Batch size per device", "每设备批大小", "Training samples per process and step.",
        "每个进程每步的训练样本数。", min=1, max=4096))
    per_device_eval_batch_size: int = dataclasses.field(default=4, metadata=meta(
        "training", "Eval batch size per device", "每设备验证批大小", "Eval samples per process and forward.",
        "每个进程每次前向的验证样本数。", min=1, max=4096))
    gradient_accumulation_steps: int = dataclasses.field(default=1, metadata=meta(
        "training", "Gradient accumulation", "梯度累积步数",
        "Micro-batches summed before each optimizer step (global batch = batch × this × processes).",
        "每次优化器更新前累积的微批次数（全局批大小 = 批大小 × 此值 × 进程数）。", min=1, max=4096))
    learning_rate: float = dataclasses.field(default=2e-4, metadata=meta(
        "training", "Learning rate", "学习率",
        "Peak learning rate of AdamW (LoRA ≈ 1e-4…1e-3, full fine-tuning ≈ 1e-5).",
        "AdamW 的峰值学习率（LoRA 约 1e-4…1e-3，全参数微调约 1e-5）。", min=0, min_exclusive=True, max=1))
    weight_decay: float = dataclasses.field(default=0.0, metadata=meta(
        "training", "Weight decay", "权重衰减", "AdamW weight decay.", "AdamW 权重衰减。", min=0, max=1))
    lr_scheduler_type: str = dataclasses.field(default="cosine", metadata=meta(
        "training", "LR schedule", "学习率调度", "How the learning rate changes after warm-up.",
        "预热之后学习率的变化方式。",
        choices=["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]))
    warmup_steps: int = dataclasses.field(default=0, metadata=meta(
        "training", "Warm-up steps", "预热步数", "Steps of linear warm-up from 0 to the learning rate.",
        "学习率从 0 线性升到设定值的步数。", min=0, max=10_000_000))
    max_grad_norm: float = dataclasses.field(default=1.0, metadata=meta(
        "training", "Gradient clipping", "梯度裁剪", "Clip the gradient norm to this value (0 = off).",
        "把梯度范数裁剪到此值（0 = 不裁剪）。", min=0, max=1e6))
    seed: int = dataclasses.field(default=1234, metadata=meta(
        "training", "Seed", "随机种子", "Seed for the data split, shuffling and LoRA initialisation.",
        "用于数据划分、打乱和 LoRA 初始化的随机种子。", min=0, max=2**31 - 1))
    precision: str = dataclasses.field(default="fp32", metadata=meta(
        "training", "Precision", "精度",
        "fp32 on CPU; bf16 (Ampere+ GPUs) or fp16 (older GPUs) mixed precision.",
        "CPU 上用 fp32；GPU 上可用 bf16（Ampere 及更新）或 fp16（较旧 GPU）混合精度。",
        choices=["fp32", "bf16", "fp16"]))
    gradient_checkpointing: bool = dataclasses.field(default=False, metadata=meta(
        "training", "Gradient checkpointing", "梯度检查点",
        "Recompute activations in the backward pass: less memory, ~20-30% slower.",
        "反向传播时重算激活：更省显存，约慢 20–30%。"))
    logging_steps: int = dataclasses.field(default=5, metadata=meta(
        "output", "Log every", "日志间隔", "Write a metrics line every N steps (step 1 is always logged).",
        "每 N 步写一行指标（第 1 步总会记录）。", min=1, max=1_000_000))
    eval_steps: int = dataclasses.field(default=50, metadata=meta(
        "output", "Evaluate every", "评估间隔", "Evaluate every N steps (and before the first and after the "
        "last step).", "每 N 步评估一次（训练前和最后一步后也会评估）。", min=1, max=1_000_000))
    save_steps: int = dataclasses.field(default=100, metadata=meta(
        "output", "Checkpoint every", "检查点间隔", "Save a resumable checkpoint every N steps.",
        "每 N 步保存一个可恢复的检查点。", min=1, max=1_000_000))
    save_total_limit: int = dataclasses.field(default=2, metadata=meta(
        "output", "Checkpoints kept", "保留检查点数", "Keep only the newest N checkpoints (0 = keep all).",
        "只保留最新的 N 个检查点（0 = 全部保留）。", min=0, max=10_000))


@dataclasses.dataclass
class LoraFields:
    """A LoRA adapter (peft) instead of training every weight."""

    use_lora: bool = dataclasses.field(default=True, metadata=meta(
        "lora", "LoRA", "LoRA",
        "Train a small low-rank adapter instead of all weights (the output is a PEFT adapter).",
        "只训练小型低秩适配器而非全部权重（输出为 PEFT 适配器）。"))
    lora_r: int = dataclasses.field(default=8, metadata=meta(
        "lora", "LoRA rank", "LoRA 秩", "Rank of the adapter matrices.", "适配器矩阵的秩。", min=1, max=1024))
    lora_alpha: int = dataclasses.field(default=16, metadata=meta(
        "lora", "LoRA alpha", "LoRA alpha", "Scaling of the adapter (effective scale alpha / r).",
        "适配器缩放系数（实际缩放为 alpha / r）。", min=1, max=4096))
    lora_dropout: float = dataclasses.field(default=0.05, metadata=meta(
        "lora", "LoRA dropout", "LoRA dropout", "Dropout on the adapter input.", "适配器输入上的 dropout。",
        min=0, max=1, max_exclusive=True))
    lora_target_modules: str = dataclasses.field(default="q_proj,k_proj,v_proj,o_proj", metadata=meta(
        "lora", "LoRA target modules", "LoRA 目标模块",
        "Comma-separated linear layers to adapt (OPT: q_proj,k_proj,v_proj,out_proj), or all-linear.",
        "要加适配器的线性层，逗号分隔（OPT 为 q_proj,k_proj,v_proj,out_proj），或 all-linear。"))


@dataclasses.dataclass
class DataFields:
    """How a training recipe reads its dataset: DeepSpeed-Chat's split, the prompt column, the template, the length
    limit and the eval share. A schema adds its dataset (``order=-1``: first), its answer columns (between the prompt
    column and the template) and its own options (``order=2``: last), and redefaults data_split's help to its step."""

    data_split: str = dataclasses.field(default="", metadata=meta(
        "data", "Data split", "数据划分",
        "DeepSpeed-Chat's split of one dataset over its 3 steps, e.g. 2,4,4: SFT uses the first part, the reward "
        "model and DPO the second. Empty = all rows (or the split saved with a studio dataset).",
        "DeepSpeed-Chat 在三个阶段间划分同一数据集的比例，如 2,4,4：SFT 使用第一部分，奖励模型与 DPO 使用第二部分。"
        "留空 = 全部行（或工作室数据集保存的划分）。"))
    prompt_column: str = dataclasses.field(default="prompt", metadata=meta(
        "data", "Prompt column", "提示列", "Column that holds the prompt.", "存放提示的列名。"))
    template: str = dataclasses.field(default="chat", metadata=meta(
        "data", "Prompt template", "提示模板",
        "How prompt and answer are joined: chat = the model's own chat template; dschat = DeepSpeed-Chat's "
        "`Human: …\\n\\nAssistant: …`; plain = prompt, newline, answer. The reward model and DPO should use the "
        "template of the SFT step.",
        "提示与回答的拼接方式：chat = 模型自带的对话模板；dschat = DeepSpeed-Chat 的 `Human: …\\n\\nAssistant: …`；"
        "plain = 提示、换行、回答。奖励模型与 DPO 应与 SFT 阶段使用相同模板。", choices=list(TEMPLATES), order=1))
    max_seq_len: int = dataclasses.field(default=512, metadata=meta(
        "data", "Max sequence length", "最大序列长度",
        "Tokens per sample after the template; longer samples are cut. Batches are padded only to their "
        "longest sample, never to this length.",
        "套用模板后每个样本的最大 token 数，超出部分截断。每个批次只填充到批内最长样本，而不是这个长度。",
        min=8, max=131072, order=1))
    eval_ratio: float = dataclasses.field(default=0.1, metadata=meta(
        "data", "Eval split", "验证集比例",
        "Share of the rows held out for evaluation: the eval loss, and a reward model's chosen/rejected scores and "
        "accuracy (0 = no evaluation).",
        "留作验证集的行比例：用于计算验证损失，奖励模型还计算优选/劣选得分和准确率（0 = 不评估）。", min=0, max=0.5,
        order=1))


@dataclasses.dataclass
class GenerationFields:
    """How an answer is generated: the chat page, the A/B evaluation and every inference tool's CLI."""

    max_new_tokens: int = dataclasses.field(default=128, metadata=meta(
        "training", "Max new tokens", "最大生成 token 数", "Length limit of each answer.", "每个回答的长度上限。",
        min=1, max=MAX_NEW_TOKENS_LIMIT))
    do_sample: bool = dataclasses.field(default=False, metadata=meta(
        "training", "Sample", "采样",
        "Off = greedy (repeatable, what DeepSpeed-Chat's prompt_eval does by default); on = sample with the "
        "temperature / top-p / top-k below, from the seed.",
        "关闭 = 贪心解码（可复现，DeepSpeed-Chat 的 prompt_eval 默认方式）；开启 = 按下面的温度 / top_p / top_k 从种子开始采样。"))
    temperature: float = dataclasses.field(default=0.7, metadata=meta(
        "training", "Temperature", "温度", "Sampling temperature (only with Sample).", "采样温度（仅在采样时生效）。",
        min=0, min_exclusive=True, max=5))
    top_p: float = dataclasses.field(default=0.9, metadata=meta(
        "training", "Top-p", "核采样 top_p", "Nucleus sampling: keep the smallest set of tokens with this total "
        "probability (only with Sample).", "核采样：保留累计概率达到此值的最小 token 集合（仅在采样时生效）。",
        min=0, min_exclusive=True, max=1))
    top_k: int = dataclasses.field(default=50, metadata=meta(
        "training", "Top-k", "候选数 top_k", "Sample among the k most likely tokens; 0 = no limit (only with Sample).",
        "只在概率最高的 k 个 token 中采样；0 = 不限制（仅在采样时生效）。", min=0, max=1_000_000))
    repetition_penalty: float = dataclasses.field(default=1.0, metadata=meta(
        "training", "Repetition penalty", "重复惩罚", "> 1 discourages repeating tokens (1 = off).",
        "大于 1 时抑制重复 token（1 = 关闭）。", min=0.5, max=3))
    seed: int = redefault(TrainingFields, "seed", 1234, help="Seed set before each answer (sampling only).",
                          help_zh="每次生成前设置的随机种子（仅影响采样）。")


@dataclasses.dataclass
class PromptFields(DataFields):
    """The models and prompt data of an RLHF step-3 recipe (PPO, GRPO, RLOO): the actor starts from a policy (an SFT
    result), a trained reward model scores its answers, and prompt-only rows (DeepSpeed-Chat's phase 3) feed the
    rollouts. ``accepts`` names what a model field takes (kinds.producing: the form lists those finished jobs)."""

    model_name_or_path: str = dataclasses.field(default="bundled:smollm2", metadata=meta(
        "model", "Actor (start from)", "Actor（初始策略）",
        "The policy RLHF trains: an SFT result (`job:<id>` or its output folder), `bundled:smollm2`, a folder or a hub "
        "id (DS-Chat --actor_model_name_or_path).",
        "RLHF 训练的策略模型：SFT 结果（`job:<id>` 或其输出目录）、`bundled:smollm2`、模型目录或 Hub 模型名"
        "（DeepSpeed-Chat 的 --actor_model_name_or_path）。", widget="model", accepts="policy"))
    reward_model: str = dataclasses.field(default="", metadata=meta(
        "model", "Reward model", "奖励模型",
        "A finished Reward model job (`job:<id>`) or a folder of a one-label sequence classifier; it scores every "
        "answer (DS-Chat --critic_model_name_or_path: PPO's critic starts from it too).",
        "已完成的奖励模型任务（`job:<id>`）或单输出序列分类模型的目录；为每个回答打分（DeepSpeed-Chat 的 "
        "--critic_model_name_or_path：PPO 的 critic 也由它初始化）。", widget="model", accepts="reward_model"))
    dataset: str = dataclasses.field(default="presets/datasets/demo_prompts.jsonl", metadata=meta(
        "data", "Prompt dataset", "提示数据集",
        "A studio dataset (any kind: only its prompts are used) or a file/folder with a prompt column; several, "
        "comma-separated, are blended.",
        "工作室数据集（任意类型，只用其提示）或含提示列的文件/目录；多个用逗号分隔时合并使用。",
        widget="file", dataset_kind="prompt", order=-1))
    data_split: str = redefault(DataFields, "data_split", "", help=(
        "DeepSpeed-Chat's split of one dataset over its 3 steps, e.g. 2,4,4: RLHF uses the third part (40%). "
        "Empty = all rows (or the split saved with a studio dataset)."), help_zh=(
        "DeepSpeed-Chat 在三个阶段间划分同一数据集的比例，如 2,4,4：RLHF 使用第三部分（40%）。留空 = 全部行"
        "（或工作室数据集保存的划分）。"))
    max_prompt_seq_len: int = dataclasses.field(default=256, metadata=meta(
        "data", "Max prompt length", "最大提示长度",
        "Prompt tokens after the template; longer prompts are left out, as DeepSpeed-Chat does (the log counts "
        "them).", "套用模板后提示的最大 token 数；更长的提示被跳过（与 DeepSpeed-Chat 相同，日志中计数）。",
        min=4, max=131072, order=1))
    max_answer_seq_len: int = dataclasses.field(default=256, metadata=meta(
        "data", "Max answer length", "最大回答长度", "Tokens generated per answer in the rollouts.",
        "每个回答在采样阶段生成的最大 token 数。", min=1, max=MAX_NEW_TOKENS_LIMIT, order=1))
