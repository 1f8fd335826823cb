"""Chat A/B: the base model and a fine-tuned result answer the same prompt, streamed side by side.

Sides. A side is a model folder (`bundled:smollm2`, any HF folder), a training result (`runs/<job>/output`
holding a PEFT adapter or a full model, with its studio.json), or `job:<id>`.

Memory. When the fine-tuned side is a LoRA adapter on the chosen base, the base weights are loaded once.
The plain model answers for the base; the adapters go on a `PeftModel` built over a twin of its module tree
that holds the very same weight tensors (`_twin`: no copy), so the two sides can answer at the same time.
How one turn runs is `pair_mode`:
  parallel  (CPU, greedy, at least two cores per torch thread) two `generate` calls at once, one per core:
            a CPU pays nearly twice for a 2-row matmul (measured: MKL sgemm, 2 rows vs 1), so two 1-row
            streams finish sooner than one 2-row batch
  batch     (GPU, sampling, or one core) one `generate` call whose base row runs with the adapter disabled
            (peft's mixed-adapter batch, `adapter_names=["__base__", <adapter>]`): on a GPU the second row is
            nearly free, and sampled rows share one seeded stream
`STUDIO_AB_PAIR=batch|parallel` forces one (sampling always batches). `answer_one(..., adapter=False)`
answers an adapter side as its base through `PeftModel.disable_adapter()`. Two different models (a full
fine-tune, another base) run in two threads, each with its own model; models stay cached in a small LRU.

Sampling. Greedy by default. With sampling, one seed is set before the call; a mixed batch draws both rows
from one seeded stream, and two separate models run one after the other, each from the same seed, so
identical models give identical answers and a run can be repeated.
"""
from __future__ import annotations

import copy
import itertools
import json
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.common import config as cfglib
from backends.common import data as datalib
from backends.common import modeling, paths
from backends.common.errors import FieldError

MAX_NEW_TOKENS_LIMIT = cfglib.MAX_NEW_TOKENS_LIMIT
CACHE_SIZE = 3
STREAM_INTERVAL = 0.05  # seconds between pane updates at most (20 per second)


# ---------------------------------------------------------------------------------------- sides
@dataclass(frozen=True)
class Side:
    label: str            # what the page shows
    kind: str             # "model" (a plain model folder / full fine-tune) or "adapter"
    model_path: str       # the folder to load (for an adapter: its base)
    adapter_path: str = ""
    template: str = ""    # the template it was trained with ("" = unknown)

    @property
    def key(self) -> tuple[str, str]:
        return self.model_path, self.adapter_path


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return a == b


def resolve_side(value: str, data_dir=None, *, field: str = "model") -> Side:
    """A Side from what the user picked; FieldError names the field when it cannot be used."""
    v = str(value or "").strip()
    if not v:
        raise FieldError(field, "is empty: pick a model or a finished job's result")
    dd = paths.data_dir(data_dir)
    if v.startswith("job:"):
        job = v.split(":", 1)[1]
        out = modeling.job_output(v, dd, field=field)  # confined to runs/
        if not out.is_dir() or not any(out.iterdir()):
            raise FieldError(field, f"job {job} has no output at {out} (did it finish? see the Jobs tab)")
        v = str(out)
    p = Path(v).expanduser()
    if not p.is_absolute() and not v.startswith("bundled:") and (dd / p).exists():
        p = dd / p
    if p.is_dir() and (p / "adapter_config.json").is_file():
        info = modeling.read_studio_json(p)
        base = info.get("base_model") or json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path", "")
        base = modeling.resolve_model(base, dd, field=field)
        if not Path(base).is_dir() and info.get("base_model_ref"):  # made in another data dir: bundled:smollm2
            base = modeling.resolve_model(info["base_model_ref"], dd, field=field)
        if not Path(base).is_dir():
            raise FieldError(field, f"the adapter at {p} was trained on {base}, which is not a local folder here")
        return Side(_label(p, info), "adapter", str(Path(base).resolve()), str(p.resolve()), info.get("template", ""))
    path = modeling.resolve_model(v, dd, field=field)
    if not Path(path).is_dir():
        if p.parts[-1:] == ("output",) or "runs" in p.parts:
            raise FieldError(field, f"no training output at {v} (the job may have failed or been deleted)")
        raise FieldError(field, f"model folder not found: {v} (a local folder with config.json, or bundled:smollm2)")
    modeling.check_model_dir(path, field=field, original=v)
    info = modeling.read_studio_json(path)
    return Side(_label(Path(path), info) if info else v, "model", str(Path(path).resolve()), "",
                info.get("template", ""))


def _label(p: Path, info: dict) -> str:
    if p.name == "output" and p.parent.parent.name == "runs":
        return f"{p.parent.name} ({info.get('kind', 'result')}{', LoRA' if info.get('adapter') else ''})"
    return p.name


def check_pair(base: Side, tuned: Side) -> None:
    """An adapter must sit on the base it was trained on."""
    if tuned.kind == "adapter" and base.kind == "model" and not _same_path(tuned.model_path, base.model_path):
        raise FieldError("finetuned", f"the adapter {tuned.label} was trained on {tuned.model_path}, not on the "
                                      f"chosen base {base.model_path}; choose that base (or another result)")


# ---------------------------------------------------------------------------------------- cache
def placement() -> tuple[str, str]:
    """Where the A/B models run: the first GPU in half precision (bf16 where it is supported, else fp16) when
    torch sees one, else the CPU in fp32."""
    import torch

    if torch.cuda.is_available():
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "cpu", "fp32"


def _twin(model):
    """A second module tree over the same parameter and buffer tensors (nothing copied but the small Python
    objects): adapters injected into it leave `model` plain, and both can run at once."""
    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    return copy.deepcopy(model, memo)


class ModelCache:
    """Loaded models, least recently used dropped first. An entry is keyed by a model folder and holds the
    plain model, its tokenizer and, once an adapter on it is asked for, one `PeftModel` over a weight-sharing
    twin carrying every such adapter (one copy of the base weights); each of the two has its own lock."""

    def __init__(self, size: int = CACHE_SIZE):
        self.size = size
        self._d: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def _entry(self, model_path: str) -> dict:
        with self._lock:
            e = self._d.get(model_path)
            if e is not None:
                self._d.move_to_end(model_path)
                return e
        device, dtype = placement()
        model = modeling.load_causal_lm(model_path, dtype=dtype).to(device)
        model.eval()
        tok = modeling.load_tokenizer(model_path)
        e = {"model": model, "tok": tok, "lock": threading.Lock(),
             "peft": None, "adapters": {}, "peft_lock": threading.Lock()}
        with self._lock:
            self._d[model_path] = e
            while len(self._d) > self.size:
                self._d.popitem(last=False)
        return e

    def get(self, side: Side) -> tuple[Any, Any, str, threading.Lock]:
        """(model, tokenizer, adapter name or "", lock to hold while generating). A plain side gets the plain
        model; an adapter side gets the PeftModel (several adapters may be on it: name the one to use)."""
        e = self._entry(side.model_path)
        if not side.adapter_path:
            return e["model"], e["tok"], "", e["lock"]
        with e["peft_lock"]:
            name = e["adapters"].get(side.adapter_path)
            if name is None:
                from peft import PeftModel

                name = f"ab{len(e['adapters'])}"
                if e["peft"] is not None:
                    e["peft"].load_adapter(side.adapter_path, adapter_name=name)
                else:
                    e["peft"] = PeftModel.from_pretrained(_twin(e["model"]), side.adapter_path, adapter_name=name)
                e["peft"].eval()
                e["adapters"][side.adapter_path] = name
        return e["peft"], e["tok"], name, e["peft_lock"]

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{Path(k).name}" + (f" (+{len(v['adapters'])} adapter)" if v["adapters"] else "")
                    for k, v in self._d.items()]

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
        import gc

        gc.collect()


CACHE = ModelCache()


# ------------------------------------------------------------------------------------ settings
@dataclass
class GenSettings(cfglib.GenerationFields):
    """The generation fields (declared once in backends/common/config.py GenerationFields) plus how they go
    to `generate()`."""

    def validated(self) -> GenSettings:
        """Coerce and range-check every field (FieldError naming it); returns self."""
        return cfglib.validate_fields(self)

    def generate_kwargs(self) -> dict:
        kw: dict[str, Any] = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample,
                              "repetition_penalty": self.repetition_penalty}
        if self.do_sample:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        else:  # greedy: clear the sampling defaults a generation_config may carry (avoids warnings)
            kw.update(temperature=None, top_p=None, top_k=None)
        return kw


def pick_template(template: str, tuned: Side | None, tok) -> str:
    """'auto': the fine-tuned side's training template, else the chat template when the tokenizer has one."""
    t = (template or "auto").strip()
    if t == "auto":
        t = (tuned.template if tuned and tuned.template else "") or (
            "chat" if getattr(tok, "chat_template", None) else "dschat")
    if t not in datalib.TEMPLATES:
        raise FieldError("template", f"must be auto or one of {', '.join(datalib.TEMPLATES)}; got {template!r}")
    return t


def render(history: list[dict[str, str]], prompt: str, template: str, tok) -> str:
    """The text a side is given: its own history + the new user turn, in the training template. The same
    functions render training prompts (backends.common.data.parse_turns / format_prompt): a prompt in
    DS-Chat form (" Human: … Assistant:", from a prompts file saved that way) is read as its turns."""
    turns = [*history, *datalib.parse_turns(prompt)]
    return datalib.format_prompt(turns, template, tok)


def context_of(model) -> int | None:
    cfg = getattr(model, "config", None)
    n = getattr(cfg, "max_position_embeddings", None)
    return int(n) if isinstance(n, int) else None


def check_length(tok, model, texts: list[str], max_new_tokens: int) -> None:
    ctx = context_of(model)
    if ctx is None:
        return
    for text in texts:
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        if n >= ctx:
            raise FieldError("prompt", f"is {n} tokens with the history and template, longer than the model's "
                                       f"context of {ctx}; shorten it or Clear the history")
        if n + max_new_tokens > ctx:
            raise FieldError("max_new_tokens", f"{max_new_tokens} new tokens after a {n}-token prompt exceed the "
                                               f"model's context of {ctx}; use at most {ctx - n}")


# ----------------------------------------------------------------------------------- streaming
class _RowStreamer:
    """A transformers streamer for a batch: collects each row's new tokens (generate calls `put` with the
    prompt first, then once per step with one token per row) and posts (tag, row, token ids) to a queue."""

    def __init__(self, q: queue.Queue, tags: list[str], eos_ids: set[int]):
        self.q, self.tags, self.eos = q, tags, eos_ids
        self.prompt_seen = False
        self.ids: list[list[int]] = [[] for _ in tags]
        self.done = [False] * len(tags)

    def put(self, value) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, tok_id in enumerate(value.reshape(-1).tolist()):
            if self.done[row]:
                continue
            if tok_id in self.eos:
                self.done[row] = True
                continue
            self.ids[row].append(tok_id)
        self.q.put(("step", [list(x) for x in self.ids], self.tags))

    def end(self) -> None:
        self.q.put(("end", [list(x) for x in self.ids], self.tags))


class _StopOnEvent:
    """A StoppingCriteria that ends generation when the user presses Stop."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool)


def _eos_ids(tok, model) -> set[int]:
    ids = set()
    for v in (tok.eos_token_id, getattr(model.generation_config, "eos_token_id", None)):
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(int(x) for x in v)
    return ids


def _generate(model, tok, texts: list[str], settings: GenSettings, streamer, stop: threading.Event,
              adapter_names: list[str] | None = None) -> None:
    import torch
    from transformers import StoppingCriteriaList

    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    kw = settings.generate_kwargs()
    if adapter_names is not None:
        kw["adapter_names"] = adapter_names
    with torch.no_grad():
        model.generate(**enc, **kw, streamer=streamer, pad_token_id=tok.pad_token_id,
                       stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))


def _seed(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


@dataclass
class Pair:
    """The two requests of one A/B turn."""
    base: Side
    tuned: Side
    text_base: str
    text_tuned: str


PAIR_MODES = ("auto", "batch", "parallel")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pair_mode(model, settings: GenSettings) -> str:
    """'parallel' or 'batch': how an adapter and its own base answer one turn (see the module docstring)."""
    import torch

    want = os.environ.get("STUDIO_AB_PAIR", "auto").strip().lower() or "auto"
    if want not in PAIR_MODES:
        raise FieldError("STUDIO_AB_PAIR", f"must be one of {', '.join(PAIR_MODES)}; got {want!r}")
    if settings.do_sample:
        return "batch"  # one seeded stream for both rows: a repeatable pair
    if want != "auto":
        return want
    on_cpu = next(model.parameters()).device.type == "cpu"
    return "parallel" if on_cpu and usable_cores() >= 2 * torch.get_num_threads() else "batch"


@dataclass
class _Run:
    """One `generate` call of a turn: its rows (tags), model and texts, and the adapter(s) it uses."""
    tags: list[str]
    model: Any
    tok: Any
    texts: list[str]
    lock: threading.Lock
    adapter: str = ""                       # set_adapter(adapter) first (a one-adapter PeftModel call)
    adapter_names: list[str] | None = None  # peft's per-row adapters (a mixed batch)


def shares_weights(base: Side, tuned: Side) -> bool:
    """An adapter on the chosen base itself: one copy of the weights serves both sides."""
    return tuned.kind == "adapter" and base.kind == "model" and _same_path(tuned.model_path, base.model_path)


def turn_mode(base: Side, tuned: Side, settings: GenSettings, cache: ModelCache = CACHE) -> str:
    """How a turn runs: 'parallel' or 'batch' (see pair_mode; the same model on both sides batches) or
    'separate' (two models, each its own generate)."""
    if shares_weights(base, tuned):
        return pair_mode(cache.get(tuned)[0], settings)
    return "batch" if base.key == tuned.key else "separate"


def _plan(pair: Pair, settings: GenSettings, cache: ModelCache) -> list[_Run]:
    mode = turn_mode(pair.base, pair.tuned, settings, cache)
    if mode == "separate":
        runs = []
        for tag, side, text in (("base", pair.base, pair.text_base), ("tuned", pair.tuned, pair.text_tuned)):
            model, tok, name, lock = cache.get(side)
            check_length(tok, model, [text], settings.max_new_tokens)
            runs.append(_Run([tag], model, tok, [text], lock, adapter=name))
        return runs
    model, tok, name, lock = cache.get(pair.tuned)
    check_length(tok, model, [pair.text_base, pair.text_tuned], settings.max_new_tokens)
    if mode == "parallel":
        plain, _, _, plain_lock = cache.get(pair.base)  # the same weight tensors as the PeftModel's
        return [_Run(["base"], plain, tok, [pair.text_base], plain_lock),
                _Run(["tuned"], model, tok, [pair.text_tuned], lock, adapter=name)]
    # one batch; in a PeftModel the base row runs with the adapter disabled ("__base__")
    shared = shares_weights(pair.base, pair.tuned)
    names = [("" if shared else name) or "__base__", name or "__base__"] if name else None
    return [_Run(["base", "tuned"], model, tok, [pair.text_base, pair.text_tuned], lock, adapter_names=names)]


def stream_pair(pair: Pair, settings: GenSettings, stop: threading.Event | None = None,
                cache: ModelCache = CACHE) -> Iterator[tuple[str, str]]:
    """Yields (base answer so far, fine-tuned answer so far) while both are generated; the last yield is final."""
    settings = settings.validated()
    stop = stop or threading.Event()
    q: queue.Queue = queue.Queue()
    texts = {"base": "", "tuned": ""}
    errors: list[BaseException] = []
    runs = _plan(pair, settings, cache)
    decoders = {tag: r.tok for r in runs for tag in r.tags}

    def job(r: _Run):
        def run():
            with r.lock:
                if r.adapter:
                    r.model.set_adapter(r.adapter)
                _seed(settings.seed)
                _generate(r.model, r.tok, r.texts, settings, _RowStreamer(q, r.tags, _eos_ids(r.tok, r.model)),
                          stop, r.adapter_names)
        return run
    jobs = [job(r) for r in runs]

    def guarded(fn):
        def run():
            try:
                fn()
            except BaseException as e:  # reported to the caller, not lost in a thread
                errors.append(e)
                q.put(("error", [], []))
        return run

    if settings.do_sample and len(jobs) == 2:  # same seed for both: one after the other
        def both():
            for fn in jobs:
                guarded(fn)()
        threads = [threading.Thread(target=both, daemon=True)]
        expected_ends = 2
    else:
        threads = [threading.Thread(target=guarded(fn), daemon=True) for fn in jobs]
        expected_ends = len(jobs)
    for th in threads:
        th.start()
    ends = 0
    failed = False
    while ends < expected_ends and not failed:
        msgs = [q.get()]
        if msgs[0][0] == "step":  # let tokens gather: fewer wake-ups taking the GIL from the generating threads
            time.sleep(STREAM_INTERVAL)
        while True:  # coalesce: decode only the newest ids of each side once per wake-up
            try:
                msgs.append(q.get_nowait())
            except queue.Empty:
                break
        latest: dict[str, list[int]] = {}
        for what, ids, tags in msgs:
            if what == "error":
                failed = True
            ends += what == "end"
            latest.update(zip(tags, ids))
        for tag, row_ids in latest.items():
            # a character cut in half by the last token shows as U+FFFD until its next token arrives
            texts[tag] = decoders[tag].decode(row_ids, skip_special_tokens=True).rstrip("\ufffd")
        if not failed:
            yield texts["base"].strip(), texts["tuned"].strip()
    for th in threads:
        th.join(timeout=60)
    if errors:
        raise errors[0]
    yield texts["base"].strip(), texts["tuned"].strip()


def answer_pair(pair: Pair, settings: GenSettings, cache: ModelCache = CACHE) -> tuple[str, str]:
    final = ("", "")
    for final in stream_pair(pair, settings, cache=cache):
        pass
    return final


def answer_one(side: Side, text: str, settings: GenSettings, *, adapter: bool = True,
               cache: ModelCache = CACHE) -> str:
    """One side alone; with adapter=False an adapter side answers as its base through disable_adapter()."""
    import contextlib

    import torch

    settings = settings.validated()
    model, tok, name, lock = cache.get(side)
    check_length(tok, model, [text], settings.max_new_tokens)
    with lock:
        use = bool(name) and adapter
        if use:
            model.set_adapter(name)
        # a base shared with loaded adapters answers as the plain base with them disabled
        ctx = model.disable_adapter() if (hasattr(model, "peft_config") and not use) else contextlib.nullcontext()
        _seed(settings.seed)
        enc = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with ctx, torch.no_grad():
            out = model.generate(**enc, **settings.generate_kwargs(), pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip()


# -------------------------------------------------------------------------------------- rewards
class RewardScorer:
    """A sequence-classification model with one label scores prompt + answer (higher is better)."""

    def __init__(self, path: str, device: str | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        modeling.check_reward_model(path, field="reward_model")
        self.path = path
        self.tok = AutoTokenizer.from_pretrained(path)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        where, dtype = placement()
        device = str(device) if device is not None else where  # a training rank's own device (RLHF's reward)
        if device == "cpu":
            dtype = "fp32"
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=modeling.torch_dtype(dtype))
        self.model.to(device)
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.model.eval()
        self.lock = threading.Lock()

    def text(self, prompt_text: str, answer: str, template: str = "chat") -> str:
        """What the reward model reads (datalib.reward_text: prompt + answer + eos, the text TRL trained it on)."""
        return datalib.reward_text(prompt_text, answer, template, self.tok.eos_token or "")

    def score(self, prompt_text: str, answers: list[str], template: str = "chat") -> list[float]:
        return self.score_texts([self.text(prompt_text, a, template) for a in answers])

    def score_texts(self, texts: list[str], batch_size: int = 0) -> list[float]:
        """Scores of whole rendered texts (prompt + answer), `batch_size` at a time (0 = all at once)."""
        import torch

        out: list[float] = []
        step = batch_size or max(1, len(texts))
        for i in range(0, len(texts), step):
            self.tok.padding_side = "right"
            enc = self.tok(texts[i:i + step], return_tensors="pt", padding=True, truncation=True,
                           max_length=min(2048, getattr(self.model.config, "max_position_embeddings", 2048)))
            enc = enc.to(self.model.device)
            with self.lock, torch.no_grad():
                out += [float(x) for x in self.model(**enc).logits[:, 0].float()]
        return out


_SCORERS: OrderedDict[str, RewardScorer] = OrderedDict()


def scorer(path: str, data_dir=None) -> RewardScorer:
    p = modeling.resolve_model(path, data_dir, field="reward_model")
    if not Path(p).is_dir():
        raise FieldError("reward_model", f"folder not found: {path}")
    if p not in _SCORERS:
        _SCORERS[p] = RewardScorer(p)
        while len(_SCORERS) > 2:
            _SCORERS.popitem(last=False)
    return _SCORERS[p]


def score_pair(reward: str, prompt: str, answers: list[str], template: str = "auto",
               data_dir=None) -> tuple[list[float], str]:
    """DS-Chat's rw_eval.py: a reward model's score of each answer to `prompt` -> (scores, template used).

    'auto' renders the prompt in the template the reward model was trained with (its studio.json), else its
    tokenizer's chat template; the same rendering the A/B tab scores with."""
    if not str(prompt or "").strip():
        raise FieldError("prompt", "is empty: type the question both answers reply to")
    for i, a in enumerate(answers):
        if not str(a or "").strip():
            raise FieldError(f"answer_{'ab'[i] if i < 2 else i}", "is empty: type an answer to score")
    sc = scorer(reward, data_dir)
    tmpl = (template or "auto").strip()
    if tmpl == "auto":
        tmpl = modeling.read_studio_json(sc.path).get("template") or (
            "chat" if getattr(sc.tok, "chat_template", None) else "dschat")
    if tmpl not in datalib.TEMPLATES:
        raise FieldError("template", f"must be auto or one of {', '.join(datalib.TEMPLATES)}; got {template!r}")
    text = render([], prompt, tmpl, sc.tok)
    return sc.score(text, [a.strip() for a in answers], tmpl), tmpl


def is_reward_model(folder: Path) -> bool:
    try:
        return bool(modeling.check_reward_model(str(folder)))
    except FieldError:
        return False
