"""Jobs tab: every job of the store; pick one for its log, curves, config and command; Stop, Resume,
Re-run with edits (loads the config into its training tab) and Delete (asks first, never a running job)."""
from __future__ import annotations

import time

import gradio as gr
import pandas as pd
import yaml

from app.context import StudioContext
from app.i18n import t
from app import kinds
from app.jobs import JobError
from app.tabs.plot import curves_widget
from app.tabs.training import (ACTIVE, POLL_SECONDS, Follower, SessionMemo, form_values, format_eta, job_command,
                               progress_html)
from backends.common.errors import FieldError

COLUMNS = ["id", "status", "kind", "recipe", "model", "dataset", "started", "duration", "final_loss"]  # jobs.col.*
COLUMN_WIDTHS = ["19%", "9%", "6%", "12%", "13%", "15%", "10%", "8%", "8%"]  # every column fits at 1400 px


def grouped(jobs: list[dict]) -> list[dict]:
    """Newest first, a pipeline's steps together (in step order) where its newest step stands."""
    out, seen = [], set()
    for j in jobs:
        pid = (j.get("meta") or {}).get("pipeline")
        if not pid:
            out.append(j)
        elif pid not in seen:
            seen.add(pid)
            out += sorted((x for x in jobs if (x.get("meta") or {}).get("pipeline") == pid),
                          key=lambda x: x["meta"].get("step", 0))
    return out


def _recipe_cell(j: dict, lang: str) -> str:
    meta = j.get("meta") or {}
    if not meta.get("pipeline"):
        return j["recipe"]
    head = t("jobs.pipeline_step", lang).format(name=meta.get("pipeline_name") or meta["pipeline"],
                                                step=meta.get("step", "?"))
    return f"{head} · {j['recipe']}" if j["recipe"] else head


def jobs_frame(jobs: list[dict], lang: str = "en") -> pd.DataFrame:
    """The table, headers and statuses in `lang`; the job id is always the first column; a pipeline's steps are
    grouped and named by their pipeline in the recipe column."""
    rows = []
    now = time.time()
    for j in grouped(jobs):
        start, end = j.get("started_at"), j.get("ended_at")
        duration = (end or now) - start if start else None
        rows.append([j["id"], t(f"jobs.status.{j['status']}", lang), j["kind"], _recipe_cell(j, lang), _short(j["model"]),
                     _short(j["dataset"]),
                     time.strftime("%m-%d %H:%M", time.localtime(start)) if start else "—",
                     format_eta(duration) if duration is not None else "—",
                     f"{j['final_loss']:.4f}" if j.get("final_loss") is not None else "—"])
    return pd.DataFrame(rows, columns=[t(f"jobs.col.{c}", lang) for c in COLUMNS])


def _short(path: str, n: int = 40) -> str:
    return path if len(path) <= n else "…" + path[-(n - 1):]


def build(ctx: StudioContext, training_tabs: dict) -> dict:
    """training_tabs: kind -> the dict training.build returned (to load a config for "Re-run with edits")."""
    lang = ctx.lang
    engine = ctx.engine
    with gr.Row():
        table = gr.Dataframe(jobs_frame(engine.list_jobs(), lang), interactive=False, wrap=True,
                             elem_id="jobs-table", max_height=320, column_widths=COLUMN_WIDTHS)
        ctx.tr_fn(table, lambda lang_: jobs_frame(engine.list_jobs(), lang_))
    with gr.Row():
        job_dd = ctx.tr(gr.Dropdown([j["id"] for j in engine.list_jobs()], value=None, label=t("jobs.pick", lang),
                                    elem_id="jobs-pick", scale=3, allow_custom_value=True), "jobs.pick")
        # any id is accepted (an API caller names a job newer than this page's list); the store knows the real ones
        stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", elem_id="jobs-stop"), "train.stop")
        resume_btn = ctx.tr(gr.Button(t("jobs.resume", lang), elem_id="jobs-resume"), "jobs.resume")
        rerun_btn = ctx.tr(gr.Button(t("jobs.rerun", lang), elem_id="jobs-rerun"), "jobs.rerun")
        delete_btn = ctx.tr(gr.Button(t("jobs.delete", lang), elem_id="jobs-delete"), "jobs.delete")
        confirm_btn = ctx.tr(gr.Button(t("jobs.confirm_delete", lang), variant="stop", visible=False,
                                       elem_id="jobs-confirm-delete"), "jobs.confirm_delete")
    with gr.Row():
        with gr.Column(scale=5):
            progress = gr.HTML(progress_html(None, None, lang), elem_id="jobs-progress", js_on_load=None,
                               elem_classes=["studio-progress-box"])
            log = ctx.tr(gr.Textbox(label=t("train.log", lang), lines=20, max_lines=20, autoscroll=True,
                                    interactive=False, elem_id="jobs-log", elem_classes=["studio-log"]), "train.log")
        with gr.Column(scale=4):
            plot = curves_widget(ctx, "jobs-plot", None, lang)  # every series the job logged
            command = ctx.tr(gr.Code(language="shell", label=t("train.command", lang), interactive=False,
                                     wrap_lines=True, elem_id="jobs-command"), "train.command")
            config = ctx.tr(gr.Code(language="yaml", label=t("jobs.config", lang), interactive=False,
                                    elem_id="jobs-config"), "jobs.config")
    memo = SessionMemo()  # what each browser's poll last sent
    timer = gr.Timer(POLL_SECONDS, active=False)  # only while the Jobs tab is shown and something can change
    follower = Follower(engine)

    def table_key(jobs: list[dict]) -> tuple:
        """The table changes when a job appears, goes or changes state; a running job's duration every 10 s."""
        return tuple((j["id"], j["status"], j.get("final_loss"),
                      int(time.time() // 10) if j["status"] in ACTIVE else None) for j in jobs)

    def poll(job_id, sent, fresh: bool):
        sent = dict(sent or {}) if not fresh else {}
        jobs = engine.list_jobs()
        key = (table_key(jobs), ctx.lang)
        if sent.get("table") != key:
            sent["table"] = key
            # choices only: setting the value from a tick sent before the user picked a job would undo the pick
            table_v, dd_v = jobs_frame(jobs, ctx.lang), gr.update(choices=[j["id"] for j in jobs])
        else:
            table_v = dd_v = gr.skip()
        job = None
        if job_id:
            try:
                job = engine.get(job_id)
            except JobError:
                job = None
        prev_job = sent.get("detail_job")
        prog, plot_v, log_v, sent["follow"], following = follower.poll(job, sent.get("follow"), ctx.lang)
        sent["detail_job"] = job_id if job else None
        if sent["detail_job"] != prev_job or fresh:  # command and config change only with the picked job
            cmd_v = job_command(job) if job else ""
            cfg_v = yaml.safe_dump(job["config"], sort_keys=False, allow_unicode=True) if job else ""
        else:
            cmd_v = cfg_v = gr.skip()
        anything_active = any(j["status"] in ACTIVE for j in jobs)
        return table_v, dd_v, prog, log_v, plot_v, cmd_v, cfg_v, sent, following or anything_active

    def tick(job_id, request: gr.Request):
        *outs, sent, live = poll(job_id, memo.get(request), False)
        memo.set(request, sent)
        return (*outs, gr.skip() if live else gr.Timer(active=False))

    def follow(job_id, request: gr.Request):
        *outs, sent, live = poll(job_id, None, True)
        memo.set(request, sent)
        return (*outs, gr.Timer(active=live))

    def details(job_id):
        """The picked job's status line, log, curves, command and config (the job_details API)."""
        *outs, _sent, _live = poll(job_id, None, True)
        return outs[2:]

    def arm(job_id, request: gr.Request):
        """After a pick: remember what details() sent, and follow the job while it can change."""
        *_outs, sent, live = poll(job_id, None, True)
        memo.set(request, sent)
        return gr.Timer(active=live)

    def pick_row(evt: gr.SelectData):
        """A click anywhere in a row picks that row's job (the id is the row's first cell)."""
        row = getattr(evt, "row_value", None)
        if row:
            return row[0]
        idx = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        jobs = engine.list_jobs()
        return jobs[idx]["id"] if isinstance(idx, int) and 0 <= idx < len(jobs) else gr.skip()

    def stop_job(job_id):
        job = engine.get(job_id)
        if job["status"] not in ACTIVE:
            raise JobError(t("jobs.nothing_to_stop", ctx.lang).format(job=job_id, status=job["status"]))
        if job.get("stop_requested"):
            raise JobError(t("train.already_stopping", ctx.lang).format(job=job_id))
        engine.stop(job_id)

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
    # The tab switch happens in the page (a click on the tab's button, which also starts that tab's follower):
    # a gr.Tabs output would make the Gradio 6 frontend re-read every component of the page on each later event.
    stage_slices, placed = {}, {}  # kind -> (index of its tab's stage dropdown, {kind: body column}) in rerun_outputs
    for kind, comps in training_tabs.items():
        if comps.get("stage"):
            stage_dd, bodies = comps["stage"]
            if id(stage_dd) not in placed:  # one tab's dropdown and bodies once, for all of its kinds
                placed[id(stage_dd)] = len(rerun_outputs)
                rerun_outputs += [stage_dd, *bodies.values()]
            stage_slices[kind] = (placed[id(stage_dd)], bodies)
    rerun_kind = gr.Textbox(visible=False, elem_id="jobs-rerun-kind")
    rerun_outputs += [rerun_kind, timer]  # the switch away from Jobs also stops its timer

    def rerun(job_id):
        """Loads the job's config into its training tab and switches to it; the user edits, then Train."""
        out = [gr.skip()] * len(rerun_outputs)
        out[-2] = ""  # no tab switch
        if not job_id:
            gr.Warning(t("jobs.none_selected", ctx.lang))
            return out
        job = engine.get(job_id)
        if job["kind"] not in slices:
            gr.Warning(t("jobs.no_tab", ctx.lang).format(kind=job["kind"]))
            return out
        start, comps = slices[job["kind"]]
        values = form_values(comps["descs"], job["config"], job["launcher"])
        out[start:start + len(values)] = values
        if job["kind"] in stage_slices:  # a tab of several kinds: show the job's kind
            at, bodies = stage_slices[job["kind"]]
            out[at:at + 1 + len(bodies)] = [job["kind"], *[gr.Column(visible=k == job["kind"]) for k in bodies]]
        out[-2], out[-1] = kinds.get(job["kind"]).tab, gr.Timer(active=False)
        gr.Info(t("jobs.loaded", ctx.lang).format(job=job_id))
        return out

    poll_outputs = [table, job_dd, progress, log, plot, command, config, timer]
    detail_outs = [progress, log, plot, command, config]
    timer.tick(tick, inputs=job_dd, outputs=poll_outputs, show_progress="hidden", api_name=False)
    table.select(pick_row, outputs=job_dd, api_name=False)
    job_dd.change(details, inputs=job_dd, outputs=detail_outs, api_name="job_details").then(
        arm, inputs=job_dd, outputs=timer, api_name=False, show_progress="hidden")
    for btn, fn, ok in ((stop_btn, stop_job, "jobs.stopped"), (resume_btn, engine.resume, "jobs.resumed")):
        btn.click(act(fn, ok), inputs=job_dd, api_name="job_stop" if btn is stop_btn else "job_resume").then(
            follow, inputs=job_dd, outputs=poll_outputs, api_name=False, show_progress="hidden")
    rerun_btn.click(rerun, inputs=job_dd, outputs=rerun_outputs, api_name="job_rerun_with_edits").then(
        None, inputs=rerun_kind, api_name=False,
        js="(kind) => { const b = kind && document.querySelector(`button[role=tab][data-tab-id='${kind}']`);"
           " if (b) b.click(); return []; }")
    delete_btn.click(lambda: gr.update(visible=True), outputs=confirm_btn, api_name=False)
    confirm_btn.click(act(engine.delete, "jobs.deleted"), inputs=job_dd, api_name="job_delete").then(
        lambda: gr.update(visible=False), outputs=confirm_btn, api_name=False).then(
        follow, inputs=job_dd, outputs=poll_outputs, api_name=False, show_progress="hidden")
    return {"timer": timer, "follow": (follow, [job_dd], poll_outputs)}
