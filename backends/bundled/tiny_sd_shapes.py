"""The bundled tiny SD pipeline taught to draw the shapes set (`bundled:tiny-sd-shapes`): optional, one-time.

The tiny pipeline (tiny_sd.py) is random, so its pictures are noise. This step starts from the same seeded
build and trains it on the captioned shapes pictures of backends/data/shapes_images.py:

1. the VAE (encoder and decoder: the random decoder cannot give pictures back) on random 32 px crops (4× cheaper a
   step than whole pictures; the VAE is convolutional), reconstruction MSE of a posterior sample plus a small KL
   term; its `scaling_factor` is then set to 1/std of the latents, as SD's is;
2. the UNet and the text encoder together, v-prediction MSE (SD 2.x's target), with 10% of captions dropped to ""
   so classifier-free guidance has an unconditional prediction to use; the saved weights are their EMA.

Measured (the 6 held-out captions × 2 seeds, CFG 7.5, 20 DPM++ 2M steps, as benchmarks/shapes_model.py renders
them; the named colour must cover the most pixels once the background is left out; the random tiny SD scores 4/12
by always drawing red): the default steps (whole-word caption tokens, a 16-token context, UNet 800 steps) build in
20 min (1182 s) on 2 idle cores where a UNet step takes 1.1 s, about half that on a machine twice as fast, and score
**9/12** (DDIM at 25 steps: 1/12, explained below), with every background right and the shapes drawn as blobs of one
colour. The first whole-caption version (byte-level tokens, CLIP's 77-token context, 1100 UNet steps) scored 6/12
once and 0/12 when rebuilt on the slower machine; the misses are held-out colour/shape pairs drawn in
a neighbouring colour (orange for green or red, blue for green). What made it learn, in that test and in the loss
of the right vs a wrong caption: epsilon-prediction on this linear noise schedule (the first version) got 1 of 6
after 800 steps and the caption made no difference to the loss after 300 steps (the colours are decided at high
noise, where an epsilon target says almost nothing about the picture); v-prediction made the pictures depend on
the caption; training the random text encoder with the UNet brought the backgrounds and most colours. Adding
diffusers' pooled-text path to the UNet (`addition_embed_type="text"`, as SDXL adds its pooled text) scored
4/12 with the same steps, so it is not used.

Second version (whole-word tokens for every caption word and a 16-token context, UNet 800 steps): **9/12** with
DPM++ 2M at CFG 7.5 (8/12 at CFG 4) where the first build of the 1100-step version scored 0/12 on another machine
(its 6/12 did not reproduce); DDIM 25 steps still scores 1/12. Built in 1182 s on a 2-core machine where a UNet
step takes 1.1 s (about twice the machine the 12 min was measured on).

Third version (recipe 3, the same weights): the scheduler config says `clip_sample: false`, as SD's configs do.
DDIM's low score was diffusers' DDIMScheduler clipping the predicted x0 to [-1, 1] (its default, made for pixels)
on latents of unit standard deviation, which cuts the colours: on one build, DDIM 2/12 with clipping and 11/12
without, the same as Euler and PLMS, DPM++ 2M 12/12. That build took 373 s on 2 idle cores where a UNet step takes
0.41 s. Tried there for a shorter build, neither kept: 600 UNet steps (292 s, 6/12 on every sampler); a VAE that
downsamples 4x (16x16 latents, a UNet step 3.4x cheaper) scored 5/12 at 800 steps (132 s) and 4/12 at 2000 (255 s),
green and yellow confused (its reconstruction loss 0.076 against 0.024).

Progress lines go to `log` (the Environment tab's prepare log).
The result is a normal diffusers pipeline folder `<data-dir>/models/tiny-sd-shapes` with the marker file,
built in a staging folder like the other bundled models.

    ensure_tiny_sd_shapes(data_dir=None, log=print, vae_steps=VAE_STEPS, unet_steps=UNET_STEPS, pool=POOL, batch=BATCH) -> Path
    tiny_sd_shapes_status(data_dir=None) -> {"ready", "path", "detail", "detail_zh", "command"}
    train_shapes(pipe, vae_steps, unet_steps, batch=BATCH, seed=SEED, log=print) -> dict of losses
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
from backends.bundled.tiny_sd import REQUIRED, SEED
from backends.common import paths

VAE_STEPS = 600
UNET_STEPS = 800
VAE_BATCH = 8
BATCH = 16
POOL = 1024  # pictures rendered once and cycled through
CAPTION_DROP = 0.1
VAE_CROP = 32     # the VAE trains on random crops of this side (0 = whole pictures): 4x cheaper a step
UNET_LR = 1.5e-3
PREDICTION = "v_prediction"  # the UNet's target (SD 2.x's); "epsilon" as SD 1.x
BUILD_MINUTES = "10–20"  # measured with the defaults on 2 idle cores: 20 min where a UNet step takes 1.1 s, about
# half that on a machine twice as fast (the Environment tab and the CLI say it)
RECIPE = 3  # the build recipe's version in the marker: a folder of an older recipe is offered for a rebuild
# (3: the scheduler config says clip_sample false, so DDIM no longer clips the latents)
MAX_TOKENS = 16  # the tokenizer's context: a caption is at most 7 tokens, so few padding tokens dilute the
# cross-attention (77, CLIP's, left 70 padding tokens beside 3-7 caption tokens)
EMA_DECAY = 0.999  # the saved UNet and text encoder are the EMA of their weights (diffusers' EMAModel); 0 = off


def vocabulary() -> tuple[str, ...]:
    """The tiny tokenizer's whole words plus every word of the shapes captions, so each is one token (as in real
    CLIP's 49k vocabulary; the tiny tokenizer otherwise spells "yellow" in six byte tokens)."""
    from backends.bundled.tiny_sd import MERGE_WORDS
    from backends.data import shapes_images as si

    words = [w for c in si.all_captions() for w in c.split()]
    return tuple(dict.fromkeys([*MERGE_WORDS, *words]))


def _pool(n: int, seed: int):
    import numpy as np
    import torch

    from backends.data import shapes_images

    caps, imgs = [], []
    for text, img in shapes_images.samples(n, seed):
        caps.append(text)
        imgs.append(np.asarray(img, dtype=np.float32))
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) / 127.5 - 1.0
    return caps, x


def _eta(done: int, total: int, t0: float) -> str:
    el = time.time() - t0
    left = el / max(done, 1) * (total - done)
    return f"{el:.0f} s, ETA {left / 60:.1f} min"


def train_shapes(pipe, vae_steps: int = VAE_STEPS, unet_steps: int = UNET_STEPS, batch: int = BATCH,
                 seed: int = SEED, log: Log = print, pool: int = POOL) -> dict:
    """Train pipe.vae then pipe.unet in place on the shapes set; returns the last smoothed losses."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler

    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    caps, x = _pool(pool, seed)
    every = max(1, min(vae_steps, unet_steps, 100) // 4) if min(vae_steps, unet_steps) else 50
    out: dict = {}

    # 1. VAE
    vae = pipe.vae
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0)
    t0, ema = time.time(), None
    for step in range(1, vae_steps + 1):
        xb = x[torch.randint(0, len(x), (min(batch, VAE_BATCH),), generator=g)]
        if VAE_CROP:
            i, j = (int(v) for v in torch.randint(0, x.shape[-1] - VAE_CROP + 1, (2,), generator=g))
            xb = xb[:, :, i:i + VAE_CROP, j:j + VAE_CROP]
        post = vae.encode(xb).latent_dist
        rec = vae.decode(post.sample(generator=g)).sample  # a sample, so the posterior's spread is learnt too
        loss = F.mse_loss(rec, xb) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ema = loss.item() if ema is None else 0.9 * ema + 0.1 * loss.item()
        if step % every == 0 or step == vae_steps:
            log(f"shapes VAE step {step}/{vae_steps} loss {ema:.4f} ({_eta(step, vae_steps, t0)})")
    out["vae_loss"] = ema
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():
        lat = torch.cat([vae.encode(x[i:i + 64]).latent_dist.mean for i in range(0, len(x), 64)])
    scale = float(1.0 / lat.std())
    vae.register_to_config(scaling_factor=scale)
    log(f"shapes VAE latents std {lat.std():.3f}: scaling_factor {scale:.4f}")
    lat = lat * scale

    # 2. UNet and text encoder (the random encoder, frozen, gives captions too alike: learnt together, it
    # tells the UNet apart "red" from "blue" within a few hundred steps)
    te, tok = pipe.text_encoder, pipe.tokenizer
    te.requires_grad_(True)
    te.train()
    names = sorted(set(caps)) + [""]
    ids = tok(names, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids
    index = {c: i for i, c in enumerate(names)}
    cap_idx = torch.tensor([index[c] for c in caps])
    pipe.scheduler.register_to_config(prediction_type=PREDICTION)  # what the saved pipeline samples with
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    unet = pipe.unet
    unet.train()
    params = list(unet.parameters()) + list(te.parameters())
    opt = torch.optim.AdamW(params, lr=UNET_LR, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 100) * max(
        0.1, 1 - s / max(unet_steps, 1)))
    averaged = None
    if EMA_DECAY:
        from diffusers.training_utils import EMAModel

        averaged = EMAModel(params, decay=EMA_DECAY, use_ema_warmup=True, power=2 / 3)
    t0, ema = time.time(), None
    for step in range(1, unet_steps + 1):
        sel = torch.randint(0, len(x), (batch,), generator=g)
        z = lat[sel]
        ci = cap_idx[sel].clone()
        ci[torch.rand(batch, generator=g) < CAPTION_DROP] = index[""]
        noise = torch.randn(z.shape, generator=g)
        ts = torch.randint(0, noise_sched.config.num_train_timesteps, (batch,), generator=g)
        uniq, inv = torch.unique(ci, return_inverse=True)  # each caption of the batch encoded once
        cond = te(ids[uniq])[0][inv]
        pred = unet(noise_sched.add_noise(z, noise, ts), ts, encoder_hidden_states=cond).sample
        target = noise_sched.get_velocity(z, noise, ts) if PREDICTION == "v_prediction" else noise
        loss = F.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if averaged is not None:
            averaged.step(params)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        if step % (every * 2) == 0 or step == unet_steps:
            log(f"shapes UNet step {step}/{unet_steps} loss {ema:.4f} ({_eta(step, unet_steps, t0)})")
    if averaged is not None:
        averaged.copy_to(params)
    unet.eval()
    te.eval()
    te.requires_grad_(False)
    out["unet_loss"] = ema
    return out


def _current(target: Path) -> bool:
    """Complete and built by this recipe (an older recipe's folder still loads, but draws the wrong colours)."""
    return is_ready(target, REQUIRED) and (read_marker(target).get("source") or {}).get("recipe") == RECIPE


def tiny_sd_shapes_status(data_dir=None) -> dict:
    """What is prepared, from the files alone: keys ready, path, detail (detail_zh), command."""
    dd = paths.data_dir(data_dir)
    target = paths.tiny_sd_shapes_dir(dd)
    status = {"ready": False, "path": str(target), "command": prepare_command(dd, "shapes"), "optional": True}
    if _current(target):
        m = read_marker(target)
        status.update(ready=True,
                      detail=f"ready: the tiny pipeline trained on the shapes pictures ({m.get('seconds', '?')} s, "
                             f"UNet loss {m.get('losses', {}).get('unet_loss', 0):.3f})",
                      detail_zh=f"就绪：在形状图片上训练过的微型管线（{m.get('seconds', '?')} 秒，"
                                f"去噪网络损失 {m.get('losses', {}).get('unet_loss', 0):.3f}）")
    elif not target.exists():
        status.update(detail="optional, not prepared: teaches the tiny pipeline to draw coloured shapes, so the "
                             f"SD demo's images mean something (≈{BUILD_MINUTES} min on 2 idle cores, once)",
                      detail_zh=f"可选，尚未准备：教微型管线画彩色形状，让 SD 演示的图像有意义（2 核空闲机器上约 "
                                f"{BUILD_MINUTES} 分钟，仅一次）")
    elif missing := missing_files(target, REQUIRED):
        status.update(detail=f"incomplete (missing {', '.join(missing)}); prepare it again",
                      detail_zh=f"不完整（缺少 {', '.join(missing)}）；请重新准备")
    elif is_ready(target, REQUIRED):
        status.update(detail=f"built by an older shapes recipe, whose colours came out wrong with some samplers; "
                             f"prepare it again (≈{BUILD_MINUTES} min on 2 idle cores)",
                      detail_zh=f"由旧版形状配方生成，部分采样器下颜色画错；请重新准备（2 核空闲机器上约 {BUILD_MINUTES} 分钟）")
    else:
        status.update(detail="made by another version of the studio; prepare it again",
                      detail_zh="由其他版本的工作室生成；请重新准备")
    return status


def ensure_tiny_sd_shapes(data_dir=None, log: Log = print, vae_steps: int = VAE_STEPS,
                          unet_steps: int = UNET_STEPS, pool: int = POOL, batch: int = BATCH) -> Path:
    """Return the shapes pipeline folder, training it first if needed (offline, ≈BUILD_MINUTES). Idempotent."""
    dd = paths.data_dir(data_dir)
    target = paths.tiny_sd_shapes_dir(dd)
    if _current(target):
        return target
    with build_lock(target, log):
        if _current(target):
            return target
        import diffusers
        import torch

        from backends.bundled.tiny_sd import build_pipeline

        t0 = time.time()
        log(f"teaching the tiny SD pipeline to draw shapes (VAE {vae_steps} steps, UNet {unet_steps} steps, "
            f"batch {batch}, {torch.get_num_threads()} threads) …")
        pipe = build_pipeline(SEED, words=vocabulary(), max_length=MAX_TOKENS)
        losses = train_shapes(pipe, vae_steps, unet_steps, batch=batch, log=log, pool=pool)
        with staged(target) as stage:
            pipe.save_pretrained(stage, safe_serialization=True)
            write_marker(stage, name=paths.TINY_SD_SHAPES_NAME,
                         source={"builder": __name__, "recipe": RECIPE, "seed": SEED, "vae_steps": vae_steps,
                                 "unet_steps": unet_steps, "batch": batch, "pool": pool, "vae_crop": VAE_CROP,
                                 "unet_lr": UNET_LR, "prediction": PREDICTION, "train_text": True,
                                 "max_tokens": MAX_TOKENS, "caption_words": True,
                                 "ema_decay": EMA_DECAY},
                         losses={k: round(v, 5) for k, v in losses.items()},
                         converted_with={"diffusers": diffusers.__version__, "torch": torch.__version__},
                         seconds=round(time.time() - t0, 1))
    log(f"tiny SD shapes ready: {target} ({folder_mb(target):.1f} MB); done in {time.time() - t0:.0f} s")
    return target
