"""The SD CPU demo on the shapes model: does distillation keep what a person sees, and does LCM-LoRA learn?

    python benchmarks/shapes_distill.py [--data-dir DIR] [--lora-steps 200] [--lcm-steps 300] [--seeds 2]
                                        [--threads 1]

1. Prepares `bundled:tiny-sd-shapes` in the data dir if it is not there (the one-time training of
   backends/bundled/tiny_sd_shapes.py; default data dir: the test data dir, as benchmarks/shapes_model.py).
2. Trains two recipes through the backend's command line, as a job runs them: `cpu-demo-tiny-sd-shapes`, the
   guidance-distillation LoRA (--lora-steps), and `cpu-demo-tiny-sd-shapes-lcm`, the LCM-LoRA (--lcm-steps).
3. Renders every held-out caption of backends/data/shapes_images.py (never in the training set) with --seeds seeds,
   through backends/infer/txt2img.py as the A/B tab does:
   - base: CFG at the LoRA recipe's guidance_scale, 25 DDIM steps (50 UNet passes), the LoRA's teacher, and at the
     LCM recipe's scale, the LCM-LoRA's teacher;
   - no guidance: the base at CFG 1, 25 steps (25 passes): what one pass a step gives without distillation;
   - guidance-distilled: the LoRA, guidance off, 25 steps (25 passes);
   - LCM untrained: LCMScheduler, 4 steps, guidance off, the LCM-LoRA at weight 0 (the base UNet);
   - LCM-LoRA: the same at weight 1.
   For each: the colour test of benchmarks/shapes_model.py (the named colour covers the most pixels once the
   background is left out) and the pixel MSE to its teacher's image of the same seed.

The last line is machine-readable (below 1: the guidance-distilled one-pass images come closer to the teacher's
than the same one pass without distillation does; the LCM-LoRA's ratio to the untrained 4 steps follows):

    shapes_distill ratio <distilled MSE / no-guidance MSE> (... LCM-LoRA <MSE / untrained 4-step MSE> ...)
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
RECIPES = ROOT / "presets" / "recipes"
RECIPE, LCM_RECIPE = RECIPES / "cpu-demo-tiny-sd-shapes.yaml", RECIPES / "cpu-demo-tiny-sd-shapes-lcm.yaml"


def train(recipe: Path, data_dir: str, run: str, steps: int, threads: int) -> Path:
    """One backend run of the demo recipe (its progress lines pass through); returns its output folder."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    t0 = time.time()
    cmd = [sys.executable, "-m", "backends.sd_distill_lora", "--config", str(recipe), "--data_dir", data_dir,
           "--run_dir", run, "--max_train_steps", str(steps), "--validation_steps", "0", "--checkpointing_steps",
           str(steps)]
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
    lora = train(RECIPE, args.data_dir, f"runs/bench-shapes-lora-{stamp}", args.lora_steps, args.threads)
    lcm = train(LCM_RECIPE, args.data_dir, f"runs/bench-shapes-lcm-{stamp}", args.lcm_steps, args.threads)

    import yaml

    w, w_lcm = (float(yaml.safe_load(r.read_text())["config"]["guidance_scale"]) for r in (RECIPE, LCM_RECIPE))
    base_model = "bundled:tiny-sd-shapes"
    names = (f"base CFG {w:g}, 25 steps", "no guidance, 25 steps", "distilled, 25 steps",
             f"LCM teacher CFG {w_lcm:g}, 25", "LCM untrained, 4 steps", "LCM-LoRA, 4 steps")  # distinct labels
    teacher_of = {names[1]: names[0], names[2]: names[0], names[4]: names[3], names[5]: names[3]}
    rows = {n: [] for n in names}
    mse = {n: [] for n in teacher_of}

    def px(img):
        return np.asarray(img, dtype=np.float32) / 255.0

    def side(side_, model, **kw):
        key = "base_model" if side_ == "base" else "finetuned"
        return ti.generate_side(side_, ti.ImageSettings(**kw), **{key: model}, data_dir=args.data_dir).image

    for text in si.HELD_OUT:
        spec = si.parse_caption(text)
        for seed in range(args.seeds):
            ddim = {"prompt": text, "seed": seed, "steps": 25, "sampler": "DDIM"}
            images = dict(zip(names, (
                side("base", base_model, **ddim, guidance_scale=w),
                side("base", base_model, **ddim, guidance_scale=1.0),
                side("distilled", str(lora), **ddim),
                side("base", base_model, **ddim, guidance_scale=w_lcm),
                side("distilled", str(lcm), prompt=text, seed=seed, lora_weight=0.0),  # LCMScheduler, 4 steps
                side("distilled", str(lcm), prompt=text, seed=seed))))
            for name, img in images.items():
                rows[name].append(si.dominant_shape_colour(img, spec["background"]) == spec["colour"])
                if name in mse:
                    mse[name].append(float(((px(img) - px(images[teacher_of[name]])) ** 2).mean()))
    for name, hits in rows.items():
        extra = f", pixel MSE to {teacher_of[name]} {np.mean(mse[name]):.4f}" if name in mse else ""
        print(f"  {name:24} held-out captions in their colour {sum(hits)}/{len(hits)}{extra}")
    m = {k: float(np.mean(v)) for k, v in mse.items()}
    hits = {k: sum(v) for k, v in rows.items()}
    n = len(rows[names[0]])
    print(f"shapes_distill ratio {m[names[2]] / m[names[1]]:.2f} (guidance-distilled one-pass images' pixel MSE to the "
          f"CFG-{w:g} teacher {m[names[2]]:.4f} vs no guidance {m[names[1]]:.4f}; LCM-LoRA 4 steps {m[names[5]]:.4f} vs "
          f"untrained {m[names[4]]:.4f} to the CFG-{w_lcm:g} teacher ({m[names[5]] / m[names[4]]:.2f}x); colour test: "
          f"base {hits[names[0]]}/{n}, no guidance {hits[names[1]]}/{n}, distilled {hits[names[2]]}/{n}, LCM untrained "
          f"{hits[names[4]]}/{n}, LCM-LoRA {hits[names[5]]}/{n}; {args.lora_steps} LoRA / {args.lcm_steps} LCM steps)")


if __name__ == "__main__":
    main()
