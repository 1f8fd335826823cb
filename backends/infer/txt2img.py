"""txt2img A/B: the base pipeline with classifier-free guidance vs the guidance-distilled student, seeded.

    python -m backends.infer.txt2img --finetuned_model job:<id>|<run>/output [--base_model ...] --out_dir DIR
        [--prompts FILE] [--seed 123450011] [--steps 50] [--guidance_scale 7.5] [--sampler "DPM++ 2M"]
        [--width W --height H] [--negative_prompt ...] [--lora_weight 1.0] [--data_dir DIR]

reproduces DeepSpeedExamples' `inf_txt2img_loop.py`: for each prompt `BASELINE_seed_<seed>_<prompt[:100]>.png`
and `NEW_seed_<seed>_<prompt[:100]>.png` in `--out_dir` ("/" in a prompt becomes "_"), and prints the seconds
per image of each side. Unlike the reference the seed really seeds both sides (a CPU `torch.Generator`), and
every PNG carries A1111 infotext in its `parameters` text chunk.

Sides.
  base       the pipeline at `guidance_scale` (CFG: diffusers runs the unconditional and the conditional
             prediction, 2 UNet passes per step).
  distilled  the result of an `sd_distill` job (its output/studio.json says the mode):
             lora / lcm_lora  the same base pipeline object with the LoRA loaded once as a peft adapter,
                              activated at weight w (`set_adapters([name], [w])`; the base side runs with
                              `disable_lora()`); weight 0 gives exactly the base image at the same settings;
             full             output/ is itself a pipeline folder: the student.
             Guidance is off: guidance_scale 1.0, and diffusers' StableDiffusionPipeline skips CFG when
             `guidance_scale <= 1` (`do_classifier_free_guidance`), so it makes one UNet pass per step.
             LCM-LoRA also switches to `LCMScheduler` and the job's step count (studio.json `steps`, 4).
"UNet passes" are counted by a forward pre-hook on the UNet: the rows of every batch it is called with, per
image (CFG batches its two predictions into one call of 2 rows: that is 2 passes of work per step).

Pipelines are loaded in fp32 on the CPU (a GPU when torch sees one) and kept in an LRU of 2; one lock runs one
generation at a time. Functions the A/B tab calls (no job): `generate_pair`, `generate_side`, `grid`,
`save_png`, `infotext`, `read_infotext`, `png_parameters`, `distilled_choices`.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from backends.common import modeling, paths
from backends.common.errors import FieldError

KIND = "sd_distill"
PROMPTS_FILE = paths.ROOT / "presets" / "datasets" / "sd_prompts.txt"
REFERENCE_SEED = 123450011  # inf_txt2img_loop.py
REFERENCE_STEPS = 50
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
CACHE_SIZE = 2
# A1111's sampler names -> the diffusers scheduler class. "LCM" is what an LCM-LoRA side runs with.
SAMPLERS = {"DPM++ 2M": "DPMSolverMultistepScheduler", "Euler": "EulerDiscreteScheduler",
            "Euler a": "EulerAncestralDiscreteScheduler", "DDIM": "DDIMScheduler", "PLMS": "PNDMScheduler",
            "LCM": "LCMScheduler"}
DEFAULT_SAMPLER = "DPM++ 2M"  # the reference's DPMSolverMultistepScheduler
MAX_SIDE = 2048
_LOCK = threading.RLock()


def default_prompts() -> list[str]:
    return read_prompts(PROMPTS_FILE)


def read_prompts(path, field: str = "prompts") -> list[str]:
    """One prompt per line (blank lines skipped); a FieldError when the file is missing or empty."""
    p = Path(path)
    try:
        lines = [x.strip() for x in p.read_text(encoding="utf-8").splitlines()]
    except OSError as e:
        raise FieldError(field, f"cannot read {path}: {e.strerror or e}") from None
    prompts = [x for x in lines if x]
    if not prompts:
        raise FieldError(field, f"{path} has no prompts: write one prompt per line")
    return prompts


# ------------------------------------------------------------------------------------- settings
@dataclass
class ImageSettings:
    prompt: str
    negative_prompt: str = ""
    seed: int = REFERENCE_SEED  # < 0: a random seed (recorded in the infotext), as in A1111
    steps: int = DEFAULT_STEPS
    width: int = 0   # 0: the model's own size (its training resolution, else the UNet's sample size)
    height: int = 0
    guidance_scale: float = DEFAULT_GUIDANCE  # the base side's CFG scale
    sampler: str = DEFAULT_SAMPLER
    lora_weight: float = 1.0


def check_settings(s: ImageSettings) -> ImageSettings:
    """A copy with a concrete seed; FieldError naming the field on bad input."""
    if not str(s.prompt or "").strip():
        raise FieldError("prompt", "is empty: describe the picture")
    try:
        steps = int(s.steps)
    except (TypeError, ValueError):
        raise FieldError("steps", f"must be a whole number ≥ 1, got {s.steps!r}") from None
    if steps < 1:
        raise FieldError("steps", f"must be ≥ 1, got {steps}")
    if steps > 1000:
        raise FieldError("steps", f"must be ≤ 1000, got {steps}")
    dims = {}
    for name in ("width", "height"):
        try:
            v = int(getattr(s, name) or 0)
        except (TypeError, ValueError):
            raise FieldError(name, f"must be a whole number of pixels (a multiple of 8), got {getattr(s, name)!r}") from None
        if v < 0 or v % 8 or v > MAX_SIDE:
            raise FieldError(name, f"must be a multiple of 8 between 8 and {MAX_SIDE} (or 0 for the model's own "
                                   f"size), got {v}")
        dims[name] = v
    try:
        g = float(s.guidance_scale)
    except (TypeError, ValueError):
        raise FieldError("guidance_scale", f"must be a number, got {s.guidance_scale!r}") from None
    if not 0 <= g <= 50:
        raise FieldError("guidance_scale", f"must be between 0 and 50, got {g}")
    if s.sampler not in SAMPLERS:
        raise FieldError("sampler", f"unknown sampler {s.sampler!r}; one of: {', '.join(SAMPLERS)}")
    try:
        w = float(s.lora_weight)
    except (TypeError, ValueError):
        raise FieldError("lora_weight", f"must be a number between 0 and 1, got {s.lora_weight!r}") from None
    if not 0 <= w <= 1:
        raise FieldError("lora_weight", f"must be between 0 and 1, got {w}")
    try:
        seed = int(s.seed)
    except (TypeError, ValueError):
        raise FieldError("seed", f"must be a whole number (-1 for a random one), got {s.seed!r}") from None
    if seed < 0:
        seed = random.randrange(2**32)
    return replace(s, steps=steps, guidance_scale=g, lora_weight=w, seed=seed, **dims)


# ---------------------------------------------------------------------------------------- models
def _typed(v: str, data_dir) -> str:
    """A relative folder typed in the page is looked up in the data dir first (as the chat A/B does)."""
    p = Path(v).expanduser()
    if v.startswith(("bundled:", "job:")) or p.is_absolute():
        return v
    dd = paths.data_dir(data_dir)
    return str(dd / p) if (dd / p).exists() else v


def resolve_pipeline(value: str, data_dir=None, *, field: str = "base_model") -> str:
    """A diffusers pipeline folder (as str) or a hub id, from a folder, `bundled:tiny-sd[-shapes]` or a hub id."""
    v = str(value or "").strip()
    if not v:
        raise FieldError(field, "is empty: give a diffusers pipeline folder (with model_index.json), "
                                "bundled:tiny-sd or a hub id")
    path = modeling.resolve_model(_typed(v, data_dir), data_dir, field=field)
    p = Path(path)
    if p.is_dir():
        if not (p / "model_index.json").is_file():
            raise FieldError(field, f"{v} is not a diffusers pipeline folder (no model_index.json in it); pick a "
                                    "pipeline folder, bundled:tiny-sd, or a finished SD distill job")
        return str(p)
    if p.exists():
        raise FieldError(field, f"{v} is a file, not a diffusers pipeline folder")
    if modeling.is_hub_id(v) and not v.startswith(("bundled:", "job:")):
        return v
    if v.startswith("bundled:"):
        raise FieldError(field, f"{v} is not prepared yet: prepare it in the Environment tab "
                                f"(python -m backends.bundled prepare)")
    raise FieldError(field, f"not found: {v}")


@dataclass
class Distilled:
    """What the distilled side runs."""
    mode: str             # lora | lcm_lora | full
    name: str             # shown in the infotext (Lora: …) and the page
    pipeline: str         # the pipeline folder/hub id to load: the base for a LoRA, the student for full
    lora_dir: str = ""
    lora_file: str = ""
    steps: int | None = None      # lcm_lora: the sampling steps the job names (studio.json num_inference_steps)
    sampler: str | None = None    # lcm_lora: "LCM"
    resolution: int | None = None
    info: dict = field(default_factory=dict)


def _lora_file(folder: Path, info: dict, field: str) -> str:
    name = info.get("lora_file")
    if name:
        if not (folder / name).is_file():
            raise FieldError(field, f"{folder.name}: the LoRA file {name} named in studio.json is missing")
        return name
    found = sorted(p.name for p in folder.glob("*.safetensors"))
    if not found:
        raise FieldError(field, f"{folder}: no LoRA .safetensors file in it")
    return "pytorch_lora_weights.safetensors" if "pytorch_lora_weights.safetensors" in found else found[0]


def resolve_distilled(value: str, data_dir=None, *, field: str = "finetuned_model") -> Distilled:
    """`job:<id>` of an sd_distill job, its output folder, or any folder with a diffusers LoRA / pipeline."""
    from backends.common import runner

    v = str(value or "").strip()
    if not v:
        raise FieldError(field, "is empty: pick a finished SD distill job (job:<id>) or its output folder")
    if v.startswith("job:"):
        out, info = runner.job_result(v, paths.data_dir(data_dir), field=field, kinds=(KIND,))
    else:
        out = Path(modeling.resolve_model(_typed(v, data_dir), data_dir, field=field))
        if not out.is_dir():
            raise FieldError(field, f"not found: {v} (a finished SD distill job's output folder)")
        info = modeling.read_studio_json(out)
        if info.get("kind") not in (None, KIND):
            raise FieldError(field, f"{v} is the result of a {info.get('kind')!r} job, not an SD distill one")
    mode = info.get("mode") or ("full" if (out / "model_index.json").is_file() else "lora")
    name = v.split(":", 1)[1] if v.startswith("job:") else out.name if out.name != "output" else out.parent.name
    res = info.get("resolution")
    common = {"name": name, "info": info, "resolution": int(res) if res else None}
    if mode == "full":
        if not (out / "model_index.json").is_file():
            raise FieldError(field, f"{v}: a full-mode result must be a diffusers pipeline folder (no "
                                    "model_index.json in it)")
        return Distilled(mode="full", pipeline=str(out), **common)
    if mode not in ("lora", "lcm_lora"):
        raise FieldError(field, f"{v}: unknown distillation mode {mode!r} in studio.json")
    base_ref = info.get("base_model")
    if not base_ref:
        raise FieldError(field, f"{v}: studio.json names no base_model for the LoRA")
    base = resolve_pipeline(base_ref, data_dir, field=field)
    lcm = mode == "lcm_lora"
    return Distilled(mode=mode, pipeline=base, lora_dir=str(out), lora_file=_lora_file(out, info, field),
                     steps=int(info.get("num_inference_steps") or 4) if lcm else None,  # "steps": its training
                     sampler="LCM" if lcm else None, **common)


def distilled_guidance(value: str, data_dir=None) -> float | None:
    """The CFG scale a distilled result learnt from (its studio.json guidance_scale): the base side's fair
    scale, since that guided teacher is what the student imitates. None when it cannot be read."""
    try:
        g = resolve_distilled(value, data_dir).info.get("guidance_scale")
        return float(g) if g is not None else None
    except (FieldError, TypeError, ValueError):
        return None


class PipelineCache:
    """The loaded pipelines, least recently used dropped first."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._d: OrderedDict[str, Any] = OrderedDict()

    def get(self, path: str, field: str = "base_model"):
        with _LOCK:
            if path in self._d:
                self._d.move_to_end(path)
                return self._d[path]
            pipe = _load(path, field)
            self._d[path] = pipe
            while len(self._d) > self.size:
                self._d.popitem(last=False)
            return pipe

    def clear(self) -> None:
        with _LOCK:
            self._d.clear()

    def __len__(self) -> int:
        return len(self._d)


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(path: str, field: str):
    import torch
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(path, dtype=torch.float32, safety_checker=None,
                                                       requires_safety_checker=False)
    except (OSError, ValueError, TypeError) as e:
        raise FieldError(field, f"cannot load the pipeline {path}: {str(e).splitlines()[0][:300]}") from None
    pipe.set_progress_bar_config(disable=True)
    pipe.to(_device())
    pipe._studio_scheduler_config = dict(pipe.scheduler.config)
    pipe._studio_adapters = {}  # LoRA folder/file -> adapter name
    return pipe


CACHE = PipelineCache()


def _adapter(pipe, d: Distilled) -> str:
    key = str(Path(d.lora_dir) / d.lora_file)
    if key not in pipe._studio_adapters:
        name = f"distilled{len(pipe._studio_adapters)}"
        try:
            pipe.load_lora_weights(d.lora_dir, weight_name=d.lora_file, adapter_name=name)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise FieldError("finetuned_model", f"cannot load the LoRA {d.lora_file} from {d.name}: "
                                                f"{str(e).splitlines()[0][:300]}") from None
        pipe._studio_adapters[key] = name
    return pipe._studio_adapters[key]


def native_size(pipe, d: Distilled | None = None) -> int:
    if d is not None and d.resolution:
        return d.resolution
    return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


# ------------------------------------------------------------------------------------ generation
@dataclass
class Result:
    image: Any            # PIL.Image
    seconds: float
    unet_passes: int      # UNet evaluations for this image (rows of every UNet call)
    infotext: str
    side: str             # "base" | "distilled"
    settings: dict


def model_name(path: str) -> str:
    p = Path(path)
    return p.name if p.is_dir() else str(path)


def _run(pipe, s: ImageSettings, *, guidance: float, sampler: str, steps: int, size: tuple[int, int],
         adapter: str | None, weight: float):
    """One seeded image -> (image, seconds, UNet passes)."""
    import diffusers
    import torch

    with _LOCK:
        pipe.scheduler = getattr(diffusers, SAMPLERS[sampler]).from_config(pipe._studio_scheduler_config)
        if pipe._studio_adapters:
            if adapter is None:
                pipe.disable_lora()
            else:
                pipe.enable_lora()
                pipe.set_adapters([adapter], [weight])
        rows = [0]

        def count(_module, args, kwargs):
            sample = args[0] if args else kwargs["sample"]
            rows[0] += int(sample.shape[0])

        hook = pipe.unet.register_forward_pre_hook(count, with_kwargs=True)
        try:
            generator = torch.Generator("cpu").manual_seed(int(s.seed))
            t0 = time.perf_counter()
            with torch.inference_mode():
                image = pipe(s.prompt, negative_prompt=s.negative_prompt or None, num_inference_steps=steps,
                             guidance_scale=guidance, width=size[0], height=size[1], generator=generator).images[0]
            seconds = time.perf_counter() - t0
        finally:
            hook.remove()
    return image, seconds, rows[0]


def generate_side(side: str, s: ImageSettings, *, base_model: str = "", finetuned: str = "", data_dir=None) -> Result:
    """One image of one side ("base" or "distilled"). `base_model` "" = the distilled model's base."""
    if side not in ("base", "distilled"):
        raise ValueError(f"side must be 'base' or 'distilled', got {side!r}")
    s = check_settings(s)
    d = resolve_distilled(finetuned, data_dir) if (side == "distilled" or not base_model) else None
    if side == "base":
        if base_model:
            path = resolve_pipeline(base_model, data_dir, field="base_model")
        elif d is not None and d.mode != "full":
            path = d.pipeline
        elif d is not None:
            path = resolve_pipeline(d.info.get("base_model", ""), data_dir, field="base_model")
        else:
            raise FieldError("base_model", "is empty: pick the base pipeline")
        pipe = CACHE.get(path, "base_model")
        size = (s.width or native_size(pipe, d), s.height or native_size(pipe, d))
        image, secs, passes = _run(pipe, s, guidance=s.guidance_scale, sampler=s.sampler, steps=s.steps, size=size,
                                   adapter=None, weight=0.0)
        params = {"Steps": s.steps, "Sampler": s.sampler, "CFG scale": s.guidance_scale, "Seed": s.seed,
                  "Size": f"{size[0]}x{size[1]}", "Model": model_name(path)}
    else:
        assert d is not None
        pipe = CACHE.get(d.pipeline, "finetuned_model")
        adapter = _adapter(pipe, d) if d.mode != "full" else None
        steps, sampler = d.steps or s.steps, d.sampler or s.sampler
        size = (s.width or native_size(pipe, d), s.height or native_size(pipe, d))
        image, secs, passes = _run(pipe, s, guidance=1.0, sampler=sampler, steps=steps, size=size, adapter=adapter,
                                   weight=s.lora_weight)
        params = {"Steps": steps, "Sampler": sampler, "CFG scale": 1.0, "Seed": s.seed,
                  "Size": f"{size[0]}x{size[1]}", "Model": model_name(d.pipeline)}
        if d.mode != "full":
            params.update({"Lora": d.name, "Lora weight": s.lora_weight})
        params["Distilled"] = d.mode
    text = infotext(s.prompt, s.negative_prompt, params)
    return Result(image=image, seconds=secs, unet_passes=passes, infotext=text, side=side, settings=asdict(s))


def generate_pair(s: ImageSettings, *, base_model: str = "", finetuned: str, data_dir=None) -> tuple[Result, Result]:
    """(base, distilled) for the same prompt, seed and size."""
    s = check_settings(s)
    base = generate_side("base", s, base_model=base_model, finetuned=finetuned, data_dir=data_dir)
    return base, generate_side("distilled", s, base_model=base_model, finetuned=finetuned, data_dir=data_dir)


def grid(prompts: list[str], seeds: list[int], s: ImageSettings, *, base_model: str = "", finetuned: str,
         data_dir=None, label: bool = True):
    """Rows = prompt × seed, columns = base | distilled (A1111's X/Y plot idea). -> (grid image, results)."""
    from PIL import Image, ImageDraw

    prompts = [p.strip() for p in prompts if p and p.strip()]
    if not prompts:
        raise FieldError("prompts", "is empty: one prompt per line")
    if not seeds:
        raise FieldError("seeds", "is empty: one or more whole numbers, comma-separated")
    results: list[tuple[Result, Result]] = []
    for p in prompts:
        for seed in seeds:
            results.append(generate_pair(replace(s, prompt=p, seed=seed), base_model=base_model, finetuned=finetuned,
                                         data_dir=data_dir))
    w, h = results[0][0].image.size
    w2, h2 = results[0][1].image.size
    cw, ch = max(w, w2), max(h, h2)
    head = 16 if label else 0
    left = 0
    canvas = Image.new("RGB", (left + 2 * cw, head + ch * len(results)), "white")
    draw = ImageDraw.Draw(canvas)
    if label:
        draw.text((4, 2), "base (CFG)", fill="black")
        draw.text((cw + 4, 2), "distilled", fill="black")
    for r, (b, d) in enumerate(results):
        canvas.paste(b.image, (left, head + r * ch))
        canvas.paste(d.image, (left + cw, head + r * ch))
    return canvas, results


# --------------------------------------------------------------------------------------- infotext
_RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def _quote(v) -> str:
    text = f"{v:g}" if isinstance(v, float) else str(v)
    if isinstance(v, float) and "." not in text and "e" not in text:
        text += ".0"  # A1111 writes floats as floats: "CFG scale: 7.0"
    if "," not in text and "\n" not in text and ":" not in text and '"' not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def infotext(prompt: str, negative_prompt: str, params: dict) -> str:
    """A1111's generation-parameters text: the prompt, `Negative prompt: …` (when there is one), then
    `Steps: 25, Sampler: DPM++ 2M, CFG scale: 7.5, Seed: 1, Size: 64x64, Model: …`."""
    lines = [str(prompt)]
    if negative_prompt:
        lines.append(f"Negative prompt: {negative_prompt}")
    lines.append(", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None))
    return "\n".join(lines)


def parse_infotext(text: str) -> dict:
    """A1111's `parse_generation_parameters`, the part without its settings overrides: {"Prompt",
    "Negative prompt", "Steps": "25", ...} (values as strings, quoted ones unquoted)."""
    lines = str(text or "").strip().split("\n")
    last = lines.pop() if lines else ""
    if len(_RE_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt, negative, in_negative = [], [], False
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            in_negative = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_negative else prompt).append(line)
    out: dict[str, str] = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for k, v in _RE_PARAM.findall(last):
        v = v.strip()
        if len(v) > 1 and v[0] == '"' and v[-1] == '"':
            try:
                v = json.loads(v)
            except ValueError:
                pass
        out[k.strip()] = v
    return out


def save_png(image, path, text: str) -> Path:
    """Save `image` as a PNG with `text` in its `parameters` tEXt chunk (where A1111 puts it)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", text)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    image.save(p, format="PNG", pnginfo=info)
    return p


def png_parameters(png) -> str:
    """The `parameters` text of a PNG (a path, bytes or a PIL image); "" when it has none."""
    import io

    from PIL import Image

    if isinstance(png, (bytes, bytearray)):
        png = io.BytesIO(png)
    img = png if hasattr(png, "info") and hasattr(png, "size") else Image.open(png)
    text = img.info.get("parameters", "")
    if not text and hasattr(img, "text"):
        text = img.text.get("parameters", "")
    return text if isinstance(text, str) else ""


def read_infotext(png) -> dict:
    """The parsed infotext of a PNG ({} when it carries none)."""
    text = png_parameters(png)
    return parse_infotext(text) if text else {}


# ----------------------------------------------------------------------------------- job picker
def distilled_choices(data_dir, jobs: list[dict] | None = None) -> list[tuple[str, str]]:
    """Finished sd_distill jobs (their output/studio.json says kind sd_distill), newest first:
    ("<id> — <recipe> <mode> (<date>)", "job:<id>")."""
    out = []
    runs = paths.runs_dir(data_dir)
    entries = jobs if jobs is not None else [{"id": p.name, "run_dir": str(p)} for p in sorted(
        runs.iterdir(), reverse=True)] if runs.is_dir() else []
    for j in entries:
        info = modeling.read_studio_json(Path(j["run_dir"]) / "output")
        if info.get("kind") != KIND or info.get("status") not in (None, "completed"):
            continue
        date = str(info.get("created") or "")[:16].replace("T", " ")
        recipe = j.get("recipe") or info.get("recipe") or ""
        out.append((" ".join(x for x in (f"{j['id']} —", recipe, info.get("mode") or "", f"({date})" if date else "")
                             if x), f"job:{j['id']}"))
    return out


def pipeline_choices(data_dir) -> list[tuple[str, str]]:
    """The base pipelines offered: the bundled tiny ones that are prepared, then models/ pipeline folders."""
    out = []
    mdir = paths.models_dir(data_dir)
    for key, name, label in (("bundled:tiny-sd", paths.TINY_SD_NAME, "tiny SD (random weights)"),
                             ("bundled:tiny-sd-shapes", paths.TINY_SD_SHAPES_NAME, "tiny SD taught shapes")):
        if (mdir / name / "model_index.json").is_file():
            out.append((f"{key} — {label}", key))
    if mdir.is_dir():
        for d in sorted(mdir.iterdir()):
            if d.name not in (paths.TINY_SD_NAME, paths.TINY_SD_SHAPES_NAME) and (d / "model_index.json").is_file():
                out.append((f"{d.name} — models/", f"models/{d.name}"))
    return out


# -------------------------------------------------------------------------------------------- CLI
def file_stem(prefix: str, seed: int, prompt: str) -> str:
    """inf_txt2img_loop.py's file name, `<PREFIX>_seed_<seed>_<prompt[:100]>` ("/" -> "_")."""
    return f"{prefix}_seed_{seed}_{prompt[:100]}".replace("/", "_").replace("\0", "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backends.infer.txt2img",
                                 description="Base (CFG) vs guidance-distilled images for a prompt list "
                                             "(DeepSpeedExamples inf_txt2img_loop.py).")
    ap.add_argument("--finetuned_model", required=True,
                    help="a finished SD distill job (job:<id>) or its output folder")
    ap.add_argument("--base_model", default="",
                    help="the base pipeline (folder, bundled:tiny-sd, hub id); default: the one the job trained")
    ap.add_argument("--out_dir", default="image_out/", help="where the PNGs go (default image_out/)")
    ap.add_argument("--prompts", default="", help="a text file, one prompt per line (default: the reference's "
                                                  "10 prompts, presets/datasets/sd_prompts.txt)")
    ap.add_argument("--seed", type=int, default=REFERENCE_SEED, help=f"default {REFERENCE_SEED}")
    ap.add_argument("--steps", type=int, default=REFERENCE_STEPS, help=f"denoising steps (default {REFERENCE_STEPS})")
    ap.add_argument("--guidance_scale", type=float, default=DEFAULT_GUIDANCE,
                    help="the base side's CFG scale (the distilled side runs without guidance)")
    ap.add_argument("--sampler", default=DEFAULT_SAMPLER, choices=list(SAMPLERS))
    ap.add_argument("--negative_prompt", default="")
    ap.add_argument("--width", type=int, default=0, help="pixels, a multiple of 8 (default: the model's own)")
    ap.add_argument("--height", type=int, default=0, help="pixels, a multiple of 8 (default: the model's own)")
    ap.add_argument("--lora_weight", type=float, default=1.0, help="the LoRA's weight, 0–1 (default 1)")
    ap.add_argument("--data_dir", default=None,
                    help="the studio data dir (for job:<id> and bundled:…; default $STUDIO_DATA_DIR, else ./data)")
    a = ap.parse_args(argv)
    try:
        prompts = read_prompts(a.prompts, field="prompts") if a.prompts else default_prompts()
        s = check_settings(ImageSettings(prompt=prompts[0], negative_prompt=a.negative_prompt, seed=a.seed,
                                         steps=a.steps, width=a.width, height=a.height,
                                         guidance_scale=a.guidance_scale, sampler=a.sampler,
                                         lora_weight=a.lora_weight))
        resolve_distilled(a.finetuned_model, a.data_dir)
        if a.base_model:
            resolve_pipeline(a.base_model, a.data_dir)
        out = Path(a.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        totals = {"base": 0.0, "distilled": 0.0}
        for p in prompts:
            b, d = generate_pair(replace(s, prompt=p), base_model=a.base_model, finetuned=a.finetuned_model,
                                 data_dir=a.data_dir)
            fb = save_png(b.image, out / f"{file_stem('BASELINE', s.seed, p)}.png", b.infotext)
            fn = save_png(d.image, out / f"{file_stem('NEW', s.seed, p)}.png", d.infotext)
            totals["base"] += b.seconds
            totals["distilled"] += d.seconds
            print(f"{p!r}: BASELINE {b.seconds:.2f} s/image ({b.unet_passes} UNet passes) -> {fb.name}; "
                  f"NEW {d.seconds:.2f} s/image ({d.unet_passes} UNet passes) -> {fn.name}", flush=True)
        n = len(prompts)
        print(f"mean seconds per image: BASELINE {totals['base'] / n:.2f}, NEW {totals['distilled'] / n:.2f} "
              f"(ratio {totals['distilled'] / max(totals['base'], 1e-9):.2f}); {2 * n} PNGs in {out}", flush=True)
    except FieldError as e:
        print(f"error: --{e.field}: {e.message}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
