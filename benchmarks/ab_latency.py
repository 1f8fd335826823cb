"""Chat A/B latency and memory: both answers of the A/B tab vs one plain `generate` of the same length.

    python benchmarks/ab_latency.py [--data-dir DIR] [--adapter DIR] [--max-new-tokens 64] [--repeats 3] [--threads 1]

Same process, same model (the bundled SmolLM2-135M; a LoRA adapter on it: the one given, else a fresh adapter
with non-zero random weights so its answers differ from the base), same prompt, greedy decoding.
  A/B     `backends.infer.chat.stream_pair` (base + fine-tuned from one copy of the weights, streamed,
          consumed to the end) in the mode the page picks (`pair_mode`: "parallel" on a CPU with two cores
          per torch thread, else "batch"), and, for the table, in each mode forced
  single  `model.generate` of the base alone, forced to the length of the longer A/B answer, at the torch
          thread count the A/B turn runs with (--threads, the UI's 1) and at twice it when the cores allow
          (a parallel A/B turn uses two cores, so the reference may use them too); the faster one counts
  floor   two plain single generates at once (the cost of two streams sharing the memory bus), for the table
Then peak RSS (ru_maxrss of a fresh child process) for one A/B turn from one copy of the weights vs two loaded
copies (the base, and a second base with the adapter merged).
The last line is machine-readable:

    ab_latency ratio <A/B seconds / single seconds> (...)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PROMPT = "Describe the sea in a few sentences."


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR") or str(ROOT / ".cache" / "test-data"))
    p.add_argument("--adapter", default="", help="a LoRA adapter folder on SmolLM2 (default: a fresh random one)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads of the A/B turn (the UI runs at 1)")
    p.add_argument("--child", choices=["one-copy", "two-copies"], help=argparse.SUPPRESS)
    return p.parse_args()


def make_adapter(base: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    with torch.no_grad():  # small enough to keep the answer fluent (and as long as the base's), big enough to change it
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.mul_(0.2)
    peft_model.save_pretrained(out)
    return out


def child(mode: str, base: str, adapter: str, max_new: int) -> None:
    """One A/B turn in a fresh process; prints its peak RSS in MiB."""
    import resource

    from backends.infer import chat

    settings = chat.GenSettings(max_new_tokens=max_new)
    b = chat.resolve_side(base)
    f = chat.resolve_side(adapter)
    if mode == "one-copy":
        _, tok, _, _ = chat.CACHE.get(f)
        text = chat.render([], PROMPT, "chat", tok)
        chat.answer_pair(chat.Pair(b, f, text, text), settings)
    else:
        from peft import PeftModel

        from backends.common import modeling

        tok = modeling.load_tokenizer(base)
        text = chat.render([], PROMPT, "chat", tok)
        plain = modeling.load_causal_lm(base)
        tuned = PeftModel.from_pretrained(modeling.load_causal_lm(base), adapter).merge_and_unload()
        for m in (plain, tuned):
            enc = tok(text, return_tensors="pt", add_special_tokens=False)
            m.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id)
    print(json.dumps({"rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    args = parse()
    import torch

    torch.set_num_threads(args.threads)
    from backends.common import paths
    from backends.infer import chat

    base = str(paths.smollm2_dir(args.data_dir))
    if args.child:
        child(args.child, base, args.adapter, args.max_new_tokens)
        return
    tmp = tempfile.TemporaryDirectory()
    adapter = args.adapter or str(make_adapter(base, Path(tmp.name) / "adapter"))
    settings = chat.GenSettings(max_new_tokens=args.max_new_tokens)
    b, f = chat.resolve_side(base), chat.resolve_side(adapter)
    model, tok, _, _ = chat.CACHE.get(f)
    plain, _, _, _ = chat.CACHE.get(b)
    text = chat.render([], PROMPT, "chat", tok)
    pair = chat.Pair(b, f, text, text)
    auto_mode = chat.pair_mode(model, settings)

    a_ans, b_ans = chat.answer_pair(pair, settings)  # warm-up (and the lengths)
    n = max(len(tok(a_ans, add_special_tokens=False)["input_ids"]),
            len(tok(b_ans, add_special_tokens=False)["input_ids"]))
    enc = tok(text, return_tensors="pt", add_special_tokens=False)
    budgets = [args.threads] + ([2 * args.threads] if chat.usable_cores() >= 2 * args.threads else [])

    def single(threads):
        def run():
            torch.set_num_threads(threads)
            try:
                with torch.no_grad():
                    plain.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False,
                                   pad_token_id=tok.pad_token_id)
            finally:
                torch.set_num_threads(args.threads)
        return run

    def ab(mode):
        def run():
            os.environ["STUDIO_AB_PAIR"] = mode
            try:
                chat.answer_pair(pair, settings)
            finally:
                os.environ.pop("STUDIO_AB_PAIR", None)
        return run

    def two_plain():  # the floor of "parallel": two plain generates at once, nothing shared but the weights
        import threading

        ts = [threading.Thread(target=single(args.threads)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    cases = {f"single@{t}": single(t) for t in budgets} | {f"A/B {m}": ab(m) for m in ("auto", "batch", "parallel")}
    if chat.usable_cores() >= 2 * args.threads:
        cases["2 singles at once"] = two_plain
    for fn in cases.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):  # interleaved, so drift hits every case alike
        for k, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    ref_key = min((k for k in med if k.startswith("single")), key=med.get)
    one_s, ab_s = med[ref_key], med["A/B auto"]

    rss = {}
    for mode in ("one-copy", "two-copies"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data-dir", args.data_dir, "--adapter",
                               adapter, "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        rss[mode] = json.loads(proc.stdout.strip().splitlines()[-1])["rss_mib"]
    print(f"A/B answers: {len(a_ans)} / {len(b_ans)} chars; longer one {n} tokens; torch threads {args.threads}, "
          f"usable cores {chat.usable_cores()}; the page's mode here: {auto_mode}")
    for k, v in med.items():
        print(f"  {k:<18} median {v:6.2f} s  ({v / one_s:.2f}x {ref_key})")
    print(f"peak RSS: one copy of the weights {rss['one-copy']:.0f} MiB, two loaded copies {rss['two-copies']:.0f} MiB")
    print(f"ab_latency ratio {ab_s / one_s:.2f} (A/B {auto_mode} {ab_s:.2f} s vs {ref_key} {one_s:.2f} s for {n} "
          f"tokens; peak RSS one copy {rss['one-copy']:.0f} MiB vs two copies {rss['two-copies']:.0f} MiB)")

if __name__ == "__main__":
    main()
