"""Batch A/B evaluation: the base model and a fine-tuned result answer the same prompts, a reward model judges.

    python -m backends.ab_eval --config FILE [--field value ...]

DeepSpeed-Chat's `prompt_eval.py` (base vs fine-tuned answers printed one after the other), made a job: every
prompt of a file (or typed lines) is rendered with one template for both sides and answered through the chat
A/B core (`backends.infer.chat`: a LoRA result shares one copy of its base, and the two answers run at
once on a CPU or in one batch on a GPU, see `chat.pair_mode`); an optional one-label reward model scores both answers. Everything goes to `run_dir`:
metrics.jsonl (one line per prompt: step/total_steps, so the Jobs tab shows progress and ETA) and output/:

    results.jsonl, results.csv   prompt, answer_a, answer_b, reward_a, reward_b, winner (A | B | tie | "")
    summary.json                 wins/ties, win rate of B, mean reward difference, 95% bootstrap intervals
    studio.json                  kind ab_eval, the sides, template, settings

Side A is the base, side B the fine-tuned result. Without a reward model the answers are still written side
by side, and the winner column and the win rates stay empty (they need a judge). Runs in one process: the
engine's default launch for this kind is the "python" launcher, cpu preset (app/jobs/launcher.py
KIND_LAUNCH_DEFAULTS). Exit codes: 0 done, 2 bad option (the message names the field), 128+signal after a stop
on SIGTERM/SIGINT (the current prompt is finished and the partial results and summary are written first,
status "stopped").
"""
from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, runner
from backends.common.errors import FieldError

KIND = "ab_eval"
TEMPLATE_CHOICES = ["auto", *datalib.TEMPLATES]
WINNERS = ("A", "B", "tie", "")
RESULT_COLUMNS = ["prompt", "answer_a", "answer_b", "reward_a", "reward_b", "winner"]
NEEDS_REWARD = "win rates need a reward model: set reward_model to a one-label sequence-classification folder"


_m = cfglib.meta


@dataclass
class ABEvalArgs(cfglib.GenerationFields, cfglib.JobFields):
    """Options of the A/B evaluation backend: one declaration for the CLI, config.yaml, the UI form and the README."""

    # ---------------------------------------------------------------------------------------- model
    base_model: str = field(default="bundled:smollm2", metadata=_m(
        "model", "Base model (A)", "基础模型（A）",
        "Side A: a local Hugging Face model folder, `bundled:smollm2`, or a hub id when online. A LoRA result "
        "must have been trained on this base.",
        "A 侧：本地 Hugging Face 模型目录、`bundled:smollm2`，联网时也可填 Hub 模型名。LoRA 结果必须是在此基础模型上训练的。",
        widget="model"))
    finetuned: str = field(default="", metadata=_m(
        "model", "Fine-tuned (B)", "微调结果（B）",
        "Side B: a training result (runs/<id>/output, a LoRA adapter or a full model), `job:<id>`, or a model "
        "folder.",
        "B 侧：训练结果（runs/<id>/output，LoRA 适配器或完整模型）、`job:<id>`，或模型目录。", widget="result"))
    reward_model: str = field(default="", metadata=_m(
        "model", "Reward model (judge)", "奖励模型（评判）",
        "Optional folder of a sequence-classification model with one label (e.g. a reward-model job's output); "
        "it scores both answers and decides the winner. Empty = answers only, no win rates.",
        "可选：单标签序列分类模型的目录（如奖励模型任务的输出），为两个回答打分并判定胜者。留空 = 只生成回答，不计算胜率。",
        widget="model"))
    # ----------------------------------------------------------------------------------------- data
    prompts: str = field(default="presets/datasets/demo_prompts.jsonl", metadata=_m(
        "data", "Prompts", "提示集",
        "A studio dataset or a .jsonl/.json/.csv/.tsv/.parquet file with a prompt column. With a data dir (the "
        "studio always sets one) it must be inside it or a bundled sample: relative paths are tried in "
        "<data-dir>/datasets, the data dir, the project root; without one also the working dir.",
        "工作室数据集，或含提示列的 .jsonl/.json/.csv/.tsv/.parquet 文件。设置了数据目录时（工作室总会设置）必须位于其中"
        "或为内置示例：相对路径依次在 <数据目录>/datasets、数据目录、项目根目录中查找；未设置时也查找工作目录。", widget="file", dataset_kind="prompt"))
    prompt_column: str = field(default="prompt", metadata=_m(
        "data", "Prompt column", "提示列", "Column of the prompts file that holds the prompt.",
        "提示文件中存放提示的列名。"))
    prompt_lines: str = field(default="", metadata=_m(
        "data", "Prompts (typed)", "提示（直接输入）",
        "One prompt per line; when not empty these are used instead of the prompts file.",
        "每行一个提示；不为空时代替提示文件使用。", widget="textbox"))
    max_prompts: int = field(default=10, metadata=_m(
        "data", "Max prompts", "最多提示数", "Evaluate the first N prompts.", "只评测前 N 个提示。",
        min=1, max=1_000_000))
    template: str = field(default="auto", metadata=_m(
        "data", "Prompt template", "提示模板",
        "Used for both sides. auto = the template the fine-tuned side was trained with (its studio.json), else "
        "the model's chat template; chat; dschat = `Human: …\\n\\nAssistant:`; plain.",
        "两侧使用同一模板。auto = 微调结果训练时的模板（见其 studio.json），否则用模型自带的对话模板；chat；"
        "dschat = `Human: …\\n\\nAssistant:`；plain。", choices=TEMPLATE_CHOICES))
    # generation (max_new_tokens, sampling, seed) and the engine-owned fields: inherited (backends/common/config.py)
    # ------------------------------------------------------------------------------------- scoring
    tie_margin: float = field(default=0.0, metadata=_m(
        "output", "Tie margin", "平局阈值",
        "|reward B − reward A| at or below this is a tie.", "|奖励 B − 奖励 A| 不超过此值时记为平局。",
        min=0, max=1e6))
    bootstrap_samples: int = field(default=1000, metadata=_m(
        "output", "Bootstrap samples", "自助抽样次数",
        "Resamples of the prompts for the 95% intervals of the win rate and mean reward difference (0 = no "
        "intervals).", "对提示重抽样的次数，用于计算胜率和平均奖励差的 95% 置信区间（0 = 不计算）。",
        min=0, max=1_000_000))
    bootstrap_seed: int = field(default=0, metadata=_m(
        "output", "Bootstrap seed", "自助抽样种子", "Seed of the resampling (same seed, same intervals).",
        "重抽样的随机种子（种子相同，区间相同）。", min=0, max=2**32 - 1))


SCHEMA = ABEvalArgs  # the one declaration of this kind's options (app/docs.py, the tabs read it)


# ------------------------------------------------------------------------------------- resolving
@dataclass
class Resolved:
    data_dir: Path | None
    base: Any           # chat.Side
    tuned: Any          # chat.Side
    reward_model: str   # resolved folder or ""
    prompts: list[str]
    prompts_source: str
    settings: Any       # chat.GenSettings
    run_dir: Path
    output_dir: Path


def _ensure_args(cfg: ABEvalArgs | dict) -> ABEvalArgs:
    return runner.ensure_args(ABEvalArgs, cfg)








def settings_of(cfg: ABEvalArgs):
    from backends.infer import chat

    return chat.GenSettings(**{n: getattr(cfg, n) for n in cfglib.field_names(cfglib.GenerationFields)}).validated()


def load_prompts(cfg: ABEvalArgs, data_dir: Path | None) -> tuple[list[str], str]:
    """(the first max_prompts prompts, where they came from): the typed lines, else the prompts file's column
    (a studio row with a `history` gives its turns, rendered by chat.render like a training prompt)."""
    if cfg.prompt_lines.strip():
        lines = [ln.strip() for ln in cfg.prompt_lines.splitlines() if ln.strip()]
        return lines[:cfg.max_prompts], "prompt_lines"
    path = datalib.resolve_dataset(cfg.prompts, data_dir, field="prompts")
    table = datalib.read_table(path, field="prompts")
    if cfg.prompt_column not in table.columns:
        raise FieldError("prompt_column", f"{path.name} has no column {cfg.prompt_column!r}; its columns are "
                                          f"{', '.join(map(str, table.columns)) or 'none'}")
    out: list = []
    for row in table.rows:
        v = row.get(cfg.prompt_column)
        if isinstance(v, str) and v.strip() and row.get("history"):  # a multi-turn studio row: all its turns
            out.append(datalib.row_turns(row, None, prompt_column=cfg.prompt_column))
            if len(out) >= cfg.max_prompts:
                break
        elif isinstance(v, str) and v.strip():
            out.append(v.strip())
            if len(out) >= cfg.max_prompts:
                break
        elif v is not None and not isinstance(v, str):
            raise FieldError("prompt_column", f"{path.name}: the {cfg.prompt_column!r} column must hold text, "
                                              f"got {type(v).__name__}")
    if not out:
        raise FieldError("prompts", f"{path.name} has no non-empty {cfg.prompt_column!r} values")
    return out, str(path)


def resolve(cfg: ABEvalArgs) -> Resolved:
    """Check every option against the files it names (cheap: config.json files and the prompts file only)."""
    from backends.infer import chat

    if cfg.deepspeed:
        raise FieldError("deepspeed", "A/B evaluation runs in one process without DeepSpeed: choose no ZeRO stage "
                                      "(the python launcher, cpu preset)")
    job = runner.resolve_job(cfg, "ab-eval", checkpoints=False)
    dd, run_dir = job.data_dir, job.run_dir

    base = chat.resolve_side(cfg.base_model, dd, field="base_model")
    if base.kind != "model":
        raise FieldError("base_model", f"{cfg.base_model} is a LoRA adapter; give its base model here and the "
                                       "adapter as the fine-tuned side")
    tuned = chat.resolve_side(cfg.finetuned, dd, field="finetuned")
    chat.check_pair(base, tuned)
    template = cfg.template  # what chat.pick_template will choose, known here without a tokenizer
    if template == "auto":
        template = tuned.template or ("chat" if modeling.has_chat_template(tuned.model_path) else "dschat")
        if template not in datalib.TEMPLATES:
            raise FieldError("template", f"the fine-tuned side was trained with the template {template!r}; "
                                         f"choose one of {', '.join(datalib.TEMPLATES)}")
    if template == "chat":
        for name, side in (("base_model", base), ("finetuned", tuned)):
            if not modeling.has_chat_template(side.model_path):
                raise FieldError("template", f"the {name} model at {side.model_path} has no chat template; use "
                                             "dschat or plain")
    settings = settings_of(cfg)

    reward = ""
    if cfg.reward_model.strip():
        reward = modeling.resolve_model(cfg.reward_model, dd, field="reward_model")
        rp = Path(reward)
        if not rp.is_dir():
            raise FieldError("reward_model", f"folder not found: {cfg.reward_model}")
        modeling.check_model_dir(reward, field="reward_model", original=cfg.reward_model)
        if not chat.is_reward_model(rp):
            try:
                mc = json.loads((rp / "config.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                mc = {}
            archs = ", ".join(mc.get("architectures") or []) or "none"
            n = len(mc.get("id2label") or {"0": ""})
            raise FieldError("reward_model", f"{cfg.reward_model} is not a reward model (architectures: {archs}, "
                                             f"{n} label{'s' if n != 1 else ''}); give a sequence-classification "
                                             "model with one label, or leave it empty")
        reward = str(rp.resolve())

    prompts, source = load_prompts(cfg, dd)
    return Resolved(dd, base, tuned, reward, prompts, source, settings, run_dir, run_dir / "output")


def validate_config(cfg: ABEvalArgs | dict) -> None:
    """Raise FieldError(field, message) for the first bad option, without loading a model.

    Reads the sides' config.json / adapter_config.json / studio.json, the reward model's config.json and the
    prompts file, so the UI can call it before queuing a job. Accepts an ABEvalArgs or a dict of field values
    (strings from a form are fine).
    """
    resolve(_ensure_args(cfg))


# ------------------------------------------------------------------------------------ statistics
def winner_of(reward_a: float | None, reward_b: float | None, tie_margin: float) -> str:
    """'B' when B's reward beats A's by more than the margin, 'A' the other way, 'tie' within it, '' unscored."""
    if reward_a is None or reward_b is None:
        return ""
    d = float(reward_b) - float(reward_a)
    if abs(d) <= tie_margin:
        return "tie"
    return "B" if d > 0 else "A"


def _r(x: float | None, nd: int = 6) -> float | None:
    # round() is monotone, so a rounded interval still brackets the rounded estimate
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def summarize(rows: list[dict], tie_margin: float = 0.0, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Win/tie counts and rates of side B over side A, the mean reward difference (B − A), and their 95%
    percentile-bootstrap intervals over prompts (numpy RandomState(seed), n_boot resamples).

    rows: dicts with reward_a and reward_b (floats, or None when there is no reward model). Rows without both
    rewards are not scored; with none scored every rate is None and `note` says a reward model is needed.
    """
    import numpy as np

    n = len(rows)
    scored = [(float(r["reward_a"]), float(r["reward_b"])) for r in rows
              if r.get("reward_a") is not None and r.get("reward_b") is not None]
    out: dict[str, Any] = {
        "n": n, "n_scored": len(scored), "tie_margin": tie_margin,
        "wins_a": None, "wins_b": None, "ties": None,
        "win_rate_a": None, "win_rate_b": None, "tie_rate": None,
        "mean_reward_a": None, "mean_reward_b": None, "mean_reward_diff": None,
        "ci95_mean_diff": None, "ci95_win_rate_b": None,
        "bootstrap_samples": int(n_boot), "bootstrap_seed": int(seed),
    }
    if not scored:
        out["note"] = NEEDS_REWARD if n else "no prompt was evaluated"
        return out
    m = len(scored)
    a = np.array([s[0] for s in scored], dtype=np.float64)
    b = np.array([s[1] for s in scored], dtype=np.float64)
    diff = b - a
    winners = [winner_of(x, y, tie_margin) for x, y in scored]
    win_b = np.array([w == "B" for w in winners], dtype=np.float64)
    wins_a, wins_b = winners.count("A"), winners.count("B")
    ties = winners.count("tie")
    mean_diff = float(diff.mean())
    out.update(wins_a=wins_a, wins_b=wins_b, ties=ties, win_rate_a=_r(wins_a / m), win_rate_b=_r(wins_b / m),
               tie_rate=_r(ties / m), mean_reward_a=_r(float(a.mean())), mean_reward_b=_r(float(b.mean())),
               mean_reward_diff=_r(mean_diff))
    if n_boot > 0:
        rs = np.random.RandomState(seed)
        idx = rs.randint(0, m, size=(int(n_boot), m))
        boot_diff = diff[idx].mean(axis=1)
        boot_win = win_b[idx].mean(axis=1)
        lo_d, hi_d = np.percentile(boot_diff, [2.5, 97.5])
        lo_w, hi_w = np.percentile(boot_win, [2.5, 97.5])
        out["ci95_mean_diff"] = [_r(lo_d), _r(hi_d)]
        out["ci95_win_rate_b"] = [_r(lo_w), _r(hi_w)]
    return out


# ------------------------------------------------------------------------------------------- run
def _log(msg: str) -> None:
    print(f"[studio] {msg}", flush=True)


def _short(text: str, n: int = 60) -> str:
    t = " ".join(str(text).split())
    return t if len(t) <= n else t[:n - 1] + "…"


def _write_results(output_dir: Path, rows: list[dict]) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    tmp = output_dir / "results.jsonl.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    os.replace(tmp, output_dir / "results.jsonl")
    tmp = output_dir / "results.csv.tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=RESULT_COLUMNS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else (repr(r[k]) if isinstance(r[k], float) else r[k]))
                        for k in RESULT_COLUMNS})
    os.replace(tmp, output_dir / "results.csv")


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def evaluate(cfg: ABEvalArgs | dict, *, log=_log) -> dict[str, Any]:
    """Run the evaluation as configured; returns the summary (with `status` and `exit_code`)."""
    from backends.common import distributed as dist
    from backends.common.metrics import MetricsWriter, fmt_duration

    cfg = _ensure_args(cfg)
    from backends.common.distributed import StopOnSignal

    # before the slow parts: a Stop while loading exits at once; during the loop the prompt under way is finished
    stopper = StopOnSignal(save=False)
    if dist.world_size() > 1:
        raise FieldError("num_processes", "A/B evaluation runs in one process; use the python launcher with the "
                                          "cpu preset (or one process of accelerate)")
    r = resolve(cfg)
    threads = dist.set_threads()
    from backends.infer import chat

    if threads >= 2 and chat.shares_weights(r.base, r.tuned) and not r.settings.do_sample:
        import torch

        # half the budget per side: on a CPU the pair then runs as two 1-row streams at once (chat.pair_mode),
        # which beats one 2-row batch there; decoding is bound by memory bandwidth, not by threads
        torch.set_num_threads(threads // 2)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    import warnings

    warnings.filterwarnings("ignore", message=".*generation flags are not valid.*")

    started = time.time()
    n = len(r.prompts)
    writer = MetricsWriter(r.run_dir / "metrics.jsonl", truncate=True)
    r.output_dir.mkdir(parents=True, exist_ok=True)
    for name in ("results.jsonl", "results.csv", "summary.json"):  # a re-run in the same folder starts clean
        (r.output_dir / name).unlink(missing_ok=True)
    log(f"ab_eval: run_dir {r.run_dir}, {n} prompt(s) from {r.prompts_source}, threads {threads}")
    log(f"A (base): {r.base.label} [{r.base.model_path}]")
    log(f"B (fine-tuned): {r.tuned.label} [{r.tuned.adapter_path or r.tuned.model_path}]")

    # load both sides (cached), pick the one template, render every prompt and check its length first
    model_a, tok_a, _, _ = chat.CACHE.get(r.base)
    model_b, tok_b, _, _ = chat.CACHE.get(r.tuned)
    if chat.shares_weights(r.base, r.tuned):
        import torch

        mode = chat.turn_mode(r.base, r.tuned, r.settings)
        how = "two 1-row streams at once" if mode == "parallel" else "one batch, the base row with the adapter off"
        log(f"LoRA on the same base: one copy of the weights; each pair runs {mode} ({how}, "
            f"{torch.get_num_threads()} torch thread(s) per generate)")
    template = chat.pick_template(cfg.template, r.tuned, tok_b)
    texts = []
    for i, p in enumerate(r.prompts, 1):
        ta, tb = chat.render([], p, template, tok_a), chat.render([], p, template, tok_b)
        for model, tok, text in ((model_a, tok_a, ta), (model_b, tok_b, tb)):
            try:
                chat.check_length(tok, model, [text], r.settings.max_new_tokens)
            except FieldError as e:
                field_name = "max_new_tokens" if e.field == "max_new_tokens" else "prompts"
                raise FieldError(field_name, f"prompt {i}: {e.message}") from None
        texts.append((ta, tb))
    scorer = chat.scorer(r.reward_model, r.data_dir) if r.reward_model else None
    log(f"template {template}; {'greedy' if not r.settings.do_sample else 'sampling'}, max_new_tokens "
        f"{r.settings.max_new_tokens}; reward model: {r.reward_model or 'none (answers only)'}; "
        f"loaded in {time.time() - started:.1f}s")

    info = {"kind": KIND, "recipe": cfg.recipe, "base": r.base.model_path, "base_ref": cfg.base_model,
            "finetuned": r.tuned.adapter_path or r.tuned.model_path, "finetuned_ref": cfg.finetuned,
            "reward_model": r.reward_model or None, "template": template, "prompts": r.prompts_source,
            "settings": {k: getattr(r.settings, k) for k in ("max_new_tokens", "do_sample", "temperature", "top_p",
                                                             "top_k", "repetition_penalty", "seed")}}
    writer.write({"event": "start", "time": round(time.time(), 3), "total_steps": n, "pid": os.getpid(), **info})

    rows: list[dict] = []
    loop_started = time.time()
    stopper.begin()
    for i, prompt in enumerate(r.prompts, 1):
        if stopper.stopped:
            break
        stopper.step_started()
        ta, tb = texts[i - 1]
        t0 = time.time()
        answer_a, answer_b = chat.answer_pair(chat.Pair(r.base, r.tuned, ta, tb), r.settings)
        # an answer cut by max_new_tokens inside a multi-byte character ends in U+FFFD: drop that torn tail
        answer_a, answer_b = answer_a.rstrip("\ufffd").rstrip(), answer_b.rstrip("\ufffd").rstrip()
        reward_a = reward_b = None
        if scorer is not None:
            # one shared context for both answers (the fine-tuned side's rendering of the prompt)
            reward_a, reward_b = scorer.score(tb, [answer_a, answer_b], template)
        row = {"prompt": prompt, "answer_a": answer_a, "answer_b": answer_b, "reward_a": reward_a,
               "reward_b": reward_b, "winner": winner_of(reward_a, reward_b, cfg.tie_margin)}
        rows.append(row)
        with open(r.output_dir / "results.jsonl", "a", encoding="utf-8") as fh:  # survives a kill
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        elapsed = time.time() - loop_started
        eta = elapsed / i * (n - i)
        scored = [x for x in rows if x["winner"]]
        rec = {"step": i, "total_steps": n, "prompt_seconds": round(time.time() - t0, 3),
               "reward_a": reward_a, "reward_b": reward_b,
               "reward_diff": None if reward_a is None else reward_b - reward_a,
               "win_rate_b": (sum(x["winner"] == "B" for x in scored) / len(scored)) if scored else None,
               "same_answer": answer_a == answer_b, "elapsed": round(elapsed, 2), "eta": round(eta, 1),
               "time": round(time.time(), 3)}
        writer.write(rec)
        verdict = (f" | reward A {reward_a:.3f} B {reward_b:.3f} → {row['winner']}"
                   if reward_a is not None else "")
        log(f"prompt {i}/{n} {_short(prompt, 40)!r} | A: {_short(answer_a)!r} | B: {_short(answer_b)!r}{verdict}"
            f" | {fmt_duration(elapsed)} eta {fmt_duration(eta)}")
        stopper.step_finished()
    stopper.end()

    status = "stopped" if stopper.stopped else "completed"
    summary = {"status": status, **summarize(rows, cfg.tie_margin, cfg.bootstrap_samples, cfg.bootstrap_seed),
               "total_prompts": n, **info, "wall_time": round(time.time() - started, 2)}
    _write_results(r.output_dir, rows)
    _write_json(r.output_dir / "summary.json", summary)
    modeling.write_studio_json(r.output_dir, {
        "kind": KIND, "adapter": False, "recipe": cfg.recipe, "status": status,
        "base_model": r.base.model_path, "base_model_ref": cfg.base_model,
        "finetuned": info["finetuned"], "finetuned_ref": cfg.finetuned, "reward_model": r.reward_model or None,
        "prompts": r.prompts_source, "template": template, "hyperparameters": cfglib.to_dict(cfg),
        "metrics": {k: summary.get(k) for k in ("n", "wins_a", "wins_b", "ties", "win_rate_b", "tie_rate",
                                                 "mean_reward_diff", "ci95_mean_diff", "ci95_win_rate_b")},
    })
    end = {"event": "end", "status": status, "step": len(rows), "total_steps": n,
           **{k: summary.get(k) for k in ("wins_a", "wins_b", "ties", "win_rate_b", "tie_rate", "mean_reward_diff",
                                          "ci95_mean_diff", "ci95_win_rate_b")},
           "output_dir": str(r.output_dir), "elapsed": round(time.time() - loop_started, 2),
           "wall_time": summary["wall_time"], "time": round(time.time(), 3)}
    writer.write(end)
    if summary["win_rate_b"] is not None:
        ci = summary["ci95_win_rate_b"] or [None, None]
        log(f"{status}: {len(rows)}/{n} prompts; B wins {summary['wins_b']}, A wins {summary['wins_a']}, ties "
            f"{summary['ties']}; win rate B {summary['win_rate_b']:.2f} (95% CI {ci[0]} – {ci[1]}), mean reward "
            f"diff {summary['mean_reward_diff']:+.4f}")
    else:
        log(f"{status}: {len(rows)}/{n} prompts answered; {summary.get('note', '')}")
    log(f"results: {r.output_dir / 'results.csv'}")
    summary["exit_code"] = stopper.exit_code if stopper.stopped else 0
    return summary


# --------------------------------------------------------------------------------------------- CLI
DESCRIPTION = "Batch A/B evaluation: base vs fine-tuned answers, judged by a reward model."


def parse_args(argv: list[str] | None = None) -> ABEvalArgs:
    return runner.parse_args(ABEvalArgs, argv, kind=KIND, description=DESCRIPTION)


def main(argv: list[str] | None = None) -> int:
    return runner.main(KIND, ABEvalArgs, lambda cfg, job: evaluate(cfg), argv, description=DESCRIPTION,
                       checkpoints=False)


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "KIND",
    "SCHEMA",
    "ABEvalArgs",
    "evaluate",
    "load_prompts",
    "main",
    "resolve",
    "summarize",
    "validate_config",
    "winner_of",
]
