"""Issue 16's acceptance: the CPU demo pipeline (cpu-demo-smollm2-rlhf: SFT -> reward model -> PPO on the bundled
SmolLM2) run end to end through the engine (conftest's demo_pipeline, shared with the SFT, reward, DPO, GRPO and PPO
acceptance tests), and its final actor answering in the A/B tab of a real page.

What each step learnt is asserted where the step's own recipe is tested: test_sft (held-out loss), test_reward
(held-out accuracy >= 0.85), test_rlhf_ppo (held-out greedy reward above the SFT policy's)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest


def test_the_demo_pipeline_runs_its_three_steps_in_order_each_on_the_one_before(demo_pipeline):
    st = demo_pipeline.status
    jobs = demo_pipeline.jobs
    logs = "\n".join(f"--- step {n}: {j['status']} {j.get('error') or ''}\n{demo_pipeline.log(n)[-1500:]}"
                     for n, j in enumerate(jobs, 1))
    assert st["status"] == "succeeded" and [j["status"] for j in jobs] == ["succeeded"] * 3, logs
    sft, rm, ppo = jobs
    assert [j["kind"] for j in jobs] == ["sft", "reward", "rlhf_ppo"]
    assert rm["meta"]["after"] == sft["id"] and ppo["meta"]["after"] == rm["id"]
    assert ppo["config"]["model_name_or_path"] == f"job:{sft['id']}"
    assert ppo["config"]["reward_model"] == f"job:{rm['id']}"
    gaps = [b["started_at"] - a["ended_at"] for a, b in zip(jobs, jobs[1:])]
    minutes = [(j["ended_at"] - j["started_at"]) / 60 for j in jobs]
    print(f"demo pipeline: {demo_pipeline.seconds / 60:.1f} min; steps {[round(m, 1) for m in minutes]} min; "
          f"engine gap between steps {[round(g, 2) for g in gaps]} s")
    assert all(0 <= g <= 5 for g in gaps), gaps  # the next step starts on the engine's next tick

    # each step's result is its own kind, and step 3's actor is a LoRA adapter on the SFT result's base
    info = [json.loads((Path(j["run_dir"]) / "output" / "studio.json").read_text()) for j in jobs]
    assert [i["kind"] for i in info] == ["sft", "reward", "rlhf_ppo"]
    assert info[0]["metrics"]["eval_loss"] < info[0]["metrics"]["first_eval_loss"]
    assert info[1]["metrics"]["eval_accuracy"] >= 0.85
    assert info[2]["adapter"] is True and (Path(ppo["run_dir"]) / "output" / "adapter_model.safetensors").is_file()

    # pipeline.sh runs the three steps' command.sh in order (run_step <n> <title> <run dir>), stopping at a failure
    sh = (demo_pipeline.data_dir / "pipelines" / st["id"] / "pipeline.sh").read_text()
    at = [sh.index(f"run_step {n} ") for n in (1, 2, 3)]
    assert at == sorted(at) and all(j["run_dir"] in sh for j in jobs) and "set -euo pipefail" in sh, sh


@pytest.mark.browser
@pytest.mark.timeout(600)
def test_the_final_actor_answers_in_the_ab_tab_under_the_pipelines_name(demo_pipeline, start_studio, page):
    ppo = demo_pipeline.jobs[2]
    assert ppo["status"] == "succeeded"
    studio = start_studio("--no-prepare", "--offline", data_dir=demo_pipeline.data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="A/B compare").click()
    page.locator("#ab-tuned input").click()
    option = page.get_by_role("option", name=f"pipeline {demo_pipeline.status['name']}").filter(has_text=ppo["id"])
    option.first.wait_for(timeout=30_000)
    option.first.click()
    prompt = "What is the capital of France?"
    page.locator("#ab-prompt textarea").fill(prompt)
    page.locator("#ab-send").click()
    page.wait_for_function("() => document.querySelector('#ab-status').innerText.includes('Both answers')",
                           timeout=240_000)
    a, b = page.locator("#ab-chat-a").inner_text(), page.locator("#ab-chat-b").inner_text()
    assert prompt in a and prompt in b
    assert len(a.replace(prompt, "").strip()) > 0 and len(b.replace(prompt, "").strip()) > 0 and a != b, (a, b)
