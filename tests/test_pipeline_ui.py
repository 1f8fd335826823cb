"""The Pipeline tab in a browser: SFT -> DPO on the tiny random model through the page, the steps' states, the
final actor in the A/B tab under the pipeline's name."""
from __future__ import annotations

import pytest

from app.jobs import JobStore
from conftest import doc_screenshot


def _fill(page, elem: str, value: str) -> None:
    box = page.locator(f"#{elem} input, #{elem} textarea").first
    box.fill(value)
    box.press("Tab")


@pytest.mark.timeout(900)
def test_a_two_step_pipeline_runs_from_the_page_and_its_actor_is_offered_in_ab(start_studio, studio_data_dir,
                                                                              tiny_lm, page):
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1200})
    page.goto(studio.url)
    page.get_by_role("tab", name="Pipeline").click()
    page.locator("#pipe-algorithm input").click()
    page.get_by_role("option", name="dpo", exact=True).click()
    _fill(page, "pipe-actor", str(tiny_lm))
    _fill(page, "pipe-sft-max_steps", "2")
    page.locator("#pipe-rlhf").click()  # open step 3's key fields
    _fill(page, "pipe-rlhf-max_steps", "2")
    page.locator("#pipe-command").scroll_into_view_if_needed()
    page.wait_for_function("() => document.querySelector('#pipe-command').innerText.includes('-m backends.dpo')",
                           timeout=30_000)
    page.locator("#pipe-run").click()
    page.wait_for_function("() => document.querySelectorAll('#pipe-steps tbody tr').length >= 2 || "
                           "(document.querySelector('#pipe-steps') || {}).innerText?.includes('sft: sft')",
                           timeout=60_000)
    page.locator("#pipe-progress").get_by_text("succeeded").wait_for(timeout=600_000)
    table = page.locator("#pipe-steps").inner_text()
    assert "sft: sft" in table and "rlhf: dpo" in table and table.count("succeeded") >= 2, table
    jobs = JobStore(studio_data_dir / "jobs.sqlite").list()
    sft, dpo = sorted((j for j in jobs if j["meta"].get("pipeline")), key=lambda j: j["meta"]["step"])
    assert dpo["config"]["model_name_or_path"] == f"job:{sft['id']}" and dpo["meta"]["after"] == sft["id"]
    assert "step 2 of 2" in page.locator("#pipe-progress").inner_text()
    doc_screenshot(page, "pipeline.png", studio_data_dir)
    # the final actor in the A/B tab, named by its pipeline
    page.get_by_role("tab", name="A/B compare").click()
    page.locator("#ab-tuned input").click()
    page.get_by_role("option", name="pipeline cpu-demo-smollm2-rlhf").first.wait_for(timeout=30_000)
    assert page.get_by_role("option", name=dpo["id"]).count() == 1
