"""txt2img A/B (backends/infer/txt2img.py): base with CFG vs the distilled side, seeded, counted, with A1111 infotext.

The distilled side is a stand-in sd_distill result (tests/sd_fixture.py: a random LoRA on the bundled tiny SD
pipeline with the training backend's studio.json). Images are 64×64 at 2–4 steps: a few seconds in all."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backends.common.errors import FieldError
from backends.infer import txt2img as ti
from tests.sd_fixture import make_lora_result

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_sd(prepared_data_dir) -> Path:
    return prepared_data_dir / "models" / "tiny-sd"


@pytest.fixture(scope="session")
def lora_result(tiny_sd, tmp_path_factory) -> Path:
    return make_lora_result(tiny_sd, tmp_path_factory.mktemp("sd-distill-run"))


def pixels(img) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.int16)


def test_infotext_is_a1111s_format_and_round_trips(tmp_path):
    from PIL import Image

    params = {"Steps": 25, "Sampler": "DPM++ 2M", "CFG scale": 7.5, "Seed": 1, "Size": "64x64", "Model": "tiny-sd",
              "Lora": "run, v2", "Lora weight": 0.8}
    text = ti.infotext("a red circle\non two lines", "blurry, ugly", params)
    assert text == ("a red circle\non two lines\nNegative prompt: blurry, ugly\nSteps: 25, Sampler: DPM++ 2M, "
                    'CFG scale: 7.5, Seed: 1, Size: 64x64, Model: tiny-sd, Lora: "run, v2", Lora weight: 0.8')
    png = ti.save_png(Image.new("RGB", (8, 8), "red"), tmp_path / "x.png", text)
    assert Image.open(png).text["parameters"] == text  # a tEXt chunk named parameters, as A1111 writes
    back = ti.read_infotext(png)
    assert back["Prompt"] == "a red circle\non two lines"
    assert back["Negative prompt"] == "blurry, ugly"
    assert {k: back[k] for k in params} == {k: str(v) for k, v in params.items()}
    assert ti.read_infotext(png.read_bytes()) == back
    # no negative prompt: no such line; a float CFG scale stays a float as in A1111 ("7.0")
    assert ti.infotext("p", "", {"Steps": 2, "CFG scale": 7.0, "Seed": 3}) == "p\nSteps: 2, CFG scale: 7.0, Seed: 3"
    assert ti.read_infotext(ti.save_png(Image.new("RGB", (8, 8)), tmp_path / "plain.png", "")) == {}


def test_same_seed_same_image_and_lora_weight_0_is_exactly_the_base(lora_result):
    s = ti.ImageSettings(prompt="a red circle", seed=7, steps=3)
    a = ti.generate_side("base", s, finetuned=str(lora_result))
    b = ti.generate_side("base", s, finetuned=str(lora_result))
    assert np.array_equal(pixels(a.image), pixels(b.image))
    assert a.infotext == b.infotext and "Seed: 7" in a.infotext
    other = ti.generate_side("base", replace(s, seed=8), finetuned=str(lora_result))
    assert np.abs(pixels(other.image) - pixels(a.image)).mean() > 1
    # the distilled side runs without guidance: at weight 0 it is exactly the base pipeline at CFG scale 1
    plain = ti.generate_side("base", replace(s, guidance_scale=1.0), finetuned=str(lora_result))
    zero = ti.generate_side("distilled", replace(s, lora_weight=0.0), finetuned=str(lora_result))
    assert np.array_equal(pixels(zero.image), pixels(plain.image))
    full = ti.generate_side("distilled", s, finetuned=str(lora_result))
    assert np.abs(pixels(full.image) - pixels(plain.image)).mean() > 1  # and the LoRA does change it
    assert "Lora weight: 1.0" in full.infotext and "CFG scale: 1.0" in full.infotext
    # ... and the base side after a LoRA call is the plain base again (disable_lora)
    again = ti.generate_side("base", s, finetuned=str(lora_result))
    assert np.array_equal(pixels(again.image), pixels(a.image))


def test_distilled_makes_half_the_unet_passes_of_base(lora_result, tiny_sd, tmp_path):
    s = ti.ImageSettings(prompt="a blue square", seed=1, steps=4)
    base, dist = ti.generate_pair(s, finetuned=str(lora_result))
    assert (base.unet_passes, dist.unet_passes) == (8, 4)  # counted by a hook on the UNet
    assert base.seconds > 0 and dist.seconds > 0
    # LCM-LoRA: its scheduler and its 4 steps whatever the base side runs
    lcm = make_lora_result(tiny_sd, tmp_path / "lcm", mode="lcm_lora")
    r = ti.generate_side("distilled", replace(s, steps=6), finetuned=str(lcm))
    assert r.unet_passes == 4 and "Sampler: LCM" in r.infotext and "Steps: 4" in r.infotext
    # full mode: output/ is the student pipeline itself
    full = tmp_path / "full" / "output"
    shutil.copytree(tiny_sd, full)
    (full / "studio.json").write_text(json.dumps({"kind": "sd_distill", "status": "completed", "mode": "full",
                                                  "base_model": str(tiny_sd), "resolution": 64}))
    b, d = ti.generate_pair(replace(s, steps=2), finetuned=str(full))
    assert (b.unet_passes, d.unet_passes) == (4, 2) and "Lora" not in d.infotext


def test_grid_rows_are_prompts_times_seeds_columns_base_and_distilled(lora_result):
    s = ti.ImageSettings(prompt="", steps=2)
    canvas, results = ti.grid(["a red circle", "a blue square"], [1, 2], s, finetuned=str(lora_result))
    assert canvas.size == (2 * 64, 16 + 4 * 64) and len(results) == 4
    assert [ti.parse_infotext(b.infotext)["Seed"] for b, _ in results] == ["1", "2", "1", "2"]
    px = pixels(canvas)
    b, d = results[3]  # the last row: "a blue square", seed 2
    assert np.array_equal(px[16 + 3 * 64:, :64], pixels(b.image)) and np.array_equal(px[16 + 3 * 64:, 64:],
                                                                                       pixels(d.image))


def test_cli_writes_baseline_and_new_pngs_with_infotext(lora_result, prepared_data_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle\n\nA road that is going down a hill\n", encoding="utf-8")
    out = tmp_path / "image_out"
    proc = subprocess.run([sys.executable, "-m", "backends.infer.txt2img", "--finetuned_model", str(lora_result),
                           "--out_dir", str(out), "--prompts", str(prompts), "--seed", "5", "--steps", "2",
                           "--data_dir", str(prepared_data_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["BASELINE_seed_5_A road that is going down a hill.png", "BASELINE_seed_5_a red circle.png",
                     "NEW_seed_5_A road that is going down a hill.png", "NEW_seed_5_a red circle.png"]
    info = ti.read_infotext(out / "NEW_seed_5_a red circle.png")
    assert info["Prompt"] == "a red circle" and info["Seed"] == "5" and info["CFG scale"] == "1.0"
    assert ti.read_infotext(out / "BASELINE_seed_5_a red circle.png")["CFG scale"] == "7.5"
    timed = [line for line in proc.stdout.splitlines() if "BASELINE" in line and "s/image" in line]
    assert len(timed) == 2 and all(line.count("s/image") == 2 for line in timed)  # seconds of each side
    assert "mean seconds per image" in proc.stdout


def test_default_prompts_are_the_references_ten():
    prompts = ti.default_prompts()
    assert len(prompts) == 10 and prompts[0] == "A boy is watching TV"
    for p in ("A road that is going down a hill", "A photo of a person dancing in the rain",
              "A beach with a lot of waves on it", "3d rendering of 5 tennis balls on top of a cake",
              "A person holding a drink of soda"):  # the five
        assert p in prompts


@pytest.mark.parametrize("case", ["not_pipeline", "size", "steps"])
def test_bad_input_names_the_field(case, lora_result, tmp_path):
    s = ti.ImageSettings(prompt="a red circle", steps=2)
    if case == "not_pipeline":
        (tmp_path / "config.json").write_text("{}")
        with pytest.raises(FieldError) as e:
            ti.generate_side("base", s, base_model=str(tmp_path), finetuned=str(lora_result))
        assert e.value.field == "base_model" and "model_index.json" in e.value.message
    elif case == "size":
        with pytest.raises(FieldError) as e:
            ti.generate_side("base", replace(s, width=60), finetuned=str(lora_result))
        assert e.value.field == "width" and "multiple of 8" in e.value.message
    else:
        with pytest.raises(FieldError) as e:
            ti.generate_side("base", replace(s, steps=0), finetuned=str(lora_result))
        assert e.value.field == "steps" and "≥ 1" in e.value.message


def test_cli_bad_input_names_the_option(lora_result, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backends.infer.txt2img", "--finetuned_model", str(lora_result),
                           "--out_dir", str(tmp_path / "o"), "--steps", "0"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --steps: must be ≥ 1, got 0"), proc.stderr
    assert not (tmp_path / "o").exists()


JOB_ID = "20260101-000000-sd_distill-ab12"


@pytest.mark.browser
@pytest.mark.slow
def test_image_ab_panel_renders_a_pair_and_reads_png_info(start_studio, studio_data_dir, tiny_sd, page):
    from gradio_client import Client, handle_file

    make_lora_result(tiny_sd, studio_data_dir / "runs" / JOB_ID, guidance_scale=3.0)
    studio = start_studio("--no-prepare", "--offline", data_dir=studio_data_dir)
    page.set_viewport_size({"width": 1400, "height": 1200})
    page.goto(studio.url)
    page.get_by_role("tab", name="A/B compare").click()
    page.get_by_role("tab", name="Image A/B (txt2img)").click()
    box = page.locator("#img-distilled input")
    box.fill(f"job:{JOB_ID}")
    box.press("Enter")
    # the base side's CFG becomes the scale this result was distilled at (its studio.json), the teacher it imitates
    page.wait_for_function("() => document.querySelector('#img-cfg input').value === '3'", timeout=30_000)
    steps = page.locator("#img-steps input")
    steps.fill("3")
    page.locator("#img-generate").click()
    page.wait_for_function("() => document.querySelector('#img-took-b').innerText.includes('UNet passes')",
                           timeout=120_000)
    assert "6 UNet passes" in page.locator("#img-took-a").inner_text()  # CFG: 2 per step
    assert "3 UNet passes" in page.locator("#img-took-b").inner_text()  # distilled: 1 per step
    for pane in ("#img-a", "#img-b"):
        # the text lands before the browser has fetched and decoded the PNG: wait for the pixels
        page.wait_for_function("p => { const i = document.querySelector(p + ' img');"
                               " return i && i.complete && i.naturalWidth > 0; }", arg=pane, timeout=30_000)
        assert page.locator(f"{pane} img").first.evaluate("i => i.naturalWidth") == 64
    assert " s · " in page.locator("#img-took-a").inner_text()
    saved = sorted((studio_data_dir / "compare" / "images").glob("*.png"))
    assert [p.name.rsplit("-", 1)[1] for p in saved] == ["base.png", "distilled.png"]
    from conftest import doc_screenshot

    doc_screenshot(page, "compare-images.png", studio_data_dir)
    # a bad size is named by its label, the page stays up
    page.locator("#img-width input").fill("60")
    page.locator("#img-generate").click()
    page.wait_for_function("() => document.querySelector('#img-status').innerText.includes('Width: must be')",
                           timeout=30_000)
    # the named endpoints: PNG info reads the saved parameters back
    client = Client(studio.url, verbose=False)
    text = client.predict(handle_file(str(saved[1])), api_name="/png_info")
    assert text.startswith("a red circle\nSteps: 3, Sampler: DPM++ 2M, CFG scale: 1.0") and f"Lora: {JOB_ID}" in text
    grid_png, msg = client.predict("", f"job:{JOB_ID}", "a red circle\na green triangle", "1", "", 2, 0, 0, 7.5,
                                   "DPM++ 2M", 0.5, api_name="/txt2img_grid")
    assert "2 rows" in msg and ti.read_infotext(grid_png)["Lora weight"] == "0.5"
