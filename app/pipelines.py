"""Pipeline recipes (presets/recipes/*.yaml with ``kind: pipeline``): DeepSpeed-Chat's e2e_rlhf.py choices turned
into the steps app/jobs/pipeline.py queues.

A pipeline recipe names, per step, the shipped recipe it starts from plus overrides, and the choices of
DS-Chat's launcher (actor model, reward model, data, data_split, deployment type, step-3 algorithm, LoRA)::

    kind: pipeline
    name: cpu-demo-smollm2-rlhf
    deployment: cpu                 # cpu | single_gpu | single_node | multi_node (hostfile)
    algorithm: ppo                  # step 3: ppo | grpo | rloo; dpo = the two-step SFT -> DPO variant
    actor_model: bundled:smollm2
    reward_model: bundled:smollm2   # the base the reward model (and PPO's critic) starts from
    dataset: ""                     # one dataset for every step (split by data_split), or "" = each recipe's own
    data_split: ""
    use_lora: true
    steps:
      sft: {recipe: cpu-demo-smollm2, config: {...}, launcher: {zero_stage: 3}}   # overrides of that recipe
      reward: {recipe: cpu-demo-smollm2-rm}
      ppo: {recipe: cpu-demo-smollm2-ppo}
      grpo: {recipe: cpu-demo-smollm2-grpo}
      dpo: {recipe: cpu-demo-smollm2-dpo}

:func:`build_steps` turns a recipe plus the form's choices into the engine's steps: step 1 SFT of the actor, step 2
the reward model, step 3 the algorithm's job from ``job:@1`` with the reward model ``job:@2`` (DPO: two steps).
"""
from __future__ import annotations

from pathlib import Path

import yaml

from app import kinds
from app.jobs.launcher import LaunchSpec
from backends.common import paths
from backends.common.errors import FieldError

RECIPES_DIR = paths.ROOT / "presets" / "recipes"
DEPLOYMENTS = ("cpu", "single_gpu", "single_node", "multi_node")
# step-3 algorithm -> the job kind that runs it (only those registered are offered)
ALGORITHM_KINDS = {"ppo": "rlhf_ppo", "grpo": "grpo", "rloo": "rloo", "dpo": "dpo"}
# what each deployment changes in a step recipe's launcher (its ZeRO stage and offload stay the recipe's)
DEPLOYMENT_LAUNCH = {
    "cpu": {"launcher": "accelerate", "preset": "cpu", "num_processes": 1, "zero_stage": None, "offload": False},
    "single_gpu": {"launcher": "deepspeed", "preset": "single_gpu", "num_processes": 1},
    "single_node": {"launcher": "deepspeed", "preset": "multi_gpu", "num_processes": 8},
    "multi_node": {"launcher": "deepspeed", "preset": "multi_node"},
}


def algorithms() -> list[str]:
    """The step-3 algorithms whose kind is registered, in DS-Chat's order (PPO first)."""
    names = {k.name for k in kinds.all_kinds()}
    return [a for a, k in ALGORITHM_KINDS.items() if k in names]


def load_recipes() -> dict[str, dict]:
    out = {}
    for p in sorted(RECIPES_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(data, dict) and data.get("kind") == "pipeline":
            out[data.get("name") or p.stem] = data
    return out


def _step_recipe(name: str, kind: str) -> dict:
    p = RECIPES_DIR / f"{name}.yaml"
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        raise FieldError("recipe", f"the step recipe {name!r} is missing or unreadable (presets/recipes)") from None
    if data.get("kind") != kind:
        raise FieldError("recipe", f"the step recipe {name!r} is a {data.get('kind')!r} recipe, not {kind!r}")
    return data


def build_steps(recipe: dict, *, actor_model: str | None = None, reward_model: str | None = None,
                dataset: str | None = None, data_split: str | None = None, deployment: str | None = None,
                algorithm: str | None = None, use_lora: bool | None = None, hostfile: str = "",
                overrides: dict[str, dict] | None = None) -> list[dict]:
    """The steps (app/jobs/pipeline.submit's input) of a pipeline recipe with the form's choices (None = the
    recipe's). `overrides`: {"sft"|"reward"|"rlhf": {field: value}} from the steps' key fields."""
    def pick(value, key, default=None):
        return recipe.get(key, default) if value is None else value

    deployment = pick(deployment, "deployment", "cpu")
    if deployment not in DEPLOYMENTS:
        raise FieldError("deployment", f"must be one of {', '.join(DEPLOYMENTS)}; got {deployment!r}")
    algorithm = pick(algorithm, "algorithm", "ppo")
    if algorithm not in algorithms():
        raise FieldError("algorithm", f"must be one of {', '.join(algorithms()) or 'none yet'}; got {algorithm!r}")
    if deployment == "multi_node" and not (hostfile or recipe.get("hostfile")):
        raise FieldError("hostfile", "multi_node needs a hostfile: one `host slots=N` line per machine")
    steps_cfg = recipe.get("steps") or {}
    actor_model, reward_model = pick(actor_model, "actor_model", ""), pick(reward_model, "reward_model", "")
    dataset, data_split = pick(dataset, "dataset", ""), pick(data_split, "data_split", "")
    use_lora = pick(use_lora, "use_lora")
    overrides = overrides or {}

    plan = [("sft", "sft", {"model_name_or_path": actor_model})]
    if algorithm == "dpo":
        plan.append(("rlhf", "dpo", {"model_name_or_path": "job:@1"}))
    else:
        plan.append(("reward", "reward", {"model_name_or_path": reward_model}))
        plan.append(("rlhf", ALGORITHM_KINDS[algorithm], {"model_name_or_path": "job:@1", "reward_model": "job:@2"}))
    steps = []
    for role, kind, wiring in plan:
        entry = steps_cfg.get(algorithm if role == "rlhf" else role) or {}
        if not entry.get("recipe"):
            raise FieldError("recipe", f"the pipeline recipe {recipe.get('name')!r} names no {role} step recipe"
                                       + (f" for {algorithm}" if role == "rlhf" else ""))
        base = _step_recipe(entry["recipe"], kind)
        config = {**(base.get("config") or {}), **(entry.get("config") or {})}
        config.update({k: v for k, v in wiring.items() if v})
        if dataset:
            config["dataset"] = dataset
        if data_split:
            config["data_split"] = data_split
        if use_lora is not None and "use_lora" in config:
            config["use_lora"] = bool(use_lora)
        config.update(overrides.get(role) or {})
        launch = {**(base.get("launcher") or {}), **(entry.get("launcher") or {}), **DEPLOYMENT_LAUNCH[deployment]}
        if deployment == "multi_node":
            from app.jobs.launcher import parse_hostfile

            launch["hostfile_text"] = hostfile or recipe.get("hostfile", "")
            launch["num_machines"] = max(2, len(parse_hostfile(launch["hostfile_text"])))
        steps.append({"kind": kind, "role": role, "title": f"{role}: {kind}", "recipe": entry["recipe"],
                      "config": config, "spec": LaunchSpec.from_dict(launch)})
    return steps


def commands(engine, steps: list[dict]) -> str:
    """Each step's command as the engine would write it (nothing queued): step 1's whole command.sh (cd, the
    variables every step exports), then each step's own launch line."""
    out = []
    for n, s in enumerate(steps, 1):
        sh = engine.preview_command(s["kind"], s["config"], s["spec"]).strip().splitlines()
        out.append(f"# --- step {n}: {s['title']} (recipe {s['recipe']})" + (", after step %d" % (n - 1) if n > 1 else ""))
        out += sh if n == 1 else [line for line in sh if line.startswith("exec ")]
    return "\n".join(out) + "\n"


def is_oom(error: str) -> bool:
    from app.jobs.summary import GPU_OOM_HINT, KILLED_HINT

    return GPU_OOM_HINT in (error or "") or KILLED_HINT in (error or "")


def first_failure(st: dict) -> tuple[int, dict] | None:
    """(step number, job) of the step that failed or stopped, else None."""
    for i, j in enumerate(st["jobs"], 1):
        if j is not None and j["status"] in ("failed", "stopped", "interrupted"):
            return i, j
    return None


def recipe_path(name: str) -> Path:
    return RECIPES_DIR / f"{name}.yaml"


def describe(recipe: dict, lang: str) -> str:
    return recipe.get("description_zh" if lang == "zh" else "description", "") or recipe.get("description", "")


__all__ = ["ALGORITHM_KINDS", "DEPLOYMENTS", "algorithms", "build_steps", "commands", "describe", "first_failure",
           "is_oom", "load_recipes"]
