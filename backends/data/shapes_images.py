"""A captioned set of simple pictures drawn with PIL: coloured circles, squares and triangles on plain backgrounds.

    python -m backends.data.shapes_images OUT_DIR [--n 512] [--seed 0] [--size 64]

writes the diffusers `imagefolder` layout (`OUT_DIR/train/00000.png` … and `OUT_DIR/train/metadata.jsonl`
with {"file_name", "text"} rows, the studio's `images` shape) plus `OUT_DIR/held_out.txt`, captions that never
appear in the training set (each of their words does), to test that a model trained on the set composes them.

Captions: "a red circle" (white background, not named), "two blue squares on yellow", "a green triangle on
black". Everything is deterministic from the seed. `render(caption, rng)` draws one picture of a caption, the
training step of the bundled shapes model (backends/bundled/tiny_sd_shapes.py) draws its batches with it.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
from itertools import product
from pathlib import Path

# The palette: a shape colour or a background is one of these exact RGB values.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30), "green": (30, 160, 50), "blue": (40, 70, 220), "yellow": (245, 215, 30),
    "white": (255, 255, 255), "black": (15, 15, 15),
}
SHAPE_COLOURS = ("red", "green", "blue", "yellow")
BACKGROUNDS = ("white", "yellow", "black")  # white is the caption's default ("a red circle")
SHAPES = ("circle", "square", "triangle")
COUNTS = {"a": 1, "two": 2}
# Held out of the training set; every colour, shape, count and background in them is seen in other captions.
HELD_OUT = ("a green triangle", "two red circles on black", "a blue square on yellow",
            "two yellow triangles on black", "a red square on yellow", "two green circles")


def caption(colour: str, shape: str, count: str = "a", background: str = "white") -> str:
    noun = shape if count == "a" else shape + "s"
    return f"{count} {colour} {noun}" + ("" if background == "white" else f" on {background}")


def parse_caption(text: str) -> dict:
    """{"colour", "shape", "count", "background"} of a caption this module writes; ValueError otherwise."""
    words = text.strip().lower().split()
    if len(words) not in (3, 5) or words[0] not in COUNTS or (len(words) == 5 and words[3] != "on"):
        raise ValueError(f"not a shapes caption: {text!r}")
    colour, noun = words[1], words[2]
    shape = noun[:-1] if words[0] != "a" and noun.endswith("s") else noun
    background = words[4] if len(words) == 5 else "white"
    if colour not in SHAPE_COLOURS or shape not in SHAPES or background not in BACKGROUNDS or colour == background:
        raise ValueError(f"not a shapes caption: {text!r}")
    return {"colour": colour, "shape": shape, "count": words[0], "background": background}


def all_captions() -> list[str]:
    return [caption(c, s, n, b) for c, s, n, b in product(SHAPE_COLOURS, SHAPES, COUNTS, BACKGROUNDS) if c != b]


def train_captions() -> list[str]:
    return [c for c in all_captions() if c not in HELD_OUT]


def render(text: str, rng: random.Random, size: int = 64):
    """One picture of `text`: the shape(s) in the named colour, large, at random places, on the background."""
    from PIL import Image, ImageDraw

    spec = parse_caption(text)
    img = Image.new("RGB", (size, size), COLOURS[spec["background"]])
    draw = ImageDraw.Draw(img)
    n = COUNTS[spec["count"]]
    fill = COLOURS[spec["colour"]]
    for i in range(n):
        # one shape: about half the picture; two: side by side, each about a third
        side = rng.uniform(0.45, 0.6) * size if n == 1 else rng.uniform(0.3, 0.38) * size
        lo_x, hi_x = (0, size - side) if n == 1 else (i * size / 2, (i + 1) * size / 2 - side)
        x = rng.uniform(lo_x, max(lo_x, hi_x))
        y = rng.uniform(0, size - side)
        box = (x, y, x + side, y + side)
        if spec["shape"] == "circle":
            draw.ellipse(box, fill=fill)
        elif spec["shape"] == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(x + side / 2, y), (x, y + side), (x + side, y + side)], fill=fill)
    return img


def samples(n: int, seed: int = 0, size: int = 64, captions: list[str] | None = None):
    """n (caption, image) pairs cycling through the training captions in a seeded order."""
    rng = random.Random(seed)
    caps = list(captions or train_captions())
    order: list[str] = []
    for _ in range(n):
        if not order:
            order = rng.sample(caps, len(caps))
        text = order.pop()
        yield text, render(text, rng, size)


def write_imagefolder(out_dir, n: int = 512, seed: int = 0, size: int = 64) -> Path:
    """Write the set (imagefolder layout + held_out.txt); returns the train folder."""
    out = Path(out_dir)
    train = out / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (text, img) in enumerate(samples(n, seed, size)):
        name = f"{i:05d}.png"
        img.save(train / name)
        rows.append(json.dumps({"file_name": name, "text": text}))
    (train / "metadata.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "held_out.txt").write_text("\n".join(HELD_OUT) + "\n", encoding="utf-8")
    return train


def colour_share(img, exclude: tuple[str, ...] = ()) -> dict[str, float]:
    """Share of the picture's pixels nearest to each palette colour (within a tolerance), `exclude` left out."""
    import numpy as np

    px = np.asarray(img.convert("RGB"), dtype=np.float32).reshape(-1, 3)
    names = [c for c in COLOURS if c not in exclude]
    pal = np.array([COLOURS[c] for c in names], dtype=np.float32)
    dist = np.linalg.norm(px[:, None, :] - pal[None, :, :], axis=2)
    nearest, close = dist.argmin(1), dist.min(1) < 110
    return {c: float(((nearest == i) & close).mean()) for i, c in enumerate(names)}


def dominant_shape_colour(img, background: str = "white") -> str:
    """The palette colour covering most pixels once the background colour is left out."""
    share = colour_share(img, exclude=(background,))
    return max(share, key=share.get)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backends.data.shapes_images", description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--n", type=int, default=512, help="number of training pictures (default 512)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=64, help="picture side in pixels (default 64)")
    a = ap.parse_args(argv)
    if a.n < 1:
        print("error: --n: must be ≥ 1", file=sys.stderr)
        return 2
    if a.size < 16 or a.size % 8:
        print(f"error: --size: must be a multiple of 8 and ≥ 16, got {a.size}", file=sys.stderr)
        return 2
    train = write_imagefolder(a.out_dir, a.n, a.seed, a.size)
    print(f"wrote {a.n} pictures to {train} (+ metadata.jsonl); held-out captions: {Path(a.out_dir) / 'held_out.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
