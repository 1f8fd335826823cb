"""Real SFT jobs on the bundled SmolLM2 through the job engine: the path the Train button takes."""
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
DEMO_PROMPTS = ["What is the capital of France?", "法国的首都是哪里？"]


def demo_config(**overrides) -> dict:
    cfg = dict(RECIPE["config"])
    cfg.update(overrides)
    return cfg


def wait_done(engine: Engine, job_id: str, timeout: float) -> dict:
    return wait_for(lambda: (j := engine.get(job_id))["status"] not in ("queued", "running") and j,
                    timeout, interval=1.0, what=f"job {job_id} to end")


def greedy(model, tok, prompt: str, n: int = 12) -> str:
    import torch

    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def test_lora_sft_under_accelerate_learns_the_demo_set(engine, studio_data_dir):
    """The issue's acceptance run: accelerate launch on CPU, LoRA, the demo recipe."""
    job_id = engine.submit("sft", demo_config(data_dir=str(studio_data_dir)),
                           LaunchSpec(launcher="accelerate", preset="cpu"), recipe="cpu-demo-smollm2")
    job = wait_done(engine, job_id, timeout=900)
    log = engine.read_log_tail(job_id)
    assert job["status"] == "succeeded", f"{job['error']}\n{log[-3000:]}"
    run_dir = Path(job["run_dir"])
    command = (run_dir / "command.sh").read_text()
    assert "accelerate.commands.launch" in command and "backends.sft" in command
    metrics = engine.read_metrics(job_id)

    steps = [m["step"] for m in metrics if "step" in m and m.get("loss") is not None]
    assert steps == sorted(steps) and len(set(steps)) >= 5 and steps[-1] == RECIPE["config"]["max_steps"]
    evals = [m["eval_loss"] for m in metrics if m.get("eval_loss") is not None]
    assert len(evals) >= 2
    assert evals[-1] <= 0.8 * evals[0], f"eval loss {evals[0]:.3f} -> {evals[-1]:.3f}"
    tokens_per_s = [m["tokens_per_s"] for m in metrics if m.get("tokens_per_s") is not None]
    assert tokens_per_s and min(tokens_per_s) > 0

    out = run_dir / "output"
    studio = json.loads((out / "studio.json").read_text())
    assert studio["kind"] == "sft" and studio["adapter"] is True

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = studio_data_dir / "models" / "smollm2-135m-instruct"
    tok = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    before = [greedy(base, tok, p) for p in DEMO_PROMPTS]
    tuned = PeftModel.from_pretrained(base, out)
    after = [greedy(tuned, tok, p) for p in DEMO_PROMPTS]
    assert before != after, f"the adapter did not change the greedy answers: {after}"
    assert any(a.strip().startswith(("Studio says", "工作室答")) for a in after), after


def _tree(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_killed_trainer_fails_then_resumes_from_its_checkpoint(engine, studio_data_dir):
    """kill -9 of the trainer → failed with a summary; Resume continues the step count."""
    cfg = demo_config(data_dir=str(studio_data_dir), max_steps=6, save_steps=2, eval_steps=100,
                      max_seq_len=64)
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
