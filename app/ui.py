"""Builds the page: A1111 layout, tabs across the top, one module per tab in app/tabs/."""
from __future__ import annotations

import copy
import threading
from collections import defaultdict

import gradio as gr

from app.context import StudioContext
from app.i18n import LANGUAGES, t
from app import kinds
from app.tabs import compare, datasets, environment, jobs, pipeline, reward, training

CSS = """
#studio-header h1 { margin-bottom: 0; }
.studio-train-btn { background: #f97316 !important; color: white !important; }
#env-report-md table { font-size: 0.9em; }
.studio-field-error-msg { color: #b91c1c; background: #fef2f2; border: 1px solid #fecaca; border-radius: 6px;
                          padding: 6px 10px; }
/* what a poll rewrites is laid out and painted on its own, not with the whole page */
.studio-plot, .studio-log, .studio-progress-box { contain: content; }
.studio-error-box:not(:has(.studio-field-error-msg)) { display: none; }
.studio-plot-empty { color: #6b7280; padding: 24px 8px; text-align: center; }
.studio-curves { display: block; background: white; margin-top: 20px; }
/* dropdown text stops before the arrow instead of running under it */
.wrap-inner .secondary-wrap input.border-none { padding-right: 26px !important; text-overflow: ellipsis; }
/* the Jobs table fits its column: long ids and paths wrap inside their cells */
#jobs-table td, #jobs-table th { overflow-wrap: anywhere; }
/* the Datasets upload label sits above its icon, not over it */
#ds-upload { height: 140px !important; }
#ds-upload .upload-container { height: 100% !important; padding-top: 26px; box-sizing: border-box; }
#ds-upload .upload-container .wrap { min-height: 0 !important; padding-top: 0 !important; line-height: 1.3; }
"""

# Installed once per page load, no server round trip:
# - log boxes follow their newest line (after a reload, a finish, every update) unless the user scrolled up in
#   them. Svelte sets a textarea's value through the property setter, so wrapping the setter catches every
#   update without a timer; the user's scroll position is read from scroll events.
# - a running job's "elapsed" ticks every second from the value the server last sent (the server polls every
#   POLL_SECONDS); it never goes back, also when a late poll answer replaces it with an older value.
LOG_BOXES = ".studio-log textarea, #env-prepare-log textarea"
STUDIO_JS = """() => {
  if (window.__studioJs) return;
  window.__studioJs = true;
  const SEL = %r;
  const atEnd = (el) => el.scrollTop + el.clientHeight >= el.scrollHeight - 8;
  document.addEventListener('scroll', (e) => {
    const el = e.target;
    if (el instanceof HTMLTextAreaElement && el.matches(SEL)) el.dataset.userUp = atEnd(el) ? '' : '1';
  }, true);
  const desc = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value');
  Object.defineProperty(HTMLTextAreaElement.prototype, 'value', {
    configurable: true, enumerable: desc.enumerable, get: desc.get,
    set(v) {
      desc.set.call(this, v);
      if (this.matches(SEL) && !this.dataset.userUp) {
        const el = this;
        requestAnimationFrame(() => { el.scrollTop = el.scrollHeight; });
      }
    },
  });
  const fmt = (s) => {  // as app.tabs.training.format_eta
    s = Math.max(0, Math.floor(s));
    const h = Math.floor(s / 3600), m = Math.floor((s %% 3600) / 60), r = s %% 60;
    const p = (n) => String(n).padStart(2, '0');
    return h ? `${h}h${p(m)}m` : (m ? `${m}m${p(r)}s` : `${r}s`);
  };
  const seen = new WeakMap(), shown = new Map();
  const tick = (el) => {
    if (!seen.has(el)) seen.set(el, [parseFloat(el.dataset.elapsed) || 0, performance.now()]);
    const [base, t0] = seen.get(el);
    const v = Math.max(base + (performance.now() - t0) / 1000, shown.get(el.dataset.job) || 0);
    shown.set(el.dataset.job, v);
    const text = fmt(v);
    if (el.textContent !== text) el.textContent = text;
  };
  const LIVE = '.studio-elapsed[data-live="1"]';
  setInterval(() => document.querySelectorAll(LIVE).forEach(tick), 1000);
  // a poll's answer computed before the page's clock last ticked replaces the element with a smaller value:
  // correct it before it is painted (observer callbacks run before the next frame)
  new MutationObserver((records) => {
    for (const r of records) for (const n of r.addedNodes) {
      if (n.nodeType !== 1) continue;
      if (n.matches(LIVE)) tick(n);
      n.querySelectorAll(LIVE).forEach(tick);
    }
  }).observe(document.body, {childList: true, subtree: true});
}""" % LOG_BOXES

# After Environment, in this order; Jobs comes after every training tab (it can load their forms).
TAB_ORDER = ["datasets", "sft", "reward", "rlhf", "pipeline", "sd_lora", "jobs", "compare"]


def _timers_off(n: int):
    def off():
        return [gr.Timer(active=False)] * n if n > 1 else gr.Timer(active=False)
    return off


def stage_tab(ctx: StudioContext, key: str, tab, tab_kinds: list, trained: dict) -> dict:
    """The body of a training tab: one training.build per kind, each in its own column; with several kinds a stage
    dropdown (its entries: each kind's `stage` string) shows one of them. Returns the tab's follower: its timers and
    the handler that follows the shown kind's job (the other kinds' timers off)."""
    lang = ctx.lang
    names = [k.name for k in tab_kinds]

    def stage_choices(lang_: str) -> list[tuple[str, str]]:
        return [(t(k.stage, lang_) if k.stage else k.name, k.name) for k in tab_kinds]

    stage = None
    if len(tab_kinds) > 1:
        stage = gr.Dropdown(stage_choices(lang), value=names[0], label=t("train.stage", lang),
                            elem_id=f"{key}-stage", interactive=True)
        ctx.tr(stage, "train.stage")
        ctx.tr_fn(stage, stage_choices, attr="choices")
    bodies, comps_of = [], {}
    for i, k in enumerate(tab_kinds):
        with gr.Column(visible=i == 0, elem_id=f"{key}-body-{k.name}") as col:
            comps = trained[k.name] = comps_of[k.name] = training.build(ctx, k)
        bodies.append(col)
        if key == "reward":  # its finished reward models, listed again when the tab is opened
            pair = reward.build_score_pair(ctx)
            tab.select(pair["refresh"], outputs=pair["model"], api_name=False, show_progress="hidden")
        tab.select(comps["refresh_recipes"], outputs=comps["recipe"], api_name=False,
                   show_progress="hidden")  # recipes saved since (in another browser too)
        if comps["pickers"]:  # list studio datasets saved, jobs finished since the page was built
            tab.select(comps["refresh_pickers"], inputs=comps["picker_inputs"], outputs=comps["pickers"],
                       api_name=False, show_progress="hidden")
    timers = [comps_of[n]["timer"] for n in names]
    inputs = [stage] if stage is not None else []
    outputs, slices = [], {}
    for n in names:
        fn, ins, outs = comps_of[n]["follow"]
        slices[n] = (len(inputs), len(inputs) + len(ins), len(outputs), len(outputs) + len(outs))
        inputs += ins
        outputs += outs

    def follow(*args, request: gr.Request = None):
        """Follow the shown stage's job (everything once, its timer on while it can change); other timers off."""
        shown = args[0] if stage is not None and args and args[0] in names else names[0]
        out = [gr.skip()] * len(outputs)
        for n in names:
            a, b, c, d = slices[n]
            if n == shown:
                out[c:d] = comps_of[n]["follow"][0](*args[a:b], request=request)
            else:
                out[d - 1] = gr.Timer(active=False)  # a follow's last output is its kind's timer
        return out

    # Gradio passes the gr.Request to a parameter annotated with it, found through the signature: name each input
    import inspect

    follow.__signature__ = inspect.Signature(
        [inspect.Parameter(f"in{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(inputs))]
        + [inspect.Parameter("request", inspect.Parameter.KEYWORD_ONLY, annotation=gr.Request)])
    if stage is not None:
        def show(name):
            return [gr.Column(visible=n == name) for n in names]

        stage.input(show, inputs=stage, outputs=bodies, api_name=False, show_progress="hidden").then(
            follow, inputs=inputs, outputs=outputs, api_name=False, show_progress="hidden")
        for n in names:  # Jobs' "Re-run with edits" picks the stage of the job's kind
            trained[n]["stage"] = (stage, dict(zip(names, bodies)))
    return {"timers": timers, "follow": (follow, inputs, outputs)}


def wire_polling(tab_objs: dict, followers: dict, env_tab) -> None:
    """Only the shown tab polls: selecting a tab starts its follower (one full send, then its timer while
    its job can change) and switches every other tab's timer off. The page opens on Environment: no timer."""
    timers = [(key, tm) for key, f in followers.items() for tm in (f.get("timers") or [f["timer"]])]
    for key, tab in [*tab_objs.items(), ("environment", env_tab)]:
        others = [tm for k, tm in timers if k != key]
        if others:
            tab.select(_timers_off(len(others)), outputs=others, api_name=False, show_progress="hidden")
        if key in followers:
            fn, inputs, outputs = followers[key]["follow"]
            tab.select(fn, inputs=inputs, outputs=outputs, api_name=False, show_progress="hidden")


class StudioBlocks(gr.Blocks):
    """The page, sent in the saved language.

    Gradio builds the page once and sends its config (every component's label, value, choices ...) with "/" and
    "/config". A page built in English and relabelled into Chinese by a load event took ~50 s to open on 2 cores
    (one event writing to every label, ~1000 components); so the config itself is sent in the saved language:
    `config` is the built one for the language the page was built in and, for the other, a copy whose registered
    i18n props are rendered the way Gradio renders a gr.update() (a new component from the constructor arguments).
    Built on first use, once per language."""

    def __init__(self, *args, ctx: StudioContext, **kwargs):
        self._studio_ctx, self._built_lang, self._localized, self._lock = ctx, ctx.lang, {}, threading.Lock()
        super().__init__(*args, **kwargs)

    @property
    def config(self):
        built = self.__dict__.get("_built_config")
        lang = self._studio_ctx.lang
        if built is None or lang == self._built_lang:
            return built
        with self._lock:
            if lang not in self._localized:
                self._localized[lang] = localized_config(built, self._studio_ctx.i18n, lang)
            return self._localized[lang]

    @config.setter
    def config(self, value):
        self.__dict__["_built_config"] = value
        self._localized = {}


def localized_config(config: dict, entries: list, lang: str) -> dict:
    """A copy of a Blocks config with each i18n entry's prop rendered in `lang`."""
    out = copy.deepcopy(config)
    by_id = {c["id"]: c for c in out["components"]}
    attrs: dict[int, dict] = defaultdict(dict)
    comps = {}
    for e in entries:
        comps[e.component._id] = e.component
        attrs[e.component._id][e.attr] = e.render(lang)
    for _id, changes in attrs.items():
        comp, target = comps[_id], by_id.get(_id)
        if target is None:
            continue
        new = comp.__class__(**{**comp.constructor_args, **changes, "render": False})
        props = new.get_config()
        for attr in changes:
            target["props"][attr] = props.get(attr)
    return out


def build(ctx: StudioContext) -> gr.Blocks:
    lang = ctx.lang
    with StudioBlocks(title="Finetune Studio", analytics_enabled=False, ctx=ctx) as demo:
        with gr.Row(elem_id="studio-header"):
            with gr.Column(scale=4):
                ctx.tr(gr.Markdown(f"# {t('title', lang)}"), "title", attr="value", fmt="# {}")
                ctx.tr(gr.Markdown(t("subtitle", lang)), "subtitle", attr="value")
            with gr.Column(scale=1, min_width=160):
                lang_dd = gr.Dropdown(choices=[(v, k) for k, v in LANGUAGES.items()], value=lang,
                                      label=t("language", lang), elem_id="language", interactive=True)
                ctx.tr(lang_dd, "language")
                ctx.tr_fn(lang_dd, lambda lang_: lang_)  # a page built in another language shows the saved one
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            with ctx.tr(gr.Tab(t("tab.environment", lang), id="environment", elem_id="tab-environment"),
                        "tab.environment") as env_tab:
                env_load, env_outputs, env_follower = environment.build(ctx)
            trained = {}  # kind -> its training tab's components (Jobs' "Re-run with edits" fills them)
            tab_objs = {}
            followers = {"environment": env_follower}  # tab key -> its poll timer and the handler that follows
            for key in TAB_ORDER:
                with ctx.tr(gr.Tab(t(f"tab.{key}", lang), id=key, elem_id=f"tab-{key}"), f"tab.{key}") as tab:
                    tab_objs[key] = tab
                    tab_kinds = kinds.of_tab(key)
                    if tab_kinds:  # one body per kind; a tab with several has a stage dropdown (LlamaBoard's)
                        followers[key] = stage_tab(ctx, key, tab, tab_kinds, trained)
                    elif key == "datasets":
                        datasets.build(ctx)
                    elif key == "compare":
                        comps = compare.build(ctx)
                        tab.select(comps["refresh"], outputs=[comps["base"], comps["tuned"], comps["reward"]],
                                   api_name=False, show_progress="hidden")
                    elif key == "pipeline":
                        followers[key] = pipe = pipeline.build(ctx)
                        fn, ins, outs = pipe["refresh"]
                        tab.select(fn, inputs=ins, outputs=outs, api_name=False, show_progress="hidden")
                    elif key == "jobs":
                        followers[key] = jobs.build(ctx, trained)
                    else:  # tabs of later issues show a one-line note until they are built
                        ctx.tr(gr.Markdown(t("coming", lang)), "coming", attr="value")
            wire_polling(tab_objs, followers, env_tab)

        def switch_language(new_lang: str):
            if new_lang not in LANGUAGES:
                raise gr.Error(f"language: unknown {new_lang!r}; choose one of {', '.join(LANGUAGES)}")
            ctx.settings.set("language", new_lang)

        # .input, not .change: only the user's choice switches. The page then reloads: it arrives in the new
        # language (StudioBlocks) in a few seconds, where relabelling ~1000 components in place took ~14 s and left
        # every later poll of the page revisiting them all.
        lang_dd.input(switch_language, inputs=lang_dd, api_name="set_language").success(
            None, js="() => { window.location.reload(); }", api_name=False)
        # what depends on a tab's own state: its recipe's description, its choices, the job or pipeline it shows
        relabellers = [c["relabel"] for c in [*trained.values(), followers.get("pipeline") or {}] if "relabel" in c]
        # The page arrives in the saved language (StudioBlocks); what depends on a tab's state is rendered by the
        # relabellers, run on load only when that is not the language the page was built in (an error nobody sees
        # ends the chain otherwise: the Gradio 6 frontend revisits every component an event has ever output to
        # on each later event's status change, so load events keep their outputs few).
        def language_unchanged():
            if ctx.lang == lang:  # the page was built in this language
                raise gr.Error("language unchanged", visible=False, print_exception=False)

        relabelled = demo.load(language_unchanged, api_name=False, show_progress="hidden")
        for fn, inputs, outputs in relabellers:  # lang_dd holds ctx.lang
            relabelled.success(fn, inputs=[lang_dd, *inputs], outputs=outputs, api_name=False, show_progress="hidden")
        demo.load(env_load, outputs=env_outputs, api_name=False)
        demo.load(None, js=STUDIO_JS, api_name=False)
        fn, inputs, outputs = env_follower["follow"]  # the page opens on Environment: follow a preparation
        demo.load(fn, inputs=inputs, outputs=outputs, api_name=False, show_progress="hidden")
        for comps in trained.values():  # the command preview of each tab's initial form
            demo.load(comps["preview"], inputs=comps["all_inputs"], outputs=comps["command"], api_name=False)
        if "pipeline" in followers:
            fn, ins, outs = followers["pipeline"]["preview"]
            demo.load(fn, inputs=ins, outputs=outs, api_name=False)
    return demo
