"""Reward model training (DeepSpeed-Chat step 2) with TRL's RewardTrainer.

    python -m backends.reward --config FILE [--field value ...]

A one-label ``AutoModelForSequenceClassification`` (the score head on top of a causal LM) learns to score the
chosen answer of each preference row (prompt, chosen, rejected) above the rejected one: pairwise ranking loss
``-log sigmoid(r_chosen - r_rejected)``, like DeepSpeed-Chat's step 2. It starts from a base model or an SFT
result (``job:<id>`` or its output folder; a LoRA adapter is merged into its base first). LoRA trains the
adapter and the new score head (``modules_to_save``); the output is always a plain 1-label sequence-classification
folder (LoRA merged at the end) + tokenizer + studio.json (kind reward), which the A/B tools accept as a judge.

metrics.jsonl: the usual loss/lr/tokens lines plus, on the held-out rows before training and at every eval step,
DeepSpeed-Chat's numbers under these names:

    eval_chosen_score    mean score of the chosen answers   (DS-Chat "chosen_last_scores (higher is better)")
    eval_rejected_score  mean score of the rejected answers (DS-Chat "rejected_last_scores")
    eval_accuracy        share of rows with chosen > rejected (DS-Chat "acc (higher is better)")
    eval_margin          mean chosen - rejected              (DS-Chat "diff")

(training lines carry the same without the ``eval_`` prefix, over the batch). Differences from DS-Chat on
purpose: batches are padded per batch, not to max_seq_len; the score is read at the last real token (HF's
sequence-classification convention, = DS-Chat's "end token") ; rows longer than max_seq_len are dropped, not cut.
Exit codes: 0 done, 2 bad option (the message names the field), 128+signal after a clean stop.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, runner
from backends.common import trainer as trainer_lib
from backends.common.errors import FieldError

KIND = "reward"
DESCRIPTION = "Reward model training (DeepSpeed-Chat step 2) with TRL's RewardTrainer."
_m = cfglib.meta
START_KINDS = modeling.POLICY_KINDS  # jobs whose result it may start from (a policy)
METRICS = ("eval_chosen_score", "eval_rejected_score", "eval_accuracy", "eval_margin")


@dataclass
class PreferenceFields(cfglib.DataFields):
    """The start model and preference data of a step-2 recipe (reward model, DPO/KTO); the shared data fields
    are DataFields'."""

    model_name_or_path: str = field(default="bundled:smollm2", metadata=_m(
        "model", "Start from", "初始模型",
        "The model training starts from: a base model folder, `bundled:smollm2`, a hub id, or an SFT "
        "result (`job:<id>` or its output folder). A reward model merges an SFT LoRA adapter into its base and adds "
        "a one-label score head; DPO keeps training the adapter.",
        "训练的初始模型：基础模型目录、`bundled:smollm2`、Hub 模型名，或 SFT 结果（`job:<id>` 或其输出目录；"
        "）。奖励模型把 SFT 的 LoRA 适配器合并进基础模型并加一个单输出的打分头；DPO 则继续训练该适配器。", widget="model",
        accepts="policy"))
    dataset: str = field(default="presets/datasets/demo_preference.jsonl", metadata=_m(
        "data", "Preference dataset", "偏好数据集",
        "A studio dataset of kind preference, or a .jsonl/.json/.csv/.tsv/.parquet file (or folder) of "
        "prompt/chosen/rejected rows; several, comma-separated, are blended.",
        "偏好类型的工作室数据集，或由 prompt/chosen/rejected 行组成的 .jsonl/.json/.csv/.tsv/.parquet 文件（或目录）；"
        "多个用逗号分隔时合并使用。", widget="file", dataset_kind="preference", order=-1))
    data_split: str = cfglib.redefault(cfglib.DataFields, "data_split", "", help=(
        "DeepSpeed-Chat's split of one dataset over its 3 steps, e.g. 2,4,4: the reward model uses the second "
        "part (40%), like DPO. Empty = all rows (or the split saved with a studio dataset)."), help_zh=(
        "DeepSpeed-Chat 在三个阶段间划分同一数据集的比例，如 2,4,4：奖励模型与 DPO 使用第二部分（40%）。留空 = 全部行"
        "（或工作室数据集保存的划分）。"))
    chosen_column: str = field(default="chosen", metadata=_m(
        "data", "Chosen column", "优选回答列", "Column of the preferred answer.", "存放更优回答的列名。"))
    rejected_column: str = field(default="rejected", metadata=_m(
        "data", "Rejected column", "劣选回答列", "Column of the worse answer.", "存放较差回答的列名。"))
    max_seq_len: int = cfglib.redefault(cfglib.DataFields, "max_seq_len", 512, help=(
        "Tokens of prompt + answer; longer rows are left out. Batches are padded only to their longest row."),
        help_zh="提示 + 回答的最大 token 数；更长的行被跳过。每个批次只填充到批内最长的行。")
    # prompt_column, template, eval_ratio: inherited (DataFields)
    drop_identical: bool = field(default=False, metadata=_m(
        "data", "Drop identical pairs", "丢弃相同的回答对",
        "Rows whose chosen and rejected answers are the same teach nothing: on = leave them out; off = refuse "
        "the dataset and name the rows.",
        "优选与劣选回答相同的行没有信息：开启 = 跳过这些行；关闭 = 拒绝该数据集并指出这些行。", order=2))


@dataclass
class RewardArgs(cfglib.TrainingFields, cfglib.LoraFields, cfglib.JobFields, PreferenceFields):
    """Options of the reward-model backend."""

    learning_rate: float = cfglib.redefault(cfglib.TrainingFields, "learning_rate", 5e-5)  # DS-Chat step 2


SCHEMA = RewardArgs


# ------------------------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    job: runner.Job
    model: str            # the model folder (or hub id) the score head goes on
    adapter: str          # an SFT LoRA adapter to merge into `model` first, or ""
    model_config: dict
    datasets: list        # [Path]

    def __getattr__(self, name):  # the Job's fields (run_dir, deepspeed, ...) for the shared plumbing
        return getattr(self.__dict__["job"], name)


start_model = modeling.start_model  # (kept for callers of backends.reward)


def check_preference_rows(rows: list[dict], cfg: Any, source: str) -> list[int]:
    """Row numbers (1-based) whose chosen == rejected; FieldError on a missing column or non-text values."""
    identical = []
    for i, row in enumerate(rows, 1):
        for col in (cfg.prompt_column, cfg.chosen_column, cfg.rejected_column):
            v = row.get(col)
            if not isinstance(v, str) and not (col == cfg.prompt_column and isinstance(v, list)):
                raise FieldError(_column_field(cfg, col), f"{source} row {i}: {col!r} must be text, got "
                                                          f"{type(v).__name__}")
        if str(row[cfg.chosen_column]).strip() == str(row[cfg.rejected_column]).strip():
            identical.append(i)
    return identical


def _column_field(cfg: Any, col: str) -> str:
    return {cfg.prompt_column: "prompt_column", cfg.chosen_column: "chosen_column",
            cfg.rejected_column: "rejected_column"}.get(col, "dataset")


def resolve_preference_data(cfg: Any, dd: Path | None) -> list[Path]:
    """The dataset files, checked: the three columns exist, values are text, chosen != rejected (or dropped)."""
    ds_paths = datalib.resolve_datasets(cfg.dataset, dd)
    datalib.parse_data_split(cfg.data_split)
    for ds_path in ds_paths:
        columns, _ = datalib.peek(ds_path, n=1)
        for col, fld in ((cfg.prompt_column, "prompt_column"), (cfg.chosen_column, "chosen_column"),
                         (cfg.rejected_column, "rejected_column")):
            if col not in columns:
                raise FieldError(fld, f"{ds_path.name} has no column {col!r} (its columns: "
                                      f"{', '.join(columns) or 'none'}); preference training needs prompt, chosen "
                                      f"and rejected columns: pick a dataset of kind preference or set {fld}")
        n = datalib.count_rows(ds_path)
        if n is not None and n <= 200_000:
            rows = datalib.read_table(ds_path).rows
            same = check_preference_rows(rows, cfg, ds_path.name)
            if same and not cfg.drop_identical:
                shown = ", ".join(map(str, same[:5])) + (" …" if len(same) > 5 else "")
                raise FieldError("drop_identical", f"{ds_path.name}: {len(same)} row(s) have chosen == rejected "
                                                   f"(rows {shown}); turn drop_identical on to leave them out, or "
                                                   "fix the data")
    return ds_paths


def zero_stage(ds_file: str) -> int:
    try:
        return int((json.loads(Path(ds_file).read_text(encoding="utf-8")).get("zero_optimization") or {})
                   .get("stage", 0))
    except (OSError, ValueError, TypeError):
        return 0


def check_max_len(cfg: Any, model_config: dict, field: str = "max_seq_len") -> None:
    max_pos = model_config.get("max_position_embeddings")
    value = getattr(cfg, field)
    if isinstance(max_pos, int) and value > max_pos:
        raise FieldError(field, f"must be <= {max_pos} for this model (max_position_embeddings), got {value}")


def resolve(cfg: RewardArgs, job: runner.Job | None = None) -> Resolved:
    """Check every option against the files it names (config.json, the dataset's rows; no weights)."""
    job = job or runner.resolve_job(cfg, KIND)
    dd = job.data_dir
    model, adapter, _info = modeling.start_model(cfg.model_name_or_path, dd, kinds=START_KINDS)
    model_config = modeling.check_model_dir(model, original=cfg.model_name_or_path)
    if cfg.use_lora:
        modeling.check_target_modules(model_config, modeling.parse_modules(cfg.lora_target_modules))
    if cfg.template == "chat" and not modeling.has_chat_template(adapter or model):
        raise FieldError("template", f"the model at {cfg.model_name_or_path} has no chat template; use dschat or plain")
    check_max_len(cfg, model_config)
    if cfg.precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("precision", "fp16 needs a CUDA GPU; use fp32 on CPU (bf16 works but is slow)")
    if cfg.use_lora and job.deepspeed and zero_stage(job.deepspeed) == 3:
        raise FieldError("deepspeed", "LoRA is merged into the reward model at the end, which needs the whole "
                                      "weights: use ZeRO stage 0-2 with LoRA, or turn use_lora off for ZeRO-3")
    ds_paths = resolve_preference_data(cfg, dd)
    return Resolved(job, model, adapter, model_config, ds_paths)


def validate_config(cfg: RewardArgs | dict) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading the model."""
    resolve(runner.ensure_args(RewardArgs, cfg))


# ------------------------------------------------------------------------------------------ data
def preference_rows(raw, cfg: Any, tokenizer, *, phase: int, seed: int, split: str):
    """Stored preference rows -> {prompt, chosen, rejected} strings with the template (the one place to switch
    to the shared turns/rendering functions): the prompt rendered for generation, the answers as completions."""
    raw = datalib.apply_data_split(raw, split, phase=phase, seed=seed)
    pc, cc, rc = cfg.prompt_column, cfg.chosen_column, cfg.rejected_column

    def convert(row):
        prompt = datalib.format_prompt(row[pc], cfg.template, tokenizer)
        lead = " " if cfg.template == "dschat" else ""
        return {"prompt": prompt, "chosen": lead + str(row[cc]).strip(), "rejected": lead + str(row[rc]).strip()}

    ds = raw.filter(lambda r: r[pc] is not None and r[cc] is not None and r[rc] is not None)
    ds = ds.filter(lambda r: str(r[cc]).strip() != str(r[rc]).strip())  # only left when drop_identical is on
    return ds.map(convert, remove_columns=list(ds.column_names))


def load_preference_data(cfg: Any, r: Any, tokenizer, *, phase: int, log=trainer_lib.log):
    """(train, eval or None): each dataset cut by data_split (`phase`: 1 = reward model, 2 = RLHF), blended,
    split by eval_ratio."""
    from datasets import concatenate_datasets

    parts = []
    for path in r.datasets:
        raw = datalib.load_rows(path)
        split, split_seed = datalib.split_for(path, cfg.data_split, cfg.seed)
        if split != cfg.data_split:
            log(f"{path.parent.name}: data_split {split} (seed {split_seed}) from the studio dataset's card")
        parts.append(preference_rows(raw, cfg, tokenizer, phase=phase, seed=split_seed, split=split))
    data = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
    if len(data) < 2:
        raise FieldError("dataset", f"only {len(data)} usable preference row(s); add rows")
    return datalib.split_train_eval(data, cfg.eval_ratio, cfg.seed)


# ---------------------------------------------------------------------------------------- model
def merged_causal_lm(model: str, adapter: str, dtype: str = "fp32"):
    """An SFT LoRA result merged into its base (a plain causal LM in memory)."""
    from peft import PeftModel

    base = modeling.load_causal_lm(model, dtype=dtype)
    return PeftModel.from_pretrained(base, adapter).merge_and_unload()


def load_reward_model(r: Resolved, dtype: str = "fp32", seed: int = 1234):
    """The 1-label sequence-classification model on the start model (an SFT adapter merged in first); the new
    score head is initialised from `seed`."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(r.model, num_labels=1,
                                                               dtype=modeling.torch_dtype(dtype))
    if r.adapter:  # the merged SFT weights replace the base's; the score head stays new
        merged = merged_causal_lm(r.model, r.adapter, dtype).state_dict()
        body = model.base_model_prefix  # "model" (Llama), "transformer" (GPT-2), ...
        state = {k: v for k, v in merged.items() if k.startswith(body + ".")}
        missing, _ = model.load_state_dict(state, strict=False)
        if any(not k.startswith("score") for k in missing):
            raise FieldError("model_name_or_path", f"could not merge the adapter {r.adapter} into {r.model}: "
                                                   f"missing {', '.join(k for k in missing if 'score' not in k)[:200]}")
        del merged
    if getattr(model.config, "use_cache", None):
        model.config.use_cache = False
    return model


def _reward_trainer_class():
    import torch
    import trl

    class StudioRewardTrainer(trl.RewardTrainer):
        """TRL's RewardTrainer + DS-Chat's chosen/rejected mean scores in the logged metrics."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = super().compute_loss(model, inputs, return_outputs=True,
                                                 num_items_in_batch=num_items_in_batch)
            mode = "train" if self.model.training else "eval"
            with torch.no_grad():
                chosen, rejected = torch.chunk(outputs.logits.squeeze(-1).detach(), chunks=2)
                acc = self.accelerator
                self._metrics[mode]["chosen_score"].append(acc.gather_for_metrics(chosen.mean()).mean().item())
                self._metrics[mode]["rejected_score"].append(acc.gather_for_metrics(rejected.mean()).mean().item())
            return (loss, outputs) if return_outputs else loss

    return StudioRewardTrainer


def build_trainer(cfg: RewardArgs, r: Resolved, *, callbacks: list | None = None, log=trainer_lib.log):
    import trl

    trainer_lib.quiet_libraries()
    tokenizer = modeling.load_tokenizer(r.adapter or r.model)
    train_ds, eval_ds = load_preference_data(cfg, r, tokenizer, phase=1, log=log)
    has_eval = eval_ds is not None and len(eval_ds) > 0
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(train_ds)} train / "
        f"{len(eval_ds) if has_eval else 0} eval pairs (template {cfg.template})")
    args = trl.RewardConfig(**trainer_lib.training_kwargs(cfg, r, has_eval=has_eval),
                            max_length=cfg.max_seq_len, pad_to_multiple_of=None, disable_dropout=True,
                            include_num_input_tokens_seen="non_padding")
    model = load_reward_model(r, trainer_lib.weights_dtype(cfg, r), cfg.seed)
    peft = trainer_lib.peft_config(cfg, task_type="SEQ_CLS", modules_to_save=["score"])
    trainer = _reward_trainer_class()(model=model, args=args, train_dataset=train_ds,
                                      eval_dataset=eval_ds if has_eval else None, processing_class=tokenizer,
                                      peft_config=peft, callbacks=list(callbacks or []))
    return trainer_lib.prepare(trainer, cfg, r.model + (f" + {Path(r.adapter).name} merged" if r.adapter else ""),
                               log=log)


def save_merged(trainer, output_dir: Path) -> None:
    """A plain 1-label sequence-classification folder: LoRA (and the trained score head) merged in."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        if trainer.is_world_process_zero():
            model.merge_and_unload().save_pretrained(str(output_dir))
    else:
        trainer.save_model(str(output_dir))


def train(cfg: RewardArgs | dict, job: runner.Job | None = None, *, log=trainer_lib.log) -> dict[str, Any]:
    """Train the reward model as configured; returns the end record (also the last line of metrics.jsonl)."""
    cfg = runner.ensure_args(RewardArgs, cfg)
    r = resolve(cfg, job)
    return trainer_lib.run(
        KIND, cfg, r, lambda callbacks: build_trainer(cfg, r, callbacks=callbacks, log=log),
        start_info={"model": r.model, "adapter": r.adapter, "dataset": ",".join(map(str, r.datasets)),
                    "template": cfg.template, "max_seq_len": cfg.max_seq_len},
        studio_info={"adapter": False, "reward_model": True, "base_model": r.model,
                     "base_model_ref": cfg.model_name_or_path, "start_adapter": r.adapter,
                     "dataset": ",".join(map(str, r.datasets)), "template": cfg.template},
        metrics_keys=METRICS, save_model=save_merged, log=log)


def parse_args(argv: list[str] | None = None) -> RewardArgs:
    return runner.parse_args(RewardArgs, argv, kind=KIND, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return runner.main(KIND, RewardArgs, train, argv, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "SCHEMA", "RewardArgs", "build_trainer", "load_preference_data", "main", "preference_rows",
           "resolve", "start_model", "train", "validate_config"]
