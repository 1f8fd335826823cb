"""The bundled shapes model's quality check: do held-out captions come out in their named colour?

    python benchmarks/shapes_model.py [--data-dir DIR] [--seeds 2] [--steps 20] [--threads 2]

Prepares `bundled:tiny-sd-shapes` in the data dir if it is not there yet (the one-time training of
backends/bundled/tiny_sd_shapes.py, with its progress lines; default data dir: the test data dir, so that
tests/test_shapes_images.py::test_held_out_caption_draws_its_colour then runs on it), then renders every held-out
caption of backends/data/shapes_images.py (never in the training set) with CFG 7.5 at --steps, --seeds seeds
each, and checks the pixel test: the named shape colour covers the most pixels once the background colour is
left out. The random tiny SD pipeline is measured the same way for contrast. The last line is machine-readable:

    shapes_model ratio <hits / total> (...)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from backends.bundled import read_marker, tiny_sd, tiny_sd_shapes
    from backends.data import shapes_images as si
    from backends.infer import txt2img as ti

    t0 = time.time()
    path = tiny_sd_shapes.ensure_tiny_sd_shapes(args.data_dir, log=lambda m: print(m, flush=True))
    marker = read_marker(path) or {}
    print(f"model: {path} (built in {marker.get('seconds', '?')} s; this run waited {time.time() - t0:.0f} s)")
    tiny_sd.ensure_tiny_sd(args.data_dir, log=lambda m: print(m, flush=True))
    results = {}
    for model in ("bundled:tiny-sd-shapes", "bundled:tiny-sd"):
        hits, total, secs = 0, 0, []
        for text in si.HELD_OUT:
            spec = si.parse_caption(text)
            for seed in range(args.seeds):
                r = ti.generate_side("base", ti.ImageSettings(prompt=text, seed=seed, steps=args.steps),
                                     base_model=model, data_dir=args.data_dir)
                share = si.colour_share(r.image, exclude=(spec["background"],))
                top = max(share, key=share.get)
                hits += top == spec["colour"]
                total += 1
                secs.append(r.seconds)
                print(f"  {model:24} {text!r:32} seed {seed}: dominant {top:6} "
                      f"({spec['colour']} {share[spec['colour']]:.2f}) {'ok' if top == spec['colour'] else 'MISS'}")
        results[model] = (hits, total, sum(secs) / len(secs))
    s_hits, s_total, s_secs = results["bundled:tiny-sd-shapes"]
    r_hits, r_total, _ = results["bundled:tiny-sd"]
    print(f"shapes_model ratio {s_hits / s_total:.2f} ({s_hits}/{s_total} held-out captions in their named colour; random tiny SD "
          f"{r_hits}/{r_total}; {s_secs:.2f} s per {args.steps}-step image; UNet loss "
          f"{marker.get('losses', {}).get('unet_loss', float('nan')):.3f})")


if __name__ == "__main__":
    main()
