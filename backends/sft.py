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

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, runner
from backends.common import trainer as trainer_lib
from backends.common.errors import FieldError

KIND = "sft"


_m = cfglib.meta


@dataclass
class SFTArgs(cfglib.TrainingFields, cfglib.LoraFields, cfglib.JobFields, cfglib.DataFields):
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
        widget="file", dataset_kind="sft", order=-1))
    data_split: str = cfglib.redefault(cfglib.DataFields, "data_split", "", help=(
        "DeepSpeed-Chat's split of one dataset over its 3 steps, e.g. 2,4,4: SFT uses the first part (20%). "
        "Empty = all rows (or the split saved with a studio dataset)."), help_zh=(
        "DeepSpeed-Chat 在三个阶段间划分同一数据集的比例，如 2,4,4：SFT 使用第一部分（20%）。留空 = 全部行（或工作室数据集保存的划分）。"))
    response_column: str = field(default="response", metadata=_m(
        "data", "Response column", "回答列", "Column that holds the answer to learn.", "存放要学习的回答的列名。"))
    messages_column: str = field(default="messages", metadata=_m(
        "data", "Messages column", "对话列",
        "Column with a chat as a list of {role, content}; used when the prompt/response columns are absent. "
        "The last message (the assistant's) is trained.",
        "以 {role, content} 列表表示的对话列；没有 prompt/response 列时使用，训练最后一条（助手）消息。"))
    # prompt_column, template, max_seq_len, eval_ratio: inherited (DataFields)
    packing: bool = field(default=False, metadata=_m(
        "data", "Packing", "样本打包",
        "Pack several short samples into one sequence of max_seq_len (faster on GPUs with FlashAttention).",
        "把多个短样本拼成一条 max_seq_len 长的序列（在支持 FlashAttention 的 GPU 上更快）。", order=2))
    loss_on_prompt: bool = field(default=False, metadata=_m(
        "data", "Loss on prompt", "提示也计算损失",
        "Also train on the prompt tokens (DeepSpeed-Chat does). Off: only the response is learned.",
        "提示部分也计入损失（DeepSpeed-Chat 的做法）。关闭时只学习回答部分。", order=2))
    # the shared data fields, training, LoRA and the engine-owned fields: inherited (backends/common/config.py)


SCHEMA = SFTArgs  # the one declaration of this kind's options (app/docs.py, the tabs read it)


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
    return runner.ensure_args(SFTArgs, cfg)


latest_checkpoint = runner.latest_checkpoint


def resolve(cfg: SFTArgs) -> Resolved:
    """Check every option against the files it names (cheap: config.json and the first rows only)."""
    job = runner.resolve_job(cfg, KIND)
    dd, run_dir, output_dir, checkpoints_dir = job.data_dir, job.run_dir, job.output_dir, job.checkpoints_dir

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

    ds_cfg, resume = job.deepspeed, job.resume
    return Resolved(dd, model_path, model_config, ds_paths, formats, run_dir, output_dir, checkpoints_dir,
                    ds_cfg, resume)


def validate_config(cfg: SFTArgs | dict) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading the model.

    Reads only the model's config.json (and tokenizer config) and the first rows of the dataset, so the UI can
    call it before queuing a job. Accepts an SFTArgs or a dict of field values (strings from a form are fine).
    """
    resolve(_ensure_args(cfg))


# ---------------------------------------------------------------------------------------- training
_log = trainer_lib.log
_quiet_libraries = trainer_lib.quiet_libraries


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
    import trl

    _quiet_libraries()
    tokenizer = modeling.load_tokenizer(r.model)
    train_ds, eval_ds = load_sft_data(cfg, r)
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(train_ds)} train / "
        f"{len(eval_ds) if eval_ds is not None else 0} eval rows (template {cfg.template}, loss on "
        f"{'prompt+response' if cfg.loss_on_prompt else 'response'})")

    has_eval = eval_ds is not None and len(eval_ds) > 0
    args = trl.SFTConfig(
        **trainer_lib.training_kwargs(cfg, r, has_eval=has_eval),
        include_num_input_tokens_seen="non_padding",
        # data: prompt masked unless loss_on_prompt; padded per batch (TRL's collator), never to max_length
        max_length=cfg.max_seq_len,
        packing=cfg.packing,
        completion_only_loss=not cfg.loss_on_prompt,
        padding_free=False,
        pad_to_multiple_of=None,
    )

    # Load after the arguments: with ZeRO-3 they register the config that from_pretrained partitions with
    model = modeling.load_causal_lm(r.model, dtype=trainer_lib.weights_dtype(cfg, r))
    peft_config = trainer_lib.peft_config(cfg)

    try:
        trainer = trl.SFTTrainer(model=model, args=args, train_dataset=train_ds,
                                 eval_dataset=eval_ds if has_eval else None, processing_class=tokenizer,
                                 peft_config=peft_config, callbacks=list(callbacks or []))
    except ValueError as e:
        if "Target modules" in str(e) or "target_modules" in str(e):
            raise FieldError("lora_target_modules", str(e).split("\n")[0]) from None
        raise
    trainer_lib.prepare(trainer, cfg, r.model, log=log)
    return trainer


def train(cfg: SFTArgs | dict, *, log=_log) -> dict[str, Any]:
    """Run SFT as configured; returns the end record (also the last line of metrics.jsonl)."""
    cfg = _ensure_args(cfg)
    r = resolve(cfg)  # the DeepSpeed file of an `accelerate launch --use_deepspeed` config too (runner.resolve_job)
    dataset = ",".join(map(str, r.datasets))
    return trainer_lib.run(
        KIND, cfg, r, lambda callbacks: build_trainer(cfg, r, callbacks=callbacks, log=log),
        start_info={"model": r.model, "dataset": dataset, "template": cfg.template, "max_seq_len": cfg.max_seq_len},
        studio_info={"adapter": cfg.use_lora, "base_model": r.model, "base_model_ref": cfg.model_name_or_path,
                     "dataset": dataset, "template": cfg.template},
        end_info={"adapter": cfg.use_lora}, log=log)


# --------------------------------------------------------------------------------------------- CLI
DESCRIPTION = "Supervised fine-tuning (DeepSpeed-Chat step 1) with TRL's SFTTrainer."


def parse_args(argv: list[str] | None = None) -> SFTArgs:
    return runner.parse_args(SFTArgs, argv, kind=KIND, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return runner.main(KIND, SFTArgs, lambda cfg, job: train(cfg), argv, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "KIND",
    "SCHEMA",
    "SFTArgs",
    "build_trainer",
    "latest_checkpoint",
    "load_sft_data",
    "main",
    "resolve",
    "train",
    "validate_config",
]
