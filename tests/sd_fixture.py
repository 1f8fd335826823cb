"""A stand-in for a finished sd_distill job (the training backend's output contract), made without training:
a random LoRA on the bundled tiny SD pipeline, saved with diffusers' `save_lora_weights`, plus its studio.json."""
from __future__ import annotations

import json
from pathlib import Path

LORA_FILE = "pytorch_lora_weights.safetensors"


def make_lora_result(base: Path, run_dir: Path, *, mode: str = "lora", seed: int = 0, scale: float = 0.3,
                     resolution: int = 64, guidance_scale: float = 7.5) -> Path:
    """Write `<run_dir>/output/` with a rank-4 LoRA on the UNet's attention (random, non-zero B) and studio.json;
    returns the output folder."""
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    out = Path(run_dir) / "output"
    out.mkdir(parents=True, exist_ok=True)
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, init_lora_weights="gaussian",
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(out, unet_lora_layers=layers, weight_name=LORA_FILE,
                                              safe_serialization=True)
    info = {"kind": "sd_distill", "status": "completed", "mode": mode, "base_model": str(base),
            "lora_file": LORA_FILE, "guidance_scale": guidance_scale, "resolution": resolution}
    if mode == "lcm_lora":
        info.update(scheduler="LCMScheduler", num_inference_steps=4, steps=300)  # as the backend writes: 300 trained
    (out / "studio.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out
