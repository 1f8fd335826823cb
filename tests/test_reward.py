"""Reward model backend (DeepSpeed-Chat step 2): engine-level on the tiny random LM, one acceptance run on SmolLM2."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backends import reward, sft
from backends.common.errors import FieldError
from backends.common.metrics import read_metrics
from conftest import ROOT

RM_RECIPE = ROOT / "presets" / "recipes" / "cpu-demo-smollm2-rm.yaml"


def _cfg(model, dd, run, **kw):
    base = dict(model_name_or_path=str(model), data_dir=str(dd), run_dir=run, max_steps=3, eval_steps=2,
                logging_steps=1, max_seq_len=128, per_device_train_batch_size=4, per_device_eval_batch_size=10,
                save_steps=100, learning_rate=1e-3)
    return {**base, **kw}


def _sft_job(tiny_lm, dd, job_id):
    rec = sft.train(dict(model_name_or_path=str(tiny_lm), data_dir=str(dd), run_dir=f"runs/{job_id}",
                         max_steps=2, max_seq_len=64, eval_ratio=0, logging_steps=1, save_steps=100))
    assert rec["status"] == "completed"
    return dd / "runs" / job_id / "output"


def test_reward_on_tiny_lm_writes_a_plain_reward_model_and_ds_chat_metrics(tiny_lm, studio_data_dir):
    from transformers import AutoModelForSequenceClassification

    from backends.infer import chat

    rec = reward.train(_cfg(tiny_lm, studio_data_dir, "runs/rm"))
    run = studio_data_dir / "runs/rm"
    assert rec["status"] == "completed" and rec["exit_code"] == 0
    lines = read_metrics(run / "metrics.jsonl")
    evals = [r for r in lines if r.get("eval_accuracy") is not None and "event" not in r]
    assert [r["step"] for r in evals] == [0, 2, 3]  # before training, every eval_steps, after the last step
    for r in evals:
        for k in reward.METRICS:
            assert isinstance(r[k], float), (k, r)
        assert abs(r["eval_margin"] - (r["eval_chosen_score"] - r["eval_rejected_score"])) < 1e-4
    out = run / "output"
    assert chat.is_reward_model(out) and not (out / "adapter_config.json").exists()  # LoRA merged
    info = json.loads((out / "studio.json").read_text())
    assert info["kind"] == "reward" and info["status"] == "completed" and info["metrics"]["eval_accuracy"] is not None
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    scores = chat.scorer(str(out)).score("Which city is the capital of France?", ["Paris.", "Rome."])
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_reward_starts_from_an_sft_lora_job_merged(tiny_lm, studio_data_dir):
    job = "20260101-000000-sft-tiny"
    _sft_job(tiny_lm, studio_data_dir, job)
    rec = reward.train(_cfg(f"job:{job}", studio_data_dir, "runs/rm-from-sft", max_steps=1))
    assert rec["status"] == "completed"
    info = json.loads((studio_data_dir / "runs/rm-from-sft/output/studio.json").read_text())
    assert info["start_adapter"].endswith(f"{job}/output") and info["base_model"] == str(tiny_lm.resolve())


def test_reward_validation_names_the_field(tiny_lm, studio_data_dir):
    dd = studio_data_dir

    def bad(field, **kw):
        with pytest.raises(FieldError) as e:
            reward.validate_config(_cfg(kw.pop("model", tiny_lm), dd, "runs/v", **kw))
        assert e.value.field == field, e.value
        return str(e.value)

    (dd / "norej.jsonl").write_text('{"prompt": "a", "chosen": "b"}\n{"prompt": "c", "chosen": "d"}\n')
    assert "kind preference" in bad("rejected_column", dataset="norej.jsonl")
    (dd / "same.jsonl").write_text('{"prompt": "a", "chosen": "b", "rejected": "b"}\n'
                                   '{"prompt": "c", "chosen": "d", "rejected": "e"}\n'
                                   '{"prompt": "f", "chosen": "g", "rejected": "h"}\n')
    assert "rows 1" in bad("drop_identical", dataset="same.jsonl")
    reward.validate_config(_cfg(tiny_lm, dd, "runs/v", dataset="same.jsonl", drop_identical=True))
    assert "2048" in bad("max_seq_len", max_seq_len=4096)
    (dd / "runs/20260101-000000-sft-run0/output").mkdir(parents=True)  # still running: no studio.json
    assert "not finished" in bad("model_name_or_path", model="job:20260101-000000-sft-run0")
    out = dd / "runs/20260101-000000-reward-rm00/output"
    out.mkdir(parents=True)
    (out / "studio.json").write_text(json.dumps({"kind": "reward", "status": "completed"}))
    assert "'reward' job" in bad("model_name_or_path", model="job:20260101-000000-reward-rm00")


@pytest.mark.timeout(1500)
def test_demo_recipe_through_the_engine_learns_the_preference_on_smollm2(demo_rm_job):
    """The CPU demo recipe, submitted to the job engine like the tab does: held-out accuracy >= 0.85 and above its
    start, the chosen - rejected margin grows, and the result is a 1-label reward model the A/B tab can use."""
    from backends.common import modeling
    from backends.infer import chat

    job = demo_rm_job.job
    assert job["status"] == "succeeded", f"{job['error']}\n{demo_rm_job.log[-3000:]}"
    m = json.loads((demo_rm_job.output / "studio.json").read_text())["metrics"]
    print(f"reward demo: accuracy {m['first_eval_accuracy']:.2f} -> {m['eval_accuracy']:.2f}, "
          f"margin {m['first_eval_margin']:.2f} -> {m['eval_margin']:.2f}")
    assert m["eval_accuracy"] >= 0.85 and m["eval_accuracy"] > m["first_eval_accuracy"]
    assert m["eval_margin"] > m["first_eval_margin"] + 1.0
    assert m["eval_chosen_score"] > m["eval_rejected_score"]
    assert modeling.check_reward_model(str(demo_rm_job.output)) and chat.is_reward_model(demo_rm_job.output)
    curve = [r for r in demo_rm_job.engine.read_metrics(job["id"]) if r.get("eval_accuracy") is not None]
    assert len(curve) >= 2 and curve[0]["step"] == 0  # before training and at the end: the tab's accuracy curve


def test_sigterm_stops_with_a_checkpoint_then_latest_resumes(tiny_lm, studio_data_dir):
    """Through the runner: SIGTERM -> checkpoint + end line "stopped" + exit 143; `latest` continues from it."""
    import signal

    base = [sys.executable, "-m", "backends.reward", "--model_name_or_path", str(tiny_lm), "--data_dir",
            str(studio_data_dir), "--run_dir", "runs/rm-stop", "--max_seq_len", "128", "--eval_ratio", "0",
            "--logging_steps", "1", "--save_steps", "100000", "--per_device_train_batch_size", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([*base, "--max_steps", "100000"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("step 3/"):
            proc.send_signal(signal.SIGTERM)
            break
    rest = proc.stdout.read()
    assert proc.wait(timeout=120) == 143, rest[-2000:]
    run = studio_data_dir / "runs/rm-stop"
    ckpts = sorted(run.glob("checkpoints/checkpoint-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "trainer_state.json").is_file()
    stopped_at = int(ckpts[0].name.split("-")[1])
    assert read_metrics(run / "metrics.jsonl")[-1]["status"] == "stopped"
    again = subprocess.run([*base, "--max_steps", str(stopped_at + 2), "--resume_from_checkpoint", "latest"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, (again.stdout + again.stderr)[-2000:]
    recs = read_metrics(run / "metrics.jsonl")
    assert recs[-1]["status"] == "completed" and recs[-1]["step"] == stopped_at + 2
    assert json.loads((run / "output/studio.json").read_text())["status"] == "completed"


def test_the_studio_scores_answers_on_the_text_trl_trained_the_reward_model_on(tiny_reward_model, tmp_path):
    """TRL's RewardTrainer appends eos_token to every answer and scores the last non-padding token; the A/B tab,
    score-a-pair and the RLHF reward functions score through RewardScorer, which must read the same tokens. With
    SmolLM2 (pad == eos) the eos is never scored; with a tokenizer whose pad differs (OPT: pad 1, eos 2) it is."""
    import shutil

    import torch
    from transformers import AutoConfig, AutoTokenizer

    from backends.infer import chat

    rm = shutil.copytree(tiny_reward_model, tmp_path / "rm-opt-like-pad")
    tok = AutoTokenizer.from_pretrained(rm)
    tok.pad_token = "<|endoftext|>"
    tok.save_pretrained(rm)
    cfg = AutoConfig.from_pretrained(rm)
    cfg.pad_token_id = tok.pad_token_id
    cfg.save_pretrained(rm)
    assert tok.pad_token_id != tok.eos_token_id
    sc = chat.RewardScorer(str(rm))
    prompt = chat.render([], "What is the capital of France?", "chat", sc.tok)
    answers = ["Paris.", "I do not know, sorry."]
    got = sc.score(prompt, answers)
    for answer, score in zip(answers, got):
        ids = sc.tok(prompt + answer + sc.tok.eos_token, return_tensors="pt")  # TRL's add_eos + tokenize
        with torch.no_grad():
            want = float(sc.model(**ids).logits[0, 0])
        assert abs(score - want) < 1e-4, (answer, score, want)
