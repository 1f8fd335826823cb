"""Builds the page: A1111 layout, tabs across the top, one module per tab in app/tabs/."""
from __future__ import annotations

import gradio as gr

from app.context import StudioContext
from app.i18n import LANGUAGES, t
from app.tabs import environment

CSS = """
#studio-header h1 { margin-bottom: 0; }
.studio-train-btn { background: #f97316 !important; color: white !important; }
#env-report-md table { font-size: 0.9em; }
"""

# Tabs of later issues show a one-line note until they are built.
COMING_TABS = ["datasets", "sft", "reward", "rlhf", "pipeline", "sd_lora", "jobs", "compare"]


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
        with gr.Tabs(elem_id="studio-tabs"):
            with ctx.tr(gr.Tab(t("tab.environment", lang), id="environment", elem_id="tab-environment"),
                        "tab.environment"):
                env_load, env_outputs = environment.build(ctx)
            for key in COMING_TABS:
                with ctx.tr(gr.Tab(t(f"tab.{key}", lang), id=key, elem_id=f"tab-{key}"), f"tab.{key}"):
                    ctx.tr(gr.Markdown(t("coming", lang)), "coming", attr="value")

        entries = list(ctx.i18n)

        def switch_language(new_lang: str):
            if new_lang not in LANGUAGES:
                raise gr.Error(f"language: unknown {new_lang!r}; choose one of {', '.join(LANGUAGES)}")
            ctx.settings.set("language", new_lang)
            return [gr.update(**{e.attr: e.render(new_lang)}) for e in entries]

        lang_dd.change(switch_language, inputs=lang_dd, outputs=[e.component for e in entries],
                       api_name="set_language")
        # Another browser may have switched the language since the page was built.
        def relabel_on_load():
            if ctx.lang == lang:  # the page was built in this language
                return [gr.skip() for _ in entries]
            return [gr.update(**{e.attr: e.render(ctx.lang)}) for e in entries]

        demo.load(relabel_on_load, outputs=[e.component for e in entries], api_name=False,
                  show_progress="hidden")
        demo.load(env_load, outputs=env_outputs, api_name=False)
    return demo
