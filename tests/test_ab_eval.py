"""Batch A/B evaluation (backends/ab_eval.py): the statistics, the options' validation, and a real job
through the engine (base SmolLM2 vs the demo LoRA adapter, judged by a tiny random-head reward model)."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, wait_for

from backends import ab_eval
from backends.ab_eval import ABEvalArgs, summarize, validate_config, winner_of
from backends.common import config as C
from backends.common.errors import FieldError
from backends.common.metrics import read_metrics


def _rows(pairs):
    return [{"prompt": f"p{i}", "reward_a": a, "reward_b": b} for i, (a, b) in enumerate(pairs)]


# ------------------------------------------------------------------------------------ statistics
def test_summarize_counts_rates_and_bootstrap_intervals():
    pairs = [(0.0, 1.0), (0.5, 0.2), (1.0, 1.0), (-1.0, 0.5), (0.3, 0.35), (2.0, 1.0), (0.0, 0.9), (0.1, 0.4)]
    s = summarize(_rows(pairs), tie_margin=0.0, n_boot=2000, seed=7)
    winners = [winner_of(a, b, 0.0) for a, b in pairs]
    assert winners == ["B", "A", "tie", "B", "B", "A", "B", "B"]
    assert (s["n"], s["n_scored"], s["wins_a"], s["wins_b"], s["ties"]) == (8, 8, 2, 5, 1)
    assert s["wins_a"] + s["wins_b"] + s["ties"] == s["n"]
    assert s["win_rate_b"] == pytest.approx(5 / 8) and s["tie_rate"] == pytest.approx(1 / 8)
    assert s["win_rate_a"] == pytest.approx(2 / 8)
    mean_diff = sum(b - a for a, b in pairs) / len(pairs)
    assert s["mean_reward_diff"] == pytest.approx(mean_diff, abs=1e-6)
    lo, hi = s["ci95_mean_diff"]
    assert lo <= s["mean_reward_diff"] <= hi and lo < hi
    wlo, whi = s["ci95_win_rate_b"]
    assert 0 <= wlo <= s["win_rate_b"] <= whi <= 1 and wlo < whi
    assert s.get("note") is None
    # same seed, same intervals; another seed, (almost surely) other ones
    assert summarize(_rows(pairs), 0.0, 2000, 7) == s
    other = summarize(_rows(pairs), 0.0, 2000, 8)
    assert other["ci95_mean_diff"] != s["ci95_mean_diff"]
    assert other["mean_reward_diff"] == s["mean_reward_diff"]
    # no resampling: no intervals
    assert summarize(_rows(pairs), 0.0, 0, 7)["ci95_mean_diff"] is None


def test_summarize_tie_margin_and_sides():
    pairs = [(0.0, 0.05), (0.0, -0.05), (0.0, 0.2), (0.0, -0.3), (1.0, 1.1)]
    s0 = summarize(_rows(pairs), tie_margin=0.0, n_boot=200, seed=0)
    assert (s0["wins_a"], s0["wins_b"], s0["ties"]) == (2, 3, 0)
    s1 = summarize(_rows(pairs), tie_margin=0.1, n_boot=200, seed=0)
    # |diff| <= margin is a tie (1.1 - 1.0 is 0.10000000000000009 in floats: just above the margin)
    assert (s1["wins_a"], s1["wins_b"], s1["ties"]) == (1, 2, 2)
    assert s1["tie_rate"] == pytest.approx(2 / 5) and s1["win_rate_b"] == pytest.approx(2 / 5)
    assert winner_of(0.0, 0.1, 0.1) == "tie" and winner_of(0.0, 0.11, 0.1) == "B" and winner_of(0.2, 0.0, 0.1) == "A"
    assert winner_of(None, 1.0, 0.0) == "" and winner_of(1.0, None, 0.0) == ""
    # all equal differences: a degenerate interval that still holds the mean
    s = summarize(_rows([(0.1, 0.4)] * 6), 0.0, 500, 0)
    assert s["ci95_mean_diff"][0] <= s["mean_reward_diff"] <= s["ci95_mean_diff"][1]
    assert s["win_rate_b"] == 1.0 and s["ci95_win_rate_b"] == [1.0, 1.0]


def test_summarize_without_rewards_has_null_rates():
    rows = [{"prompt": "p", "answer_a": "x", "answer_b": "y", "reward_a": None, "reward_b": None}] * 4
    s = summarize(rows, 0.0, 1000, 0)
    assert s["n"] == 4 and s["n_scored"] == 0
    for k in ("wins_a", "wins_b", "ties", "win_rate_b", "tie_rate", "mean_reward_diff", "ci95_mean_diff",
              "ci95_win_rate_b"):
        assert s[k] is None, k
    assert "reward model" in s["note"]
    empty = summarize([], 0.0, 1000, 0)
    assert empty["n"] == 0 and empty["win_rate_b"] is None


# -------------------------------------------------------------------------------------- schema
def test_descriptors_have_en_zh_labels_and_engine_fields():
    descs = C.field_descriptors(ABEvalArgs)
    names = [d["name"] for d in descs]
    for required in ("base_model", "finetuned", "reward_model", "prompts", "prompt_column", "prompt_lines",
                     "max_prompts", "template", "max_new_tokens", "do_sample", "temperature", "top_p", "top_k",
                     "repetition_penalty", "seed", "tie_margin", "bootstrap_samples", "bootstrap_seed"):
        assert required in names, required
    from app.tabs.training import ENGINE_FIELDS

    # the engine-owned fields are the one JobFields declaration, inherited (not a copy)
    assert issubclass(ABEvalArgs, C.JobFields) and issubclass(ABEvalArgs, C.GenerationFields)
    assert set(C.field_names(C.JobFields)) <= set(names)
    job = {d["name"]: d for d in C.field_descriptors(C.JobFields)}
    assert all(d == job[d["name"]] for d in descs if d["name"] in job)
    assert ENGINE_FIELDS <= set(C.field_names(C.JobFields))  # what engine.submit writes into config.yaml is accepted
    for d in descs:
        assert d["group"] in C.GROUPS and d["label"] and d["label_zh"] and d["help"] and d["help_zh"], d
    by = {d["name"]: d for d in descs}
    assert by["template"]["choices"] == ["auto", "chat", "dschat", "plain"] and by["template"]["default"] == "auto"
    assert by["max_prompts"]["default"] == 10 and by["max_prompts"]["min"] == 1
    assert by["base_model"]["default"] == "bundled:smollm2" and by["do_sample"]["default"] is False
    assert by["prompts"]["default"] == "presets/datasets/demo_prompts.jsonl"



def test_the_ab_form_builds_its_generation_settings_from_the_generation_group(tmp_path):
    """The A/B tab's generation widgets (shared by the chat and the batch evaluation) show GenerationFields'
    defaults, labels and help in both languages, and their values become a GenSettings through from_dict."""
    from types import SimpleNamespace

    import gradio as gr

    from app.context import StudioContext
    from app.tabs import compare
    from backends.infer import chat

    ctx = StudioContext(tmp_path, engine=SimpleNamespace(list_jobs=lambda: []))
    with gr.Blocks():
        comps = compare.build(ctx)
    widgets = comps["settings"]
    descs = C.field_descriptors(C.GenerationFields)
    assert [w.elem_id for w in widgets] == ["ab-max-new", "ab-sample", "ab-temperature", "ab-top-p", "ab-top-k",
                                            "ab-rep", "ab-seed"]  # the ids the page tests and scripts use
    by_default = {d["name"]: d["default"] for d in descs}
    assert widgets[0].value == str(by_default["max_new_tokens"]) == "128"
    assert widgets[0].label == "Max new tokens" == descs[0]["label"]
    for w, d in zip(widgets, descs, strict=True):
        assert w.value == (d["default"] if d["type"] == "bool" else str(d["default"])), d["name"]
        assert (w.label, w.info) == (d["label"], d["help"]), d["name"]
        zh = {e.attr: e.render("zh") for e in ctx.i18n if e.component is w}
        assert zh == {"label": d["label_zh"], "info": d["help_zh"]}, d["name"]
    # the widgets' values as the page sends them (strings) -> the group's defaults
    assert compare.settings_from(*[w.value for w in widgets]) == chat.GenSettings()
    values = [w.value for w in widgets]
    values[0] = "abc"
    with pytest.raises(FieldError) as e:
        compare.settings_from(*values)
    assert e.value.field == "max_new_tokens" and "'abc'" in str(e.value)
    values[0], values[3] = "64", "1.5"
    with pytest.raises(FieldError) as e:
        compare.settings_from(*values)
    assert e.value.field == "top_p" and "<= 1" in str(e.value)

def _cfg(dd: Path, **over) -> dict:
    return {"data_dir": str(dd), "run_dir": "runs/pytest-ab-validate", "finetuned": "bundled:smollm2", **over}


def test_validate_config_names_the_bad_field(studio_data_dir, tmp_path):
    dd = studio_data_dir
    validate_config(_cfg(dd))  # the bundled model against itself, the demo prompts
    data = dd / "datasets"  # prompt files must be inside the data dir (tests/test_security.py)
    data.mkdir()

    def bad(field: str, **over):
        with pytest.raises(FieldError) as e:
            validate_config(_cfg(dd, **over))
        assert e.value.field == field, (field, over, e.value)
        return e.value

    assert "empty" in bad("finetuned", finetuned="").message
    assert "nope" in bad("finetuned", finetuned="job:nope").message
    bad("finetuned", finetuned=str(tmp_path / "missing-model"))
    bad("max_new_tokens", max_new_tokens=0)
    bad("max_new_tokens", max_new_tokens="abc")
    err = bad("reward_model", reward_model="bundled:smollm2")  # a causal LM, not a classifier
    assert "ForCausalLM" in err.message
    bad("reward_model", reward_model=str(tmp_path / "no-such-rm"))
    bad("prompts", prompts=str(data / "nope.jsonl"))
    qs = data / "qs.jsonl"
    qs.write_text("".join(json.dumps({"question": f"q {i}"}) + "\n" for i in range(3)))
    assert "question" in bad("prompt_column", prompts=str(qs)).message
    validate_config(_cfg(dd, prompts=str(qs), prompt_column="question"))
    bad("max_prompts", max_prompts=0)
    bad("template", template="alpaca")
    bad("top_p", top_p=0)
    bad("run_dir", run_dir=str(tmp_path / "elsewhere"))
    bad("base_model", base_model=str(tmp_path))
    bad("tie_margin", tie_margin=-1)
    bad("deepspeed", deepspeed="presets/deepspeed/zero2.json")
    # typed prompts replace the file (which then is not read)
    validate_config(_cfg(dd, prompts=str(tmp_path / "nope.jsonl"), prompt_lines="Hi\n\nWho are you?\n"))


def test_load_prompts_file_and_lines(prepared_data_dir):
    cfg = C.from_dict(ABEvalArgs, _cfg(prepared_data_dir, max_prompts=3))
    prompts, source = ab_eval.load_prompts(cfg, prepared_data_dir)
    assert len(prompts) == 3 and prompts[0] == "What is the capital of the Netherlands?"
    assert source.endswith("demo_prompts.jsonl")
    cfg = C.from_dict(ABEvalArgs, _cfg(prepared_data_dir, prompt_lines=" a \n\nb\nc\nd", max_prompts=2))
    assert ab_eval.load_prompts(cfg, prepared_data_dir) == (["a", "b"], "prompt_lines")


def test_validate_config_stays_cheap(prepared_data_dir):
    code = ("import sys; from backends.ab_eval import validate_config; "
            f"validate_config({{'data_dir': {str(prepared_data_dir)!r}, 'run_dir': 'runs/x', "
            "'finetuned': 'bundled:smollm2', 'max_new_tokens': '16'}); print('torch' in sys.modules)")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False", "validate_config must not load torch"


def test_cli_bad_option_exits_2_naming_the_field(prepared_data_dir):
    proc = subprocess.run([sys.executable, "-m", "backends.ab_eval", "--data_dir", str(prepared_data_dir),
                           "--run_dir", "runs/pytest-ab-never", "--finetuned", "job:nope"], cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=120,
                          check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "finetuned:" in proc.stderr and "nope" in proc.stderr
    assert not (prepared_data_dir / "runs" / "pytest-ab-never").exists()


# ------------------------------------------------------------------------------------ real runs
def _float(v: str) -> float | None:
    return None if v == "" else float(v)


@pytest.mark.slow
def test_ab_eval_job_through_the_engine(engine, studio_data_dir, demo_adapter, tiny_reward_model):
    config = {"data_dir": str(studio_data_dir), "base_model": "bundled:smollm2", "finetuned": str(demo_adapter),
              "reward_model": str(tiny_reward_model), "prompts": "presets/datasets/demo_prompts.jsonl",
              "max_prompts": 10, "max_new_tokens": 16, "do_sample": False, "tie_margin": 0.0}
    validate_config({**config, "run_dir": "runs/x"})
    t0 = time.time()
    job_id = engine.submit("ab_eval", config)  # no spec: the kind's default (python launcher, cpu)
    job = wait_for(lambda: (j := engine.get(job_id))["status"] not in ("queued", "running") and j, 900,
                   interval=1.0, what=f"job {job_id} to end")
    seconds = time.time() - t0
    log = engine.read_log_tail(job_id)
    assert job["status"] == "succeeded", f"{job['error']}\n{log[-4000:]}"
    print(f"\nab_eval job: 10 prompts in {seconds:.1f}s")
    assert job["launcher"]["launcher"] == "python" and job["launcher"]["preset"] == "cpu"
    run = Path(job["run_dir"])
    command = (run / "command.sh").read_text()
    assert "-m backends.ab_eval --config" in command and "accelerate" not in command

    with open(run / "output" / "results.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10
    assert list(rows[0]) == ["prompt", "answer_a", "answer_b", "reward_a", "reward_b", "winner"]
    jrows = [json.loads(x) for x in (run / "output" / "results.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in jrows] == [r["prompt"] for r in rows]
    for r in rows:
        assert r["answer_a"].strip() and r["answer_b"].strip(), r
        ra, rb = _float(r["reward_a"]), _float(r["reward_b"])
        assert ra is not None and rb is not None
        assert r["winner"] == winner_of(ra, rb, 0.0), r
    assert any(r["answer_a"] != r["answer_b"] for r in rows), "the adapter changed no answer"
    assert any(r["answer_b"].startswith(("Studio says", "工作室答")) for r in rows), [r["answer_b"] for r in rows]

    s = json.loads((run / "output" / "summary.json").read_text())
    assert s["status"] == "completed" and s["n"] == 10
    assert s["wins_a"] + s["wins_b"] + s["ties"] == 10
    assert s["wins_b"] == sum(r["winner"] == "B" for r in rows)
    assert s["win_rate_b"] == pytest.approx(s["wins_b"] / 10)
    lo, hi = s["ci95_mean_diff"]
    assert lo <= s["mean_reward_diff"] <= hi
    wlo, whi = s["ci95_win_rate_b"]
    assert wlo <= s["win_rate_b"] <= whi
    diffs = [float(r["reward_b"]) - float(r["reward_a"]) for r in rows]
    assert s["mean_reward_diff"] == pytest.approx(sum(diffs) / 10, abs=1e-5)
    assert s["reward_model"] == str(Path(tiny_reward_model).resolve()) and s["template"] == "chat"
    studio = json.loads((run / "output" / "studio.json").read_text())
    assert studio["kind"] == "ab_eval" and studio["status"] == "completed"

    metrics = engine.read_metrics(job_id)
    steps = [m["step"] for m in metrics if "step" in m and m.get("event") is None]
    assert steps == list(range(1, 11)) and all(m["total_steps"] == 10 for m in metrics if "step" in m)
    prog = engine.progress(job_id)
    assert (prog["step"], prog["total_steps"]) == (10, 10) and prog["percent"] == 100.0
    assert "prompt 10/10" in log
    # the job's budget is split between the two sides, which then answer at once (on a CPU with 2+ cores)
    from backends.infer.chat import usable_cores

    mode = "parallel" if usable_cores() >= 2 else "batch"
    assert f"LoRA on the same base: one copy of the weights; each pair runs {mode}" in log, log[-3000:]


@pytest.mark.slow
def test_sigterm_writes_partial_results_and_exits_143(prepared_data_dir, tmp_path):
    """The engine's Stop: the current prompt is finished, then partial results + summary (stopped), exit 143."""
    name = f"runs/pytest-ab-stop-{os.getpid()}"
    run = prepared_data_dir / name
    log = tmp_path / "log.txt"
    argv = [sys.executable, "-m", "backends.ab_eval", "--data_dir", str(prepared_data_dir), "--run_dir", name,
            "--finetuned", "bundled:smollm2", "--max_prompts", "40", "--max_new_tokens", "8"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: "prompt 2/40" in log.read_text() or proc.poll() is not None, 300, what="prompt 2")
        assert proc.poll() is None, log.read_text()[-3000:]
        os.killpg(proc.pid, signal.SIGTERM)
        rc = proc.wait(120)
        text = log.read_text()
        assert rc == 128 + signal.SIGTERM, text[-3000:]
        assert "SIGTERM received" in text
        s = json.loads((run / "output" / "summary.json").read_text())
        assert s["status"] == "stopped" and 2 <= s["n"] < 40 and s["total_prompts"] == 40
        assert s["win_rate_b"] is None and "reward model" in s["note"]  # no judge given
        with open(run / "output" / "results.csv", encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
        assert len(rows) == s["n"] and all(r["winner"] == "" for r in rows)
        end = read_metrics(run / "metrics.jsonl")[-1]
        assert end["event"] == "end" and end["status"] == "stopped" and end["step"] == s["n"]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        import shutil

        shutil.rmtree(run, ignore_errors=True)
