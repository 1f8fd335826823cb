"""Jobs tab: every job of the store; pick one for its log, curves, config and command; Stop, Resume,
Re-run with edits (loads the config into its training tab) and Delete (asks first, never a running job)."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd
import yaml

from app.context import StudioContext
from app.i18n import t
from app.jobs import JobError
from app.tabs.training import form_values, format_eta, metrics_frame, progress_html
from backends.common.errors import FieldError

COLUMNS = ["id", "status", "kind", "recipe", "model", "dataset", "started", "duration", "final_loss"]  # jobs.col.*


def jobs_frame(jobs: list[dict], lang: str = "en") -> pd.DataFrame:
    """The table, headers and statuses in `lang`; the job id is always the first column."""
    rows = []
    now = time.time()
    for j in jobs:
        start, end = j.get("started_at"), j.get("ended_at")
        duration = (end or now) - start if start else None
        rows.append([j["id"], t(f"jobs.status.{j['status']}", lang), j["kind"], j["recipe"], _short(j["model"]),
                     _short(j["dataset"]),
                     time.strftime("%m-%d %H:%M", time.localtime(start)) if start else "—",
                     format_eta(duration) if duration is not None else "—",
                     f"{j['final_loss']:.4f}" if j.get("final_loss") is not None else "—"])
    return pd.DataFrame(rows, columns=[t(f"jobs.col.{c}", lang) for c in COLUMNS])


def _short(path: str, n: int = 40) -> str:
    return path if len(path) <= n else "…" + path[-(n - 1):]


def build(ctx: StudioContext, training_tabs: dict, tabs: gr.Tabs) -> None:
    """training_tabs: kind -> the dict training.build returned (to load a config for "Re-run with edits")."""
    lang = ctx.lang
    engine = ctx.engine
    with gr.Row():
        table = gr.Dataframe(jobs_frame(engine.list_jobs(), lang), interactive=False, wrap=True,
                             elem_id="jobs-table", max_height=320)
        ctx.tr_fn(table, lambda lang_: jobs_frame(engine.list_jobs(), lang_))
    with gr.Row():
        job_dd = ctx.tr(gr.Dropdown([j["id"] for j in engine.list_jobs()], value=None, label=t("jobs.pick", lang),
                                    elem_id="jobs-pick", scale=3, allow_custom_value=False), "jobs.pick")
        stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", elem_id="jobs-stop"), "train.stop")
        resume_btn = ctx.tr(gr.Button(t("jobs.resume", lang), elem_id="jobs-resume"), "jobs.resume")
        rerun_btn = ctx.tr(gr.Button(t("jobs.rerun", lang), elem_id="jobs-rerun"), "jobs.rerun")
        delete_btn = ctx.tr(gr.Button(t("jobs.delete", lang), elem_id="jobs-delete"), "jobs.delete")
        confirm_btn = ctx.tr(gr.Button(t("jobs.confirm_delete", lang), variant="stop", visible=False,
                                       elem_id="jobs-confirm-delete"), "jobs.confirm_delete")
    with gr.Row():
        with gr.Column(scale=5):
            progress = gr.HTML(progress_html(None, None), elem_id="jobs-progress")
            log = ctx.tr(gr.Textbox(label=t("train.log", lang), lines=20, max_lines=20, autoscroll=True,
                                    interactive=False, elem_id="jobs-log"), "train.log")
        with gr.Column(scale=4):
            plot = gr.LinePlot(metrics_frame([]), x="step", y="value", color="series", height=240,
                               label=t("train.curves", lang), elem_id="jobs-plot")
            command = ctx.tr(gr.Code(language="shell", label=t("train.command", lang), interactive=False,
                                     elem_id="jobs-command"), "train.command")
            config = ctx.tr(gr.Code(language="yaml", label=t("jobs.config", lang), interactive=False,
                                    elem_id="jobs-config"), "jobs.config")

    def refresh_table():
        jobs = engine.list_jobs()
        # choices only: setting the value from a tick sent before the user picked a job would undo the pick
        return jobs_frame(jobs, ctx.lang), gr.update(choices=[j["id"] for j in jobs])

    def details(job_id):
        if not job_id:
            return progress_html(None, None), "", metrics_frame([]), "", ""
        try:
            job = engine.get(job_id)
        except JobError:
            return progress_html(None, None), "", metrics_frame([]), "", ""
        run_dir = job["run_dir"]
        try:
            cmd = open(f"{run_dir}/command.sh", encoding="utf-8").read()
        except OSError:
            cmd = job["command"]
        return (progress_html(job, engine.progress(job_id)), engine.read_log_tail(job_id, 40_000),
                metrics_frame(engine.read_metrics(job_id)), cmd,
                yaml.safe_dump(job["config"], sort_keys=False, allow_unicode=True))

    def pick_row(evt: gr.SelectData, df):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return df.iloc[row, 0]  # the id column, whatever the language of its header

    def act(fn, ok_key):
        def run(job_id):
            if not job_id:
                gr.Warning(t("jobs.none_selected", ctx.lang))
                return
            try:
                fn(job_id)
            except (JobError, FieldError) as e:
                gr.Warning(str(e))
                return
            gr.Info(t(ok_key, ctx.lang).format(job=job_id))
        return run

    # "Re-run with edits" can fill any training tab: its outputs are every tab's form, plus the tab switch.
    rerun_outputs, slices = [], {}
    for kind, comps in training_tabs.items():
        form = [*[comps["fields"][d["name"]] for d in comps["descs"]], *comps["launch_inputs"]]
        slices[kind] = (len(rerun_outputs), comps)
        rerun_outputs += form
    rerun_outputs.append(tabs)

    def rerun(job_id):
        """Loads the job's config into its training tab and switches to it; the user edits, then Train."""
        out = [gr.skip()] * len(rerun_outputs)
        if not job_id:
            gr.Warning(t("jobs.none_selected", ctx.lang))
            return out
        job = engine.get(job_id)
        if job["kind"] not in slices:
            gr.Warning(f"{job['kind']}: no training tab to edit this job in")
            return out
        start, comps = slices[job["kind"]]
        values = form_values(comps["descs"], job["config"], job["launcher"])
        out[start:start + len(values)] = values
        out[-1] = gr.Tabs(selected=job["kind"])
        gr.Info(t("jobs.loaded", ctx.lang).format(job=job_id))
        return out

    detail_outs = [progress, log, plot, command, config]
    gr.Timer(2.0).tick(refresh_table, outputs=[table, job_dd], show_progress="hidden")
    gr.Timer(1.0).tick(details, inputs=job_dd, outputs=detail_outs, show_progress="hidden")
    table.select(pick_row, inputs=table, outputs=job_dd, api_name=False)
    job_dd.change(details, inputs=job_dd, outputs=detail_outs, api_name="job_details")
    stop_btn.click(act(engine.stop, "jobs.stopped"), inputs=job_dd, api_name="job_stop")
    resume_btn.click(act(engine.resume, "jobs.resumed"), inputs=job_dd, api_name="job_resume")
    rerun_btn.click(rerun, inputs=job_dd, outputs=rerun_outputs, api_name="job_rerun_with_edits")
    delete_btn.click(lambda: gr.update(visible=True), outputs=confirm_btn, api_name=False)
    confirm_btn.click(act(engine.delete, "jobs.deleted"), inputs=job_dd, api_name="job_delete").then(
        lambda: gr.update(visible=False), outputs=confirm_btn, api_name=False)
