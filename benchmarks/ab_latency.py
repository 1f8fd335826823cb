"""Chat A/B latency and memory: both answers of the A/B tab vs one plain `generate` of the same length.

    python benchmarks/ab_latency.py [--data-dir DIR] [--adapter DIR] [--max-new-tokens 64] [--repeats 3] [--threads 2]

Same process, same model (the bundled SmolLM2-135M; a LoRA adapter on it: the one given, else a fresh adapter
with non-zero random weights so its answers differ from the base), same prompt, greedy decoding.
  A/B     `backends.infer.chat.stream_pair`: base (adapter disabled) + fine-tuned, streamed together from one
          copy of the weights (peft's mixed-adapter batch), consumed to the end
  single  `model.generate` of the base alone, forced to the length of the longer A/B answer
Then peak RSS (ru_maxrss of a fresh child process) for one A/B turn with the adapter toggling on one base vs
two loaded copies (the base, and a second base with the adapter merged).
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
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or 2))
    p.add_argument("--child", choices=["toggle", "two-copies"], help=argparse.SUPPRESS)
    return p.parse_args()


def make_adapter(base: str, out: Path) -> Path:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    peft_model.save_pretrained(out)
    return out


def child(mode: str, base: str, adapter: str, max_new: int) -> None:
    """One A/B turn in a fresh process; prints its peak RSS in MiB."""
    import resource

    from backends.infer import chat

    settings = chat.GenSettings(max_new_tokens=max_new)
    b = chat.resolve_side(base)
    f = chat.resolve_side(adapter)
    if mode == "toggle":
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
    text = chat.render([], PROMPT, "chat", tok)
    pair = chat.Pair(b, f, text, text)

    a_ans, b_ans = chat.answer_pair(pair, settings)  # warm-up (and the lengths)
    n = max(len(tok(a_ans, add_special_tokens=False)["input_ids"]),
            len(tok(b_ans, add_special_tokens=False)["input_ids"]))
    enc = tok(text, return_tensors="pt", add_special_tokens=False)

    def single():
        with torch.no_grad(), model.disable_adapter():
            model.generate(**enc, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)

    single()
    ab_t, one_t = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        t0 = time.perf_counter()
        chat.answer_pair(pair, settings)
        ab_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        single()
        one_t.append(time.perf_counter() - t0)
    ab_s, one_s = statistics.median(ab_t), statistics.median(one_t)

    rss = {}
    for mode in ("toggle", "two-copies"):
        proc = subprocess.run([sys.executable, __file__, "--child", mode, "--data-dir", args.data_dir, "--adapter",
                               adapter, "--max-new-tokens", str(args.max_new_tokens), "--threads", str(args.threads)],
                              capture_output=True, text=True, check=True, cwd=ROOT)
        rss[mode] = json.loads(proc.stdout.strip().splitlines()[-1])["rss_mib"]
    print(f"A/B answers: {len(a_ans)} / {len(b_ans)} chars; longer one {n} tokens; threads {args.threads}")
    print(f"A/B median {ab_s:.2f} s, single generate median {one_s:.2f} s over {args.repeats} repeats")
    print(f"peak RSS: adapter toggling {rss['toggle']:.0f} MiB, two loaded copies {rss['two-copies']:.0f} MiB")
    print(f"ab_latency ratio {ab_s / one_s:.2f} (A/B {ab_s:.2f} s vs single {one_s:.2f} s for {n} tokens; "
          f"peak RSS toggle {rss['toggle']:.0f} MiB vs two copies {rss['two-copies']:.0f} MiB)")


if __name__ == "__main__":
    main()
