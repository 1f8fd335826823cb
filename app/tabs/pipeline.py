"""The Pipeline tab: DeepSpeed-Chat's one-click SFT -> reward model -> RLHF (e2e_rlhf.py) as a chain of jobs.

The form takes DS-Chat's choices (actor model, reward model, data and data_split, deployment type, step-3
algorithm, LoRA) and each step's key fields; app/pipelines.py turns a pipeline recipe plus these choices into the
steps, app/jobs/pipeline.py queues them as ordinary jobs. The view follows the newest pipeline: the steps' states,
the overall progress with ETA, the current step's curves and log, the failing step's reason (with DS-Chat's
out-of-memory advice when the log shows one), Stop (the later steps are cancelled) and Resume.
"""
from __future__ import annotations

import dataclasses
import html

import gradio as gr
import yaml

from app import kinds
from app import pipelines as plib
from app.context import StudioContext
from app.i18n import t
from app.jobs import JobError
from app.jobs import pipeline as pl
from app.tabs.plot import curves_svg, curves_widget
from app.tabs.training import (LOG_BYTES, POLL_SECONDS, SessionMemo, field_error_html, format_eta, log_signature,
                               model_choices, table_frame)
from backends.common import config as cfgmod
from backends.common.errors import FieldError

ROLES = ("sft", "reward", "rlhf")
KEY_FIELDS = ("learning_rate", "max_steps", "per_device_train_batch_size")  # each step's key fields on this tab
FORM = ("recipe", "actor_model", "reward_model", "algorithm", "deployment", "dataset", "data_split", "use_lora",
        "hostfile")
LABELS = {"recipe": "train.recipe", "actor_model": "pipe.actor", "reward_model": "pipe.reward", "algorithm":
          "pipe.algorithm", "deployment": "pipe.deployment", "dataset": "pipe.dataset", "data_split": "pipe.split",
          "use_lora": "pipe.lora", "hostfile": "launch.hostfile"}


def _step_kind(role: str, algorithm: str) -> str:
    return {"sft": "sft", "reward": "reward"}.get(role) or plib.ALGORITHM_KINDS.get(algorithm, "")


# What the form above sets for every step, and what the engine sets: not among a step's other fields
FORM_FIELDS = ("model_name_or_path", "reward_model", "dataset", "data_split", "use_lora")
JOB_FIELDS = tuple(f.name for f in dataclasses.fields(cfgmod.JobFields))


def _step_config(recipe: dict, role: str, algorithm: str) -> dict:
    """A step's config as its recipe has it (empty when that step has no recipe)."""
    entry = (recipe.get("steps") or {}).get(algorithm if role == "rlhf" else role) or {}
    try:
        base = plib._step_recipe(entry["recipe"], _step_kind(role, algorithm)) if entry.get("recipe") else {}
    except FieldError:
        base = {}
    return {**(base.get("config") or {}), **(entry.get("config") or {})}


def _key_values(recipe: dict, role: str, algorithm: str) -> list[str]:
    """The key fields of a step as its recipe has them."""
    cfg = _step_config(recipe, role, algorithm)
    return ["" if cfg.get(k) is None else str(cfg[k]) for k in KEY_FIELDS]


def _other_fields(recipe: dict, role: str, algorithm: str) -> str:
    """The rest of a step's fields (not the key fields, not what the form or the engine sets) as YAML."""
    cfg = _step_config(recipe, role, algorithm)
    rest = {k: v for k, v in cfg.items() if k not in (*KEY_FIELDS, *FORM_FIELDS, *JOB_FIELDS)}
    return yaml.safe_dump(rest, sort_keys=False, allow_unicode=True) if rest else ""


def _parse_other_fields(role: str, text: str) -> dict:
    """The edited YAML of a step's other fields: a mapping, none of the fields set elsewhere on the page."""
    try:
        data = yaml.safe_load(text or "") or {}
    except yaml.YAMLError as e:
        raise FieldError(f"{role}: other fields", f"not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise FieldError(f"{role}: other fields", "must be `field: value` lines")
    taken = sorted(set(data) & {*KEY_FIELDS, *FORM_FIELDS, *JOB_FIELDS})
    if taken:
        raise FieldError(f"{role}: {taken[0]}", "is set by the form above (or by the engine), not here")
    return data


COLUMNS = ("n", "step", "job", "status", "note")


def steps_frame(rows: list[list], lang: str):
    return table_frame(rows, "pipe.col", COLUMNS, lang)


def steps_table(st: dict | None, lang: str) -> list[list]:
    if not st:
        return []
    rows = []
    for n, (step, job) in enumerate(zip(st["steps"], st["jobs"]), 1):
        status = t(f"jobs.status.{job['status']}", lang) if job else t("pipe.deleted", lang)
        note = (job or {}).get("error", "") or ""
        rows.append([n, step["title"], step["job"], status, note[:160]])
    return rows


def overview_html(engine, st: dict | None, lang: str) -> str:
    if not st:
        return f"<div class='studio-progress' id='pipe-progress-text'>{html.escape(t('pipe.none', lang))}</div>"
    prog = pl.overall_progress(engine, st)
    state = t(f"jobs.status.{st['status']}", lang)
    bits = [f"<b>{html.escape(st['name'])}</b> ({html.escape(st['id'])}) — {html.escape(state)}",
            t("pipe.step_of", lang).format(step=prog["step"], steps=prog["steps"])]
    if st["status"] in ("running", "queued"):
        bits.append(f"{t('prog.eta', lang)} {format_eta(prog['eta'])}")
    return (f"<div class='studio-progress' id='pipe-progress-text'>{' · '.join(bits)}</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:10px'><div style='width:{prog['percent']:.1f}%;"
            f"background:#f97316;height:10px;border-radius:4px'></div></div>")


def failure_html(st: dict | None, lang: str) -> str:
    """Which step failed and why; DS-Chat's out-of-memory advice when its log showed one."""
    hit = plib.first_failure(st) if st else None
    if not hit:
        return ""
    n, job = hit
    msg = t("pipe.failed", lang).format(step=n, title=st["steps"][n - 1]["title"], status=t(
        f"jobs.status.{job['status']}", lang), error=job.get("error") or "")
    advice = f"<br>{html.escape(t('pipe.oom_advice', lang))}" if plib.is_oom(job.get("error", "")) else ""
    return f"<div class='studio-field-error-msg' role='alert'>⚠ {html.escape(msg)}{advice}</div>"


def build(ctx: StudioContext) -> dict:
    lang = ctx.lang
    engine = ctx.engine
    recipes = plib.load_recipes()
    default = "cpu-demo-smollm2-rlhf" if "cpu-demo-smollm2-rlhf" in recipes else next(iter(recipes), None)
    rec = recipes.get(default, {})
    algos = plib.algorithms()
    algo = rec.get("algorithm") if rec.get("algorithm") in algos else (algos[0] if algos else None)
    policy_desc = {"name": "actor_model", "default": rec.get("actor_model", "bundled:smollm2"), "accepts": "policy"}
    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                recipe_dd = ctx.tr(gr.Dropdown(list(recipes), value=default, label=t("train.recipe", lang),
                                               elem_id="pipe-recipe", scale=2), "train.recipe")
                recipe_md = gr.Markdown(plib.describe(rec, lang), elem_id="pipe-recipe-desc")
            with gr.Row():
                actor = ctx.tr(gr.Dropdown(model_choices(engine, policy_desc, policy_desc["default"]),
                                           value=policy_desc["default"], allow_custom_value=True,
                                           label=t("pipe.actor", lang), elem_id="pipe-actor"), "pipe.actor")
                reward_model = ctx.tr(gr.Textbox(rec.get("reward_model", ""), label=t("pipe.reward", lang),
                                                 elem_id="pipe-reward", max_lines=1), "pipe.reward")
                algorithm = ctx.tr(gr.Dropdown(algos, value=algo, label=t("pipe.algorithm", lang),
                                               elem_id="pipe-algorithm"), "pipe.algorithm")
                deployment = ctx.tr(gr.Dropdown(list(plib.DEPLOYMENTS), value=rec.get("deployment", "cpu"),
                                                label=t("pipe.deployment", lang), elem_id="pipe-deployment"),
                                    "pipe.deployment")
            with gr.Row():
                dataset = ctx.tr(gr.Textbox(rec.get("dataset", ""), label=t("pipe.dataset", lang),
                                            placeholder=t("pipe.dataset_hint", lang), elem_id="pipe-dataset",
                                            max_lines=1, scale=3), "pipe.dataset")
                ctx.tr(dataset, "pipe.dataset_hint", attr="placeholder")
                split = ctx.tr(gr.Textbox(rec.get("data_split", ""), label=t("pipe.split", lang), placeholder="2,4,4",
                                          elem_id="pipe-split", max_lines=1, scale=1), "pipe.split")
                lora = ctx.tr(gr.Checkbox(bool(rec.get("use_lora", True)), label=t("pipe.lora", lang),
                                          elem_id="pipe-lora", scale=1), "pipe.lora")
            hostfile = ctx.tr(gr.Textbox(rec.get("hostfile", ""), lines=2, label=t("launch.hostfile", lang),
                                         placeholder="worker-1 slots=8", elem_id="pipe-hostfile"), "launch.hostfile")
            keys: dict[str, list] = {}
            others: dict[str, gr.Code] = {}
            for role in ROLES:
                with ctx.tr(gr.Accordion(t(f"pipe.step.{role}", lang), open=role == "sft", elem_id=f"pipe-step-{role}"),
                            f"pipe.step.{role}"):
                    with gr.Row():
                        values = _key_values(rec, role, algo or "")
                        keys[role] = [ctx.tr(gr.Textbox(v, label=t(f"pipe.key.{k}", lang), max_lines=1,
                                                        elem_id=f"pipe-{role}-{k}"), f"pipe.key.{k}")
                                      for k, v in zip(KEY_FIELDS, values)]
                    others[role] = ctx.tr(gr.Code(_other_fields(rec, role, algo or ""), language="yaml",
                                                  interactive=True, label=t("pipe.others", lang), max_lines=14,
                                                  elem_id=f"pipe-{role}-others"), "pipe.others")
            command = ctx.tr(gr.Code(language="shell", label=t("pipe.commands", lang), interactive=False,
                                     wrap_lines=True, elem_id="pipe-command"), "pipe.commands")
        with gr.Column(scale=4):
            with gr.Row():
                run_btn = ctx.tr(gr.Button(t("pipe.run", lang), variant="primary", size="lg",
                                           elem_classes=["studio-train-btn"], elem_id="pipe-run"), "pipe.run")
                stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", size="lg", elem_id="pipe-stop"),
                                  "train.stop")
                resume_btn = ctx.tr(gr.Button(t("pipe.resume", lang), size="lg", elem_id="pipe-resume"), "pipe.resume")
            error_box = gr.HTML("", elem_id="pipe-error", elem_classes=["studio-error-box"], js_on_load=None)
            overview = gr.HTML(overview_html(engine, None, lang), elem_id="pipe-progress", js_on_load=None,
                               elem_classes=["studio-progress-box"])

            table = ctx.tr(gr.Dataframe(steps_frame([], lang), interactive=False, wrap=True, label=t("pipe.steps", lang),
                                        elem_id="pipe-steps"), "pipe.steps")  # its headers: relabel() below
            plot = curves_widget(ctx, "pipe-plot", None, lang)
            log = ctx.tr(gr.Textbox(label=t("pipe.log", lang), lines=16, max_lines=16, autoscroll=True,
                                    interactive=False, elem_id="pipe-log", elem_classes=["studio-log"]), "pipe.log")
    form = [recipe_dd, actor, reward_model, algorithm, deployment, dataset, split, lora, hostfile]
    key_inputs = [c for role in ROLES for c in keys[role]]
    other_inputs = [others[role] for role in ROLES]
    all_inputs = [*form, *key_inputs, *other_inputs]
    timer = gr.Timer(POLL_SECONDS, active=False)
    memo = SessionMemo()
    elem_ids = {n: c.elem_id for n, c in zip(FORM, form)}

    def steps_of(values: list) -> list[dict]:
        v = dict(zip(FORM, values[:len(FORM)]))
        r = plib.load_recipes().get(v["recipe"] or "")
        if not r:
            raise FieldError("recipe", "pick a pipeline recipe")
        overrides = {}
        at_others = len(FORM) + len(ROLES) * len(KEY_FIELDS)
        for i, role in enumerate(ROLES):
            raw = values[len(FORM) + i * len(KEY_FIELDS): len(FORM) + (i + 1) * len(KEY_FIELDS)]
            overrides[role] = {**_parse_other_fields(role, values[at_others + i]),
                               **{k: x for k, x in zip(KEY_FIELDS, raw) if str(x).strip() != ""}}
        steps = plib.build_steps(r, actor_model=v["actor_model"] or "", reward_model=v["reward_model"] or "",
                                 dataset=v["dataset"] or "", data_split=v["data_split"] or "",
                                 deployment=v["deployment"], algorithm=v["algorithm"], use_lora=bool(v["use_lora"]),
                                 hostfile=v["hostfile"] or "", overrides=overrides)
        for s in steps:  # the key fields are typed text: each step's schema types (and checks) them
            schema = kinds.get(s["kind"]).schema
            s["config"]["data_dir"] = str(ctx.data_dir)
            if schema is not None:
                try:
                    s["config"] = cfgmod.to_dict(cfgmod.from_dict(schema, s["config"], source="form"))
                except FieldError as e:
                    raise FieldError(f"{s['role']}: {e.field}", e.message) from None
        return steps

    def label_of(field: str) -> str:
        head, _, rest = field.partition(": ")
        if rest:  # "step 2: learning_rate" / "reward: max_steps"
            return f"{head}: {rest}"
        return t(LABELS[field], ctx.lang) if field in LABELS else field

    def error_html(e: FieldError) -> str:
        eid = elem_ids.get(e.field)
        mark = f"<style>#{eid} {{ box-shadow: inset 0 0 0 2px #dc2626; }}</style>" if eid else ""
        return field_error_html(label_of(e.field), e.message) + mark

    def preview(*values):
        try:
            return plib.commands(engine, steps_of(list(values)))
        except FieldError as e:
            return f"# ⚠ {label_of(e.field)}: {e.message}"

    def submit(values: list) -> dict:
        """Run, for the page and the API: validate every step, then queue them as one chain."""
        steps = steps_of(values)
        name = str(values[0] or "pipeline")
        return pl.submit(engine, name, steps)

    def run(*values):
        try:
            rec_ = submit(list(values))
        except FieldError as e:
            return gr.skip(), error_html(e)
        gr.Info(t("pipe.queued", ctx.lang).format(id=rec_["id"], n=len(rec_["steps"])))
        return rec_["id"], ""

    def current(pid):
        if pid:
            try:
                return pl.status(engine, pid)
            except JobError:
                pass
        items = pl.list_pipelines(engine)
        return items[0] if items else None

    def poll(pid, sent: dict | None, lang_: str | None = None):
        sent = dict(sent or {})
        st = current(pid)
        lang_ = lang_ or ctx.lang
        out = [overview_html(engine, st, lang_), (steps_table(st, lang_), lang_), failure_html(st, lang_)]
        job = None
        if st and st["jobs"][st["current"]] is not None:
            job = st["jobs"][st["current"]]
        recs = engine.read_metrics(job["id"]) if job else []
        series = kinds.get(job["kind"]).series if job and job["kind"] in {k.name for k in kinds.all_kinds()} else None
        plot_key = (job["id"] if job else None, len(recs), lang_)
        out.append(gr.skip() if sent.get("plot") == plot_key else curves_svg(recs, series or None, lang_))
        sent["plot"] = plot_key
        log_key = log_signature(job) if job else None
        out.append(gr.skip() if sent.get("log") == log_key else (
            engine.read_log_tail(job["id"], max_bytes=LOG_BYTES) if job else ""))
        sent["log"] = log_key
        for i in range(3):  # what did not change is not sent again
            key = ("v", i)
            if sent.get(key) == out[i]:
                out[i] = gr.skip()
            else:
                sent[key] = out[i]
                if i == 1:
                    out[i] = steps_frame(*out[i])
        following = bool(st) and st["status"] in ("running", "queued")
        return out, sent, following

    def follow(pid, request: gr.Request):
        out, sent, following = poll(pid, None)
        memo.set(request, sent)
        return [*out, gr.Timer(active=following)]

    def tick(pid, request: gr.Request):
        out, sent, following = poll(pid, memo.get(request))
        memo.set(request, sent)
        return [*out, gr.skip() if following else gr.Timer(active=False)]

    def stop(pid):
        st = current(pid)
        if not st or st["status"] not in ("running", "queued"):
            gr.Warning(t("train.nothing_to_stop", ctx.lang))
            return
        pl.stop(engine, st["id"])
        gr.Info(t("pipe.stopping", ctx.lang).format(id=st["id"]))

    def resume(pid):
        st = current(pid)
        try:
            if not st:
                raise JobError(t("pipe.none", ctx.lang))
            job_id = pl.resume(engine, st["id"])
        except JobError as e:
            gr.Warning(str(e))
            return gr.skip()
        gr.Info(t("pipe.resumed", ctx.lang).format(job=job_id))
        return st["id"]

    def apply_recipe(name, algorithm_):
        r = plib.load_recipes().get(name or "")
        if not r:
            return [gr.skip()] * (len(form) - 1 + len(key_inputs) + len(other_inputs))
        a = r.get("algorithm") if r.get("algorithm") in plib.algorithms() else algorithm_
        vals = [plib.describe(r, ctx.lang), r.get("actor_model", ""), r.get("reward_model", ""), a,
                r.get("deployment", "cpu"), r.get("dataset", ""), r.get("data_split", ""),
                bool(r.get("use_lora", True)), r.get("hostfile", "")]
        for role in ROLES:
            vals += _key_values(r, role, a or "")
        return vals + [_other_fields(r, role, a or "") for role in ROLES]

    def relabel(new_lang, name, pid):
        """On a language switch: the recipe's description and the followed pipeline's view in that language."""
        lang_ = new_lang if new_lang in ("en", "zh") else ctx.lang
        out, _, _ = poll(pid, None, lang_)
        return [plib.describe(plib.load_recipes().get(name or "") or {}, lang_), *out[:4]]

    def algorithm_changed(name, algorithm_):
        r = plib.load_recipes().get(name or "") or {}
        return [*_key_values(r, "rlhf", algorithm_ or ""), _other_fields(r, "rlhf", algorithm_ or "")]

    pid_state = gr.State(None)
    poll_outputs = [overview, table, error_box, plot, log, timer]
    for comp in all_inputs:
        comp.change(preview, inputs=all_inputs, outputs=command, show_progress="hidden", api_name=False)
    recipe_dd.input(apply_recipe, inputs=[recipe_dd, algorithm],
                    outputs=[recipe_md, actor, reward_model, algorithm, deployment, dataset, split, lora, hostfile,
                             *key_inputs, *other_inputs], api_name=False)
    algorithm.input(algorithm_changed, inputs=[recipe_dd, algorithm], outputs=[*keys["rlhf"], others["rlhf"]],
                    api_name=False)

    def follow_run(pid, error, request: gr.Request):
        """After Run: follow the queued pipeline; after a refused Run, keep its message (a poll would clear it)."""
        if error:
            return [gr.skip()] * len(poll_outputs)
        return follow(pid, request)

    run_btn.click(run, inputs=all_inputs, outputs=[pid_state, error_box], api_name="pipeline_run").then(
        follow_run, inputs=[pid_state, error_box], outputs=poll_outputs, api_name=False, show_progress="hidden")
    stop_btn.click(stop, inputs=pid_state, api_name="pipeline_stop").then(
        follow, inputs=pid_state, outputs=poll_outputs, api_name=False, show_progress="hidden")
    resume_btn.click(resume, inputs=pid_state, outputs=pid_state, api_name="pipeline_resume").then(
        follow, inputs=pid_state, outputs=poll_outputs, api_name=False, show_progress="hidden")
    timer.tick(tick, inputs=pid_state, outputs=poll_outputs, show_progress="hidden", api_name=False)

    def refresh_actor(value):
        return gr.update(choices=model_choices(engine, policy_desc, value))

    return {"timer": timer, "follow": (follow, [pid_state], poll_outputs), "preview": (preview, all_inputs, command),
            "refresh": (refresh_actor, [actor], [actor]),
            "relabel": (relabel, [recipe_dd, pid_state], [recipe_md, overview, table, error_box, plot])}
