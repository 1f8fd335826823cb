"""SD guidance distillation: seconds per image of the base pipeline (CFG: two UNet passes per step) vs the distilled
way (guidance off: one pass), LCM at 4 steps vs the base at 25, and peak memory of LoRA vs full-mode training.

    python benchmarks/sd_distill.py [--data-dir DIR] [--model PIPELINE] [--size 64] [--steps 25] [--images 4]
                                    [--lora OUTPUT_DIR] [--train-steps 3] [--threads 1]

- time: the same pipeline, prompt list (presets/datasets/sd_prompts.txt), seeds, size and steps; base =
  guidance_scale 7.5 (diffusers batches uncond + cond: two UNet passes per step), distilled = guidance_scale 1
  (one pass; with --lora, that LoRA fused in first, as a distilled result is used). LCM: LCMScheduler at 4 steps
  and guidance 1 vs the base at 25 steps with CFG. One warm-up image each, not counted.
- memory: peak RSS of `backends.sd_distill_lora` subprocesses training --train-steps steps in mode lora (one UNet)
  and full (two UNets + AdamW states of the whole UNet), on a few plain images at --size.

The model defaults to the bundled tiny pipeline; on it, text encoding, VAE decoding and Python overhead are a large
share of an image, so the ratios are less extreme than on SD 1.5 / 2.1 (where the UNet is ~90% of the work). The
last line is machine-readable:

    sd_distill ratio <distilled s/img / base s/img> (...)
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--model", default="", help="a diffusers SD pipeline folder (default: the bundled tiny-sd)")
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--images", type=int, default=4, help="timed images per side")
    p.add_argument("--lora", default="", help="a distilled LoRA output folder to fuse into the distilled side")
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def seconds_per_image(pipe, prompts: list[str], n: int, size: int, **kw) -> float:
    import torch

    def one(i: int):
        g = torch.Generator("cpu").manual_seed(1000 + i)
        pipe(prompts[i % len(prompts)], height=size, width=size, generator=g, **kw)

    one(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(n):
        one(i + 1)
    return (time.perf_counter() - t0) / n


def peak_rss_mib(args: list[str]) -> tuple[float, int]:
    """(peak RSS in MiB, exit code) of one child process, measured by a wrapper process of its own."""
    wrapper = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, "
               "stderr=subprocess.DEVNULL).returncode; "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, r)")
    out = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}).stdout.split()
    return int(out[0]) / 1024, int(out[1])


def main() -> None:
    a = parse()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch
    from diffusers import DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionPipeline
    from PIL import Image

    from backends.common import paths

    torch.set_num_threads(a.threads)
    model = a.model or str(paths.tiny_sd_dir(a.data_dir))
    prompts = [x for x in (ROOT / "presets/datasets/sd_prompts.txt").read_text().splitlines() if x.strip()]
    pipe = StableDiffusionPipeline.from_pretrained(model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config)
    base = seconds_per_image(pipe, prompts, a.images, a.size, num_inference_steps=a.steps, guidance_scale=7.5)
    if a.lora:
        pipe.load_lora_weights(a.lora)
        pipe.fuse_lora()
    distilled = seconds_per_image(pipe, prompts, a.images, a.size, num_inference_steps=a.steps, guidance_scale=1.0)
    ratio = distilled / base
    print(f"base (CFG 7.5, {a.steps} steps, {2 * a.steps} UNet passes): {base:.3f} s/image")
    print(f"distilled (guidance off, {a.steps} steps, {a.steps} passes): {distilled:.3f} s/image -> {ratio:.2f}x "
          f"(goal <= 0.55x)")
    if a.lora:
        pipe.unfuse_lora()
        pipe.unload_lora_weights()
    base25 = base if a.steps == 25 else seconds_per_image(pipe, prompts, a.images, a.size, num_inference_steps=25,
                                                           guidance_scale=7.5)
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    lcm = seconds_per_image(pipe, prompts, a.images, a.size, num_inference_steps=4, guidance_scale=1.0)
    print(f"LCM (4 steps, 4 passes): {lcm:.3f} s/image vs base 25 steps with CFG {base25:.3f} -> {lcm / base25:.3f}x "
          f"(goal <= 0.12x)")

    with tempfile.TemporaryDirectory() as tmp:
        imgs = Path(tmp) / "imgs"
        imgs.mkdir()
        lines = []
        for i, c in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 30)]):
            Image.new("RGB", (a.size, a.size), c).save(imgs / f"{i}.png")
            lines.append(json.dumps({"file_name": f"{i}.png", "text": prompts[i]}))
        (imgs / "metadata.jsonl").write_text("\n".join(lines) + "\n")
        mem = {}
        for mode in ("lora", "full"):
            cmd = [sys.executable, "-m", "backends.sd_distill_lora", "--pretrained_model_name_or_path", model,
                   "--mode", mode, "--data_source", "folder", "--train_data_dir", str(imgs), "--resolution",
                   str(a.size), "--max_train_steps", str(a.train_steps), "--validation_steps", "0",
                   "--run_dir", str(Path(tmp) / mode)]
            mem[mode], rc = peak_rss_mib(cmd)
            print(f"training peak RSS, mode {mode}: {mem[mode]:.0f} MiB (exit {rc})")
        print(f"memory lora/full: {mem['lora'] / mem['full']:.2f}x")
    print(f"sd_distill ratio {ratio:.2f} (distilled {distilled:.3f} vs base {base:.3f} s/image at {a.size}px "
          f"{a.steps} steps; lcm4/base25 {lcm / base25:.3f}; train RSS lora {mem['lora']:.0f} vs full "
          f"{mem['full']:.0f} MiB)")


if __name__ == "__main__":
    main()
