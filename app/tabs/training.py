"""The shared body of every training tab (SFT now; reward model, RLHF, DPO and SD LoRA later).

One declaration drives the form: the backend's option dataclass (through
`backends.common.config.field_descriptors`) gives each field its widget, label, tooltip and range.
The tab adds the recipe dropdown, the launcher block, the live command preview, Train / Stop, the log,
progress with ETA and the loss plot. Jobs run in the engine, outside any browser session, so every
browser sees the same job and a reload re-attaches to it.
"""
from __future__ import annotations

import dataclasses
import html
from typing import Any, Callable

import gradio as gr
import pandas as pd
import yaml

from app.context import StudioContext
from app.i18n import t
from app.jobs.launcher import LaunchSpec
from backends.common import config as cfgmod
from backends.common import paths
from backends.common.errors import FieldError

RECIPES_DIR = paths.ROOT / "presets" / "recipes"
# Fields the engine owns: not shown in the form.
ENGINE_FIELDS = {"run_dir", "deepspeed", "resume_from_checkpoint", "data_dir", "recipe"}
GROUP_ORDER = ["model", "data", "training", "lora", "output"]
LAUNCHERS = ["accelerate", "deepspeed", "python"]
PRESETS = ["cpu", "single_gpu", "multi_gpu", "multi_node"]
ZERO_CHOICES = ["none", "0", "1", "2", "3"]


@dataclasses.dataclass
class TrainingKind:
    kind: str                       # engine kind and backends.<kind> module, e.g. "sft"
    schema: type                    # the backend's option dataclass
    validate: Callable[[Any], None]  # cheap validation, no model load; raises FieldError
    default_recipe: str


def load_recipes(kind: str) -> dict[str, dict]:
    out = {}
    for p in sorted(RECIPES_DIR.glob("*.yaml")):
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if data.get("kind") == kind:
            out[p.stem] = data
    return out


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def progress_html(job: dict | None, prog: dict | None) -> str:
    if not job:
        return "<div class='studio-progress'>no job yet</div>"
    pct = (prog or {}).get("percent") or 0.0
    step, total = (prog or {}).get("step"), (prog or {}).get("total_steps")
    loss = (prog or {}).get("loss")
    bits = [f"<b>{job['id']}</b> — {job['status']}"]
    if step is not None and total:
        bits.append(f"step {step}/{total}")
    if loss is not None:
        bits.append(f"loss {loss:.4f}")
    bits.append(f"elapsed {format_eta((prog or {}).get('elapsed'))}")
    if job["status"] == "running":
        bits.append(f"ETA {format_eta((prog or {}).get('eta'))}")
    if job.get("error") and job["status"] in ("failed", "interrupted", "stopped"):
        bits.append(f"<span style='color:#dc2626'>{html.escape(job['error'])}</span>")
    return (f"<div class='studio-progress' id='progress-text'>{' · '.join(bits)}</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:10px'><div style='width:{pct:.1f}%;"
            f"background:#f97316;height:10px;border-radius:4px'></div></div>")


def metrics_frame(metrics: list[dict]) -> pd.DataFrame:
    rows = []
    for m in metrics:
        if "step" not in m:
            continue
        for key in ("loss", "eval_loss", "reward_mean", "rm_accuracy"):
            if m.get(key) is not None:
                rows.append({"step": m["step"], "value": float(m[key]), "series": key})
    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    # explicit dtypes: an empty frame must still be numeric, or the plot's axes become discrete
    return frame.astype({"step": "int64", "value": "float64"})


def spec_from_form(launcher, preset, nproc, zero, offload, machines, rank, main_ip, main_port, hostfile) -> LaunchSpec:
    """The launcher block's raw values; LaunchSpec coerces and validates them (FieldError names the field)."""
    return LaunchSpec(launcher=launcher, preset=preset, num_processes=nproc, zero_stage=zero, offload=offload,
                      num_machines=machines, machine_rank=rank, main_ip=main_ip or "", main_port=main_port,
                      hostfile_text=hostfile or "")


def build(ctx: StudioContext, tk: TrainingKind) -> dict:
    """Builds the tab body. Returns the components other tabs need (for "Re-run with edits")."""
    lang = ctx.lang
    engine = ctx.engine
    descs = [d for d in cfgmod.field_descriptors(tk.schema) if d["name"] not in ENGINE_FIELDS]
    recipes = load_recipes(tk.kind)
    base = recipes.get(tk.default_recipe, {})
    kid = tk.kind

    fields: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                recipe_dd = ctx.tr(gr.Dropdown(list(recipes), value=tk.default_recipe if recipes else None,
                                               label=t("train.recipe", lang), elem_id=f"{kid}-recipe", scale=3),
                                   "train.recipe")
                recipe_md = gr.Markdown(base.get(f"description{'_zh' if lang == 'zh' else ''}", ""),
                                        elem_id=f"{kid}-recipe-desc")
            for group in GROUP_ORDER:
                gdescs = [d for d in descs if d["group"] == group]
                if not gdescs:
                    continue
                with ctx.tr(gr.Accordion(t(f"group.{group}", lang), open=group in ("model", "data", "training"),
                                         elem_id=f"{kid}-group-{group}"), f"group.{group}"):
                    for row_start in range(0, len(gdescs), 3):
                        with gr.Row():
                            for d in gdescs[row_start:row_start + 3]:
                                initial = base.get("config", {}).get(d["name"], d["default"])
                                fields[d["name"]] = _widget(d, initial, _label_renderer(d)(lang),
                                                            _info_renderer(d)(lang), kid, ctx)
                                ctx.tr_fn(fields[d["name"]], _label_renderer(d), attr="label")
                                ctx.tr_fn(fields[d["name"]], _info_renderer(d), attr="info")
            with ctx.tr(gr.Accordion(t("group.launcher", lang), open=True, elem_id=f"{kid}-group-launcher"),
                        "group.launcher"):
                lb = base.get("launcher", {})
                with gr.Row():
                    launcher = ctx.tr(gr.Radio(LAUNCHERS, value=lb.get("launcher", "accelerate"),
                                               label=t("launch.launcher", lang), elem_id=f"{kid}-launcher"),
                                      "launch.launcher")
                    preset = ctx.tr(gr.Dropdown(PRESETS, value=lb.get("preset", "cpu"),
                                                label=t("launch.preset", lang), elem_id=f"{kid}-preset"),
                                    "launch.preset")
                    nproc = ctx.tr(gr.Textbox(str(lb.get("num_processes", 1)), label=t("launch.nproc", lang),
                                              elem_id=f"{kid}-nproc"), "launch.nproc")
                    zero = ctx.tr(gr.Dropdown(ZERO_CHOICES, value="none" if lb.get("zero_stage") in (None, "") else str(lb["zero_stage"]),
                                              label=t("launch.zero", lang), elem_id=f"{kid}-zero"), "launch.zero")
                    offload = ctx.tr(gr.Checkbox(bool(lb.get("offload", False)), label=t("launch.offload", lang),
                                                 elem_id=f"{kid}-offload"), "launch.offload")
                with gr.Row():
                    machines = ctx.tr(gr.Textbox(str(lb.get("num_machines", 1)), label=t("launch.machines", lang),
                                                 elem_id=f"{kid}-machines"), "launch.machines")
                    mrank = ctx.tr(gr.Textbox(str(lb.get("machine_rank", 0)), label=t("launch.rank", lang),
                                              elem_id=f"{kid}-mrank"), "launch.rank")
                    main_ip = ctx.tr(gr.Textbox(lb.get("main_ip", "127.0.0.1"), label=t("launch.main_ip", lang),
                                                elem_id=f"{kid}-mainip"), "launch.main_ip")
                    main_port = ctx.tr(gr.Textbox(str(lb.get("main_port", 0)), label=t("launch.main_port", lang),
                                                  elem_id=f"{kid}-mainport"), "launch.main_port")
                hostfile = ctx.tr(gr.Textbox(lb.get("hostfile_text", ""), lines=3, placeholder="worker-1 slots=8",
                                             label=t("launch.hostfile", lang), elem_id=f"{kid}-hostfile"),
                                  "launch.hostfile")
            command = ctx.tr(gr.Code(language="shell", label=t("train.command", lang), interactive=False,
                                     elem_id=f"{kid}-command"), "train.command")
        with gr.Column(scale=4):
            with gr.Row():  # A1111: the big orange button sits top right
                train_btn = ctx.tr(gr.Button(t("train.start", lang), variant="primary", size="lg",
                                             elem_classes=["studio-train-btn"], elem_id=f"{kid}-train"),
                                   "train.start")
                stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", size="lg",
                                            elem_id=f"{kid}-stop"), "train.stop")
            progress = gr.HTML(progress_html(None, None), elem_id=f"{kid}-progress")
            plot = gr.LinePlot(metrics_frame([]), x="step", y="value", color="series", height=260,
                               label=t("train.curves", lang), elem_id=f"{kid}-plot")
            log = ctx.tr(gr.Textbox(label=t("train.log", lang), lines=22, max_lines=22, autoscroll=True,
                                    interactive=False, elem_id=f"{kid}-log"), "train.log")
            job_state = gr.State(None)

    field_names = list(fields)
    launch_inputs = [launcher, preset, nproc, zero, offload, machines, mrank, main_ip, main_port, hostfile]
    all_inputs = [*fields.values(), *launch_inputs]

    def collect(values: list, recipe_name: str = ""):
        """The form as (the backend's validated-typed options, LaunchSpec); FieldError names a bad field."""
        form = dict(zip(field_names, values[:len(field_names)]))
        spec = spec_from_form(*values[len(field_names):])
        form["data_dir"] = str(ctx.data_dir)
        form["recipe"] = recipe_name
        return cfgmod.from_dict(tk.schema, form, source="form"), spec

    def preview(*values):
        try:
            cfg, spec = collect(list(values))
            return engine.preview_command(kid, cfgmod.to_dict(cfg), spec)
        except FieldError as e:
            return f"# ⚠ {e.field}: {e.message}"

    def train(recipe, *values):
        try:
            cfg, spec = collect(list(values), recipe or "")
            tk.validate(cfg)
            job_id = engine.submit(kid, cfgmod.to_dict(cfg), spec, recipe=recipe or "")
        except FieldError as e:
            gr.Warning(f"{e.field}: {e.message}")
            return gr.update(), f"⚠ {e.field}: {e.message}"
        gr.Info(t("train.queued", ctx.lang).format(job=job_id))
        return job_id, ""

    def apply_recipe(name):
        r = recipes.get(name)
        if not r:
            raise gr.Error(f"recipe: unknown {name!r}")
        desc = r.get("description_zh" if ctx.lang == "zh" else "description", "")
        return [*form_values(descs, r.get("config", {}), r.get("launcher", {})), desc]

    def current_job(job_id):
        """The tab's job: the one this browser started, else the newest of this kind (any browser)."""
        if job_id:
            try:
                return engine.get(job_id)
            except KeyError:
                pass
        jobs = [j for j in engine.list_jobs() if j["kind"] == kid]
        return jobs[0] if jobs else None

    def refresh(job_id):
        job = current_job(job_id)
        if not job:
            return progress_html(None, None), metrics_frame([]), ""
        prog = engine.progress(job["id"])
        return (progress_html(job, prog), metrics_frame(engine.read_metrics(job["id"])),
                engine.read_log_tail(job["id"], max_bytes=40_000))

    def stop(job_id):
        job = current_job(job_id)
        if not job or job["status"] not in ("running", "queued"):
            gr.Warning(t("train.nothing_to_stop", ctx.lang))
            return
        engine.stop(job["id"])
        gr.Info(t("train.stopping", ctx.lang).format(job=job["id"]))

    for comp in all_inputs:
        comp.change(preview, inputs=all_inputs, outputs=command, show_progress="hidden", api_name=False)
    recipe_dd.change(apply_recipe, inputs=recipe_dd, outputs=[*[fields[d["name"]] for d in descs],
                                                              *launch_inputs, recipe_md], api_name=False)
    train_btn.click(train, inputs=[recipe_dd, *all_inputs], outputs=[job_state, command], api_name=f"{kid}_train")
    stop_btn.click(stop, inputs=job_state, outputs=None, api_name=f"{kid}_stop")
    gr.Timer(1.0).tick(refresh, inputs=job_state, outputs=[progress, plot, log], show_progress="hidden")
    def refresh_datasets():
        """New choices for the dataset dropdowns (a studio dataset may have been saved since the page loaded)."""
        from app.tabs.datasets import dataset_choices

        ups = [gr.update(choices=dataset_choices(ctx.data_dir, d["dataset_kind"])) for d in dataset_descs]
        return ups[0] if len(ups) == 1 else ups  # Gradio takes a one-output return as the value itself

    dataset_descs = [d for d in descs if d.get("dataset_kind")]
    return {"fields": fields, "launch_inputs": launch_inputs, "command": command, "preview": preview,
            "all_inputs": all_inputs, "descs": descs, "job_state": job_state, "refresh_datasets": refresh_datasets,
            "dataset_fields": [fields[d["name"]] for d in dataset_descs]}


def _to_widget_value(d: dict, v):
    if d["type"] == "bool":
        return bool(v)
    if d["choices"]:
        return v
    return "" if v is None else str(v)


def form_values(descs: list[dict], config: dict, launcher: dict) -> list:
    """Widget values for a tab's fields and launcher block, from a config and a launch spec (recipe or job)."""
    values = [_to_widget_value(d, config.get(d["name"], d["default"])) for d in descs]
    zero = launcher.get("zero_stage")
    values += [launcher.get("launcher", "accelerate"), launcher.get("preset", "cpu"),
               str(launcher.get("num_processes", 1)), "none" if zero in (None, "", "none") else str(zero),
               bool(launcher.get("offload", False)), str(launcher.get("num_machines", 1)),
               str(launcher.get("machine_rank", 0)), launcher.get("main_ip", "127.0.0.1"),
               str(launcher.get("main_port", 0)), launcher.get("hostfile_text", "")]
    return values


def _widget(d: dict, value, label: str, info: str, kid: str, ctx: StudioContext):
    eid = f"{kid}-{d['name']}"
    if d.get("dataset_kind"):  # studio datasets of the kind + bundled samples; any path may be typed
        from app.tabs.datasets import dataset_choices

        return gr.Dropdown(dataset_choices(ctx.data_dir, d["dataset_kind"]), value=value, label=label, info=info,
                           elem_id=eid, allow_custom_value=True)
    if d["type"] == "bool":
        return gr.Checkbox(value=bool(value), label=label, info=info, elem_id=eid)
    if d["choices"]:
        return gr.Dropdown(d["choices"], value=value, label=label, info=info, elem_id=eid, allow_custom_value=False)
    # numbers are text boxes on purpose: a typo like "abc" reaches the validator, which names the field
    return gr.Textbox(value="" if value is None else str(value), label=label, info=info, elem_id=eid, max_lines=1)


def _label_renderer(d):
    return lambda lang: d["label_zh"] if lang == "zh" else d["label"]


def _info_renderer(d):
    return lambda lang: d["help_zh"] if lang == "zh" else d["help"]
