"""The memory estimator (app/estimator.py) against DeepSpeed's own estimators and real models."""
from __future__ import annotations

import contextlib
import io
import re

import pytest

from app import estimator as E
from backends.common.errors import FieldError

GiB = 2 ** 30
A100_80 = [{"name": "NVIDIA A100-SXM4-80GB", "memory_gb": 79.2}]
RTX4090 = [{"name": "NVIDIA GeForce RTX 4090", "memory_gb": 23.6}]


@pytest.fixture(scope="module")
def ds():
    from deepspeed.runtime.zero import stage3, stage_1_and_2

    return stage_1_and_2, stage3


# ---------------------------------------------------------------- DeepSpeed's numbers, same inputs

CASES = [(stage, offload, gpus, nodes) for stage in (2, 3) for offload in (False, True)
         for gpus in (1, 8) for nodes in (1, 2)]


@pytest.mark.parametrize("model", ["opt-1.3b", "13B"])
@pytest.mark.parametrize("stage, offload, gpus, nodes", CASES)
def test_full_finetune_model_states_equal_deepspeed(ds, model, stage, offload, gpus, nodes):
    stage12, stage3 = ds
    est = E.estimate(model, method="full", precision="bf16", zero_stage=stage, offload=offload,
                     num_gpus=gpus, num_nodes=nodes)
    P, LL = est.model.params, est.model.largest_layer_params
    if stage == 2:
        cpu, gpu = stage12.estimate_zero2_model_states_mem_needs(
            total_params=P, num_gpus_per_node=gpus, num_nodes=nodes, cpu_offload=offload,
            additional_buffer_factor=1.5)
    else:
        cpu, gpu, _ = stage3.estimate_zero3_model_states_mem_needs(
            total_params=P, largest_layer_params=LL, num_gpus_per_node=gpus, num_nodes=nodes,
            cpu_offload=offload, cpu_offload_params=offload, zero_init=True, additional_buffer_factor=1.5)
    assert est.model_states_bytes == gpu
    assert est.cpu_ram_bytes == cpu
    assert est.model_states_gb == gpu / GiB
    assert est.cpu_ram_gb == cpu / GiB
    # the three rows add up to DeepSpeed's total
    assert est.weights_gb + est.gradients_gb + est.optimizer_gb == pytest.approx(gpu / GiB, abs=1e-6)
    assert est.total_gb == pytest.approx(gpu / GiB + est.activations_gb)
    assert "DeepSpeed" in " ".join(est.formula)

    # and the same line of the table DeepSpeed's `_all_cold` function prints
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        if stage == 2:
            stage12.estimate_zero2_model_states_mem_needs_all_cold(P, gpus, nodes)
        else:
            stage3.estimate_zero3_model_states_mem_needs_all_cold(P, LL, gpus, nodes)
    # rows end with "offload_optimizer=none" or "offload_optimizer=<cpu>" (the enum's text varies)
    key = "offload_optimizer=" if stage == 2 else "offload_param="
    rows = [line for line in out.getvalue().splitlines() if key in line
            and (stage == 2 or line.endswith("zero_init=1"))
            and (f"{key}none" in line) != offload
            and (stage == 2 or offload or "offload_optimizer=none" in line)]
    assert len(rows) == 1, out.getvalue()
    row = rows[0]
    cpu_txt, gpu_txt = re.findall(r"([\d.]+)GB", row)
    assert f"{est.cpu_ram_gb:.2f}" == cpu_txt
    assert f"{est.model_states_gb:.2f}" == gpu_txt


@pytest.mark.parametrize("stage", [0, 1])
def test_own_formulas_agree_with_deepspeed_on_one_gpu(stage):
    """ZeRO-0/1 use the same 2 + 18 bytes per parameter: on one GPU they equal ZeRO-2."""
    z = E.estimate("opt-1.3b", zero_stage=stage)
    z2 = E.estimate("opt-1.3b", zero_stage=2)
    assert z.model_states_bytes == z2.model_states_bytes == 20 * z.model.params
    assert z.cpu_ram_bytes == z2.cpu_ram_bytes


def test_fp16_equals_bf16_and_fp32_differs():
    bf = E.estimate("opt-1.3b", precision="bf16", zero_stage=2)
    fp = E.estimate("opt-1.3b", precision="fp16", zero_stage=2)
    f32 = E.estimate("opt-1.3b", precision="fp32", zero_stage=0)
    assert bf.model_states_bytes == fp.model_states_bytes
    assert f32.model_states_bytes == 16 * f32.model.params        # 4 weights + 4 grads + 8 Adam
    assert f32.activations_gb > bf.activations_gb


# ------------------------------------------------------------------------------ relative behaviour

def test_lora_needs_far_less_than_full():
    full = E.estimate("opt-1.3b", method="full", zero_stage=0, micro_batch=4)
    lora = E.estimate("opt-1.3b", method="lora", lora_rank=8, zero_stage=0, micro_batch=4)
    assert lora.trainable_params == 8 * 24 * 8 * 2048              # 8·r·h·L for q, k, v, o
    assert lora.trainable_params < 0.01 * full.trainable_params
    assert lora.model_states_gb < 0.2 * full.model_states_gb
    # 6 + 12 bytes per trainable parameter
    assert (lora.gradients_gb + lora.optimizer_gb) * GiB == pytest.approx(18 * lora.trainable_params)
    assert lora.total_gb < 0.5 * full.total_gb
    assert lora.activations_gb == full.activations_gb


def test_lora_param_count_matches_peft():
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=128, vocab_size=300)
    torch.manual_seed(0)
    model = get_peft_model(LlamaForCausalLM(cfg),
                           LoraConfig(r=4, target_modules=list(E.LORA_TARGETS), lora_dropout=0.0))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    spec = E.ModelSpec("tiny", 0, 0, 2, 64, 4, 2, 16, 300, "test")
    assert E._lora_params(spec, 4) == trainable


def test_zero3_on_8_gpus_needs_less_per_gpu_than_zero0():
    z0 = E.estimate("llama-2-7b", zero_stage=0, num_gpus=8)
    z3 = E.estimate("llama-2-7b", zero_stage=3, num_gpus=8)
    assert z3.model_states_gb < z0.model_states_gb / 4
    assert z3.total_gb < z0.total_gb
    assert z3.activations_gb == z0.activations_gb     # activations are per GPU, not partitioned


def test_gradient_checkpointing_cuts_activations():
    off = E.estimate("llama-2-7b", micro_batch=4, seq_len=2048)
    on = E.estimate("llama-2-7b", micro_batch=4, seq_len=2048, grad_checkpointing=True)
    assert on.activations_gb < off.activations_gb / 5
    # Korthikanti: s·b·h·(34 + 5·a·s/h) per layer + logits s·b·V·10 (half precision)
    s, b, h, a, L, V = 2048, 4, 4096, 32, 32, 32000
    assert off.activations_gb * GiB == pytest.approx(L * s * b * h * (34 + 5 * a * s / h) + s * b * V * 10)


# ---------------------------------------------------------------------------------------- verdicts

@pytest.mark.parametrize("stage", [0, 2])
def test_1_3b_full_bf16_fits_on_one_a100_80(stage):
    est = E.estimate("opt-1.3b", precision="bf16", zero_stage=stage, gpus=A100_80, host_ram_gb=200)
    assert est.fits is True
    assert est.verdict.startswith(f"fits on 1 × A100-SXM4 80 GB with ZeRO-{stage}")
    planned = E.estimate("1.3B", precision="bf16", zero_stage=stage, target_gpu="A100 80GB")
    assert planned.fits is True
    assert planned.verdict.startswith(f"fits on 1 × A100 80 GB with ZeRO-{stage}")


def test_13b_full_does_not_fit_on_one_4090_and_suggests_lora_or_zero3_offload():
    est = E.estimate("facebook/opt-13b", precision="bf16", zero_stage=0, gpus=RTX4090, host_ram_gb=512)
    assert est.fits is False
    assert est.verdict.startswith("does not fit on 1 × RTX 4090 24 GB")
    assert "ZeRO-3 offload" in est.verdict and "LoRA" in est.verdict
    for plan in est.suggestions:     # every suggestion was re-estimated and fits
        assert "ZeRO-3 offload" in plan or "LoRA" in plan
    md = E.to_markdown(est)
    assert "❌" in md and "does not fit" in md


def test_suggestions_respect_host_ram():
    # 13B ZeRO-3 offload of all states needs ≈ 323 GB host RAM: with 64 GB only LoRA + offload remains
    est = E.estimate("opt-13b", zero_stage=0, gpus=RTX4090, host_ram_gb=64)
    assert est.fits is False and est.suggestions
    assert all(s.startswith("LoRA") for s in est.suggestions)


def test_no_gpu_verdict_mentions_ram():
    est = E.estimate("smollm2-135m", precision="fp32", gpus=[], host_ram_gb=7.5)
    assert est.fits is True
    assert est.verdict.startswith("no GPU detected: on CPU this needs ≈ ")
    assert "GB of RAM (8 GB available)" in est.verdict
    big = E.estimate("opt-13b", gpus=[], host_ram_gb=16)
    assert big.fits is False and "not enough RAM" in big.verdict
    assert "RAM" in E.to_markdown(big)


def test_host_ram_shortfall_is_reported():
    est = E.estimate("opt-13b", zero_stage=3, offload=True, gpus=A100_80, host_ram_gb=32)
    assert est.fits is False
    assert "host RAM" in est.verdict


def test_fewer_gpus_detected_than_set():
    est = E.estimate("opt-1.3b", zero_stage=2, num_gpus=8, gpus=A100_80, host_ram_gb=500)
    assert "8 GPUs per node are set but 1 is detected" in est.verdict


def test_markdown_render():
    md = E.to_markdown(E.estimate("opt-1.3b", zero_stage=2, target_gpu="A100 80GB"))
    for row in ("| Weights |", "| Gradients |", "| Optimizer states |", "| Activations |",
                "| **Total per GPU** |", "Host RAM", "fits on 1 × A100 80 GB with ZeRO-2",
                "estimate_zero2_model_states_mem_needs", "Korthikanti", "GB/3", "GB/6"):
        assert row in md, row


# ---------------------------------------------------------------------------------- model inputs

@pytest.mark.parametrize("text, params", [("1.3B", 1_300_000_000), ("350m", 350_000_000),
                                          ("7b", 7_000_000_000), ("135M", 135_000_000),
                                          ("1300000000", 1_300_000_000)])
def test_parse_size(text, params):
    assert E.parse_size(text) == params
    spec = E.parse_model(text)
    assert spec.params == params and spec.layers > 0 and spec.hidden > 0
    assert "borrowed" in spec.source


@pytest.mark.parametrize("text, key", [("opt-1.3b", "opt-1.3b"), ("facebook/opt-13b", "opt-13b"),
                                       ("meta-llama/Llama-2-7b-hf", "llama-2-7b"),
                                       ("HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m"),
                                       ("Qwen/Qwen2.5-0.5B-Instruct", "qwen2.5-0.5b"),
                                       ("OPT-350M", "opt-350m")])
def test_known_names(text, key):
    assert E.parse_model(text) == E.MODEL_TABLE[key]


def _meta_count(cfg):
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg)
    return sum(p.numel() for p in model.parameters())


def test_table_matches_real_configs():
    from transformers import LlamaConfig, OPTConfig, Qwen2Config

    cfgs = {
        "opt-1.3b": OPTConfig(num_hidden_layers=24, hidden_size=2048, num_attention_heads=32, ffn_dim=8192,
                              vocab_size=50272, word_embed_proj_dim=2048),
        "llama-2-7b": LlamaConfig(num_hidden_layers=32, hidden_size=4096, num_attention_heads=32,
                                  num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                                  tie_word_embeddings=False),
        "smollm2-135m": LlamaConfig(num_hidden_layers=30, hidden_size=576, num_attention_heads=9,
                                    num_key_value_heads=3, intermediate_size=1536, vocab_size=49152,
                                    tie_word_embeddings=True),
        "qwen2.5-0.5b": Qwen2Config(num_hidden_layers=24, hidden_size=896, num_attention_heads=14,
                                    num_key_value_heads=2, intermediate_size=4864, vocab_size=151936,
                                    tie_word_embeddings=True),
    }
    for name, cfg in cfgs.items():
        assert _meta_count(cfg) == E.MODEL_TABLE[name].params, name


@pytest.mark.parametrize("tied", [True, False])
def test_local_folder_config_only(tmp_path, tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=3, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=96, vocab_size=500, tie_word_embeddings=tied)
    cfg.save_pretrained(tmp_path)
    real = sum(p.numel() for p in LlamaForCausalLM(cfg).parameters())
    spec = E.parse_model(str(tmp_path))
    assert spec.params == real
    assert (spec.layers, spec.hidden, spec.heads, spec.kv_heads, spec.vocab) == (3, 64, 4, 2, 500)
    assert "meta device" in spec.source
    est = E.estimate(str(tmp_path), method="lora", lora_rank=2)
    assert est.trainable_params == 2 * 3 * (4 * 64 + 2 * 64 + 2 * 32)


def test_local_folder_with_safetensors(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, num_key_value_heads=4,
                      intermediate_size=64, vocab_size=300, tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(tmp_path)
    spec = E.parse_model(str(tmp_path / "config.json"))
    assert spec.params == sum(p.numel() for p in model.parameters())
    assert spec.largest_layer_params == 300 * 32            # the embedding, as DeepSpeed would count it
    assert "safetensors" in spec.source


# ------------------------------------------------------------------------------------ bad inputs

BAD = [
    ("model", {"model": ""}, "empty"),
    ("model", {"model": "abc"}, "'abc' is not a local folder"),
    ("model", {"model": "-1"}, "must be positive"),
    ("model", {"model": "0B"}, "must be positive"),
    ("model", {"model": "7"}, "no unit"),
    ("model", {"model": "/no/such/folder"}, "does not exist"),
    ("num_gpus", {"num_gpus": "0"}, "must be ≥ 1, got 0"),
    ("num_gpus", {"num_gpus": "abc"}, "whole number"),
    ("num_gpus", {"num_gpus": "-1"}, "must be ≥ 1, got -1"),
    ("num_nodes", {"num_nodes": ""}, "empty"),
    ("micro_batch", {"micro_batch": ""}, "empty"),
    ("micro_batch", {"micro_batch": "2.5"}, "whole number"),
    ("seq_len", {"seq_len": "-1"}, "must be ≥ 1"),
    ("seq_len", {"seq_len": "abc"}, "whole number"),
    ("lora_rank", {"method": "lora", "lora_rank": "0"}, "must be ≥ 1"),
    ("lora_rank", {"method": "lora", "lora_rank": "abc"}, "whole number"),
    ("zero_stage", {"zero_stage": "4"}, "must be ≤ 3"),
    ("precision", {"precision": "int8"}, "bf16, fp16, fp32"),
    ("method", {"method": "qlora"}, "full, lora"),
    ("offload", {"zero_stage": 0, "offload": True}, "ZeRO stage 1, 2 or 3"),
    ("target_gpu", {"target_gpu": "Z80"}, "unknown GPU"),
]


@pytest.mark.parametrize("field, kwargs, message", BAD,
                         ids=[f"{b[0]}-{list(b[1].values())[-1]}" for b in BAD])
def test_bad_inputs_name_the_field(field, kwargs, message):
    args = {"model": "opt-1.3b", **kwargs}
    with pytest.raises(FieldError) as err:
        E.estimate(**args)
    assert err.value.field == field
    assert message in err.value.message


def test_folder_without_config_json(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(FieldError) as err:
        E.estimate(str(tmp_path))
    assert err.value.field == "model"
    assert f"{tmp_path} has no config.json" in err.value.message
    assert "Hugging Face model folder" in err.value.message


def test_gradio_strings_are_accepted():
    est = E.estimate(" opt-1.3b ", method="LoRA", lora_rank="16", precision="BF16", zero_stage="3",
                     offload="true", num_gpus="8", num_nodes="2", micro_batch="4", seq_len="1,024",
                     grad_checkpointing="on")
    assert (est.method, est.lora_rank, est.zero_stage, est.offload, est.num_gpus, est.num_nodes,
            est.micro_batch, est.seq_len, est.grad_checkpointing) == ("lora", 16, 3, True, 8, 2, 4, 1024,
                                                                      True)
    assert est.plan() == "LoRA r=16 + ZeRO-3 offload + gradient checkpointing"


def test_ppo_holds_four_models_or_two_base_copies_with_lora():
    full = E.estimate_ppo("opt-1.3b", "opt-350m", precision="bf16")
    lora = E.estimate_ppo("opt-1.3b", "opt-350m", 128, 8, precision="bf16")
    a, c = full.actor.model.params, full.critic.model.params
    assert full.base_copies == 4 and lora.base_copies == 2
    assert full.frozen_gb == pytest.approx(2 * (a + c) / GiB) and lora.frozen_gb == 0
    assert full.total_gb == pytest.approx(full.actor.total_gb + full.critic.total_gb + full.frozen_gb)
    assert lora.total_gb < 0.5 * full.total_gb
    assert "4 copies of base weights" in full.to_markdown() and "2 copies" in lora.to_markdown()
    with pytest.raises(FieldError) as e:
        E.estimate_ppo("opt-1.3b", "opt-350m", -1)
    assert e.value.field == "actor_lora_dim"
