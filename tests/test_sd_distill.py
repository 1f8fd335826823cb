"""SD guidance distillation (backends/sd_distill_lora.py) on the bundled tiny pipeline: through the engine, the LoRA
file, whether distillation really happens, full mode, batch 2, resume, LCM-LoRA, and the bad-input messages."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from backends import sd_distill_lora as sd
from backends.common import paths
from backends.common.errors import FieldError
from backends.common.metrics import read_metrics
from conftest import ROOT, wait_for

PY = sys.executable
HELD_OUT = ["A photo of a dog on a skateboard", "two blue squares on yellow", "a green house by the sea"]
LORA_CFG = dict(pretrained_model_name_or_path="bundled:tiny-sd", mode="lora", rank=8, resolution=64,
                data_source="generate", generate_images_per_prompt=1, generate_steps=8, train_batch_size=2,
                learning_rate=5e-3, max_train_steps=60, validation_steps=30, num_validation_images=2,
                validation_prompt="A person holding a cat", checkpointing_steps=30, seed=7)


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "backends.sd_distill_lora", *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=timeout)


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl")
            if "event" not in r and r.get("loss") is not None]


@pytest.fixture(scope="module")
def lora_job(prepared_data_dir, tmp_path_factory):
    """One short LoRA distillation job through the job engine, as the SD tab submits it, with the tab's accelerate
    CPU preset at 2 processes (data parallel over gloo: each renders half of the generated set and trains on its
    own half of every step's batch)."""
    from app import kinds
    from app.jobs import Engine
    from app.jobs.launcher import LaunchSpec

    dd = tmp_path_factory.mktemp("sd-distill-data")
    (dd / "models").symlink_to(prepared_data_dir / "models", target_is_directory=True)
    eng = Engine(dd, grace_seconds=60)
    try:
        job_id = eng.submit("sd_distill", {**LORA_CFG, "data_dir": str(dd)},
                            LaunchSpec.from_dict({**kinds.get("sd_distill").launch, "num_processes": 2}))
        job = wait_for(lambda: (j := eng.get(job_id))["status"] not in ("queued", "running") and j, 900,
                       interval=1.0, what="the sd_distill job to end")
        yield SimpleNamespace(job=job, run_dir=Path(job["run_dir"]), out=Path(job["run_dir"]) / "output",
                              base=paths.tiny_sd_dir(prepared_data_dir), log=eng.read_log_tail(job_id))
    finally:
        for j in eng.list_jobs():
            if j["status"] in ("queued", "running"):
                eng.stop(j["id"], wait=True)
        eng.shutdown()


def _pipe(base: Path):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(base), safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _image(pipe, prompt: str, seed: int, **kw):
    import numpy as np
    import torch

    g = torch.Generator("cpu").manual_seed(seed)
    return np.asarray(pipe(prompt, height=64, width=64, generator=g, **{"num_inference_steps": 4,
                                                                         "guidance_scale": 1.0, **kw}).images[0])


# ------------------------------------------------------------------------------------------ the LoRA job
def test_lora_job_finishes_with_falling_loss_samples_and_the_output_contract(lora_job):
    assert lora_job.job["status"] == "succeeded", lora_job.log
    run, out = lora_job.run_dir, lora_job.out
    rows = [r for r in read_metrics(run / "metrics.jsonl") if "event" not in r and r.get("loss") is not None]
    assert [r["step"] for r in rows] == list(range(1, 61))
    assert all(r["lr"] == pytest.approx(5e-3) and r["samples_per_s"] > 0 for r in rows)
    assert rows[-1]["eta"] is not None
    losses = [r["loss"] for r in rows]
    first, last = sum(losses[:15]) / 15, sum(losses[-15:]) / 15
    assert last < 0.85 * first, (first, last)
    gen = run / "generated"
    meta = [json.loads(x) for x in (gen / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 10 and all((gen / m["file_name"]).is_file() for m in meta)  # the sample prompt set
    assert meta[0]["text"] == "A boy is watching TV"
    # two processes: each rendered its share of the set, the step's batch is 2 per process
    assert "data: generated 5/5 images" in lora_job.log and "the other 1 process(es) render the rest" in lora_job.log
    assert "4 per step" in lora_job.log
    for step in (30, 60):  # validation images for the tab's gallery
        assert sorted(p.name for p in (run / "samples").glob(f"step-{step}-*.png")) == \
            [f"step-{step}-0.png", f"step-{step}-1.png"]
    assert (run / "checkpoints" / "checkpoint-30" / sd.LORA_FILE).is_file()
    info = json.loads((out / "studio.json").read_text())
    assert {k: info[k] for k in ("kind", "status", "mode", "lora_file", "guidance_scale", "resolution",
                                 "scheduler")} == {"kind": "sd_distill", "status": "completed", "mode": "lora",
                                                   "lora_file": sd.LORA_FILE, "guidance_scale": 7.5,
                                                   "resolution": 64, "scheduler": ""}
    assert Path(info["base_model"]).resolve() == lora_job.base.resolve()
    assert (out / sd.LORA_FILE).is_file()


def test_the_lora_loads_weight_zero_is_the_base_and_a_seed_repeats(lora_job):
    import numpy as np

    pipe = _pipe(lora_job.base)
    base = _image(pipe, "A person holding a cat", 3)
    pipe.load_lora_weights(str(lora_job.out), adapter_name="distill")
    pipe.set_adapters(["distill"], adapter_weights=[0.0])
    assert np.array_equal(_image(pipe, "A person holding a cat", 3), base)
    pipe.set_adapters(["distill"], adapter_weights=[1.0])
    tuned = _image(pipe, "A person holding a cat", 3)
    assert np.array_equal(_image(pipe, "A person holding a cat", 3), tuned)  # same seed, same image
    assert np.abs(tuned.astype(int) - base.astype(int)).mean() > 0.5  # the LoRA changes the picture


def _gap(base: Path, lora_dir: Path | None) -> float:
    """MSE between the student's one conditional pass and the teacher's CFG-7.5 prediction on held-out prompts,
    seeds and timesteps (the teacher = the base UNet)."""
    import torch

    m = sd.Models(str(base), "lora", rank=8, log=lambda *_: None)
    if lora_dir is not None:
        sd.load_lora_into(m.unet, lora_dir)
    m.unet.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        uncond = m.encode_text([""])
        for p in HELD_OUT:
            cond = m.encode_text([p])
            for seed in (1001, 1002):
                x = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(seed))
                for t in (150, 450, 650, 850):
                    t = torch.tensor([t])
                    target = m.teacher_pred(x, t, cond, uncond, 7.5)
                    total += float(((m.unet(x, t, encoder_hidden_states=cond).sample - target) ** 2).mean())
                    n += 1
    return total / n


def test_distillation_really_happens_on_held_out_prompts_seeds_and_timesteps(lora_job):
    before, after = _gap(lora_job.base, None), _gap(lora_job.base, lora_job.out)
    print(f"student-vs-guided-teacher MSE: before {before:.5f}, after {after:.5f} ({after / before:.2f}x)")
    assert after < 0.85 * before, (before, after)


# ------------------------------------------------------------------------------------------ full, batch 2, resume
def _image_folder(folder: Path, n: int = 4) -> Path:
    from PIL import Image

    folder.mkdir(parents=True)
    colours = [(220, 30, 30), (30, 200, 40), (30, 40, 220), (230, 210, 20)]
    lines = []
    for i in range(n):
        Image.new("RGB", (80, 72), colours[i % 4]).save(folder / f"{i}.png")
        lines.append(json.dumps({"file_name": f"{i}.png", "text": ["a red square", "a green square",
                                                                    "a blue square", ""][i % 4]}))
    (folder / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_full_mode_batch_2_from_a_folder_saves_a_pipeline_and_resume_continues(prepared_data_dir, tmp_path):
    import torch
    from diffusers import StableDiffusionPipeline

    base = paths.tiny_sd_dir(prepared_data_dir)
    data = _image_folder(tmp_path / "imgs")
    run = tmp_path / "full"
    common = ["--pretrained_model_name_or_path", str(base), "--mode", "full", "--data_source", "folder",
              "--train_data_dir", str(data), "--resolution", "64", "--train_batch_size", "2",
              "--checkpointing_steps", "2", "--validation_steps", "0", "--run_dir", str(run)]
    p = _cli(*common, "--max_train_steps", "4")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "teacher = a second UNet" in p.stdout
    pipe = StableDiffusionPipeline.from_pretrained(str(run / "output"), safety_checker=None)
    orig = StableDiffusionPipeline.from_pretrained(str(base), safety_checker=None)
    diff = sum(float((a - b).abs().sum()) for a, b in zip(pipe.unet.parameters(), orig.unet.parameters()))
    assert diff > 0 and torch.equal(pipe.vae.decoder.conv_out.weight, orig.vae.decoder.conv_out.weight)
    info = json.loads((run / "output" / "studio.json").read_text())
    assert info["mode"] == "full" and info["lora_file"] == "" and (run / "output" / "model_index.json").is_file()

    p = _cli(*common, "--max_train_steps", "6", "--resume_from_checkpoint", "latest")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "resumed from checkpoint-2" in p.stdout
    steps = [s for s, _ in _losses(run)]
    assert steps == [1, 2, 3, 4, 3, 4, 5, 6], steps  # the second run continued at step 3
    assert json.loads((run / "output" / "studio.json").read_text())["steps"] == 6


# ------------------------------------------------------------------------------------------ LCM-LoRA
def test_lcm_lora_trains_saves_an_lcm_lora_and_reports_its_distance_to_the_teacher(prepared_data_dir, tmp_path):
    """A short LCM-LoRA run: the output contract, and the LoRA changes the 4-step LCMScheduler images. Whether its
    4 steps come closer to the teacher's 25-step CFG images is measured and printed, not asserted: on the random
    bundled pipeline 20 to 150 steps move that distance by well under 1% (see the README)."""
    import torch
    from diffusers import DDIMScheduler, LCMScheduler

    base = paths.tiny_sd_dir(prepared_data_dir)
    run = tmp_path / "lcm"
    p = _cli("--pretrained_model_name_or_path", str(base), "--mode", "lcm_lora", "--rank", "8", "--resolution", "64",
             "--generate_images_per_prompt", "1", "--generate_steps", "8", "--train_batch_size", "2",
             "--learning_rate", "1e-3", "--max_train_steps", "20", "--validation_steps", "20",
             "--num_validation_images", "1", "--run_dir", str(run))
    assert p.returncode == 0, p.stderr[-3000:]
    info = json.loads((run / "output" / "studio.json").read_text())
    assert (info["mode"], info["scheduler"], info["num_inference_steps"]) == ("lcm_lora", "LCMScheduler", 4)
    assert (run / "samples" / "step-20-0.png").is_file()
    assert len(_losses(run)) == 20

    pipe = _pipe(base)

    def pixels(steps, gs, sched):
        pipe.scheduler = sched.from_config(pipe.scheduler.config)
        return torch.cat([torch.as_tensor(pipe(pr, num_inference_steps=steps, guidance_scale=gs, height=64,
                                                   width=64, output_type="np",
                                                   generator=torch.Generator().manual_seed(s)).images)
                          for pr in HELD_OUT for s in (5, 6)])

    teacher = pixels(25, 7.5, DDIMScheduler)
    before = pixels(4, 1.0, LCMScheduler)
    pipe.load_lora_weights(str(run / "output"))
    after = pixels(4, 1.0, LCMScheduler)
    b, a = float(((before - teacher) ** 2).mean()), float(((after - teacher) ** 2).mean())
    print(f"LCM 4-step vs teacher 25-step CFG, pixel MSE: untrained {b:.5f}, LCM-LoRA {a:.5f}")
    assert float((after - before).abs().mean()) > 1e-4  # the LCM-LoRA is applied


# ------------------------------------------------------------------------------------------ bad input
def _resolve(tmp_path, **kw):
    cfg = {"pretrained_model_name_or_path": "bundled:tiny-sd", "resolution": 64, "run_dir": str(tmp_path / "r"),
           **kw}
    with pytest.raises(FieldError) as e:
        sd.validate_config(cfg)
    return e.value


def test_bad_inputs_name_the_field_and_the_fix(prepared_data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_DIR", str(prepared_data_dir))
    e = _resolve(tmp_path, resolution=60)
    assert e.field == "resolution" and "multiple of 8" in e.message and "56" in e.message
    e = _resolve(tmp_path, rank=0)
    assert e.field == "rank" and ">= 1" in e.message
    no_pipe = tmp_path / "not-a-pipeline"
    (no_pipe / "unet").mkdir(parents=True)
    e = _resolve(tmp_path, pretrained_model_name_or_path=str(no_pipe))
    assert e.field == "pretrained_model_name_or_path" and "not a diffusers Stable Diffusion pipeline" in e.message
    data = _image_folder(tmp_path / "imgs")
    (data / "2.png").unlink()
    e = _resolve(tmp_path, data_source="folder", train_data_dir=str(data))
    assert e.field == "train_data_dir" and "line 3" in e.message and "'2.png' is missing" in e.message
    (data / "metadata.jsonl").write_text('{"file_name": "0.png", "text": "a"}\n{"file_name": "1.png", "text"\n')
    e = _resolve(tmp_path, data_source="folder", train_data_dir=str(data))
    assert e.field == "train_data_dir" and "line 2 is not valid JSON" in e.message
    e = _resolve(tmp_path, lr_warmup_steps=10)
    assert e.field == "lr_warmup_steps" and "constant_with_warmup" in e.message
    # the CLI prints the same message and exits 2
    p = _cli("--pretrained_model_name_or_path", str(paths.tiny_sd_dir(prepared_data_dir)), "--resolution", "100",
             "--run_dir", str(tmp_path / "cli"), timeout=120)
    assert p.returncode == 2 and "error: resolution: must be a multiple of 8" in p.stderr


def test_guidance_one_or_below_does_not_crash_and_means_no_or_less_guidance(prepared_data_dir):
    import torch

    m = sd.Models(str(paths.tiny_sd_dir(prepared_data_dir)), "lora", rank=1, log=lambda *_: None)
    x, t = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 900])
    cond, uncond = m.encode_text(["a red circle", "a cat"]), m.encode_text(["", ""])
    plain = m.unet(x, t, encoder_hidden_states=cond).sample.detach()
    assert torch.allclose(m.teacher_pred(x, t, cond, uncond, 1.0), plain)  # w = 1: the conditional prediction
    un = m.unet(x, t, encoder_hidden_states=uncond).sample.detach()
    assert torch.allclose(m.teacher_pred(x, t, cond, uncond, 0.0), un, atol=1e-5)  # w = 0: the unconditional one


def test_recipes_load_and_sd21_is_the_reference_command(prepared_data_dir, tmp_path):
    import yaml

    from backends.common import config as C

    names = []
    for path in sorted((ROOT / "presets/recipes").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw.get("kind") == "sd_distill":
            names.append(path.stem)
            assert raw["description"] and raw["description_zh"], path
            C.load_config(sd.SDDistillArgs, path, kind="sd_distill")
    assert {"sd21-distill-lora", "sd15-distill-lora", "sd15-lcm-lora", "cpu-demo-tiny-sd"} <= set(names)
    ref = C.load_config(sd.SDDistillArgs, ROOT / "presets/recipes/sd21-distill-lora.yaml", kind="sd_distill")
    assert (ref.pretrained_model_name_or_path, ref.resolution, ref.train_batch_size, ref.learning_rate,
            ref.lr_scheduler, ref.lr_warmup_steps, ref.default_prompt, ref.mode, ref.guidance_scale) == (
        "stabilityai/stable-diffusion-2-1-base", 512, 1, 5e-4, "constant", 0, "A man dancing", "lora", 7.5)
    demo = C.load_config(sd.SDDistillArgs, ROOT / "presets/recipes/cpu-demo-tiny-sd.yaml", kind="sd_distill")
    sd.validate_config({**C.to_dict(demo), "data_dir": str(prepared_data_dir), "run_dir": "runs/x-sd-demo-check"})


def test_diffusiondb_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(FieldError) as e:
        sd.diffusiondb_rows(sd.SDDistillArgs(data_source="diffusiondb"), None, tmp_path / "db", print)
    assert e.value.field == "data_source" and "Without internet use data_source generate or folder" in e.value.message
