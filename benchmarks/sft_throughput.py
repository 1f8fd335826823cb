"""Real (non-pad) tokens/s of our SFT step vs a DeepSpeed-Chat-style step that pads every sample to max_seq_len.

    python benchmarks/sft_throughput.py [--data-dir DIR] [--batch 4] [--max-seq-len 512] [--steps 3] [--threads 2]

Same process, same model (the bundled SmolLM2-135M with the cpu-demo recipe's LoRA), same optimizer, same
batches of the demo set (mixed English/Chinese lengths), same step code (`SFTTrainer.training_step` + AdamW
step). The only difference is the collation: ours pads each batch to its longest sample (TRL's collator, as in
training); the reference pads every sample to max_seq_len like DeepSpeed-Chat's step 1
(`tokenizer(..., padding="max_length")`). Only real tokens (attention-mask ones) count in tokens/s.
The last line is machine-readable:

    sft_throughput ratio <ours/pad-to-max> (ours X tok/s, pad-to-max Y tok/s, ...)
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"),
                   help="studio data dir with the bundled SmolLM2 prepared")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-seq-len", type=int, default=512, help="the pad-to-max length (DeepSpeed-Chat: 512)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    return p.parse_args()


def main() -> int:
    a = parse()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    import torch

    torch.set_num_threads(a.threads)

    from backends.common import config as C
    from backends.common.metrics import count_real_tokens
    from backends.sft import SFTArgs, build_trainer, resolve

    run_dir = Path(a.data_dir) / "runs" / ".bench-sft-throughput"
    cfg = C.load_config(SFTArgs, ROOT / "presets" / "recipes" / "cpu-demo-smollm2.yaml", {
        "data_dir": a.data_dir, "run_dir": str(run_dir), "per_device_train_batch_size": a.batch,
        "max_seq_len": a.max_seq_len, "eval_ratio": 0}, kind="sft")
    r = resolve(cfg)
    trainer = build_trainer(cfg, r, log=lambda msg: print(f"[bench] {msg}", flush=True))
    model = trainer.model
    optimizer = trainer.create_optimizer()
    pad_id = trainer.processing_class.pad_token_id
    trainer.current_gradient_accumulation_steps = 1  # normally set by the training loop

    n = (a.warmup + a.steps) * a.batch
    examples = [trainer.train_dataset[i] for i in range(n)]  # fixed order: both variants see the same rows
    batches = [examples[i:i + a.batch] for i in range(0, n, a.batch)]

    def ours(rows):
        return trainer.data_collator(rows)  # TRL's collator: pads to the longest row of the batch

    def pad_to_max(rows):
        L = a.max_seq_len
        ids = torch.full((len(rows), L), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), L), dtype=torch.long)
        labels = torch.full((len(rows), L), -100, dtype=torch.long)
        for j, row in enumerate(rows):
            k = min(L, len(row["input_ids"]))
            ids[j, :k] = torch.tensor(row["input_ids"][:k])
            mask[j, :k] = 1
            labels[j, :k] = torch.tensor(row["labels"][:k])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def run(collate, name):
        times, tokens, widths = [], [], []
        for i, rows in enumerate(batches):
            batch = collate(rows)
            t0 = time.perf_counter()
            trainer.training_step(model, batch)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            real = count_real_tokens(batch)
            if i >= a.warmup:
                times.append(dt)
                tokens.append(real)
                widths.append(batch["input_ids"].shape[1])
            print(f"[bench] {name} step {i + 1}/{len(batches)}{' (warm-up)' if i < a.warmup else ''}: "
                  f"{tuple(batch['input_ids'].shape)} {real} real tokens {dt:.2f}s", flush=True)
        return {"tok_s": sum(tokens) / sum(times), "s_per_step": statistics.mean(times),
                "mean_width": statistics.mean(widths), "real_tokens": sum(tokens)}

    try:
        mine = run(ours, "ours (dynamic padding)")
        ref = run(pad_to_max, f"pad-to-max {a.max_seq_len}")
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    ratio = mine["tok_s"] / ref["tok_s"]
    mean_real = mine["real_tokens"] / (a.steps * a.batch)
    result = {"ratio": ratio, "ours": mine, "pad_to_max": ref, "batch": a.batch, "max_seq_len": a.max_seq_len,
              "steps": a.steps, "threads": a.threads, "mean_real_len": mean_real}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "sft_throughput.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"sft_throughput ratio {ratio:.2f} (ours {mine['tok_s']:.0f} tok/s at {mine['s_per_step']:.2f} s/step, "
          f"pad-to-max {ref['tok_s']:.0f} tok/s at {ref['s_per_step']:.2f} s/step, batch {a.batch}, "
          f"mean real length {mean_real:.0f} tokens, mean padded width {mine['mean_width']:.0f} vs {a.max_seq_len}, "
          f"{a.steps} timed steps, {a.threads} threads, SmolLM2-135M LoRA r={cfg.lora_r} fp32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
