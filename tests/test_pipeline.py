"""Pipelines as chains of ordinary jobs (app/jobs/pipeline.py), on the torch-free dummy trainer."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from app import kinds
from app.jobs import Engine, JobError, LaunchSpec
from app.jobs import pipeline as pl
from backends.common.errors import FieldError
from conftest import wait_for

kinds.register(kinds.Kind("dummy", "tests.jobkit_dummy", model_key="model", dataset_key="dataset"))
PY = LaunchSpec(launcher="python", preset="cpu")


def step(title: str, **config) -> dict:
    return {"kind": "dummy", "title": title, "spec": PY, "config": {"steps": 3, "sleep": 0.05, **config}}


def wait_pipeline(eng: Engine, pid: str, *statuses: str, timeout: float = 60) -> dict:
    return wait_for(lambda: (st := pl.status(eng, pid))["status"] in statuses and st, timeout, interval=0.1,
                    what=f"pipeline {pid} in {statuses}")


@pytest.fixture
def eng(tmp_path):
    e = Engine(tmp_path / "data", poll_interval=0.1, grace_seconds=20)
    yield e
    for j in e.list_jobs():
        if j["status"] in ("queued", "running"):
            e.stop(j["id"], wait=True)
    e.shutdown()


def test_steps_run_in_order_each_after_the_previous_succeeded(eng):
    rec = pl.submit(eng, "demo", [step("sft", model="base"), step("reward", model="job:@1"),
                                  step("ppo", model="job:@1", reward="job:@2")])
    ids = [s["job"] for s in rec["steps"]]
    st = wait_pipeline(eng, rec["id"], "succeeded", "failed", "cancelled")
    assert st["status"] == "succeeded", [(j["status"], j["error"]) for j in st["jobs"]]
    jobs = st["jobs"]
    for a, b in zip(jobs, jobs[1:]):
        assert b["started_at"] >= a["ended_at"] - 0.01  # never before the step it waits for ended
        assert b["meta"]["after"] == a["id"]
    assert jobs[1]["config"]["model"] == f"job:{ids[0]}"
    assert jobs[2]["config"]["reward"] == f"job:{ids[1]}"  # job:@n -> the id of step n
    assert [j["meta"]["step"] for j in jobs] == [1, 2, 3] and {j["meta"]["pipeline"] for j in jobs} == {rec["id"]}
    sh = (pl.pipelines_dir(eng) / rec["id"] / "pipeline.sh").read_text()
    assert [sh.index(i) for i in ids] == sorted(sh.index(i) for i in ids)  # the steps in order
    assert pl.overall_progress(eng, st)["percent"] == 100.0


def test_a_failed_step_cancels_the_rest_and_resume_after_the_fix_runs_only_the_rest(eng, tmp_path):
    bad = tmp_path / "bad-data"
    bad.write_text("x")
    rec = pl.submit(eng, "demo", [step("sft"), step("reward", model="job:@1", fail_if_exists=str(bad)),
                                  step("ppo", model="job:@1")])
    st = wait_pipeline(eng, rec["id"], "failed", "succeeded")
    s1, s2, s3 = st["jobs"]
    assert (s1["status"], s2["status"]) == ("succeeded", "failed")
    s3 = wait_for(lambda: (j := eng.get(s3["id"]))["status"] == "cancelled" and j, 20, what="step 3 cancelled")
    assert "step 2" in s3["error"] and "failed" in s3["error"] and "rejected" in s3["error"], s3["error"]
    assert st["current"] == 1
    bad.unlink()  # the user fixes the data
    assert pl.resume(eng, rec["id"]) == s2["id"]
    st = wait_pipeline(eng, rec["id"], "succeeded", "failed", "cancelled")
    assert st["status"] == "succeeded", [(j["status"], j["error"]) for j in st["jobs"]]
    assert [j["attempts"] for j in st["jobs"]] == [1, 2, 1]  # step 1 not run again


def test_stop_cancels_the_later_steps_and_resume_continues_from_the_checkpoint(eng):
    rec = pl.submit(eng, "demo", [step("sft", steps=40, sleep=0.2, checkpoint_every=2, graceful_stop=True,
                                       save_seconds=0.1), step("reward", model="job:@1")])
    first = rec["steps"][0]["job"]
    wait_for(lambda: eng.get(first)["checkpoints"], 60, what="a checkpoint of step 1")
    pl.stop(eng, rec["id"])
    st = wait_pipeline(eng, rec["id"], "stopped")
    assert wait_for(lambda: eng.get(rec["steps"][1]["job"])["status"] == "cancelled", 20, what="step 2 cancelled")
    pl.resume(eng, rec["id"])
    st = wait_pipeline(eng, rec["id"], "succeeded", "failed", "cancelled", timeout=90)
    assert st["status"] == "succeeded"
    assert "resuming from step" in eng.read_log_tail(first)


def test_a_restarted_engine_still_runs_the_later_steps(tmp_path):
    dd = tmp_path / "data"
    e1 = Engine(dd, poll_interval=0.1)
    rec = pl.submit(e1, "demo", [step("sft", sleep=0.05), step("reward", model="job:@1", steps=10, sleep=0.3),
                                 step("ppo", model="job:@1")])
    s2 = rec["steps"][1]["job"]
    wait_for(lambda: e1.get(s2)["status"] == "running" and e1.get(s2)["pid"], 60, what="step 2 running")
    e1.shutdown()  # the UI goes away during step 2; its job keeps running detached
    e2 = Engine(dd, poll_interval=0.1)
    try:
        st = wait_pipeline(e2, rec["id"], "succeeded", "failed", "cancelled", "interrupted", timeout=90)
        assert st["status"] == "succeeded", [(j["status"], j["error"]) for j in st["jobs"]]
        assert st["jobs"][1]["attempts"] == 1  # re-attached, not restarted
    finally:
        e2.shutdown()


def test_pipeline_sh_reruns_the_whole_pipeline_from_a_shell(eng):
    rec = pl.submit(eng, "demo", [step("sft"), step("reward", model="job:@1")])
    wait_pipeline(eng, rec["id"], "succeeded")
    runs = [Path(eng.get(s["job"])["run_dir"]) for s in rec["steps"]]
    before = [(r / "output" / "studio.json").read_text() for r in runs]
    sh = pl.pipelines_dir(eng) / rec["id"] / "pipeline.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    out = subprocess.run(["bash", str(sh)], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "=== pipeline step 1 (sft)" in out.stdout and "=== pipeline done ===" in out.stdout
    assert [(r / "output" / "studio.json").read_text() for r in runs] == before  # the same result files again
    for r in runs:  # the earlier results were kept, not overwritten
        assert len(list((r / "previous").glob("*/output/studio.json"))) == 1
        assert json.loads((r / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 3


def test_pipeline_sh_stops_at_the_first_failing_step(eng, tmp_path):
    rec = pl.submit(eng, "demo", [step("sft"), step("reward", model="job:@1"), step("ppo", model="job:@1")])
    wait_pipeline(eng, rec["id"], "succeeded")
    s2 = Path(eng.get(rec["steps"][1]["job"])["run_dir"])
    cfg = s2 / "config.yaml"
    cfg.write_text(cfg.read_text() + "exit_code: 5\n")
    out = subprocess.run(["bash", str(pl.pipelines_dir(eng) / rec["id"] / "pipeline.sh")], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 5
    assert "pipeline step 2 (reward) failed with exit code 5" in out.stderr and "pipeline step 3" not in out.stdout


def test_bad_steps_are_refused_before_anything_is_queued(eng):
    with pytest.raises(FieldError) as e:
        pl.submit(eng, "x", [step("sft", model="job:@2"), step("reward")])
    assert e.value.field == "step 1: model" and "earlier step" in e.value.message
    with pytest.raises(FieldError) as e:
        pl.submit(eng, "x", [step("sft"), {"kind": "nope", "config": {}}])
    assert e.value.field == "step 2: kind"
    assert eng.list_jobs() == [] and pl.list_pipelines(eng) == []
    with pytest.raises(JobError):
        pl.resume(eng, "../etc")


# ---------------------------------------------------------------- pipeline recipes (app/pipelines.py)
def test_every_pipeline_recipe_builds_its_steps_for_every_algorithm():
    from app import pipelines as plib

    recipes = plib.load_recipes()
    assert {"cpu-demo-smollm2-rlhf", "dschat-opt-1.3b-single-gpu", "dschat-opt-13b-single-node",
            "dschat-opt-66b-multi-node", "dschat-llama2-7b-lora"} <= set(recipes)
    assert {"ppo", "grpo", "dpo"} <= set(plib.algorithms())
    for name, rec in recipes.items():
        for algo in plib.algorithms():
            if algo not in (rec.get("steps") or {}):
                continue
            steps = plib.build_steps(rec, algorithm=algo)
            kinds_ = [s["kind"] for s in steps]
            if algo == "dpo":
                assert kinds_ == ["sft", "dpo"] and steps[1]["config"]["model_name_or_path"] == "job:@1", name
            else:
                assert kinds_ == ["sft", "reward", plib.ALGORITHM_KINDS[algo]], name
                assert steps[2]["config"]["model_name_or_path"] == "job:@1", name
                assert steps[2]["config"]["reward_model"] == "job:@2", name
                assert steps[1]["config"]["model_name_or_path"] == rec["reward_model"], name
            assert steps[0]["config"]["model_name_or_path"] == rec["actor_model"], name
            if rec.get("dataset"):
                assert all(s["config"]["dataset"] == rec["dataset"] for s in steps), name
            want = {"cpu": "cpu", "single_gpu": "single_gpu", "single_node": "multi_gpu",
                    "multi_node": "multi_node"}[rec["deployment"]]
            assert all(s["spec"].preset == want for s in steps), name
            for s in steps:
                s["spec"].validate()
    big = plib.build_steps(recipes["dschat-opt-66b-multi-node"])
    assert all(s["spec"].zero_stage == 3 and "worker-2 slots=8" in s["spec"].hostfile_text for s in big[:1])
    assert big[0]["config"]["learning_rate"] == 1.0e-4  # run_66b.sh's value over the 13b recipe's


def test_pipeline_choices_are_checked_with_the_field_named():
    from app import pipelines as plib

    rec = plib.load_recipes()["cpu-demo-smollm2-rlhf"]
    with pytest.raises(FieldError) as e:
        plib.build_steps(rec, deployment="multi_node")
    assert e.value.field == "hostfile"
    with pytest.raises(FieldError) as e:
        plib.build_steps(rec, algorithm="nope")
    assert e.value.field == "algorithm"
    steps = plib.build_steps(rec, algorithm="ppo", overrides={"rlhf": {"max_steps": "3"}}, data_split="2,4,4")
    assert steps[2]["config"]["max_steps"] == "3" and all(s["config"]["data_split"] == "2,4,4" for s in steps)


def test_the_jobs_table_groups_a_pipelines_steps_under_its_name(eng):
    from app.tabs.jobs import jobs_frame

    solo = eng.submit("dummy", {"steps": 1}, PY)
    rec = pl.submit(eng, "my-rlhf", [step("sft"), step("reward", model="job:@1"), step("ppo", model="job:@1")])
    later = eng.submit("dummy", {"steps": 1}, PY)
    frame = jobs_frame(eng.list_jobs())
    ids = list(frame.iloc[:, 0])
    steps = [s["job"] for s in rec["steps"]]
    assert ids == [later, *steps, solo]  # newest first; the pipeline's steps together, in step order
    assert list(frame.iloc[1:4, 3]) == ["⛓ my-rlhf step 1", "⛓ my-rlhf step 2", "⛓ my-rlhf step 3"]
