"""`<run_dir>/metrics.jsonl` -- the file the UI's progress bar, ETA and plots read (job protocol, step 3).

One JSON object per line, flushed line by line, written by rank 0 only::

    {"event": "start", "time": ..., "total_steps": 30, "resumed_from_step": 0, ...run info}
    {"step": 0, "total_steps": 30, "epoch": 0.0, "loss": null, "eval_loss": 3.41, ...}   # eval before training
    {"step": 1, "total_steps": 30, "epoch": 0.02, "loss": 3.52, "eval_loss": null, "lr": 0.0002,
     "grad_norm": 1.9, "samples_per_s": 0.9, "tokens_per_s": 61.0, "tokens": 180, "elapsed": 4.2, "eta": 121.8,
     ...other numeric logs of the trainer (mean_token_accuracy, rewards/chosen, ...)}
    {"event": "end", "status": "completed" | "stopped", "final_loss": ..., "eval_loss": ..., ...}

`tokens_per_s` counts real tokens only (attention-mask ones, never padding), summed over all ranks: the
Trainer's `include_num_input_tokens_seen="non_padding"` gathers them each micro-batch; a backend that does not
use it can feed counts with :meth:`MetricsCallback.add_tokens` (see :func:`count_real_tokens`).
Each log step also prints a human line for the log box::

    step 3/30 loss 2.3100 lr 2.00e-04 | 412 tok/s 1.9 samples/s | 0m12s eta 1m20s
"""
from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from .distributed import sum_ranks

# Trainer log keys that are mapped to our own names or belong to the end-of-training summary.
_MAPPED = {"loss", "eval_loss", "learning_rate", "grad_norm", "epoch", "step", "num_input_tokens_seen", "num_tokens",
           "eval_num_tokens"}
_SUMMARY = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos", "train_loss",
            "train_tokens_per_second"}
_EVAL_SPEED = {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def count_real_tokens(batch: dict[str, Any]) -> int:
    """Non-padding tokens of a collated batch: attention-mask ones; padding-free/packed: the flattened length."""
    for key in ("attention_mask", "chosen_attention_mask", "prompt_attention_mask"):
        if key in batch and batch[key] is not None:
            total = int(batch[key].sum())
            if key == "chosen_attention_mask" and "rejected_attention_mask" in batch:
                total += int(batch["rejected_attention_mask"].sum())
            return total
    if "position_ids" in batch:
        return int(batch["position_ids"].numel())
    if "input_ids" in batch:
        return int(batch["input_ids"].numel())
    return 0


def fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "?"
    s = round(max(0.0, seconds))
    h, rem = divmod(s, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _num(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    if isinstance(x, (int, float)):
        return float(x) if math.isfinite(float(x)) else None
    try:  # 0-d tensors
        v = float(x)
        return v if math.isfinite(v) else None
    except (TypeError, ValueError):
        return None


def _round(x: float | None, nd: int = 6) -> float | None:
    return None if x is None else float(f"{x:.{nd}g}")


class MetricsWriter:
    """Appends JSON lines to a file (rank 0 only), one open/write/flush per line."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True, truncate: bool = False):
        self.path = Path(path)
        self.enabled = enabled
        self._checked_tail = False
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if truncate and self.path.exists():
                self.path.unlink()

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps(record, ensure_ascii=False, default=str)
        if not self._checked_tail:  # a run killed mid-line must not glue its torn line to ours
            self._checked_tail = True
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        line = "\n" + line
            except OSError:  # missing or empty file
                pass
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()


class MetricsCallback(TrainerCallback):
    """Writes metrics.jsonl and prints a human line per log step (rank 0 only).

    run_dir       where metrics.jsonl goes
    start_info    extra keys for the `start` line (model, dataset, recipe, sizes, ...)
    global_batch  samples per optimizer step over all ranks (per_device × grad_accum × world); if None it is
                  computed from the training arguments
    resume        append to an existing metrics.jsonl instead of starting a new one
    """

    def __init__(self, run_dir: str | os.PathLike, *, start_info: dict[str, Any] | None = None,
                 global_batch: int | None = None, resume: bool = False, is_main: bool | None = None,
                 print_fn: Callable[..., None] = print):
        self.run_dir = Path(run_dir)
        self.start_info = dict(start_info or {})
        self.global_batch = global_batch
        self.resume = resume
        self._is_main_override = is_main
        self.print = print_fn
        self.writer: MetricsWriter | None = None
        self.t_begin = time.time()
        self.step_at_begin = 0
        self.tokens_at_begin = 0
        self.total_steps = 0
        self._local_tokens = 0.0
        self._step_started: float | None = None
        self._win_time = 0.0  # compute seconds of the steps since the last train log line
        self._win_steps = 0
        self._win_tokens_start = 0.0
        self._all_time = 0.0
        # ETA inputs: wall seconds per step after the first one of this run, minus evaluations and saves
        # (each timed on its own and added for the ones still to come)
        self._last_end: float | None = None
        self._mark: float | None = None
        self._pause = 0.0
        self._step_times: list[float] = []
        self._eval_times: list[float] = []
        self._save_times: list[float] = []
        self._eval_every = 0
        self._save_every = 0
        self.last_loss: float | None = None
        self.last_eval_loss: float | None = None
        self.first_eval_loss: float | None = None
        self.summary: dict[str, Any] = {}
        self.show_keys: tuple[str, ...] = ()  # extra keys of a line shown in the human line (a loop's reward, kl)
        self.last_step = 0
        self.ended = False

    # -------------------------------------------------------------- helpers
    def _main(self, state) -> bool:
        if self._is_main_override is not None:
            return self._is_main_override
        return bool(getattr(state, "is_world_process_zero", True))

    def add_tokens(self, n: int) -> None:
        """Feed real-token counts when the trainer does not track `num_input_tokens_seen` (local rank)."""
        self._local_tokens += n

    def _tokens(self, state, *, collective: bool) -> float:
        seen = float(getattr(state, "num_input_tokens_seen", 0) or 0)
        if seen > 0:
            return seen
        return sum_ranks(self._local_tokens) if collective else self._local_tokens

    def _emit(self, record: dict[str, Any]) -> None:
        if self.writer is not None:
            self.writer.write(record)

    @staticmethod
    def _every(value: Any, total: int) -> int:
        """eval_steps / save_steps as a step count (a float < 1 is a fraction of the total, as in HF)."""
        v = _num(value)
        if not v or v <= 0:
            return 0
        return max(1, math.ceil(v * total)) if v < 1 else int(v)

    def _points_left(self, every: int, step: int, include_current: bool, final: bool) -> int:
        """How many multiples of `every` (and the last step when `final`) are still to come after `step`
        (or at it, when its own evaluation/save has not run yet)."""
        total = self.total_steps
        if not every or not total or step > total:
            return 0
        lo = step if include_current else step + 1
        n = max(0, total // every - (lo - 1) // every) if lo <= total else 0
        if final and total % every and total >= lo:
            n += 1
        return n

    def _eta(self, step: int, *, is_eval: bool = False) -> float | None:
        """Seconds left: mean step time after the first step of this run (its startup, the evaluation before
        it and its warm-up excluded) x steps left, plus the evaluations and saves still to come, each at its
        own measured duration. None until a second step has been timed."""
        if not self.total_steps or not self._step_times:
            return None
        recent = self._step_times[-20:]
        left = max(0, self.total_steps - step) * (sum(recent) / len(recent))
        if self._eval_times:
            evals = self._points_left(self._eval_every, step, include_current=not is_eval, final=True)
            left += evals * (sum(self._eval_times[-5:]) / len(self._eval_times[-5:]))
        if self._save_times:
            saves = self._points_left(self._save_every, step, include_current=True, final=False)
            left += saves * (sum(self._save_times[-5:]) / len(self._save_times[-5:]))
        return left

    # -------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, **kwargs):
        self.t_begin = time.time()
        self.step_at_begin = int(state.global_step or 0)
        self.last_step = self.step_at_begin
        self.total_steps = int(state.max_steps or 0)
        def strategy(name: str) -> str:
            v = getattr(args, name, "no")
            return str(getattr(v, "value", v))

        total = self.total_steps
        eval_steps, save_steps = getattr(args, "eval_steps", 0), getattr(args, "save_steps", 0)
        self._eval_every = self._every(eval_steps, total) if strategy("eval_strategy") == "steps" else 0
        self._save_every = self._every(save_steps, total) if strategy("save_strategy") == "steps" else 0
        self.tokens_at_begin = float(getattr(state, "num_input_tokens_seen", 0) or 0)
        self._win_tokens_start = self.tokens_at_begin
        if self.global_batch is None:
            world = int(getattr(args, "world_size", 1) or 1)
            self.global_batch = args.per_device_train_batch_size * args.gradient_accumulation_steps * world
        main = self._main(state)
        self.writer = MetricsWriter(self.run_dir / "metrics.jsonl", enabled=main,
                                    truncate=not self.resume and self.step_at_begin == 0)
        rec = {"event": "start", "time": time.time(), "total_steps": self.total_steps,
               "resumed_from_step": self.step_at_begin, "global_batch": self.global_batch,
               "world_size": int(getattr(args, "world_size", 1) or 1), **self.start_info}
        self._emit(rec)
        if main:
            what = f"resuming at step {self.step_at_begin}" if self.step_at_begin else "starting"
            self.print(f"[studio] training {what}: {self.total_steps} steps, global batch {self.global_batch}",
                       flush=True)
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self._step_started = time.time()
        return control

    def on_step_end(self, args, state, control, **kwargs):
        now = time.time()
        if self._last_end is not None:  # the first step of a run is not timed (startup, warm-up)
            self._step_times.append(max(0.0, now - self._last_end - self._pause))
        self._last_end = self._mark = now
        self._pause = 0.0
        if self._step_started is not None:
            dt = time.time() - self._step_started
            self._win_time += dt
            self._all_time += dt
            self._win_steps += 1
            self._step_started = None
        self.last_step = int(state.global_step)
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        step = int(state.global_step or 0)
        main = self._main(state)
        if any(k in logs for k in _SUMMARY) and "loss" not in logs:
            self.summary.update({k: v for k, v in logs.items() if _num(v) is not None})
            return control
        is_eval = "eval_loss" in logs or any(k.startswith("eval_") for k in logs)
        # every rank calls on_log at the same points, so the token all-reduce below is safe
        tokens = self._tokens(state, collective=True)
        rec: dict[str, Any] = {
            "step": step,
            "total_steps": self.total_steps or int(state.max_steps or 0),
            "epoch": _round(_num(logs.get("epoch", state.epoch)), 4),
            "loss": None, "eval_loss": None, "lr": None, "grad_norm": None,
            "samples_per_s": None, "tokens_per_s": None, "tokens": int(tokens),
        }
        if is_eval:
            runtime = _num(logs.get("eval_runtime"))
            if runtime is not None:
                self._eval_times.append(runtime)
                self._pause += runtime
            self._mark = time.time()
            rec["eval_loss"] = _round(_num(logs.get("eval_loss")))
            if rec["eval_loss"] is not None:
                self.last_eval_loss = rec["eval_loss"]
                if self.first_eval_loss is None:
                    self.first_eval_loss = rec["eval_loss"]
        else:
            rec["loss"] = _round(_num(logs.get("loss")))
            rec["lr"] = _round(_num(logs.get("learning_rate")))
            rec["grad_norm"] = _round(_num(logs.get("grad_norm")))
            if rec["loss"] is not None:
                self.last_loss = rec["loss"]
            if self._win_time > 0 and self._win_steps > 0:
                rec["samples_per_s"] = _round(self._win_steps * (self.global_batch or 0) / self._win_time, 4)
                rec["tokens_per_s"] = _round((tokens - self._win_tokens_start) / self._win_time, 5)
            self._win_time, self._win_steps, self._win_tokens_start = 0.0, 0, tokens
        for k, v in logs.items():
            if k in _MAPPED or k in rec or k in _SUMMARY or k in _EVAL_SPEED:
                continue
            n = _num(v)
            if n is not None:
                rec[k] = _round(n)
        elapsed = time.time() - self.t_begin
        eta = self._eta(step, is_eval=is_eval)
        rec["elapsed"] = round(elapsed, 2)
        rec["eta"] = None if eta is None else round(eta, 1)
        rec["time"] = round(time.time(), 3)
        self._emit(rec)
        if main:
            self.print(self.human_line(rec, eval_runtime=_num(logs.get("eval_runtime"))), flush=True)
        return control

    def human_line(self, rec: dict[str, Any], eval_runtime: float | None = None) -> str:
        total = rec.get("total_steps") or "?"
        parts = [f"step {rec['step']}/{total}"]
        if rec.get("loss") is not None:
            parts.append(f"loss {rec['loss']:.4f}")
        if rec.get("eval_loss") is not None:
            parts.append(f"eval_loss {rec['eval_loss']:.4f}")
            if eval_runtime is not None:
                parts.append(f"(eval {eval_runtime:.1f}s)")
        if rec.get("lr") is not None:
            parts.append(f"lr {rec['lr']:.2e}")
        for k in self.show_keys:
            if isinstance(rec.get(k), (int, float)):
                parts.append(f"{k} {rec[k]:.4g}")
        speed = []
        if rec.get("tokens_per_s") is not None:
            speed.append(f"{rec['tokens_per_s']:.0f} tok/s")
        if rec.get("samples_per_s") is not None:
            speed.append(f"{rec['samples_per_s']:.2f} samples/s")
        line = " ".join(parts)
        if speed:
            line += " | " + " ".join(speed)
        line += f" | {fmt_duration(rec.get('elapsed'))} eta {fmt_duration(rec.get('eta'))}"
        return line

    def on_save(self, args, state, control, **kwargs):
        now = time.time()
        if self._mark is not None:
            self._save_times.append(max(0.0, now - self._mark))
            self._pause += self._save_times[-1]
        self._mark = now
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.last_step = int(state.global_step or 0)
        return control

    def end_record(self, status: str | None = None, **extra: Any) -> dict[str, Any]:
        step = self.last_step
        if status is None:
            status = "completed" if (self.total_steps and step >= self.total_steps) else "stopped"
        elapsed = time.time() - self.t_begin
        rec = {
            "event": "end", "status": status, "step": step, "total_steps": self.total_steps,
            "final_loss": self.last_loss, "eval_loss": self.last_eval_loss,
            "first_eval_loss": self.first_eval_loss,
            "train_loss": _round(_num(self.summary.get("train_loss"))),
            "train_runtime": _round(_num(self.summary.get("train_runtime"))),
            "elapsed": round(elapsed, 2), "time": round(time.time(), 3),
        }
        if self._all_time > 0:
            steps = step - self.step_at_begin
            rec["steps_per_s"] = _round(steps / self._all_time, 4)
        rec.update(extra)
        return rec

    def write_end(self, status: str | None = None, **extra: Any) -> dict[str, Any]:
        """The last line, `{"event": "end", ...}`; call it after the output is saved (once)."""
        rec = self.end_record(status, **extra)
        if not self.ended:
            self.ended = True
            self._emit(rec)
            if self.writer is not None and self.writer.enabled:
                fl = rec["final_loss"]
                el = rec["eval_loss"]
                self.print(f"[studio] {rec['status']} at step {rec['step']}/{rec['total_steps']}"
                           f" final loss {fl if fl is None else f'{fl:.4f}'}"
                           f" eval_loss {el if el is None else f'{el:.4f}'}", flush=True)
        return rec


class FinalEvalCallback(TrainerCallback):
    """Evaluate after the last step too (not only every `eval_steps`), so the end line has a fresh eval_loss."""

    def on_step_end(self, args, state, control, **kwargs):
        strategy = getattr(args.eval_strategy, "value", args.eval_strategy)
        if state.max_steps and state.global_step >= state.max_steps and strategy != "no":
            control.should_evaluate = True
        return control


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl (skips a torn last line)."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
