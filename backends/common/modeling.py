"""Models, tokenizers and LoRA for the LLM backends, and the `studio.json` written next to every output.

- :func:`resolve_model` turns `bundled:smollm2`, a folder or a hub id into what `from_pretrained` takes;
- :func:`check_model_dir` reads only `config.json` (cheap validation from the UI);
- :func:`load_tokenizer` / :func:`load_causal_lm` / :func:`lora_config`;
- :func:`write_studio_json` / :func:`load_trained` -- an output folder (PEFT adapter or full model) back into
  a model for generation, whichever it is.
"""
from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from . import paths
from .errors import FieldError

BUNDLED_MODELS = {"smollm2": paths.smollm2_dir, "tiny-sd": paths.tiny_sd_dir, "tiny-sd-shapes": paths.tiny_sd_shapes_dir}
STUDIO_JSON = "studio.json"
# Job kinds whose result is a policy (a causal LM or its LoRA adapter) that SFT-based recipes may start from. The
# backends cannot read app/kinds.py (no upward imports); tests/test_kinds.py checks this equals the kinds that
# declare produces="policy" there.
POLICY_KINDS = ("sft", "rlhf_ppo", "grpo", "rloo", "dpo")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Attention/MLP projection names per architecture, to check lora_target_modules without loading a model.
KNOWN_LINEAR_MODULES: dict[str, set[str]] = {
    **{t: {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
       for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "smollm3", "phi3", "olmo", "olmo2")},
    "opt": {"q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"},
    "gpt2": {"c_attn", "c_proj", "c_fc"},
    "gpt_neox": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
    "bloom": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
}


# ----------------------------------------------------------------------------------- locating
def is_hub_id(value: str) -> bool:
    return bool(_HUB_ID.match(value)) and not value.startswith((".", "/", "~"))


def resolve_model(value: str, data_dir: str | os.PathLike | None = None, *,
                  field: str = "model_name_or_path") -> str:
    """A local folder path (as str) or a hub id.

    `bundled:smollm2` -> `<data-dir>/models/smollm2-135m-instruct`; `job:<id>` -> that job's output folder
    `<data-dir>/runs/<id>/output` (needs the data dir); a relative path is tried against the working dir, then
    `<data-dir>/models`, then the project root; `org/name` that is no local folder is a hub id.
    """
    v = str(value or "").strip()
    if not v:
        raise FieldError(field, "is empty: give a model folder (with config.json), bundled:smollm2 or a hub id")
    if v.startswith("job:"):
        if not data_dir:
            raise FieldError(field, f"{v} names a job: it needs the data dir (--data_dir) the job ran in")
        return str(job_output(v, data_dir, field=field))
    if v.startswith("bundled:"):
        name = v.split(":", 1)[1]
        if name not in BUNDLED_MODELS:
            raise FieldError(field, f"unknown bundled model {name!r}; known: {', '.join(BUNDLED_MODELS)}")
        return str(BUNDLED_MODELS[name](data_dir or None))
    p = Path(v).expanduser()
    candidates = [p] if p.is_absolute() else [p, paths.models_dir(data_dir or None) / p, paths.ROOT / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    if is_hub_id(v):
        return v
    return str(p)


def job_output(value: str, data_dir: str | os.PathLike | None = None, *, field: str = "model") -> Path:
    """`job:<id>` -> `<data-dir>/runs/<id>/output`, resolved; an id that leads out of runs/ (`job:../../x`, an
    absolute path, a link) is refused, so a typed side can name only a job's own output."""
    job = str(value or "").strip().split(":", 1)[-1].strip()
    runs = paths.runs_dir(data_dir or None)
    paths.join_inside(runs, job, field=field, what="the runs folder")
    if job != Path(job).name or "\\" in job:
        raise FieldError(field, f"{job!r} is not a job id (a name like 20250101-120000-sft-ab12, without '/')")
    return paths.join_inside(runs, f"{job}/output", field=field, what="the runs folder")


def start_model(value: str, dd: Path | None, *, field: str = "model_name_or_path",
                kinds: tuple[str, ...] = ()) -> tuple[str, str, dict]:
    """(model folder or hub id, LoRA adapter folder or "", studio.json of a result or {}) of a model field:
    `bundled:<name>`, a folder, a hub id, or `job:<id>` (a finished job of one of `kinds`, see runner.job_result).
    An adapter's base model is resolved and checked too."""
    from . import runner

    info: dict = {}
    if str(value).strip().startswith("job:"):
        out, info = runner.job_result(value, dd, field=field, kinds=kinds)
        path = str(out)
    else:
        path = resolve_model(value, dd, field=field)
        info = read_studio_json(path) if Path(path).is_dir() else {}
    p = Path(path)
    if (p / "adapter_config.json").is_file():
        try:
            base_ref = info.get("base_model") or json.loads((p / "adapter_config.json").read_text())[
                "base_model_name_or_path"]
        except (OSError, ValueError, KeyError):
            raise FieldError(field, f"{value}: adapter_config.json names no base model") from None
        base = resolve_model(base_ref, dd, field=field)
        check_model_dir(base, field=field, original=f"the base of {value} ({base_ref})")
        return base, str(p), info
    return path, "", info


def check_reward_model(path: str, *, field: str = "reward_model") -> dict:
    """config.json of a 1-label sequence classifier (a reward model); FieldError naming the field otherwise."""
    cfg = check_model_dir(path, field=field)
    archs = [str(a) for a in cfg.get("architectures") or []]
    if cfg and not any(a.endswith("ForSequenceClassification") for a in archs):
        raise FieldError(field, f"{path} is not a reward model ({', '.join(archs) or 'no architectures'}): pick a "
                                "finished Reward model job (job:<id>) or a ...ForSequenceClassification folder")
    labels = len(cfg.get("id2label") or {"0": ""}) if cfg else 1
    if labels != 1:
        raise FieldError(field, f"{path} is a classifier with {labels} labels; a reward model has one score "
                                "(num_labels=1)")
    return cfg


def rlhf_reward_model(value: str, data_dir, actor_tokenizer: str, actor_ref: str, *, why: str,
                      field: str = "reward_model") -> tuple[str, dict, dict]:
    """The reward model of an RLHF recipe (PPO, GRPO, RLOO): (folder, its config.json, its studio.json), checked --
    set, a finished reward job or folder (not an adapter), a 1-label classifier, the actor's tokenizer (refused,
    not re-tokenised: `why` says why the recipe needs one tokenizer). FieldError naming `field` otherwise."""
    if not str(value or "").strip():
        raise FieldError(field, "is empty: pick a finished Reward model job (job:<id>) or the folder of a one-label "
                                "sequence classifier (...ForSequenceClassification)")
    path, adapter, info = start_model(value, data_dir, field=field, kinds=("reward",))
    if adapter:
        raise FieldError(field, f"{value} is a LoRA adapter; a reward model is a whole one-label sequence "
                                "classifier (a Reward model job's output)")
    config = check_reward_model(path, field=field)
    if Path(path).is_dir() and Path(actor_tokenizer).is_dir() and not same_tokenizer(actor_tokenizer, path):
        raise FieldError(field, f"{value} tokenizes differently from the actor {actor_ref}: {why}; train the "
                                "reward model from the same base model family")
    return path, config, info


def same_tokenizer(a: str, b: str) -> bool:
    """True when two model folders tokenize alike (same vocabulary and special tokens), from their files."""
    def vocab(p: str):
        tok = Path(p) / "tokenizer.json"
        if tok.is_file():
            j = json.loads(tok.read_text(encoding="utf-8"))
            return j.get("model", {}).get("vocab"), [t.get("content") for t in j.get("added_tokens") or []]
        v = Path(p) / "vocab.json"
        return (json.loads(v.read_text(encoding="utf-8")) if v.is_file() else None), None

    va, vb = vocab(a), vocab(b)
    return va[0] is not None and va == vb


def has_chat_template(model_path: str) -> bool:
    """Whether a local model folder's tokenizer has a chat template (a hub id: assumed yes)."""
    p = Path(model_path)
    if not p.is_dir():
        return True  # hub id: cannot tell cheaply
    if (p / "chat_template.jinja").is_file() or (p / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((p / "tokenizer_config.json").read_text(encoding="utf-8")).get("chat_template"))
    except (OSError, ValueError):
        return False


def check_model_dir(path: str, *, field: str = "model_name_or_path", original: str | None = None) -> dict:
    """config.json of a local model folder (or {} for a hub id); FieldError when the folder is no model."""
    shown = original or path
    p = Path(path)
    if not p.exists():
        if is_hub_id(path):
            return {}
        if shown.startswith("bundled:"):
            raise FieldError(field, f"the bundled model is not prepared yet ({path}); prepare it in the "
                                    "Environment tab or with `python -m backends.bundled prepare`")
        raise FieldError(field, f"folder not found: {shown}")
    if not p.is_dir():
        raise FieldError(field, f"{shown} is a file; give the model folder that holds config.json")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        if (p / "adapter_config.json").is_file():
            raise FieldError(field, f"{shown} is a LoRA adapter, not a model; give its base model "
                                    "(see base_model_name_or_path in adapter_config.json)")
        raise FieldError(field, f"{shown} is not a model folder (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise FieldError(field, f"{cfg_file} is not readable JSON: {e}") from None
    if not any((p / n).exists() for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                          "pytorch_model.bin.index.json")):
        raise FieldError(field, f"{shown} has a config.json but no weights (model.safetensors / pytorch_model.bin)")
    return cfg


def parse_modules(value: str | list[str]) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
    else:
        items = re.split(r"[,\s]+", str(value or ""))
    return [m.strip() for m in items if m.strip()]


def check_target_modules(model_config: dict, modules: list[str], *, field: str = "lora_target_modules") -> None:
    if not modules:
        raise FieldError(field, "is empty: list the linear layers to adapt, e.g. q_proj,k_proj,v_proj,o_proj")
    if modules == ["all-linear"]:
        return
    known = KNOWN_LINEAR_MODULES.get(str(model_config.get("model_type", "")))
    if not known:
        return
    bad = [m for m in modules if m not in known]
    if bad:
        raise FieldError(field, f"{', '.join(bad)} not in a {model_config.get('model_type')} model; "
                                f"use some of {', '.join(sorted(known))} (or all-linear)")


# ------------------------------------------------------------------------------------ loading
def torch_dtype(precision: str):
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(path: str, *, dtype: str = "fp32", **kwargs):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype(dtype), **kwargs)
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False  # training; generate() turns it back on per call
    return model


def lora_config(r: int, alpha: int, dropout: float, target_modules: str | list[str], *, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    modules = parse_modules(target_modules)
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                      target_modules="all-linear" if modules == ["all-linear"] else modules,
                      bias="none", task_type=task_type)


# ------------------------------------------------------------------------------------ outputs
def write_studio_json(output_dir: str | os.PathLike, info: dict[str, Any]) -> Path:
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rec = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    p = out / STUDIO_JSON
    p.write_text(json.dumps(rec, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return p


def read_studio_json(output_dir: str | os.PathLike) -> dict[str, Any]:
    p = Path(output_dir) / STUDIO_JSON
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}


def load_trained(output_dir: str | os.PathLike, *, base: str | None = None, dtype: str = "fp32"):
    """(model, tokenizer, studio_info) from an SFT output folder: base + PEFT adapter, or a full model."""
    out = Path(output_dir)
    info = read_studio_json(out)
    tok = load_tokenizer(str(out)) if (out / "tokenizer_config.json").is_file() else None
    if (out / "adapter_config.json").is_file():
        from peft import PeftModel

        if base is None:
            base = info.get("base_model") or json.loads((out / "adapter_config.json").read_text())[
                "base_model_name_or_path"]
        model = load_causal_lm(base, dtype=dtype)
        model = PeftModel.from_pretrained(model, str(out))
        tok = tok or load_tokenizer(base)
    else:
        model = load_causal_lm(str(out), dtype=dtype)
        tok = tok or load_tokenizer(str(out))
    model.config.use_cache = True
    model.eval()
    return model, tok, info


def greedy(model, tokenizer, text: str, max_new_tokens: int = 32) -> str:
    """Greedy continuation of `text` (already formatted with the template), decoded without special tokens."""
    import torch

    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()
