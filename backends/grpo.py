"""Critic-free RLHF (DeepSpeed-Chat step 3 without a critic): GRPO with TRL's GRPOTrainer, RLOO with its RLOOTrainer.

    python -m backends.grpo --config FILE [--field value ...]     # GRPO
    python -m backends.rloo --config FILE [--field value ...]     # RLOO (the same program, kind rloo)

The actor starts from a policy (an SFT result ``job:<id>``, its output folder, or any causal LM); a finished
reward model (``job:<id>`` of a Reward model job, a 1-label sequence classifier) is the reward function. For each
prompt of the prompt data (``data_split`` phase 3, prompts over max_prompt_seq_len dropped and counted) the actor
samples ``num_generations`` answers; the reward model scores each prompt + answer, rendered with the template the
reward model was trained with (the studio refuses a mismatch), with the A/B tab's scorer
(:class:`backends.infer.chat.RewardScorer`: batched, no grad, eval mode). GRPO's advantage is the reward minus
its group's mean (over the group's std); RLOO's is the reward minus the mean of the *other* answers of its group.
No value model is trained. ``beta`` pulls towards the reference: with LoRA that is the start model with the new
adapter disabled, or, when the actor is an SFT LoRA result, TRL's frozen copy of that adapter -- no second model.

Two kinds, one module: ``grpo`` (GRPOArgs) and ``rloo`` (RLOOArgs) share every field but their algorithm's own
(GRPO: loss type; RLOO: advantage normalisation), so the RLHF tab's algorithm dropdown lists them side by side
with DPO and PPO, and each form shows only the options its trainer has.

metrics.jsonl (TRL's names, with the reward renamed to the studio's RLHF name):

    reward_mean                 mean RM score of the sampled answers of the step (TRL "reward")
    reward_std                  their spread
    kl                          mean per-token KL to the reference (logged when beta > 0)
    answer_len                  mean answer length in tokens (TRL's completions/mean_length; its min/max/clipped_ratio kept)
    eval_reward_mean            mean RM score of the *greedy* answers to the held-out prompts (eval_ratio), before
                                training, every eval_steps and at the end (studio.json keeps first and last)
    eval_answer_length          their mean length in tokens

``<run_dir>/samples.jsonl`` gets {step, prompt, answer, reward} rows every print_answers_interval steps (DS-Chat's
--print_answers), also printed in the log. Output like an SFT result: the adapter (or full model) + tokenizer +
studio.json (kind grpo / rloo), so chat, A/B and later RLHF runs load it as a policy. Exit codes: 0 done, 2 bad
option (naming the field), 128+signal after a clean stop.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends import dpo
from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, runner
from backends.common import trainer as trainer_lib
from backends.common.errors import FieldError

KIND = "grpo"
DESCRIPTION = "Critic-free RLHF with TRL's GRPOTrainer (GRPO) or RLOOTrainer (RLOO), the reward model as reward."
_m = cfglib.meta
START_KINDS = modeling.POLICY_KINDS  # jobs whose result it may start from (a policy)
GRPO_LOSSES = ["dapo", "grpo", "dr_grpo", "bnpo"]
METRICS = ("eval_reward_mean", "eval_answer_length")
RENAMED = {"reward": "reward_mean", "completions/mean_length": "answer_len"}  # TRL's logged name -> the studio's RLHF name (PPO logs reward_mean too)
SAMPLES = "samples.jsonl"
SAMPLES_PER_STEP = 4


@dataclass
class OnlineRLFields(cfglib.PromptFields):
    """What GRPO and RLOO share on top of the RLHF prompt fields: group size, KL, sampling, clipping."""

    num_generations: int = field(default=4, metadata=_m(
        "training", "Answers per prompt", "每个提示的回答数",
        "Group size: answers sampled per prompt; each answer's advantage is measured against its group. The batch "
        "(batch size per device × gradient accumulation × processes) counts answers and must be a multiple of it.",
        "组大小：每个提示采样的回答数，每个回答的优势相对于同组回答计算。批大小（每设备批大小 × 梯度累积 × 进程数）"
        "按回答计数，必须是它的整数倍。", min=2, max=256, order=-1))
    beta: float = field(default=0.05, metadata=_m(
        "training", "KL coefficient", "KL 系数",
        "Pull towards the reference (the start policy): the KL penalty's weight (DS-Chat kl_ctl 0.1; TRL's RLOO "
        "0.05); 0 = no reference, no KL.",
        "向参考模型（初始策略）靠拢的强度，即 KL 惩罚的权重（DeepSpeed-Chat 的 kl_ctl 为 0.1，TRL 的 RLOO 为 0.05）；"
        "0 = 不用参考模型、不计算 KL。", min=0, max=10, order=-1))
    temperature: float = field(default=1.0, metadata=_m(
        "training", "Sampling temperature", "采样温度",
        "Temperature of the sampled answers (the held-out evaluation answers greedily).",
        "采样回答的温度（留出集评估使用贪心解码）。", min=0, min_exclusive=True, max=5, order=-1))
    epsilon: float = field(default=0.2, metadata=_m(
        "training", "Clip range", "裁剪范围",
        "Clipping of the policy ratio (DS-Chat cliprange 0.2).", "策略概率比的裁剪范围（DeepSpeed-Chat 的 cliprange 0.2）。",
        min=0, min_exclusive=True, max=10, order=-1))
    print_answers_interval: int = field(default=1, metadata=_m(
        "output", "Print answers every", "打印回答间隔",
        "Every N steps, sample prompts → answers → rewards go to the log and the samples table (samples.jsonl; "
        "DS-Chat --print_answers_interval); 0 = off.",
        "每 N 步把若干提示 → 回答 → 奖励写入日志和样例表（samples.jsonl；DeepSpeed-Chat 的 --print_answers_interval）；"
        "0 = 关闭。", min=0, max=1_000_000))
    learning_rate: float = cfglib.redefault(cfglib.TrainingFields, "learning_rate", 5e-5)
    max_seq_len: int = cfglib.redefault(cfglib.DataFields, "max_seq_len", 512, help=(
        "Not used by GRPO/RLOO: max_prompt_seq_len and max_answer_seq_len bound prompt and answer."),
        help_zh="GRPO/RLOO 不使用此项：提示和回答的长度由最大提示长度与最大回答长度限定。")


@dataclass
class GRPOArgs(cfglib.TrainingFields, cfglib.LoraFields, cfglib.JobFields, OnlineRLFields):
    """Options of the GRPO backend (TRL's GRPOTrainer)."""

    loss_type: str = field(default="dapo", metadata=_m(
        "training", "Loss", "损失类型",
        "How token losses are averaged (TRL): dapo = over the tokens of the whole batch (no length bias; TRL's "
        "default), grpo = per answer then over answers (the paper's), dr_grpo = over a constant, bnpo = over the "
        "local batch's tokens.",
        "词元损失的平均方式（TRL）：dapo = 对整个批次的词元平均（无长度偏差，TRL 默认），grpo = 先按回答再按回答数平均"
        "（论文原式），dr_grpo = 除以常数，bnpo = 对本地批次的词元平均。", choices=GRPO_LOSSES, order=-1))


@dataclass
class RLOOArgs(cfglib.TrainingFields, cfglib.LoraFields, cfglib.JobFields, OnlineRLFields):
    """Options of the RLOO backend (TRL's RLOOTrainer)."""

    normalize_advantages: bool = field(default=False, metadata=_m(
        "training", "Normalise advantages", "归一化优势",
        "Scale the leave-one-out advantages of each generation batch to mean 0, std 1 (TRL's normalize_advantages).",
        "把每个生成批次的留一优势缩放为均值 0、标准差 1（TRL 的 normalize_advantages）。", order=-1))


SCHEMA = GRPOArgs
SCHEMAS = {"grpo": GRPOArgs, "rloo": RLOOArgs}


def kind_of(cfg: Any) -> str:
    return "rloo" if isinstance(cfg, RLOOArgs) else "grpo"


# ------------------------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    job: runner.Job
    model: str          # the actor's base / full model folder (or hub id)
    adapter: str        # an SFT LoRA adapter the actor keeps training, or ""
    model_config: dict
    reward_model: str   # the reward model folder
    rm_template: str    # the template it was trained with ("" = unknown)
    datasets: list
    start_info: dict

    def __getattr__(self, name):
        return getattr(self.__dict__["job"], name)


def world_size() -> int:
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_batch(cfg: Any, world: int = 1) -> None:
    """TRL samples whole groups: the answers of one step (batch × accumulation × processes) must be a multiple of
    num_generations."""
    n = cfg.num_generations
    answers = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
    if answers % n:
        per_proc = cfg.gradient_accumulation_steps * world
        fix = next(b for b in range(cfg.per_device_train_batch_size, cfg.per_device_train_batch_size + n + 1)
                   if (b * per_proc) % n == 0)
        raise FieldError("num_generations", f"{cfg.per_device_train_batch_size} per device × "
                                            f"{cfg.gradient_accumulation_steps} accumulation × {world} process(es) = "
                                            f"{answers} answers per step is not a multiple of num_generations {n}: "
                                            "TRL samples whole groups of answers; set per_device_train_batch_size to "
                                            f"{fix} (or another multiple) or num_generations to a divisor of {answers}")


def check_context(cfg: Any, model_config: dict, what: str) -> None:
    ctx = model_config.get("max_position_embeddings")
    total = cfg.max_prompt_seq_len + cfg.max_answer_seq_len
    if isinstance(ctx, int) and total > ctx:
        raise FieldError("max_answer_seq_len", f"max_prompt_seq_len {cfg.max_prompt_seq_len} + max_answer_seq_len "
                                               f"{cfg.max_answer_seq_len} = {total} tokens exceed {what}'s context of "
                                               f"{ctx} (max_position_embeddings); lower one of them")


def resolve_reward_model(cfg: Any, dd: Path | None, actor_tokenizer: str) -> tuple[str, str]:
    """(reward model folder, its training template or ""), checked: set, a 1-label classifier, same tokenizer as the
    actor, trained with the same template."""
    path, rm_config, info = modeling.rlhf_reward_model(
        cfg.reward_model, dd, actor_tokenizer, cfg.model_name_or_path,
        why="the reward model scores the actor's rendered text")
    check_context(cfg, rm_config, "the reward model")
    template = str(info.get("template") or "")
    if template and template != cfg.template:
        raise FieldError("template", f"the reward model {cfg.reward_model} was trained with template {template}; "
                                     f"set template to {template} so it scores answers rendered as it learned")
    return path, template


def resolve(cfg: Any, job: runner.Job | None = None) -> Resolved:
    """Check every option against the files it names (config.json, tokenizer files, the prompt data; no weights)."""
    job = job or runner.resolve_job(cfg, kind_of(cfg))
    dd = job.data_dir
    model, adapter, info = modeling.start_model(cfg.model_name_or_path, dd, kinds=START_KINDS)
    model_config = modeling.check_model_dir(model, original=cfg.model_name_or_path)
    archs = [str(a) for a in model_config.get("architectures") or []]
    if info.get("kind") == "reward" or any(a.endswith("ForSequenceClassification") for a in archs):
        raise FieldError("model_name_or_path", f"{cfg.model_name_or_path} is a reward model (sequence "
                                               "classification), not a policy: the actor starts from an SFT result "
                                               "or a causal LM; the reward model goes in reward_model")
    if cfg.use_lora and not adapter:
        modeling.check_target_modules(model_config, modeling.parse_modules(cfg.lora_target_modules))
    if cfg.template == "chat" and not modeling.has_chat_template(adapter or model):
        raise FieldError("template", f"the model at {cfg.model_name_or_path} has no chat template; use dschat or plain")
    check_context(cfg, model_config, "the actor")
    check_batch(cfg, world_size())
    if cfg.precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("precision", "fp16 needs a CUDA GPU; use fp32 on CPU (bf16 works but is slow)")
    rm_path, rm_template = resolve_reward_model(cfg, dd, adapter or model)
    ds_paths = datalib.resolve_datasets(cfg.dataset, dd)
    datalib.parse_data_split(cfg.data_split)
    for p in ds_paths:
        columns, _ = datalib.peek(p, n=1)
        if cfg.prompt_column not in columns and "messages" not in columns:
            raise FieldError("prompt_column", f"{p.name} has no column {cfg.prompt_column!r} (its columns: "
                                              f"{', '.join(columns) or 'none'}); set prompt_column")
    return Resolved(job, model, adapter, model_config, rm_path, rm_template, ds_paths, info)


def validate_config(cfg: Any) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading a model."""
    resolve(runner.ensure_args(RLOOArgs, cfg) if isinstance(cfg, RLOOArgs) else runner.ensure_args(GRPOArgs, cfg))


def validate_rloo(cfg: Any) -> None:
    resolve(runner.ensure_args(RLOOArgs, cfg))


# --------------------------------------------------------------------------------------- reward
class RewardFunction:
    """TRL's reward function: the reward model's score of each prompt + answer (text in, floats out), rendered as
    the reward model was trained (the prompt already in the shared template, the answer as
    :func:`backends.common.data.format_answer` joins it); writes sample rows every `every` steps."""

    __name__ = "reward_model"  # TRL names the per-function metrics after it: rewards/reward_model/mean

    def __init__(self, path: str, template: str, *, device: str | None = None, batch_size: int = 0,
                 samples: Path | None = None, every: int = 0, log=trainer_lib.log):
        from backends.infer.chat import RewardScorer

        self.scorer = RewardScorer(path, device=device)
        self.template, self.batch_size = template, batch_size
        self.samples, self.every, self.log = samples, every, log
        self._written_step = -1

    def score(self, prompts: list[str], answers: list[str]) -> list[float]:
        texts = [self.scorer.text(p, a, self.template) for p, a in zip(prompts, answers)]
        return self.scorer.score_texts(texts, self.batch_size)

    def __call__(self, prompts, completions, trainer_state=None, **_kw) -> list[float]:
        scores = self.score(list(prompts), list(completions))
        step = int(getattr(trainer_state, "global_step", 0) or 0) + 1  # the step this rollout trains
        if self.every and self.samples is not None and step != self._written_step and (
                step == 1 or step % self.every == 0):
            self._written_step = step
            self.write_samples(step, prompts, completions, scores)
        return scores

    def write_samples(self, step: int, prompts, completions, scores) -> None:
        from backends.common.distributed import is_main_process

        if not is_main_process():
            return
        rows, seen = [], set()
        for p, c, s in zip(prompts, completions, scores):  # one answer per prompt of the batch
            if p not in seen and len(rows) < SAMPLES_PER_STEP:
                seen.add(p)
                rows.append({"step": step, "prompt": p, "answer": c, "reward": round(float(s), 4)})
        self.samples.parent.mkdir(parents=True, exist_ok=True)
        with open(self.samples, "a", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        for r in rows:
            self.log(f"sample step {step}: …{short(r['prompt'])!r} → {short(r['answer'], tail=False)!r} "
                     f"reward {r['reward']:.3f}")


def short(text: str, n: int = 120, *, tail: bool = True) -> str:
    """One line of at most n characters: the end of a rendered prompt (its question), the start of an answer."""
    text = " ".join(str(text).split())
    if len(text) <= n:
        return text
    return text[-n:] if tail else text[:n - 1] + "…"


# ---------------------------------------------------------------------------------------- trainer
def _trainer_class(kind: str):
    import torch
    import trl
    from trl.models import unwrap_model_for_generation

    base = trl.RLOOTrainer if kind == "rloo" else trl.GRPOTrainer

    class StudioTrainer(base):
        """TRL's trainer with the studio's metric names and a held-out evaluation of greedy answers scored by the
        reward model (instead of TRL's sampled eval loss)."""

        studio_reward: RewardFunction
        max_answer_len: int

        def log(self, logs, start_time=None):
            metrics = self._metrics["train" if self.model.training else "eval"]
            for old, new in RENAMED.items():
                if old in metrics:
                    metrics[new] = metrics.pop(old)
            super().log(logs, start_time)

        def greedy_answers(self, prompts: list[str]) -> tuple[list[str], list[int]]:
            tok = self.processing_class
            side, tok.padding_side = tok.padding_side, "left"
            eos = set(getattr(self, "eos_token_ids", None) or []) | {tok.eos_token_id}
            answers, lengths = [], []
            bs = max(1, self.args.per_device_eval_batch_size)
            try:
                with unwrap_model_for_generation(self.model_wrapped, self.accelerator) as model, torch.no_grad():
                    for i in range(0, len(prompts), bs):
                        enc = tok(prompts[i:i + bs], return_tensors="pt", padding=True, add_special_tokens=False)
                        enc = enc.to(self.accelerator.device)
                        out = model.generate(**enc, max_new_tokens=self.max_answer_len, do_sample=False,
                                             use_cache=True, pad_token_id=tok.pad_token_id,
                                             eos_token_id=sorted(t for t in eos if t is not None))
                        for row in out[:, enc["input_ids"].shape[1]:].tolist():
                            n = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
                            lengths.append(n)
                            answers.append(tok.decode(row[:n], skip_special_tokens=True))
            finally:
                tok.padding_side = side
            return answers, lengths

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            ds = eval_dataset if eval_dataset is not None else self.eval_dataset
            started = time.time()
            training = self.model.training
            self.model.eval()
            try:
                prompts = list(ds["prompt"])
                answers, lengths = self.greedy_answers(prompts)
                scores = self.studio_reward.score(prompts, answers)
                metrics = {f"{metric_key_prefix}_reward_mean": sum(scores) / len(scores),
                           f"{metric_key_prefix}_answer_length": sum(lengths) / len(lengths),
                           f"{metric_key_prefix}_runtime": round(time.time() - started, 4)}
                self.log(dict(metrics))  # eval mode: TRL adds no train metrics to it
            finally:
                self.model.train(training)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return StudioTrainer


def trl_config(cfg: Any, r: Resolved, *, has_eval: bool):
    import trl

    common = dict(**trainer_lib.training_kwargs(cfg, r, has_eval=has_eval),
                  num_generations=cfg.num_generations, num_generations_eval=1,  # the eval here answers greedily
                  max_completion_length=cfg.max_answer_seq_len, temperature=cfg.temperature, beta=cfg.beta,
                  epsilon=cfg.epsilon, pad_to_multiple_of=None, disable_dropout=True, log_completions=False)
    if isinstance(cfg, RLOOArgs):
        return trl.RLOOConfig(**common, normalize_advantages=cfg.normalize_advantages)
    return trl.GRPOConfig(**common, loss_type=cfg.loss_type)


def build_trainer(cfg: Any, r: Resolved, *, callbacks: list | None = None, log=trainer_lib.log):
    trainer_lib.quiet_libraries()
    kind = kind_of(cfg)
    check_batch(cfg, world_size())
    tokenizer = modeling.load_tokenizer(r.adapter or r.model)
    train_ds, eval_ds = datalib.load_prompt_data(cfg, r.datasets, tokenizer, phase=2,
                                                 log=lambda m: log(m.removeprefix("[studio] ")))
    has_eval = eval_ds is not None and len(eval_ds) > 0
    log(f"data: {', '.join(p.name for p in r.datasets)}: {len(train_ds)} train / {len(eval_ds) if has_eval else 0} "
        f"held-out prompts (template {cfg.template}), {cfg.num_generations} answers per prompt")
    args = trl_config(cfg, r, has_eval=has_eval)
    samples = Path(r.run_dir) / SAMPLES
    if not r.resume:
        samples.unlink(missing_ok=True)
    reward_fn = RewardFunction(r.reward_model, cfg.template, device=str(args.device),
                               batch_size=cfg.per_device_eval_batch_size, samples=samples,
                               every=cfg.print_answers_interval, log=log)
    model = dpo.load_model(cfg, r, trainer_lib.weights_dtype(cfg, r))
    peft = trainer_lib.peft_config(cfg) if cfg.use_lora and not r.adapter else None
    cls = _trainer_class(kind)
    trainer = cls(model=model, reward_funcs=reward_fn, args=args, train_dataset=train_ds,
                  eval_dataset=eval_ds if has_eval else None, processing_class=tokenizer, peft_config=peft,
                  callbacks=list(callbacks or []))
    trainer.studio_reward, trainer.max_answer_len = reward_fn, cfg.max_answer_seq_len
    for cb in callbacks or []:  # the log box's step line shows the rewards and the KL
        if hasattr(cb, "show_keys"):
            cb.show_keys = ("reward_mean", "kl", "eval_reward_mean")
    what = r.model + (f" + {Path(r.adapter).name} (SFT adapter, trained on)" if r.adapter and cfg.use_lora else "")
    trainer_lib.prepare(trainer, cfg, what, log=log)
    if cfg.beta == 0:
        ref = "none (beta 0: no KL)"
    elif getattr(trainer, "ref_model", None) is not None:
        ref = "a second frozen copy"
    else:
        ref = "the start adapter's frozen copy" if r.adapter and cfg.use_lora else "the adapter disabled"
    log(f"{kind}: reward model {r.reward_model}; reference: {ref}")
    return trainer


def train(cfg: Any, job: runner.Job | None = None, *, log=trainer_lib.log) -> dict[str, Any]:
    """Run GRPO (a GRPOArgs / mapping) or RLOO (an RLOOArgs); returns the end record (last line of metrics.jsonl)."""
    cfg = runner.ensure_args(GRPOArgs, cfg) if not isinstance(cfg, RLOOArgs) else runner.ensure_args(RLOOArgs, cfg)
    kind = kind_of(cfg)
    r = resolve(cfg, job)
    base_ref = r.start_info.get("base_model_ref") if r.adapter else cfg.model_name_or_path
    return trainer_lib.run(
        kind, cfg, r, lambda callbacks: build_trainer(cfg, r, callbacks=callbacks, log=log),
        start_info={"model": r.model, "adapter": r.adapter, "reward_model": r.reward_model,
                    "dataset": ",".join(map(str, r.datasets)), "template": cfg.template,
                    "num_generations": cfg.num_generations, "beta": cfg.beta},
        studio_info={"adapter": cfg.use_lora, "base_model": r.model, "base_model_ref": base_ref or r.model,
                     "start": cfg.model_name_or_path, "start_adapter": r.adapter, "algorithm": kind,
                     "reward_model": cfg.reward_model, "dataset": ",".join(map(str, r.datasets)),
                     "template": cfg.template},
        metrics_keys=METRICS, save_model=dpo.save_policy, log=log)


def train_rloo(cfg: Any, job: runner.Job | None = None, *, log=trainer_lib.log) -> dict[str, Any]:
    return train(runner.ensure_args(RLOOArgs, cfg), job, log=log)


def main(argv: list[str] | None = None, *, kind: str = KIND) -> int:
    run = train_rloo if kind == "rloo" else train
    return runner.main(kind, SCHEMAS[kind], run, argv, description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["KIND", "SCHEMA", "GRPOArgs", "RLOOArgs", "RewardFunction", "build_trainer", "main", "resolve", "train",
           "train_rloo", "validate_config", "validate_rloo"]
