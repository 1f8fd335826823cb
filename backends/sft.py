"""Supervised fine-tuning (DeepSpeed-Chat step 1) with TRL's SFTTrainer.

    python -m backends.sft --config FILE [--field value ...]

FILE is a flat YAML of the fields of :class:`SFTArgs` (what the UI writes to runs/<id>/config.yaml) or a recipe
(presets/recipes/*.yaml, its `config:` block is used). Runs alone on one CPU process, and unchanged under
`accelerate launch`, `torchrun` and the `deepspeed` launcher (ZeRO config path in the `deepspeed` field).

Everything goes to `run_dir`: metrics.jsonl, checkpoints/checkpoint-N, output/ (PEFT adapter or full model +
tokenizer + studio.json). Differences from DeepSpeed-Chat's step 1, on purpose: the prompt is masked out of the
loss by default (TRL prompt-completion format), batches are padded dynamically instead of to max_seq_len (or
packed), eval loss is measured before training and at every eval step, checkpoints are saved during training and
a run resumes from the latest one. Exit codes: 0 done, 2 bad option (the message names the field),
128+signal after a clean stop on SIGTERM/SIGINT (the step under way is finished and checkpoint-N saved first; before
any step has finished it exits at once and says that no checkpoint exists yet).
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, paths
from backends.common.errors import FieldError
from backends.common.paths import ROOT

KIND = "sft"


def _m(group: str, label: str, label_zh: str, help: str, help_zh: str, **extra: Any) -> dict[str, Any]:
    return {"group": group, "label": label, "label_zh": label_zh, "help": help, "help_zh": help_zh, **extra}


@dataclass
class SFTArgs:
    """Options of the SFT backend: one declaration for the CLI, config.yaml, the UI form and the README."""

    # ---------------------------------------------------------------------------------------- model
    model_name_or_path: str = field(default="bundled:smollm2", metadata=_m(
        "model", "Base model", "基础模型",
        "A local Hugging Face model folder (with config.json), `bundled:smollm2` for the offline demo model, "
        "or a hub id when online.",
        "本地 Hugging Face 模型目录（含 config.json），`bundled:smollm2` 为离线演示模型；联网时也可填 Hub 模型名。",
        widget="model"))
    # ----------------------------------------------------------------------------------------- data
    dataset: str = field(default="presets/datasets/demo_sft.jsonl", metadata=_m(
        "data", "Dataset", "数据集",
        "A studio dataset (made on the Datasets tab), or a .jsonl/.json/.csv/.tsv/.parquet file (or a folder of "
        "them) of prompt/response rows or chat `messages` rows; several, comma-separated, are blended. With a data "
        "dir (the studio always sets one) it must be inside it or a bundled sample: relative paths are tried in "
        "<data-dir>/datasets, the data dir, the project root; without one also the working dir.",
        "工作室数据集（在“数据集”标签页中创建），或由 prompt/response 行或对话 `messages` 行组成的 "
        ".jsonl/.json/.csv/.tsv/.parquet 文件（或其所在目录）；多个用逗号分隔时合并使用。设置了数据目录时（工作室总会设置）"
        "必须位于其中或为内置示例：相对路径依次在 <数据目录>/datasets、数据目录、项目根目录中查找；未设置时也查找工作目录。",
        widget="file", dataset_kind="sft"))
    data_split: str = field(default="", metadata=_m(
        "data", "Data split", "数据划分",
        "DeepSpeed-Chat's split of one dataset over its 3 steps, e.g. 2,4,4: SFT uses the first part (20%). "
        "Empty = all rows.",
        "DeepSpeed-Chat 在三个阶段间划分同一数据集的比例，如 2,4,4：SFT 使用第一部分（20%）。留空 = 全部行。"))
    prompt_column: str = field(default="prompt", metadata=_m(
        "data", "Prompt column", "提示列", "Column that holds the user's prompt.", "存放用户提示的列名。"))
    response_column: str = field(default="response", metadata=_m(
        "data", "Response column", "回答列", "Column that holds the answer to learn.", "存放要学习的回答的列名。"))
    messages_column: str = field(default="messages", metadata=_m(
        "data", "Messages column", "对话列",
        "Column with a chat as a list of {role, content}; used when the prompt/response columns are absent. "
        "The last message (the assistant's) is trained.",
        "以 {role, content} 列表表示的对话列；没有 prompt/response 列时使用，训练最后一条（助手）消息。"))
    template: str = field(default="chat", metadata=_m(
        "data", "Prompt template", "提示模板",
        "chat = the model's own chat template; dschat = DeepSpeed-Chat's `Human: …\\n\\nAssistant: …`; "
        "plain = prompt, newline, response.",
        "chat = 模型自带的对话模板；dschat = DeepSpeed-Chat 的 `Human: …\\n\\nAssistant: …`；"
        "plain = 提示、换行、回答。",
        choices=list(datalib.TEMPLATES)))
    max_seq_len: int = field(default=512, metadata=_m(
        "data", "Max sequence length", "最大序列长度",
        "Tokens per sample after the template; longer samples are cut. Batches are padded only to their "
        "longest sample, never to this length.",
        "套用模板后每个样本的最大 token 数，超出部分截断。每个批次只填充到批内最长样本，而不是这个长度。",
        min=8, max=131072))
    eval_ratio: float = field(default=0.1, metadata=_m(
        "data", "Eval split", "验证集比例",
        "Share of the rows held out to measure eval loss (0 = no evaluation).",
        "留作验证集、用于计算 eval loss 的行比例（0 = 不评估）。", min=0, max=0.5))
    packing: bool = field(default=False, metadata=_m(
        "data", "Packing", "样本打包",
        "Pack several short samples into one sequence of max_seq_len (faster on GPUs with FlashAttention).",
        "把多个短样本拼成一条 max_seq_len 长的序列（在支持 FlashAttention 的 GPU 上更快）。"))
    loss_on_prompt: bool = field(default=False, metadata=_m(
        "data", "Loss on prompt", "提示也计算损失",
        "Also train on the prompt tokens (DeepSpeed-Chat does). Off: only the response is learned.",
        "提示部分也计入损失（DeepSpeed-Chat 的做法）。关闭时只学习回答部分。"))
    # ------------------------------------------------------------------------------------- training
    num_train_epochs: float = field(default=1.0, metadata=_m(
        "training", "Epochs", "训练轮数", "Passes over the training rows (ignored when max_steps > 0).",
        "遍历训练数据的轮数（max_steps > 0 时忽略）。", min=0, min_exclusive=True, max=1000))
    max_steps: int = field(default=-1, metadata=_m(
        "training", "Max steps", "最大步数", "Optimizer steps to run; -1 = use the epochs.",
        "优化器更新步数；-1 表示按轮数训练。", min=1, max=10_000_000, allow=[-1]))
    per_device_train_batch_size: int = field(default=4, metadata=_m(
        "training", "Batch size per device", "每设备批大小", "Training samples per process and step.",
        "每个进程每步的训练样本数。", min=1, max=4096))
    per_device_eval_batch_size: int = field(default=4, metadata=_m(
        "training", "Eval batch size per device", "每设备验证批大小", "Eval samples per process and forward.",
        "每个进程每次前向的验证样本数。", min=1, max=4096))
    gradient_accumulation_steps: int = field(default=1, metadata=_m(
        "training", "Gradient accumulation", "梯度累积步数",
        "Micro-batches summed before each optimizer step (global batch = batch × this × processes).",
        "每次优化器更新前累积的微批次数（全局批大小 = 批大小 × 此值 × 进程数）。", min=1, max=4096))
    learning_rate: float = field(default=2e-4, metadata=_m(
        "training", "Learning rate", "学习率",
        "Peak learning rate of AdamW (LoRA ≈ 1e-4…1e-3, full fine-tuning ≈ 1e-5).",
        "AdamW 的峰值学习率（LoRA 约 1e-4…1e-3，全参数微调约 1e-5）。", min=0, min_exclusive=True, max=1))
    weight_decay: float = field(default=0.0, metadata=_m(
        "training", "Weight decay", "权重衰减", "AdamW weight decay.", "AdamW 权重衰减。", min=0, max=1))
    lr_scheduler_type: str = field(default="cosine", metadata=_m(
        "training", "LR schedule", "学习率调度", "How the learning rate changes after warm-up.",
        "预热之后学习率的变化方式。",
        choices=["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]))
    warmup_steps: int = field(default=0, metadata=_m(
        "training", "Warm-up steps", "预热步数", "Steps of linear warm-up from 0 to the learning rate.",
        "学习率从 0 线性升到设定值的步数。", min=0, max=10_000_000))
    max_grad_norm: float = field(default=1.0, metadata=_m(
        "training", "Gradient clipping", "梯度裁剪", "Clip the gradient norm to this value (0 = off).",
        "把梯度范数裁剪到此值（0 = 不裁剪）。", min=0, max=1e6))
    seed: int = field(default=1234, metadata=_m(
        "training", "Seed", "随机种子", "Seed for the data split, shuffling and LoRA initialisation.",
        "用于数据划分、打乱和 LoRA 初始化的随机种子。", min=0, max=2**31 - 1))
    precision: str = field(default="fp32", metadata=_m(
        "training", "Precision", "精度",
        "fp32 on CPU; bf16 (Ampere+ GPUs) or fp16 (older GPUs) mixed precision.",
        "CPU 上用 fp32；GPU 上可用 bf16（Ampere 及更新）或 fp16（较旧 GPU）混合精度。",
        choices=["fp32", "bf16", "fp16"]))
    gradient_checkpointing: bool = field(default=False, metadata=_m(
        "training", "Gradient checkpointing", "梯度检查点",
        "Recompute activations in the backward pass: less memory, ~20-30% slower.",
        "反向传播时重算激活：更省显存，约慢 20–30%。"))
    # ----------------------------------------------------------------------------------------- lora
    use_lora: bool = field(default=True, metadata=_m(
        "lora", "LoRA", "LoRA",
        "Train a small low-rank adapter instead of all weights (the output is a PEFT adapter).",
        "只训练小型低秩适配器而非全部权重（输出为 PEFT 适配器）。"))
    lora_r: int = field(default=8, metadata=_m(
        "lora", "LoRA rank", "LoRA 秩", "Rank of the adapter matrices.", "适配器矩阵的秩。", min=1, max=1024))
    lora_alpha: int = field(default=16, metadata=_m(
        "lora", "LoRA alpha", "LoRA alpha", "Scaling of the adapter (effective scale alpha / r).",
        "适配器缩放系数（实际缩放为 alpha / r）。", min=1, max=4096))
    lora_dropout: float = field(default=0.05, metadata=_m(
        "lora", "LoRA dropout", "LoRA dropout", "Dropout on the adapter input.", "适配器输入上的 dropout。",
        min=0, max=1, max_exclusive=True))
    lora_target_modules: str = field(default="q_proj,k_proj,v_proj,o_proj", metadata=_m(
        "lora", "LoRA target modules", "LoRA 目标模块",
        "Comma-separated linear layers to adapt (OPT: q_proj,k_proj,v_proj,out_proj), or all-linear.",
        "要加适配器的线性层，逗号分隔（OPT 为 q_proj,k_proj,v_proj,out_proj），或 all-linear。"))
    # ------------------------------------------------------------------------------------- launcher
    deepspeed: str = field(default="", metadata=_m(
        "launcher", "DeepSpeed config", "DeepSpeed 配置",
        "Path of a DeepSpeed JSON (presets/deepspeed/zero2.json, …); empty = no DeepSpeed.",
        "DeepSpeed JSON 配置路径（presets/deepspeed/zero2.json 等）；留空表示不用 DeepSpeed。", widget="file"))
    # --------------------------------------------------------------------------------------- output
    logging_steps: int = field(default=5, metadata=_m(
        "output", "Log every", "日志间隔", "Write a metrics line every N steps (step 1 is always logged).",
        "每 N 步写一行指标（第 1 步总会记录）。", min=1, max=1_000_000))
    eval_steps: int = field(default=50, metadata=_m(
        "output", "Evaluate every", "评估间隔", "Eval loss every N steps (and before the first and after the "
        "last step).", "每 N 步计算一次验证损失（训练前和最后一步后也会计算）。", min=1, max=1_000_000))
    save_steps: int = field(default=100, metadata=_m(
        "output", "Checkpoint every", "检查点间隔", "Save a resumable checkpoint every N steps.",
        "每 N 步保存一个可恢复的检查点。", min=1, max=1_000_000))
    save_total_limit: int = field(default=2, metadata=_m(
        "output", "Checkpoints kept", "保留检查点数", "Keep only the newest N checkpoints (0 = keep all).",
        "只保留最新的 N 个检查点（0 = 全部保留）。", min=0, max=10_000))
    run_dir: str = field(default="runs/manual", metadata=_m(
        "output", "Run folder", "运行目录",
        "Where metrics.jsonl, checkpoints/ and output/ go; relative to the data dir when one is set.",
        "metrics.jsonl、checkpoints/ 和 output/ 的存放目录；设置了数据目录时相对于数据目录。", widget="dir"))
    resume_from_checkpoint: str = field(default="", metadata=_m(
        "output", "Resume from", "从检查点恢复",
        "Empty = start fresh; `latest` = the newest checkpoint in run_dir/checkpoints; or a checkpoint folder.",
        "留空 = 从头开始；`latest` = run_dir/checkpoints 中最新的检查点；也可填检查点目录。"))
    recipe: str = field(default="", metadata=_m(
        "output", "Recipe", "配方", "Name of the recipe these options started from (recorded in studio.json).",
        "这些选项来源的配方名称（记录在 studio.json 中）。"))
    data_dir: str = field(default="", metadata=_m(
        "output", "Data dir", "数据目录",
        "The studio's data dir (bundled models, datasets, runs); set by the studio. When set, run_dir must be "
        "inside it.", "工作室的数据目录（内置模型、数据集、运行记录），由工作室设置；设置后 run_dir 必须在其中。",
        widget="dir"))


# ------------------------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    data_dir: Path | None
    model: str
    model_config: dict
    datasets: list  # [Path]
    data_formats: list  # ["prompt_response" | "messages"] per dataset
    run_dir: Path
    output_dir: Path
    checkpoints_dir: Path
    deepspeed: str
    resume: str  # "" or a checkpoint folder


def _ensure_args(cfg: SFTArgs | dict) -> SFTArgs:
    if isinstance(cfg, SFTArgs):
        return cfglib.validate_fields(cfg)
    return cfglib.from_dict(SFTArgs, cfg)






def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    best, best_n = None, -1
    if checkpoints_dir.is_dir():
        for c in checkpoints_dir.iterdir():
            if c.is_dir() and c.name.startswith("checkpoint-") and c.name.split("-", 1)[1].isdigit():
                n = int(c.name.split("-", 1)[1])
                if n > best_n and (c / "trainer_state.json").is_file():
                    best, best_n = c, n
    return best




def resolve(cfg: SFTArgs) -> Resolved:
    """Check every option against the files it names (cheap: config.json and the first rows only)."""
    dd = Path(cfg.data_dir).expanduser().resolve() if cfg.data_dir else None
    if dd is not None and not dd.is_dir():
        raise FieldError("data_dir", f"folder not found: {cfg.data_dir}")

    # run dir (everything the run writes) must stay inside the data dir when one is set
    run_dir = paths.run_dir_of(cfg.run_dir, cfg.data_dir, "runs/manual")
    if dd is not None and not paths.inside(run_dir, dd):
        raise FieldError("run_dir", f"{run_dir} is outside the data dir {dd}; use a path inside it "
                                    f"(e.g. runs/<name>)")
    output_dir, checkpoints_dir = run_dir / "output", run_dir / "checkpoints"

    # model: only config.json is read
    model_path = modeling.resolve_model(cfg.model_name_or_path, dd)
    model_config = modeling.check_model_dir(model_path, original=cfg.model_name_or_path)
    if cfg.use_lora:
        modeling.check_target_modules(model_config, modeling.parse_modules(cfg.lora_target_modules))
    if cfg.template == "chat" and not modeling.has_chat_template(model_path):
        raise FieldError("template", f"the model at {cfg.model_name_or_path} has no chat template; "
                                     "use dschat or plain")
    max_pos = model_config.get("max_position_embeddings")
    if isinstance(max_pos, int) and cfg.max_seq_len > max_pos:
        raise FieldError("max_seq_len", f"must be <= {max_pos} for this model (max_position_embeddings), "
                                        f"got {cfg.max_seq_len}")

    # datasets: the first rows only
    ds_paths = datalib.resolve_datasets(cfg.dataset, dd)
    formats = []
    for ds_path in ds_paths:
        columns, rows = datalib.peek(ds_path, n=5)
        fmt = datalib.check_columns(columns, cfg.prompt_column, cfg.response_column, cfg.messages_column,
                                    source=ds_path.name)
        datalib.check_rows(rows, fmt, cfg.prompt_column, cfg.response_column, cfg.messages_column,
                           source=ds_path.name)
        formats.append(fmt)
    datalib.parse_data_split(cfg.data_split)
    counts = [datalib.count_rows(p) for p in ds_paths]
    if cfg.eval_ratio > 0 and None not in counts and sum(counts) < 2:
        raise FieldError("eval_ratio", f"the dataset has {sum(counts)} row; set eval_ratio to 0 or add rows")

    # precision: fp16 training needs a GPU (neither torch autocast nor DeepSpeed train fp16 on CPU)
    if cfg.precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("precision", "fp16 needs a CUDA GPU; use fp32 on CPU (bf16 works but is slow)")

    # deepspeed config
    ds_cfg = ""
    if cfg.deepspeed:
        p = Path(cfg.deepspeed).expanduser()
        if not p.is_absolute() and not p.exists():
            p = ROOT / p
        if not p.is_file():
            raise FieldError("deepspeed", f"file not found: {cfg.deepspeed} (e.g. presets/deepspeed/zero2.json)")
        try:
            ds_json = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise FieldError("deepspeed", f"{p.name} is not valid JSON: {e}") from None
        if not isinstance(ds_json, dict):
            raise FieldError("deepspeed", f"{p.name} must hold a JSON object")
        ds_cfg = str(p.resolve())

    # resume
    resume = ""
    r = cfg.resume_from_checkpoint.strip()
    if r.lower() == "latest":
        latest = latest_checkpoint(checkpoints_dir)
        resume = str(latest) if latest else ""
    elif r:
        rp = Path(r).expanduser()
        if not rp.is_absolute() and not rp.exists():
            rp = checkpoints_dir / r
        if not (rp.is_dir() and (rp / "trainer_state.json").is_file()):
            raise FieldError("resume_from_checkpoint", f"no checkpoint at {r}; use latest, empty, or a "
                                                       f"checkpoint-N folder under {checkpoints_dir}")
        resume = str(rp.resolve())
    elif latest_checkpoint(checkpoints_dir) is not None:
        raise FieldError("resume_from_checkpoint", f"{run_dir} already has checkpoints from an earlier run: "
                                                   "set it to latest to continue, or choose a new run_dir")
    return Resolved(dd, model_path, model_config, ds_paths, formats, run_dir, output_dir, checkpoints_dir,
                    ds_cfg, resume)


def validate_config(cfg: SFTArgs | dict) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading the model.

    Reads only the model's config.json (and tokenizer config) and the first rows of the dataset, so the UI can
    call it before queuing a job. Accepts an SFTArgs or a dict of field values (strings from a form are fine).
    """
    resolve(_ensure_args(cfg))


# ---------------------------------------------------------------------------------------- training
def _log(msg: str) -> None:
    from backends.common.distributed import is_main_process

    if is_main_process():
        print(f"[studio] {msg}", flush=True)


def _quiet_libraries() -> None:
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


def load_sft_data(cfg: SFTArgs, r: Resolved):
    """(train, eval or None) in TRL's prompt-completion format: each dataset converted with the template, cut
    by data_split (step 1's part), blended, then split by eval_ratio."""
    from datasets import concatenate_datasets

    parts = []
    for path, fmt in zip(r.datasets, r.data_formats):
        raw = datalib.load_rows(path)
        split, split_seed = datalib.split_for(path, cfg.data_split, cfg.seed)
        if split != cfg.data_split:
            _log(f"{path.parent.name}: data_split {split} (seed {split_seed}) from the studio dataset's card")
        raw = datalib.apply_data_split(raw, split, phase=0, seed=split_seed)
        parts.append(datalib.to_prompt_completion(raw, template=cfg.template, prompt_column=cfg.prompt_column,
                                                  response_column=cfg.response_column,
                                                  messages_column=cfg.messages_column, fmt=fmt))
    data = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    return datalib.split_train_eval(data, cfg.eval_ratio, cfg.seed)


def build_trainer(cfg: SFTArgs, r: Resolved, *, callbacks: list | None = None, log=_log):
    """The TRL SFTTrainer for `cfg` (model, LoRA, datasets, arguments), ready for `.train()`."""
    import torch
    import trl
    from transformers import PrinterCallback, ProgressCallback

    from backends.common import distributed as dist

    _quiet_libraries()
    # DeepSpeed on CPU needs its PartialState before the training arguments (stack-notes)
    extra = dist.setup_deepspeed(r.deepspeed, r.data_dir) if r.deepspeed else dist.setup_cpu_distributed()

    tokenizer = modeling.load_tokenizer(r.model)
    train_ds, eval_ds = load_sft_data(cfg, r)
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(train_ds)} train / "
        f"{len(eval_ds) if eval_ds is not None else 0} eval rows (template {cfg.template}, loss on "
        f"{'prompt+response' if cfg.loss_on_prompt else 'response'})")

    has_eval = eval_ds is not None and len(eval_ds) > 0
    args = trl.SFTConfig(
        output_dir=str(r.checkpoints_dir),
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
        include_num_input_tokens_seen="non_padding",
        # data: prompt masked unless loss_on_prompt; padded per batch (TRL's collator), never to max_length
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        completion_only_loss=not cfg.loss_on_prompt,
        padding_free=False,
        pad_to_multiple_of=None,
        deepspeed=r.deepspeed or None,
        **extra,
    )

    # Load after the arguments: with ZeRO-3 they register the config that from_pretrained partitions with
    use_half_weights = cfg.precision != "fp32" and (cfg.use_lora or bool(r.deepspeed))
    model = modeling.load_causal_lm(r.model, dtype=cfg.precision if use_half_weights else "fp32")
    peft_config = None
    if cfg.use_lora:
        peft_config = modeling.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules)

    try:
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=train_ds,
                                 eval_dataset=eval_ds if has_eval else None, processing_class=tokenizer,
                                 peft_config=peft_config, callbacks=list(callbacks or []))
    except ValueError as e:
        if "Target modules" in str(e) or "target_modules" in str(e):
            raise FieldError("lora_target_modules", str(e).split("\n")[0]) from None
        raise
    for cb in (PrinterCallback, ProgressCallback):
        trainer.remove_callback(cb)
    dist.atomic_checkpoints(trainer)  # checkpoint-N appears whole (a Stop or kill mid-save leaves none)
    acc = trainer.accelerator
    log(f"distributed: {acc.distributed_type.value if hasattr(acc.distributed_type, 'value') else acc.distributed_type}, "
        f"{acc.num_processes} process(es), device {acc.device}")
    if cfg.use_lora and dist.is_main_process():
        def numel(p):  # ZeRO-3 partitions parameters: ds_numel is the full size
            return getattr(p, "ds_numel", None) or p.numel()

        trainable = sum(numel(p) for p in trainer.model.parameters() if p.requires_grad)
        total = sum(numel(p) for p in trainer.model.parameters())
        log(f"model: {r.model} ({total / 1e6:.1f}M params, LoRA r={cfg.lora_r} on {cfg.lora_target_modules}: "
            f"{trainable / 1e6:.2f}M trainable), threads {torch.get_num_threads()}")
    else:
        log(f"model: {r.model} (full fine-tuning), threads {torch.get_num_threads()}")
    return trainer


def train(cfg: SFTArgs | dict, *, log=_log) -> dict[str, Any]:
    """Run SFT as configured; returns the end record (also the last line of metrics.jsonl)."""
    from backends.common import distributed as dist
    from backends.common.metrics import FinalEvalCallback, MetricsCallback

    cfg = _ensure_args(cfg)
    stopper = dist.StopOnSignal()  # before the slow parts: a Stop while loading exits at once
    if not cfg.deepspeed and dist.accelerate_deepspeed_config():
        cfg.deepspeed = dist.accelerate_deepspeed_config()
    r = resolve(cfg)
    dist.set_threads()
    _quiet_libraries()
    world = dist.world_size()
    log(f"sft: run_dir {r.run_dir}, {world} process{'es' if world > 1 else ''}"
        + (f", deepspeed {Path(r.deepspeed).name}" if r.deepspeed else "")
        + (f", resuming from {Path(r.resume).name}" if r.resume else ""))

    if cfg.precision == "bf16" and not dist.has_cuda():
        log("note: bf16 on a CPU without AMX/AVX512-BF16 trains several times slower than fp32")
    started = time.time()
    metrics_cb = MetricsCallback(r.run_dir, resume=bool(r.resume), start_info={
        "kind": KIND, "recipe": cfg.recipe, "model": r.model, "dataset": ",".join(map(str, r.datasets)),
        "template": cfg.template, "use_lora": cfg.use_lora, "deepspeed": r.deepspeed,
        "max_seq_len": cfg.max_seq_len, "precision": cfg.precision, "pid": os.getpid()})
    trainer = build_trainer(cfg, r, callbacks=[metrics_cb, FinalEvalCallback(), stopper], log=log)
    trainer.train(resume_from_checkpoint=r.resume or None)

    status = "stopped" if stopper.stopped else "completed"
    if stopper.stopped:
        step = trainer.state.global_step
        saved = r.checkpoints_dir / f"checkpoint-{step}"
        log(f"stopped at step {step}: checkpoint {saved.name} saved in {r.checkpoints_dir}"
            if saved.is_dir() else f"stopped at step {step}: no checkpoint was saved")
    # Every rank calls save_model (ZeRO-3 gathers the weights collectively); only rank 0 writes files.
    trainer.save_model(str(r.output_dir))
    end_extra = {"output_dir": str(r.output_dir), "adapter": cfg.use_lora, "wall_time": round(time.time() - started, 2)}
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(r.output_dir))
        rec = metrics_cb.end_record(status, **end_extra)
        modeling.write_studio_json(r.output_dir, {
            "kind": KIND,
            "adapter": cfg.use_lora,
            "base_model": r.model,
            "base_model_ref": cfg.model_name_or_path,
            "recipe": cfg.recipe,
            "dataset": ",".join(map(str, r.datasets)),
            "template": cfg.template,
            "status": status,
            "hyperparameters": cfglib.to_dict(cfg),
            "metrics": {k: rec.get(k) for k in ("step", "total_steps", "final_loss", "train_loss", "eval_loss",
                                                 "first_eval_loss", "steps_per_s", "train_runtime")},
        })
        for name in ("training_args.bin",):  # Trainer's pickled arguments: not needed next to the result
            (r.output_dir / name).unlink(missing_ok=True)
    dist.barrier()
    rec = metrics_cb.write_end(status, **end_extra)
    rec["exit_code"] = stopper.exit_code if stopper.stopped else 0
    return rec


# --------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> SFTArgs:
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = cfglib.parse_cli(SFTArgs, argv, kind=KIND, prog="python -m backends.sft",
                           description="Supervised fine-tuning (DeepSpeed-Chat step 1) with TRL's SFTTrainer.")
    # a recipe file names the recipe when the config does not
    if not cfg.recipe:
        try:
            i = argv.index("--config")
            path = Path(argv[i + 1])
        except (ValueError, IndexError):
            path = None
        if path is not None and path.is_file():
            import yaml

            try:
                raw = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError:
                raw = None
            if isinstance(raw, dict) and cfglib.is_recipe(raw):
                cfg.recipe = str(raw.get("name") or path.stem)
    return cfg


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = parse_args(argv)
        rec = train(cfg)
    except FieldError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return int(rec.get("exit_code", 0))


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "KIND",
    "SFTArgs",
    "build_trainer",
    "latest_checkpoint",
    "load_sft_data",
    "main",
    "resolve",
    "train",
    "validate_config",
]
