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
    # the command box now shows the job's own command (its command.sh), not a blank box
    page.wait_for_function("() => document.querySelector('#sft-command').innerText.includes('Finetune Studio job')",
                           timeout=30_000)
    page.wait_for_function("() => document.querySelector('#sft-log textarea').value.includes('=== started at')",
                           timeout=120_000)
    # the loss curve is drawn: a polyline with a vertex per logged step (eval loss from step 0 too)
    page.wait_for_function("""() => { const g = document.querySelector('#sft-plot .studio-series[data-series="loss"]');
                                     return g && g.querySelector('polyline').points.numberOfItems >= 2; }""",
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
    from backends import sft
    from backends.common.config import field_descriptors

    label = next(d["label"] for d in field_descriptors(sft.SFTArgs) if d["name"] == field)
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.goto(studio.url)
    page.get_by_role("tab", name="SFT").click()
    fill(page, elem, value)
    page.locator("#sft-train").click()
    # next to Train, by its on-screen label (not the internal name), and it stays (a toast would fade)
    error = page.locator("#sft-error")
    error.get_by_text(f"{label}:").wait_for(timeout=30_000)
    assert field not in error.inner_text() or field == label.lower()
    page.wait_for_timeout(1000)
    assert error.get_by_text(f"{label}:").is_visible()
    # the field itself is marked
    box = page.locator(f"#{elem} input, #{elem} textarea").first
    assert box.evaluate("el => getComputedStyle(el).borderTopColor") == "rgb(220, 38, 38)"
    assert JobStore(studio_data_dir / "jobs.sqlite").list() == []
    # the next edit clears the message and the mark
    fill(page, "sft-max_steps", "3")
    page.wait_for_function("() => !document.querySelector('#sft-error').innerText.trim()", timeout=15_000)
    assert box.evaluate("el => getComputedStyle(el).borderTopColor") != "rgb(220, 38, 38)"
