"""The SD CPU demo on the shapes model: does distillation keep what a person sees, and does LCM-LoRA learn?

    python benchmarks/shapes_distill.py [--data-dir DIR] [--lora-steps 200] [--lcm-steps 300] [--lcm-lr 1e-3]
                                        [--seeds 2] [--threads 1]

1. Prepares `bundled:tiny-sd-shapes` in the data dir if it is not there (the one-time training of
   backends/bundled/tiny_sd_shapes.py; default data dir: the test data dir, as benchmarks/shapes_model.py).
2. Trains the `cpu-demo-tiny-sd-shapes` recipe twice through the backend's command line, as a job runs it: the
   guidance-distillation LoRA (--lora-steps) and the same recipe with `--mode lcm_lora` (--lcm-steps).
3. Renders every held-out caption of backends/data/shapes_images.py (never in the training set) with --seeds seeds,
   through backends/infer/txt2img.py as the A/B tab does:
   - base: CFG 7.5, 25 DDIM steps (50 UNet passes); the teacher of both students;
   - guidance-distilled: the LoRA, guidance off, 25 steps (25 passes);
   - LCM untrained: LCMScheduler, 4 steps, guidance off, the LCM-LoRA at weight 0 (the base UNet);
   - LCM-LoRA: the same at weight 1.
   For each: the colour test of benchmarks/shapes_model.py (the named colour covers the most pixels once the
   background is left out); for the two 4-step rows, the pixel MSE to the teacher's image of the same seed.

The last line is machine-readable (below 1: the LCM-LoRA's 4 steps come closer to the teacher than the untrained
model's 4 steps):

    shapes_distill ratio <LCM-LoRA MSE / untrained 4-step MSE> (...)
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RECIPE = ROOT / "presets" / "recipes" / "cpu-demo-tiny-sd-shapes.yaml"


def train(data_dir: str, run: str, steps: int, threads: int, *extra: str) -> Path:
    """One backend run of the demo recipe (its progress lines pass through); returns its output folder."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    cmd = [sys.executable, "-m", "backends.sd_distill_lora", "--config", str(RECIPE), "--data_dir", data_dir,
           "--run_dir", run, "--max_train_steps", str(steps), "--validation_steps", "0", "--checkpointing_steps", str(steps),
           *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True)
    if proc.returncode:
        sys.exit(f"training failed ({' '.join(cmd)}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    print(f"trained {run} ({steps} steps) in {time.time() - t0:.0f} s", flush=True)
    return Path(data_dir) / run / "output"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--lora-steps", type=int, default=200)
    p.add_argument("--lcm-steps", type=int, default=300)
    p.add_argument("--lcm-lr", type=float, default=1e-3)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from backends.bundled import tiny_sd_shapes
    from backends.data import shapes_images as si
    from backends.infer import txt2img as ti

    tiny_sd_shapes.ensure_tiny_sd_shapes(args.data_dir, log=lambda m: print(m, flush=True))
    stamp = time.strftime("%Y%m%d-%H%M%S")
    lora = train(args.data_dir, f"runs/bench-shapes-lora-{stamp}", args.lora_steps, args.threads)
    lcm = train(args.data_dir, f"runs/bench-shapes-lcm-{stamp}", args.lcm_steps, args.threads, "--mode", "lcm_lora",
                "--learning_rate", str(args.lcm_lr))

    base_model = "bundled:tiny-sd-shapes"
    rows = {"base CFG 7.5, 25 steps": [], "distilled, 25 steps": [], "LCM untrained, 4 steps": [],
            "LCM-LoRA, 4 steps": []}
    mse = {"LCM untrained, 4 steps": [], "LCM-LoRA, 4 steps": []}

    def px(img):
        return np.asarray(img, dtype=np.float32) / 255.0

    for text in si.HELD_OUT:
        spec = si.parse_caption(text)
        for seed in range(args.seeds):
            s = ti.ImageSettings(prompt=text, seed=seed, steps=25, sampler="DDIM")
            teacher = ti.generate_side("base", s, base_model=base_model, data_dir=args.data_dir).image
            images = {
                "base CFG 7.5, 25 steps": teacher,
                "distilled, 25 steps": ti.generate_side("distilled", s, finetuned=str(lora),
                                                        data_dir=args.data_dir).image,
                "LCM untrained, 4 steps": ti.generate_side("distilled", ti.ImageSettings(
                    prompt=text, seed=seed, lora_weight=0.0), finetuned=str(lcm), data_dir=args.data_dir).image,
                "LCM-LoRA, 4 steps": ti.generate_side("distilled", ti.ImageSettings(prompt=text, seed=seed),
                                                      finetuned=str(lcm), data_dir=args.data_dir).image,
            }
            for name, img in images.items():
                top = si.dominant_shape_colour(img, spec["background"])
                rows[name].append(top == spec["colour"])
                if name in mse:
                    mse[name].append(float(((px(img) - px(teacher)) ** 2).mean()))
    for name, hits in rows.items():
        extra = f", pixel MSE to the teacher {np.mean(mse[name]):.4f}" if name in mse else ""
        print(f"  {name:24} held-out captions in their colour {sum(hits)}/{len(hits)}{extra}")
    before, after = float(np.mean(mse["LCM untrained, 4 steps"])), float(np.mean(mse["LCM-LoRA, 4 steps"]))
    base_hits, lcm_hits = sum(rows["base CFG 7.5, 25 steps"]), sum(rows["LCM-LoRA, 4 steps"])
    dist_hits, n = sum(rows["distilled, 25 steps"]), len(rows["base CFG 7.5, 25 steps"])
    print(f"shapes_distill ratio {after / before:.2f} (LCM-LoRA 4-step pixel MSE to the 25-step CFG teacher {after:.4f} "
          f"vs untrained {before:.4f}; colour test base {base_hits}/{n}, distilled {dist_hits}/{n}, LCM-LoRA "
          f"{lcm_hits}/{n}; {args.lora_steps} LoRA / {args.lcm_steps} LCM steps)")


if __name__ == "__main__":
    main()
