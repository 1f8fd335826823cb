"""DPO / KTO backend (DeepSpeed-Chat step2_dpo): engine-level on the tiny random LM."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from backends import dpo, reward
from backends.common import runner
from backends.common.errors import FieldError
from backends.common.metrics import read_metrics
from test_reward import _cfg, _sft_job


def test_dpo_with_lora_uses_no_second_model_and_logs_implicit_rewards(tiny_lm, studio_data_dir):
    cfg = runner.ensure_args(dpo.DPOArgs, _cfg(tiny_lm, studio_data_dir, "runs/dpo", max_steps=2, eval_ratio=0.05))
    r = dpo.resolve(cfg)
    trainer = dpo.build_trainer(cfg, r)
    assert trainer.ref_model is None  # the reference is the same weights with the adapter disabled
    rec = dpo.train(_cfg(tiny_lm, studio_data_dir, "runs/dpo2", max_steps=2, eval_steps=1, eval_ratio=0.05))
    assert rec["status"] == "completed"
    evals = [x for x in read_metrics(studio_data_dir / "runs/dpo2/metrics.jsonl")
             if "event" not in x and x.get("eval_loss") is not None]
    assert [x["step"] for x in evals] == [0, 1, 2]
    for k in dpo.METRICS:
        assert all(isinstance(x[k], float) for x in evals), k
    out = studio_data_dir / "runs/dpo2/output"
    info = json.loads((out / "studio.json").read_text())
    assert info["kind"] == "dpo" and info["adapter"] is True and (out / "adapter_config.json").is_file()


def test_dpo_and_kto_continue_an_sft_adapter(tiny_lm, studio_data_dir):
    from peft import PeftModel

    job = "20260101-000000-sft-dpo0"
    sft_out = _sft_job(tiny_lm, studio_data_dir, job)
    cfg = runner.ensure_args(dpo.DPOArgs, _cfg(f"job:{job}", studio_data_dir, "runs/d"))
    trainer = dpo.build_trainer(cfg, dpo.resolve(cfg))
    assert trainer.ref_model is None and {"default", "ref"} <= set(trainer.model.peft_config)  # frozen SFT copy
    rec = dpo.train(_cfg(f"job:{job}", studio_data_dir, "runs/kto", algorithm="kto", max_steps=2, eval_ratio=0.05))
    assert rec["status"] == "completed"
    out = studio_data_dir / "runs/kto/output"
    assert not (out / "ref").exists()  # only the trained adapter is the result
    info = json.loads((out / "studio.json").read_text())
    assert info["algorithm"] == "kto" and info["start_adapter"] == str(sft_out)
    from backends.common import modeling

    model, _, _ = modeling.load_trained(out)  # loads like an SFT result (base + adapter)
    assert isinstance(model, PeftModel)


def test_dpo_refuses_a_reward_model_and_mismatched_losses(tiny_lm, studio_data_dir):
    reward.train(_cfg(tiny_lm, studio_data_dir, "runs/20260101-000000-reward-rmrm", max_steps=1, eval_ratio=0))
    for start in (str(studio_data_dir / "runs/20260101-000000-reward-rmrm/output"),
                  "job:20260101-000000-reward-rmrm"):
        with pytest.raises(FieldError) as e:
            dpo.validate_config(_cfg(start, studio_data_dir, "runs/v"))
        assert e.value.field == "model_name_or_path" and "reward" in str(e.value)
    with pytest.raises(FieldError) as e:
        dpo.validate_config(_cfg(tiny_lm, studio_data_dir, "runs/v", loss_type="kto"))
    assert e.value.field == "loss_type"


@pytest.mark.timeout(1200)
def test_demo_recipe_from_the_demo_sft_adapter_learns_the_preference(demo_adapter, demo_sft_run, prepared_data_dir):
    """The CPU demo DPO recipe continuing the demo SFT adapter: held-out preference accuracy and margin rise, and
    the greedy answer to a held-out prompt changes."""
    import os
    import subprocess
    import sys
    import time

    from backends.common import data as datalib
    from backends.common import modeling
    from conftest import ROOT

    recipe = ROOT / "presets/recipes/cpu-demo-smollm2-dpo.yaml"
    run = f"{demo_sft_run.name}-dpo"
    env = {**os.environ, "OMP_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "backends.dpo", "--config", str(recipe), "--data_dir",
                           str(prepared_data_dir), "--run_dir", run, "--model_name_or_path", str(demo_adapter)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200, check=False)
    took = time.time() - t0
    try:
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        out = prepared_data_dir / run / "output"
        m = json.loads((out / "studio.json").read_text())["metrics"]
        print(f"dpo demo: {took:.0f}s, accuracy {m['first_eval_rewards/accuracies']:.2f} -> "
              f"{m['eval_rewards/accuracies']:.2f}, margin {m['first_eval_rewards/margins']:.2f} -> "
              f"{m['eval_rewards/margins']:.2f}")
        assert m["eval_rewards/accuracies"] >= 0.8 and m["eval_rewards/accuracies"] > m["first_eval_rewards/accuracies"]
        assert m["eval_rewards/margins"] > m["first_eval_rewards/margins"] + 0.5
        prompt = "How much is 41 plus 16?"  # not a row of demo_preference.jsonl
        answers = []
        for folder in (demo_adapter, out):
            model, tok, _ = modeling.load_trained(folder)
            answers.append(modeling.greedy(model, tok, datalib.format_prompt(prompt, "chat", tok), 24))
        print("sft:", answers[0], "| dpo:", answers[1])
        assert answers[0] != answers[1]
    finally:
        import shutil

        shutil.rmtree(prepared_data_dir / run, ignore_errors=True)


def test_sft_then_reward_and_dpo_jobs_through_the_engine(engine, studio_data_dir, tiny_lm):
    """engine.submit("reward"/"dpo") with `job:<id>` of a finished SFT job: the path the pipeline takes."""
    from app.jobs import LaunchSpec
    from backends.infer import chat
    from conftest import wait_for

    spec = LaunchSpec(launcher="python", preset="cpu")
    small = dict(max_seq_len=128, logging_steps=1, save_steps=100, per_device_eval_batch_size=10)

    def run(kind, **cfg):
        job_id = engine.submit(kind, {"data_dir": str(studio_data_dir), **small, **cfg}, spec)
        job = wait_for(lambda: (j := engine.get(job_id))["status"] not in ("queued", "running") and j, 300,
                       interval=1.0, what=f"{kind} job {job_id}")
        assert job["status"] == "succeeded", f"{job['error']}\n{engine.read_log_tail(job_id)[-3000:]}"
        return job_id, Path(job["run_dir"]) / "output"

    sft_id, _ = run("sft", model_name_or_path=str(tiny_lm), max_steps=2, eval_ratio=0)
    _, rm_out = run("reward", model_name_or_path=f"job:{sft_id}", max_steps=2, eval_ratio=0.05)
    assert chat.is_reward_model(rm_out) and json.loads((rm_out / "studio.json").read_text())["kind"] == "reward"
    _, dpo_out = run("dpo", model_name_or_path=f"job:{sft_id}", max_steps=2, eval_ratio=0.05)
    assert json.loads((dpo_out / "studio.json").read_text())["kind"] == "dpo"
    assert (dpo_out / "adapter_config.json").is_file()
