"""Datasets tab: the catalog, files under the data dir and uploads → format, rows, preview, column mapping,
validation report with the token-length histogram, DeepSpeed-Chat's data_split, and "Save as studio dataset".

Everything here calls `backends.data` (the same code as `python -m backends.data check|save`), so the page
and the command line print the same report. Paths typed into the page must stay inside the data dir.
"""
from __future__ import annotations

import contextlib
import os
import threading
from collections import OrderedDict
from pathlib import Path

import gradio as gr
import pandas as pd

from app.context import StudioContext
from app.i18n import t
from backends.common import paths
from backends.common.errors import FieldError
from backends.data import catalog, store
from backends.data.check import CheckOptions, check_opened, default_mapping
from backends.data.shapes import KIND_LABELS, KINDS, reads
from backends.data.sources import Opened, local_candidates, open_source, store_upload
from backends.data.transforms import TRANSFORMS

MAP_SLOTS = 6
_CACHE_SIZE = 4


class _OpenCache:
    """The last few opened sources (rows in memory), keyed by spec + file mtime, shared by all browsers."""

    def __init__(self):
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, spec: str, ctx: StudioContext) -> Opened:
        key = (spec, _mtime(spec, ctx))
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        opened = open_source(spec, ctx.data_dir, offline=ctx.offline, confine_to_data_dir=True)
        with self._lock:
            self._d[key] = opened
            while len(self._d) > _CACHE_SIZE:
                self._d.popitem(last=False)
        return opened


def _mtime(spec: str, ctx: StudioContext) -> float:
    """Changes when the file (or a file directly in the folder) changes, so an edited file is read again."""
    p = ctx.data_dir / spec
    try:
        if p.is_dir():
            return max([p.stat().st_mtime, *(c.stat().st_mtime for c in p.iterdir())])
        return p.stat().st_mtime
    except OSError:
        return 0.0


def _delete_uploaded(files) -> None:
    """Deletes Gradio's temporary copies of uploaded files (and their emptied folders) once handled; only files
    inside Gradio's upload folder are touched."""
    from gradio.utils import get_upload_folder

    root = Path(get_upload_folder()).resolve()
    for f in files:
        p = Path(f)
        if not paths.inside(p, root) or p.resolve() == root:
            continue
        with contextlib.suppress(OSError):
            p.unlink()
        with contextlib.suppress(OSError):
            if p.parent.resolve() != root:
                p.parent.rmdir()  # only when empty


def catalog_choices(lang: str) -> list[tuple[str, str]]:
    out = []
    for e in catalog.load_catalog():
        where = t(f"ds.where.{e.source}", lang)
        out.append((f"{e.id} — {where} · {', '.join(e.kinds)} · {', '.join(e.languages)}", e.id))
    return out


def entry_markdown(entry_id: str, ctx: StudioContext) -> str:
    if not entry_id:
        return ""
    try:
        e = catalog.get_entry(entry_id)
    except KeyError:
        return ""
    zh = ctx.lang == "zh"
    desc = e.description_zh if zh and e.description_zh else e.description
    lines = [f"**{e.id}** — {desc}",
             f"{'来源' if zh else 'origin'}: {', '.join(e.origin)} · {'许可' if zh else 'licence'}: {e.license} · "
             f"{'规模' if zh else 'size'}: {e.size}" + (f" · [{e.url}]({e.url})" if e.url else "")]
    if e.source == "hub":
        copy = catalog.find_local_copy(e, ctx.data_dir)
        if copy is not None:
            lines.append(f"✅ {'本地副本' if zh else 'local copy'}: `{copy}`")
        elif ctx.offline or catalog.hub_unreachable():  # the same probe load_entry uses
            lines.append("⚠ " + catalog.unavailable_message(e, ctx.data_dir, lang=ctx.lang))
    return "\n\n".join(lines)


STUDIO_COLUMNS = ["name", "kind", "rows", "data_split", "source", "created"]


def studio_frame(data_dir, lang: str = "en") -> pd.DataFrame:
    rows = [[c["name"], c.get("kind", ""), c.get("rows", ""), c.get("data_split", ""), c.get("source", ""),
             c.get("created", "")] for c in store.list_datasets(data_dir)]
    return pd.DataFrame(rows, columns=[t(f"ds.col.{c}", lang) for c in STUDIO_COLUMNS])


def kind_choices(lang: str) -> list[tuple[str, str]]:
    return [(f"{k} — {KIND_LABELS[k][1 if lang == 'zh' else 0]}", k) for k in KINDS]


def transform_choices(lang: str) -> list[tuple[str, str]]:
    return [(t("ds.transform.columns", lang), "columns"), *((n, n) for n in TRANSFORMS)]


# The form's fields by the name backends.data gives them in a FieldError -> the key of their label on this page.
FIELD_LABELS = {"max_len": "ds.max_len", "eval_ratio": "ds.eval_ratio", "seed": "ds.seed",
                "data_split": "ds.data_split", "model": "ds.model", "kind": "ds.kind", "transform": "ds.transform", "map": "ds.mapping",
                "name": "ds.name"}


def field_message(e: Exception, lang: str) -> str:
    """A bad input as the page says it: the field's on-screen label, then the message."""
    if not isinstance(e, FieldError):
        return str(e)
    return f"{t(FIELD_LABELS[e.field], lang) if e.field in FIELD_LABELS else e.field}: {e.message}"


def report_hints(lang: str) -> dict[str, str]:
    """How to drop the rows a report kept, in the words of this page (its checkboxes), not the CLI's flags."""
    tick = t("ds.hint.tick_to_drop", lang)
    return {"kept_bad": tick.format(box=t("ds.drop_bad", lang)),
            "kept_long": tick.format(box=t("ds.drop_long", lang))}


def hist_frame(report) -> pd.DataFrame:
    rows = [{"tokens": f"{a}-{b}", "rows": n, "from": a} for a, b, n in report.histogram] if report else []
    return pd.DataFrame(rows, columns=["tokens", "rows", "from"]).astype({"rows": "int64", "from": "int64"})


def summary_markdown(op: Opened, lang: str) -> str:
    zh = lang == "zh"
    kinds = ", ".join(f"{k} ({KIND_LABELS[k][1 if zh else 0]})" for k in op.kinds) or "—"
    lines = [f"**{op.label}** · {'格式' if zh else 'format'}: `{op.format}` · {'行数' if zh else 'rows'}: "
             f"**{len(op.table.rows)}**" + (f" · {'无法读取的行' if zh else 'unreadable lines'}: "
                                            f"{len(op.table.problems)}" if op.table.problems else ""),
             f"{'列' if zh else 'columns'}: " + ", ".join(f"`{c}`" for c in op.columns),
             f"{'可用于' if zh else 'can serve'}: {kinds}"]
    lines += [f"- {n}" for n in op.notes]
    return "\n\n".join(lines)


def build(ctx: StudioContext) -> dict:
    lang = ctx.lang
    cache = _OpenCache()
    with gr.Row():
        with gr.Column(scale=5):
            with gr.Row():
                cat_dd = ctx.tr(gr.Dropdown(catalog_choices(lang), value=None, label=t("ds.catalog", lang),
                                            elem_id="ds-catalog", scale=3), "ds.catalog")
                path_dd = ctx.tr(gr.Dropdown(local_candidates(ctx.data_dir), value=None, allow_custom_value=True,
                                             label=t("ds.path", lang), elem_id="ds-path", scale=3), "ds.path")
            entry_md = gr.Markdown("", elem_id="ds-entry")  # the inspected catalog entry's description
            upload = ctx.tr(gr.File(label=t("ds.upload", lang), file_count="multiple", type="filepath",
                                    elem_id="ds-upload", height=110), "ds.upload")
            source = ctx.tr(gr.Textbox("", label=t("ds.source", lang), elem_id="ds-source", max_lines=1,
                                       placeholder=t("ds.pick_first", lang), interactive=False), "ds.source")
            ctx.tr(source, "ds.pick_first", attr="placeholder")
            with gr.Row():
                kind = ctx.tr(gr.Dropdown(kind_choices(lang), value="sft",
                                          label=t("ds.kind", lang), elem_id="ds-kind"), "ds.kind")
                transform = ctx.tr(gr.Dropdown(transform_choices(lang), value="columns",
                                               label=t("ds.transform", lang), elem_id="ds-transform"), "ds.transform")
                ctx.tr_fn(cat_dd, catalog_choices, attr="choices")
                ctx.tr_fn(kind, kind_choices, attr="choices")
                ctx.tr_fn(transform, transform_choices, attr="choices")
            ctx.tr(gr.Markdown(f"**{t('ds.mapping', lang)}**"), "ds.mapping", attr="value", fmt="**{}**")
            with gr.Row():
                slots = [gr.Dropdown([""], value="", label=f"field {i}", visible=False, allow_custom_value=False,
                                     elem_id=f"ds-map-{i}", min_width=140) for i in range(MAP_SLOTS)]
            with gr.Row():
                model = ctx.tr(gr.Textbox("", label=t("ds.model", lang), placeholder="bundled:smollm2",
                                          elem_id="ds-model", max_lines=1), "ds.model")
                max_len = ctx.tr(gr.Textbox("512", label=t("ds.max_len", lang), elem_id="ds-max-len", max_lines=1),
                                 "ds.max_len")
                drop_bad = ctx.tr(gr.Checkbox(True, label=t("ds.drop_bad", lang), elem_id="ds-drop-bad"),
                                  "ds.drop_bad")
                drop_long = ctx.tr(gr.Checkbox(False, label=t("ds.drop_long", lang), elem_id="ds-drop-long"),
                                   "ds.drop_long")
            with gr.Row():
                data_split = ctx.tr(gr.Textbox("", label=t("ds.data_split", lang), placeholder="2,4,4",
                                               elem_id="ds-data-split", max_lines=1), "ds.data_split")
                eval_ratio = ctx.tr(gr.Textbox("0.1", label=t("ds.eval_ratio", lang), elem_id="ds-eval-ratio",
                                               max_lines=1), "ds.eval_ratio")
                seed = ctx.tr(gr.Textbox("1234", label=t("ds.seed", lang), elem_id="ds-seed", max_lines=1), "ds.seed")
            with gr.Row():
                check_btn = ctx.tr(gr.Button(t("ds.check", lang), variant="primary", elem_id="ds-check"), "ds.check")
                name = ctx.tr(gr.Textbox("", label=t("ds.name", lang), placeholder=t("ds.name_ph", lang),
                                         elem_id="ds-name", max_lines=1, scale=2), "ds.name")
                ctx.tr(name, "ds.name_ph", attr="placeholder")
                overwrite = ctx.tr(gr.Checkbox(False, label=t("ds.overwrite", lang), elem_id="ds-overwrite"),
                                   "ds.overwrite")
                save_btn = ctx.tr(gr.Button(t("ds.save", lang), variant="primary", elem_classes=["studio-train-btn"],
                                            elem_id="ds-save"), "ds.save")
        with gr.Column(scale=5):
            summary = gr.Markdown("", elem_id="ds-summary")  # until a source is picked its box says what to do
            preview = ctx.tr(gr.Dataframe(pd.DataFrame(), interactive=False, wrap=True, max_height=330,
                                          label=t("ds.preview", lang), elem_id="ds-preview"), "ds.preview")
            report_box = ctx.tr(gr.Textbox("", label=t("ds.report", lang), lines=12, max_lines=24,
                                           interactive=False, elem_id="ds-report"), "ds.report")
            hist = ctx.tr(gr.BarPlot(hist_frame(None), x="tokens", y="rows", sort="from", height=220,
                                     x_title=t("ds.hist.x", lang), y_title=t("ds.hist.y", lang),
                                     label=t("ds.hist", lang), elem_id="ds-hist"), "ds.hist")
            ctx.tr(hist, "ds.hist.x", attr="x_title")
            ctx.tr(hist, "ds.hist.y", attr="y_title")
            studio_list = ctx.tr(gr.Dataframe(studio_frame(ctx.data_dir, lang), interactive=False, max_height=240,
                                              label=t("ds.studio", lang), elem_id="ds-studio-list"), "ds.studio")
            ctx.tr_fn(studio_list, lambda lang_: studio_frame(ctx.data_dir, lang_))

    # ------------------------------------------------------------------------------------ handlers
    def slot_updates(op: Opened | None, k: str, tr_name: str, mapping: dict[str, str] | None = None):
        fields = list(reads(k, tr_name)) if tr_name in ("columns", *TRANSFORMS) else []
        cols = [""] + (op.columns if op else [])
        ups = []
        for i in range(MAP_SLOTS):
            if i < len(fields):
                val = (mapping or {}).get(fields[i], "")
                ups.append(gr.update(label=fields[i], choices=cols, value=val if val in cols else "", visible=True))
            else:
                ups.append(gr.update(visible=False, value=""))
        return ups

    def inspect(spec: str, k: str):
        """Open the source: summary, preview, the kind it serves best, auto mapping."""
        if not spec:
            return [gr.update()] * (5 + MAP_SLOTS)
        entry = entry_markdown(spec, ctx)  # "" unless the source is a catalog entry: never the previous one's
        try:
            op = cache.get(spec, ctx)
        except (FieldError, catalog.DatasetUnavailable) as e:
            msg = field_message(e, ctx.lang)
            gr.Warning(msg)
            return [entry, f"⚠ {msg}", pd.DataFrame(), gr.update(), gr.update(), *slot_updates(None, k, "columns")]
        kinds = op.kinds  # a catalog entry's first kind is its main use; a file keeps the chosen kind if it can
        k = kinds[0] if kinds and (op.entry is not None or k not in kinds) else k
        mapping, tr_name = default_mapping(op, k)
        header, rows = op.preview()
        return [entry, summary_markdown(op, ctx.lang), pd.DataFrame(rows, columns=header), k, tr_name,
                *slot_updates(op, k, tr_name, mapping)]

    def remap(spec: str, k: str, tr_name: str | None):
        """Kind (tr_name None: the kind's own transform) or transform changed: new mapping fields, auto-filled."""
        op = None
        if spec:
            try:
                op = cache.get(spec, ctx)
            except (FieldError, catalog.DatasetUnavailable):
                op = None
        if op is None:
            return [tr_name or "columns", *slot_updates(None, k, tr_name or "columns")]
        if tr_name is not None and (tr_name not in ("columns", *TRANSFORMS)
                                    or (tr_name != "columns" and k not in TRANSFORMS[tr_name].kinds)):
            tr_name = "columns"
        mapping, tr_name = default_mapping(op, k, tr_name)
        return [tr_name, *slot_updates(op, k, tr_name, mapping)]

    def options(k, tr_name, mdl, mlen, dbad, dlong, dsplit, eratio, sd, *slot_vals) -> CheckOptions:
        fields = list(reads(k, tr_name))
        mapping = {f: (slot_vals[i] or "") for i, f in enumerate(fields[:MAP_SLOTS])}
        try:
            mlen_i = int(str(mlen).strip())
        except ValueError:
            raise FieldError("max_len", t("ds.err.whole", ctx.lang).format(got=repr(mlen))) from None
        try:
            er = float(str(eratio).strip() or 0)
        except ValueError:
            raise FieldError("eval_ratio", t("ds.err.ratio", ctx.lang).format(got=repr(eratio))) from None
        try:
            sd_i = int(str(sd).strip() or 1234)
        except ValueError:
            raise FieldError("seed", t("ds.err.whole", ctx.lang).format(got=repr(sd))) from None
        return CheckOptions(kind=k, mapping=mapping, transform=tr_name, model=(mdl or "").strip(), max_len=mlen_i,
                            drop_bad=bool(dbad), drop_too_long=bool(dlong), data_split=(dsplit or "").strip(),
                            eval_ratio=er, seed=sd_i).validated()

    def run_check(spec, *args):
        if not spec:
            raise gr.Error(t("ds.pick_first", ctx.lang))
        try:
            opts = options(*args)
            op = cache.get(spec, ctx)
        except (FieldError, catalog.DatasetUnavailable) as e:
            msg = field_message(e, ctx.lang)
            gr.Warning(msg)
            return None, None, f"⚠ {msg}", None
        rep, rows = check_opened(op, opts, ctx.data_dir)
        return op, opts, rep, rows

    def do_check(spec, *args):
        op, _opts, rep, _rows = run_check(spec, *args)
        if op is None:
            return rep, hist_frame(None)
        if not rep.usable:
            gr.Warning(rep.fatal)
        return rep.to_text(ctx.lang, report_hints(ctx.lang)), hist_frame(rep)

    def do_save(spec, nm, ow, *args):
        op, opts, rep, rows = run_check(spec, *args)
        if op is None:
            return rep, hist_frame(None), gr.update(), gr.update()
        try:
            folder = store.save(nm, rows, rep, data_dir=ctx.data_dir, source=spec, data_split=opts.data_split,
                                eval_ratio=opts.eval_ratio, seed=opts.seed, overwrite=bool(ow),
                                image_folder=op.image_folder)
        except FieldError as e:
            msg = field_message(e, ctx.lang)
            gr.Warning(msg)
            return (rep.to_text(ctx.lang, report_hints(ctx.lang)) + f"\n⚠ {msg}", hist_frame(rep), gr.update(),
                    gr.update())
        msg = t("ds.saved", ctx.lang).format(name=folder.name, rows=len(rows))
        gr.Info(msg)
        return (rep.to_text(ctx.lang, report_hints(ctx.lang)) + f"\n✅ {msg}", hist_frame(rep),
                studio_frame(ctx.data_dir, ctx.lang),
                gr.update(choices=local_candidates(ctx.data_dir)))

    def do_upload(files):
        if not files:
            return gr.update(), gr.update(), gr.update()
        names = [os.path.basename(f) for f in files]
        try:
            stored = store_upload(files, ctx.data_dir, original_names=names)
        except FieldError as e:
            gr.Warning(f"{e.field}: {e.message}")
            return gr.update(), gr.update(), f"⚠ {e.field}: {e.message}"
        finally:
            _delete_uploaded(files)  # accepted (copied into datasets/uploads) or refused: Gradio's copy goes
        rel = str(stored.relative_to(ctx.data_dir))
        gr.Info(t("ds.uploaded", ctx.lang).format(path=rel))
        return gr.update(choices=local_candidates(ctx.data_dir), value=rel), rel, gr.update()

    slot_out = list(slots)
    opt_inputs = [kind, transform, model, max_len, drop_bad, drop_long, data_split, eval_ratio, seed, *slots]
    # Picking a catalog entry clears the path box and the other way round: "Inspecting" names the one source.
    cat_dd.change(lambda v: (v, None) if v else (gr.update(), gr.update()), inputs=cat_dd, outputs=[source, path_dd],
                  api_name=False)
    path_dd.change(lambda v: (v, None) if v else (gr.update(), gr.update()), inputs=path_dd, outputs=[source, cat_dd],
                   api_name=False)
    upload.upload(do_upload, inputs=upload, outputs=[path_dd, source, summary], api_name="datasets_upload")
    source.change(inspect, inputs=[source, kind], outputs=[entry_md, summary, preview, kind, transform, *slot_out],
                  api_name="datasets_inspect")
    kind.input(lambda spec, k: remap(spec, k, None), inputs=[source, kind], outputs=[transform, *slot_out],
               api_name=False)
    transform.input(remap, inputs=[source, kind, transform], outputs=[transform, *slot_out], api_name=False)
    check_btn.click(do_check, inputs=[source, *opt_inputs], outputs=[report_box, hist], api_name="datasets_check")
    save_btn.click(do_save, inputs=[source, name, overwrite, *opt_inputs],
                   outputs=[report_box, hist, studio_list, path_dd], api_name="datasets_save")
    return {"studio_list": studio_list, "refresh": lambda: studio_frame(ctx.data_dir, ctx.lang)}


def dataset_choices(data_dir, kind: str, lang: str = "en") -> list[tuple[str, str]]:
    """(label, value) for a training tab's dataset dropdown: studio datasets of the kind, then the bundled samples."""
    out = [(t("ds.choice.studio", lang).format(name=c["name"], rows=c.get("rows", "?")), c["name"])
           for c in store.list_datasets(data_dir, kind)]
    for e in catalog.load_catalog():
        if e.source == "bundled" and kind in e.kinds and e.path and "images" not in e.kinds:
            out.append((t("ds.choice.bundled", lang).format(name=e.id), e.path))
    return out


