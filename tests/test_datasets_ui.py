"""The Datasets tab in a real browser: upload a jsonl, map its columns by hand, validate, save it as a
studio dataset, and find it in the SFT tab's dataset list; a path outside the data dir is refused."""
from __future__ import annotations

import json

import pytest

from conftest import doc_screenshot

pytestmark = [pytest.mark.browser]


def pick(page, elem_id: str, option: str) -> None:
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).locator("visible=true").first.click()


def text_of(page, elem_id: str) -> str:
    return page.locator(f"#{elem_id}").inner_text()


def test_upload_map_validate_save_then_sft_lists_it(start_studio, studio_data_dir, page, tmp_path):
    rows = [{"q": f"Question {i}?", "a": f"Answer {i}.", "note": "x"} for i in range(12)]
    rows.append({"q": "Question 0?", "a": "Answer 0.", "note": "x"})  # a duplicate of the first row
    upload = tmp_path / "my_pairs.jsonl"
    upload.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"q": "broken\n', encoding="utf-8")

    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1500, "height": 1400})
    page.goto(studio.url)
    page.get_by_role("tab", name="Datasets").click()
    page.locator("#ds-upload input[type=file]").set_input_files(str(upload))
    page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('my_pairs.jsonl')",
                           timeout=60_000)
    summary = text_of(page, "ds-summary")
    assert "rows: 13" in summary and "unreadable lines: 1" in summary
    assert "Question 3?" in page.locator("#ds-preview").inner_text()
    assert (studio_data_dir / "datasets" / "uploads" / "my_pairs.jsonl").is_file()

    # q / a are no names the studio guesses: the mapping dropdowns start empty, the user maps them
    assert page.locator("#ds-map-0 input").input_value() == ""
    pick(page, "ds-map-0", "q")
    pick(page, "ds-map-1", "a")
    page.locator("#ds-data-split input").fill("2,4,4")
    page.locator("#ds-check").click()
    page.wait_for_function("() => document.querySelector('#ds-report textarea').value.includes('kept')",
                           timeout=60_000)
    report = page.locator("#ds-report textarea").input_value()
    assert "prompt ← q" in report and "response ← a" in report
    assert "my_pairs.jsonl line 13: same as line 1" in report
    assert "line 14 is not valid JSON" in report
    assert "kept: 12" in report and "step1 sft" in report
    assert "p50" in report  # token lengths with the bundled tokenizer
    page.wait_for_function("() => document.querySelectorAll('#ds-hist [aria-label*=\"rows\"]').length > 0",
                           timeout=30_000)

    page.locator("#ds-name input").fill("my-pairs")
    page.locator("#ds-save").click()
    page.wait_for_function("() => document.querySelector('#ds-studio-list').innerText.includes('my-pairs')",
                           timeout=60_000)
    doc_screenshot(page, "datasets.png", studio_data_dir, full_page=True)
    saved = studio_data_dir / "datasets" / "my-pairs"
    first = json.loads((saved / "data.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert first == {"prompt": "Question 0?", "response": "Answer 0."}
    assert len((saved / "data.jsonl").read_text().splitlines()) == 12

    # saving again under the same name is refused, and says so
    page.locator("#ds-save").click()
    page.wait_for_function("() => document.querySelector('#ds-report textarea').value.includes('exists; choose')",
                           timeout=30_000)

    # the SFT tab lists the new studio dataset
    page.get_by_role("tab", name="SFT").click()
    page.locator("#sft-dataset input").click()
    page.get_by_role("option", name="my-pairs — studio, 12 rows").wait_for(timeout=30_000)


def test_bad_paths_and_uploads_are_refused_and_the_page_stays_up(start_studio, studio_data_dir, page, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("STUDIO_MAX_UPLOAD_MB", "0.001")  # ~1 KB, read by the studio process
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.goto(studio.url)
    page.get_by_role("tab", name="Datasets").click()
    big = tmp_path / "big.jsonl"
    big.write_text(json.dumps({"prompt": "p" * 3000, "response": "r"}) + "\n")
    page.locator("#ds-upload input[type=file]").set_input_files(str(big))
    # Gradio's upload limit is the studio's (STUDIO_MAX_UPLOAD_MB): the page refuses the file before sending it
    page.locator(".toast-body", has_text="exceed the maximum allowed size").wait_for(timeout=30_000)
    assert not (studio_data_dir / "datasets" / "uploads" / "big.jsonl").exists()
    assert not [p for p in (studio_data_dir / "tmp").rglob("*") if p.is_file() and p.stat().st_size]

    box = page.locator("#ds-path input")
    box.fill("../../../../etc/passwd")
    box.press("Enter")
    page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('outside the data dir')",
                           timeout=30_000)
    # still usable: the bundled preference sample opens and validates
    page.locator("#ds-catalog input").fill("demo_preference")
    page.get_by_role("option", name="demo_preference", exact=False).first.click()
    page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('rows: 200')",
                           timeout=30_000)
    page.locator("#ds-check").click()
    page.wait_for_function("() => document.querySelector('#ds-report textarea').value.includes('kept: 200')",
                           timeout=60_000)
    assert "chosen ← chosen" in page.locator("#ds-report textarea").input_value()
