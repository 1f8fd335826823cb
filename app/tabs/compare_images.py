"""Image A/B (a sub-tab of the A/B compare tab): the base pipeline with CFG vs a guidance-distilled result.

Same prompt, negative prompt, seed, steps, size and sampler on both sides; the distilled side runs its LoRA at
the weight slider (or the full student) without guidance, and LCM-LoRA with its scheduler and steps. Each
image shows the seconds and UNet passes it took; the PNGs are saved under `<data-dir>/compare/images/` with
A1111 infotext. Grid mode: rows = prompt × seed, columns = base | distilled, one PNG. PNG info reads a dropped
PNG's `parameters` text. Named endpoints: /txt2img_ab, /txt2img_grid, /png_info. The work runs in
backends.infer.txt2img (no job).
"""
from __future__ import annotations

import time

import gradio as gr

from app.context import StudioContext
from app.i18n import t
from backends.common.errors import FieldError
from backends.infer import txt2img as ti

# A FieldError's field -> the i18n key of the widget that shows it (its label names it in the message).
FIELD_LABELS = {"base_model": "img.base", "finetuned_model": "img.distilled", "prompt": "img.prompt",
                "negative_prompt": "img.negative", "seed": "img.seed", "steps": "img.steps", "width": "img.width",
                "height": "img.height", "guidance_scale": "img.cfg", "sampler": "img.sampler",
                "lora_weight": "img.lora_weight", "prompts": "img.grid_prompts", "seeds": "img.grid_seeds"}


def field_message(e: FieldError, lang: str) -> str:
    key = FIELD_LABELS.get(e.field)
    return f"{t(key, lang) if key else e.field}: {e.message}"


def base_choices(data_dir, lang: str) -> list[tuple[str, str]]:
    return [(t("img.base_auto", lang), ""), *ti.pipeline_choices(data_dir)]


def distilled_choices(ctx: StudioContext) -> list[tuple[str, str]]:
    jobs = ctx.engine.list_jobs() if ctx.engine is not None else None
    return ti.distilled_choices(ctx.data_dir, jobs)


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in str(text or "").replace(",", " ").split()]
    except ValueError:
        raise FieldError("seeds", f"must be whole numbers separated by commas, got {text!r}") from None
    if not seeds:
        raise FieldError("seeds", "is empty: one or more whole numbers, comma-separated")
    if len(seeds) > 8:
        raise FieldError("seeds", f"at most 8 seeds, got {len(seeds)}")
    return seeds


def _out_dir(ctx: StudioContext):
    d = ctx.data_dir / "compare" / "images"
    d.mkdir(parents=True, exist_ok=True)
    return d


def took(r: ti.Result, lang: str) -> str:
    return t("img.took", lang).format(secs=f"{r.seconds:.2f}", passes=r.unet_passes)


def build(ctx: StudioContext) -> dict:
    lang = ctx.lang
    jobs = distilled_choices(ctx)
    with gr.Row():
        base_dd = ctx.tr(gr.Dropdown(base_choices(ctx.data_dir, lang), value="", allow_custom_value=True,
                                     label=t("img.base", lang), elem_id="img-base", scale=3), "img.base")
        dist_dd = ctx.tr(gr.Dropdown(jobs, value=jobs[0][1] if jobs else None, allow_custom_value=True,
                                     label=t("img.distilled", lang), elem_id="img-distilled", scale=4,
                                     info="" if jobs else t("img.no_job", lang)), "img.distilled")
        refresh_btn = ctx.tr(gr.Button(t("ab.refresh", lang), size="sm", elem_id="img-refresh", scale=0,
                                       min_width=120), "ab.refresh")
    with gr.Row():
        prompt = ctx.tr(gr.Textbox("a red circle", label=t("img.prompt", lang), lines=2, elem_id="img-prompt",
                                   scale=3), "img.prompt")
        negative = ctx.tr(gr.Textbox("", label=t("img.negative", lang), lines=2, elem_id="img-negative", scale=2),
                          "img.negative")
    with gr.Row():
        seed = ctx.tr(gr.Number(ti.REFERENCE_SEED, precision=0, label=t("img.seed", lang), elem_id="img-seed",
                                min_width=120), "img.seed")
        steps = ctx.tr(gr.Number(ti.DEFAULT_STEPS, precision=0, label=t("img.steps", lang), elem_id="img-steps",
                                 min_width=90), "img.steps")
        width = ctx.tr(gr.Number(0, precision=0, label=t("img.width", lang), elem_id="img-width", min_width=90),
                       "img.width")
        height = ctx.tr(gr.Number(0, precision=0, label=t("img.height", lang), elem_id="img-height", min_width=90),
                        "img.height")
        first_g = ti.distilled_guidance(jobs[0][1], ctx.data_dir) if jobs else None
        cfg = ctx.tr(gr.Number(ti.DEFAULT_GUIDANCE if first_g is None else first_g, label=t("img.cfg", lang),
                               elem_id="img-cfg", min_width=90),
                     "img.cfg")
        sampler = ctx.tr(gr.Dropdown([s for s in ti.SAMPLERS if s != "LCM"], value=ti.DEFAULT_SAMPLER,
                                     label=t("img.sampler", lang), elem_id="img-sampler", min_width=120), "img.sampler")
        weight = ctx.tr(gr.Slider(0.0, 1.0, value=1.0, step=0.05, label=t("img.lora_weight", lang),
                                  elem_id="img-weight", min_width=160), "img.lora_weight")
    ctx.tr_fn(gr.Markdown(t("img.size_help", lang), elem_id="img-size-help"), lambda lang_: t("img.size_help", lang_))
    generate_btn = ctx.tr(gr.Button(t("img.generate", lang), variant="primary", elem_classes=["studio-train-btn"],
                                    elem_id="img-generate"), "img.generate")
    with gr.Row():
        with gr.Column():
            img_a = ctx.tr(gr.Image(label=t("img.base_side", lang), type="filepath", interactive=False, height=320,
                                    format="png", elem_id="img-a"), "img.base_side")
            took_a = gr.Markdown("", elem_id="img-took-a")
        with gr.Column():
            img_b = ctx.tr(gr.Image(label=t("img.distilled_side", lang), type="filepath", interactive=False,
                                    height=320, format="png", elem_id="img-b"), "img.distilled_side")
            took_b = gr.Markdown("", elem_id="img-took-b")
    status = gr.Markdown("", elem_id="img-status")

    with ctx.tr(gr.Accordion(t("img.grid", lang), open=False, elem_id="img-grid-acc"), "img.grid"):
        with gr.Row():
            grid_prompts = ctx.tr(gr.Textbox("\n".join(ti.default_prompts()), lines=5,
                                             label=t("img.grid_prompts", lang), elem_id="img-grid-prompts", scale=4),
                                  "img.grid_prompts")
            with gr.Column(scale=1, min_width=160):
                grid_seeds = ctx.tr(gr.Textbox(str(ti.REFERENCE_SEED), label=t("img.grid_seeds", lang),
                                               elem_id="img-grid-seeds", max_lines=1), "img.grid_seeds")
                grid_btn = ctx.tr(gr.Button(t("img.grid_run", lang), variant="primary", elem_id="img-grid-run"),
                                  "img.grid_run")
        grid_img = gr.Image(type="filepath", interactive=False, format="png", show_label=False, elem_id="img-grid")
        grid_status = gr.Markdown("", elem_id="img-grid-status")

    with ctx.tr(gr.Accordion(t("img.png_info", lang), open=False, elem_id="img-pnginfo-acc"), "img.png_info"):
        with gr.Row():
            png_in = ctx.tr(gr.File(label=t("img.png_drop", lang), file_types=[".png"], type="filepath",
                                    elem_id="img-png-in"), "img.png_drop")
            png_text = ctx.tr(gr.Textbox("", label=t("img.png_text", lang), lines=6, interactive=False,
                                         buttons=["copy"], elem_id="img-png-text"), "img.png_text")

    def settings(p, neg, sd, st, w, h, g, smp, lw, **kw) -> ti.ImageSettings:
        return ti.ImageSettings(prompt=p, negative_prompt=neg or "", seed=sd if sd is not None else -1,
                                steps=st, width=w or 0, height=h or 0, guidance_scale=g, sampler=smp,
                                lora_weight=lw, **kw)

    def run_pair(base, dist, p, neg, sd, st, w, h, g, smp, lw):
        try:
            s = ti.check_settings(settings(p, neg, sd, st, w, h, g, smp, lw))
            rb, rd = ti.generate_pair(s, base_model=base or "", finetuned=dist or "", data_dir=ctx.data_dir)
        except FieldError as e:
            msg = field_message(e, ctx.lang)
            gr.Warning(msg)
            return gr.update(), gr.update(), gr.update(), gr.update(), f"⚠ {msg}"
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = _out_dir(ctx)
        pa = ti.save_png(rb.image, out / f"{stamp}-{s.seed}-base.png", rb.infotext)
        pb = ti.save_png(rd.image, out / f"{stamp}-{s.seed}-distilled.png", rd.infotext)
        ratio = rd.seconds / max(rb.seconds, 1e-9)
        return (str(pa), str(pb), took(rb, ctx.lang), took(rd, ctx.lang),
                t("img.done", ctx.lang).format(ratio=f"{ratio:.2f}", seed=s.seed, dir=out))

    def run_grid(base, dist, prompts_text, seeds_text, neg, st, w, h, g, smp, lw):
        try:
            seeds = parse_seeds(seeds_text)
            prompts = [x.strip() for x in str(prompts_text or "").splitlines() if x.strip()]
            if not prompts:
                raise FieldError("prompts", "is empty: one prompt per line")
            s = ti.check_settings(settings(prompts[0], neg, seeds[0], st, w, h, g, smp, lw))
            canvas, results = ti.grid(prompts, seeds, s, base_model=base or "", finetuned=dist or "",
                                      data_dir=ctx.data_dir)
        except FieldError as e:
            msg = field_message(e, ctx.lang)
            gr.Warning(msg)
            return gr.update(), f"⚠ {msg}"
        first_b, first_d = results[0]
        params = ti.parse_infotext(first_d.infotext)
        text = ti.infotext(" | ".join(prompts), s.negative_prompt, {
            "Steps": s.steps, "Sampler": s.sampler, "CFG scale": s.guidance_scale,
            "Seed": ", ".join(map(str, seeds)), "Size": params.get("Size"), "Model": ti.parse_infotext(
                first_b.infotext).get("Model"), "Lora": params.get("Lora"), "Lora weight": params.get("Lora weight"),
            "Grid": f"{len(results)} rows (prompt × seed) × base | distilled"})
        path = ti.save_png(canvas, _out_dir(ctx) / f"{time.strftime('%Y%m%d-%H%M%S')}-grid.png", text)
        sb = sum(b.seconds for b, _ in results) / len(results)
        sd_ = sum(d.seconds for _, d in results) / len(results)
        return str(path), t("img.grid_done", ctx.lang).format(rows=len(results), base=f"{sb:.2f}", dist=f"{sd_:.2f}",
                                                              path=path.name)

    def png_info(path):
        if not path:
            return ""
        try:
            text = ti.png_parameters(path)
        except (OSError, ValueError):
            return t("img.png_bad", ctx.lang)
        return text or t("img.png_none", ctx.lang)

    def refresh():
        js = distilled_choices(ctx)
        return (gr.update(choices=base_choices(ctx.data_dir, ctx.lang)),
                gr.update(choices=js, info="" if js else t("img.no_job", ctx.lang)))

    common = [negative, steps, width, height, cfg, sampler, weight]
    generate_btn.click(run_pair, inputs=[base_dd, dist_dd, prompt, negative, seed, steps, width, height, cfg, sampler,
                                         weight],
                       outputs=[img_a, img_b, took_a, took_b, status], api_name="txt2img_ab", concurrency_limit=1,
                       concurrency_id="img-generate")
    grid_btn.click(run_grid, inputs=[base_dd, dist_dd, grid_prompts, grid_seeds, *common],
                   outputs=[grid_img, grid_status], api_name="txt2img_grid", concurrency_limit=1,
                   concurrency_id="img-generate")
    png_in.change(png_info, inputs=png_in, outputs=png_text, api_name="png_info")
    refresh_btn.click(refresh, outputs=[base_dd, dist_dd], api_name=False)

    def teacher_cfg(dist):  # the base side runs at the scale the distilled side learnt (its studio.json)
        g = ti.distilled_guidance(dist, ctx.data_dir) if dist else None
        return gr.update(value=g) if g is not None else gr.update()

    dist_dd.change(teacher_cfg, inputs=dist_dd, outputs=cfg, api_name=False)
    return {"base": base_dd, "distilled": dist_dd, "refresh": refresh}
