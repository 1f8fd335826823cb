"""Reward-model step throughput: our collation (dynamic padding) vs DeepSpeed-Chat step 2's (every chosen and
rejected sequence padded to max_seq_len), in the same process, on the same model and the same pairs.

    python benchmarks/rm_throughput.py [--data-dir DIR] [--max-seq-len 256] [--pairs 4] [--steps 3] [--threads 1]

The model is the one the CPU demo recipe trains (the bundled SmolLM2-135M with a one-label score head and LoRA,
built by `backends.reward.build_trainer`), the pairs are the bundled demo_preference rows in the chat template.
One step = forward + backward of the pairwise loss (`StudioRewardTrainer.compute_loss`) on `--pairs` pairs
(2 x pairs sequences). Real tokens = the non-padding tokens (the same in both collations); the reported speed is
real tokens per second. DeepSpeed-Chat's DataCollatorReward stacks chosen then rejected, each padded to
max_seq_len; ours pads each batch to its longest sequence (TRL's DataCollatorForPreference). The last line is
machine-readable:

    rm_throughput ratio <ours tokens/s / dschat tokens/s> (...)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--max-seq-len", type=int, default=256, help="DS-Chat pads every sequence to this (its default 512)")
    p.add_argument("--pairs", type=int, default=4, help="preference pairs per step")
    p.add_argument("--steps", type=int, default=3, help="timed steps per collation (after one warm-up step)")
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args()


def dschat_collate(features: list[dict], pad_id: int, max_len: int) -> dict:
    """DeepSpeed-Chat's step-2 batch: chosen rows then rejected rows, each padded (right) to max_len."""
    import torch

    seqs = [f["chosen_ids"] for f in features] + [f["rejected_ids"] for f in features]
    ids = torch.full((len(seqs), max_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), max_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        s = s[:max_len]
        ids[i, :len(s)] = torch.tensor(s)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def time_steps(trainer, batches: list[dict]) -> tuple[float, int]:
    """(seconds, real tokens) of forward + backward over `batches` (the first one is a warm-up, not counted)."""
    model = trainer.model
    model.train()
    seconds, tokens = 0.0, 0
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:
            seconds += time.perf_counter() - t0
            tokens += int(batch["attention_mask"].sum())
    return seconds, tokens


def main() -> None:
    args = parse()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    from backends import reward
    from backends.common import runner

    with tempfile.TemporaryDirectory() as tmp:
        dd = Path(tmp)
        (dd / "models").symlink_to(Path(args.data_dir).resolve() / "models", target_is_directory=True)
        cfg = runner.ensure_args(reward.RewardArgs, {
            "model_name_or_path": "bundled:smollm2", "data_dir": str(dd), "run_dir": "runs/bench",
            "max_seq_len": args.max_seq_len, "eval_ratio": 0, "per_device_train_batch_size": args.pairs,
            "lora_dropout": 0.0, "seed": 1234})
        trainer = reward.build_trainer(cfg, reward.resolve(cfg), log=lambda m: None)
        data = trainer.train_dataset
        n = args.pairs * (args.steps + 1)
        feats = [data[i] for i in range(min(n, len(data)))]
        groups = [feats[i:i + args.pairs] for i in range(0, len(feats), args.pairs)]
        pad_id = trainer.processing_class.pad_token_id
        ours = [trainer.data_collator(g) for g in groups]
        ds = [dschat_collate(g, pad_id, args.max_seq_len) for g in groups]
        ours = [{k: v for k, v in b.items() if k in ("input_ids", "attention_mask")} for b in ours]
        s_ours, t_ours = time_steps(trainer, ours)
        s_ds, t_ds = time_steps(trainer, ds)
    assert t_ours == t_ds, (t_ours, t_ds)
    padded_ours = sum(b["input_ids"].numel() for b in ours[1:])
    padded_ds = sum(b["input_ids"].numel() for b in ds[1:])
    tps_ours, tps_ds = t_ours / s_ours, t_ds / s_ds
    print(f"{'collation':<28}{'s/step':>9}{'real tok/s':>12}{'padded tokens':>15}")
    print(f"{'ours (dynamic padding)':<28}{s_ours / args.steps:>9.2f}{tps_ours:>12.1f}{padded_ours:>15}")
    print(f"{'dschat (pad to ' + str(args.max_seq_len) + ')':<28}{s_ds / args.steps:>9.2f}{tps_ds:>12.1f}"
          f"{padded_ds:>15}")
    print(f"rm_throughput ratio {tps_ours / tps_ds:.2f} (ours {tps_ours:.1f} vs dschat {tps_ds:.1f} real tokens/s; "
          f"SmolLM2-135M + LoRA, {args.pairs} pairs/step, max_seq_len {args.max_seq_len}, {t_ours // args.steps} "
          f"real tokens/step, {args.threads} thread(s))")


if __name__ == "__main__":
    main()
