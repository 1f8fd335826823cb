"""A/B compare tab (chat): base vs fine-tuned side by side, streamed, with reward scores, blind voting and a
batch evaluation that runs as a job.

The third sub-tab is the image A/B panel (txt2img base with CFG vs a guidance-distilled result), built in
app/tabs/compare_images.py. Generation runs in worker threads (backends.infer.chat), never in the
event loop; Stop ends it at the next token.
"""
from __future__ import annotations

import itertools
import json
import random
import threading
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from app import kinds
from app.context import StudioContext
from app.i18n import t
from app.tabs import compare_images
from app.tabs.training import field_widget, progress_html
from backends.common import config as cfglib
from backends.common import paths
from backends.common.errors import FieldError
from backends.infer import chat

_STOPS: dict[str, threading.Event] = {}


# ------------------------------------------------------------------------------------ choices
def base_choices(data_dir) -> list[tuple[str, str]]:
    out = [("bundled:smollm2 — SmolLM2-135M-Instruct", "bundled:smollm2")]
    mdir = paths.models_dir(data_dir)
    if mdir.is_dir():
        for d in sorted(mdir.iterdir()):
            if d.name != paths.SMOLLM2_NAME and (d / "config.json").is_file() and not chat.is_reward_model(d):
                out.append((f"{d.name} — models/", f"models/{d.name}"))
    return out


def result_choices(engine, data_dir) -> list[tuple[str, str]]:
    """Finished training jobs whose output folder holds a model or an adapter, newest first."""
    out = []
    for j in engine.list_jobs():
        if j["kind"] not in kinds.producing("policy") or j["status"] not in ("succeeded", "stopped"):
            continue
        o = Path(j["run_dir"]) / "output"
        lora = (o / "adapter_config.json").is_file()
        if lora or (o / "config.json").is_file():
            pipe = (j.get("meta") or {}).get("pipeline_name")
            label = f"{j['id']} — {j['kind']} {j.get('recipe') or ''} ({'LoRA' if lora else 'full'})".replace("  ", " ")
            out.append((f"{label} · pipeline {pipe}" if pipe else label, f"job:{j['id']}"))
    return out


def reward_choices(engine, data_dir) -> list[tuple[str, str]]:
    out = [("— none —", "")]
    for j in engine.list_jobs():
        o = Path(j["run_dir"]) / "output"
        if j["kind"] in kinds.producing("reward_model") and j["status"] in ("succeeded", "stopped") and chat.is_reward_model(o):
            out.append((f"{j['id']} — reward model", str(o)))
    mdir = paths.models_dir(data_dir)
    if mdir.is_dir():
        for d in sorted(mdir.iterdir()):
            if chat.is_reward_model(d):
                out.append((f"{d.name} — models/", str(d)))
    return out


# The generation widgets come from the one generation group (backends/common/config.py GenerationFields):
# its order is the order of the settings parameters of /compare_chat and /compare_once, its defaults, labels
# and help are the form's. Their elem_ids predate that and stay (the page tests and scripts use them).
GEN_FIELDS = cfglib.field_descriptors(cfglib.GenerationFields)
GEN_NAMES = tuple(d["name"] for d in GEN_FIELDS)
GEN_DEFAULTS = {d["name"]: d["default"] for d in GEN_FIELDS}
GEN_ELEM_IDS = {"max_new_tokens": "ab-max-new", "do_sample": "ab-sample", "temperature": "ab-temperature",
                "top_p": "ab-top-p", "top_k": "ab-top-k", "repetition_penalty": "ab-rep", "seed": "ab-seed"}


def settings_from(*values) -> chat.GenSettings:
    """The generation widgets' values (in GEN_NAMES order) -> a validated GenSettings; a bad value raises a
    FieldError naming the field."""
    if len(values) != len(GEN_NAMES):
        raise TypeError(f"settings_from takes {len(GEN_NAMES)} values ({', '.join(GEN_NAMES)}), got {len(values)}")
    return cfglib.from_dict(chat.GenSettings, dict(zip(GEN_NAMES, values)), source="the generation settings")


def gen_widgets(ctx: StudioContext) -> list:
    """One widget per generation field, with the field's label and help (following the language switch)."""
    return [field_widget(d, d["default"], ctx, GEN_ELEM_IDS.get(d["name"], f"ab-{d['name']}")) for d in GEN_FIELDS]


def new_state() -> dict:
    return {"hist": {"base": [], "tuned": []}, "a_is": "base", "blind_open": False, "last": None}


def compare_once(ctx: StudioContext, prompt: str, base: str, tuned: str, reward: str = "", template: str = "auto",
                 settings: chat.GenSettings | None = None, history: dict | None = None,
                 stop: threading.Event | None = None):
    """Yields {"base": text, "tuned": text} while generating, then the final dict with rewards and the template."""
    if not str(prompt or "").strip():
        raise FieldError("prompt", "is empty: type a question")
    b = chat.resolve_side(base, ctx.data_dir, field="base")
    f = chat.resolve_side(tuned, ctx.data_dir, field="finetuned")
    chat.check_pair(b, f)
    settings = settings or chat.GenSettings()
    scorer = chat.scorer(reward, ctx.data_dir) if reward else None
    _m, tok, _n, _l = chat.CACHE.get(f)
    tmpl = chat.pick_template(template, f, tok)
    hist = history or {"base": [], "tuned": []}
    texts = {k: chat.render(hist[k], prompt, tmpl, tok) for k in ("base", "tuned")}
    out = {"base": "", "tuned": "", "template": tmpl, "mode": chat.turn_mode(b, f, settings)}
    for a, bb in chat.stream_pair(chat.Pair(b, f, texts["base"], texts["tuned"]), settings, stop):
        out["base"], out["tuned"] = a, bb
        yield dict(out)
    if scorer is not None:
        ra, rb = scorer.score(texts["base"], [out["base"], out["tuned"]], tmpl)  # the prompt as the models saw it
        out["reward_base"], out["reward_tuned"] = ra, rb
    yield out


def template_choices(lang: str) -> list[tuple[str, str]]:
    """The prompt templates a side can be asked in; 'auto' = the one the result was trained with."""
    return [(t("ab.template_auto", lang), "auto"), ("chat", "chat"), ("dschat", "dschat"), ("plain", "plain")]


# --------------------------------------------------------------------------------------- build
def build(ctx: StudioContext) -> dict:
    lang = ctx.lang
    engine = ctx.engine
    with gr.Tabs(elem_id="ab-subtabs"):
        with ctx.tr(gr.Tab(t("ab.chat_tab", lang), id="ab-chat", elem_id="ab-chat-tab"), "ab.chat_tab"):
            chat_comps = _build_chat(ctx, engine)
        with ctx.tr(gr.Tab(t("ab.batch_tab", lang), id="ab-batch", elem_id="ab-batch-tab"), "ab.batch_tab"):
            _build_batch(ctx, engine, chat_comps)
        with ctx.tr(gr.Tab(t("ab.images_tab", lang), id="ab-images", elem_id="ab-images-tab"), "ab.images_tab"):
            compare_images.build(ctx)
    return chat_comps


def _no_result_hint(results: list, lang: str) -> str:
    """Under the fine-tuned picker while no job has finished: train one first (or type a folder)."""
    return "" if results else t("ab.no_finished_job", lang)


def _build_chat(ctx: StudioContext, engine) -> dict:
    lang = ctx.lang
    results = result_choices(engine, ctx.data_dir)
    with gr.Row():
        base_dd = ctx.tr(gr.Dropdown(base_choices(ctx.data_dir), value="bundled:smollm2", allow_custom_value=True,
                                     label=t("ab.base", lang), elem_id="ab-base", scale=3), "ab.base")
        tuned_dd = ctx.tr(gr.Dropdown(results, value=results[0][1] if results else None, allow_custom_value=True,
                                      label=t("ab.tuned", lang), elem_id="ab-tuned", scale=3,
                                      info=_no_result_hint(results, lang)), "ab.tuned")
        reward_dd = ctx.tr(gr.Dropdown(reward_choices(engine, ctx.data_dir), value="", allow_custom_value=True,
                                       label=t("ab.reward", lang), elem_id="ab-reward", scale=2), "ab.reward")
        template_dd = ctx.tr(gr.Dropdown(template_choices(lang), value="auto",
                                         label=t("ab.template", lang), elem_id="ab-template", scale=1), "ab.template")
        ctx.tr_fn(template_dd, template_choices, attr="choices")
        with gr.Column(scale=1, min_width=120):
            refresh_btn = ctx.tr(gr.Button(t("ab.refresh", lang), size="sm", elem_id="ab-refresh"), "ab.refresh")
            unload_btn = ctx.tr(gr.Button(t("ab.unload", lang), size="sm", elem_id="ab-unload"), "ab.unload")
    with ctx.tr(gr.Accordion(t("ab.sampling", lang), open=False, elem_id="ab-sampling"), "ab.sampling"):
        with gr.Row():
            gen_ws = gen_widgets(ctx)
    with gr.Row():
        with gr.Column():
            label_a = gr.Markdown("### A", elem_id="ab-label-a")
            chat_a = gr.Chatbot([], height=360, elem_id="ab-chat-a", show_label=False)
            score_a = gr.Markdown("", elem_id="ab-score-a")
        with gr.Column():
            label_b = gr.Markdown("### B", elem_id="ab-label-b")
            chat_b = gr.Chatbot([], height=360, elem_id="ab-chat-b", show_label=False)
            score_b = gr.Markdown("", elem_id="ab-score-b")
    with gr.Row():
        prompt = ctx.tr(gr.Textbox("", label=t("ab.prompt", lang), placeholder=t("ab.prompt_ph", lang), lines=2,
                                   elem_id="ab-prompt", scale=6), "ab.prompt")
        ctx.tr_fn(prompt, lambda lang_: t("ab.prompt_ph", lang_), attr="placeholder")
        with gr.Column(scale=1, min_width=140):
            send_btn = ctx.tr(gr.Button(t("ab.send", lang), variant="primary", elem_classes=["studio-train-btn"],
                                        elem_id="ab-send"), "ab.send")
            stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", elem_id="ab-stop"), "train.stop")
    with gr.Row():
        clear_btn = ctx.tr(gr.Button(t("ab.clear", lang), size="sm", elem_id="ab-clear"), "ab.clear")
        swap_btn = ctx.tr(gr.Button(t("ab.swap", lang), size="sm", elem_id="ab-swap"), "ab.swap")
        blind = ctx.tr(gr.Checkbox(False, label=t("ab.blind", lang), elem_id="ab-blind"), "ab.blind")
        vote_a = ctx.tr(gr.Button(t("ab.vote_a", lang), size="sm", elem_id="ab-vote-a"), "ab.vote_a")
        vote_tie = ctx.tr(gr.Button(t("ab.vote_tie", lang), size="sm", elem_id="ab-vote-tie"), "ab.vote_tie")
        vote_b = ctx.tr(gr.Button(t("ab.vote_b", lang), size="sm", elem_id="ab-vote-b"), "ab.vote_b")
    status = gr.Markdown("", elem_id="ab-status")
    state = gr.State(new_state())

    def side_labels(st, base, tuned, is_blind):
        zh = ctx.lang == "zh"
        if is_blind and not st.get("blind_open"):
            return "### A", "### B"
        names = {"base": f"{'基础模型' if zh else 'base'}: {base or '—'}",
                 "tuned": f"{'微调结果' if zh else 'fine-tuned'}: {tuned or '—'}"}
        other = "tuned" if st["a_is"] == "base" else "base"
        return f"### A — {names[st['a_is']]}", f"### B — {names[other]}"

    def panes(st):
        """(messages of pane A, pane B) from the per-side histories."""
        other = "tuned" if st["a_is"] == "base" else "base"
        return list(st["hist"][st["a_is"]]), list(st["hist"][other])

    def send(p, base, tuned, reward, template, mn, smp, tp, tpp, tk, rp, sd, is_blind, st, request: gr.Request):
        key = getattr(request, "session_hash", None) or "api"
        stop = _STOPS.setdefault(key, threading.Event())
        stop.clear()
        try:
            settings = settings_from(mn, smp, tp, tpp, tk, rp, sd)
            gen = compare_once(ctx, p, base, tuned, reward, template, settings, st["hist"], stop)
            first = next(gen)
        except FieldError as e:
            gr.Warning(f"{e.field}: {e.message}")
            a, b = panes(st)
            yield a, b, gr.update(), gr.update(), p, st, f"⚠ {e.field}: {e.message}", *side_labels(
                st, base, tuned, is_blind)
            return
        if is_blind and not any(st["hist"].values()):
            st["a_is"] = random.choice(["base", "tuned"])  # a new blind conversation: sides hidden and shuffled
            st["blind_open"] = False
        t0 = time.time()
        out = first
        for out in itertools.chain([first], gen):
            pending = {k: [*st["hist"][k], {"role": "user", "content": p},
                           {"role": "assistant", "content": out[k]}] for k in ("base", "tuned")}
            other = "tuned" if st["a_is"] == "base" else "base"
            yield (pending[st["a_is"]], pending[other], gr.update(), gr.update(), "", st, "",
                   *side_labels(st, base, tuned, is_blind))
        for k in ("base", "tuned"):
            st["hist"][k] = [*st["hist"][k], {"role": "user", "content": p}, {"role": "assistant", "content": out[k]}]
        st["last"] = {"prompt": p, "base": out["base"], "tuned": out["tuned"], "base_model": base,
                      "tuned_model": tuned, "template": out["template"], "settings": settings.__dict__}
        scores = ["", ""]
        if "reward_base" in out:
            r = {"base": out["reward_base"], "tuned": out["reward_tuned"]}
            st["last"]["reward_base"], st["last"]["reward_tuned"] = r["base"], r["tuned"]
            other = "tuned" if st["a_is"] == "base" else "base"
            scores = [f"reward **{r[st['a_is']]:+.3f}**", f"reward **{r[other]:+.3f}**"]
        msg = t("ab.done", ctx.lang).format(secs=f"{time.time() - t0:.1f}", template=out["template"],
                                            mode=t(f"ab.mode.{out['mode']}", ctx.lang))
        if stop.is_set():
            msg = t("ab.stopped", ctx.lang)
        a, b = panes(st)
        yield a, b, scores[0], scores[1], "", st, msg, *side_labels(st, base, tuned, is_blind)

    def do_stop(request: gr.Request):
        key = getattr(request, "session_hash", None) or "api"
        if key in _STOPS:
            _STOPS[key].set()

    def clear(st):
        st = new_state()
        return [], [], "", "", st, "", "### A", "### B"

    def swap(st, base, tuned, is_blind):
        st["a_is"] = "tuned" if st["a_is"] == "base" else "base"
        a, b = panes(st)
        return (a, b, st, *side_labels(st, base, tuned, is_blind))

    def vote(choice, st, base, tuned, is_blind):
        last = st.get("last")
        if not last:
            gr.Warning(t("ab.vote_first", ctx.lang))
            return gr.update(), st, *side_labels(st, base, tuned, is_blind)
        a_is = st["a_is"]
        winner = {"A": a_is, "B": "tuned" if a_is == "base" else "base", "tie": "tie"}[choice]
        rec = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "vote": choice, "winner": winner, "a_is": a_is,
               "blind": bool(is_blind), **last}
        vdir = ctx.data_dir / "compare"
        vdir.mkdir(parents=True, exist_ok=True)
        with open(vdir / "votes.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        st["blind_open"] = True
        shown = {"base": "base", "tuned": "fine-tuned", "tie": "tie"}[winner]
        return (t("ab.voted", ctx.lang).format(vote=choice, winner=shown), st,
                *side_labels(st, base, tuned, is_blind))

    def refresh():
        res = result_choices(engine, ctx.data_dir)
        return (gr.update(choices=base_choices(ctx.data_dir)),
                gr.update(choices=res, info=_no_result_hint(res, ctx.lang)),
                gr.update(choices=reward_choices(engine, ctx.data_dir)))

    def unload():
        chat.CACHE.clear()
        gr.Info(t("ab.unloaded", ctx.lang))

    gen_inputs = [prompt, base_dd, tuned_dd, reward_dd, template_dd, *gen_ws, blind, state]
    gen_outputs = [chat_a, chat_b, score_a, score_b, prompt, state, status, label_a, label_b]
    send_ev = send_btn.click(send, inputs=gen_inputs, outputs=gen_outputs, api_name="compare_chat",
                             concurrency_limit=1, concurrency_id="ab-generate")
    prompt.submit(send, inputs=gen_inputs, outputs=gen_outputs, api_name=False, concurrency_limit=1,
                  concurrency_id="ab-generate")
    stop_btn.click(do_stop, inputs=None, outputs=None, api_name="compare_stop", cancels=[send_ev])
    clear_btn.click(clear, inputs=state, outputs=[chat_a, chat_b, score_a, score_b, state, status, label_a, label_b],
                    api_name=False)
    swap_btn.click(swap, inputs=[state, base_dd, tuned_dd, blind], outputs=[chat_a, chat_b, state, label_a, label_b],
                   api_name=False)
    for btn, choice in ((vote_a, "A"), (vote_b, "B"), (vote_tie, "tie")):
        btn.click(lambda st, b, f, bl, c=choice: vote(c, st, b, f, bl), inputs=[state, base_dd, tuned_dd, blind],
                  outputs=[status, state, label_a, label_b], api_name=False)
    refresh_btn.click(refresh, outputs=[base_dd, tuned_dd, reward_dd], api_name=False)
    unload_btn.click(unload, api_name="compare_unload")

    def api_once(prompt: str, base: str, finetuned: str, reward_model: str = "", template: str = "auto",
                 max_new_tokens: int = GEN_DEFAULTS["max_new_tokens"], do_sample: bool = GEN_DEFAULTS["do_sample"],
                 temperature: float = GEN_DEFAULTS["temperature"], top_p: float = GEN_DEFAULTS["top_p"],
                 top_k: int = GEN_DEFAULTS["top_k"], repetition_penalty: float = GEN_DEFAULTS["repetition_penalty"],
                 seed: int = GEN_DEFAULTS["seed"]) -> dict:
        """One prompt, both answers (and rewards when a reward model is given), as JSON."""
        try:
            settings = settings_from(max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty, seed)
            out = {}
            for out in compare_once(ctx, prompt, base, finetuned, reward_model, template, settings):
                pass
        except FieldError as e:
            raise gr.Error(f"{e.field}: {e.message}") from None
        return out

    gr.api(api_once, api_name="compare_once")
    return {"base": base_dd, "tuned": tuned_dd, "reward": reward_dd, "template": template_dd,
            "settings": gen_ws, "refresh": refresh}


def _build_batch(ctx: StudioContext, engine, cc: dict) -> None:
    lang = ctx.lang
    from app.tabs.datasets import dataset_choices

    ctx.tr(gr.Markdown(t("ab.batch_help", lang)), "ab.batch_help", attr="value")
    with gr.Row():
        prompts_dd = ctx.tr(gr.Dropdown(dataset_choices(ctx.data_dir, "prompt"),
                                        value="presets/datasets/demo_prompts.jsonl", allow_custom_value=True,
                                        label=t("ab.prompts", lang), elem_id="abe-prompts", scale=3), "ab.prompts")
        max_prompts = ctx.tr(gr.Textbox("10", label=t("ab.max_prompts", lang), elem_id="abe-max", max_lines=1),
                             "ab.max_prompts")
        run_btn = ctx.tr(gr.Button(t("ab.run_batch", lang), variant="primary", elem_classes=["studio-train-btn"],
                                   elem_id="abe-run"), "ab.run_batch")
        stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", elem_id="abe-stop"), "train.stop")
    lines = ctx.tr(gr.Textbox("", lines=3, label=t("ab.lines", lang), elem_id="abe-lines"), "ab.lines")
    progress = gr.HTML(progress_html(None, None), elem_id="abe-progress")
    summary = gr.Markdown("", elem_id="abe-summary")
    table = gr.Dataframe(pd.DataFrame(columns=["prompt", "answer_a", "answer_b", "reward_a", "reward_b", "winner"]),
                         interactive=False, wrap=True, max_height=420, elem_id="abe-table")
    files = ctx.tr(gr.File(label=t("ab.export", lang), file_count="multiple", interactive=False,
                           elem_id="abe-files"), "ab.export")
    job_state = gr.State(None)

    def run(prompts, maxp, text_lines, base, tuned, reward, template, mn, smp, tp, tpp, tk, rp, sd):
        from backends import ab_eval

        form = {"base_model": base, "finetuned": tuned or "", "reward_model": reward or "", "prompts": prompts or "",
                "prompt_lines": text_lines or "", "max_prompts": maxp, "template": template,
                **dict(zip(GEN_NAMES, (mn, smp, tp, tpp, tk, rp, sd))), "data_dir": str(ctx.data_dir)}
        try:
            cfg = cfglib.from_dict(ab_eval.ABEvalArgs, form, source="form")
            ab_eval.validate_config(cfg)
            job_id = engine.submit("ab_eval", cfglib.to_dict(cfg))  # the kind's default launch: python, cpu
        except FieldError as e:
            gr.Warning(f"{e.field}: {e.message}")
            return gr.update(), f"⚠ {e.field}: {e.message}"
        gr.Info(t("train.queued", ctx.lang).format(job=job_id))
        return job_id, ""

    def refresh(job_id):
        if not job_id:
            return progress_html(None, None), gr.update(), gr.update(), gr.update()
        job = engine.get(job_id)
        prog = engine.progress(job_id)
        out = Path(job["run_dir"]) / "output"
        if not (out / "summary.json").is_file():  # running: the rows so far
            return progress_html(job, prog), gr.update(), results_frame(out), gr.update()
        return (progress_html(job, prog), summary_markdown(json.loads((out / "summary.json").read_text("utf-8")),
                                                           ctx.lang),
                results_frame(out), [str(p) for p in (out / "results.csv", out / "results.jsonl",
                                                      out / "summary.json") if p.is_file()])

    def stop(job_id):
        if job_id:
            engine.stop(job_id)

    run_btn.click(run, inputs=[prompts_dd, max_prompts, lines, cc["base"], cc["tuned"], cc["reward"], cc["template"],
                               *cc["settings"]], outputs=[job_state, summary], api_name="compare_batch_eval")
    stop_btn.click(stop, inputs=job_state, api_name=False)
    gr.Timer(1.0).tick(refresh, inputs=job_state, outputs=[progress, summary, table, files], show_progress="hidden")


def results_frame(out: Path) -> pd.DataFrame:
    rows = []
    p = out / "results.jsonl"
    if p.is_file():
        rows = [json.loads(x) for x in p.read_text(encoding="utf-8").splitlines() if x.strip()]
    cols = ["prompt", "answer_a", "answer_b", "reward_a", "reward_b", "winner"]
    return pd.DataFrame([[r.get(c) for c in cols] for r in rows], columns=cols)


def summary_markdown(s: dict, lang: str) -> str:
    zh = lang == "zh"
    n = s.get("n", 0)
    if s.get("win_rate_b") is None:
        return (f"**{n}** {'条提示' if zh else 'prompts'} · "
                + ("未选择奖励模型：只有回答，没有胜率。" if zh else "no reward model: answers only, no win rate."))
    ci_w = s.get("ci95_win_rate_b")
    ci_d = s.get("ci95_mean_diff")
    w_ci = f" (95% CI {100 * ci_w[0]:.0f}–{100 * ci_w[1]:.0f}%)" if ci_w else ""
    d_ci = f" (95% CI {ci_d[0]:+.3f} … {ci_d[1]:+.3f})" if ci_d else ""
    return (f"**{n}** {'条提示' if zh else 'prompts'} · B {'胜' if zh else 'wins'} **{s['wins_b']}**, "
            f"A {'胜' if zh else 'wins'} **{s['wins_a']}**, {'平' if zh else 'ties'} **{s['ties']}** · "
            f"{'B 胜率' if zh else 'win rate B'} **{100 * s['win_rate_b']:.0f}%**{w_ci} · "
            f"{'平局率' if zh else 'tie rate'} {100 * s['tie_rate']:.0f}% · "
            f"{'平均奖励差' if zh else 'mean reward diff'} (B−A) **{s['mean_reward_diff']:+.3f}**{d_ci}")
