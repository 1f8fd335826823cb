"""The bundled tiny Stable Diffusion pipeline, built offline from configs (≈8 MB, a few seconds).

The weights are random (a fixed seed makes every build identical), so its images are noise patterns:
it exercises the whole diffusers pipeline (tokenizer, text encoder, UNet, VAE, scheduler, LoRA) on a
CPU, not the art. A 64×64 image is a 32×32 latent.
"""
from __future__ import annotations

import time
from pathlib import Path

from backends.bundled import (
    Log,
    build_lock,
    folder_mb,
    is_ready,
    missing_files,
    prepare_command,
    read_marker,
    staged,
    write_marker,
)
from backends.common import paths

SEED = 0
REQUIRED = ("model_index.json", "unet/diffusion_pytorch_model.safetensors",
            "vae/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
            "tokenizer/tokenizer.json", "scheduler/scheduler_config.json")
# Words whose letters get BPE merges, so common prompts become whole tokens instead of letters.
MERGE_WORDS = ("red", "green", "blue", "circle", "square", "photo", "the")


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2's 256 byte symbols: printable bytes stand for themselves, the rest map above 255."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + i) for i in range(len(others))]


def build_tokenizer(words=MERGE_WORDS, max_length: int = 77):
    """A minimal CLIP byte-level BPE tokenizer: every byte, every byte ending a word, merges that make `words` whole."""
    from transformers import CLIPTokenizer

    symbols = _bytes_to_unicode()
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges: list[tuple[str, str]] = []
    for word in words:  # merge each word left to right: r+e, re+d</w>
        parts = [*word[:-1], word[-1] + "</w>"]
        while len(parts) > 1:
            pair = (parts[0], parts[1])
            if pair not in merges:
                merges.append(pair)
            vocab.setdefault("".join(pair), len(vocab))
            parts = ["".join(pair), *parts[2:]]
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)


def build_pipeline(seed: int = SEED, words=MERGE_WORDS, max_length: int = 77):
    """The tiny StableDiffusionPipeline with seeded random weights (same seed → same weights); `words` and
    `max_length` are its tokenizer's (build_tokenizer)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tokenizer(words, max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32)
    vae = AutoencoderKL(
        block_out_channels=[32, 64], in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=5,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id))
    scheduler = PNDMScheduler(skip_prk_steps=True, steps_offset=1)
    # As in SD's own scheduler configs: a DDIM-family sampler made from this config must not clip the predicted
    # x0 to [-1, 1] (DDIMScheduler's default), which is right for pixels but cuts the latents' colours (the shapes
    # model drew 2 of 12 held-out captions in their colour with DDIM clipping, 11 without).
    scheduler.register_to_config(clip_sample=False)
    return StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)


def tiny_sd_status(data_dir=None) -> dict:
    """What is prepared, from the files alone: keys ready, path, detail (detail_zh), command."""
    dd = paths.data_dir(data_dir)
    target = paths.tiny_sd_dir(dd)
    status = {"ready": False, "path": str(target), "command": prepare_command(dd, "sd")}
    if is_ready(target, REQUIRED):
        mb, seed = f"{folder_mb(target):.1f}", read_marker(target)["source"]["seed"]
        status.update(ready=True, detail=f"ready: {mb} MB random-weight pipeline (64×64 images, seed {seed})",
                      detail_zh=f"就绪：{mb} MB 随机权重管线（64×64 图像，随机种子 {seed}）")
    elif not target.exists():
        status.update(detail="not prepared; it is built offline in a few seconds",
                      detail_zh="尚未准备；离线构建只需几秒")
    elif missing := missing_files(target, REQUIRED):
        status.update(detail=f"incomplete (missing {', '.join(missing)}); it is rebuilt offline in seconds",
                      detail_zh=f"不完整（缺少 {', '.join(missing)}）；离线重建只需几秒")
    else:
        status.update(detail="made by another version of the studio; it is rebuilt offline in seconds",
                      detail_zh="由其他版本的工作室生成；离线重建只需几秒")
    return status


def ensure_tiny_sd(data_dir=None, log: Log = print) -> Path:
    """Return the tiny SD folder, building it first if needed (offline, seconds). Idempotent."""
    dd = paths.data_dir(data_dir)
    target = paths.tiny_sd_dir(dd)
    if is_ready(target, REQUIRED):
        return target
    with build_lock(target, log):
        if is_ready(target, REQUIRED):  # another process finished it while we waited
            return target
        import diffusers
        import torch

        t0 = time.time()
        log("building the tiny Stable Diffusion pipeline …")
        with staged(target) as stage:
            build_pipeline(SEED).save_pretrained(stage, safe_serialization=True)
            write_marker(stage, name=paths.TINY_SD_NAME,
                         source={"builder": __name__, "seed": SEED},
                         converted_with={"diffusers": diffusers.__version__, "torch": torch.__version__},
                         seconds=round(time.time() - t0, 1))
    log(f"tiny SD ready: {target} ({folder_mb(target):.1f} MB); done in {time.time() - t0:.1f} s")
    return target


def verify_tiny_sd(path, prompt: str = "a red circle", seed: int = 0, steps: int = 4):
    """Generate one 64×64 image from the folder with a seeded generator; return the PIL image."""
    import torch
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(path, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator("cpu").manual_seed(seed)
    return pipe(prompt, num_inference_steps=steps, height=64, width=64, generator=generator).images[0]
