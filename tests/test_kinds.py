"""The kind registry (app/kinds.py) is the one declaration of a job kind: everything it names must exist, and the
places that used to keep their own lists read it."""
from __future__ import annotations

import importlib.util

import pytest

from app import kinds
from app.tabs import plot
from app.ui import TAB_ORDER
from backends.common import config as cfgmod
from conftest import ROOT


@pytest.mark.parametrize("kind", [k for k in kinds.all_kinds() if k.name != "dummy"], ids=lambda k: k.name)
def test_every_kind_names_things_that_exist(kind):
    assert importlib.util.find_spec(kind.module) is not None, kind.module
    assert kind.schema is not None and callable(kind.validate)
    assert set(cfgmod.field_names(cfgmod.JobFields)) <= set(cfgmod.field_names(kind.schema)), \
        "the schema inherits the engine-owned fields from the one JobFields group"
    assert kinds.model_field(kind.name), "a field with widget=model names what the job starts from"
    assert set(kind.series) <= set(plot.SERIES), "every series it plots has a legend label and a colour"
    if kind.tab:
        assert kind.tab in TAB_ORDER
        recipe = ROOT / "presets" / "recipes" / f"{kind.default_recipe}.yaml"
        assert recipe.is_file() and f"kind: {kind.name}" in recipe.read_text(encoding="utf-8")
    if kind.docs:
        assert f"<!-- BEGIN {kind.docs} -->" in (ROOT / "README.md").read_text(encoding="utf-8")


def test_launcher_engine_and_pickers_read_the_registry():
    from app.jobs.launcher import default_spec, module_for

    assert module_for("reward") == "backends.reward"
    assert default_spec("ab_eval").launcher == "python" and default_spec("sft").launcher == "accelerate"
    assert kinds.producing("policy") == ("sft", "rlhf_ppo", "grpo", "rloo", "dpo")
    assert kinds.producing("reward_model") == ("reward",)
    from backends.common import modeling

    assert set(modeling.POLICY_KINDS) == set(kinds.producing("policy"))  # the backends' copy of the fact
    assert (kinds.model_field("sft"), kinds.dataset_field("sft")) == ("model_name_or_path", "dataset")
    with pytest.raises(Exception, match="unknown job kind 'nope'"):
        module_for("nope")


def test_every_tab_is_built_and_the_rlhf_tab_lists_its_algorithms_in_order():
    from app.i18n import t

    assert [k.name for k in kinds.of_tab("reward")] == ["reward"]
    assert [k.name for k in kinds.of_tab("rlhf")] == ["rlhf_ppo", "grpo", "rloo", "dpo"]  # the stage dropdown's order
    from app.ui import TAB_ORDER

    built = {"datasets", "pipeline", "jobs", "compare"}  # the tabs with a module of their own
    assert [k for k in TAB_ORDER if not kinds.of_tab(k) and k not in built] == []  # no tab says "coming" any more
    assert kinds.of_tab("sd_lora") and "open issues" in t("coming", "en")


def test_score_a_pair_names_bad_fields_and_scores_both(tiny_reward_model):
    from backends.common.errors import FieldError
    from backends.infer import chat

    (a, b), tmpl = chat.score_pair(str(tiny_reward_model), "What is the capital of France?",
                                   ["Paris is the capital of France.", "No."])
    assert tmpl == "chat" and isinstance(a, float) and isinstance(b, float) and a != b
    # the same rendering the A/B tab scores with: the prompt in the template, then the answer
    sc = chat.scorer(str(tiny_reward_model))
    text = chat.render([], "What is the capital of France?", "chat", sc.tok)
    assert sc.score(text, ["Paris is the capital of France."])[0] == pytest.approx(a, abs=1e-5)
    for args, field in ((("", ["x", "y"]), "prompt"), (("q", ["", "y"]), "answer_a"), (("q", ["x", " "]), "answer_b")):
        with pytest.raises(FieldError) as e:
            chat.score_pair(str(tiny_reward_model), *args)
        assert e.value.field == field
