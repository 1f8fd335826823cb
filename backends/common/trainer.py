"""Shared plumbing of the HF Trainer / TRL recipes (SFT, reward model, DPO/KTO), declared once.

- :func:`training_kwargs` -- the TrainingArguments keywords from :class:`~backends.common.config.TrainingFields`
  and the resolved :class:`~backends.common.runner.Job` (checkpoints dir, eval before training and every
  ``eval_steps``, saves, no tqdm/report_to, explicit ``bf16``/``gradient_checkpointing`` -- TRL's configs default
  both on, ~20x slower on CPUs --, DeepSpeed with the CPU/gloo PartialState fix or a MULTI_CPU gloo group);
- :func:`peft_config` -- the LoRA config from :class:`~backends.common.config.LoraFields`;
- :func:`prepare` -- remove the tqdm printers, log the distributed setup and the trainable size;
- :func:`run` -- the whole train() skeleton of a recipe: stop object, threads, metrics.jsonl, build, train
  (resume), save the output + tokenizer + ``studio.json``, end record with ``exit_code``.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import config as cfglib
from . import modeling


def log(msg: str) -> None:
    from .distributed import is_main_process

    if is_main_process():
        print(f"[studio] {msg}", flush=True)


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:  # pragma: no cover
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # "Loading weights: 100%|…" bars in the log box
    except ImportError:  # pragma: no cover
        pass
    import warnings

    # library deprecation chatter that says nothing to a studio user (the log box shows this stream)
    for pattern in (".*generation flags are not valid.*", ".*gradient_checkpointing.* is deprecated.*",
                    ".*all_gather_into_tensor.* is deprecated.*", ".*'pin_memory' argument is set as true.*"):
        warnings.filterwarnings("ignore", message=pattern)


def training_kwargs(cfg: Any, job: Any, *, has_eval: bool) -> dict[str, Any]:
    """TrainingArguments keywords for any TRL config (SFTConfig, RewardConfig, DPOConfig, KTOConfig).

    Call it before loading the model: with DeepSpeed on CPU it creates the gloo PartialState the Trainer must
    use (stack-notes), and with ZeRO-3 the arguments register the config that from_pretrained partitions with.
    """
    from . import distributed as dist

    extra = dist.setup_deepspeed(job.deepspeed, job.data_dir) if job.deepspeed else dist.setup_cpu_distributed()
    return dict(
        output_dir=str(job.checkpoints_dir),
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        num_train_epochs=cfg.num_train_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        # TRL defaults bf16=True and gradient_checkpointing=True: ~20x slower on these CPUs, so set both
        bf16=cfg.precision == "bf16",
        fp16=cfg.precision == "fp16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy="steps" if has_eval else "no",
        eval_steps=cfg.eval_steps if has_eval else None,
        eval_on_start=has_eval,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit or None,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=dist.has_cuda(),
        deepspeed=job.deepspeed or None,
        **extra,
    )


def weights_dtype(cfg: Any, job: Any) -> str:
    """Half weights only where they are safe to train: LoRA (frozen base) or under DeepSpeed."""
    return cfg.precision if cfg.precision != "fp32" and (cfg.use_lora or bool(job.deepspeed)) else "fp32"


def peft_config(cfg: Any, *, task_type: str = "CAUSAL_LM", modules_to_save: list[str] | None = None):
    """The LoRA config of `cfg`'s LoraFields, or None when use_lora is off."""
    if not cfg.use_lora:
        return None
    pc = modeling.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules,
                              task_type=task_type)
    if modules_to_save:
        pc.modules_to_save = list(modules_to_save)
    return pc


def prepare(trainer, cfg: Any, model_path: str, *, log=log) -> Any:
    """Drop the tqdm printers (metrics.jsonl and MetricsCallback's lines replace them), make checkpoints atomic,
    log the setup."""
    import torch
    from transformers import PrinterCallback, ProgressCallback

    from . import distributed as dist

    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    dist.atomic_checkpoints(trainer)  # checkpoint-N appears whole (a Stop or kill mid-save leaves none)
    acc = trainer.accelerator
    dtype = getattr(acc.distributed_type, "value", acc.distributed_type)
    log(f"distributed: {dtype}, {acc.num_processes} process(es), device {acc.device}")
    if cfg.use_lora and dist.is_main_process():
        def numel(p):  # ZeRO-3 partitions parameters: ds_numel is the full size
            return getattr(p, "ds_numel", None) or p.numel()

        trainable = sum(numel(p) for p in trainer.model.parameters() if p.requires_grad)
        total = sum(numel(p) for p in trainer.model.parameters())
        log(f"model: {model_path} ({total / 1e6:.1f}M params, LoRA r={cfg.lora_r} on {cfg.lora_target_modules}: "
            f"{trainable / 1e6:.2f}M trainable), threads {torch.get_num_threads()}")
    else:
        log(f"model: {model_path} (full fine-tuning), threads {torch.get_num_threads()}")
    return trainer


def save_output(trainer, job: Any, *, save_model: Callable[[Any, Path], None] | None = None) -> None:
    """Every rank saves (ZeRO-3 gathers collectively); rank 0 writes the tokenizer. `save_model(trainer, dir)`
    replaces `trainer.save_model(dir)` (e.g. merge LoRA into a plain model first)."""
    if save_model is not None:
        save_model(trainer, job.output_dir)
    else:
        trainer.save_model(str(job.output_dir))
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(job.output_dir))
        (job.output_dir / "training_args.bin").unlink(missing_ok=True)  # Trainer's pickle: not part of a result


def run(kind: str, cfg: Any, job: Any, build: Callable[..., Any], *, studio_info: dict[str, Any],
        start_info: dict[str, Any] | None = None, metrics_keys: tuple[str, ...] = (),
        save_model: Callable[[Any, Path], None] | None = None, end_info: dict[str, Any] | None = None,
        log=log) -> dict[str, Any]:
    """Train a Trainer recipe end to end; returns the end record (last line of metrics.jsonl) with exit_code.

    build(callbacks=[...]) -> a ready trainer (its model, datasets and arguments from training_kwargs);
    studio_info: what studio.json records besides kind/status/recipe/hyperparameters/metrics;
    metrics_keys: extra keys of the end record copied into studio.json's metrics;
    end_info: extra keys of the end record (the last line of metrics.jsonl).
    """
    from . import distributed as dist
    from .metrics import FinalEvalCallback, MetricsCallback

    stopper = dist.StopOnSignal()  # before the slow parts: a Stop while loading exits at once
    dist.set_threads()
    quiet_libraries()
    world = dist.world_size()
    log(f"{kind}: run_dir {job.run_dir}, {world} process{'es' if world > 1 else ''}"
        + (f", deepspeed {Path(job.deepspeed).name}" if job.deepspeed else "")
        + (f", resuming from {Path(job.resume).name}" if job.resume else ""))
    if cfg.precision == "bf16" and not dist.has_cuda():
        log("note: bf16 on a CPU without AMX/AVX512-BF16 trains several times slower than fp32")
    started = time.time()
    metrics_cb = MetricsCallback(job.run_dir, resume=bool(job.resume), start_info={
        "kind": kind, "recipe": cfg.recipe, "deepspeed": job.deepspeed, "precision": cfg.precision,
        "use_lora": getattr(cfg, "use_lora", None), "pid": os.getpid(), **(start_info or {})})
    trainer = build(callbacks=[metrics_cb, FinalEvalCallback(), stopper])
    trainer.train(resume_from_checkpoint=job.resume or None)

    status = "stopped" if stopper.stopped else "completed"
    if stopper.stopped:
        step = trainer.state.global_step
        saved = Path(job.checkpoints_dir) / f"checkpoint-{step}"
        log(f"stopped at step {step}: checkpoint {saved.name} saved in {job.checkpoints_dir}"
            if saved.is_dir() else f"stopped at step {step}: no checkpoint was saved")
    save_output(trainer, job, save_model=save_model)
    # evaluation lines: eval_loss, or a recipe's own eval metrics (GRPO/RLOO log eval_reward_mean, no eval loss)
    evals = [h for h in trainer.state.log_history if "eval_loss" in h or any(k in h for k in metrics_keys)]
    end_extra: dict[str, Any] = {"output_dir": str(job.output_dir), **(end_info or {}),
                                 "wall_time": round(time.time() - started, 2)}
    for k in metrics_keys:  # e.g. eval_accuracy: before training and at the end
        end_extra[k] = evals[-1].get(k) if evals else None
        end_extra["first_" + k] = evals[0].get(k) if evals else None
    if trainer.is_world_process_zero():
        rec = metrics_cb.end_record(status, **end_extra)
        keys = ("step", "total_steps", "final_loss", "train_loss", "eval_loss", "first_eval_loss", "steps_per_s",
                "train_runtime", *metrics_keys, *("first_" + k for k in metrics_keys))
        modeling.write_studio_json(job.output_dir, {
            "kind": kind, "status": status, "recipe": cfg.recipe, **studio_info,
            "hyperparameters": cfglib.to_dict(cfg), "metrics": {k: rec.get(k) for k in keys}})
    dist.barrier()
    rec = metrics_cb.write_end(status, **end_extra)
    rec["exit_code"] = stopper.exit_code if stopper.stopped else 0
    return rec
