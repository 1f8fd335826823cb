"""What a person sees of a job in the SFT and Jobs tabs: drawn curves, a ticking status line, a log that follows
its newest line, quiet polling. Jobs are fake runs (tests/fake_run.py writes metrics.jsonl), no model is loaded."""
from __future__ import annotations

import io
import re
import time

import pytest

import fake_run
from app.tabs.plot import SERIES

SERIES_JS = """(sel) => Array.from(document.querySelectorAll(sel + ' .studio-series')).map(g => ({
    key: g.dataset.series, vertices: g.querySelector('polyline').points.numberOfItems,
    dots: g.querySelectorAll('circle').length,
    length: g.querySelector('polyline').getTotalLength(),
    stroke: getComputedStyle(g.querySelector('polyline')).stroke}))"""


def drawn(page, sel: str) -> dict:
    return {s["key"]: s for s in page.evaluate(SERIES_JS, sel)}


def colour_pixels(png: bytes, hex_colour: str, tol: int = 40) -> int:
    """How many pixels of the screenshot are (close to) the colour."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    want = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(1 for px in img.getdata() if all(abs(a - b) <= tol for a, b in zip(px, want)))


def log_at_end(page, sel: str) -> bool:
    return page.evaluate("""(sel) => { const el = document.querySelector(sel);
        return el.scrollHeight > el.clientHeight && el.scrollTop + el.clientHeight >= el.scrollHeight - 8; }""", sel)


def queue_joins(context) -> list:
    joins = []
    context.on("request", lambda r: joins.append(time.time()) if "/queue/join" in r.url else None)
    return joins


def settle(page, joins: list, quiet: float = 2.0, timeout: float = 20.0) -> None:
    """Waits until the page has sent no event for `quiet` seconds (the page-load events are done)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not joins or time.time() - joins[-1] >= quiet:
            return
        page.wait_for_timeout(250)
    raise AssertionError(f"the page never went quiet: {len(joins)} events")


def test_curves_svg_draws_a_line_and_dots_per_series_with_a_legend():
    from xml.etree import ElementTree

    from app.tabs.plot import curves_svg

    metrics = [{"event": "start"}, {"step": 0, "eval_loss": 3.0, "loss": None}]
    metrics += [{"step": s, "loss": 3.0 - s / 10, **({"eval_loss": 2.9 - s / 10} if s % 5 == 0 else {})}
                for s in range(1, 21)]
    root = ElementTree.fromstring(curves_svg(metrics, lang="en"))
    ns = "{http://www.w3.org/2000/svg}"
    groups = {g.get("data-series"): g for g in root.iter(f"{ns}g") if g.get("class") == "studio-series"}
    assert set(groups) == {"loss", "eval_loss"}
    assert len(groups["loss"].find(f"{ns}polyline").get("points").split()) == 20
    assert len(groups["eval_loss"].findall(f"{ns}circle")) == 5  # steps 0, 5, 10, 15, 20
    legend = ["".join(g.itertext()) for g in root.iter(f"{ns}g") if g.get("class") == "studio-legend-item"]
    assert legend[0].startswith("loss") and legend[1].startswith("eval loss")
    # one value: a dot, and a legend entry, already
    one = ElementTree.fromstring(curves_svg([{"step": 1, "loss": 2.0}], lang="zh"))
    assert len(list(one.iter(f"{ns}circle"))) >= 1 and "训练损失" in "".join(one.itertext())


def test_status_line_elapsed_counts_from_the_start_not_from_the_last_metrics_line():
    from app.tabs.training import progress_html

    now = time.time()
    job = {"id": "j1", "status": "running", "started_at": now - 37, "ended_at": None, "error": ""}
    html = progress_html(job, {"step": 3, "total_steps": 30, "elapsed": 29.0, "eta": 100.0})
    assert "37s" in html and "29s" not in html and "data-live='1'" in html


@pytest.mark.browser
def test_finished_job_draws_both_curves_with_legend_in_sft_and_jobs_tabs(start_studio, studio_data_dir, page):
    job_id = fake_run.finished(studio_data_dir, steps=30, eval_every=5)
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="SFT").click()
    page.wait_for_function("() => document.querySelectorAll('#sft-plot .studio-series').length == 2", timeout=30_000)
    series = drawn(page, "#sft-plot")
    assert series["loss"]["vertices"] == 30 and series["eval_loss"]["vertices"] == 6
    assert series["loss"]["dots"] == 30 and series["loss"]["length"] > 100
    legend = page.locator("#sft-plot .studio-legend-item").all_text_contents()
    assert any(s.startswith("loss") for s in legend) and any(s.startswith("eval loss") for s in legend)
    ticks = page.locator("#sft-plot svg text").all_text_contents()
    assert {"0", "10", "20", "30"} <= set(ticks), ticks  # a numeric step axis
    # the drawn lines are on screen: pixels of both series' colours in a screenshot of the plot
    png = page.locator("#sft-plot").screenshot()
    assert colour_pixels(png, SERIES["loss"][1]) > 300
    assert colour_pixels(png, SERIES["eval_loss"][1]) > 150
    # the log shows its newest line once loaded (the box scrolls, so this is not trivially true)
    page.wait_for_function("() => document.querySelector('#sft-log textarea').value.includes('step 30/30')",
                           timeout=30_000)
    page.wait_for_timeout(300)
    assert log_at_end(page, "#sft-log textarea"), "the SFT log shows the top, not the newest line"

    # Jobs tab: a click in the table's row picks the job; its curves, command and config follow
    page.get_by_role("tab", name="Jobs").click()
    page.get_by_role("gridcell").filter(has_text="succeeded").first.click()
    page.wait_for_function("id => document.querySelector('#jobs-pick input').value == id", arg=job_id,
                           timeout=30_000)
    page.wait_for_function("() => document.querySelectorAll('#jobs-plot .studio-series').length == 2",
                           timeout=30_000)
    assert drawn(page, "#jobs-plot")["loss"]["vertices"] == 30
    page.wait_for_function("() => document.querySelector('#jobs-log textarea').value.includes('step 30/30')",
                           timeout=30_000)
    page.wait_for_timeout(300)
    assert log_at_end(page, "#jobs-log textarea"), "the Jobs log shows the top, not the newest line"
    assert "fake_run" in page.locator("#jobs-command").inner_text()
    # the table's last column is inside the table's box at 1400 px (not cut off behind a scroll bar)
    box, table = page.locator("#jobs-table th").last.bounding_box(), page.locator("#jobs-table").bounding_box()
    assert box["x"] + box["width"] <= table["x"] + table["width"] + 1
    # Stop on a finished job says there is nothing to stop
    page.locator("#jobs-stop").click()
    page.get_by_text("nothing to stop").first.wait_for(timeout=15_000)


@pytest.mark.browser
def test_following_a_running_job_ticks_elapsed_draws_live_and_then_stops_polling(start_studio, studio_data_dir,
                                                                                 page, context):
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    joins = queue_joins(context)
    page.get_by_role("tab", name="Environment").wait_for(timeout=30_000)
    settle(page, joins)  # the page-load events; then nothing polls on the Environment tab
    n = len(joins)
    page.wait_for_timeout(3000)
    assert len(joins) == n, "an idle page keeps polling"

    # long enough that the job still runs while elapsed is watched, even on a loaded machine
    job_id, proc = fake_run.start(studio_data_dir, steps=8, interval=2.5, eval_every=0)
    try:
        page.get_by_role("tab", name="SFT").click()
        page.locator("#sft-progress").get_by_text(job_id).wait_for(timeout=30_000)
        # one point drawn: its dot is visible before there is a line
        page.wait_for_function("() => document.querySelectorAll('#sft-plot .studio-series circle').length >= 1",
                               timeout=30_000)
        seen = []
        for _ in range(8):  # elapsed moves every second, between the metrics lines (every 2.5 s)
            m = re.search(r"elapsed (?:(\d+)m)?(\d+)s", page.locator("#sft-progress").inner_text())
            seen.append(int(m.group(1) or 0) * 60 + int(m.group(2)))
            page.wait_for_timeout(500)
        assert seen == sorted(seen), f"elapsed went back: {seen}"
        assert len(set(seen)) >= 3, f"elapsed did not tick every second: {seen}"
        page.locator("#sft-progress").get_by_text("succeeded").wait_for(timeout=60_000)
        assert drawn(page, "#sft-plot")["loss"]["vertices"] == 8
        page.wait_for_timeout(300)
        assert page.locator("#sft-log textarea").input_value().rstrip().endswith("===")  # the finish line
        assert log_at_end(page, "#sft-log textarea"), "the log does not follow its newest line"
    finally:
        proc.kill()
        proc.wait()
    # nothing can change any more: the timer is off, the page stops asking
    settle(page, joins, quiet=1.5)
    n = len(joins)
    page.wait_for_timeout(3000)
    assert len(joins) == n, f"{len(joins) - n} polls after the job finished"
    # Stop now says there is nothing to stop (not "Stopping …")
    page.locator("#sft-stop").click()
    page.get_by_text("No running or queued job to stop").first.wait_for(timeout=15_000)
    # after a reload the log box shows its newest line, not the top
    page.reload()
    page.get_by_role("tab", name="SFT").click()
    page.locator("#sft-progress").get_by_text("succeeded").wait_for(timeout=30_000)
    page.wait_for_timeout(300)
    assert log_at_end(page, "#sft-log textarea"), "after a reload the log shows the top, not the newest line"


@pytest.mark.browser
def test_reward_tab_draws_the_accuracy_and_score_curves_of_a_reward_job(start_studio, studio_data_dir, page):
    """The Reward model tab is the shared training body of the `reward` kind: its plot draws the eval accuracy
    and the chosen / rejected mean scores (the series app/kinds.py declares for it), with their legend."""
    from app import kinds

    fake_run.finished(studio_data_dir, steps=20, eval_every=5, kind="reward")
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1100})
    page.goto(studio.url)
    page.get_by_role("tab", name="Reward model").click()
    want = [k for k in kinds.get("reward").series if k != "loss"]
    page.wait_for_function(f"() => document.querySelectorAll('#reward-plot .studio-series').length == {len(want) + 1}",
                           timeout=30_000)
    series = drawn(page, "#reward-plot")
    assert series["loss"]["vertices"] == 20
    for key in want:
        assert series[key]["vertices"] == 4, key  # evaluations at steps 5, 10, 15, 20
    legend = " ".join(page.locator("#reward-plot .studio-legend-item").all_text_contents())
    assert "accuracy (chosen > rejected)" in legend and "chosen mean score" in legend
    png = page.locator("#reward-plot").screenshot()
    assert colour_pixels(png, SERIES["eval_accuracy"][1]) > 100
    # the status line of the newest reward job, and the score-a-pair block below the form
    assert "succeeded" in page.locator("#reward-progress").inner_text()
    assert page.locator("#rm-score").count() == 1
