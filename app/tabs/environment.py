"""Environment tab: hardware, CUDA, versions, DeepSpeed ops, bundled models, memory estimator."""
from __future__ import annotations

import threading

import gradio as gr

from app import envcheck, estimator
from app.context import StudioContext
from app.i18n import t
from backends.bundled.tiny_sd_shapes import BUILD_MINUTES
from backends.common.errors import FieldError

_report_cache: dict = {}
_report_lock = threading.Lock()


def get_report(ctx: StudioContext, refresh: bool = False) -> dict:
    """The report is computed once per process (imports torch and deepspeed: ~3 s) and on Refresh."""
    with _report_lock:
        if refresh or "report" not in _report_cache:
            _report_cache["report"] = envcheck.collect(ctx.data_dir, ctx.offline)
        else:  # bundled status is cheap and changes while preparing: always fresh
            _report_cache["report"]["bundled"] = envcheck.bundled_status(ctx.data_dir)
        return _report_cache["report"]


def warm_up(ctx: StudioContext) -> None:
    threading.Thread(target=get_report, args=(ctx,), daemon=True).start()


def _hardware(report: dict) -> tuple[list[dict], float]:
    gpus = [{"name": d["name"], "memory_gb": d["memory_gb"]} for d in report["torch"]["devices"]]
    return gpus, report["system"]["ram_free_gb"]


def method_choices(lang: str) -> list[tuple[str, str]]:
    return [(t("est.full", lang), "full"), (t("est.lora", lang), "lora")]


def target_choices(lang: str) -> list[tuple[str, str]]:
    """"" is the detected hardware; the others are the estimator's GPU table."""
    return [(t("est.detected", lang), ""), *((g, g) for g in estimator.GPU_TABLE)]


def build(ctx: StudioContext):
    """Builds the tab; returns (fn, outputs) for the page-load event and its poller (timer, follow handler)."""
    lang = ctx.lang
    with gr.Row():
        refresh = ctx.tr(gr.Button(t("env.refresh", lang), elem_id="env-refresh", scale=0), "env.refresh")
    with gr.Row():
        with gr.Column(scale=3):
            report_md = gr.Markdown(t("env.reading", lang), elem_id="env-report-md")
        with gr.Column(scale=2):
            bundled_md = gr.Markdown(elem_id="env-bundled-md")
            prepare_btn = ctx.tr(gr.Button(t("env.prepare", lang), elem_id="env-prepare", variant="primary"),
                                 "env.prepare")
            shapes_label = lambda lang_: t("env.prepare_shapes", lang_).format(BUILD_MINUTES)  # noqa: E731
            shapes_btn = ctx.tr_fn(gr.Button(shapes_label(lang), elem_id="env-prepare-shapes", size="sm"),
                                   shapes_label)
            prepare_log = ctx.tr(gr.Textbox(label=t("env.prepare_log", lang), lines=8, max_lines=8,
                                            autoscroll=True, interactive=False, elem_id="env-prepare-log"),
                                 "env.prepare_log")
            report_txt = ctx.tr(gr.Textbox(label=t("env.report", lang), lines=10, max_lines=14,
                                           interactive=False, buttons=["copy"], elem_id="env-report-text"),
                                "env.report")

    with ctx.tr(gr.Accordion(t("env.estimator", lang), open=True, elem_id="env-estimator"), "env.estimator"):
        with gr.Row():
            with gr.Column(scale=2):
                e_model = ctx.tr(gr.Textbox(value="opt-1.3b", label=t("est.model", lang), elem_id="est-model"),
                                 "est.model")
                with gr.Row():
                    e_method = ctx.tr(gr.Radio(method_choices(lang), value="full", label=t("est.method", lang),
                                               elem_id="est-method"), "est.method")
                    ctx.tr_fn(e_method, method_choices, attr="choices")
                    e_rank = ctx.tr(gr.Textbox(value="8", label=t("est.lora_rank", lang), elem_id="est-rank"),
                                    "est.lora_rank")
                    e_prec = ctx.tr(gr.Radio(["bf16", "fp16", "fp32"], value="bf16",
                                             label=t("est.precision", lang), elem_id="est-precision"),
                                    "est.precision")
                with gr.Row():
                    e_zero = ctx.tr(gr.Dropdown([0, 1, 2, 3], value=2, label=t("est.zero_stage", lang),
                                                elem_id="est-zero"), "est.zero_stage")
                    e_off = ctx.tr(gr.Checkbox(False, label=t("est.offload", lang), elem_id="est-offload"),
                                   "est.offload")
                    e_ckpt = ctx.tr(gr.Checkbox(False, label=t("est.grad_ckpt", lang), elem_id="est-ckpt"),
                                    "est.grad_ckpt")
                with gr.Row():
                    e_gpus = ctx.tr(gr.Textbox(value="1", label=t("est.num_gpus", lang), elem_id="est-gpus"),
                                    "est.num_gpus")
                    e_nodes = ctx.tr(gr.Textbox(value="1", label=t("est.num_nodes", lang), elem_id="est-nodes"),
                                     "est.num_nodes")
                    e_mb = ctx.tr(gr.Textbox(value="4", label=t("est.micro_batch", lang), elem_id="est-mb"),
                                  "est.micro_batch")
                    e_seq = ctx.tr(gr.Textbox(value="512", label=t("est.seq_len", lang), elem_id="est-seq"),
                                   "est.seq_len")
                with gr.Row():
                    e_target = ctx.tr(gr.Dropdown(target_choices(lang), value="", label=t("est.target_gpu", lang),
                                                  elem_id="est-target"), "est.target_gpu")
                    e_critic = ctx.tr(gr.Textbox("", label=t("est.critic", lang), placeholder="opt-350m",
                                                 elem_id="est-critic"), "est.critic")
                ctx.tr_fn(e_target, target_choices, attr="choices")
                e_run = ctx.tr(gr.Button(t("est.run", lang), variant="primary", elem_id="est-run"), "est.run")
            with gr.Column(scale=3):
                e_out = gr.Markdown(elem_id="est-result")

    def show_report(refresh_: bool = False):
        report = get_report(ctx, refresh=refresh_)
        return (envcheck.to_markdown(report, ctx.lang), envcheck.bundled_markdown(report, ctx.lang),
                envcheck.to_text(report, ctx.lang))

    # a language switch renders the report again (the report itself is cached)
    ctx.tr_fn(report_md, lambda lang_: envcheck.to_markdown(get_report(ctx), lang_))
    ctx.tr_fn(bundled_md, lambda lang_: envcheck.bundled_markdown(get_report(ctx), lang_))
    ctx.tr_fn(report_txt, lambda lang_: envcheck.to_text(get_report(ctx), lang_))

    def on_refresh():
        return show_report(True)

    def on_prepare(only: str | None = None):
        if not ctx.preparer.start(only):
            gr.Info(t("msg.prepare_running", ctx.lang))
        else:
            gr.Info(t("msg.preparing", ctx.lang))
        return ctx.preparer.log_tail(lang=ctx.lang)

    # follows a preparation only while one runs (app/ui.py also switches it off on the other tabs)
    poll_timer = gr.Timer(2.0, active=False)

    def poll():
        report = get_report(ctx)
        return (envcheck.bundled_markdown(report, ctx.lang), ctx.preparer.log_tail(lang=ctx.lang),
                gr.skip() if ctx.preparer.running else gr.Timer(active=False))

    def follow():
        return gr.Timer(active=ctx.preparer.running)

    def run_estimate(model, method, rank, prec, zero, off, ckpt, gpus, nodes, mb, seq, target, critic=""):
        gpu_list, ram = _hardware(get_report(ctx))
        named_target = target if target in estimator.GPU_TABLE else None
        try:
            if str(critic or "").strip():  # PPO: actor + critic trained, reference + reward model frozen
                lora = rank if method == "lora" else 0
                return estimator.estimate_ppo(model, critic, lora, lora, precision=prec, zero_stage=zero,
                                              offload=off, num_gpus=gpus, num_nodes=nodes, micro_batch=mb,
                                              seq_len=seq, grad_checkpointing=ckpt, data_dir=ctx.data_dir).to_markdown()
            est = estimator.estimate(model=model, method=method, lora_rank=rank, precision=prec,
                                     zero_stage=zero, offload=off, num_gpus=gpus, num_nodes=nodes,
                                     micro_batch=mb, seq_len=seq, grad_checkpointing=ckpt,
                                     gpus=gpu_list, host_ram_gb=ram, target_gpu=named_target,
                                     data_dir=ctx.data_dir)
        except FieldError as e:
            gr.Warning(str(e))
            return f"**⚠️ {e.field}**: {e.message}"
        return estimator.to_markdown(est)

    outs = [report_md, bundled_md, report_txt]
    refresh.click(on_refresh, outputs=outs, api_name="environment_refresh")
    prepare_btn.click(on_prepare, outputs=prepare_log, api_name="prepare_bundled").then(
        lambda: gr.Timer(active=True), outputs=poll_timer, api_name=False, show_progress="hidden")
    shapes_btn.click(lambda: on_prepare("shapes"), outputs=prepare_log, api_name="prepare_shapes").then(
        lambda: gr.Timer(active=True), outputs=poll_timer, api_name=False, show_progress="hidden")
    poll_timer.tick(poll, outputs=[bundled_md, prepare_log, poll_timer], show_progress="hidden", api_name=False)
    e_inputs = [e_model, e_method, e_rank, e_prec, e_zero, e_off, e_ckpt, e_gpus, e_nodes, e_mb, e_seq, e_target,
                e_critic]
    e_run.click(run_estimate, inputs=e_inputs, outputs=e_out, api_name="estimate_memory")
    # The page load fills the report (computed once per process, warmed in the background at start).
    return show_report, outs, {"timer": poll_timer, "follow": (follow, [], [poll_timer])}
