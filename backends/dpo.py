"""Preference optimisation (DeepSpeed-Chat step2_dpo) with TRL's DPOTrainer, or KTO with TRL's KTOTrainer.

    python -m backends.dpo --config FILE [--field value ...]

Starts from an SFT result (``job:<id>``, its output folder) or any causal LM, and trains on preference rows
(prompt, chosen, rejected). ``algorithm: dpo`` (default) is Direct Preference Optimisation (beta, loss type,
label smoothing like DS-Chat's step2_dpo); ``algorithm: kto`` unpairs every row on the fly into two KTO rows
(prompt, chosen, label True) and (prompt, rejected, label False) -- one schema, one kind, ``algorithm`` picks.

The reference model: with LoRA no second copy is loaded -- a new adapter's reference is the same weights with
the adapter disabled; when the start is an SFT LoRA adapter, that adapter keeps training (is_trainable) and TRL
keeps a frozen copy of it as the "ref" adapter, so the reference is the SFT model itself. Full fine-tuning
(use_lora off) loads a second, frozen copy as the reference (DS-Chat does the same).

metrics.jsonl: loss plus TRL's implicit rewards ``beta * (logp - ref_logp)`` under TRL's names, on the held-out
rows before training and every eval step (``eval_`` prefix) and over each logged training step:

    rewards/chosen, rewards/rejected   mean implicit reward of the chosen / rejected answers (DS-Chat "chosen",
                                       "rejected")
    rewards/margins                    mean chosen - rejected
    rewards/accuracies                 share of rows with chosen > rejected (DPO only)

Output like an SFT result: the adapter (or the full model) + tokenizer + studio.json (kind dpo), so the chat,
A/B and RLHF tools load it the same way. Exit codes: 0 done, 2 bad option (naming the field), 128+signal after a
clean stop.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import reward as rm
from backends.common import config as cfglib
from backends.common import modeling, runner
from backends.common import trainer as trainer_lib
from backends.common.errors import FieldError

KIND = "dpo"
DESCRIPTION = "DPO / KTO preference optimisation (DeepSpeed-Chat step2_dpo) with TRL's DPOTrainer / KTOTrainer."
_m = cfglib.meta
ALGORITHMS = ("dpo", "kto")
DPO_LOSSES = ["sigmoid", "hinge", "ipo", "robust", "bco_pair", "sppo_hard", "nca_pair", "apo_zero", "apo_down"]
KTO_LOSSES = ["kto", "apo_zero_unpaired"]
METRICS = ("eval_rewards/chosen", "eval_rewards/rejected", "eval_rewards/margins", "eval_rewards/accuracies")


@dataclass
class DPOArgs(cfglib.TrainingFields, cfglib.LoraFields, cfglib.JobFields, rm.PreferenceFields):
    """Options of the DPO / KTO backend."""

    algorithm: str = field(default="dpo", metadata=_m(
        "training", "Algorithm", "算法",
        "dpo = Direct Preference Optimisation on (chosen, rejected) pairs; kto = Kahneman-Tversky Optimisation: "
        "each pair becomes a desirable and an undesirable example.",
        "dpo = 基于（优选, 劣选）回答对的直接偏好优化；kto = KTO：每对拆成一个正例和一个负例。", choices=list(ALGORITHMS)))
    beta: float = field(default=0.1, metadata=_m(
        "training", "Beta", "β",
        "Strength of the pull towards the reference model (DS-Chat --beta 0.1); higher = stay closer.",
        "向参考模型靠拢的强度（DeepSpeed-Chat 的 --beta 0.1）；越大越接近参考模型。", min=0, min_exclusive=True, max=100))
    loss_type: str = field(default="sigmoid", metadata=_m(
        "training", "Loss", "损失类型",
        "DPO: sigmoid (the paper's), hinge, ipo, robust, …; KTO: kto or apo_zero_unpaired. `sigmoid` with "
        "algorithm kto means kto.",
        "DPO：sigmoid（论文原式）、hinge、ipo、robust 等；KTO：kto 或 apo_zero_unpaired。算法为 kto 时 sigmoid 即 kto。",
        choices=DPO_LOSSES + KTO_LOSSES))
    label_smoothing: float = field(default=0.0, metadata=_m(
        "training", "Label smoothing", "标签平滑",
        "Assumed share of flipped preference labels (conservative DPO, DS-Chat --label_smoothing 0); DPO only.",
        "假定偏好标签被标反的比例（保守 DPO，DeepSpeed-Chat 的 --label_smoothing 0）；仅 DPO。", min=0, max=0.5,
        max_exclusive=True))
    learning_rate: float = cfglib.redefault(cfglib.TrainingFields, "learning_rate", 5e-5)


SCHEMA = DPOArgs


@dataclass
class Resolved:
    job: runner.Job
    model: str       # the base / full model folder (or hub id)
    adapter: str     # an SFT LoRA adapter to keep training, or ""
    model_config: dict
    datasets: list
    start_info: dict

    def __getattr__(self, name):
        return getattr(self.__dict__["job"], name)


def resolve(cfg: DPOArgs, job: runner.Job | None = None) -> Resolved:
    """Check every option against the files it names (config.json, the dataset's rows; no weights)."""
    job = job or runner.resolve_job(cfg, KIND)
    dd = job.data_dir
    model, adapter, info = modeling.start_model(cfg.model_name_or_path, dd, kinds=rm.START_KINDS)
    model_config = modeling.check_model_dir(model, original=cfg.model_name_or_path)
    archs = [str(a) for a in model_config.get("architectures") or []]
    if info.get("kind") == "reward" or any(a.endswith("ForSequenceClassification") for a in archs):
        raise FieldError("model_name_or_path", f"{cfg.model_name_or_path} is a reward model (sequence "
                                               "classification), not a causal LM: start DPO from an SFT result or "
                                               "a base model")
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise FieldError("model_name_or_path", f"{cfg.model_name_or_path} is a {', '.join(archs)}, not a causal "
                                               "LM: start DPO from an SFT result or a base model")
    if cfg.algorithm == "dpo" and cfg.loss_type in KTO_LOSSES:
        raise FieldError("loss_type", f"{cfg.loss_type} is a KTO loss; with algorithm dpo use one of "
                                      f"{', '.join(DPO_LOSSES)}")
    if cfg.algorithm == "kto" and cfg.loss_type not in (*KTO_LOSSES, "sigmoid"):
        raise FieldError("loss_type", f"{cfg.loss_type} is a DPO loss; with algorithm kto use kto or "
                                      "apo_zero_unpaired")
    if cfg.use_lora and not adapter:
        modeling.check_target_modules(model_config, modeling.parse_modules(cfg.lora_target_modules))
    if cfg.template == "chat" and not modeling.has_chat_template(adapter or model):
        raise FieldError("template", f"the model at {cfg.model_name_or_path} has no chat template; use dschat or plain")
    rm.check_max_len(cfg, model_config)
    if cfg.precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("precision", "fp16 needs a CUDA GPU; use fp32 on CPU (bf16 works but is slow)")
    ds_paths = rm.resolve_preference_data(cfg, dd)
    return Resolved(job, model, adapter, model_config, ds_paths, info)


def validate_config(cfg: DPOArgs | dict) -> None:
    resolve(runner.ensure_args(DPOArgs, cfg))


def unpair(ds):
    """Preference rows -> KTO rows: (prompt, chosen, label True) and (prompt, rejected, label False)."""
    def split(batch):
        out = {"prompt": [], "completion": [], "label": []}
        for p, c, r in zip(batch["prompt"], batch["chosen"], batch["rejected"]):
            out["prompt"] += [p, p]
            out["completion"] += [c, r]
            out["label"] += [True, False]
        return out

    return ds.map(split, batched=True, remove_columns=list(ds.column_names))


def load_model(cfg: DPOArgs, r: Resolved, dtype: str):
    """The policy: the start causal LM, with its SFT adapter trainable when the start is one."""
    model = modeling.load_causal_lm(r.model, dtype=dtype)
    if r.adapter and cfg.use_lora:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, r.adapter, is_trainable=True)
    elif r.adapter:  # full fine-tuning of an SFT adapter result: merge it first
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, r.adapter).merge_and_unload()
    return model


def build_trainer(cfg: DPOArgs, r: Resolved, *, callbacks: list | None = None, log=trainer_lib.log):
    import trl

    trainer_lib.quiet_libraries()
    tokenizer = modeling.load_tokenizer(r.adapter or r.model)
    train_ds, eval_ds = rm.load_preference_data(cfg, r, tokenizer, phase=1, log=log)
    has_eval = eval_ds is not None and len(eval_ds) > 0
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(train_ds)} train / "
        f"{len(eval_ds) if has_eval else 0} eval pairs (template {cfg.template}, algorithm {cfg.algorithm})")
    common = dict(**trainer_lib.training_kwargs(cfg, r, has_eval=has_eval), max_length=cfg.max_seq_len,
                  beta=cfg.beta, pad_to_multiple_of=None, disable_dropout=True,
                  include_num_input_tokens_seen="non_padding")
    if cfg.algorithm == "kto":
        train_ds, eval_ds = unpair(train_ds), unpair(eval_ds) if has_eval else None
        args = trl.KTOConfig(**common, loss_type="kto" if cfg.loss_type == "sigmoid" else cfg.loss_type)
        trainer_cls = trl.KTOTrainer
    else:
        args = trl.DPOConfig(**common, loss_type=[cfg.loss_type], label_smoothing=cfg.label_smoothing)
        trainer_cls = trl.DPOTrainer
    model = load_model(cfg, r, trainer_lib.weights_dtype(cfg, r))
    peft = trainer_lib.peft_config(cfg) if cfg.use_lora and not r.adapter else None
    trainer = trainer_cls(model=model, ref_model=None, args=args, train_dataset=train_ds,
                          eval_dataset=eval_ds if has_eval else None, processing_class=tokenizer,
                          peft_config=peft, callbacks=list(callbacks or []))
    what = r.model + (f" + {Path(r.adapter).name} (SFT adapter, trained on)" if r.adapter and cfg.use_lora else "")
    trainer_lib.prepare(trainer, cfg, what, log=log)
    ref = "the adapter disabled" if trainer.ref_model is None and not r.adapter else (
        "the SFT adapter's frozen copy" if trainer.ref_model is None else "a second frozen copy")
    log(f"reference model: {ref}")
    return trainer


def save_policy(trainer, output_dir: Path) -> None:
    """The adapter (without TRL's frozen "ref" copy) or the full model."""
    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        shutil.rmtree(output_dir / "ref", ignore_errors=True)  # PeftModel.save_pretrained writes every adapter


def train(cfg: DPOArgs | dict, job: runner.Job | None = None, *, log=trainer_lib.log) -> dict[str, Any]:
    """Run DPO/KTO as configured; returns the end record (also the last line of metrics.jsonl)."""
    cfg = runner.ensure_args(DPOArgs, cfg)
    r = resolve(cfg, job)
    base_ref = r.start_info.get("base_model_ref") if r.adapter else cfg.model_name_or_path
    return trainer_lib.run(
        KIND, cfg, r, lambda callbacks: build_trainer(cfg, r, callbacks=callbacks, log=log),
        start_info={"model": r.model, "adapter": r.adapter, "dataset": ",".join(map(str, r.datasets)),
                    "template": cfg.template, "algorithm": cfg.algorithm, "max_seq_len": cfg.max_seq_len},
        studio_info={"adapter": cfg.use_lora, "base_model": r.model, "base_model_ref": base_ref or r.model,
                     "start": cfg.model_name_or_path, "start_adapter": r.adapter, "algorithm": cfg.algorithm,
                     "dataset": ",".join(map(str, r.datasets)), "template": cfg.template},
        metrics_keys=METRICS, save_model=save_policy, log=log)


def parse_args(argv: list[str] | None = None) -> DPOArgs:
    return runner.parse_args(DPOArgs, argv, kind=KIND, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return runner.main(KIND, DPOArgs, train, argv, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "SCHEMA", "DPOArgs", "build_trainer", "main", "resolve", "train", "unpair", "validate_config"]
