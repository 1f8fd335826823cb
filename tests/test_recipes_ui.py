"""Issue 13: Save as recipe (a tab's form as <data-dir>/recipes/<name>.yaml, listed next to the shipped recipes,
deletable) and the named train endpoints (/<kind>_train takes every field by name with its recipe default)."""
from __future__ import annotations

import json
import stat

import pytest
import yaml

from app.jobs import JobStore
from app.tabs import training
from conftest import wait_for


# ------------------------------------------------------------------------------ recipe files (no studio)
def test_saved_recipe_file_is_listed_after_the_shipped_ones_and_can_be_deleted(tmp_path):
    config, launch = {"learning_rate": 1e-4, "max_steps": 3}, {"launcher": "python", "preset": "cpu"}
    path = training.save_user_recipe(tmp_path, "reward", "my-rm_1.0", "mine", config, launch)
    assert path == tmp_path / "recipes" / "my-rm_1.0.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text()) == {"kind": "reward", "name": "my-rm_1.0", "description": "mine",
                                                "launcher": launch, "config": config}
    assert not [p for p in path.parent.iterdir() if p.name != path.name]  # no temp file left behind

    recipes = training.load_recipes("reward", tmp_path)
    assert list(recipes)[-1] == "my-rm_1.0" and "cpu-demo-smollm2-rm" in recipes
    labels = dict((v, lbl) for lbl, v in training.recipe_choices(recipes, "en"))
    assert labels["my-rm_1.0"] == "my-rm_1.0 (saved)" and labels["cpu-demo-smollm2-rm"] == "cpu-demo-smollm2-rm"
    assert dict((v, lbl) for lbl, v in training.recipe_choices(recipes, "zh"))["my-rm_1.0"] == "my-rm_1.0（已保存）"
    assert "my-rm_1.0" not in training.load_recipes("sft", tmp_path)  # another kind's dropdown does not list it

    with pytest.raises(training.FieldError, match="shipped recipe .* cannot be deleted"):
        training.delete_user_recipe(tmp_path, "reward", "cpu-demo-smollm2-rm")
    training.delete_user_recipe(tmp_path, "reward", "my-rm_1.0")
    assert not path.exists() and "my-rm_1.0" not in training.load_recipes("reward", tmp_path)


@pytest.mark.parametrize("name, why", [
    ("", "is empty"), ("../evil", "only letters, digits"), ("a/b", "only letters, digits"),
    ("my recipe", "only letters, digits"), (".hidden", "only letters, digits"), ("x" * 81, "at most 80"),
    ("cpu-demo-smollm2", "is a shipped recipe"),
])
def test_a_bad_or_shipped_recipe_name_is_refused_and_nothing_is_written(tmp_path, name, why):
    with pytest.raises(training.FieldError, match=why) as e:
        training.save_user_recipe(tmp_path, "sft", name, "", {}, {})
    assert e.value.field == "recipe_name"
    assert not (tmp_path / "recipes").exists() or not list((tmp_path / "recipes").iterdir())


# ------------------------------------------------------------------------------ the named API endpoints
def _no_jobs(dd) -> bool:
    runs = dd / "runs"
    return (not runs.exists() or not list(runs.iterdir())) and not JobStore(dd / "jobs.sqlite").list()


def test_train_and_recipe_endpoints_take_named_fields(start_studio, studio_data_dir):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    dd = studio_data_dir
    (dd / "datasets").mkdir()
    (dd / "datasets" / "no_rejected.jsonl").write_text("".join(
        json.dumps({"prompt": f"q{i}", "chosen": f"a{i}", "worse": f"b{i}"}) + "\n" for i in range(4)))
    studio = start_studio("--no-prepare", "--offline", data_dir=dd)
    c = Client(studio.url + "/", verbose=False)

    # every field is a named parameter with the default recipe's value as its default
    params = {p["parameter_name"]: p for p in c.view_api(print_info=False, return_format="dict")
              ["named_endpoints"]["/reward_train"]["parameters"]}
    assert params["learning_rate"]["parameter_has_default"] and params["learning_rate"]["parameter_default"] == "0.001"
    assert params["max_steps"]["parameter_default"] == "12" and params["launcher"]["parameter_default"] == "accelerate"
    assert params["recipe"]["parameter_default"] == "cpu-demo-smollm2-rm" and params["learning_rate"]["label"] == "Learning rate"
    assert all(p["parameter_has_default"] for p in params.values())

    # a bad value: the error names the field by its label (and parameter name); nothing is queued
    with pytest.raises(AppError, match=r"Learning rate \(learning_rate\): must be a number > 0 .*'abc'"):
        c.predict(learning_rate="abc", max_steps="2", api_name="/reward_train")
    # DPO on a dataset without a rejected column: the message names the rejected-column field
    with pytest.raises(AppError) as e:
        c.predict(model_name_or_path="bundled:smollm2", dataset="datasets/no_rejected.jsonl",
                  api_name="/dpo_train")
    assert str(e.value).startswith("Rejected column (rejected_column): no_rejected.jsonl has no column 'rejected'")
    assert _no_jobs(dd)

    # save as recipe through the API: a bad field is refused like Train, a good one is written and listed
    with pytest.raises(AppError, match=r"Batch size per device \(per_device_train_batch_size\)"):
        c.predict(name="my-rm", per_device_train_batch_size="0", api_name="/reward_save_recipe")
    with pytest.raises(AppError, match="is a shipped recipe"):
        c.predict(name="cpu-demo-smollm2-rm", api_name="/reward_save_recipe")
    assert not (dd / "recipes").exists() or not list((dd / "recipes").iterdir())
    assert c.predict(name="my-rm", description="two steps", max_steps="2", api_name="/reward_save_recipe") == "my-rm"
    saved = yaml.safe_load((dd / "recipes" / "my-rm.yaml").read_text())
    assert saved["kind"] == "reward" and saved["config"]["max_steps"] == 2 and saved["description"] == "two steps"
    assert "data_dir" not in saved["config"] and "run_dir" not in saved["config"]  # engine fields stay out
    assert saved["launcher"]["launcher"] == "accelerate"
    assert stat.S_IMODE((dd / "recipes" / "my-rm.yaml").stat().st_mode) == 0o600
    with pytest.raises(AppError, match="shipped recipe .* cannot be deleted"):
        c.predict(name="cpu-demo-smollm2-rm", api_name="/reward_delete_recipe")
    assert c.predict(name="my-rm", api_name="/reward_delete_recipe") == "my-rm"
    assert not (dd / "recipes" / "my-rm.yaml").exists()
    assert _no_jobs(dd)

    # a valid call names two fields and gets a job id; the rest comes from the default recipe (stopped at once)
    job_id = c.predict(learning_rate="1e-4", max_steps="1", api_name="/sft_train")
    c.predict(api_name="/sft_stop")
    run_cfg = yaml.safe_load((dd / "runs" / job_id / "config.yaml").read_text())
    assert run_cfg["learning_rate"] == 1e-4 and run_cfg["max_steps"] == 1 and run_cfg["recipe"] == "cpu-demo-smollm2"
    assert run_cfg["dataset"] == training.load_recipes("sft")["cpu-demo-smollm2"]["config"]["dataset"]
    store = JobStore(dd / "jobs.sqlite")
    wait_for(lambda: store.get(job_id)["status"] not in ("queued", "running"), 60, what=f"{job_id} to stop")


# ------------------------------------------------------------------------------ the page
@pytest.mark.browser
def test_save_as_recipe_in_the_page_lists_it_and_delete_removes_it(start_studio, studio_data_dir, page):
    def fill(elem_id: str, value: str) -> None:
        page.locator(f"#{elem_id} input, #{elem_id} textarea").first.fill(value)

    dd = studio_data_dir
    studio = start_studio("--no-prepare", "--offline", data_dir=dd)
    page.goto(studio.url)
    page.get_by_role("tab", name="Reward model").click()
    error = page.locator("#reward-error")
    recipe_box = page.locator("#reward-recipe input")

    # a bad field: the same message as Train (by its label, next to Train), nothing written
    fill("reward-learning_rate", "abc")
    fill("reward-recipe-name", "my-rm")
    page.locator("#reward-recipe-save").click()
    error.get_by_text("Learning rate:").wait_for(timeout=30_000)
    assert not (dd / "recipes").exists() or not list((dd / "recipes").iterdir())
    # a bad name is named by the name box's label
    fill("reward-learning_rate", "2e-4")
    fill("reward-recipe-name", "../my rm")
    page.locator("#reward-recipe-save").click()
    error.get_by_text("Save as recipe: name:").wait_for(timeout=30_000)

    # saved: on disk, listed and selected as "my-rm (saved)", its values in the form
    fill("reward-recipe-name", "my-rm")
    fill("reward-max_steps", "5")
    page.locator("#reward-recipe-save").click()
    page.wait_for_function("() => document.querySelector('#reward-recipe input').value === 'my-rm (saved)'",
                           timeout=30_000)
    saved = yaml.safe_load((dd / "recipes" / "my-rm.yaml").read_text())
    assert saved["config"]["learning_rate"] == 2e-4 and saved["config"]["max_steps"] == 5
    assert not error.inner_text().strip()
    recipe_box.click()
    options = page.get_by_role("option")
    options.first.wait_for(timeout=10_000)
    names = [n.replace("✓", "").strip() for n in options.all_inner_texts()]  # the selected one has a tick
    assert "cpu-demo-smollm2-rm" in names and "my-rm (saved)" in names
    page.get_by_role("option", name="cpu-demo-smollm2-rm").click()
    page.wait_for_function("() => document.querySelector('#reward-max_steps input').value === '12'", timeout=30_000)

    # a shipped recipe cannot be deleted
    page.locator("#reward-recipe-delete").click()
    error.get_by_text("cannot be deleted").wait_for(timeout=30_000)
    assert (training.RECIPES_DIR / "cpu-demo-smollm2-rm.yaml").exists()

    # a recipe saved elsewhere (another browser, by hand) is listed when the tab is opened again
    training.save_user_recipe(dd, "reward", "from-elsewhere", "", saved["config"], saved["launcher"])
    page.get_by_role("tab", name="SFT").click()
    page.get_by_role("tab", name="Reward model").click()
    recipe_box.click()
    page.get_by_role("option", name="from-elsewhere (saved)").wait_for(timeout=30_000)
    page.get_by_role("option", name="my-rm (saved)").click()
    page.wait_for_function("() => document.querySelector('#reward-max_steps input').value === '5'", timeout=30_000)
    page.locator("#reward-recipe-delete").click()
    page.wait_for_function("() => document.querySelector('#reward-recipe input').value === ''", timeout=30_000)
    assert not (dd / "recipes" / "my-rm.yaml").exists()
    assert page.locator("#reward-max_steps input").input_value() == "5"  # the form stays as it was
    recipe_box.click()
    page.get_by_role("option", name="from-elsewhere (saved)").wait_for(timeout=10_000)
    assert not any("my-rm" in n for n in page.get_by_role("option").all_inner_texts())
    assert _no_jobs(dd)
