"""Classifier-free-guidance distillation of a Stable Diffusion UNet (DeepSpeedExamples `training/stable_diffusion`),
and latent consistency distillation (LCM-LoRA, diffusers `examples/consistency_distillation`).

    accelerate launch -m backends.sd_distill_lora --config FILE [--field value ...]
    python -m backends.sd_distill_lora --config presets/recipes/cpu-demo-tiny-sd.yaml --data_dir DIR

Modes (``--mode``):

- ``lora`` (DSE PR #873): the UNet is frozen and gets peft LoRA adapters (``--rank``) on its attention
  projections. The teacher is the same UNet with the adapters disabled (no second copy in memory): it predicts the
  noise for the empty prompt and for the caption, ``target = uncond + w * (cond - uncond)`` with
  ``w = --guidance_scale``; the student (adapters on) learns, with MSE, to give that guided prediction in ONE
  conditional pass. At inference the LoRA runs with guidance off: one UNet pass per step instead of two.
- ``full`` (DSE's merged script): a separate frozen teacher copy, the whole student UNet is trained.
- ``lcm_lora`` (LCM-LoRA): the student learns to jump along the teacher's guided probability-flow ODE: a DDIM
  solver step of the guided teacher from ``t_{n+k}`` to ``t_n`` (``--num_ddim_timesteps`` solver steps,
  skipping ``k = 1000 / num_ddim_timesteps``), the target is the student's own (no-grad) consistency output at
  ``t_n`` (LCM-LoRA uses no separate EMA target), both through ``scalings_for_boundary_conditions``; l2 or
  huber loss. Use the result with ``LCMScheduler`` at 2–8 steps and no CFG (guidance 1).

``--guidance_scale`` w: the teacher's CFG scale (7.5, which DSE hard-codes). The LCM scripts write the same
guidance as ``cond + w' (cond - uncond)`` with ``w' = w - 1`` and sample w' from [w_min, w_max]; here one fixed w
is used in every mode. w <= 1 is allowed: w = 1 means no guidance (the target is the teacher's plain
conditional prediction: the student learns to stay the base model), w < 1 blends towards the unconditional one.

Data (``--data_source``):

- ``generate`` (default, offline): the base pipeline renders ``--generate_images_per_prompt`` images for each
  prompt of ``--prompts_file`` (a .txt, one prompt a line, or a .jsonl with ``prompt``/``text``) with CFG at
  ``--guidance_scale`` into ``<run_dir>/generated/`` (+ metadata.jsonl), then trains on them. DSE trains on
  DiffusionDB, itself Stable Diffusion output with its prompts: this is its offline stand-in.
- ``folder``: ``--train_data_dir``, images with ``metadata.jsonl`` (diffusers imagefolder: ``file_name``,
  ``text``; a studio image dataset's folder works too). An empty caption uses ``--default_prompt``.
- ``diffusiondb``: ``poloclub/diffusiondb`` subset ``--diffusiondb_subset`` through ``datasets`` (needs the hub).

Images are resized (shorter side) to ``--resolution``, cropped (random, or centre with ``--center_crop``),
scaled to [-1, 1] and VAE-encoded × ``scaling_factor``, as in DSE.

Job protocol (backends/common/loop.Loop): ``metrics.jsonl`` (step, loss, learning_rate, samples_per_s, eta);
validation images every ``--validation_steps`` into ``<run_dir>/samples/step-<N>-<i>.png`` rendered the distilled
way (guidance 1; lcm: LCMScheduler, 4 steps); checkpoints ``<run_dir>/checkpoints/checkpoint-<N>/`` (LoRA file or
the student UNet, optimizer.pt, scheduler.pt, studio-state.json with the step); ``resume_from_checkpoint: latest``
continues the step count.

Output contract (``<run_dir>/output/``; backends/infer/txt2img.py and the image A/B read exactly these):

- lora / lcm_lora: ``pytorch_lora_weights.safetensors`` (diffusers ``save_lora_weights``; ``pipe.load_lora_weights
  (output_dir)`` reads it);
- full: a whole diffusers pipeline folder (``save_pretrained``: model_index.json, unet/, vae/, text_encoder/, …);
- ``studio.json``: ``{"kind": "sd_distill", "status": "completed", "mode": "lora|full|lcm_lora",
  "base_model": <the resolved base pipeline folder or hub id>, "lora_file": "pytorch_lora_weights.safetensors"
  (lora/lcm_lora; "" for full), "guidance_scale": <w>, "resolution": <px>, "scheduler": "LCMScheduler" (lcm_lora)
  or "" , "num_inference_steps": 4 (lcm_lora) or 0 (= the caller's choice), "rank": r, "recipe": ...}``.

Exit codes: 0 done, 2 bad option (``error: <field>: <message>``), 128+signal after a clean stop.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import modeling, paths, runner
from backends.common.errors import FieldError

KIND = "sd_distill"
DESCRIPTION = "Guidance (CFG) distillation of a Stable Diffusion UNet: LoRA, full UNet, or LCM-LoRA."
MODES = ("lora", "full", "lcm_lora")
SOURCES = ("generate", "folder", "diffusiondb")
LR_SCHEDULERS = ["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial"]
DEFAULT_LR = {"lora": 5e-4, "full": 5e-6, "lcm_lora": 1e-4}  # DSE PR #873, DSE master, diffusers LCM-LoRA
LORA_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
# diffusers train_lcm_distill_lora_sd_wds.py's default targets (attention, feed-forward, resnets, samplers)
LCM_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1",
               "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]
LORA_FILE = "pytorch_lora_weights.safetensors"
LCM_STEPS = 4
VALIDATION_STEPS_CFG = 25
TIMESTEP_SCALING = 10.0  # LCM's timestep_scaling_factor
SMALL_UNET = 20_000_000  # parameters: below this, one torch thread (the bundled tiny UNet has 1.5 M; SD 1.5 860 M)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_m = cfglib.meta


@dataclass
class SDDistillArgs(cfglib.JobFields):
    """Options of the SD distillation backend (DSE train_sd_distil_lora.py names where they exist)."""

    pretrained_model_name_or_path: str = field(default="bundled:tiny-sd", metadata=_m(
        "model", "Base pipeline (teacher)", "基础管线（教师）",
        "A diffusers Stable Diffusion pipeline folder (model_index.json, unet/, vae/, …), `bundled:tiny-sd` (the "
        "offline demo pipeline), or a hub id when online (stabilityai/stable-diffusion-2-1-base).",
        "diffusers Stable Diffusion 管线目录（含 model_index.json、unet/、vae/ 等）、`bundled:tiny-sd`（离线演示管线），"
        "或联网时的 Hub 模型名（stabilityai/stable-diffusion-2-1-base）。", widget="model"))
    data_source: str = field(default="generate", metadata=_m(
        "data", "Data source", "数据来源",
        "generate = the base pipeline renders images for the prompt list first (offline; DSE's DiffusionDB is "
        "itself SD output); folder = an image folder with metadata.jsonl; diffusiondb = poloclub/diffusiondb "
        "(needs the hub).",
        "generate = 先用基础管线按提示列表生成图像（离线；DSE 使用的 DiffusionDB 本身就是 SD 生成图）；folder = 带 "
        "metadata.jsonl 的图像目录；diffusiondb = poloclub/diffusiondb（需要联网）。", choices=list(SOURCES), order=-2))
    train_data_dir: str = field(default="", metadata=_m(
        "data", "Image folder", "图像目录",
        "data_source folder: images with metadata.jsonl (diffusers imagefolder: file_name, text), or a studio image "
        "dataset. Relative paths are tried in <data-dir>/datasets, the data dir, the project root.",
        "data_source 为 folder 时：带 metadata.jsonl 的图像目录（diffusers imagefolder：file_name、text），或工作室图像"
        "数据集。相对路径依次在 <数据目录>/datasets、数据目录、项目根目录下查找。", widget="dir", dataset_kind="images",
        order=-1))
    prompts_file: str = field(default="presets/datasets/sd_prompts.txt", metadata=_m(
        "data", "Prompt list", "提示列表",
        "data_source generate: a .txt (one prompt a line) or .jsonl (prompt or text) of prompts to render.",
        "data_source 为 generate 时：要生成的提示列表，.txt（每行一个）或 .jsonl（prompt 或 text 字段）。", widget="file"))
    generate_images_per_prompt: int = field(default=2, metadata=_m(
        "data", "Images per prompt", "每个提示的图像数",
        "data_source generate: images rendered per prompt (seeds seed, seed+1, …).",
        "data_source 为 generate 时：每个提示生成的图像数（种子依次为 seed、seed+1 …）。", min=1, max=1000))
    generate_steps: int = field(default=25, metadata=_m(
        "data", "Generation steps", "生成步数",
        "data_source generate: denoising steps of the base pipeline (with CFG at guidance_scale).",
        "data_source 为 generate 时：基础管线的去噪步数（按 guidance_scale 做 CFG）。", min=1, max=1000))
    diffusiondb_subset: str = field(default="2m_first_10k", metadata=_m(
        "data", "DiffusionDB subset", "DiffusionDB 子集",
        "data_source diffusiondb: the subset name (DSE master: 2m_first_10k; PR #873: 2m_first_50k).",
        "data_source 为 diffusiondb 时的子集名（DSE 主分支：2m_first_10k；PR #873：2m_first_50k）。"))
    default_prompt: str = field(default="A man dancing", metadata=_m(
        "data", "Default prompt", "默认提示",
        "Caption for images without one (an empty text), and the validation prompt when that is empty.",
        "没有说明文字的图像所用的提示；验证提示为空时也用它。"))
    resolution: int = field(default=512, metadata=_m(
        "data", "Resolution", "分辨率",
        "Training image size in pixels (square; a multiple of 8). SD 1.5/2.1-base: 512; the tiny demo: 64.",
        "训练图像边长（正方形，须为 8 的倍数）。SD 1.5/2.1-base：512；内置小模型：64。", min=8, max=4096))
    center_crop: bool = field(default=False, metadata=_m(
        "data", "Centre crop", "中心裁剪", "Crop the centre after resizing; off = a random crop (DSE's default).",
        "缩放后裁剪中心区域；关闭 = 随机裁剪（DSE 的默认）。"))
    mode: str = field(default="lora", metadata=_m(
        "training", "Mode", "模式",
        "lora = LoRA student, teacher = same UNet with adapters off (one UNet in memory); full = whole student UNet "
        "+ a frozen teacher copy (two UNets); lcm_lora = latent consistency LoRA for 2–8 step LCMScheduler sampling.",
        "lora = LoRA 学生，教师为关闭适配器的同一 UNet（内存中只有一个 UNet）；full = 训练整个学生 UNet 并保留冻结的教师"
        "副本（两个 UNet）；lcm_lora = 潜在一致性 LoRA，可用 LCMScheduler 2–8 步采样。", choices=list(MODES), order=-3))
    rank: int = field(default=4, metadata=_m(
        "training", "LoRA rank", "LoRA 秩", "Rank of the LoRA matrices (lora, lcm_lora; DSE PR #873: 4).",
        "LoRA 矩阵的秩（lora、lcm_lora；DSE PR #873 为 4）。", min=1, max=1024, order=-2))
    guidance_scale: float = field(default=7.5, metadata=_m(
        "training", "Guidance scale", "引导系数",
        "The teacher's CFG scale w: target = uncond + w·(cond − uncond) (DSE hard-codes 7.5). 1 = no guidance (the "
        "student learns the plain conditional prediction); below 1 leans towards the unconditional one.",
        "教师的 CFG 系数 w：目标 = uncond + w·(cond − uncond)（DSE 固定为 7.5）。1 = 无引导（学生学习普通条件预测）；"
        "小于 1 时偏向无条件预测。", min=0, max=50, order=-2))
    train_batch_size: int = field(default=1, metadata=_m(
        "training", "Batch size", "批大小", "Images per process and micro-step (DSE's command: 1).",
        "每个进程每个微步的图像数（DSE 的命令为 1）。", min=1, max=1024))
    gradient_accumulation_steps: int = field(default=1, metadata=_m(
        "training", "Gradient accumulation", "梯度累积步数", "Micro-batches summed before each optimizer step.",
        "每次优化器更新前累积的微批次数。", min=1, max=4096))
    learning_rate: float = field(default=0.0, metadata=_m(
        "training", "Learning rate", "学习率",
        "AdamW learning rate; 0 = by mode: lora 5e-4 (DSE PR #873), full 5e-6 (DSE master), lcm_lora 1e-4 "
        "(diffusers LCM-LoRA).",
        "AdamW 学习率；0 = 按模式：lora 5e-4（DSE PR #873），full 5e-6（DSE 主分支），lcm_lora 1e-4（diffusers "
        "LCM-LoRA）。", min=0, min_exclusive=True, max=1, allow=[0]))
    lr_scheduler: str = field(default="constant", metadata=_m(
        "training", "LR schedule", "学习率调度", "diffusers get_scheduler schedule (DSE: constant).",
        "diffusers get_scheduler 的调度方式（DSE：constant）。", choices=LR_SCHEDULERS))
    lr_warmup_steps: int = field(default=0, metadata=_m(
        "training", "Warm-up steps", "预热步数",
        "Linear warm-up steps (not with constant: use constant_with_warmup).",
        "线性预热步数（constant 不预热：请用 constant_with_warmup）。", min=0, max=10_000_000))
    max_train_steps: int = field(default=0, metadata=_m(
        "training", "Max steps", "最大步数", "Optimizer steps; 0 = num_train_epochs over the data.",
        "优化器更新步数；0 = 按 num_train_epochs 遍历数据。", min=0, max=10_000_000))
    num_train_epochs: int = field(default=1, metadata=_m(
        "training", "Epochs", "训练轮数", "Passes over the images (when max_train_steps is 0).",
        "遍历图像的轮数（max_train_steps 为 0 时）。", min=1, max=100_000))
    max_grad_norm: float = field(default=1.0, metadata=_m(
        "training", "Gradient clipping", "梯度裁剪", "Clip the gradient norm to this (0 = off).",
        "把梯度范数裁剪到此值（0 = 不裁剪）。", min=0, max=1e6))
    loss_type: str = field(default="l2", metadata=_m(
        "training", "Loss", "损失", "l2 = MSE (DSE); huber = the LCM scripts' pseudo-Huber with huber_c.",
        "l2 = 均方误差（DSE）；huber = LCM 脚本的伪 Huber 损失（参数 huber_c）。", choices=["l2", "huber"]))
    huber_c: float = field(default=0.001, metadata=_m(
        "training", "Huber c", "Huber c", "The pseudo-Huber loss's c (loss_type huber).",
        "伪 Huber 损失的 c（loss_type 为 huber 时）。", min=0, min_exclusive=True, max=10))
    num_ddim_timesteps: int = field(default=50, metadata=_m(
        "training", "DDIM solver steps", "DDIM 求解步数",
        "lcm_lora: timesteps of the DDIM solver along the teacher's ODE (the skip is 1000 / this).",
        "lcm_lora：沿教师 ODE 的 DDIM 求解器步数（跳步 = 1000 / 此值）。", min=1, max=1000))
    offset_noise: bool = field(default=False, metadata=_m(
        "training", "Offset noise", "偏移噪声", "Add 0.1·N(0,1) per channel to the noise (DSE --offset_noise).",
        "给噪声每个通道加 0.1·N(0,1)（DSE 的 --offset_noise）。"))
    mixed_precision: str = field(default="no", metadata=_m(
        "training", "Mixed precision", "混合精度",
        "no (fp32, CPU), bf16 or fp16 (a CUDA GPU) autocast; trained weights stay fp32.",
        "no（fp32，CPU）、bf16 或 fp16（需 CUDA GPU）自动混合精度；训练的权重保持 fp32。", choices=["no", "fp16", "bf16"]))
    gradient_checkpointing: bool = field(default=False, metadata=_m(
        "training", "Gradient checkpointing", "梯度检查点",
        "Recompute UNet activations in the backward pass: less memory, slower.",
        "反向传播时重算 UNet 激活：更省显存，但更慢。"))
    seed: int = field(default=1234, metadata=_m(
        "training", "Seed", "随机种子", "Seeds LoRA init, data order, noise, timesteps, generated and validation "
        "images: the same seed gives the same run.",
        "用于 LoRA 初始化、数据顺序、噪声、时间步、生成图像与验证图像：相同种子得到相同的运行。", min=0, max=2**31 - 1))
    validation_prompt: str = field(default="", metadata=_m(
        "output", "Validation prompt", "验证提示", "Prompt of the validation images (empty = default_prompt).",
        "验证图像的提示（留空 = default_prompt）。"))
    validation_steps: int = field(default=100, metadata=_m(
        "output", "Validate every", "验证间隔",
        "Render validation images every N steps (and after the last) into run_dir/samples/; 0 = never.",
        "每 N 步（以及最后一步后）生成验证图像到 run_dir/samples/；0 = 不生成。", min=0, max=10_000_000))
    num_validation_images: int = field(default=4, metadata=_m(
        "output", "Validation images", "验证图像数", "Images per validation (seeds seed, seed+1, …).",
        "每次验证生成的图像数（种子依次为 seed、seed+1 …）。", min=1, max=64))
    checkpointing_steps: int = field(default=500, metadata=_m(
        "output", "Checkpoint every", "检查点间隔", "Save a resumable checkpoint every N steps.",
        "每 N 步保存一个可恢复的检查点。", min=1, max=10_000_000))
    checkpoints_total_limit: int = field(default=0, metadata=_m(
        "output", "Checkpoints kept", "保留检查点数", "Keep only the newest N checkpoints (0 = keep all).",
        "只保留最新的 N 个检查点（0 = 全部保留）。", min=0, max=10_000))


SCHEMA = SDDistillArgs


# ------------------------------------------------------------------------------------------ resolve (no torch)
@dataclass
class Resolved:
    job: runner.Job
    model: str          # the base pipeline folder or hub id
    learning_rate: float
    rows: list          # (image path, caption) for folder; [] otherwise (generate / diffusiondb fill it at run time)
    prompts: list       # generate: the prompts


def check_pipeline_dir(path: str, shown: str, *, field: str = "pretrained_model_name_or_path") -> None:
    p = Path(path)
    if not p.exists():
        if modeling.is_hub_id(path):
            return
        if shown.startswith("bundled:"):
            only = " --only shapes" if shown.strip() == "bundled:tiny-sd-shapes" else ""
            raise FieldError(field, f"the bundled pipeline is not prepared yet ({path}); prepare it in the "
                                    f"Environment tab or with `python -m backends.bundled prepare{only}`")
        raise FieldError(field, f"folder not found: {shown}")
    if not (p / "model_index.json").is_file() or not (p / "unet" / "config.json").is_file():
        raise FieldError(field, f"{shown} is not a diffusers Stable Diffusion pipeline folder (no model_index.json "
                                "with unet/, vae/, text_encoder/); give a folder saved with save_pretrained, "
                                "bundled:tiny-sd or a hub id")


def _find(value: str, dd: Path | None, *, field: str) -> Path:
    """A user path: as given, then <data-dir>/datasets, the data dir, the project root."""
    v = str(value or "").strip()
    p = Path(v).expanduser()
    cands = [p] if p.is_absolute() else [p, *([paths.datasets_dir(dd) / p, dd / p] if dd else []), paths.ROOT / p]
    for c in cands:
        if c.exists():
            return c.resolve()
    raise FieldError(field, f"not found: {v}")


def read_metadata(folder: Path, *, field: str = "train_data_dir", default_prompt: str = "") -> list[tuple[Path, str]]:
    """(image path, caption) rows of an imagefolder's metadata.jsonl; FieldError naming the line and the fix."""
    meta_file = folder / "metadata.jsonl"
    if not meta_file.is_file() and (folder / "images" / "metadata.jsonl").is_file():
        folder, meta_file = folder / "images", folder / "images" / "metadata.jsonl"  # a studio image dataset
    if not meta_file.is_file():
        raise FieldError(field, f"{folder} has no metadata.jsonl; add one with a line {{\"file_name\": ..., "
                                "\"text\": ...}} per image (diffusers imagefolder)")
    rows = []
    for n, line in enumerate(meta_file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise FieldError(field, f"metadata.jsonl line {n} is not valid JSON ({e.msg}); fix or remove it") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("file_name"), str):
            raise FieldError(field, f"metadata.jsonl line {n} has no file_name; each line needs "
                                    "{\"file_name\": ..., \"text\": ...}")
        img = paths.join_inside(folder, rec["file_name"], field=field, what="the image folder")
        if not img.is_file():
            raise FieldError(field, f"metadata.jsonl line {n}: image file {rec['file_name']!r} is missing from "
                                    f"{folder}; add it or remove the line")
        text = rec.get("text")
        rows.append((img, str(text).strip() if text is not None and str(text).strip() else default_prompt))
    if not rows:
        raise FieldError(field, f"{meta_file} lists no images")
    return rows


def read_prompts(path: Path, *, field: str = "prompts_file") -> list[str]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                rec = json.loads(s)
            except ValueError as e:
                raise FieldError(field, f"{path.name} line {n} is not valid JSON ({e.msg})") from None
            s = str((rec.get("prompt") or rec.get("text") or "") if isinstance(rec, dict) else "").strip()
            if not s:
                raise FieldError(field, f"{path.name} line {n} has no prompt (or text)")
        out.append(s)
    if not out:
        raise FieldError(field, f"{path} holds no prompts; write one prompt a line")
    return out


def resolve(cfg: SDDistillArgs, job: runner.Job | None = None) -> Resolved:
    """Check every option against the files it names (no weights are read)."""
    job = job or runner.resolve_job(cfg, KIND)
    dd = job.data_dir
    if cfg.resolution % 8:
        raise FieldError("resolution", f"must be a multiple of 8 (the VAE and UNet downsample by 8), got "
                                       f"{cfg.resolution}; e.g. {max(8, cfg.resolution // 8 * 8)}")
    model = modeling.resolve_model(cfg.pretrained_model_name_or_path, dd, field="pretrained_model_name_or_path")
    check_pipeline_dir(model, cfg.pretrained_model_name_or_path)
    if cfg.lr_warmup_steps and cfg.lr_scheduler == "constant":
        raise FieldError("lr_warmup_steps", "the constant schedule does not warm up; use lr_scheduler "
                                            "constant_with_warmup (or set the warm-up to 0)")
    if cfg.mixed_precision == "fp16":
        from backends.common.distributed import has_cuda

        if not has_cuda():
            raise FieldError("mixed_precision", "fp16 needs a CUDA GPU; use no on CPU")
    rows, prompts = [], []
    if cfg.data_source == "folder":
        if not cfg.train_data_dir.strip():
            raise FieldError("train_data_dir", "is empty: give an image folder with metadata.jsonl (data_source "
                                               "folder)")
        folder = _find(cfg.train_data_dir, dd, field="train_data_dir")
        if not folder.is_dir():
            raise FieldError("train_data_dir", f"{cfg.train_data_dir} is a file; give the folder with metadata.jsonl")
        rows = read_metadata(folder, default_prompt=cfg.default_prompt)
    elif cfg.data_source == "generate":
        pf = _find(cfg.prompts_file, dd, field="prompts_file")
        if not pf.is_file():
            raise FieldError("prompts_file", f"{cfg.prompts_file} is not a file; give a .txt or .jsonl of prompts")
        prompts = read_prompts(pf)
    elif not cfg.diffusiondb_subset.strip():
        raise FieldError("diffusiondb_subset", "is empty: e.g. 2m_first_10k")
    lr = cfg.learning_rate or DEFAULT_LR[cfg.mode]
    return Resolved(job, model, lr, rows, prompts)


def validate_config(cfg: SDDistillArgs | dict) -> None:
    resolve(runner.ensure_args(SDDistillArgs, cfg))


# ------------------------------------------------------------------------------------------ the math
def scalings_for_boundary_conditions(timestep, sigma_data: float = 0.5, timestep_scaling: float = TIMESTEP_SCALING):
    """LCM's c_skip, c_out (LCMScheduler.get_scalings_for_boundary_condition_discrete)."""
    scaled = timestep_scaling * timestep
    c_skip = sigma_data ** 2 / (scaled ** 2 + sigma_data ** 2)
    c_out = scaled / (scaled ** 2 + sigma_data ** 2) ** 0.5
    return c_skip, c_out


def _at(a, t, ndim: int):
    return a[t].reshape(-1, *([1] * (ndim - 1)))


def predicted_x0(out, t, x, prediction_type: str, alphas, sigmas):
    a, s = _at(alphas, t, x.ndim), _at(sigmas, t, x.ndim)
    if prediction_type == "epsilon":
        return (x - s * out) / a
    if prediction_type == "v_prediction":
        return a * x - s * out
    return out  # "sample"


def predicted_noise(out, t, x, prediction_type: str, alphas, sigmas):
    a, s = _at(alphas, t, x.ndim), _at(sigmas, t, x.ndim)
    if prediction_type == "epsilon":
        return out
    if prediction_type == "v_prediction":
        return a * out + s * x
    return (x - a * out) / s


class DDIMSolver:
    """The DDIM ODE solver of the LCM scripts: timesteps [k-1, 2k-1, …, T-1] and one deterministic step back."""

    def __init__(self, alphas_cumprod, timesteps: int = 1000, ddim_timesteps: int = 50):
        import torch

        step = timesteps // ddim_timesteps
        self.ddim_timesteps = (torch.arange(1, ddim_timesteps + 1) * step).long() - 1
        ac = alphas_cumprod
        self.alpha_prev = torch.cat([ac[:1], ac[self.ddim_timesteps[:-1]]])

    def step(self, x0, eps, index):
        a_prev = _at(self.alpha_prev, index, x0.ndim)
        return a_prev.sqrt() * x0 + (1.0 - a_prev).sqrt() * eps


def loss_fn(pred, target, loss_type: str, huber_c: float):
    import torch
    import torch.nn.functional as F

    if loss_type == "huber":
        return torch.mean(torch.sqrt((pred.float() - target.float()) ** 2 + huber_c ** 2) - huber_c)
    return F.mse_loss(pred.float(), target.float())


def guided(uncond, cond, w: float):
    """uncond + w (cond - uncond); w = 1 is cond itself."""
    return cond if w == 1 else uncond + w * (cond - uncond)


# ------------------------------------------------------------------------------------------ models
class Models:
    """The pipeline parts: tokenizer, text encoder, VAE, student UNet (+ teacher copy in full mode), schedulers."""

    def __init__(self, model: str, mode: str, *, rank: int = 4, device="cpu", gradient_checkpointing: bool = False,
                 log=print):
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        self.model, self.mode, self.device = model, mode, device
        self.tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
        self.text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder").to(device)
        self.vae = AutoencoderKL.from_pretrained(model, subfolder="vae").to(device)
        self.noise_scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
        self.unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").to(device)
        self.raw = self.unet  # the unwrapped UNet (self.unet may become accelerate's DDP wrapper of it)
        for m in (self.text_encoder, self.vae):
            m.requires_grad_(False)
            m.eval()
        self.teacher = None
        if mode == "full":
            self.teacher = UNet2DConditionModel.from_pretrained(model, subfolder="unet").to(device)
            self.teacher.requires_grad_(False)
            self.teacher.eval()
            self.unet.train()
        else:
            from peft import LoraConfig

            self.unet.requires_grad_(False)
            self.unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian",
                                             target_modules=LCM_TARGETS if mode == "lcm_lora" else LORA_TARGETS))
            for p in self.unet.parameters():
                if p.requires_grad:
                    p.data = p.data.float()
        if gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        ac = self.noise_scheduler.alphas_cumprod.to(device)
        self.alphas, self.sigmas = ac.sqrt(), (1 - ac).sqrt()
        self.prediction_type = self.noise_scheduler.config.prediction_type
        self.num_train_timesteps = int(self.noise_scheduler.config.num_train_timesteps)
        self.vae_scale = float(self.vae.config.scaling_factor)
        log(f"models: {model} ({mode}; {sum(p.numel() for p in self.trainable())/1e6:.3f} M trainable of "
            f"{sum(p.numel() for p in self.unet.parameters())/1e6:.2f} M UNet parameters"
            f"{'; teacher = a second UNet' if self.teacher is not None else '; teacher = the UNet with adapters off'})")

    def trainable(self):
        return [p for p in self.unet.parameters() if p.requires_grad]

    def encode_text(self, prompts: list[str]):
        import torch

        ids = self.tokenizer(list(prompts), padding="max_length", truncation=True,
                             max_length=self.tokenizer.model_max_length, return_tensors="pt").input_ids
        with torch.no_grad():
            return self.text_encoder(ids.to(self.device))[0]

    def teacher_pred(self, noisy, t, cond, uncond, w: float):
        """The guided teacher prediction (one batched pass over [uncond, cond]; one pass when w = 1)."""
        import torch

        unet = self.teacher if self.teacher is not None else self.raw
        with torch.no_grad():
            if self.teacher is None:
                self.raw.disable_adapters()
            try:
                if w == 1:
                    return unet(noisy, t, encoder_hidden_states=cond).sample
                out = unet(torch.cat([noisy, noisy]), torch.cat([t, t]),
                           encoder_hidden_states=torch.cat([uncond, cond])).sample
                u, c = out.chunk(2)
                return guided(u, c, w)
            finally:
                if self.teacher is None:
                    self.raw.enable_adapters()

    def pipeline(self, scheduler=None):
        """A StableDiffusionPipeline over these parts (the student UNet, adapters on)."""
        from diffusers import DPMSolverMultistepScheduler, LCMScheduler, StableDiffusionPipeline

        if scheduler is None:
            cls = LCMScheduler if self.mode == "lcm_lora" else DPMSolverMultistepScheduler
            scheduler = cls.from_config(self.noise_scheduler.config)
        pipe = StableDiffusionPipeline(vae=self.vae, text_encoder=self.text_encoder, tokenizer=self.tokenizer,
                                       unet=self.raw, scheduler=scheduler, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        return pipe


def distill_loss(m: Models, latents, cond, uncond, cfg: SDDistillArgs, g):
    """One micro-batch's loss (the student pass carries the gradient)."""
    import torch

    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=g).to(latents)
    if cfg.offset_noise:
        noise = noise + 0.1 * torch.randn((b, latents.shape[1], 1, 1), generator=g).to(latents)
    if cfg.mode != "lcm_lora":
        t = torch.randint(0, m.num_train_timesteps, (b,), generator=g).to(m.device)
        noisy = m.noise_scheduler.add_noise(latents, noise, t)
        target = m.teacher_pred(noisy, t, cond, uncond, cfg.guidance_scale)
        pred = m.unet(noisy, t, encoder_hidden_states=cond).sample
        return loss_fn(pred, target, cfg.loss_type, cfg.huber_c)
    # LCM-LoRA (diffusers train_lcm_distill_lora_sd_wds.py, steps 2-10)
    solver = m.solver
    k = m.num_train_timesteps // cfg.num_ddim_timesteps
    index = torch.randint(0, cfg.num_ddim_timesteps, (b,), generator=g).to(m.device)
    start_t = solver.ddim_timesteps.to(m.device)[index]
    t = torch.clamp(start_t - k, min=0)
    c_skip_s, c_out_s = (x.reshape(-1, 1, 1, 1) for x in scalings_for_boundary_conditions(start_t))
    c_skip, c_out = (x.reshape(-1, 1, 1, 1) for x in scalings_for_boundary_conditions(t))
    noisy = m.noise_scheduler.add_noise(latents, noise, start_t)
    out = m.unet(noisy, start_t, encoder_hidden_states=cond).sample
    model_pred = c_skip_s * noisy + c_out_s * predicted_x0(out, start_t, noisy, m.prediction_type, m.alphas, m.sigmas)
    with torch.no_grad():
        unet = m.raw
        unet.disable_adapters()
        try:
            both = unet(torch.cat([noisy, noisy]), torch.cat([start_t, start_t]),
                        encoder_hidden_states=torch.cat([uncond, cond])).sample
        finally:
            unet.enable_adapters()
        u_out, c_out_t = both.chunk(2)
        args = (start_t, noisy, m.prediction_type, m.alphas, m.sigmas)
        x0 = guided(predicted_x0(u_out, *args), predicted_x0(c_out_t, *args), cfg.guidance_scale)
        eps = guided(predicted_noise(u_out, *args), predicted_noise(c_out_t, *args), cfg.guidance_scale)
        x_prev = solver.step(x0, eps, index)
        tgt_out = unet(x_prev, t, encoder_hidden_states=cond).sample
        target = c_skip * x_prev + c_out * predicted_x0(tgt_out, t, x_prev, m.prediction_type, m.alphas, m.sigmas)
    return loss_fn(model_pred, target, cfg.loss_type, cfg.huber_c)


# ------------------------------------------------------------------------------------------ data
def load_image(path: Path, resolution: int, center_crop: bool, g):
    """Resize the shorter side to `resolution`, crop (random from `g`, or centre), to a [-1, 1] CHW tensor."""
    import numpy as np
    import torch
    from PIL import Image

    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = resolution / min(w, h)
    im = im.resize((max(resolution, round(w * s)), max(resolution, round(h * s))), Image.BICUBIC)
    w, h = im.size
    if center_crop:
        left, top = (w - resolution) // 2, (h - resolution) // 2
    else:
        left = int(torch.randint(0, w - resolution + 1, (1,), generator=g))
        top = int(torch.randint(0, h - resolution + 1, (1,), generator=g))
    im = im.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
    return arr.permute(2, 0, 1)


def generate_data(m: Models, prompts: list[str], cfg: SDDistillArgs, out: Path, log,
                  accelerator=None) -> list[tuple[Path, str]]:
    """Render the prompt list with the base pipeline (adapters off, CFG) into `out`; reuse a complete earlier set.
    With several processes each renders its share (image k on process k mod N) and the main one writes the
    metadata once all are done."""
    import torch

    meta = out / "metadata.jsonl"
    want = [(f"{i:05d}-{j}.png", p, cfg.seed + j) for i, p in enumerate(prompts)
            for j in range(cfg.generate_images_per_prompt)]
    if meta.is_file():
        rows = [json.loads(x) for x in meta.read_text(encoding="utf-8").splitlines() if x.strip()]
        if [(r["file_name"], r["text"]) for r in rows] == [(f, p) for f, p, _ in want] and all(
                (out / f).is_file() for f, _, _ in want):
            log(f"data: reusing {len(want)} generated images in {out}")
            return [(out / f, p) for f, p, _ in want]
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    mine = want[rank::world]
    out.mkdir(parents=True, exist_ok=True)
    from diffusers import DPMSolverMultistepScheduler

    pipe = m.pipeline(DPMSolverMultistepScheduler.from_config(m.noise_scheduler.config))
    t0 = time.time()
    if m.teacher is None:
        m.raw.disable_adapters()
    if m.teacher is not None:
        pipe.unet = m.teacher
    try:
        for n, (f, p, seed) in enumerate(mine, 1):
            g = torch.Generator("cpu").manual_seed(seed)
            img = pipe(p, num_inference_steps=cfg.generate_steps, guidance_scale=cfg.guidance_scale,
                       height=cfg.resolution, width=cfg.resolution, generator=g).images[0]
            img.save(out / f)
            if n == 1 or n % 10 == 0 or n == len(mine):
                log(f"data: generated {n}/{len(mine)} images ({time.time() - t0:.0f}s"
                    + (f"; the other {world - 1} process(es) render the rest)" if world > 1 else ")"))
    finally:
        if m.teacher is None:
            m.raw.enable_adapters()
    if accelerator:
        accelerator.wait_for_everyone()
    if rank == 0:
        tmp = meta.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps({"file_name": f, "text": p}, ensure_ascii=False) + "\n"
                               for f, p, _ in want), encoding="utf-8")
        tmp.replace(meta)
    if accelerator:
        accelerator.wait_for_everyone()
    return [(out / f, p) for f, p, _ in want]


def diffusiondb_rows(cfg: SDDistillArgs, dd: Path | None, out: Path, log) -> list[tuple[Path, str]]:
    """poloclub/diffusiondb subset -> PNG files + captions in `out` (load_dataset; offline: a clear error)."""
    import datasets

    try:
        ds = datasets.load_dataset("poloclub/diffusiondb", cfg.diffusiondb_subset, split="train",
                                   cache_dir=str(dd / "hf-cache") if dd else None)
    except Exception as e:  # noqa: BLE001 - offline, unknown subset, no loading script support ...
        raise FieldError("data_source", f"poloclub/diffusiondb ({cfg.diffusiondb_subset}) could not be loaded: "
                                        f"{type(e).__name__}: {str(e)[:300]}. Without internet use data_source "
                                        "generate or folder") from None
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, r in enumerate(ds):
        f = out / f"{i:06d}.png"
        if not f.is_file():
            r["image"].convert("RGB").save(f)
        rows.append((f, str(r.get("prompt") or cfg.default_prompt)))
    log(f"data: {len(rows)} DiffusionDB images ({cfg.diffusiondb_subset})")
    return rows


class Batches:
    """Micro-batch k = rows [k·b, (k+1)·b) of an endless sequence of seeded epoch permutations: resumable."""

    def __init__(self, n: int, batch: int, seed: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.rank, self.world = n, batch, seed, rank, world
        self._perm: dict[int, list[int]] = {}

    def _order(self, epoch: int) -> list[int]:
        import torch

        if epoch not in self._perm:
            self._perm = {epoch: torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
                          .tolist()}
        return self._perm[epoch]

    def indices(self, k: int) -> list[int]:
        start = (k * self.world + self.rank) * self.batch
        return [self._order(i // self.n)[i % self.n] for i in range(start, start + self.batch)]


# ------------------------------------------------------------------------------------------ save / load
def lora_state(unet) -> dict:
    """The adapter in peft's key format (lora_A / lora_B), which load_lora_weights reads for every layer type."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(unet)


def save_lora(unet, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline

    StableDiffusionPipeline.save_lora_weights(str(folder), unet_lora_layers=lora_state(unet), safe_serialization=True)


def load_lora_into(unet, folder: Path) -> None:
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from peft import set_peft_model_state_dict

    sd = StableDiffusionPipeline.lora_state_dict(str(folder))[0]
    sd = {k.replace("unet.", "", 1): v for k, v in sd.items() if k.startswith("unet.")}
    res = set_peft_model_state_dict(unet, convert_unet_state_dict_to_peft(sd), adapter_name="default")
    if getattr(res, "unexpected_keys", None):
        raise RuntimeError(f"checkpoint LoRA keys do not fit the UNet: {res.unexpected_keys[:3]}")


def save_validation(m: Models, cfg: SDDistillArgs, run_dir: Path, step: int, log) -> list[Path]:
    """num_validation_images images of the validation prompt, the distilled way (guidance off)."""
    import torch

    prompt = cfg.validation_prompt.strip() or cfg.default_prompt
    pipe = m.pipeline()
    steps = LCM_STEPS if cfg.mode == "lcm_lora" else VALIDATION_STEPS_CFG
    out = run_dir / "samples"
    out.mkdir(parents=True, exist_ok=True)
    files = []
    was = m.raw.training
    m.raw.eval()
    for i in range(cfg.num_validation_images):
        g = torch.Generator("cpu").manual_seed(cfg.seed + i)
        img = pipe(prompt, num_inference_steps=steps, guidance_scale=1.0, height=cfg.resolution,
                   width=cfg.resolution, generator=g).images[0]
        f = out / f"step-{step}-{i}.png"
        tmp = f.with_name(f".{f.name}")
        img.save(tmp, format="PNG")
        tmp.replace(f)  # the gallery never sees half a file
        files.append(f)
    m.raw.train(was)
    log(f"validation: {len(files)} images of {prompt!r} at step {step} ({steps} steps, guidance off)")
    return files


# ------------------------------------------------------------------------------------------ run
def log(msg: str) -> None:
    from backends.common.distributed import is_main_process

    if is_main_process():
        print(f"[studio] {msg}", flush=True)


def run(cfg: SDDistillArgs, job: runner.Job) -> dict[str, Any]:
    import torch
    from accelerate import Accelerator
    from diffusers.optimization import get_scheduler

    from backends.common import trainer as trainer_lib
    from backends.common.distributed import set_threads
    from backends.common.loop import Loop

    cfg = runner.ensure_args(SDDistillArgs, cfg)
    r = resolve(cfg, job)
    trainer_lib.quiet_libraries()
    set_threads()
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    device = accelerator.device
    per_step = cfg.train_batch_size * cfg.gradient_accumulation_steps * accelerator.num_processes
    # first, so that a Stop while the models load or the data is generated exits at once; its step total is set
    # once the data is known
    loop = Loop(KIND, cfg, job, total_steps=max(1, cfg.max_train_steps), global_batch=per_step,
                save_every=cfg.checkpointing_steps, save_total_limit=cfg.checkpoints_total_limit,
                start_info={"mode": cfg.mode, "base_model": r.model})
    torch.manual_seed(cfg.seed)  # LoRA init (gaussian) and anything else torch draws: the seed really seeds
    m = Models(r.model, cfg.mode, rank=cfg.rank, device=device, gradient_checkpointing=cfg.gradient_checkpointing,
               log=log)
    if sum(p.numel() for p in m.unet.parameters()) < SMALL_UNET and torch.get_num_threads() > 1:
        # a tiny UNet's thousands of small ops gain nothing from intra-op threads, and on a busy machine every one
        # waits for both threads to be scheduled (measured: 21 s instead of 0.3 s per 64 px image at 2 threads)
        torch.set_num_threads(1)
        log("threads: 1 (a UNet this small runs faster on one thread)")
    if cfg.mode == "lcm_lora":
        m.solver = DDIMSolver(m.noise_scheduler.alphas_cumprod, m.num_train_timesteps, cfg.num_ddim_timesteps)

    # data
    if cfg.data_source == "folder":
        rows = r.rows
    elif cfg.data_source == "generate":
        rows = generate_data(m, r.prompts, cfg, job.run_dir / "generated", log, accelerator)
    else:
        with accelerator.main_process_first():  # one download and one set of PNGs; the others reuse them
            rows = diffusiondb_rows(cfg, job.data_dir, job.run_dir / "diffusiondb", log)
    world = accelerator.num_processes
    steps_per_epoch = max(1, math.ceil(len(rows) / per_step))
    total = cfg.max_train_steps or cfg.num_train_epochs * steps_per_epoch
    log(f"data: {len(rows)} images ({cfg.data_source}), {cfg.resolution}px, {per_step} per step; {total} steps "
        f"(lr {r.learning_rate:g}{' by mode' if not cfg.learning_rate else ''}, guidance {cfg.guidance_scale:g})")

    optimizer = torch.optim.AdamW(m.trainable(), lr=r.learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer=optimizer, num_warmup_steps=cfg.lr_warmup_steps,
                              num_training_steps=total)
    m.unet, optimizer = accelerator.prepare(m.unet, optimizer)
    student = m.raw = accelerator.unwrap_model(m.unet)

    loop.total_steps = loop.state.max_steps = total
    loop.metrics.start_info["images"] = len(rows)
    state = loop.resume_state()
    if state:
        ck = Path(job.resume)
        if cfg.mode == "full":
            from diffusers import UNet2DConditionModel

            student.load_state_dict(UNet2DConditionModel.from_pretrained(str(ck / "unet")).state_dict())
        else:
            load_lora_into(student, ck)
        optimizer.load_state_dict(torch.load(ck / "optimizer.pt", weights_only=True))
        scheduler.load_state_dict(torch.load(ck / "scheduler.pt", weights_only=True))
        log(f"resumed from {ck.name} (step {state['step']})")
    step = loop.begin(state.get("step", 0))
    batches = Batches(len(rows), cfg.train_batch_size, cfg.seed, accelerator.process_index, world)
    uncond = m.encode_text([""] * cfg.train_batch_size)  # one empty prompt per sample (DSE built bs² of them)

    def validate(at: int) -> None:
        if cfg.validation_steps and accelerator.is_main_process:
            with accelerator.autocast():
                save_validation(m, cfg, job.run_dir, at, log)

    def write_checkpoint(folder: Path) -> None:
        if accelerator.is_main_process:
            if cfg.mode == "full":
                student.save_pretrained(str(folder / "unet"), safe_serialization=True)
            else:
                save_lora(student, folder)
            torch.save(optimizer.state_dict(), folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")

    m.unet.train()
    while step < total:
        with loop.step():
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)  # noise/timesteps/crops of this step
            losses = []
            for micro in range(cfg.gradient_accumulation_steps):
                idx = batches.indices(step * cfg.gradient_accumulation_steps + micro)
                pixels = torch.stack([load_image(rows[i][0], cfg.resolution, cfg.center_crop, g) for i in idx])
                with torch.no_grad():
                    latents = m.vae.encode(pixels.to(device)).latent_dist.sample(generator=g) * m.vae_scale
                cond = m.encode_text([rows[i][1] for i in idx])
                with accelerator.autocast():
                    loss = distill_loss(m, latents, cond, uncond, cfg, g)
                accelerator.backward(loss / cfg.gradient_accumulation_steps)
                losses.append(float(loss.detach()))
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(m.trainable(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step = loop.step_count
        loop.log(loss=sum(losses) / len(losses), learning_rate=scheduler.get_last_lr()[0])
        if cfg.validation_steps and step % cfg.validation_steps == 0 and step < total:
            validate(step)
        if loop.should_save() or loop.stopping:
            loop.save_checkpoint(write_checkpoint, extra_state={"mode": cfg.mode})
        if loop.stopping:
            break
    loop.finishing()
    status = "stopped" if loop.stopping else "completed"
    if not loop.stopping:
        validate(step)
    out = job.output_dir
    if accelerator.is_main_process and not loop.stopping:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.mode == "full":
            from diffusers import StableDiffusionPipeline

            pipe = StableDiffusionPipeline.from_pretrained(r.model, unet=student, safety_checker=None,
                                                           requires_safety_checker=False)
            pipe.save_pretrained(str(out), safe_serialization=True)
        else:
            save_lora(student, out)
        modeling.write_studio_json(out, {
            "kind": KIND, "status": status, "mode": cfg.mode, "base_model": r.model,
            "lora_file": LORA_FILE if cfg.mode != "full" else "", "guidance_scale": cfg.guidance_scale,
            "resolution": cfg.resolution, "scheduler": "LCMScheduler" if cfg.mode == "lcm_lora" else "",
            "num_inference_steps": LCM_STEPS if cfg.mode == "lcm_lora" else 0, "rank": cfg.rank if cfg.mode != "full"
            else 0, "recipe": cfg.recipe, "steps": step, "data_source": cfg.data_source, "images": len(rows)})
        log(f"saved {'the pipeline' if cfg.mode == 'full' else LORA_FILE} to {out}")
    return loop.end(status=status, mode=cfg.mode)


def main(argv=None) -> int:
    return runner.main(KIND, SDDistillArgs, run, argv, description=DESCRIPTION)


if __name__ == "__main__":
    raise SystemExit(main())
