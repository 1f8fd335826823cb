"""PPO, faithful to DeepSpeed-Chat step 3 (``training/step3_rlhf_finetuning/main.py``), on the shared runner.

    python -m backends.rlhf.ppo --config FILE [--field value ...]

The actor starts from a policy (an SFT result, ``job:<id>``, a folder or a hub id); the critic starts from a trained
reward model, which also scores the answers. Prompt-only rows (DS-Chat's phase 3: the third part of data_split;
prompts over max_prompt_seq_len dropped and counted). One **iteration** = ``generation_batches`` batches of
``per_device_generation_batch_size`` prompts per process, then ``ppo_epochs`` passes over them in mini-batches of
``per_device_training_batch_size``:

1. generate an answer per prompt (sampling, actor in eval mode with the KV cache);
2. score prompt + answer with the reward model (the text rendered with the template, as the A/B tab scores);
   values from the critic, log-probs from the actor and the reference (all without gradients);
3. rewards = ``-kl_ctl * (logp - ref_logp)`` per answer token + the score clipped to ±clip_reward_value on the
   last answer token; GAE advantages and returns with gamma / lam (backends/rlhf/losses.py);
4. per mini-batch: clipped policy loss -> actor step; clipped value loss -> critic step; with an unsupervised
   dataset, the LM loss × unsup_coef -> another actor step (DS-Chat's order); EMA of the actor (enable_ema).

Memory: with LoRA the reference is the actor with its adapter disabled and the reward model is the critic with
its adapter disabled: two copies of base weights, not DS-Chat's four (backends/rlhf/engine.py).

metrics.jsonl per iteration (DS-Chat's printed numbers): reward_mean ("Average reward score": the mean raw RM score
of the iteration's answers), reward_ema ("EMA reward score", alpha 0.9), actor_loss, critic_loss, unsup_loss, kl
(mean per-token logp - ref_logp of the answers), answer_len (mean answer tokens), gen_seconds, train_seconds,
e2e_seconds; samples_per_s / tokens_per_s from the shared metrics (real tokens only). Every
print_answers_interval iterations, rank 0's prompt / answer / reward rows go to ``<run_dir>/samples.jsonl``
(and into the log with print_answers).

Output: the actor **is** ``output/`` (a LoRA adapter, or a full model, + tokenizer + studio.json kind rlhf_ppo), so
the chat, A/B and DPO tools load it like any policy; DS-Chat's other folders sit inside it: ``output/critic``
(the critic's adapter or model) and ``output/actor_ema`` (enable_ema). Checkpoints hold the trainable weights,
optimizer and scheduler states of actor and critic, the EMA and the iteration (resume_from_checkpoint: latest).
Exit codes: 0 done, 2 bad option (naming the field), 128+signal after a clean stop.
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import reward as rmlib
from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, runner
from backends.common.errors import FieldError

KIND = "rlhf_ppo"
DESCRIPTION = "PPO of an SFT policy against a reward model (DeepSpeed-Chat step 3): actor, critic, reference, reward."
_m = cfglib.meta
START_KINDS = modeling.POLICY_KINDS  # jobs whose result it may start from (a policy)
SAMPLES = "samples.jsonl"
METRICS = ("reward_mean", "reward_ema", "actor_loss", "critic_loss", "unsup_loss", "kl", "answer_len",
           "gen_seconds", "train_seconds", "e2e_seconds")
UNSTABLE = ("The combination of [actor_zero_stage==2, critic_zero_stage==2, offload=True, lora=False] is "
            "currently unsupported due to training instability!")


def _f(default, group, label, label_zh, help, help_zh, **kw):
    return field(default=default, metadata=_m(group, label, label_zh, help, help_zh, **kw))


@dataclass
class PPOArgs(cfglib.JobFields, cfglib.PromptFields):
    """Options of the PPO backend (DS-Chat step 3's flags; its hard-coded PPO constants as fields)."""

    # ---------------------------------------------------------------- data (PromptFields + these)
    max_seq_len: int = cfglib.redefault(cfglib.DataFields, "max_seq_len", 512, help=(
        "Only for the unsupervised dataset: tokens per block of its text (DS-Chat uses max_prompt + max_answer)."),
        help_zh="仅用于无监督数据集：其文本每块的 token 数（DeepSpeed-Chat 用 最大提示 + 最大回答 长度）。")
    unsupervised_dataset: str = _f(
        "", "data", "Unsupervised dataset", "无监督数据集",
        "Optional pre-training text (a file/folder with a `text` column) whose LM loss is mixed into the actor's "
        "training (DS-Chat --unsupervised_dataset_name); empty = off.",
        "可选的预训练文本（含 `text` 列的文件/目录），其语言模型损失混入 actor 训练（DeepSpeed-Chat 的 "
        "--unsupervised_dataset_name）；留空 = 关闭。", widget="file", order=2)
    unsup_coef: float = _f(
        27.8, "data", "Unsupervised coefficient", "无监督损失系数",
        "Weight of the unsupervised LM loss (DS-Chat --unsup_coef 27.8; its README calls 27.8 unstable).",
        "无监督语言模型损失的权重（DeepSpeed-Chat 的 --unsup_coef 27.8；其 README 说 27.8 不稳定）。", min=0, max=1000,
        order=2)
    # ---------------------------------------------------------------- training
    num_train_epochs: float = _f(
        1.0, "training", "Epochs", "训练轮数", "Passes over the prompts (ignored when max_steps > 0).",
        "遍历提示的轮数（max_steps > 0 时忽略）。", min=0, min_exclusive=True, max=1000)
    max_steps: int = _f(
        -1, "training", "Iterations", "迭代次数",
        "PPO iterations to run (each: generate, score, ppo_epochs of training); -1 = use the epochs.",
        "要运行的 PPO 迭代数（每次：生成、打分、ppo_epochs 轮训练）；-1 = 按轮数。", min=1, max=10_000_000, allow=[-1])
    per_device_generation_batch_size: int = _f(
        16, "training", "Generation batch per device", "每设备生成批大小",
        "Prompts per process in one generation batch (DS-Chat 16).", "每个进程每个生成批的提示数（DeepSpeed-Chat 为 16）。",
        min=1, max=4096)
    per_device_training_batch_size: int = _f(
        16, "training", "Training batch per device", "每设备训练批大小",
        "Answers per process in one PPO mini-batch (DS-Chat 16; it trained stably only when equal to the "
        "generation batch).", "每个进程每个 PPO 小批的回答数（DeepSpeed-Chat 为 16；只有与生成批相等时训练稳定）。",
        min=1, max=4096)
    generation_batches: int = _f(
        1, "training", "Generation batches", "生成批数",
        "Generation batches collected before training on them (DS-Chat 1).", "训练前收集的生成批数（DeepSpeed-Chat 为 1）。",
        min=1, max=1024)
    ppo_epochs: int = _f(
        1, "training", "PPO epochs", "PPO 轮数", "Training passes over each iteration's answers (DS-Chat 1).",
        "每次迭代对其回答训练的遍数（DeepSpeed-Chat 为 1）。", min=1, max=100)
    actor_learning_rate: float = _f(
        9.65e-6, "training", "Actor learning rate", "Actor 学习率",
        "AdamW learning rate of the actor without LoRA (DS-Chat 9.65e-6).",
        "不用 LoRA 时 actor 的 AdamW 学习率（DeepSpeed-Chat 为 9.65e-6）。", min=0, min_exclusive=True, max=1)
    critic_learning_rate: float = _f(
        5e-6, "training", "Critic learning rate", "Critic 学习率",
        "AdamW learning rate of the critic without LoRA (DS-Chat 5e-6).",
        "不用 LoRA 时 critic 的 AdamW 学习率（DeepSpeed-Chat 为 5e-6）。", min=0, min_exclusive=True, max=1)
    lr_scheduler_type: str = _f(
        "cosine", "training", "LR schedule", "学习率调度", "After the warm-up (DS-Chat cosine).",
        "预热之后的学习率变化（DeepSpeed-Chat 为 cosine）。", choices=["cosine", "linear", "constant",
                                                            "constant_with_warmup"])
    num_warmup_steps: int = _f(
        100, "training", "Warm-up steps", "预热步数", "Optimizer steps of linear warm-up (DS-Chat 100).",
        "学习率线性预热的优化器步数（DeepSpeed-Chat 为 100）。", min=0, max=10_000_000)
    seed: int = cfglib.redefault(cfglib.TrainingFields, "seed", 1234, help=(
        "Seed of the prompt order, the sampling and LoRA initialisation."), help_zh="提示顺序、采样和 LoRA 初始化的随机种子。")
    precision: str = cfglib.redefault(cfglib.TrainingFields, "precision", "fp32")
    # ---------------------------------------------------------------- PPO (DS-Chat's hard-coded constants)
    kl_ctl: float = _f(
        0.1, "ppo", "KL coefficient", "KL 系数",
        "Per-token penalty on logp - ref_logp in the reward (DS-Chat kl_ctl 0.1).",
        "奖励中对每个 token 的 logp - ref_logp 的惩罚系数（DeepSpeed-Chat 的 kl_ctl 0.1）。", min=0, max=100)
    clip_reward_value: float = _f(
        5.0, "ppo", "Reward clip", "奖励裁剪",
        "The reward model's score is clipped to ± this (DS-Chat 5).", "奖励模型的分数裁剪到 ± 此值（DeepSpeed-Chat 为 5）。",
        min=0, min_exclusive=True, max=1e6)
    cliprange: float = _f(
        0.2, "ppo", "Clip range", "策略裁剪范围", "PPO's policy ratio clip (DS-Chat 0.2).",
        "PPO 策略比率的裁剪范围（DeepSpeed-Chat 为 0.2）。", min=0, min_exclusive=True, max=10)
    cliprange_value: float = _f(
        0.2, "ppo", "Value clip range", "价值裁剪范围", "The critic's value clip around the old values (DS-Chat 0.2).",
        "critic 的价值相对旧值的裁剪范围（DeepSpeed-Chat 为 0.2）。", min=0, min_exclusive=True, max=1e6)
    gamma: float = _f(
        1.0, "ppo", "Gamma", "折扣因子 γ", "Discount of GAE (DS-Chat 1.0).", "GAE 的折扣因子（DeepSpeed-Chat 为 1.0）。",
        min=0, max=1)
    lam: float = _f(
        0.95, "ppo", "Lambda", "GAE λ", "GAE's lambda (DS-Chat 0.95).", "GAE 的 λ（DeepSpeed-Chat 为 0.95）。", min=0, max=1)
    enable_ema: bool = _f(
        False, "ppo", "EMA actor", "EMA actor",
        "Keep an exponential moving average of the actor's weights, saved as output/actor_ema (DS-Chat "
        "--enable_ema).", "保存 actor 权重的指数滑动平均，输出到 output/actor_ema（DeepSpeed-Chat 的 --enable_ema）。")
    ema_beta: float = _f(
        0.992, "ppo", "EMA beta", "EMA β", "ema = beta * ema + (1 - beta) * actor (DS-Chat 0.992).",
        "ema = β × ema + (1 − β) × actor（DeepSpeed-Chat 为 0.992）。", min=0, max=1, max_exclusive=True)
    # ---------------------------------------------------------------- LoRA per model
    actor_lora_dim: int = _f(
        0, "lora", "Actor LoRA rank", "Actor LoRA 秩",
        "> 0 = train a LoRA adapter of this rank on the actor; its reference is then the adapter disabled (no "
        "copy). An SFT LoRA result keeps training its own adapter. 0 = full fine-tuning (DS-Chat --actor_lora_dim 0).",
        "> 0 = 在 actor 上训练此秩的 LoRA 适配器，参考模型即禁用适配器的同一模型（不复制）；SFT 的 LoRA 结果继续训练其适配器。"
        "0 = 全参数（DeepSpeed-Chat 的 --actor_lora_dim 0）。", min=0, max=1024)
    critic_lora_dim: int = _f(
        0, "lora", "Critic LoRA rank", "Critic LoRA 秩",
        "> 0 = the critic is the reward model + a LoRA adapter of this rank + its own value head, and the reward "
        "model is the same weights with the adapter disabled (no copy). 0 = full (DS-Chat --critic_lora_dim 0).",
        "> 0 = critic 为奖励模型 + 此秩的 LoRA 适配器 + 自己的价值头，奖励模型即禁用适配器的同一权重（不复制）。"
        "0 = 全参数（DeepSpeed-Chat 的 --critic_lora_dim 0）。", min=0, max=1024)
    actor_lora_learning_rate: float = _f(
        5e-4, "lora", "Actor LoRA learning rate", "Actor LoRA 学习率", "With actor LoRA (DS-Chat 5e-4).",
        "actor 使用 LoRA 时的学习率（DeepSpeed-Chat 为 5e-4）。", min=0, min_exclusive=True, max=1)
    critic_lora_learning_rate: float = _f(
        5e-4, "lora", "Critic LoRA learning rate", "Critic LoRA 学习率", "With critic LoRA (DS-Chat 5e-4).",
        "critic 使用 LoRA 时的学习率（DeepSpeed-Chat 为 5e-4）。", min=0, min_exclusive=True, max=1)
    lora_alpha: int = cfglib.redefault(cfglib.LoraFields, "lora_alpha", 16)
    lora_dropout: float = cfglib.redefault(cfglib.LoraFields, "lora_dropout", 0.0)
    lora_target_modules: str = cfglib.redefault(cfglib.LoraFields, "lora_target_modules", "q_proj,k_proj,v_proj,o_proj")
    # ---------------------------------------------------------------- memory
    actor_zero_stage: int = _f(
        -1, "memory", "Actor ZeRO stage", "Actor ZeRO 阶段",
        "ZeRO stage of the actor under DeepSpeed (DS-Chat --actor_zero_stage, 0 there); -1 = the stage of the "
        "launcher's DeepSpeed config.", "DeepSpeed 下 actor 的 ZeRO 阶段（DeepSpeed-Chat 的 --actor_zero_stage，默认 0）；"
        "-1 = 启动器 DeepSpeed 配置中的阶段。", min=0, max=3, allow=[-1])
    critic_zero_stage: int = _f(
        -1, "memory", "Critic ZeRO stage", "Critic ZeRO 阶段",
        "ZeRO stage of the critic (DS-Chat --critic_zero_stage); -1 = the launcher's DeepSpeed config.",
        "critic 的 ZeRO 阶段（DeepSpeed-Chat 的 --critic_zero_stage）；-1 = 启动器 DeepSpeed 配置中的阶段。",
        min=0, max=3, allow=[-1])
    offload_reference_model: bool = _f(
        False, "memory", "Offload reference", "卸载参考模型",
        "Keep a separate reference copy in CPU memory between uses (GPU only; under ZeRO-3 DeepSpeed's "
        "offload_param; DS-Chat --offload_reference_model).",
        "独立的参考模型副本在不用时放在 CPU 内存（仅 GPU；ZeRO-3 下由 DeepSpeed 的 offload_param 完成；"
        "DeepSpeed-Chat 的 --offload_reference_model）。")
    offload_reward_model: bool = _f(
        False, "memory", "Offload reward model", "卸载奖励模型",
        "Keep a separate reward-model copy in CPU memory between uses (GPU only; under ZeRO-3 DeepSpeed's "
        "offload_param; DS-Chat --offload_reward_model).",
        "独立的奖励模型副本在不用时放在 CPU 内存（仅 GPU；ZeRO-3 下由 DeepSpeed 的 offload_param 完成；"
        "DeepSpeed-Chat 的 --offload_reward_model）。")
    actor_gradient_checkpointing: bool = _f(
        False, "memory", "Actor gradient checkpointing", "Actor 梯度检查点",
        "Recompute the actor's activations in backward (DS-Chat --actor_gradient_checkpointing).",
        "反向时重算 actor 的激活（DeepSpeed-Chat 的 --actor_gradient_checkpointing）。")
    critic_gradient_checkpointing: bool = _f(
        False, "memory", "Critic gradient checkpointing", "Critic 梯度检查点",
        "Recompute the critic's activations in backward (DS-Chat --critic_gradient_checkpointing).",
        "反向时重算 critic 的激活（DeepSpeed-Chat 的 --critic_gradient_checkpointing）。")
    # ---------------------------------------------------------------- output
    print_answers: bool = _f(
        False, "output", "Print answers", "打印回答",
        "Print prompt, answer and reward into the log every print_answers_interval iterations (DS-Chat "
        "--print_answers); samples.jsonl (the samples table) is written either way.",
        "每 print_answers_interval 次迭代把提示、回答和奖励打印到日志（DeepSpeed-Chat 的 --print_answers）；"
        "samples.jsonl（样例表）总会写入。")
    print_answers_interval: int = _f(
        1, "output", "Answers every", "样例间隔", "Iterations between sample answers (DS-Chat 1).",
        "两次样例回答之间的迭代数（DeepSpeed-Chat 为 1）。", min=1, max=1_000_000)
    save_steps: int = cfglib.redefault(cfglib.TrainingFields, "save_steps", 100, help=(
        "Save a resumable checkpoint every N iterations (DS-Chat saves only at the end)."),
        help_zh="每 N 次迭代保存一个可恢复的检查点（DeepSpeed-Chat 只在结束时保存）。")
    save_total_limit: int = cfglib.redefault(cfglib.TrainingFields, "save_total_limit", 2)


SCHEMA = PPOArgs


# ------------------------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    job: runner.Job
    actor_model: str          # the actor's model folder (or hub id)
    actor_adapter: str        # its SFT LoRA adapter, or ""
    actor_info: dict          # studio.json of the start, or {}
    reward_model: str         # the reward model folder (or hub id)
    datasets: list
    unsupervised: list
    actor_zero_stage: int
    critic_zero_stage: int
    context: int | None       # the smaller max_position_embeddings of actor and reward model

    def __getattr__(self, name):
        return getattr(self.__dict__["job"], name)


def _context(model_config: dict) -> int | None:
    v = model_config.get("max_position_embeddings")
    return v if isinstance(v, int) else None


def resolve(cfg: PPOArgs, job: runner.Job | None = None) -> Resolved:
    """Check every option against the files it names (config.json, tokenizer files, the prompts; no weights)."""
    job = job or runner.resolve_job(cfg, KIND)
    dd = job.data_dir
    actor, adapter, info = modeling.start_model(cfg.model_name_or_path, dd, kinds=START_KINDS)
    actor_cfg = modeling.check_model_dir(actor, original=cfg.model_name_or_path)
    archs = [str(a) for a in actor_cfg.get("architectures") or []]
    if any(a.endswith("ForSequenceClassification") for a in archs):
        raise FieldError("model_name_or_path", f"{cfg.model_name_or_path} is a reward model (sequence "
                                               "classification); the actor must be a causal LM: an SFT result or a "
                                               "base model")
    if archs and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs):
        raise FieldError("model_name_or_path", f"{cfg.model_name_or_path} is a {', '.join(archs)}, not a causal LM")
    tok_dir = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else actor
    rm_path, rm_cfg, _ = modeling.rlhf_reward_model(
        cfg.reward_model, dd, tok_dir, cfg.model_name_or_path,
        why="PPO needs one tokenizer (the critic values the actor's own tokens)")
    ctx = [c for c in (_context(actor_cfg), _context(rm_cfg)) if c]
    context = min(ctx) if ctx else None
    total = cfg.max_prompt_seq_len + cfg.max_answer_seq_len
    if context is not None and total > context:
        raise FieldError("max_answer_seq_len", f"max_prompt_seq_len + max_answer_seq_len = {total} tokens is more "
                                               f"than the models' context of {context} (max_position_embeddings); "
                                               "lower one of them")
    if cfg.template == "chat" and not modeling.has_chat_template(tok_dir):
        raise FieldError("template", f"the model at {cfg.model_name_or_path} has no chat template; use dschat or plain")
    modules = modeling.parse_modules(cfg.lora_target_modules)
    if cfg.actor_lora_dim and not adapter:
        modeling.check_target_modules(actor_cfg, modules)
    if cfg.critic_lora_dim:
        modeling.check_target_modules(rm_cfg, modules)
    if cfg.precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("precision", "fp16 needs a CUDA GPU; use fp32 on CPU (bf16 works but is slow)")
    ds_stage = rmlib.zero_stage(job.deepspeed) if job.deepspeed else None
    stages = {}
    for name in ("actor_zero_stage", "critic_zero_stage"):
        v = getattr(cfg, name)
        if v >= 0 and not job.deepspeed:
            raise FieldError(name, f"is {v}, but the job has no DeepSpeed config: choose the deepspeed launcher with "
                                   "a ZeRO stage, or set -1")
        stages[name] = v if v >= 0 else (ds_stage or 0)
    offload = bool(job.deepspeed) and _offload(job.deepspeed)
    if stages["actor_zero_stage"] == 2 and stages["critic_zero_stage"] == 2 and offload and cfg.actor_lora_dim == 0:
        raise FieldError("actor_zero_stage", UNSTABLE + " Turn on actor LoRA (actor_lora_dim > 0), use another ZeRO "
                                                        "stage for the actor or the critic, or turn offload off.")
    ds_paths = datalib.resolve_datasets(cfg.dataset, dd)
    datalib.parse_data_split(cfg.data_split)
    for p in ds_paths:
        columns, _ = datalib.peek(p, n=1)
        if cfg.prompt_column not in columns and "messages" not in columns:
            raise FieldError("prompt_column", f"{p.name} has no column {cfg.prompt_column!r} (its columns: "
                                              f"{', '.join(columns) or 'none'}); set prompt_column")
    unsup = datalib.resolve_datasets(cfg.unsupervised_dataset, dd, field="unsupervised_dataset") \
        if str(cfg.unsupervised_dataset or "").strip() else []
    return Resolved(job, actor, adapter, info, rm_path, ds_paths, unsup, stages["actor_zero_stage"],
                    stages["critic_zero_stage"], context)


def _offload(ds_file: str) -> bool:
    from backends.rlhf.engine import zero_offload

    return zero_offload(ds_file)


def validate_config(cfg: PPOArgs | dict) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading a model."""
    resolve(runner.ensure_args(PPOArgs, cfg))


# ------------------------------------------------------------------------------------------- data
def unsupervised_blocks(paths: list[Path], tokenizer, block: int) -> list[list[int]]:
    """DS-Chat's get_unsupervised_data: the texts tokenised, concatenated and cut into blocks of `block` tokens."""
    ids: list[int] = []
    for p in paths:
        table = datalib.read_table(p, field="unsupervised_dataset")
        col = "text" if "text" in table.columns else next(
            (c for c in table.columns if any(isinstance(r.get(c), str) for r in table.rows[:5])), None)
        if col is None:
            raise FieldError("unsupervised_dataset", f"{p.name} has no text column")
        for r in table.rows:
            if isinstance(r.get(col), str) and r[col].strip():
                ids += tokenizer(r[col], add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    blocks = [ids[i:i + block] for i in range(0, len(ids) - block + 1, block)]
    if not blocks:
        raise FieldError("unsupervised_dataset", f"has fewer than max_seq_len = {block} tokens of text")
    return blocks


class PromptStream:
    """Prompt k of the run (k = 0, 1, ...): a seeded permutation per epoch, so iteration i always sees the same
    prompts (a resumed run continues the order)."""

    def __init__(self, prompts: list[str], seed: int):
        self.prompts, self.seed, self._perm = prompts, seed, {}

    def __getitem__(self, k: int) -> str:
        n = len(self.prompts)
        epoch, i = divmod(k, n)
        if epoch not in self._perm:
            import numpy as np

            self._perm = {epoch: np.random.RandomState(self.seed + epoch).permutation(n)}
        return self.prompts[int(self._perm[epoch][i])]


# ------------------------------------------------------------------------------------------ rollout
def generate_experience(eng, prompts: list[str], cfg: PPOArgs, *, seed: int) -> dict | None:
    """DS-Chat generate_experience: sample answers, then (no gradients) actor / reference log-probs, critic values
    and reward scores. None when every answer is shorter than 2 tokens (DS-Chat drops those)."""
    import torch

    from backends.rlhf import losses
    from backends.rlhf.engine import reward_text, score_texts, token_values, unwrap

    tok = eng.tokenizer
    dev = eng.device
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(dev)  # left padding
    P = enc["input_ids"].shape[1]
    actor = unwrap(eng.actor)
    actor.eval()
    torch.manual_seed(seed)
    t0 = time.time()
    with torch.no_grad():
        seq = actor.generate(**enc, max_new_tokens=cfg.max_answer_seq_len, do_sample=True, top_k=0, top_p=1.0,
                             temperature=1.0, use_cache=True, pad_token_id=tok.pad_token_id,
                             eos_token_id=tok.eos_token_id, synced_gpus=eng.synced_gpus)
    gen_time = time.time() - t0
    ans = seq[:, P:]
    # an answer: its tokens up to and including the first end-of-sequence (pad may equal eos: mask by position)
    is_eos = ans == tok.eos_token_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, torch.full_like(is_eos[:, 0], ans.shape[1],
                                                                                     dtype=torch.long))
    ans_len = first.long()
    keep = ans_len > 1
    reused = not bool(keep.any())
    if reused:  # DS-Chat: the last valid sequences are scored again (every rank keeps running the same passes)
        if eng.last_rollout is None:
            return None
        kept_prompts, seq, P, ans_len, prompt_mask = eng.last_rollout
    else:
        idx = keep.nonzero().squeeze(1)
        ans_len = ans_len[idx]
        seq = seq[idx, :P + int(ans_len.max())]
        prompt_mask = enc["attention_mask"][idx]
        kept_prompts = [prompts[int(i)] for i in idx]
        eng.last_rollout = (kept_prompts, seq, P, ans_len, prompt_mask)
    L = int(ans_len.max())
    ans_mask = (torch.arange(L, device=dev).unsqueeze(0) < ans_len.unsqueeze(1)).long()
    attention_mask = torch.cat([prompt_mask, ans_mask], dim=1)
    answers = tok.batch_decode([seq[j, P:P + int(ans_len[j])] for j in range(len(kept_prompts))],
                               skip_special_tokens=True)
    with torch.no_grad():
        logits = actor(input_ids=seq, attention_mask=attention_mask, use_cache=False).logits
        logprobs = losses.gather_log_probs(logits[:, :-1], seq[:, 1:])
        del logits
        with eng.reference() as ref:
            ref_logits = ref(input_ids=seq, attention_mask=attention_mask, use_cache=False).logits
            ref_logprobs = losses.gather_log_probs(ref_logits[:, :-1], seq[:, 1:])
            del ref_logits
        critic = unwrap(eng.critic)
        critic.eval()
        values = token_values(critic, seq, attention_mask)[:, :-1]
        with eng.reward_model() as rm:
            texts = [reward_text(p, a, cfg.template, tok.eos_token or "") for p, a in zip(kept_prompts, answers)]
            scores = score_texts(rm, tok, texts, max_length=cfg.max_prompt_seq_len + cfg.max_answer_seq_len + 16)
    action_mask = attention_mask[:, 1:]
    start = P - 1
    amask = action_mask.clone()
    amask[:, :start] = 0
    return {"prompts": kept_prompts, "answers": answers, "input_ids": seq, "attention_mask": attention_mask,
            "logprobs": logprobs, "ref_logprobs": ref_logprobs, "values": values, "rewards": scores.to(dev),
            "start": start, "gen_time": gen_time, "answer_len": ans_len.float(), "reused": reused,
            "kl": float(losses.approx_kl(logprobs, ref_logprobs, amask))}


def minibatches(exp: dict, size: int) -> list[dict]:
    """DS-Chat's MiniDataset: an experience batch cut into training mini-batches (same prompt width inside)."""
    n = exp["input_ids"].shape[0]
    out = []
    for i in range(0, n, size):
        out.append({k: (v[i:i + size] if hasattr(v, "shape") and v.dim() > 0 else
                        (v[i:i + size] if isinstance(v, list) else v)) for k, v in exp.items()})
    return out


def train_rlhf(eng, mb: dict, cfg: PPOArgs) -> tuple[float, float, int]:
    """DS-Chat train_rlhf on one mini-batch: rewards, GAE, actor step, critic step -> (actor loss, critic loss,
    real tokens)."""
    import torch

    from backends.rlhf import losses
    from backends.rlhf.engine import token_values, unwrap

    seq, attention_mask, start = mb["input_ids"], mb["attention_mask"], mb["start"]
    action_mask = attention_mask[:, 1:]
    with torch.no_grad():
        old_values = losses.zero_after_end(mb["values"], action_mask, start)
        old_rewards = losses.compute_rewards(mb["logprobs"], mb["ref_logprobs"], mb["rewards"], action_mask, start,
                                             kl_ctl=cfg.kl_ctl, clip_reward_value=cfg.clip_reward_value)
        advantages, returns = losses.advantages_and_returns(old_values, old_rewards, start, gamma=cfg.gamma,
                                                            lam=cfg.lam)
    mask = action_mask[:, start:]
    actor = unwrap(eng.actor)
    actor.train()
    logits = eng.actor(input_ids=seq, attention_mask=attention_mask, use_cache=False).logits
    logp = losses.gather_log_probs(logits[:, :-1], seq[:, 1:])
    actor_loss = losses.actor_loss_fn(logp[:, start:], mb["logprobs"][:, start:], advantages, mask,
                                      cliprange=cfg.cliprange)
    eng.backward_step("actor", actor_loss)
    del logits, logp
    critic = unwrap(eng.critic)
    critic.train()
    value = token_values(critic, seq, attention_mask)[:, :-1]
    critic_loss = losses.critic_loss_fn(value[:, start:], old_values[:, start:], returns, mask,
                                        cliprange_value=cfg.cliprange_value)
    eng.backward_step("critic", critic_loss)
    return float(actor_loss.detach()), float(critic_loss.detach()), int(attention_mask.sum())


def train_unsupervised(eng, block_ids: list[list[int]], cfg: PPOArgs) -> float:
    """DS-Chat train_unsupervised: the actor's LM loss on pre-training text × unsup_coef, its own actor step."""
    import torch

    ids = torch.tensor(block_ids, device=eng.device)
    out = eng.actor(input_ids=ids, labels=ids, use_cache=False)
    eng.backward_step("actor", cfg.unsup_coef * out.loss)
    return float(out.loss.detach())


# ---------------------------------------------------------------------------------------------- run
def _print_answers(exp: dict, step: int, rank: int, print_fn=print) -> None:
    print_fn(f"--- prompt --> step={step}, rank={rank}, {exp['prompts']}", flush=True)
    print_fn(f"--- ans    --> step={step}, rank={rank}, {exp['answers']}", flush=True)
    print_fn(f"--- reward --> step={step}, rank={rank}, {[round(float(x), 4) for x in exp['rewards']]}", flush=True)


def write_samples(run_dir: Path, step: int, exps: list[dict]) -> list[dict]:
    rows = [{"step": step, "prompt": p, "answer": a, "reward": round(float(r), 5)}
            for e in exps for p, a, r in zip(e["prompts"], e["answers"], e["rewards"])]
    with open(Path(run_dir) / SAMPLES, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rows


def run(cfg: PPOArgs | dict, job: runner.Job | None = None) -> dict[str, Any]:
    """PPO as configured; returns the end record (also the last line of metrics.jsonl) with exit_code."""
    cfg = runner.ensure_args(PPOArgs, cfg)
    r = resolve(cfg, job)
    job = r.job

    from backends.common import distributed as dist
    from backends.common import trainer as trainer_lib
    from backends.common.loop import Loop

    log = trainer_lib.log
    if job.deepspeed:
        dist.setup_deepspeed(job.deepspeed, job.data_dir)
        import deepspeed

        deepspeed.init_distributed(dist_backend="nccl" if dist.has_cuda() else "gloo")
    elif dist.world_size() > 1:
        raise FieldError("deepspeed", "several processes need DeepSpeed here: pick the deepspeed launcher with a "
                                      "ZeRO stage, or run one process")
    world, rank = dist.world_size(), dist.rank()
    B, G = cfg.per_device_generation_batch_size, cfg.generation_batches
    global_batch = B * G * world

    import torch

    dist.set_threads()
    trainer_lib.quiet_libraries()
    log(f"{KIND}: run_dir {job.run_dir}, {world} process{'es' if world > 1 else ''}"
        + (f", deepspeed {Path(job.deepspeed).name}" if job.deepspeed else "")
        + (f", resuming from {Path(job.resume).name}" if job.resume else ""))
    tok0 = modeling.load_tokenizer(r.actor_adapter or r.actor_model)
    train_ds, eval_ds = datalib.load_prompt_data(cfg, r.datasets, tok0, phase=2, log=print)
    prompts = list(train_ds["prompt"])
    per_epoch = max(1, len(prompts) // global_batch)
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, math.ceil(cfg.num_train_epochs * per_epoch))
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(prompts)} prompts for rollouts, "
        f"{len(eval_ds) if eval_ds is not None else 0} held out (template {cfg.template}); {total} iterations of "
        f"{global_batch} prompts")
    loop = Loop(KIND, cfg, job, total_steps=total, global_batch=global_batch, save_every=cfg.save_steps,
                save_total_limit=cfg.save_total_limit, show=("reward_mean", "kl", "actor_loss", "critic_loss"),
                start_info={"model": r.actor_model, "adapter": r.actor_adapter, "reward_model": r.reward_model,
                            "dataset": ",".join(map(str, r.datasets)), "template": cfg.template,
                            "actor_lora_dim": cfg.actor_lora_dim, "critic_lora_dim": cfg.critic_lora_dim,
                            "deepspeed": job.deepspeed, "precision": cfg.precision})
    from backends.rlhf import engine as englib
    from backends.rlhf import losses

    updates = total * cfg.ppo_epochs * G * math.ceil(B / cfg.per_device_training_batch_size)
    torch.manual_seed(cfg.seed)
    eng = englib.build(cfg, r, total_iters=updates, log=log)
    if englib.unwrap(eng.actor).generation_config is not None:
        englib.unwrap(eng.actor).generation_config.pad_token_id = eng.tokenizer.pad_token_id
    if vocab_differs(eng.tokenizer, r.reward_model):
        raise FieldError("reward_model", f"{cfg.reward_model} tokenizes differently from the actor; PPO needs one "
                                         "tokenizer: pick a reward model trained from the same base model")
    a_total, a_train = englib.count_params(eng.actor)
    c_total, c_train = englib.count_params(eng.critic)
    log(f"Actor Model Parameters => {a_total / 1e9:.3f} B ({a_train / 1e6:.3f} M trained), Critic Model Parameters "
        f"=> {c_total / 1e9:.3f} B ({c_train / 1e6:.3f} M trained); threads {torch.get_num_threads()}")
    blocks = unsupervised_blocks(r.unsupervised, eng.tokenizer, cfg.max_seq_len) if r.unsupervised else []

    state = loop.resume_state()
    if state:
        eng.load(Path(job.resume))
    reward_ema = losses.ExponentialMovingAverage(0.9, state.get("reward_ema"))
    stream = PromptStream(prompts, cfg.seed)
    step = loop.begin(state.get("step", 0))
    reward_mean = None
    (Path(job.run_dir)).mkdir(parents=True, exist_ok=True)
    while step < total:
        with loop.step():
            it = step
            t_start = time.time()
            exps, gen_time = [], 0.0
            for g in range(G):
                k0 = (it * world * G + rank * G + g) * B
                batch = [stream[k] for k in range(k0, k0 + B)]
                e = generate_experience(eng, batch, cfg, seed=cfg.seed + 1000003 * (it * world * G + rank * G + g))
                if e is None:  # the very first rollout, with nothing to fall back on
                    raise RuntimeError(f"all generated answers are too short at iteration {it} (rank {rank}): "
                                       "every answer was < 2 tokens")
                if e["reused"]:
                    log(f"Dropping too short generated answers: step={it}, rank={rank}: every answer was < 2 "
                        "tokens; the last valid answers are scored again")
                gen_time += e["gen_time"]
                exps.append(e)
            t_train = time.time()
            mbs = [mb for e in exps for mb in minibatches(e, cfg.per_device_training_batch_size)]
            rng = random.Random(cfg.seed + it)
            a_sum = c_sum = u_sum = 0.0
            n_inner = 0
            for _ in range(cfg.ppo_epochs):
                for mb in mbs:
                    a, c, ntok = train_rlhf(eng, mb, cfg)
                    loop.add_tokens(ntok)
                    a_sum, c_sum = a_sum + a, c_sum + c
                    if blocks:
                        j = (it * 7919 + n_inner) * cfg.per_device_training_batch_size
                        u_sum += train_unsupervised(
                            eng, [blocks[(j + q) % len(blocks)] for q in range(cfg.per_device_training_batch_size)],
                            cfg)
                        loop.add_tokens(cfg.per_device_training_batch_size * cfg.max_seq_len)
                    n_inner += 1
                    if cfg.enable_ema:
                        eng.update_ema(cfg.ema_beta)
                rng.shuffle(mbs)
            train_time = time.time() - t_train
            e2e = time.time() - t_start
        step = loop.step_count
        n_ans = sum(len(e["answers"]) for e in exps)
        reward_mean = dist.sum_ranks(sum(float(e["rewards"].sum()) for e in exps)) / dist.sum_ranks(n_ans)
        kl = dist.sum_ranks(sum(e["kl"] for e in exps) / len(exps)) / world
        answer_len = dist.sum_ranks(sum(float(e["answer_len"].sum()) for e in exps)) / dist.sum_ranks(n_ans)
        a_loss, c_loss = dist.sum_ranks(a_sum / n_inner) / world, dist.sum_ranks(c_sum / n_inner) / world
        u_loss = dist.sum_ranks(u_sum / n_inner) / world
        ema = reward_ema.update(reward_mean)
        seq_len = max(int(e["input_ids"].shape[1]) for e in exps)
        if loop.main:
            print(f"Epoch: {it // per_epoch} | Step: {it} | PPO Epoch: {cfg.ppo_epochs} | Actor Loss: {a_loss:.6f} | "
                  f"Critic Loss: {c_loss:.6f} | Unsupervised Loss: {u_loss:.6f}", flush=True)
            print(f"End-to-End => Latency: {e2e:.2f}s, Samples/sec: {global_batch / e2e:.3f}, Time/seq "
                  f"{e2e / global_batch:.2f}s, Batch Size: {global_batch}, Total Seq. Length: {seq_len}", flush=True)
            print(f"Generation => Latency: {gen_time:.2f}s, Per-token Latency "
                  f"{1000 * gen_time / max(1.0, answer_len):.2f} ms, Answer Seq. Length: {answer_len:.1f}", flush=True)
            print(f"Training => Latency: {train_time:.2f}s", flush=True)
            print(f"Average reward score: {reward_mean:.6f} | EMA reward score: {ema:.6f}", flush=True)
            print("-" * 85, flush=True)
        if it % cfg.print_answers_interval == 0:
            if loop.main:
                write_samples(job.run_dir, step, exps)
            if cfg.print_answers:
                for e in exps:
                    _print_answers(e, it, rank)
        loop.log(learning_rate=eng.actor_lr(), reward_mean=reward_mean, reward_ema=ema, actor_loss=a_loss,
                 critic_loss=c_loss, unsup_loss=u_loss, kl=kl, answer_len=answer_len, gen_seconds=gen_time,
                 train_seconds=train_time, e2e_seconds=e2e)
        if loop.should_save() or loop.stopping:
            loop.save_checkpoint(lambda d: eng.save(d, loop.main), extra_state={"reward_ema": reward_ema.ema})
        if loop.stopping:
            break
    loop.finishing()
    status = "stopped" if loop.stopping else "completed"
    out = Path(job.output_dir)
    eng.save_actor(out, main=loop.main)  # every rank: ZeRO-3 gathers the weights collectively
    eng.save_critic(out / "critic", main=loop.main)
    if cfg.enable_ema:
        eng.save_actor(out / "actor_ema", ema=True, main=loop.main)
    if loop.main:
        lora = cfg.actor_lora_dim > 0
        base_ref = r.actor_info.get("base_model_ref") if r.actor_adapter else cfg.model_name_or_path
        common = {"recipe": cfg.recipe, "template": cfg.template, "reward_model": r.reward_model,
                  "reward_model_ref": cfg.reward_model, "dataset": ",".join(map(str, r.datasets))}
        if cfg.enable_ema:
            modeling.write_studio_json(out / "actor_ema", {"kind": KIND, "status": status, "role": "actor_ema",
                                                            "adapter": lora, "base_model": r.actor_model,
                                                            "base_model_ref": base_ref or r.actor_model, **common})
        modeling.write_studio_json(out / "critic", {"kind": KIND, "status": status, "role": "critic",
                                                    "adapter": cfg.critic_lora_dim > 0, "base_model": r.reward_model,
                                                    **common})
        modeling.write_studio_json(out, {
            "kind": KIND, "status": status, "role": "actor", "adapter": lora,
            "base_model": r.actor_model, "base_model_ref": base_ref or r.actor_model,
            "start": cfg.model_name_or_path, "start_adapter": r.actor_adapter, **common,
            "critic": "critic", "actor_ema": "actor_ema" if cfg.enable_ema else None,
            "hyperparameters": cfglib.to_dict(cfg),
            "metrics": {"step": step, "total_steps": total, "reward_mean": reward_mean,
                        "reward_ema": reward_ema.ema}})
    dist.barrier()
    return loop.end(status=status, reward_ema=reward_ema.ema)


def vocab_differs(tokenizer, rm_path: str) -> bool:
    """After loading: the reward model's tokenizer maps tokens to other ids than the actor's."""
    rm_tok = modeling.load_tokenizer(rm_path)
    return rm_tok.get_vocab() != tokenizer.get_vocab()


def parse_args(argv: list[str] | None = None) -> PPOArgs:
    return runner.parse_args(PPOArgs, argv, kind=KIND, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return runner.main(KIND, PPOArgs, run, argv, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "SCHEMA", "PPOArgs", "main", "resolve", "run", "validate_config"]
