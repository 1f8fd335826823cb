"""A tab that hosts several kinds (the RLHF tab: DPO, PPO, GRPO, ...): the stage dropdown shows one kind's form,
follows that kind's job and its extra panels; model fields list the finished jobs they accept."""
from __future__ import annotations

import json
from pathlib import Path

import fake_run
from app.tabs import training


def _with_samples(data_dir: Path, kind: str) -> str:
    job_id = fake_run.finished(data_dir, steps=6, eval_every=0, kind=kind)
    run = data_dir / "runs" / job_id
    rows = [{"step": s, "prompt": f"question {s}?", "answer": f"answer number {s}", "reward": 0.5 * s} for s in (2, 4, 6)]
    (run / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 8, "prom')
    return job_id


def test_samples_rows_are_newest_first_and_a_torn_line_is_skipped(tmp_path):
    (tmp_path / "samples.jsonl").write_text('{"step": 1, "prompt": "p", "answer": "a", "reward": 0.123456}\n'
                                            '{"step": 2, "prompt": "q", "answer": "b", "reward": -1}\n{"st')
    assert training.samples_rows(str(tmp_path)) == [[2, "q", "b", -1], [1, "p", "a", 0.1235]]
    assert training.samples_rows(str(tmp_path / "missing")) == []
    (tmp_path / "samples").mkdir()
    for i in range(3):
        (tmp_path / "samples" / f"step-{i}.png").write_bytes(b"")
    assert [c for _, c in training.gallery_items(str(tmp_path), n=2)] == ["step-2", "step-1"]


def test_stage_dropdown_switches_the_form_and_follows_that_kinds_job(start_studio, studio_data_dir, page):
    sft_job = fake_run.finished(studio_data_dir, steps=3, eval_every=0, kind="sft")
    b_job = _with_samples(studio_data_dir, "dpo_b")
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir, module="tests.studio_extra_kinds")
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="RLHF").click()
    page.locator("#rlhf-stage").wait_for(state="visible", timeout=30_000)
    # the tab opens on its first stage (the registry's order: PPO); the dropdown switches to DPO's form
    assert page.locator("#rlhf_ppo-train").is_visible() and not page.locator("#dpo-train").is_visible()
    page.locator("#rlhf-stage input").click()
    page.get_by_role("option", name="DPO / KTO (preference pairs, no reward model)").click()
    page.locator("#dpo-train").wait_for(state="visible", timeout=20_000)
    assert not page.locator("#rlhf_ppo-train").is_visible() and not page.locator("#dpo_b-train").is_visible()

    # the model field lists the finished SFT job as job:<id> (opened fresh: the list is refreshed on tab select)
    page.locator("#dpo-model_name_or_path input").click()
    page.get_by_role("option", name=f"fake · job:{sft_job}").wait_for(timeout=20_000)
    page.keyboard.press("Escape")

    page.locator("#rlhf-stage input").click()
    page.get_by_role("option", name="stage.dpo_b").click()
    page.locator("#dpo_b-train").wait_for(state="visible", timeout=20_000)
    assert not page.locator("#dpo-train").is_visible()
    # its own job: the status line, and the samples table, newest first (the torn last line is not shown)
    page.wait_for_function(f"() => (document.querySelector('#dpo_b-progress') || {{}}).innerText?.includes('{b_job}')",
                           timeout=30_000)
    page.wait_for_function("() => (document.querySelector('#dpo_b-samples') || {}).innerText?.includes('question 2?')",
                           timeout=30_000)
    text = page.locator("#dpo_b-samples").inner_text()
    assert text.index("question 6?") < text.index("answer number 6") < text.index("question 4?") < text.index(
        "question 2?")  # newest first, each row's prompt then its answer
    assert "Reward" in text and "question 8" not in text
    # back to DPO: its form again
    page.locator("#rlhf-stage input").click()
    page.get_by_role("option", name="DPO / KTO (preference pairs, no reward model)").click()
    page.locator("#dpo-train").wait_for(state="visible", timeout=20_000)

    # Jobs' Re-run with edits of the dpo_b job lands on the RLHF tab with the dpo_b stage shown and its form filled
    page.get_by_role("tab", name="Jobs").click()
    page.locator("#jobs-pick input").click()
    page.get_by_role("option", name=b_job).click()
    page.locator("#jobs-progress").get_by_text("succeeded").wait_for(timeout=30_000)
    page.locator("#jobs-rerun").click()
    page.locator("#dpo_b-train").wait_for(state="visible", timeout=30_000)
    assert not page.locator("#dpo-train").is_visible()
    assert page.locator("#rlhf-stage input").input_value() == "stage.dpo_b"
    assert page.locator("#dpo_b-max_steps input, #dpo_b-max_steps textarea").first.input_value() == "6"


def test_rlhf_tab_shows_a_ppo_jobs_curves_and_samples_and_the_sd_tab_its_validation_images(start_studio,
                                                                                            studio_data_dir, page):
    """The real RLHF tab opens on PPO (the first stage): a PPO job's reward / KL / loss curves and its latest sample
    answers; the SD distill LoRA tab shows a job's validation images in its gallery."""
    from PIL import Image

    from app import kinds
    from conftest import doc_screenshot

    ppo = _with_samples(studio_data_dir, "rlhf_ppo")
    run = studio_data_dir / "runs" / ppo
    with open(run / "metrics.jsonl", "a") as f:
        for s in range(1, 9):
            f.write(json.dumps({"step": s, "total_steps": 8, "reward_mean": 0.2 * s, "kl": 0.01 * s,
                                "actor_loss": -0.1 / s, "critic_loss": 0.5 / s, "answer_len": 20 + s}) + "\n")
    sd = fake_run.finished(studio_data_dir, steps=4, eval_every=0, kind="sd_distill")
    (studio_data_dir / "runs" / sd / "samples").mkdir()
    for i, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (64, 64), colour).save(studio_data_dir / "runs" / sd / "samples" / f"step-4-{i}.png")
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1300})
    page.goto(studio.url)
    page.get_by_role("tab", name="RLHF").click()
    page.locator("#rlhf_ppo-train").wait_for(state="visible", timeout=30_000)
    assert page.locator("#rlhf-stage input").input_value() == "PPO (DeepSpeed-Chat step 3)"
    want = len(kinds.get("rlhf_ppo").series)
    page.wait_for_function(f"() => document.querySelectorAll('#rlhf_ppo-plot .studio-series').length == {want}",
                           timeout=30_000)
    page.wait_for_function("() => (document.querySelector('#rlhf_ppo-samples') || {}).innerText?.includes('question 6?')",
                           timeout=30_000)
    legend = page.locator("#rlhf_ppo-plot").inner_text()
    assert "KL" in legend or "kl" in legend.lower()
    doc_screenshot(page, "rlhf.png", studio_data_dir)
    page.get_by_role("tab", name="SD distill LoRA").click()
    page.wait_for_function("() => document.querySelectorAll('#sd_distill-gallery img').length == 3", timeout=30_000)
    doc_screenshot(page, "sd-distill.png", studio_data_dir)
