"""The Reward model tab's own block under the shared training body: "score a pair" (DeepSpeed-Chat's rw_eval.py).

Prompt + two answers -> both scores from any finished reward job (or a 1-label folder under models/), with the
prompt rendered the way the reward model was trained (backends.infer.chat.score_pair).
"""
from __future__ import annotations

import gradio as gr

from app.context import StudioContext
from app.i18n import t
from app.tabs.compare import reward_choices, template_choices
from backends.common.errors import FieldError
from backends.infer import chat


def build_score_pair(ctx: StudioContext) -> dict:
    lang = ctx.lang
    engine = ctx.engine
    with ctx.tr(gr.Accordion(t("rm.score_title", lang), open=False, elem_id="rm-score"), "rm.score_title"):
        with gr.Row():
            model = ctx.tr(gr.Dropdown(reward_choices(engine, ctx.data_dir), value="", allow_custom_value=True,
                                       label=t("rm.model", lang), elem_id="rm-score-model", scale=3), "rm.model")
            template = ctx.tr(gr.Dropdown(template_choices(lang), value="auto", label=t("rm.template", lang),
                                          elem_id="rm-score-template", scale=1), "rm.template")
            ctx.tr_fn(template, template_choices, attr="choices")
        prompt = ctx.tr(gr.Textbox(lines=2, label=t("rm.prompt", lang), elem_id="rm-score-prompt"), "rm.prompt")
        with gr.Row():
            a = ctx.tr(gr.Textbox(lines=3, label=t("rm.answer_a", lang), elem_id="rm-score-a"), "rm.answer_a")
            b = ctx.tr(gr.Textbox(lines=3, label=t("rm.answer_b", lang), elem_id="rm-score-b"), "rm.answer_b")
        btn = ctx.tr(gr.Button(t("rm.score", lang), elem_id="rm-score-btn"), "rm.score")
        result = gr.Markdown("", elem_id="rm-score-result")

    def score(reward_model: str, prompt: str, answer_a: str, answer_b: str, template: str = "auto") -> str:
        """Both answers' scores (higher is better) as one line; the API returns the same text."""
        try:
            if not str(reward_model or "").strip():
                raise FieldError("reward_model", "pick a finished reward job (train one above) or a folder")
            (sa, sb), _tmpl = chat.score_pair(reward_model, prompt, [answer_a, answer_b], template, ctx.data_dir)
        except FieldError as e:
            raise gr.Error(f"{e.field}: {e.message}") from None
        key = "rm.tie" if sa == sb else "rm.result"
        return t(key, ctx.lang).format(a=sa, b=sb, better="A" if sa > sb else "B")

    def refresh():
        return gr.update(choices=reward_choices(engine, ctx.data_dir))

    btn.click(score, inputs=[model, prompt, a, b, template], outputs=result, api_name="reward_score_pair")
    return {"model": model, "refresh": refresh}
