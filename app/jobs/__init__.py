"""The job engine: a SQLite store, a runner (one process group per job), a FIFO queue, log/metrics readers.

    from app.jobs import Engine, LaunchSpec
    eng = Engine(data_dir)                       # starts the monitor thread, re-attaches running jobs
    job_id = eng.submit("sft", config, LaunchSpec(launcher="accelerate", preset="cpu"))
    eng.progress(job_id); eng.read_log_tail(job_id); eng.stop(job_id)

See engine.py for the protocol (DESIGN.md "The job protocol").
"""

from .engine import Engine, JobError, checkpoints, read_tail
from .launcher import LaunchSpec, build_command, parse_hostfile, preview_command
from .store import STATUSES, JobStore
from .summary import summarize

__all__ = [
    "STATUSES",
    "Engine",
    "JobError",
    "JobStore",
    "LaunchSpec",
    "build_command",
    "checkpoints",
    "parse_hostfile",
    "preview_command",
    "read_tail",
    "summarize",
]
