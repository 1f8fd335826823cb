"""Process setup shared by the backends: ranks, DeepSpeed on CPU, threads and a clean stop on SIGTERM.

A backend runs the same way alone (`python -m backends.X`), under `accelerate launch`, `torchrun` and the
`deepspeed` launcher. The pieces that make that work on CPU machines (see shared/reference/stack-notes.md):

- :func:`setup_deepspeed` -- with a DeepSpeed config and no CUDA, HF Trainer builds its PartialState without a
  backend and every rank thinks it is rank 0 of 1 (`train_batch_size 4 != 4 * 1 * 2`). Fix: set
  `ACCELERATE_USE_DEEPSPEED=true`, create `PartialState(backend="gloo")` first and pass
  `accelerator_config={"use_configured_state": True}` to the training arguments (returned as extra kwargs).
  Without a launcher, DeepSpeed looks for MPI; RANK/LOCAL_RANK/WORLD_SIZE/MASTER_* defaults avoid that.
- :class:`StopOnSignal` -- SIGTERM (the job engine's Stop) sets a flag; at the next step end every rank agrees
  on it, saves a checkpoint and leaves the training loop (like LlamaBoard's SIGABRT handler). It is a Trainer
  callback and, through begin/step_started/step_finished/end, the stop of hand-written loops
  (backends/common/loop.py).
"""
from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from . import paths

try:
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - transformers is a dependency of every LLM backend
    TrainerCallback = object  # type: ignore[assignment,misc]


# ------------------------------------------------------------------------------------- ranks
def rank() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_rank()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0)


def world_size() -> int:
    try:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return dist.get_world_size()
    except ImportError:  # pragma: no cover
        pass
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main_process() -> bool:
    return rank() == 0


def launched() -> bool:
    """True under torchrun / accelerate launch / the deepspeed launcher (they set WORLD_SIZE and RANK)."""
    return "WORLD_SIZE" in os.environ and ("RANK" in os.environ or "LOCAL_RANK" in os.environ)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def single_process_env() -> None:
    """RANK=0 WORLD_SIZE=1 MASTER_ADDR/PORT defaults for a run without a launcher (DeepSpeed wants them)."""
    if launched():
        return
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(free_port()))


def set_threads(default: int | None = None) -> int:
    """torch threads = $OMP_NUM_THREADS (the job engine's budget), else `default`, else torch's choice."""
    import torch

    n = os.environ.get("OMP_NUM_THREADS")
    want = int(n) if n and n.isdigit() and int(n) > 0 else default
    if want:
        torch.set_num_threads(want)
    return torch.get_num_threads()


def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


# --------------------------------------------------------------------------------- DeepSpeed
def accelerate_deepspeed_config() -> str:
    """The DeepSpeed config an `accelerate launch --config_file` with a deepspeed section points at, if any."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":
        return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE", "") or ""
    return ""


def setup_deepspeed(ds_config: str | os.PathLike | None, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Prepare the process for HF Trainer/TRL with `deepspeed=ds_config`; returns extra TrainingArguments kwargs.

    Call it before building the training arguments. A no-op (returns {}) when `ds_config` is empty.
    """
    if not ds_config:
        return {}
    single_process_env()
    if data_dir:  # compiled DeepSpeed ops (cpu_adam, ...) per data dir, not shared by every venv of the machine
        os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(data_dir) / "torch_extensions"))
    if has_cuda():
        return {}
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    from accelerate import PartialState

    PartialState(backend="gloo")
    return {"accelerator_config": {"use_configured_state": True}}


def setup_cpu_distributed() -> dict[str, Any]:
    """Multi-process without DeepSpeed on CPU (torchrun / accelerate launch): a MULTI_CPU gloo group.

    Without `use_cpu`, HF Trainer's PartialState comes up as distributed type NO with 2 processes on a machine
    without CUDA (each rank trains alone and the logged loss is scaled by the world size).
    """
    if launched() and world_size() > 1 and not has_cuda():
        return {"use_cpu": True, "ddp_backend": "gloo"}
    return {}


# ------------------------------------------------------------------------------- collectives
def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is True on any rank (a no-op without a process group)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return flag
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return flag
    device = "cuda" if (dist.get_backend() == "nccl" and torch.cuda.is_available()) else "cpu"
    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def sum_ranks(value: float) -> float:
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return value
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return value
    device = "cuda" if (dist.get_backend() == "nccl" and torch.cuda.is_available()) else "cpu"
    t = torch.tensor([float(value)], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# ------------------------------------------------------------------------------- checkpoints
PARTIAL_DIR = ".partial"  # checkpoints/.partial/checkpoint-N: a checkpoint being written


def atomic_checkpoints(trainer) -> None:
    """Make the Trainer's checkpoints appear whole or not at all.

    Every rank writes checkpoint-N into `<output_dir>/.partial/` (the Trainer's own code, unchanged); once all
    ranks are done, rank 0 renames it to `<output_dir>/checkpoint-N` (one rename on one filesystem) and then
    applies save_total_limit. A process killed mid-save leaves only `.partial/`, which nothing resumes from
    (HF's get_last_checkpoint, our latest_checkpoint and the job engine all look for `checkpoint-N` only).
    """
    import shutil

    from transformers.trainer_utils import rotate_checkpoints

    original_save = trainer._save_checkpoint
    original_dir = trainer._get_output_dir

    def save(model, trial):
        real = original_dir(trial)
        staging = os.path.join(real, PARTIAL_DIR)
        name = f"checkpoint-{trainer.state.global_step}"
        if trainer.is_world_process_zero():
            shutil.rmtree(os.path.join(staging, name), ignore_errors=True)  # a torn earlier attempt
            os.makedirs(staging, exist_ok=True)
        barrier()
        trainer._get_output_dir = lambda trial=None: staging
        try:
            original_save(model, trial)
        finally:
            trainer._get_output_dir = original_dir
        barrier()  # every rank's shards, optimizer and RNG files are written
        if trainer.is_world_process_zero():
            paths.replace_dir(os.path.join(staging, name), os.path.join(real, name))  # the same step again: swapped
            try:
                os.rmdir(staging)
            except OSError:
                pass
            rotate_checkpoints(output_dir=real, save_total_limit=trainer.args.save_total_limit,
                               best_model_checkpoint=trainer.state.best_model_checkpoint, use_mtime=False)
        barrier()

    trainer._save_checkpoint = save


# -------------------------------------------------------------------------------------- stop
class StopOnSignal(TrainerCallback):
    """Clean stop on SIGTERM (and SIGINT): finish the current step, save a checkpoint, leave the loop.

    Before training starts (model loading, tokenising), and while no step of this run has finished yet and
    none is under way (the evaluation before the first step), a signal exits at once with 128+signum: there
    is nothing new to save, and the log says so plainly (no checkpoint yet, or the one resumed from is still
    the latest). During a step, the step is finished, the scheduled evaluation is skipped and a checkpoint
    saved. During an evaluation after some step: the checkpoint is saved right after it. Further signals
    are ignored (the engine sends one; a launcher may forward another). With several ranks, every rank checks
    the flag at each step end with one tiny all-reduce, so all of them stop at the same step (ZeRO saves are
    collective).
    """

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), save: bool = True, log=print):
        self.requested: int | None = None
        self.stopped = False
        self.training = False
        self.finishing = False  # training is over, the output is being written: never exit mid-write
        self.in_step = False
        self.steps_done = 0  # steps finished in this run (a resumed run counts from its checkpoint)
        self.start_step = 0
        self.save = save
        self.log = log
        self._previous = {}
        for s in signals:
            try:
                self._previous[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread
                pass

    def _say(self, msg: str) -> None:
        if is_main_process():
            self.log(f"[studio] {msg}", flush=True)

    def _handler(self, signum, frame):
        if self.requested is not None:
            if signum == signal.SIGINT and not self.finishing:
                raise KeyboardInterrupt  # second Ctrl+C: give up at once
            return  # already stopping: one message, one checkpoint
        self.requested = signum
        name = signal.Signals(signum).name
        if self.finishing:
            self._say(f"{name} received while writing the output: finishing that first")
            return
        if not self.training:
            self._say(f"{name} received before training started: exiting")
            sys.exit(128 + signum)
        if self.steps_done == 0 and not self.in_step:
            if not self.save:
                self._say(f"{name} received before the first step: exiting")
                sys.exit(128 + signum)
            if self.start_step:
                self._say(f"{name} received before a step of this run finished: exiting now; "
                          f"checkpoint-{self.start_step} is still the latest (Resume continues from it)")
            else:
                self._say(f"{name} received before the first training step: exiting now; no checkpoint "
                          "exists yet (stopped before any checkpoint could exist: re-run to start again)")
            sys.exit(128 + signum)
        self._say(f"{name} received: stopping after this step" + (" and saving a checkpoint" if self.save else
                                                                   " and writing the partial results"))

    @property
    def exit_code(self) -> int:
        return 128 + int(self.requested) if self.requested is not None else 0

    # ------------------------------------------------ the loop API (hand-written loops call these directly)
    def begin(self, start_step: int = 0) -> bool:
        """Training starts at `start_step` (a resumed run: its checkpoint's step). True when a stop is already
        requested (leave before the first step)."""
        self.training = True
        self.start_step = int(start_step or 0)
        return self.requested is not None

    def step_started(self) -> None:
        self.in_step = True

    def step_finished(self) -> bool:
        """A step is done: True on every rank when any rank got a signal (save a checkpoint and leave)."""
        self.in_step = False
        self.steps_done += 1
        return self.check()

    def check(self) -> bool:
        """Collective: True on every rank when any rank got a signal; marks the run stopped."""
        if any_rank(self.requested is not None):
            if self.requested is None:
                self.requested = signal.SIGTERM  # another rank got it
            self.stopped = True
            return True
        return False

    def end(self) -> None:
        """Training is over, the output is being written: a signal now no longer exits mid-write."""
        self.finishing = True

    # ------------------------------------------------ the TrainerCallback API (HF Trainer / TRL recipes)
    def on_train_begin(self, args, state, control, **kwargs):
        if self.begin(int(state.global_step or 0)):
            control.should_training_stop = True
        return control

    def on_step_begin(self, args, state, control, **kwargs):
        self.step_started()
        return control

    def _stop_here(self, control) -> None:
        control.should_training_stop = True
        control.should_evaluate = False  # the stop should not wait for an evaluation
        if self.save:
            control.should_save = True

    def on_step_end(self, args, state, control, **kwargs):
        if self.step_finished():
            self._stop_here(control)
        return control

    def on_evaluate(self, args, state, control, **kwargs):
        if self.steps_done and not self.stopped and self.check():  # a signal during an evaluation after a step
            self._stop_here(control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.end()
        return control

    def restore(self) -> None:
        for s, h in self._previous.items():
            try:
                signal.signal(s, h)
            except (ValueError, TypeError):
                pass
