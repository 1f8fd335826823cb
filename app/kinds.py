"""The one registry of job kinds: every fact about a kind is declared here once, and everything else reads it.

A kind is what the engine runs (``sft``, ``reward``, ``dpo``, ``ab_eval`` …). Its entry names

- ``module``: the backend program (``python -m <module> --config runs/<id>/config.yaml``);
- ``schema`` / ``validate``: the backend's option dataclass and its cheap validation (imported lazily, as
  ``"module:attr"``; a backend module imports no torch at the top, so this costs milliseconds);
- ``tab`` and ``stage``: the tab that edits it, and its entry in that tab's algorithm dropdown when one tab
  hosts several kinds (the RLHF tab: DPO, KTO, later PPO/GRPO/RLOO — like LlamaBoard's stage selector);
- ``default_recipe``: the recipe a fresh tab opens with (presets/recipes/<name>.yaml);
- ``launch``: the launch spec a job gets when the caller gives none (app/jobs/launcher.LaunchSpec fields);
- ``series``: the metric series its curves show (app/tabs/plot.py draws them; names as in metrics.jsonl);
- ``produces``: what its output folder is — ``policy`` (a causal LM or LoRA adapter: the A/B tab's
  fine-tuned side), ``reward_model`` (a 1-label sequence classifier: the A/B tab's reward model), or None;
- ``panels``: extra live panels its tab shows for a job: ``samples`` (the rows of ``<run_dir>/samples.jsonl``:
  step, prompt, answer, reward -- RLHF's sample answers) and ``gallery`` (``<run_dir>/samples/*.png`` as they
  appear -- SD validation images);
- ``docs``: the README block with its options table (app/docs.py renders it from the schema).

What a kind consumes (a base model, an SFT result, a reward model, a dataset of some kind) is declared on the
schema's fields (``widget="model"`` / ``accepts=...``, ``dataset_kind=...``): the form's pickers and the
engine's model/dataset columns read it from there (see :func:`model_field`, :func:`dataset_field`).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from backends.common.errors import FieldError


@dataclass(frozen=True)
class Kind:
    name: str
    module: str
    schema_ref: str = ""
    validate_ref: str = ""
    tab: str | None = None
    stage: str = ""
    default_recipe: str = ""
    launch: dict = field(default_factory=dict)
    series: tuple[str, ...] = ("loss", "eval_loss")
    produces: str | None = None
    panels: tuple[str, ...] = ()  # extra live panels of its tab: "samples" (run_dir/samples.jsonl), "gallery"
    docs: str = ""
    model_key: str = ""    # only for a kind without a schema (a test stand-in): its config's model/dataset keys
    dataset_key: str = ""

    @property
    def schema(self) -> type | None:
        return _load(self.schema_ref) if self.schema_ref else None

    @property
    def validate(self):
        return _load(self.validate_ref) if self.validate_ref else (lambda cfg: None)


def _load(ref: str) -> Any:
    mod, _, attr = ref.partition(":")
    return getattr(importlib.import_module(mod), attr)


_KINDS: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add (or replace) a kind; the engine tests register a torch-free stand-in this way."""
    _KINDS[kind.name] = kind
    return kind


def get(name: str) -> Kind:
    try:
        return _KINDS[name]
    except KeyError:
        raise FieldError("kind", f"unknown job kind {name!r}; known: {', '.join(sorted(_KINDS))}") from None


def all_kinds() -> list[Kind]:
    return list(_KINDS.values())


def of_tab(tab: str) -> list[Kind]:
    """The kinds a tab edits, in registry order (the first is the tab's default)."""
    return [k for k in _KINDS.values() if k.tab == tab]


def producing(what: str) -> tuple[str, ...]:
    """Names of the kinds whose output is `what` (``policy``, ``reward_model``)."""
    return tuple(k.name for k in _KINDS.values() if k.produces == what)


def _descriptors(kind: str) -> list[dict]:
    from backends.common import config as cfgmod

    schema = get(kind).schema
    return cfgmod.field_descriptors(schema) if schema is not None else []


def model_field(kind: str) -> str | None:
    """The schema field naming the model the job starts from (the first field with widget="model")."""
    return next((d["name"] for d in _descriptors(kind) if d.get("widget") == "model"), get(kind).model_key or None)


def dataset_field(kind: str) -> str | None:
    """The schema field naming the job's dataset (the first field with a dataset_kind)."""
    return next((d["name"] for d in _descriptors(kind) if d.get("dataset_kind")), get(kind).dataset_key or None)


# ------------------------------------------------------------------------------------------ the kinds
# Registry order is each tab's stage-dropdown order: the RLHF tab lists PPO, GRPO, RLOO, then DPO / KTO.
register(Kind("sft", "backends.sft", "backends.sft:SFTArgs", "backends.sft:validate_config", tab="sft",
              stage="stage.sft", default_recipe="cpu-demo-smollm2", series=("loss", "eval_loss"),
              produces="policy", docs="options:sft"))
register(Kind("reward", "backends.reward", "backends.reward:RewardArgs", "backends.reward:validate_config",
              tab="reward", stage="stage.reward", default_recipe="cpu-demo-smollm2-rm",
              series=("loss", "eval_accuracy", "eval_chosen_score", "eval_rejected_score"),
              produces="reward_model", docs="options:reward"))
register(Kind("rlhf_ppo", "backends.rlhf.ppo", "backends.rlhf.ppo:PPOArgs", "backends.rlhf.ppo:validate_config",
              tab="rlhf", stage="stage.ppo", default_recipe="cpu-demo-smollm2-ppo",
              launch={"launcher": "accelerate", "preset": "cpu", "num_processes": 1},
              series=("reward_mean", "kl", "actor_loss", "critic_loss", "answer_len"),
              produces="policy", panels=("samples",), docs="options:rlhf_ppo"))
# GRPO / RLOO (critic-free RLHF, TRL's GRPOTrainer / RLOOTrainer): one program, two algorithms of the RLHF tab
_ONLINE_RL = dict(tab="rlhf", series=("reward_mean", "eval_reward_mean", "kl", "answer_len"),
                  produces="policy", panels=("samples",))
register(Kind("grpo", "backends.grpo", "backends.grpo:GRPOArgs", "backends.grpo:validate_config", stage="stage.grpo",
              default_recipe="cpu-demo-smollm2-grpo", docs="options:grpo", **_ONLINE_RL))
register(Kind("rloo", "backends.rloo", "backends.rloo:RLOOArgs", "backends.rloo:validate_rloo", stage="stage.rloo",
              default_recipe="cpu-demo-smollm2-rloo", docs="options:rloo", **_ONLINE_RL))
register(Kind("dpo", "backends.dpo", "backends.dpo:DPOArgs", "backends.dpo:validate_config", tab="rlhf",
              stage="stage.dpo", default_recipe="cpu-demo-smollm2-dpo",
              series=("loss", "eval_rewards/margins", "eval_rewards/accuracies", "eval_rewards/chosen",
                      "eval_rewards/rejected"),
              produces="policy", docs="options:dpo"))
register(Kind("ab_eval", "backends.ab_eval", "backends.ab_eval:ABEvalArgs", "backends.ab_eval:validate_config",
              launch={"launcher": "python", "preset": "cpu", "num_processes": 1}, series=(),
              docs="options:ab_eval"))
register(Kind("sd_distill", "backends.sd_distill_lora", "backends.sd_distill_lora:SDDistillArgs",
              "backends.sd_distill_lora:validate_config", tab="sd_lora", stage="stage.sd_distill",
              default_recipe="cpu-demo-tiny-sd", launch={"launcher": "accelerate", "preset": "cpu", "num_processes": 1},
              series=("loss",), produces="sd_lora", panels=("gallery",), docs="options:sd_distill"))
