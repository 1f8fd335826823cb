"""A stand-in trainer for the job-engine tests: `python -m tests.jobkit_dummy --config FILE`.

Speaks the job protocol without torch: reads config.yaml (run_dir, resume_from_checkpoint, ...),
appends metrics.jsonl lines, saves checkpoints/checkpoint-N/, writes output/studio.json. Options (config):
  steps (5), sleep (0.1 s per step), checkpoint_every (2), exit_code (0), raise_error ("" or a message:
  raises FileNotFoundError with it at step `fail_at_step`), fail_if_exists ("" or a path: a ValueError naming
  the column 'rejected' while that file exists -- bad data until the test "fixes" it), spawn_child (false: one grandchild that
  sleeps, plus one that leaves the process group with a new session), ignore_sigterm (false),
  graceful_stop (false: on SIGTERM finish the current step, save checkpoint-N taking save_seconds (1.0) into
  checkpoints/.partial and rename it, then exit 143 -- what backends/sft.py does; every SIGTERM is counted
  in the log as "SIGTERM #n").
Every rank writes run_dir/pids/rank<R>.json ({pid, children, env}); only rank 0 writes metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--local_rank", type=int, default=None)  # only if a launcher passes it
    args = ap.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())
    run_dir = Path(cfg["run_dir"])
    rank = int(os.environ.get("RANK", "0"))
    steps = int(cfg.get("steps", 5))
    sleep = float(cfg.get("sleep", 0.1))
    every = int(cfg.get("checkpoint_every", 2))
    if cfg.get("ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sigterms = []
    if cfg.get("graceful_stop"):

        def on_term(signum, frame):
            sigterms.append(time.time())
            print(f"rank {rank}: SIGTERM #{len(sigterms)}: finishing the step, then saving", flush=True)

        signal.signal(signal.SIGTERM, on_term)

    children = []
    if cfg.get("spawn_child"):
        code = "import time\nwhile True: time.sleep(0.2)"
        children.append(subprocess.Popen([sys.executable, "-c", code]).pid)
        children.append(subprocess.Popen([sys.executable, "-c", code], start_new_session=True).pid)
    pids = run_dir / "pids"
    pids.mkdir(exist_ok=True)
    env = {
        k: os.environ.get(k)
        for k in (
            "OMP_NUM_THREADS",
            "MKL_NUM_THREADS",
            "PYTHONUNBUFFERED",
            "TORCH_EXTENSIONS_DIR",
            "HF_HUB_OFFLINE",
            "MASTER_PORT",
            "WORLD_SIZE",
            "ACCELERATE_USE_CPU",
        )
    }
    tmp = pids / f".rank{rank}.json"
    tmp.write_text(
        json.dumps({"pid": os.getpid(), "children": children, "env": env, "executable": sys.executable})
    )
    os.replace(tmp, pids / f"rank{rank}.json")

    start = 0
    resume = cfg.get("resume_from_checkpoint") or ""
    ckdir = run_dir / "checkpoints"
    if resume:
        if resume == "latest":
            found = max((int(p.name.split("-")[1]) for p in ckdir.glob("checkpoint-*")), default=None)
            if found is None:
                print("no checkpoint found", flush=True)
                return 3
            start = found
        else:
            start = int(Path(resume).name.split("-")[1])
        print(f"resuming from step {start}", flush=True)

    t0 = time.time()
    for step in range(start + 1, steps + 1):
        time.sleep(sleep)
        if cfg.get("raise_error") and step == int(cfg.get("fail_at_step", 1)):
            raise FileNotFoundError(cfg["raise_error"])
        if cfg.get("fail_if_exists") and Path(cfg["fail_if_exists"]).exists():  # bad data, until it is fixed
            raise ValueError(f"rejected: the dataset has no column 'rejected' ({cfg['fail_if_exists']})")
        loss = round(2.0 / step, 4)
        if rank == 0:
            el = time.time() - t0
            rec = {
                "step": step,
                "total_steps": steps,
                "epoch": step / steps,
                "loss": loss,
                "lr": 1e-4,
                "samples_per_s": 10.0,
                "elapsed": el,
                "eta": el / (step - start) * (steps - step),
            }
            with open(run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(rec) + "\n")
            print(f"step {step}/{steps} loss {loss}", flush=True)
            if every and step % every == 0:
                d = ckdir / f"checkpoint-{step}"
                d.mkdir(parents=True, exist_ok=True)
                (d / "state.json").write_text(json.dumps({"step": step}))
        if sigterms:
            if rank == 0:
                part = ckdir / ".partial" / f"checkpoint-{step}"
                part.mkdir(parents=True, exist_ok=True)
                (part / "weights.bin").write_bytes(b"0" * 1000)
                time.sleep(float(cfg.get("save_seconds", 1.0)))  # a slow save
                (part / "state.json").write_text(json.dumps({"step": step}))
                os.rename(part, ckdir / f"checkpoint-{step}")
                print(f"stopped at step {step}: checkpoint-{step} saved", flush=True)
            return 128 + signal.SIGTERM
    if rank == 0:
        out = run_dir / "output"
        out.mkdir(exist_ok=True)
        (out / "studio.json").write_text(json.dumps({"base_model": "dummy", "recipe": "dummy"}))
    code = int(cfg.get("exit_code", 0))
    if code:
        print(f"dummy exits with {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
