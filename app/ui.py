"""Builds the page: A1111 layout, tabs across the top, one module per tab in app/tabs/."""
from __future__ import annotations

import gradio as gr

from app.context import StudioContext
from app.i18n import LANGUAGES, t
from app.tabs import compare, datasets, environment, jobs, training

CSS = """
#studio-header h1 { margin-bottom: 0; }
.studio-train-btn { background: #f97316 !important; color: white !important; }
#env-report-md table { font-size: 0.9em; }
"""

# After Environment, in this order; Jobs comes after every training tab (it can load their forms).
TAB_ORDER = ["datasets", "sft", "reward", "rlhf", "pipeline", "sd_lora", "jobs", "compare"]


def training_kinds() -> list[training.TrainingKind]:
    from backends import sft

    return [training.TrainingKind("sft", sft.SFTArgs, sft.validate_config, "cpu-demo-smollm2")]


def build(ctx: StudioContext) -> gr.Blocks:
    lang = ctx.lang
    with gr.Blocks(title="Finetune Studio", analytics_enabled=False) as demo:
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
                        "tab.environment"):
                env_load, env_outputs = environment.build(ctx)
            trained = {}
            kinds = {tk.kind: tk for tk in training_kinds()}
            for key in TAB_ORDER:
                with ctx.tr(gr.Tab(t(f"tab.{key}", lang), id=key, elem_id=f"tab-{key}"), f"tab.{key}") as tab:
                    if key in kinds:
                        trained[key] = comps = training.build(ctx, kinds[key])
                        if comps["dataset_fields"]:  # list studio datasets saved since the page was built
                            tab.select(comps["refresh_datasets"], outputs=comps["dataset_fields"], api_name=False,
                                       show_progress="hidden")
                    elif key == "datasets":
                        datasets.build(ctx)
                    elif key == "compare":
                        comps = compare.build(ctx)
                        tab.select(comps["refresh"], outputs=[comps["base"], comps["tuned"], comps["reward"]],
                                   api_name=False, show_progress="hidden")
                    elif key == "jobs":
                        jobs.build(ctx, trained, tabs)
                    else:  # tabs of later issues show a one-line note until they are built
                        ctx.tr(gr.Markdown(t("coming", lang)), "coming", attr="value")

        entries = list(ctx.i18n)

        def switch_language(new_lang: str):
            if new_lang not in LANGUAGES:
                raise gr.Error(f"language: unknown {new_lang!r}; choose one of {', '.join(LANGUAGES)}")
            ctx.settings.set("language", new_lang)
            return [gr.update(**{e.attr: e.render(new_lang)}) for e in entries]

        # .input, not .change: the page-load relabel sets the dropdown's value, which must not switch again
        lang_dd.input(switch_language, inputs=lang_dd, outputs=[e.component for e in entries],
                      api_name="set_language")
        # Another browser may have switched the language since the page was built.
        def relabel_on_load():
            if ctx.lang == lang:  # the page was built in this language
                return [gr.skip() for _ in entries]
            return [gr.update(**{e.attr: e.render(ctx.lang)}) for e in entries]

        demo.load(relabel_on_load, outputs=[e.component for e in entries], api_name=False,
                  show_progress="hidden")
        demo.load(env_load, outputs=env_outputs, api_name=False)
        for comps in trained.values():  # the command preview of each tab's initial form
            demo.load(comps["preview"], inputs=comps["all_inputs"], outputs=comps["command"], api_name=False)
    return demo
