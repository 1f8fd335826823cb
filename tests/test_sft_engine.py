"""Real SFT jobs through the job engine, the path the Train button takes: on the tiny random model (conftest's
tiny_lm) where the plumbing is under test (stop, kill, resume, launchers), on the bundled SmolLM2 for the
2-rank ZeRO-2 runs. That the demo recipe teaches SmolLM2 its style is tested once, in test_sft.py."""
from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from app.jobs import Engine, LaunchSpec
from conftest import ROOT, wait_for

pytestmark = pytest.mark.slow
RECIPE = yaml.safe_load((ROOT / "presets" / "recipes" / "cpu-demo-smollm2.yaml").read_text())


def demo_config(**overrides) -> dict:
    cfg = dict(RECIPE["config"])
    cfg.update(overrides)
    return cfg


def wait_done(engine: Engine, job_id: str, timeout: float) -> dict:
    return wait_for(lambda: (j := engine.get(job_id))["status"] not in ("queued", "running") and j,
                    timeout, interval=1.0, what=f"job {job_id} to end")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_killed_trainer_fails_then_resumes_from_its_checkpoint(engine, studio_data_dir, tiny_lm):
    """kill -9 of the trainer → failed with a summary; Resume continues the step count (tiny model)."""
    cfg = demo_config(data_dir=str(studio_data_dir), model_name_or_path=str(tiny_lm), max_steps=6,
                      save_steps=2, eval_steps=100, max_seq_len=64,
                      gradient_accumulation_steps=2)  # ≈1 s steps: the kill lands before the run ends
    job_id = engine.submit("sft", cfg, LaunchSpec(launcher="python", preset="cpu"))
    run_dir = Path(engine.get(job_id)["run_dir"])
    wait_for(lambda: (run_dir / "checkpoints" / "checkpoint-2").is_dir(), 600, what="checkpoint-2")
    job = engine.get(job_id)
    trainers = [p for p in _tree(job["pid"]) if "backends.sft" in " ".join(p.cmdline())]
    assert trainers, "no trainer process found under the job"
    os.kill(trainers[-1].pid, signal.SIGKILL)
    job = wait_done(engine, job_id, 120)
    assert job["status"] == "failed"
    assert "SIGKILL" in job["error"] or "killed" in job["error"].lower(), job["error"]
    assert job["can_resume"]

    engine.resume(job_id)
    job = wait_done(engine, job_id, 600)
    assert job["status"] == "succeeded", job["error"]
    log = engine.read_log_tail(job_id)
    assert "=== resumed at" in log
    steps = [m["step"] for m in engine.read_metrics(job_id) if "step" in m and m.get("loss") is not None]
    # the resumed attempt starts after checkpoint-2, not at step 1 again
    # (the Trainer does not log the first step after a resume: 3 may be missing, 4..6 are there)
    assert max(steps) == 6 and {4, 5, 6} <= set(steps), steps
    assert steps.count(1) == 1 and steps.count(2) == 1, f"resume restarted from scratch: {steps}"


@pytest.mark.parametrize("launcher", ["deepspeed", "accelerate"])
def test_two_process_zero2_sft_on_cpu(engine, studio_data_dir, launcher):
    """The GPU presets' path, run for real on CPU: 2 ranks over gloo, DeepSpeed ZeRO-2."""
    cfg = demo_config(data_dir=str(studio_data_dir), max_steps=3, max_seq_len=64, eval_ratio=0.05,
                      eval_steps=100, save_steps=100, per_device_train_batch_size=2)
    spec = LaunchSpec(launcher=launcher, preset="cpu", num_processes=2, zero_stage=2)
    job_id = engine.submit("sft", cfg, spec)
    job = wait_done(engine, job_id, 900)
    log = engine.read_log_tail(job_id)
    assert job["status"] == "succeeded", f"{job['error']}\n{log[-4000:]}"
    run_dir = Path(job["run_dir"])
    ds = json.loads((run_dir / "deepspeed.json").read_text())
    assert ds["zero_optimization"]["stage"] == 2
    metrics = engine.read_metrics(job_id)
    steps = [m["step"] for m in metrics if "step" in m and m.get("loss") is not None]
    assert steps and steps[-1] == 3
    assert len(steps) == len(set(steps)), f"metrics written by more than one rank: {steps}"
    # the command in command.sh is what the page shows and runs by hand
    assert ("--num_gpus" in (run_dir / "command.sh").read_text()) == (launcher == "deepspeed")
    assert subprocess.run(["bash", "-n", str(run_dir / "command.sh")]).returncode == 0


# ------------------------------------------------------------------ Stop mid-step -> checkpoint -> Resume
def _slow_tiny_config(tiny_lm, data_dir, **over) -> dict:
    """The demo recipe on the tiny model with deliberately slow steps: 48 samples per optimizer step
    (batch 8 x 6 accumulated), a few seconds each on one CPU thread, so a Stop lands inside a step."""
    cfg = dict(data_dir=str(data_dir), model_name_or_path=str(tiny_lm), max_steps=2, eval_ratio=0.1,
               eval_steps=100, save_steps=100, logging_steps=1, per_device_train_batch_size=8,
               gradient_accumulation_steps=6)
    return demo_config(**{**cfg, **over})


@pytest.mark.parametrize("launcher,procs", [("accelerate", 1), ("deepspeed", 2)])
def test_stop_during_step_1_saves_checkpoint_1_and_resume_finishes(engine, studio_data_dir, tiny_lm, launcher,
                                                                    procs):
    """Issue 11 §2 with real processes: Stop while step 1 runs (right after the step-0 evaluation) → the
    trainer gets one SIGTERM, finishes step 1, writes checkpoint-1 whole → Resume continues at step 2 and
    finishes. Under accelerate launch (1 CPU process) and the deepspeed launcher (2 ranks, ZeRO-2)."""
    spec = LaunchSpec(launcher=launcher, preset="cpu", num_processes=procs,
                      zero_stage=2 if launcher == "deepspeed" else None)
    # 2 ranks share the 2 cores: each does half of the work (4 x 6 samples), the step stays seconds long
    cfg = _slow_tiny_config(tiny_lm, studio_data_dir, **({"per_device_train_batch_size": 4} if procs == 2 else {}))
    job_id = engine.submit("sft", cfg, spec)
    wait_for(lambda: "step 0/2 eval_loss" in engine.read_log_tail(job_id)
             or engine.get(job_id)["status"] not in ("queued", "running"),  # one read: queued -> running between
             # two reads made this true at once, and the Stop came before the program had started
             300, interval=0.2, what="the evaluation before step 1")
    assert engine.get(job_id)["status"] == "running", engine.read_log_tail(job_id)[-3000:]
    engine.stop(job_id)
    job = wait_done(engine, job_id, 180)
    log = engine.read_log_tail(job_id)
    run_dir = Path(job["run_dir"])
    ck = run_dir / "checkpoints" / "checkpoint-1"
    assert job["status"] == "stopped", log[-3000:]
    assert (ck / "trainer_state.json").is_file() and (ck / "adapter_model.safetensors").is_file(), log[-3000:]
    assert not (run_dir / "checkpoints" / ".partial").exists()
    assert job["checkpoints"] == ["checkpoint-1"] and job["can_resume"]
    assert job["error"] == "stopped by the user; Resume continues from checkpoint-1"
    assert log.count("SIGTERM received") == 1, log[-3000:]  # one message: rank 0's, one signal
    assert "left behind" not in log and "still alive after" not in log, log[-3000:]
    assert "stopped at step 1: checkpoint checkpoint-1 saved" in log
    assert engine.read_metrics(job_id)[-1]["status"] == "stopped"

    engine.resume(job_id)
    job = wait_done(engine, job_id, 300)
    log = engine.read_log_tail(job_id)
    assert job["status"] == "succeeded", log[-3000:]
    metrics = engine.read_metrics(job_id)
    assert [m["resumed_from_step"] for m in metrics if m.get("event") == "start"] == [0, 1]
    assert [m["step"] for m in metrics if m.get("loss") is not None] == [1, 2]
    assert metrics[-1]["event"] == "end" and metrics[-1]["status"] == "completed" and metrics[-1]["step"] == 2
    # the Train button's path: command.sh runs the launcher; the result is a PEFT adapter + studio.json
    command = (run_dir / "command.sh").read_text()
    assert ("accelerate.commands.launch" in command) == (launcher == "accelerate")
    assert "backends.sft" in command
    assert subprocess.run(["bash", "-n", str(run_dir / "command.sh")]).returncode == 0
    tokens_per_s = [m["tokens_per_s"] for m in metrics if m.get("tokens_per_s") is not None]
    assert tokens_per_s and min(tokens_per_s) > 0
    assert len([m for m in metrics if m.get("eval_loss") is not None and "event" not in m]) >= 2
    studio = json.loads((run_dir / "output" / "studio.json").read_text())
    assert studio["kind"] == "sft" and studio["adapter"] is True and studio["status"] == "completed"
    assert (run_dir / "output" / "adapter_model.safetensors").is_file()


def test_stop_during_the_step_0_evaluation_says_no_checkpoint_can_exist(engine, studio_data_dir, tiny_lm):
    """Stop before any step finished: the trainer exits at once and says so; the job offers Re-run, not
    Resume."""
    cfg = _slow_tiny_config(tiny_lm, studio_data_dir, eval_ratio=0.5, per_device_eval_batch_size=1)
    job_id = engine.submit("sft", cfg, LaunchSpec(launcher="accelerate", preset="cpu"))
    wait_for(lambda: "training starting" in engine.read_log_tail(job_id), 300, interval=0.2,
             what="training to start")
    engine.stop(job_id)
    job = wait_done(engine, job_id, 60)
    log = engine.read_log_tail(job_id)
    assert job["status"] == "stopped", log[-3000:]
    assert "step 0/2 eval_loss" not in log  # the 100-row evaluation was cut short, not waited for
    assert "no checkpoint exists yet" in log, log[-3000:]
    assert job["error"].startswith("stopped before any checkpoint could exist") and not job["can_resume"]
