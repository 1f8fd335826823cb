"""The page in 中文 and messages that say what happened. One studio for the file (module fixture):

- Datasets → Validate on an upload with a broken line, "Drop rows with problems" ticked: the report says
  the line was dropped, and speaks of the page's checkbox, never of a CLI flag; the CLI names its own flag.
- A picked catalog entry's description goes away when another source is inspected.
- Switch to 中文, visit every tab and read every visible text (text nodes, input values and placeholders,
  plot axes): no English word is left outside a short allowlist (code names, package/model names, units).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, Studio, doc_screenshot, free_port, wait_http

ZH = "中文"


@pytest.fixture(scope="module")
def studio(prepared_data_dir, tmp_path_factory):
    dd = tmp_path_factory.mktemp("i18n") / "data"
    dd.mkdir()
    (dd / "models").symlink_to(prepared_data_dir / "models", target_is_directory=True)
    port = free_port()
    log = dd.parent / "studio.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), "--data-dir", str(dd),
                                 "--no-prepare", "--offline"], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    s = Studio(proc, f"http://127.0.0.1:{port}", log)
    s.data_dir = dd
    try:
        wait_http(s.url + "/", proc, log)
        yield s
    finally:
        s.stop()


def open_page(page, studio, language: str = "English"):
    page.set_viewport_size({"width": 1500, "height": 1200})
    page.goto(studio.url)
    box = page.locator("#language input")
    box.wait_for(timeout=30_000)
    if box.input_value() != language:  # the page arrives in the saved language
        box.click()
        with page.expect_navigation(timeout=30_000):  # a switch reloads the page in the new language
            page.get_by_role("option", name=language, exact=True).click()
        page.locator("#language input").wait_for(timeout=30_000)
        page.wait_for_function(f"() => document.querySelector('#language input').value === {json.dumps(language)}")


def report_text(page, must_contain: str) -> str:
    page.wait_for_function("(s) => document.querySelector('#ds-report textarea').value.includes(s)",
                           arg=must_contain, timeout=60_000)
    return page.locator("#ds-report textarea").input_value()


GOOD = [{"prompt": f"Question {i}?", "response": f"Answer {i}."} for i in range(3)]


@pytest.mark.browser
def test_validate_says_the_broken_line_was_dropped_in_the_pages_words(studio, page, tmp_path):
    broken = tmp_path / "broken_line3.jsonl"  # line 3 is not JSON: 3 rows, 1 unreadable line
    broken.write_text("\n".join([json.dumps(GOOD[0]), json.dumps(GOOD[1]), '{"prompt": "oops',
                                 json.dumps(GOOD[2])]) + "\n", encoding="utf-8")
    open_page(page, studio)
    page.get_by_role("tab", name="Datasets").click()
    page.locator("#ds-upload input[type=file]").set_input_files(str(broken))
    page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('broken_line3.jsonl')",
                           timeout=60_000)
    assert page.locator("#ds-drop-bad input").is_checked()
    page.locator("#ds-check").click()
    report = report_text(page, "kept")
    assert "rows read: 4 · clean: 3 · kept: 3" in report
    assert "dropped 1 row (unreadable lines 1)" in report, report
    assert "are kept" not in report and "--drop-bad" not in report and "--keep-bad" not in report, report

    # a catalog entry: its description shows, and goes away when another source is inspected
    page.locator("#ds-catalog input").fill("demo_sft")
    page.get_by_role("option", name="demo_sft", exact=False).first.click()
    page.wait_for_function("() => document.querySelector('#ds-entry').innerText.includes('demo_sft')",
                           timeout=30_000)
    (studio.data_dir / "datasets").mkdir(exist_ok=True)
    (studio.data_dir / "datasets" / "with_empty.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*GOOD, {"prompt": "Q?", "response": ""}]), encoding="utf-8")
    page.locator("#ds-path input").fill("datasets/with_empty.jsonl")
    page.locator("#ds-path input").press("Enter")
    page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('with_empty.jsonl')",
                           timeout=60_000)
    page.wait_for_function("() => document.querySelector('#ds-entry').innerText.trim() === ''", timeout=10_000)
    assert page.locator("#ds-catalog input").input_value() == ""  # "Inspecting" names one source

    # box unticked and a row with an empty answer: kept, and the page says which box drops it
    page.locator("#ds-drop-bad input").uncheck()
    page.locator("#ds-check").click()
    report = report_text(page, "with_empty.jsonl line 4")
    assert "kept: 4" in report
    assert "1 row with problems is kept (tick “Drop rows with problems” to drop them)" in report, report
    assert "--" not in report, report

    # a bad value is named by its label on the page, not by the option's name
    page.locator("#ds-max-len input, #ds-max-len textarea").first.fill("abc")
    page.locator("#ds-check").click()
    report_text(page, "Max length (tokens): must be a whole number, got 'abc'")


def test_cli_report_names_the_cli_flag_the_readme_lists(tmp_path, capsys):
    from backends.data.__main__ import main

    f = tmp_path / "with_empty.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in [*GOOD, {"prompt": "Q?", "response": ""}]), encoding="utf-8")
    assert main(["check", str(f), "--kind", "sft", "--keep-bad", "--model", "none-such", "--data-dir",
                 str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "1 row with problems is kept (run without --keep-bad to drop them)" in out, out
    assert "Drop rows with problems" not in out
    assert main(["check", str(f), "--kind", "sft", "--model", "none-such", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "dropped 1 row (empty fields 1)" in out and "is kept" not in out, out
    assert main(["check", str(f), "--kind", "sft", "--keep-bad", "--model", "none-such", "--lang", "zh",
                 "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "保留了 1 个有问题的行（去掉 --keep-bad 即可丢弃）" in out, out
    assert "with_empty.jsonl 第 4 行 [response]：response 为空" in out, out
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "--keep-bad" in readme and "--drop-bad" not in readme


# ------------------------------------------------------------------------------------------ 中文 sweep
# Every visible text of a tab: text nodes (not inside code blocks), input values and placeholders, and
# the axis titles of the plots (the Vega specs Gradio renders).
_VISIBLE_TEXT_JS = """([panelSel, skip]) => {
  const root = document.querySelector(panelSel) || document.body;
  const out = [];
  const seen = (el) => el && el.checkVisibility({checkOpacity: true, checkVisibilityCSS: true});
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.nodeValue.trim() || !seen(el) || el.closest('code, pre, .cm-editor, script, style, ' + skip)) continue;
    out.push(n.nodeValue.trim());
  }
  for (const el of root.querySelectorAll('input, textarea')) {
    if (!seen(el) || el.closest(skip) || ['file', 'checkbox', 'radio', 'range', 'hidden'].includes(el.type)) continue;
    if (el.value) out.push(el.value);
    if (el.placeholder) out.push(el.placeholder);
  }
  return out;
}"""

WORD = re.compile(r"-{0,2}[A-Za-z][A-Za-z0-9_.+/:'=-]*")
# The data itself is not the page's text: the preview table's cells (the Datasets tab's rows).
DATA_ONLY = "#ds-preview .virtual-body"

# Names that stay as they are in Chinese (code, packages, models, units, abbreviations); the machine's own
# facts (CPU model, OS, paths, DeepSpeed op names, ...) are added from the report in `_allowed()`.
ALLOW = set("""
torch pytorch gradio transformers peft trl diffusers accelerate deepspeed deepspeed-chat colossalchat datasets
safetensors gguf cuda gloo nccl mpi ninja python torchrun lora qlora zero sft rlhf ppo dpo sd gpu gpus cpu
ram os api ip json jsonl csv tsv parquet yaml hub smollm smollm2 ds_report hostfile host slots a b n r gb mb
kb s m h ms eta p50 p95 id ok vs rm token
language
hugging face flashattention adamw ampere role content
actor critic readme unet cfg ddim lcm lcmscheduler ode stable diffusion dse pr imagefolder cond uncond txt
""".split())  # "language": the switch's label is "语言 / Language" on purpose, findable in either language


def _allowed() -> set[str]:
    """Code names the page shows as they are: kinds, fields, transforms, recipes, launchers, GPUs, catalog ids,
    and this machine's facts from the environment report."""
    from app import envcheck, estimator
    from app.tabs import training
    from backends.data import catalog
    from backends.data.shapes import CANDIDATES, FIELDS, KINDS
    from backends.data.transforms import TRANSFORMS

    from app import kinds, pipelines
    from backends.common.config import field_descriptors

    descs = [d for k in kinds.all_kinds() if k.schema is not None for d in field_descriptors(k.schema)]
    # a field's choices, its name (help texts name other fields) and a text default (a prompt like "A man dancing")
    choices = [c for d in descs for c in (d["choices"] or [])] + [d["name"] for d in descs] + [
        d["default"] for d in descs if isinstance(d["default"], str)]
    choices += [name for k in kinds.all_kinds() if k.schema is not None
                for name in training.load_recipes(k.name, None)]  # recipe names (cpu-demo-tiny-sd)
    choices += list(pipelines.load_recipes())
    names = [*choices, *KINDS, *TRANSFORMS, *CANDIDATES, *(f for fs in FIELDS.values() for f in fs), *training.LAUNCHERS,
             *training.PRESETS, *training.ZERO_CHOICES, *estimator.GPU_TABLE, *envcheck.PACKAGES, "columns"]
    for e in catalog.load_catalog():
        names += [e.id, *e.origin, *e.languages]
    rep = envcheck.collect(offline=True)
    names += [rep["system"]["os"], rep["system"]["cpu"], *(o["op"] for o in rep["deepspeed"].get("ops", []))]
    words = set(ALLOW)
    for n in names:
        words |= {w.lower() for w in WORD.findall(str(n))}
        words |= {p.lower() for w in WORD.findall(str(n)) for p in w.split("-")}
    return words


def english_words(texts: list[str], allowed: set[str]) -> dict[str, str]:
    """{word: the text it was found in} for every English word not in the allowlist. A token with a digit,
    '_', '.', '/', ':', '=' or '+' is code (a path, a version, a model spec), and so is a --flag."""
    found: dict[str, str] = {}
    for text in texts:
        for tok in WORD.findall(text):
            tok = tok.rstrip(".'-:")
            if tok.startswith("-") or tok.lower() in allowed or re.search(r"[0-9_./:=+]", tok):
                continue
            for w in tok.split("-"):
                if w and w.lower() not in allowed and len(w) > 1:
                    found.setdefault(w, text[:160])
    return found


# KNOWN LEFTOVERS, to be emptied by the lead after merging the training-tab branch: English that comes from
# app/tabs/training.py and the Jobs tab's progress/plot widgets (owned by another helper) and from files
# outside this branch's scope. The test fails on any English word NOT listed here.
KNOWN_LEFTOVERS: dict[str, set[str]] = {
    # presets/datasets.yaml: an entry's size and licence note are English only (no size_zh / license_zh),
    # e.g. "200 prompt/response rows", "CC0-1.0 (see presets/datasets/LICENSE-demo.md)"
    "datasets": {"rows", "see"},
}

TAB_KEYS = ["environment", "datasets", "sft", "reward", "rlhf", "pipeline", "sd_lora", "jobs", "compare"]


@pytest.mark.browser
def test_chinese_page_has_no_english_left(studio, browser):
    """A Chinese browser (Gradio's own words, "Drop File Here" ..., follow the browser's locale) on the page
    switched to 中文."""
    from app.i18n import t

    context = browser.new_context(locale="zh-CN")
    page = context.new_page()
    open_page(page, studio, ZH)
    page.reload()  # the saved language survives a reload, and the dropdown says so
    page.get_by_role("tab", name=t("tab.environment", "zh")).wait_for(timeout=30_000)
    page.wait_for_function(f"() => document.querySelector('#language input').value === '{ZH}'", timeout=15_000)
    page.locator("#env-report-md").get_by_text("DeepSpeed").first.wait_for(timeout=60_000)
    allowed = _allowed()
    leftovers: dict[str, dict[str, str]] = {}
    for key in TAB_KEYS:
        page.get_by_role("tab", name=t(f"tab.{key}", "zh"), exact=True).click()
        page.wait_for_timeout(800)
        # the tab's follower has answered (a status line is sent when its tab is selected: training tabs, Jobs)
        page.wait_for_function(
            "([sel, en]) => Array.from(document.querySelectorAll(sel)).every(el => !el.innerText.includes(en))",
            arg=[f"#tab-{key} .studio-progress-box", t("prog.none", "en")], timeout=30_000)
        if key == "datasets":  # a catalog entry inspected and validated: summary, preview, report, histogram
            page.locator("#ds-catalog input").fill("demo_sft")
            page.get_by_role("option", name="demo_sft", exact=False).first.click()
            page.wait_for_function("() => document.querySelector('#ds-summary').innerText.includes('demo_sft')",
                                   timeout=30_000)
            page.locator("#ds-check").click()
            report_text(page, "p95")
            page.wait_for_timeout(800)
        if key in ("environment", "reward"):  # the README shows the page in Chinese too
            doc_screenshot(page, f"{key}-zh.png", studio.data_dir)
        texts = page.evaluate(_VISIBLE_TEXT_JS, [f"#tab-{key}", DATA_ONLY])
        if key == "environment":
            texts += page.evaluate(_VISIBLE_TEXT_JS, ["#studio-header", DATA_ONLY])
        words = english_words(texts, allowed)
        unexpected = {w: where for w, where in words.items() if w not in KNOWN_LEFTOVERS.get(key, set())}
        if unexpected:
            leftovers[key] = unexpected
    context.close()
    assert not leftovers, "English left in the 中文 page (tab: word ← where):\n" + "\n".join(
        f"  {tab}: {w!r} ← {where!r}" for tab, ws in leftovers.items() for w, where in sorted(ws.items()))


def test_jobs_table_headers_and_statuses_follow_the_language():
    from app.tabs.jobs import jobs_frame

    job = {"id": "sft-0001", "status": "running", "kind": "sft", "recipe": "cpu-demo-smollm2", "model": "m",
           "dataset": "d", "started_at": None, "ended_at": None, "final_loss": None}
    zh = jobs_frame([job], "zh")
    assert list(zh.columns)[:2] == ["编号", "状态"] and zh.iloc[0, 1] == "运行中" and zh.iloc[0, 0] == "sft-0001"
    en = jobs_frame([job])
    assert list(en.columns)[:2] == ["id", "status"] and en.iloc[0, 1] == "running"


def test_preparation_log_status_lines_follow_the_language(tmp_path):
    from app.prepare import Preparer

    prep = Preparer(tmp_path, echo=False)
    prep.log_path.parent.mkdir(parents=True)
    prep.log_path.write_text("=== prepare started 2026-01-02 03:04:05 ===\nconverting …\n"
                             "=== prepare finished with exit code 0 ===\n", encoding="utf-8")
    zh = prep.log_tail(lang="zh")
    assert zh == "=== 开始准备 2026-01-02 03:04:05 ===\nconverting …\n=== 准备结束，退出码 0 ===\n", zh
    assert prep.log_tail() == prep.log_path.read_text(encoding="utf-8")  # the file itself stays as written
