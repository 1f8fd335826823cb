"""The shapes picture set (backends/data/shapes_images.py) and the optional bundled `tiny-sd-shapes` model.

The quality check (a held-out caption's picture has the named colour dominant) needs the full training
(tens of minutes): `benchmarks/shapes_model.py` runs it (and leaves the model in the test data dir); the last test here
repeats the check on that model when it is there and skips otherwise. The build test uses a shortened run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from backends.data import shapes_images as si

ROOT = Path(__file__).resolve().parent.parent


def test_set_is_captioned_deterministic_and_holds_captions_out(tmp_path):
    a = si.write_imagefolder(tmp_path / "a", n=24, seed=3)
    b = si.write_imagefolder(tmp_path / "b", n=24, seed=3)
    rows = [json.loads(x) for x in (a / "metadata.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and all(set(r) == {"file_name", "text"} for r in rows)
    assert (a / "metadata.jsonl").read_bytes() == (b / "metadata.jsonl").read_bytes()
    assert all((a / r["file_name"]).read_bytes() == (b / r["file_name"]).read_bytes() for r in rows)
    other = [json.loads(x)["text"] for x in (si.write_imagefolder(tmp_path / "c", n=24, seed=4) / "metadata.jsonl")
             .read_text().splitlines()]
    assert other != [r["text"] for r in rows]
    held = (tmp_path / "a" / "held_out.txt").read_text().split("\n")[:-1]
    assert held == list(si.HELD_OUT) and not set(held) & set(si.train_captions())
    words = {w for c in si.train_captions() for w in c.split()}
    assert all(set(c.split()) <= words | {"circles", "squares", "triangles"} for c in held)  # only new combinations
    assert "a red circle" in si.train_captions() and "two blue squares on yellow" in si.train_captions()
    from PIL import Image

    for r in rows:  # the pixel test agrees with the captions of the drawn pictures
        img = Image.open(a / r["file_name"])
        spec = si.parse_caption(r["text"])
        assert img.size == (64, 64)
        assert si.dominant_shape_colour(img, spec["background"]) == spec["colour"], r
        assert si.colour_share(img)[spec["background"]] > 0.3


def test_cli_writes_the_imagefolder(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "backends.data.shapes_images", str(tmp_path / "s"), "--n", "5"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "s" / "train").glob("*.png"))) == 5
    bad = subprocess.run([sys.executable, "-m", "backends.data.shapes_images", str(tmp_path / "t"), "--size", "60"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --size: must be a multiple of 8")


def test_shapes_model_is_optional_and_builds_staged_with_progress(tmp_path):
    from backends.bundled import MARKER, tiny_sd_shapes
    from backends.infer import txt2img as ti

    from backends import sd_distill_lora as sd
    from backends.common import config as C
    from backends.common.errors import FieldError

    st = tiny_sd_shapes.tiny_sd_shapes_status(tmp_path)
    assert not st["ready"] and st["optional"] and "--only shapes" in st["command"]
    demo = {**C.to_dict(C.load_config(sd.SDDistillArgs, ROOT / "presets/recipes/cpu-demo-tiny-sd-shapes.yaml",
                                      kind="sd_distill")), "data_dir": str(tmp_path), "run_dir": str(tmp_path / "r")}
    with pytest.raises(FieldError) as e:  # the shapes demo recipe before the model is prepared
        sd.validate_config(demo)
    assert e.value.field == "pretrained_model_name_or_path" and "prepare --only shapes" in e.value.message
    lines: list[str] = []
    path = tiny_sd_shapes.ensure_tiny_sd_shapes(tmp_path, log=lines.append, vae_steps=3, unet_steps=3,
                                                 pool=16, batch=2)  # shortened
    assert (path / MARKER).is_file() and tiny_sd_shapes.tiny_sd_shapes_status(tmp_path)["ready"]
    assert any("shapes VAE step 3/3" in x for x in lines) and any("shapes UNet step 3/3" in x for x in lines)
    assert not list(path.parent.glob(".tiny-sd-shapes.partial-*"))
    marker = json.loads((path / MARKER).read_text())
    assert marker["source"]["unet_steps"] == 3 and "unet_loss" in marker["losses"]
    from diffusers import DDIMScheduler  # SD's scheduler config: DDIM made from it leaves the latents unclipped
    assert DDIMScheduler.from_pretrained(path, subfolder="scheduler").config.clip_sample is False
    # a normal pipeline folder: the image A/B side loads it as `bundled:tiny-sd-shapes`
    r = ti.generate_side("base", ti.ImageSettings(prompt="a red circle", steps=2), base_model="bundled:tiny-sd-shapes",
                         finetuned="", data_dir=tmp_path)
    assert r.image.size == (64, 64) and r.unet_passes == 4 and "Model: tiny-sd-shapes" in r.infotext
    sd.validate_config(demo)  # and after
    # a folder of an older shapes recipe (its colours came out wrong) still loads, but is offered for a rebuild
    marker["source"].pop("recipe")
    (path / MARKER).write_text(json.dumps(marker))
    st = tiny_sd_shapes.tiny_sd_shapes_status(tmp_path)
    assert not st["ready"] and "older shapes recipe" in st["detail"], st
    lines.clear()
    tiny_sd_shapes.ensure_tiny_sd_shapes(tmp_path, log=lines.append, vae_steps=2, unet_steps=2, pool=16, batch=2)
    assert any("shapes UNet step 2/2" in x for x in lines) and tiny_sd_shapes.tiny_sd_shapes_status(tmp_path)["ready"]


def test_the_shapes_prompt_list_is_the_training_captions():
    """presets/datasets/shapes_prompts.txt (the shapes demo recipe's prompts) is the set's training captions."""
    text = (ROOT / "presets/datasets/shapes_prompts.txt").read_text(encoding="utf-8")
    assert text.splitlines() == si.train_captions()


def test_held_out_caption_draws_its_colour(prepared_data_dir):
    """The trained model (prepared by benchmarks/shapes_model.py or the Environment tab) draws held-out captions."""
    import torch
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline

    from backends.bundled import tiny_sd_shapes

    if not tiny_sd_shapes.tiny_sd_shapes_status(prepared_data_dir)["ready"]:
        pytest.skip("tiny-sd-shapes is not prepared in the test data dir (python benchmarks/shapes_model.py does it)")
    pipe = StableDiffusionPipeline.from_pretrained(prepared_data_dir / "models" / "tiny-sd-shapes",
                                                   safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    text = "a blue square on yellow"
    assert text in si.HELD_OUT
    for sampler in (DPMSolverMultistepScheduler, DDIMScheduler):  # DDIM: the latents are not clipped to [-1, 1]
        pipe.scheduler = sampler.from_config(pipe.scheduler.config)
        img = pipe(text, num_inference_steps=20, guidance_scale=7.5,
                   generator=torch.Generator().manual_seed(0)).images[0]
        share = si.colour_share(img, exclude=("yellow",))
        assert max(share, key=share.get) == "blue", (sampler.__name__, share)
        assert np.asarray(img).std() > 10  # a picture, not a flat field


def test_environment_offers_the_shapes_model_without_forcing_it(tmp_path):
    from app import envcheck
    from app.prepare import Preparer

    argv = Preparer(tmp_path, echo=False).argv("shapes")
    assert argv[argv.index("prepare") + 1:] == ["--data-dir", str(tmp_path), "--only", "shapes"]
    assert "--only" not in Preparer(tmp_path, echo=False).argv()  # the first-start preparation leaves it out
    md = envcheck.bundled_markdown({"bundled": envcheck.bundled_status(tmp_path)}, "en")
    assert "➕ **tiny_sd_shapes** — optional, not prepared" in md and "--only shapes" in md
    proc = subprocess.run([sys.executable, "-m", "backends.bundled", "status", "--data-dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert any(x.split()[:2] == ["tiny_sd_shapes", "optional"] for x in proc.stdout.splitlines()), proc.stdout
