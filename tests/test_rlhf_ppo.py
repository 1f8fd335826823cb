"""PPO (DeepSpeed-Chat step 3, backends/rlhf): the losses on hand-computed tensors, the loop on tiny random models
(metrics, samples, output, stop + resume, DeepSpeed ZeRO-2 on 2 processes), the named-field refusals, and one
short learning run on SmolLM2."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backends.common.errors import FieldError
from backends.rlhf import losses
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}


# ------------------------------------------------------------------------------------------ losses
def test_gae_matches_the_recurrence_by_hand():
    values = torch.tensor([[0.5, 1.0, -0.5, 2.0]])
    rewards = torch.tensor([[0.0, 0.1, -0.2, 1.5]])
    g, lam, start = 0.9, 0.8, 1
    adv, ret = losses.advantages_and_returns(values, rewards, start, gamma=g, lam=lam)
    a3 = 1.5 - 2.0
    a2 = -0.2 + g * 2.0 - (-0.5) + g * lam * a3
    a1 = 0.1 + g * (-0.5) - 1.0 + g * lam * a2
    assert adv.shape == (1, 3)
    assert torch.allclose(adv, torch.tensor([[a1, a2, a3]]), atol=1e-6)
    assert torch.allclose(ret, torch.tensor([[a1 + 1.0, a2 - 0.5, a3 + 2.0]]), atol=1e-6)
    # DS-Chat's defaults gamma 1, lam 0.95
    adv, _ = losses.advantages_and_returns(values, rewards, start)
    assert adv[0, -1].item() == pytest.approx(-0.5) and adv[0, 0].item() == pytest.approx(
        0.1 + -0.5 - 1.0 + 0.95 * (-0.2 + 2.0 + 0.5 + 0.95 * -0.5), abs=1e-6)


def test_kl_rewards_put_the_clipped_score_on_the_last_answer_token():
    # 2 rows, prompt width P=3 -> start 2; per-token tensors have S-1 = 6 positions
    logp = torch.tensor([[0.0, 0.0, -1.0, -1.0, -1.0, -1.0], [0.0, 0.0, -2.0, -2.0, -2.0, -2.0]])
    ref = torch.tensor([[0.0, 0.0, -1.5, -0.5, -1.0, -1.0], [0.0, 0.0, -2.0, -2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])  # row 0: answer of 2 tokens, row 1: 4
    score = torch.tensor([9.0, -0.25])
    r = losses.compute_rewards(logp, ref, score, mask, 2, kl_ctl=0.1, clip_reward_value=5.0)
    expected0 = [0.0, 0.0, -0.1 * 0.5, -0.1 * -0.5 + 5.0, 0.0, 0.0]  # clipped 9 -> 5 on position 3, zero after
    expected1 = [0.0, 0.0, 0.0, 0.0, 0.0, -0.25]
    assert torch.allclose(r, torch.tensor([expected0, expected1]), atol=1e-6)
    assert losses.answer_ends(mask, 2).tolist() == [4, 6]


def test_policy_loss_clips_only_outside_the_range():
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 5.0]])
    small = torch.tensor([[0.1, 0.1, 3.0]])  # ratio 1.105 (inside 1 ± 0.2); position 2 masked
    loss = losses.actor_loss_fn(small, old, adv, mask, cliprange=0.2)
    r = torch.exp(torch.tensor(0.1)).item()
    assert loss.item() == pytest.approx((-1.0 * r + 1.0 * r) / 2, abs=1e-6)
    big = torch.tensor([[1.0, 1.0, 0.0]])  # ratio e = 2.718: A>0 is clipped to 1.2, A<0 takes the unclipped max
    loss = losses.actor_loss_fn(big, old, adv, mask, cliprange=0.2)
    assert loss.item() == pytest.approx((-1.0 * 1.2 + 1.0 * torch.e) / 2, abs=1e-5)
    # the gradient is zero where the clip is active (A > 0, ratio > 1 + eps)
    x = big.clone().requires_grad_(True)
    losses.actor_loss_fn(x, old, adv, mask, cliprange=0.2).backward()
    assert x.grad[0, 0].item() == 0.0 and x.grad[0, 1].item() != 0.0 and x.grad[0, 2].item() == 0.0


def test_value_loss_takes_the_worse_of_clipped_and_unclipped():
    mask = torch.tensor([[1.0, 1.0]])
    old = torch.tensor([[0.0, 0.0]])
    ret = torch.tensor([[1.0, 1.0]])
    v = torch.tensor([[0.1, 0.9]])  # 0.1 inside the clip; 0.9 clipped to 0.2 -> (0.2-1)^2 = 0.64 > 0.01
    loss = losses.critic_loss_fn(v, old, ret, mask, cliprange_value=0.2)
    assert loss.item() == pytest.approx(0.5 * ((0.9 ** 2) + 0.8 ** 2) / 2, abs=1e-6)
    assert losses.masked_mean(torch.tensor([[1.0, 3.0, 100.0]]), torch.tensor([[1, 1, 0]])).item() == 2.0


# ----------------------------------------------------------------------------------- tiny models
@pytest.fixture(scope="module")
def tiny_rm(tiny_lm, tmp_path_factory) -> Path:
    """A one-label classifier on the tiny random LM (same tokenizer): a reward model / critic in milliseconds."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = tmp_path_factory.mktemp("tiny-rm")
    torch.manual_seed(1)
    m = AutoModelForSequenceClassification.from_pretrained(str(tiny_lm), num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(tiny_lm))
    m.config.pad_token_id = tok.pad_token_id
    m.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def tiny_config(tiny_lm, tiny_rm, run_dir, **kw) -> dict:
    return {"model_name_or_path": str(tiny_lm), "reward_model": str(tiny_rm), "run_dir": str(run_dir),
            "max_prompt_seq_len": 64, "max_answer_seq_len": 8, "per_device_generation_batch_size": 2,
            "per_device_training_batch_size": 2, "actor_lora_dim": 4, "critic_lora_dim": 4, "num_warmup_steps": 0,
            "max_steps": 3, "save_steps": 100, "print_answers": True, **kw}


def ppo_cmd(cfg_path: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "backends.rlhf.ppo", "--config", str(cfg_path), *extra]


def read_jsonl(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_stop_mid_run_then_resume_continues_and_writes_a_loadable_policy(tiny_lm, tiny_rm, tmp_path):
    """SIGTERM -> the iteration finishes, a checkpoint is saved, exit 143; `latest` continues the iteration count;
    metrics.jsonl has DS-Chat's numbers, samples.jsonl the answers, output/ loads as a policy."""
    import yaml

    run = tmp_path / "run"
    cfg = tmp_path / "ppo.yaml"
    # far more iterations than the stop needs (a tiny iteration takes 0.2 s on an idle machine); the resume then
    # runs two more than the stop left
    cfg.write_text(yaml.safe_dump(tiny_config(tiny_lm, tiny_rm, run, max_steps=60, enable_ema=True)))
    proc = subprocess.Popen(ppo_cmd(cfg), cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    metrics = run / "metrics.jsonl"
    wait_for(lambda: metrics.is_file() and any("reward_mean" in r for r in read_jsonl(metrics)), 120,
             what="the first PPO iteration")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-3000:]
    stopped_at = [r for r in read_jsonl(metrics) if "reward_mean" in r][-1]["step"]
    assert 1 <= stopped_at < 60, out[-2000:]
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}" / "ppo_state.pt").is_file()

    end = stopped_at + 2
    res = subprocess.run(ppo_cmd(cfg, "--resume_from_checkpoint", "latest", "--max_steps", str(end)), cwd=ROOT, env=ENV,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:]
    assert "Average reward score:" in res.stdout and "Actor Loss:" in res.stdout and "--- ans    -->" in res.stdout
    rows = read_jsonl(metrics)
    start = [r for r in rows if r.get("event") == "start"][-1]
    assert start.get("resumed_from_step") == stopped_at
    steps = [r["step"] for r in rows if "reward_mean" in r]
    assert steps == list(range(1, end + 1)), steps  # each iteration once: resumed at stopped_at + 1
    last = [r for r in rows if "reward_mean" in r][-1]
    for k in ("reward_mean", "reward_ema", "actor_loss", "critic_loss", "unsup_loss", "kl", "answer_len",
              "gen_seconds", "train_seconds", "e2e_seconds", "tokens_per_s"):
        assert isinstance(last.get(k), (int, float)), (k, last)
    samples = read_jsonl(run / "samples.jsonl")
    assert {"step", "prompt", "answer", "reward"} <= set(samples[0]) and len(samples) >= end * 2

    from backends.common import modeling

    info = modeling.read_studio_json(run / "output")
    assert info["kind"] == "rlhf_ppo" and info["status"] == "completed" and info["adapter"] is True
    model, tok, _ = modeling.load_trained(run / "output")
    assert modeling.greedy(model, tok, "Hi", max_new_tokens=3) is not None
    assert (run / "output" / "critic" / "adapter_config.json").is_file()
    assert (run / "output" / "actor_ema" / "adapter_model.safetensors").is_file()


def test_checkpoint_restores_actor_critic_and_optimizers(tiny_lm, tiny_rm, tmp_path):
    from backends.common import runner
    from backends.rlhf import engine as englib
    from backends.rlhf import ppo

    cfg = runner.ensure_args(ppo.PPOArgs, tiny_config(tiny_lm, tiny_rm, tmp_path / "r"))
    r = ppo.resolve(cfg)
    a = englib.build(cfg, r, total_iters=10, log=lambda *_: None)
    exp = ppo.generate_experience(a, ["Hello there", "What is 2+2?"], cfg, seed=0)
    assert not exp["reused"]
    # every answer an immediate end-of-sequence: DS-Chat scores the last valid answers again (every rank keeps
    # running the same forward passes, which ZeRO-3 needs)
    actor = englib.unwrap(a.actor)
    real_generate = actor.generate
    actor.generate = lambda **kw: torch.cat([kw["input_ids"], torch.full_like(kw["input_ids"][:, :2],
                                                                              a.tokenizer.eos_token_id)], 1)
    again = ppo.generate_experience(a, ["Something else entirely"], cfg, seed=1)
    actor.generate = real_generate
    assert again["reused"] and again["answers"] == exp["answers"] and torch.equal(again["input_ids"], exp["input_ids"])
    ppo.train_rlhf(a, exp, cfg)
    a.save(tmp_path, main=True)
    b = englib.build(cfg, r, total_iters=10, log=lambda *_: None)
    before = englib.trainable_state(b.actor)
    b.load(tmp_path)
    for x, y in ((a.actor, b.actor), (a.critic, b.critic)):
        sa, sb = englib.trainable_state(x), englib.trainable_state(y)
        assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(before[k], englib.trainable_state(b.actor)[k]) for k in before)
    oa, ob = a.actor_opt.state_dict()["state"], b.actor_opt.state_dict()["state"]
    assert oa and all(torch.equal(oa[k]["exp_avg"], ob[k]["exp_avg"]) for k in oa)
    assert b.critic_opt.state_dict()["state"] and b.actor_sched.last_epoch == a.actor_sched.last_epoch == 1
    # DS-Chat's unsupervised mix: the LM loss of text blocks, its own actor step
    text = tmp_path / "pretrain.jsonl"
    text.write_text("".join(json.dumps({"text": f"The number {i} comes after {i - 1}."}) + "\n" for i in range(40)))
    blocks = ppo.unsupervised_blocks([text], a.tokenizer, 16)
    assert blocks and all(len(x) == 16 for x in blocks)
    w0 = englib.trainable_state(a.actor)
    loss = ppo.train_unsupervised(a, blocks[:2], cfg)
    assert loss > 0 and any(not torch.equal(w0[k], v) for k, v in englib.trainable_state(a.actor).items())
    # the reward model is the critic with its adapter off: training the critic leaves the scores alone
    with a.reward_model() as rm, b.reward_model() as rm0:
        t = a.tokenizer(["Hello there, friend"], return_tensors="pt")
        s = englib.token_values(rm, t["input_ids"], t["attention_mask"])
        s0 = englib.token_values(rm0, t["input_ids"], t["attention_mask"])
    fresh, _ = englib.load_reward_model(str(tiny_rm))
    assert torch.allclose(s, englib.token_values(fresh, t["input_ids"], t["attention_mask"]), atol=1e-5)
    assert torch.allclose(s, s0, atol=1e-5)


# ----------------------------------------------------------------------------------------- refusals
def _fake_model(folder: Path, config: dict, tokenizer_from: Path | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").write_bytes(b"")
    if tokenizer_from is not None:
        for f in tokenizer_from.iterdir():
            if f.name.startswith(("tokenizer", "special_tokens", "chat_template")):
                (folder / f.name).write_bytes(f.read_bytes())
    return folder


def test_bad_input_names_the_field(tiny_lm, tiny_rm, tmp_path):
    from backends.rlhf.ppo import validate_config

    base = tiny_config(tiny_lm, tiny_rm, tmp_path / "r")

    def refused(**kw) -> FieldError:
        with pytest.raises(FieldError) as e:
            validate_config({**base, **kw})
        return e.value

    e = refused(reward_model="")
    assert e.field == "reward_model" and "pick a finished Reward model job" in e.message
    e = refused(reward_model=str(tiny_lm))  # a causal LM
    assert e.field == "reward_model" and "not a reward model" in e.message
    two = json.loads((tiny_rm / "config.json").read_text())
    two["id2label"] = {"0": "a", "1": "b"}
    e = refused(reward_model=str(_fake_model(tmp_path / "two", two, tiny_rm)))
    assert e.field == "reward_model" and "2 labels" in e.message
    other = _fake_model(tmp_path / "other-tok", json.loads((tiny_rm / "config.json").read_text()), tiny_rm)
    tj = json.loads((other / "tokenizer.json").read_text())
    vocab = tj["model"]["vocab"]
    a, b = list(vocab)[100:102]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    (other / "tokenizer.json").write_text(json.dumps(tj))
    e = refused(reward_model=str(other))
    assert e.field == "reward_model" and "tokenizes differently" in e.message
    e = refused(max_prompt_seq_len=2000, max_answer_seq_len=100)
    assert e.field == "max_answer_seq_len" and "2100" in e.message and "2048" in e.message
    e = refused(deepspeed="presets/deepspeed/zero2_offload.json", actor_lora_dim=0)
    assert e.field == "actor_zero_stage" and "training instability" in e.message
    validate_config({**base, "deepspeed": "presets/deepspeed/zero2_offload.json"})  # with actor LoRA: fine
    e = refused(actor_zero_stage=2)
    assert e.field == "actor_zero_stage" and "DeepSpeed" in e.message


# ------------------------------------------------------------------------------- DeepSpeed, 2 ranks
def share_torch_extensions(prepared_data_dir: Path, studio_data_dir: Path) -> None:
    """DeepSpeed's CPU comm op (shm_comm) is compiled once per data dir: reuse the session's build."""
    built = prepared_data_dir / "torch_extensions"
    if built.is_dir():
        (studio_data_dir / "cache").mkdir(exist_ok=True)
        (studio_data_dir / "cache" / "torch_extensions").symlink_to(built, target_is_directory=True)


def test_deepspeed_zero2_on_two_cpu_processes_finishes(engine, studio_data_dir, prepared_data_dir, tiny_lm, tiny_rm):
    from app.jobs.launcher import LaunchSpec
    from tests.test_sft_engine import wait_done

    share_torch_extensions(prepared_data_dir, studio_data_dir)
    cfg = tiny_config(tiny_lm, tiny_rm, "", data_dir=str(studio_data_dir), max_steps=2, save_steps=1,
                      print_answers=False)
    cfg.pop("run_dir")
    job_id = engine.submit("rlhf_ppo", cfg, LaunchSpec(launcher="deepspeed", preset="cpu", num_processes=2,
                                                       zero_stage=2))
    job = wait_done(engine, job_id, 600)
    log = engine.read_log_tail(job_id)
    assert job["status"] == "succeeded", log[-4000:]
    assert "ZeRO-2" in log and "2 process" in log
    out = Path(job["run_dir"]) / "output"
    assert json.loads((out / "studio.json").read_text())["kind"] == "rlhf_ppo"
    assert (out / "adapter_model.safetensors").is_file()
    ck = Path(job["run_dir"]) / "checkpoints" / "checkpoint-1"  # DeepSpeed's collective save of both engines
    assert (ck / "studio-state.json").is_file() and (ck / "actor" / "state").is_dir() and (ck / "critic" / "state").is_dir()


def test_deepspeed_zero3_on_two_cpu_processes_saves_gathered_weights_and_resumes(engine, studio_data_dir,
                                                                                  prepared_data_dir, tiny_lm, tiny_rm):
    """DS-Chat's 13b/66b step 3 runs ZeRO-3: a full-weight actor (its frozen reference in a ZeRO-3 inference engine,
    generation synced across the ranks) with an EMA copy, and a LoRA critic, on 2 CPU processes. The saved actor is
    the whole model gathered from both ranks (it loads, and training moved it); a second job resumes from the
    ZeRO-3 checkpoint and continues the step count."""
    from transformers import AutoModelForCausalLM

    from app.jobs.launcher import LaunchSpec
    from tests.test_sft_engine import wait_done

    share_torch_extensions(prepared_data_dir, studio_data_dir)
    spec = LaunchSpec(launcher="deepspeed", preset="cpu", num_processes=2, zero_stage=3)
    cfg = tiny_config(tiny_lm, tiny_rm, "", data_dir=str(studio_data_dir), max_steps=3, save_steps=2,
                      print_answers=False, actor_lora_dim=0, actor_learning_rate=1e-3, enable_ema=True)
    cfg.pop("run_dir")
    first = wait_done(engine, engine.submit("rlhf_ppo", cfg, spec), 600)
    log = engine.read_log_tail(first["id"])
    assert first["status"] == "succeeded", log[-4000:]
    assert "actor ZeRO-3, critic ZeRO-3, 2 process(es), generation synced across ranks" in log
    out = Path(first["run_dir"]) / "output"
    start = AutoModelForCausalLM.from_pretrained(str(tiny_lm))
    for folder in (out, out / "actor_ema"):
        trained = AutoModelForCausalLM.from_pretrained(str(folder))
        moved = [n for n, p in trained.named_parameters() if not torch.equal(p, start.get_parameter(n))]
        assert moved and all(p.numel() == start.get_parameter(n).numel() for n, p in trained.named_parameters())
    assert (out / "critic" / "adapter_model.safetensors").is_file()
    ck = Path(first["run_dir"]) / "checkpoints" / "checkpoint-2"
    assert (ck / "actor" / "state").is_dir() and (ck / "critic" / "state").is_dir()

    again = wait_done(engine, engine.submit("rlhf_ppo", {**cfg, "max_steps": 4, "resume_from_checkpoint": str(ck)},
                                            spec), 600)
    log = engine.read_log_tail(again["id"])
    assert again["status"] == "succeeded", log[-4000:]
    steps = [r["step"] for r in read_jsonl(Path(again["run_dir"]) / "metrics.jsonl") if "reward_mean" in r]
    assert steps == [3, 4], steps


# ------------------------------------------------------------------------------ acceptance: SmolLM2
def greedy_rewards(policy_dir: Path, rm_dir: Path, prompts: list[str], n_tokens: int, template: str) -> list[float]:
    """Mean reward-model score of a policy's greedy answers (the A/B tab's rendering: prompt text + answer)."""
    from backends.common import modeling
    from backends.rlhf import engine as englib

    model, tok, _ = modeling.load_trained(policy_dir)
    tok.padding_side = "left"
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=n_tokens, do_sample=False, use_cache=True,
                             pad_token_id=tok.pad_token_id)
    answers = tok.batch_decode(out[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    del model
    rm, rtok = englib.load_reward_model(str(rm_dir))
    texts = [englib.reward_text(p, a, template, rtok.eos_token or "") for p, a in zip(prompts, answers)]
    return englib.score_texts(rm, rtok, texts).tolist()


def test_ppo_raises_the_reward_of_greedy_answers_on_held_out_prompts(demo_pipeline, demo_adapter, demo_rm_job):
    """Step 3 of the demo pipeline (the PPO demo recipe from the demo SFT adapter against the demo reward model, both
    named as job:<id>): held-out prompts' mean RM score of the greedy answers is higher after PPO than before, and
    the KL to the reference is reported and finite."""
    import math

    from backends.common import config as C
    from backends.common import data as datalib
    from backends.common import modeling
    from backends.rlhf.ppo import PPOArgs

    assert demo_rm_job.job["status"] == "succeeded", demo_rm_job.log[-2000:]
    job, run = demo_pipeline.step(3)
    assert job["kind"] == "rlhf_ppo" and job["status"] == "succeeded", demo_pipeline.log(3)[-4000:]
    cfg = C.load_config(PPOArgs, run / "config.yaml", kind="rlhf_ppo")
    tok = modeling.load_tokenizer(str(demo_adapter))
    _, held_out = datalib.load_prompt_data(cfg, datalib.resolve_datasets(cfg.dataset), tok, phase=2)
    prompts = list(held_out["prompt"])
    before = greedy_rewards(demo_adapter, demo_rm_job.output, prompts, cfg.max_answer_seq_len, cfg.template)
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "reward_mean" in r]
    assert len(rows) == cfg.max_steps and all(math.isfinite(r["kl"]) for r in rows), rows
    after = greedy_rewards(run / "output", demo_rm_job.output, prompts, cfg.max_answer_seq_len, cfg.template)
    mb, ma = sum(before) / len(before), sum(after) / len(after)
    print(f"held-out greedy reward {mb:.3f} -> {ma:.3f}; rollout reward "
          f"{[round(r['reward_mean'], 3) for r in rows]}; kl {[round(r['kl'], 4) for r in rows]}")
    assert ma > mb, (before, after)


