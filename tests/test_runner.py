"""The shared field groups and the one backend runner (no model is loaded here)."""
from __future__ import annotations

import json

import pytest

from backends import ab_eval, sft
from backends.common import config as C
from backends.common import modeling, runner
from backends.common.errors import FieldError


def test_schemas_inherit_the_groups_and_keep_a_stable_order():
    for cls in (sft.SFTArgs,):
        for group in (C.TrainingFields, C.LoraFields, C.JobFields):
            assert issubclass(cls, group)
    names = C.field_names(sft.SFTArgs)
    groups = [d["group"] for d in C.field_descriptors(sft.SFTArgs)]
    assert names[0] == "model_name_or_path" and groups == sorted(groups, key=C.GROUPS.index)
    assert names[-4:] == ["run_dir", "resume_from_checkpoint", "recipe", "data_dir"]  # engine-owned last
    # one default for generation: the A/B job and the chat core's settings come from GenerationFields
    from backends.infer import chat

    assert ab_eval.ABEvalArgs().max_new_tokens == chat.GenSettings().max_new_tokens == 128
    with pytest.raises(FieldError) as e:
        chat.GenSettings(top_p=0).validated()
    assert e.value.field == "top_p"



def test_the_data_fields_are_declared_once_for_sft_reward_and_dpo():
    """data_split, prompt_column, template, max_seq_len and eval_ratio come from DataFields (not a copy per schema):
    same flags, labels and choices everywhere; data_split names each recipe's DeepSpeed-Chat step; the forms keep
    dataset first and the recipe's own options last."""
    from backends import dpo, reward
    from backends.common import data as datalib

    shared = C.field_names(C.DataFields)
    assert shared == ["data_split", "prompt_column", "template", "max_seq_len", "eval_ratio"]
    assert datalib.TEMPLATES is C.TEMPLATES
    group = {d["name"]: d for d in C.field_descriptors(C.DataFields)}
    assert group["template"]["choices"] == ["chat", "dschat", "plain"]
    for cls in (sft.SFTArgs, reward.RewardArgs, dpo.DPOArgs):
        assert issubclass(cls, C.DataFields), cls
        by = {d["name"]: d for d in C.field_descriptors(cls)}
        for name in shared:
            same = ("label", "label_zh", "type", "default", "choices", "min", "max", "group")
            assert {k: by[name][k] for k in same} == {k: group[name][k] for k in same}, (cls, name)
        assert by["template"]["help"] == group["template"]["help"] and by["eval_ratio"] == group["eval_ratio"]
        data = [d["name"] for d in C.field_descriptors(cls) if d["group"] == "data"]
        assert data[:3] == ["dataset", "data_split", "prompt_column"], data
        assert data.index("template") > max(data.index(c) for c in data if c.endswith("_column")), data
        parser_flags = {a.dest for a in C.build_parser(cls)._actions}
        assert set(shared) <= parser_flags  # --data_split, --template, ... as before
    sft_by = {d["name"]: d for d in C.field_descriptors(sft.SFTArgs)}
    rm_by = {d["name"]: d for d in C.field_descriptors(reward.RewardArgs)}
    assert "SFT uses the first part (20%)" in sft_by["data_split"]["help"]
    assert "the reward model uses the second part (40%)" in rm_by["data_split"]["help"]
    assert [d["name"] for d in C.field_descriptors(sft.SFTArgs) if d["group"] == "data"][-2:] == [
        "packing", "loss_on_prompt"]
    assert [d["name"] for d in C.field_descriptors(dpo.DPOArgs) if d["group"] == "data"][-1] == "drop_identical"
    assert "order" not in sft_by["packing"]  # a layout key, not a descriptor field

def test_redefault_keeps_the_metadata():
    from dataclasses import dataclass

    @dataclass
    class X(C.TrainingFields):
        learning_rate: float = C.redefault(C.TrainingFields, "learning_rate", 5e-5)

    d = {x["name"]: x for x in C.field_descriptors(X)}["learning_rate"]
    assert d["default"] == 5e-5 and d["label"] == "Learning rate" and d["min_exclusive"]


def test_main_prints_the_field_and_exits_2(tmp_path, capsys):
    code = runner.main("sft", sft.SFTArgs, lambda cfg, job: {"exit_code": 0},
                       ["--learning_rate", "abc", "--data_dir", str(tmp_path)])
    assert code == 2 and "error: learning_rate: must be a number" in capsys.readouterr().err
    code = runner.main("sft", sft.SFTArgs, lambda cfg, job: {}, ["--run_dir", "/elsewhere", "--data_dir", str(tmp_path)])
    assert code == 2 and "error: run_dir:" in capsys.readouterr().err


def test_recipe_name_and_run_dir_default(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("kind: sft\nname: my-recipe\nconfig:\n  max_steps: 3\n")
    seen = {}

    def run(cfg, job):
        seen.update(recipe=cfg.recipe, steps=cfg.max_steps, run_dir=job.run_dir)
        return {"exit_code": 130}

    assert runner.main("sft", sft.SFTArgs, run, ["--config", str(recipe), "--data_dir", str(tmp_path)]) == 130
    assert seen == {"recipe": "my-recipe", "steps": 3, "run_dir": (tmp_path / "runs/manual-sft").resolve()}


def test_resume_takes_the_newest_complete_checkpoint(tmp_path):
    ck = tmp_path / "runs/x/checkpoints"
    for n, state in ((5, "trainer_state.json"), (9, "studio-state.json"), (12, None)):  # 12: save crashed
        (ck / f"checkpoint-{n}").mkdir(parents=True)
        if state:
            (ck / f"checkpoint-{n}" / state).write_text("{}")
    cfg = sft.SFTArgs(data_dir=str(tmp_path), run_dir="runs/x", resume_from_checkpoint="latest")
    assert runner.resolve_job(cfg, "sft").resume == str(ck / "checkpoint-9")
    cfg.resume_from_checkpoint = ""
    with pytest.raises(FieldError) as e:
        runner.resolve_job(cfg, "sft")
    assert e.value.field == "resume_from_checkpoint" and "latest" in str(e.value)
    runner.write_state(ck / "checkpoint-12", 12)
    cfg.resume_from_checkpoint = "latest"
    assert runner.resolve_job(cfg, "sft").resume == str(ck / "checkpoint-12")


def test_job_ids_resolve_to_outputs_and_are_checked(tmp_path):
    out = tmp_path / "runs/20260101-000000-sft-ab12/output"
    out.mkdir(parents=True)
    assert modeling.resolve_model("job:20260101-000000-sft-ab12", tmp_path) == str(out.resolve())
    with pytest.raises(FieldError) as e:
        runner.job_result("job:20260101-000000-sft-ab12", tmp_path, field="model_name_or_path", kinds=("sft",))
    assert e.value.field == "model_name_or_path" and "not finished" in str(e.value)
    (out / "studio.json").write_text(json.dumps({"kind": "reward", "status": "completed"}))
    with pytest.raises(FieldError) as e:
        runner.job_result("job:20260101-000000-sft-ab12", tmp_path, field="model_name_or_path", kinds=("sft",))
    assert "'reward' job" in str(e.value)
    with pytest.raises(FieldError) as e:
        runner.job_result("job:20990101-000000-sft-none", tmp_path, field="model_name_or_path")
    assert "no job" in str(e.value)
