"""A job the engine knows whose metrics.jsonl and log.txt a tiny writer process fills: UI tests and the page CPU
benchmark follow it in a studio without torch or a model.

`start(data_dir, steps, interval)` writes runs/<id>/ (config.yaml, command.sh, log.txt), inserts the job as
running with the writer's pid (any engine on the data dir watches it like one of its own) and returns
(job_id, Popen). The writer (`python -m tests.fake_run RUN_DIR STEPS INTERVAL EVAL_EVERY [KIND]`; KIND reward adds
the reward model's eval metrics) appends one
metrics line and one log line per step, then writes exit.json (exit code 0) as the job supervisor does, so the
engine marks the job succeeded. `finished(...)` is the same with no wait, returning once it succeeded.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


def loss_at(step: int) -> float:
    return round(2.5 * math.exp(-step / 12) + 0.2, 4)


def eval_loss_at(step: int) -> float:
    return round(2.6 * math.exp(-step / 14) + 0.3, 4)


def reward_eval_at(step: int) -> dict:
    """A reward model's eval record as backends/reward.py logs it: accuracy rises, the scores move apart."""
    return {"eval_accuracy": round(min(1.0, 0.45 + step / 40), 4), "eval_chosen_score": round(0.1 * step, 4),
            "eval_rejected_score": round(-0.05 * step, 4)}


def write(run_dir: Path, steps: int, interval: float, eval_every: int, kind: str = "sft") -> int:
    t0 = time.time()
    log = run_dir / "log.txt"
    with open(log, "a") as f:
        f.write(f"$ python -m tests.fake_run (fake trainer, {steps} steps)\n")
    for step in range(1, steps + 1):
        time.sleep(interval)
        rec = {"step": step, "total_steps": steps, "loss": loss_at(step), "elapsed": time.time() - t0}
        if eval_every and step % eval_every == 0:
            rec["eval_loss"] = eval_loss_at(step)
            if kind == "reward":
                rec.update(reward_eval_at(step))
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")
        with open(log, "a") as f:  # a few lines per step, as a trainer prints: the log box has to scroll
            f.write("".join(f"  [rank0] batch {step}.{i}: 4 samples\n" for i in range(4)))
            f.write(f"step {step}/{steps} loss {rec['loss']:.4f}\n")
    tmp = run_dir / "exit.json.tmp"
    tmp.write_text(json.dumps({"exit_code": 0, "ended_at": time.time()}))
    os.replace(tmp, run_dir / "exit.json")
    return 0


def start(data_dir: Path, steps: int = 10, interval: float = 1.0, eval_every: int = 5, kind: str = "sft"):
    from app.jobs import JobStore

    data_dir = Path(data_dir)
    job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{uuid.uuid4().hex[:4]}"
    run_dir = data_dir / "runs" / job_id
    run_dir.mkdir(parents=True)
    config = {"model": "bundled:smollm2", "dataset": "presets/datasets/demo_sft.jsonl", "max_steps": steps,
              "run_dir": str(run_dir)}
    (run_dir / "config.yaml").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "tests.fake_run", str(run_dir), str(steps), str(interval), str(eval_every), kind]
    (run_dir / "command.sh").write_text("#!/usr/bin/env bash\n# fake job for UI tests\nexec " + " ".join(argv) + "\n")
    (run_dir / "log.txt").write_text(f"=== started at {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
    store = JobStore(data_dir / "jobs.sqlite")
    now = time.time()
    store.insert(dict(id=job_id, kind=kind, recipe="fake", status="running", device_set="cpu", created_at=now,
                      run_dir=str(run_dir), command=" ".join(argv), argv=argv, model=config["model"],
                      dataset=config["dataset"], launcher={"launcher": "python"}, config=config, meta={}))
    proc = subprocess.Popen(argv, cwd=ROOT, start_new_session=True)
    store.update(job_id, pid=proc.pid, pgid=proc.pid, proc_create_time=psutil.Process(proc.pid).create_time(),
                 owner="fake_run", started_at=now, attempts=1)
    store.close()
    return job_id, proc


def finished(data_dir: Path, steps: int = 30, eval_every: int = 5, kind: str = "sft") -> str:
    """A job that already ran: its writer wrote every step at once and exited 0."""
    job_id, proc = start(data_dir, steps, 0.0, eval_every, kind)
    proc.wait(60)
    return job_id


if __name__ == "__main__":
    sys.exit(write(Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                   sys.argv[5] if len(sys.argv) > 5 else "sft"))
