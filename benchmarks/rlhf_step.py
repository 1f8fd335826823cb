"""One PPO iteration (backends/rlhf/ppo.py) split into its parts, against plain references, on one small setup.

    python benchmarks/rlhf_step.py [--data-dir DIR] [--prompts 4] [--max-prompt 96] [--max-answer 32]
                                   [--iters 2] [--threads 1]

Setup: the bundled SmolLM2-135M as the actor (LoRA r=8) and as the reward model / critic (the same weights with a
new one-label score head, LoRA r=8), the bundled prompts in the chat template. Measured, after one warm-up iteration:

- seconds per iteration in generation / scoring + reference + values / training (the loop's own functions:
  ``generate_experience`` and ``train_rlhf``);
- **generation ratio**: our generation vs one plain batched ``generate`` of the same prompts with a plain HF
  model of the same weights, same sampling seed, same lengths (the adapter starts at zero, so the tokens agree);
- **training**: real (non-pad) tokens/s of our training step (batches padded to their longest prompt and answer)
  vs the same step on the same experience padded like DS-Chat (prompts to max_prompt, answers to max_answer);
- **peak RSS** of one iteration with LoRA on both models (two copies of base weights) vs full fine-tuning (four
  copies + optimizer states), each in its own subprocess.

The last line is machine-readable: ``rlhf_step ratio <our generation / plain generate> (...)``.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--prompts", type=int, default=4, help="prompts per generation batch")
    p.add_argument("--max-prompt", type=int, default=96)
    p.add_argument("--max-answer", type=int, default=32)
    p.add_argument("--iters", type=int, default=2, help="timed iterations (after one warm-up)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rss-child", choices=["lora", "full"], help=argparse.SUPPRESS)
    p.add_argument("--rm", default="", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def make_rm(smollm2: Path, out: Path) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    m = AutoModelForSequenceClassification.from_pretrained(str(smollm2), num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(smollm2))
    m.config.pad_token_id = tok.pad_token_id
    m.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def setup(args, rm: Path, lora: bool):
    from backends.common import data as datalib
    from backends.common import runner
    from backends.rlhf import engine as englib
    from backends.rlhf import ppo

    smollm2 = Path(args.data_dir).resolve() / "models" / "smollm2-135m-instruct"
    r = 8 if lora else 0
    cfg = runner.ensure_args(ppo.PPOArgs, {
        "model_name_or_path": str(smollm2), "reward_model": str(rm), "run_dir": tempfile.mkdtemp(),
        "max_prompt_seq_len": args.max_prompt, "max_answer_seq_len": args.max_answer,
        "per_device_generation_batch_size": args.prompts, "per_device_training_batch_size": args.prompts,
        "actor_lora_dim": r, "critic_lora_dim": r, "num_warmup_steps": 0, "lr_scheduler_type": "constant",
        "eval_ratio": 0.0})
    res = ppo.resolve(cfg)
    eng = englib.build(cfg, res, total_iters=100, log=lambda *_: None)
    prompts = list(datalib.load_prompt_data(cfg, res.datasets, eng.tokenizer, phase=2, log=lambda *_: None)[0]
                   ["prompt"])
    return cfg, eng, prompts


def pad_like_dschat(exp: dict, pad_id: int, max_prompt: int, max_answer: int) -> dict:
    """The same experience with every prompt left-padded to max_prompt and every answer right-padded to max_answer
    (DS-Chat's DataCollatorRLHF + its generation to max_length): the same real tokens, more padding."""
    import torch
    import torch.nn.functional as F

    P = exp["start"] + 1
    S = exp["input_ids"].shape[1]
    left, right = max_prompt - P, max_answer - (S - P)
    out = dict(exp)
    out["input_ids"] = F.pad(exp["input_ids"], (left, right), value=pad_id)
    out["attention_mask"] = F.pad(exp["attention_mask"], (left, right), value=0)
    for k in ("logprobs", "ref_logprobs", "values"):
        out[k] = F.pad(exp[k], (left, right), value=0.0)
    out["start"] = max_prompt - 1
    assert int(out["attention_mask"].sum()) == int(exp["attention_mask"].sum())
    return out if torch.is_tensor(out["input_ids"]) else out


def time_training(eng, cfg, exp) -> tuple[float, int]:
    from backends.rlhf import ppo

    t0 = time.perf_counter()
    _, _, ntok = ppo.train_rlhf(eng, exp, cfg)
    return time.perf_counter() - t0, ntok


def rss_child(args) -> None:
    """One warm-up + one iteration (generation, scoring, training); prints the peak RSS in MiB as JSON."""
    from backends.rlhf import ppo

    cfg, eng, prompts = setup(args, Path(args.rm), lora=args.rss_child == "lora")
    for i in range(2):
        exp = ppo.generate_experience(eng, prompts[i * args.prompts:(i + 1) * args.prompts], cfg, seed=i)
        ppo.train_rlhf(eng, exp, cfg)
    print(json.dumps({"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv=None) -> None:
    args = parse(argv)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    if args.rss_child:
        rss_child(args)
        return
    from backends.common import modeling
    from backends.rlhf import ppo

    tmp = Path(tempfile.mkdtemp())
    rm = make_rm(Path(args.data_dir).resolve() / "models" / "smollm2-135m-instruct", tmp / "rm")
    cfg, eng, prompts = setup(args, rm, lora=True)
    plain = modeling.load_causal_lm(str(Path(args.data_dir).resolve() / "models" / "smollm2-135m-instruct")).eval()
    tok = eng.tokenizer
    gen = score = train = plain_gen = 0.0
    tr_ours = tr_ds = 0.0
    tokens = 0
    lengths = []
    for i in range(args.iters + 1):
        batch = prompts[i * args.prompts:(i + 1) * args.prompts]
        t0 = time.perf_counter()
        exp = ppo.generate_experience(eng, batch, cfg, seed=100 + i)
        t_exp = time.perf_counter() - t0
        enc = tok(batch, return_tensors="pt", padding=True, add_special_tokens=False)
        torch.manual_seed(100 + i)
        t1 = time.perf_counter()
        with torch.no_grad():
            out = plain.generate(**enc, max_new_tokens=cfg.max_answer_seq_len, do_sample=True, top_k=0, top_p=1.0,
                                 temperature=1.0, use_cache=True, pad_token_id=tok.pad_token_id,
                                 eos_token_id=tok.eos_token_id)
        t_plain = time.perf_counter() - t1
        padded = pad_like_dschat(exp, tok.pad_token_id, cfg.max_prompt_seq_len, cfg.max_answer_seq_len)
        s_ours, n_ours = time_training(eng, cfg, exp)
        s_ds, n_ds = time_training(eng, cfg, padded)
        assert n_ours == n_ds
        if i == 0:
            continue  # warm-up
        gen += exp["gen_time"]
        score += t_exp - exp["gen_time"]
        plain_gen += t_plain
        train += s_ours
        tr_ours, tr_ds, tokens = tr_ours + s_ours, tr_ds + s_ds, tokens + n_ours
        lengths.append((out.shape[1] - enc["input_ids"].shape[1], exp["input_ids"].shape[1] - exp["start"] - 1))
    n = args.iters
    del eng, plain
    rss = {}
    for mode in ("lora", "full"):
        res = subprocess.run([sys.executable, __file__, "--rss-child", mode, "--rm", str(rm), "--data-dir",
                              args.data_dir, "--prompts", str(args.prompts), "--max-prompt", str(args.max_prompt),
                              "--max-answer", str(args.max_answer), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        rss[mode] = json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_mib"]
    gen_ratio = gen / plain_gen
    tps_ours, tps_ds = tokens / tr_ours, tokens / tr_ds
    print(f"{'part of one PPO iteration':<40}{'s/iter':>9}")
    print(f"{'generation (ours)':<40}{gen / n:>9.2f}")
    print(f"{'  plain batched generate, same tokens':<40}{plain_gen / n:>9.2f}")
    print(f"{'scoring + reference + values':<40}{score / n:>9.2f}")
    print(f"{'training (ours)':<40}{train / n:>9.2f}")
    print(f"{'  training padded like DS-Chat':<40}{tr_ds / n:>9.2f}")
    print(f"answer lengths (plain, ours): {lengths}")
    print(f"training real tokens/s: ours {tps_ours:.1f} vs DS-Chat padding {tps_ds:.1f} ({tps_ours / tps_ds:.2f}x)")
    print(f"peak RSS: LoRA {rss['lora']:.0f} MiB vs full {rss['full']:.0f} MiB ({rss['lora'] / rss['full']:.2f}x)")
    print(f"rlhf_step ratio {gen_ratio:.2f} (generation ours {gen / n:.2f} s vs plain generate {plain_gen / n:.2f} s; "
          f"training {tps_ours / tps_ds:.2f}x the real tokens/s of DS-Chat padding; peak RSS LoRA/full "
          f"{rss['lora'] / rss['full']:.2f}; SmolLM2-135M actor + critic, {args.prompts} prompts, answers <= "
          f"{args.max_answer}, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
