"""The shared body of every training tab: one per job kind of app/kinds.py that names a tab (SFT, reward model, DPO…).

One declaration drives the form: the backend's option dataclass (through
`backends.common.config.field_descriptors`) gives each field its widget, label, tooltip and range.
The tab adds the recipe dropdown, the launcher block, the live command preview, Train / Stop, the log,
progress with ETA and the loss plot. Jobs run in the engine, outside any browser session, so every
browser sees the same job and a reload re-attaches to it.
"""
from __future__ import annotations

import html
import inspect
import os
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd
import yaml

from app.context import StudioContext
from app.i18n import t
from app.jobs import JobError
from app.jobs.launcher import LaunchSpec
from app.kinds import Kind
from app.tabs.plot import curves_svg, curves_widget
from backends.common import config as cfgmod
from backends.common import paths
from backends.common.errors import FieldError

RECIPES_DIR = paths.ROOT / "presets" / "recipes"
# Fields the engine owns (the one JobFields group every schema inherits): not shown in the form.
ENGINE_FIELDS = set(cfgmod.field_names(cfgmod.JobFields))
GROUP_ORDER = [g for g in cfgmod.GROUPS if g != "launcher"]  # the form's accordions (the launcher block is its own)
LAUNCHERS = ["accelerate", "deepspeed", "python"]
PRESETS = ["cpu", "single_gpu", "multi_gpu", "multi_node"]
ZERO_CHOICES = ["none", "0", "1", "2", "3"]
# LaunchSpec field -> i18n key of its on-screen label, in the order spec_from_form takes them.
LAUNCH_LABELS = {"launcher": "launch.launcher", "preset": "launch.preset", "num_processes": "launch.nproc",
                 "zero_stage": "launch.zero", "offload": "launch.offload", "num_machines": "launch.machines",
                 "machine_rank": "launch.rank", "main_ip": "launch.main_ip", "main_port": "launch.main_port",
                 "hostfile_text": "launch.hostfile"}
# The recipe row's own inputs (a FieldError names them like a form field).
RECIPE_LABELS = {"recipe": "train.recipe", "recipe_name": "recipe.name"}
ACTIVE = ("queued", "running")
LOG_BYTES = 20_000  # the log tail a page shows (≈250 lines)
POLL_SECONDS = 3.0  # a followed job's status, plot and log (each poll costs the page ≈0.09 CPU s in the Gradio 6
#                     frontend, see app/ui.py); elapsed ticks every second in the page itself


USER_RECIPES = "recipes"  # <data-dir>/recipes/<name>.yaml: recipes saved from a tab ("Save as recipe")
RECIPE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,79}")


def _read_recipes(folder: Path, kind: str, saved: bool) -> dict[str, dict]:
    out = {}
    for p in sorted(folder.glob("*.yaml")) if folder.is_dir() else ():
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue  # a broken hand-edited file does not take the tab down; it is just not listed
        if isinstance(data, dict) and data.get("kind") == kind:
            out[p.stem] = {**data, "saved": saved}
    return out


def load_recipes(kind: str, data_dir: str | Path | None = None) -> dict[str, dict]:
    """The shipped recipes of a kind (presets/recipes), then the ones saved in the data dir (``saved: True``).

    A saved recipe never shadows a shipped one (saving refuses such a name; a file put there by hand is skipped)."""
    out = _read_recipes(RECIPES_DIR, kind, saved=False)
    if data_dir is not None:
        for name, data in _read_recipes(Path(data_dir) / USER_RECIPES, kind, saved=True).items():
            out.setdefault(name, data)
    return out


def recipe_choices(recipes: dict[str, dict], lang: str) -> list[tuple[str, str]]:
    """The recipe dropdown's (label, name) pairs: a saved recipe is labelled "<name> (saved)"."""
    return [(t("recipe.saved_label", lang).format(name=n) if r.get("saved") else n, n) for n, r in recipes.items()]


def check_recipe_name(name: str) -> str:
    """The name a recipe is saved under, or FieldError("recipe_name") saying why not."""
    name = (name or "").strip()
    if name.endswith(".yaml"):
        name = name[:-5]
    if not name:
        raise FieldError("recipe_name", "is empty; type a name for the recipe, e.g. my-lora-run")
    if not RECIPE_NAME_RE.fullmatch(name) or ".." in name:
        raise FieldError("recipe_name", f"{name!r} may use only letters, digits, - _ and . (no spaces, no / or \\, "
                                        "at most 80 characters, starting with a letter or digit)")
    if (RECIPES_DIR / f"{name}.yaml").exists():
        raise FieldError("recipe_name", f"{name!r} is a shipped recipe (presets/recipes/{name}.yaml); a saved recipe "
                                        "cannot replace it: choose another name")
    return name


def save_user_recipe(data_dir: str | Path, kind: str, name: str, description: str, config: dict,
                     launcher: dict) -> Path:
    """Write <data-dir>/recipes/<name>.yaml (the shape of presets/recipes/*.yaml) atomically, mode 0600."""
    name = check_recipe_name(name)
    folder = Path(data_dir) / USER_RECIPES
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    body = {"kind": kind, "name": name, "description": (description or "").strip(), "launcher": launcher,
            "config": config}
    text = yaml.safe_dump(body, sort_keys=False, allow_unicode=True, default_flow_style=False)
    target = folder / f"{name}.yaml"
    tmp = folder / f".{name}.yaml.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def delete_user_recipe(data_dir: str | Path, kind: str, name: str) -> None:
    """Remove a saved recipe; a shipped one (or an unknown name) raises FieldError("recipe")."""
    name = (name or "").strip()
    recipes = load_recipes(kind, data_dir)
    if not name:
        raise FieldError("recipe", "no recipe is selected; pick a saved recipe to delete")
    if name not in recipes:
        raise FieldError("recipe", f"there is no {kind} recipe {name!r}")
    if not recipes[name].get("saved"):
        raise FieldError("recipe", f"{name!r} is a shipped recipe (presets/recipes) and cannot be deleted; only "
                                   "recipes saved with Save as recipe can")
    (Path(data_dir) / USER_RECIPES / f"{name}.yaml").unlink(missing_ok=True)


def format_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def job_elapsed(job: dict, now: float | None = None) -> float | None:
    """Seconds since the current attempt started (to its end once it ended): ticks with the clock."""
    start = job.get("started_at")
    if not start:
        return None
    return max(0.0, (job.get("ended_at") or now or time.time()) - start)


def progress_html(job: dict | None, prog: dict | None, lang: str = "en") -> str:
    if not job:
        return f"<div class='studio-progress'>{html.escape(t('prog.none', lang))}</div>"
    prog = prog or {}
    pct = prog.get("percent") or 0.0
    step, total = prog.get("step"), prog.get("total_steps")
    loss = prog.get("loss")
    status = job["status"]
    if status == "running" and job.get("stop_requested"):
        status = t("prog.stopping", lang)
    else:
        status = t(f"jobs.status.{status}", lang)
    bits = [f"<b>{job['id']}</b> — {html.escape(status)}"]
    if step is not None and total:
        bits.append(f"{t('prog.step', lang)} {step}/{total}")
    if loss is not None:
        bits.append(f"{t('plot.loss', lang)} {loss:.4f}")
    elapsed = job_elapsed(job)
    if elapsed is None:
        elapsed = prog.get("elapsed")
    # the page's clock (app/ui.py STUDIO_JS) ticks a running job's elapsed every second between two polls
    live = "1" if job["status"] == "running" and job.get("started_at") else "0"
    bits.append(f"{t('prog.elapsed', lang)} <span class='studio-elapsed' data-job='{html.escape(job['id'])}' "
                f"data-elapsed='{elapsed or 0:.1f}' data-live='{live}'>{format_eta(elapsed)}</span>")
    if job["status"] == "running":
        bits.append(f"{t('prog.eta', lang)} {format_eta(prog.get('eta'))}")
    if job.get("error") and job["status"] in ("failed", "interrupted", "stopped"):
        bits.append(f"<span style='color:#dc2626'>{html.escape(job['error'])}</span>")
    return (f"<div class='studio-progress' id='progress-text'>{' · '.join(bits)}</div>"
            f"<div style='background:#e5e7eb;border-radius:4px;height:10px'><div style='width:{pct:.1f}%;"
            f"background:#f97316;height:10px;border-radius:4px'></div></div>")


def log_signature(job: dict) -> tuple:
    """Changes whenever log.txt does (size and mtime), so a poll re-sends the log only then."""
    try:
        st = os.stat(os.path.join(job["run_dir"], "log.txt"))
        return job["id"], st.st_size, st.st_mtime_ns
    except OSError:
        return job["id"], -1, 0


def field_label(name: str, descs: list[dict], lang: str) -> str:
    """The on-screen label of a form field (schema descriptor or launcher block), else the name itself."""
    for d in descs:
        if d["name"] == name:
            return d["label_zh"] if lang == "zh" else d["label"]
    key = LAUNCH_LABELS.get(name) or RECIPE_LABELS.get(name)
    return t(key, lang) if key else name


def field_error_html(label: str, message: str) -> str:
    return (f"<div class='studio-field-error-msg' role='alert'>⚠ <b>{html.escape(label)}</b>: "
            f"{html.escape(message)}</div>")


class SessionMemo:
    """Per browser session, what its poll last sent; kept in the UI process (the oldest sessions are dropped).

    Not a gr.State on purpose: the Gradio 6 frontend revisits every output of every event it has run on each
    later event's status change, and a State output (not in the layout) costs it a walk of the whole page tree."""

    def __init__(self, size: int = 256):
        self._d: OrderedDict = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    @staticmethod
    def _key(request) -> str:
        return getattr(request, "session_hash", None) or ""

    def get(self, request) -> dict | None:
        with self._lock:
            return self._d.get(self._key(request))

    def set(self, request, value: dict) -> None:
        with self._lock:
            key = self._key(request)
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self._size:
                self._d.popitem(last=False)


class Follower:
    """What one browser's poll of a job sends: only the outputs that changed since the last send.

    `sent` (a SessionMemo entry per browser) remembers the last progress line, the metrics count the plot was
    drawn from and the log's size; an unchanged output is gr.skip(), so nothing is re-sent or redrawn."""

    def __init__(self, engine, series=None):
        self.engine, self.series = engine, series

    def poll(self, job: dict | None, sent: dict | None, lang: str):
        """(progress, plot, log, new sent, following): following = the job may still change."""
        sent = dict(sent or {})
        if job is None:
            key = ("none", lang)
            if sent.get("job") == key:
                return gr.skip(), gr.skip(), gr.skip(), sent, False
            sent = {"job": key}
            return progress_html(None, None, lang), curves_svg([], self.series, lang), "", sent, False
        jid = job["id"]
        prog_html = progress_html(job, self.engine.progress(jid), lang)
        recs = self.engine.read_metrics(jid)
        out_prog = out_plot = out_log = gr.skip()
        if sent.get("prog") != prog_html:
            out_prog = sent["prog"] = prog_html
        plot_key = (jid, len(recs), lang)
        if sent.get("plot") != plot_key:
            out_plot, sent["plot"] = curves_svg(recs, self.series, lang), plot_key
        log_key = log_signature(job)
        if sent.get("log") != log_key:
            out_log, sent["log"] = self.engine.read_log_tail(jid, max_bytes=LOG_BYTES), log_key
        sent["job"] = jid
        return out_prog, out_plot, out_log, sent, job["status"] in ACTIVE


SAMPLES_FILE = "samples.jsonl"  # <run_dir>/samples.jsonl: {step, prompt, answer, reward} rows (RLHF sample answers)
SAMPLES_DIR = "samples"  # <run_dir>/samples/*.png: validation images (SD distillation)
SAMPLE_ROWS = 8
GALLERY_IMAGES = 12


def _signature(path: str) -> tuple:
    try:
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    except OSError:
        return -1, 0


def samples_rows(run_dir: str, n: int = SAMPLE_ROWS) -> list[list]:
    """The newest `n` rows of a job's samples.jsonl, newest first: [step, prompt, answer, reward]."""
    import json

    rows = []
    try:
        with open(os.path.join(run_dir, SAMPLES_FILE), encoding="utf-8") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except ValueError:
                    continue  # a line being written
                if isinstance(r, dict):
                    rows.append(r)
    except OSError:
        return []
    out = []
    for r in reversed(rows[-n:]):
        rew = r.get("reward")
        out.append([r.get("step"), str(r.get("prompt", "")), str(r.get("answer", "")),
                    round(rew, 4) if isinstance(rew, (int, float)) else rew])
    return out


def gallery_items(run_dir: str, n: int = GALLERY_IMAGES) -> list[tuple[str, str]]:
    """The newest `n` images of a job's samples/ folder as (path, caption = file name), newest first."""
    folder = Path(run_dir) / SAMPLES_DIR
    try:
        pngs = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".webp")),
                      key=lambda p: (p.stat().st_mtime_ns, p.name))
    except OSError:
        return []
    return [(str(p), p.stem) for p in reversed(pngs[-n:])]


SAMPLE_COLUMNS = ("step", "prompt", "answer", "reward")


def table_frame(rows: list[list], prefix: str, columns: tuple[str, ...], lang: str) -> pd.DataFrame:
    """A table's value with its headers (i18n keys `<prefix>.<column>`) in `lang`: a plain list of rows would get
    the headers the page was built with."""
    return pd.DataFrame(rows, columns=[t(f"{prefix}.{c}", lang) for c in columns])


def samples_frame(rows: list[list], lang: str) -> pd.DataFrame:
    return table_frame(rows, "samples", SAMPLE_COLUMNS, lang)


def panel_outputs(panels: tuple[str, ...], job: dict | None, sent: dict, lang: str = "en") -> list:
    """The values of a tab's extra panels (kinds.Kind.panels) for `job`, gr.skip() where nothing changed."""
    out = []
    for panel in panels:
        if job is None:
            key, value = ("none", lang), (samples_frame([], lang) if panel == "samples" else [])
        elif panel == "samples":
            path = os.path.join(job["run_dir"], SAMPLES_FILE)
            key, value = (job["id"], *_signature(path), lang), None
        else:
            folder = os.path.join(job["run_dir"], SAMPLES_DIR)
            key, value = (job["id"], *_signature(folder), len(os.listdir(folder)) if os.path.isdir(folder) else 0), None
        if sent.get(panel) == key:
            out.append(gr.skip())
            continue
        sent[panel] = key
        if value is None:
            value = (samples_frame(samples_rows(job["run_dir"]), lang) if panel == "samples"
                     else gallery_items(job["run_dir"]))
        out.append(value)
    return out


def job_command(job: dict) -> str:
    """The job's command as a shell runs it (its command.sh), else the argv line the store keeps."""
    try:
        with open(os.path.join(job["run_dir"], "command.sh"), encoding="utf-8") as f:
            return f.read()
    except OSError:
        return job.get("command", "")


def spec_from_form(launcher, preset, nproc, zero, offload, machines, rank, main_ip, main_port, hostfile) -> LaunchSpec:
    """The launcher block's raw values; LaunchSpec coerces and validates them (FieldError names the field)."""
    return LaunchSpec(launcher=launcher, preset=preset, num_processes=nproc, zero_stage=zero, offload=offload,
                      num_machines=machines, machine_rank=rank, main_ip=main_ip or "", main_port=main_port,
                      hostfile_text=hostfile or "")


def named_endpoint(impl, names: list[str], doc: str):
    """A function whose signature names its parameters, for an API-only event: Gradio reads `__signature__` for
    the endpoint's parameter names (its defaults are the input components' initial values); `impl` gets the
    values as one dict."""
    sig = inspect.Signature([inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])

    def endpoint(*args, **kwargs):
        return impl(dict(sig.bind(*args, **kwargs).arguments))

    endpoint.__signature__ = sig
    endpoint.__doc__ = doc
    return endpoint


def recipe_description(recipe: dict, lang: str) -> str:
    return recipe.get("description_zh" if lang == "zh" else "description", "") or recipe.get("description", "")


def build(ctx: StudioContext, tk: Kind) -> dict:
    """Builds the tab body of one kind. Returns the components other tabs need (for "Re-run with edits")."""
    lang = ctx.lang
    engine = ctx.engine
    descs = [d for d in cfgmod.field_descriptors(tk.schema) if d["name"] not in ENGINE_FIELDS]
    recipes = load_recipes(tk.name, ctx.data_dir)
    base = recipes.get(tk.default_recipe, {})
    kid = tk.name

    fields: dict[str, gr.components.Component] = {}
    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                recipe_dd = ctx.tr(gr.Dropdown(recipe_choices(recipes, lang),
                                               value=tk.default_recipe if tk.default_recipe in recipes else None,
                                               label=t("train.recipe", lang), elem_id=f"{kid}-recipe", scale=3),
                                   "train.recipe")
                recipe_md = gr.Markdown(recipe_description(base, lang), elem_id=f"{kid}-recipe-desc")
            with gr.Row(equal_height=True):  # Save as recipe: the form as <data-dir>/recipes/<name>.yaml
                recipe_name = ctx.tr(gr.Textbox("", label=t("recipe.name", lang), placeholder="my_lora_v1",
                                                max_lines=1, elem_id=f"{kid}-recipe-name", scale=2), "recipe.name")
                recipe_desc = ctx.tr(gr.Textbox("", label=t("recipe.description", lang), max_lines=1,
                                                elem_id=f"{kid}-recipe-description", scale=3), "recipe.description")
                save_btn = ctx.tr(gr.Button(t("recipe.save", lang), size="sm", elem_id=f"{kid}-recipe-save",
                                            scale=1), "recipe.save")
                delete_btn = ctx.tr(gr.Button(t("recipe.delete", lang), size="sm", variant="stop",
                                              elem_id=f"{kid}-recipe-delete", scale=1), "recipe.delete")
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
                                fields[d["name"]] = field_widget(d, initial, ctx, f"{kid}-{d['name']}")
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
                                     wrap_lines=True, elem_id=f"{kid}-command"), "train.command")
        with gr.Column(scale=4):
            with gr.Row():  # A1111: the big orange button sits top right
                train_btn = ctx.tr(gr.Button(t("train.start", lang), variant="primary", size="lg",
                                             elem_classes=["studio-train-btn"], elem_id=f"{kid}-train"),
                                   "train.start")
                stop_btn = ctx.tr(gr.Button(t("train.stop", lang), variant="stop", size="lg",
                                            elem_id=f"{kid}-stop"), "train.stop")
            error_box = gr.HTML("", elem_id=f"{kid}-error", elem_classes=["studio-error-box"],
                                js_on_load=None)  # a bad field, until the next edit
            progress = gr.HTML(progress_html(None, None, lang), elem_id=f"{kid}-progress", js_on_load=None,
                               elem_classes=["studio-progress-box"])
            plot = curves_widget(ctx, f"{kid}-plot", tk.series, lang)
            panels = []
            for panel in tk.panels:
                if panel == "samples":
                    df = gr.Dataframe(samples_frame([], lang), interactive=False, wrap=True,
                                      label=t("samples.title", lang), elem_id=f"{kid}-samples")
                    ctx.tr(df, "samples.title")  # its headers: relabel() below, with the shown job's rows
                    panels.append(df)
                elif panel == "gallery":
                    panels.append(ctx.tr(gr.Gallery(label=t("gallery.title", lang), columns=4, height=280,
                                                    elem_id=f"{kid}-gallery", interactive=False), "gallery.title"))
                else:
                    raise ValueError(f"{kid}: unknown panel {panel!r} (samples, gallery)")
            log = ctx.tr(gr.Textbox(label=t("train.log", lang), lines=22, max_lines=22, autoscroll=True,
                                    interactive=False, elem_id=f"{kid}-log", elem_classes=["studio-log"]),
                         "train.log")
            job_state = gr.State(None)

    field_names = list(fields)
    launch_inputs = [launcher, preset, nproc, zero, offload, machines, mrank, main_ip, main_port, hostfile]
    all_inputs = [*fields.values(), *launch_inputs]
    elem_ids = {**{n: c.elem_id for n, c in fields.items()},
                **{n: c.elem_id for n, c in zip(LAUNCH_LABELS, launch_inputs)},
                "recipe": recipe_dd.elem_id, "recipe_name": recipe_name.elem_id}
    follower = Follower(engine, tk.series)
    memo = SessionMemo()  # what each browser's poll last sent
    timer = gr.Timer(POLL_SECONDS, active=False)  # only while this tab is shown and its job can still change

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
            return f"# ⚠ {field_label(e.field, descs, ctx.lang)}: {e.message}"

    def edited(error_shown, *values):
        """Any edit: a new command preview, and the error of the last Train goes away."""
        return preview(*values), ("" if error_shown else gr.skip())

    def error_outputs(e: FieldError):
        """The message next to Train (the field's label, not its internal name) and the field marked red."""
        label = field_label(e.field, descs, ctx.lang)
        eid = elem_ids.get(e.field)
        mark = (f"<style>#{eid} {{ box-shadow: inset 0 0 0 2px #dc2626; }} #{eid} input, #{eid} textarea "
                f"{{ border: 2px solid #dc2626 !important; background: #fef2f2 !important; }}</style>") if eid else ""
        return field_error_html(label, e.message) + mark

    def submit(values: list, recipe: str) -> str:
        """Train, for the page and the API: validate the form (no model load), queue the job; FieldError if bad."""
        cfg, spec = collect(values, recipe)
        tk.validate(cfg)
        return engine.submit(kid, cfgmod.to_dict(cfg), spec, recipe=recipe)

    def train(recipe, *values):
        try:
            job_id = submit(list(values), recipe or "")
        except FieldError as e:
            return gr.skip(), gr.skip(), error_outputs(e)
        gr.Info(t("train.queued", ctx.lang).format(job=job_id))
        return job_id, job_command(engine.get(job_id)), ""

    def apply_recipe(name):
        r = load_recipes(kid, ctx.data_dir).get(name) if name else None
        if not r:  # deleted meanwhile (another browser): the form stays as it is
            return [*[gr.skip()] * len(all_inputs), ""]
        return [*form_values(descs, r.get("config", {}), r.get("launcher", {})), recipe_description(r, ctx.lang)]

    def relabel(new_lang, name, job_id):
        """On a language switch: the shown recipe's description, the recipe and dataset choices and the shown job's
        samples table in that language."""
        from app.tabs.datasets import dataset_choices

        lang_ = new_lang if new_lang in ("en", "zh") else ctx.lang
        recipes_ = load_recipes(kid, ctx.data_dir)
        samples = panel_outputs(("samples",), current_job(job_id), {}, lang_) if "samples" in tk.panels else []
        return [recipe_description(recipes_.get(name) or {}, lang_), gr.update(choices=recipe_choices(recipes_, lang_)),
                *[gr.update(choices=dataset_choices(ctx.data_dir, d["dataset_kind"], lang_)) for d in dataset_descs],
                *samples]

    def refresh_recipes(*select):
        """The recipe dropdown's choices as the data dir has them now (shipped + saved), and `select` if given."""
        choices = recipe_choices(load_recipes(kid, ctx.data_dir), ctx.lang)
        return gr.update(choices=choices, value=select[0]) if select else gr.update(choices=choices)

    def recipe_body(values: list) -> tuple[dict, dict]:
        """The form as a recipe's config: (its non-engine fields) and launcher blocks, validated by the schema."""
        cfg, spec = collect(values)
        config = {k: v for k, v in cfgmod.to_dict(cfg).items() if k not in ENGINE_FIELDS}
        launch = spec.to_dict()
        return config, {k: launch[k] for k in LAUNCH_LABELS}

    def save(name: str, description: str, values: list) -> str:
        """Save as recipe, for the page and the API: the checked name it was saved under; FieldError if bad."""
        name = check_recipe_name(name)
        config, launch = recipe_body(values)
        save_user_recipe(ctx.data_dir, kid, name, description or "", config, launch)
        return name

    def save_recipe(name, description, *values):
        """Save as recipe: a bad field or name is shown like Train's error; the dropdown then lists and selects it."""
        try:
            name = save(name, description, list(values))
        except FieldError as e:
            return gr.skip(), gr.skip(), error_outputs(e)
        gr.Info(t("recipe.saved", ctx.lang).format(name=name))
        return refresh_recipes(name), (description or "").strip(), ""

    def delete_recipe(name):
        try:
            delete_user_recipe(ctx.data_dir, kid, name)
        except FieldError as e:
            return gr.skip(), gr.skip(), error_outputs(e)
        gr.Info(t("recipe.deleted", ctx.lang).format(name=name))
        return refresh_recipes(None), "", ""

    def current_job(job_id):
        """The tab's job: the one this browser started, else the newest of this kind (any browser)."""
        if job_id:
            try:
                return engine.get(job_id)
            except (KeyError, JobError):
                pass
        jobs = [j for j in engine.list_jobs() if j["kind"] == kid]
        return jobs[0] if jobs else None

    def tick(job_id, request: gr.Request):
        """The timer: sends what changed; switches itself off once the job can no longer change."""
        job = current_job(job_id)
        prog, plot_v, log_v, sent, following = follower.poll(job, memo.get(request), ctx.lang)
        extra = panel_outputs(tk.panels, job, sent, ctx.lang)
        memo.set(request, sent)
        return prog, plot_v, log_v, *extra, gr.skip() if following else gr.Timer(active=False)

    def follow(job_id, request: gr.Request):
        """Tab shown or Train clicked: everything once, and the timer on while the job can change."""
        job = current_job(job_id)
        prog, plot_v, log_v, sent, following = follower.poll(job, None, ctx.lang)
        extra = panel_outputs(tk.panels, job, sent, ctx.lang)
        memo.set(request, sent)
        return prog, plot_v, log_v, *extra, gr.Timer(active=following)

    def stop(job_id):
        job = current_job(job_id)
        if not job or job["status"] not in ACTIVE:
            gr.Warning(t("train.nothing_to_stop", ctx.lang))
            return
        if job.get("stop_requested"):
            gr.Info(t("train.already_stopping", ctx.lang).format(job=job["id"]))
            return
        engine.stop(job["id"])
        gr.Info(t("train.stopping", ctx.lang).format(job=job["id"]))

    poll_outputs = [progress, plot, log, *panels, timer]
    for comp in all_inputs:
        comp.change(edited, inputs=[error_box, *all_inputs], outputs=[command, error_box],
                    show_progress="hidden", api_name=False)
    # .input (a pick in the dropdown), not .change: a choices refresh (tab opened, language switched, a recipe saved
    # or deleted) must not reload the form over the user's edits
    recipe_dd.input(apply_recipe, inputs=recipe_dd, outputs=[*[fields[d["name"]] for d in descs],
                                                             *launch_inputs, recipe_md], api_name=False)
    save_btn.click(save_recipe, inputs=[recipe_name, recipe_desc, *all_inputs],
                   outputs=[recipe_dd, recipe_md, error_box], api_name=False)
    delete_btn.click(delete_recipe, inputs=recipe_dd, outputs=[recipe_dd, recipe_md, error_box], api_name=False)
    train_btn.click(train, inputs=[recipe_dd, *all_inputs], outputs=[job_state, command, error_box],
                    api_name=False).then(follow, inputs=job_state, outputs=poll_outputs, api_name=False,
                                                   show_progress="hidden")
    stop_btn.click(stop, inputs=job_state, outputs=None, api_name=f"{kid}_stop").then(
        follow, inputs=job_state, outputs=poll_outputs, api_name=False, show_progress="hidden")
    timer.tick(tick, inputs=job_state, outputs=poll_outputs, show_progress="hidden", api_name=False)

    # The named API endpoints (gradio_client): every form and launcher field by name, its default the form's initial
    # value (the kind's default recipe), so a caller naming only what it changes keeps working when a field is
    # added. API-only events of hidden buttons on the form's own components: gr.api would add an Api component per
    # parameter to the page (≈300), and the Gradio 6 frontend pays for every component on each event.
    clash = set(field_names) & {*LAUNCH_LABELS, "recipe", "name", "description"}
    assert not clash, f"{kid}: schema fields {clash} clash with the API's own parameters"
    api_names = [*field_names, *LAUNCH_LABELS]

    def api_error(e: FieldError) -> gr.Error:
        return gr.Error(f"{field_label(e.field, descs, ctx.lang)} ({e.field}): {e.message}", print_exception=False)

    def api_train(args: dict) -> str:
        try:
            return submit([args[n] for n in api_names], str(args.pop("recipe") or ""))
        except FieldError as e:
            raise api_error(e) from None

    def api_save(args: dict) -> str:
        try:
            return save(args["name"], args.get("description") or "", [args[n] for n in api_names])
        except FieldError as e:
            raise api_error(e) from None

    def api_delete(args: dict) -> str:
        try:
            delete_user_recipe(ctx.data_dir, kid, args["name"])
        except FieldError as e:
            raise api_error(e) from None
        return str(args["name"]).strip()

    api_out = gr.Textbox(visible=False, label="result", elem_id=f"{kid}-api-result")
    for api_name, impl, names, inputs, doc in (
            (f"{kid}_train", api_train, [*api_names, "recipe"], [*all_inputs, recipe_dd],
             f"Queue a {kid} job (the tab's Train): every field by name, defaulting to the recipe "
             f"{tk.default_recipe}; returns the job id."),
            (f"{kid}_save_recipe", api_save, ["name", "description", *api_names], [recipe_name, recipe_desc, *all_inputs],
             f"Save the fields as the {kid} recipe <data-dir>/recipes/<name>.yaml; returns the name."),
            (f"{kid}_delete_recipe", api_delete, ["name"], [recipe_name],
             f"Delete the saved {kid} recipe <name> (never a shipped one); returns the name.")):
        gr.Button(visible=False, elem_id=f"{kid}-api-{api_name}").click(
            named_endpoint(impl, names, doc), inputs=inputs, outputs=api_out, api_name=api_name, preprocess=False,
            show_progress="hidden")

    def refresh_pickers(*values):
        """New choices for the dataset and model dropdowns (a studio dataset saved, a job finished since the page
        loaded); `values` are the model fields' current values, kept."""
        from app.tabs.datasets import dataset_choices

        ups = [gr.update(choices=dataset_choices(ctx.data_dir, d["dataset_kind"], ctx.lang)) for d in dataset_descs]
        ups += [gr.update(choices=model_choices(engine, d, v)) for d, v in zip(model_descs, values)]
        return ups[0] if len(ups) == 1 else ups  # Gradio takes a one-output return as the value itself

    dataset_descs = [d for d in descs if d.get("dataset_kind")]
    model_descs = [d for d in descs if d.get("widget") == "model"]
    model_fields = [fields[d["name"]] for d in model_descs]
    return {"fields": fields, "launch_inputs": launch_inputs, "command": command, "preview": preview,
            "all_inputs": all_inputs, "descs": descs, "job_state": job_state, "refresh_pickers": refresh_pickers,
            "pickers": [*[fields[d["name"]] for d in dataset_descs], *model_fields], "picker_inputs": model_fields,
            "timer": timer,
            "follow": (follow, [job_state], poll_outputs),
            "recipe": recipe_dd, "refresh_recipes": refresh_recipes,
            "relabel": (relabel, [recipe_dd, job_state], [recipe_md, recipe_dd, *[fields[d["name"]] for d in dataset_descs],
                                                         *[p for p, name in zip(panels, tk.panels) if name == "samples"]])}


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


def field_widget(d: dict, value, ctx: StudioContext, elem_id: str):
    """The form widget of one schema field (its descriptor `d`), labelled and explained in the page's language
    and registered for the language switch. Every schema-driven form uses it (training tabs, the A/B settings)."""
    label, info = _label_renderer(d), _info_renderer(d)
    w = _widget(d, value, label(ctx.lang), info(ctx.lang), elem_id, ctx)
    ctx.tr_fn(w, label, attr="label")
    ctx.tr_fn(w, info, attr="info")
    return w


def model_choices(engine, d: dict, value) -> list[tuple[str, str]]:
    """A model field's choices: its value (a default like bundled:smollm2, or what was typed), then every succeeded
    job whose kind produces what the field `accepts` (kinds.producing), newest first, as job:<id>."""
    from app import kinds

    out = [(str(value), str(value))] if value else []
    if d.get("default") and d["default"] != value:
        out.append((str(d["default"]), str(d["default"])))
    names = kinds.producing(d["accepts"]) if d.get("accepts") else ()
    if engine is not None and names:
        for j in engine.list_jobs():
            if j["status"] == "succeeded" and j["kind"] in names:
                out.append((f"{j.get('recipe') or j['kind']} · job:{j['id']}", f"job:{j['id']}"))
    seen, uniq = set(), []
    for label, v in out:
        if v not in seen:
            seen.add(v)
            uniq.append((label, v))
    return uniq


def _widget(d: dict, value, label: str, info: str, eid: str, ctx: StudioContext):
    if d.get("widget") == "model":  # finished jobs of the kinds it accepts; any folder or hub id may be typed
        return gr.Dropdown(model_choices(ctx.engine, d, value), value=value, label=label, info=info, elem_id=eid,
                           allow_custom_value=True)
    if d.get("dataset_kind"):  # studio datasets of the kind + bundled samples; any path may be typed
        from app.tabs.datasets import dataset_choices

        return gr.Dropdown(dataset_choices(ctx.data_dir, d["dataset_kind"], ctx.lang), value=value, label=label, info=info,
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
