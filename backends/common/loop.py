"""Stop, metrics and checkpoints for hand-written training loops (PPO, SD distillation), from the runner's parts.

HF Trainer recipes get these from backends/common/trainer.py; a loop that is not a Trainer uses :class:`Loop`::

    loop = Loop(kind, cfg, job, total_steps=n, global_batch=b, save_every=cfg.save_steps,
                save_total_limit=cfg.save_total_limit, start_info={...})
    state = loop.resume_state()                 # {} or the studio-state.json of the checkpoint resumed from
    step = loop.begin(state.get("step", 0))     # a Stop before the first step exits here (nothing to save)
    while step < n:
        with loop.step():                       # a Stop inside finishes the step first
            ... one optimizer step ...
        step = loop.step_count
        loop.log(loss=..., learning_rate=..., reward_mean=...)    # metrics.jsonl + the human log line
        if loop.should_save() or loop.stopping:
            loop.save_checkpoint(lambda folder: save_everything(folder), extra_state={...})
        if loop.stopping:
            break
    rec = loop.end(status_extra...)             # the `end` line; exit_code 128+signal after a Stop

Everything is the same object the Trainer recipes use: :class:`~backends.common.distributed.StopOnSignal`
(driven through its loop API), :class:`~backends.common.metrics.MetricsCallback` (the same metrics.jsonl lines,
ETA and human lines) and the runner's checkpoint contract: checkpoint-N is written in ``checkpoints/.partial/``
and renamed whole, ``studio-state.json`` (``{"step": N, ...}``) last.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from . import distributed as dist
from . import paths, runner
from .metrics import MetricsCallback


class Loop:
    def __init__(self, kind: str, cfg: Any, job: runner.Job, *, total_steps: int, global_batch: int,
                 start_info: dict[str, Any] | None = None, save_every: int = 0, save_total_limit: int = 0,
                 eval_every: int = 0, show: tuple[str, ...] = (), print_fn: Callable[..., None] = print):
        self.kind, self.cfg, self.job = kind, cfg, job
        self.stop = dist.StopOnSignal()  # first: a Stop while the models load exits at once
        self.total_steps = int(total_steps)
        self.save_every, self.save_total_limit = int(save_every or 0), int(save_total_limit or 0)
        self.step_count = 0
        self.main = dist.is_main_process()
        self.args = SimpleNamespace(eval_strategy="steps" if eval_every else "no", eval_steps=eval_every,
                                    save_strategy="steps" if save_every else "no", save_steps=save_every,
                                    world_size=dist.world_size())
        self.state = SimpleNamespace(global_step=0, max_steps=self.total_steps, epoch=None, num_input_tokens_seen=0,
                                     is_world_process_zero=self.main)
        self.control = SimpleNamespace()
        self.metrics = MetricsCallback(job.run_dir, start_info={"kind": kind, "recipe": getattr(cfg, "recipe", ""),
                                                                "pid": os.getpid(), **(start_info or {})},
                                       global_batch=global_batch, resume=bool(job.resume), print_fn=print_fn)
        self.metrics.show_keys = show
        self.started = time.time()

    # ---------------------------------------------------------------- resume
    def resume_state(self) -> dict[str, Any]:
        """The studio-state.json of the checkpoint this run resumes from ({} for a fresh start)."""
        if not self.job.resume:
            return {}
        import json

        return json.loads((Path(self.job.resume) / "studio-state.json").read_text(encoding="utf-8"))

    # ---------------------------------------------------------------- the loop
    def begin(self, start_step: int = 0) -> int:
        self.step_count = self.state.global_step = int(start_step or 0)
        if self.stop.begin(self.step_count):
            raise SystemExit(self.stop.exit_code)
        self.metrics.on_train_begin(self.args, self.state, self.control)
        return self.step_count

    @contextmanager
    def step(self):
        """One optimizer step: a Stop that arrives inside it lets it finish."""
        self.stop.step_started()
        self.metrics.on_step_begin(self.args, self.state, self.control)
        yield
        self.step_count += 1
        self.state.global_step = self.step_count
        self.metrics.on_step_end(self.args, self.state, self.control)
        self.stop.step_finished()

    @property
    def stopping(self) -> bool:
        return self.stop.stopped

    def add_tokens(self, n: int) -> None:
        """Real (non-padding) tokens this rank trained on: tokens_per_s in metrics.jsonl."""
        self.metrics.add_tokens(n)

    def log(self, **values: Any) -> None:
        """One metrics.jsonl line at the current step (every rank calls it: tokens are summed over ranks).
        `loss`, `learning_rate`, `grad_norm` map to the studio's names; keys starting with `eval_` make it an
        evaluation line; any other numeric key is kept as it is (reward_mean, kl, ...)."""
        self.metrics.on_log(self.args, self.state, self.control, logs=values)

    def should_save(self) -> bool:
        return bool(self.save_every) and self.step_count > 0 and self.step_count % self.save_every == 0 \
            and self.step_count < self.total_steps

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, write: Callable[[Path], None], extra_state: dict[str, Any] | None = None) -> Path:
        """Every rank calls it (DeepSpeed saves are collective): write(folder) fills checkpoint-<step> in
        checkpoints/.partial/, rank 0 adds studio-state.json and renames the folder whole, then keeps the
        newest save_total_limit checkpoints."""
        ckdir = Path(self.job.checkpoints_dir)
        staging = ckdir / dist.PARTIAL_DIR / f"checkpoint-{self.step_count}"
        final = ckdir / staging.name
        t0 = time.time()
        if self.main:
            shutil.rmtree(staging, ignore_errors=True)  # a torn earlier attempt
            staging.mkdir(parents=True, exist_ok=True)
        dist.barrier()
        write(staging)
        dist.barrier()
        if self.main:
            runner.write_state(staging, self.step_count, **(extra_state or {}))
            paths.replace_dir(staging, final)
            try:
                staging.parent.rmdir()
            except OSError:
                pass
            self._rotate(ckdir)
            self.metrics.print(f"[studio] saved {final.name} ({time.time() - t0:.1f}s)", flush=True)
        dist.barrier()
        self.metrics.on_save(self.args, self.state, self.control)
        return final

    def _rotate(self, ckdir: Path) -> None:
        if self.save_total_limit <= 0:
            return
        done = sorted((int(c.name.split("-", 1)[1]), c) for c in ckdir.glob("checkpoint-*")
                      if c.name.split("-", 1)[1].isdigit() and runner.is_complete_checkpoint(c))
        for _, c in done[:-self.save_total_limit]:
            shutil.rmtree(c, ignore_errors=True)

    # ---------------------------------------------------------------- end
    def end(self, *, status: str | None = None, **extra: Any) -> dict[str, Any]:
        """Call after the output is written: the `end` line; its exit_code is 128+signal after a Stop."""
        self.stop.end()
        self.state.global_step = self.step_count
        self.metrics.on_train_end(self.args, self.state, self.control)
        status = status or ("stopped" if self.stopping else "completed")
        if self.stopping:
            saved = Path(self.job.checkpoints_dir) / f"checkpoint-{self.step_count}"
            self.metrics.print(f"[studio] stopped at step {self.step_count}: " + (
                f"checkpoint {saved.name} saved in {self.job.checkpoints_dir}" if saved.is_dir()
                else "no checkpoint was saved"), flush=True) if self.main else None
        rec = self.metrics.write_end(status, output_dir=str(self.job.output_dir),
                                     wall_time=round(time.time() - self.started, 2), **extra)
        rec["exit_code"] = self.stop.exit_code if self.stopping else 0
        self.stop.restore()
        return rec

    def finishing(self) -> None:
        """The loop is over and the output is about to be written: a Stop now waits for that."""
        self.stop.end()
