"""The SFT and Jobs tabs in a real browser: Train streams a real job's log and loss into the page."""
from __future__ import annotations

import pytest

from app.jobs import JobStore
from conftest import doc_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def fill(page, elem_id: str, value: str) -> None:
    page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(value)


def test_sft_tab_trains_streams_log_and_loss_then_jobs_tab_reruns(start_studio, studio_data_dir, page):
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="SFT").click()
    fill(page, "sft-max_steps", "3")
    page.wait_for_function("() => document.querySelector('#sft-command').innerText.includes('backends.sft')",
                           timeout=30_000)
    assert "accelerate.commands.launch" in page.locator("#sft-command").inner_text()

    page.locator("#sft-train").click()
    log = page.locator("#sft-log textarea")
    page.wait_for_function("() => document.querySelector('#sft-log textarea').value.includes('=== started at')",
                           timeout=120_000)
    # the first loss point reaches the plot: vega gives each point an aria-label with its numeric value
    page.wait_for_function("""() => Array.from(document.querySelectorAll('#sft-plot [aria-label*="series: loss"]'))
                                     .some(e => /value: [0-9]/.test(e.getAttribute('aria-label')))""",
                           timeout=600_000)
    assert "step" in page.locator("#sft-progress").inner_text()
    doc_screenshot(page, "sft.png", studio_data_dir)
    assert "[studio]" in log.input_value()

    # Jobs tab: the job is listed; picking it shows its log and command; Re-run with edits fills the form
    page.get_by_role("tab", name="Jobs").click()
    job_id = JobStore(studio_data_dir / "jobs.sqlite").list()[-1]["id"]
    page.wait_for_function("id => document.querySelector('#jobs-table').innerText.includes(id)", arg=job_id,
                           timeout=30_000)
    page.locator("#jobs-pick input").click()
    page.get_by_role("option", name=job_id).click()
    page.wait_for_function("() => document.querySelector('#jobs-command').innerText.includes('backends.sft')",
                           timeout=30_000)
    page.locator("#jobs-progress").get_by_text("succeeded").wait_for(timeout=600_000)
    doc_screenshot(page, "jobs.png", studio_data_dir)
    page.locator("#jobs-rerun").click()
    page.locator("#sft-train").wait_for(state="visible", timeout=30_000)
    assert page.locator("#sft-max_steps input, #sft-max_steps textarea").first.input_value() == "3"


@pytest.mark.parametrize("elem, value, field", [
    ("sft-learning_rate", "abc", "learning_rate"),
    ("sft-max_seq_len", "0", "max_seq_len"),
    ("sft-dataset", "no/such/file.jsonl", "dataset"),
])
def test_bad_input_names_the_field_and_queues_nothing(start_studio, studio_data_dir, page, elem, value, field):
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.goto(studio.url)
    page.get_by_role("tab", name="SFT").click()
    fill(page, elem, value)
    page.locator("#sft-train").click()
    page.get_by_text(f"{field}:").first.wait_for(timeout=30_000)
    assert JobStore(studio_data_dir / "jobs.sqlite").list() == []
