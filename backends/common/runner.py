"""The one runner every backend goes through: parse -> resolve the engine-owned fields -> run -> exit code.

A backend module declares its schema (a dataclass inheriting the field groups of backends/common/config.py,
always :class:`~backends.common.config.JobFields`) and one function ``run(cfg, job) -> dict``; its ``main`` is::

    def main(argv=None) -> int:
        return runner.main(KIND, XArgs, run, argv, description="...")

- **parse**: ``--config FILE`` (a flat YAML of the fields, or a recipe with a ``config:`` block, whose ``name``
  becomes ``recipe`` when the options do not set one) plus ``--field value`` overrides (:func:`parse_args`);
- **resolve** (:func:`resolve_job`): the data dir (must exist), the run dir (``runs/manual-<kind>`` when empty;
  inside the data dir when one is set), the DeepSpeed file (``deepspeed``, or the one an ``accelerate launch``
  config points at), and the checkpoint to resume from;
- **run**: ``run(cfg, job)`` returns its end record; ``exit_code`` in it is 0 for done, 128+signal after a clean
  stop (see :class:`backends.common.distributed.StopOnSignal`);
- **exit code**: a :class:`FieldError` anywhere prints ``error: <field>: <message>`` on stderr and exits 2.

Checkpoint contract (what ``resume_from_checkpoint: latest`` finds): ``<run_dir>/checkpoints/checkpoint-<step>/``
holds whatever the recipe needs to continue, plus ``trainer_state.json`` (written by HF Trainer / TRL recipes)
or, for hand-written loops, a ``studio-state.json`` with at least ``{"step": <step>}`` (:func:`write_state`),
written last, so a folder without either is incomplete (a crash while saving) and is skipped. Resume = the
complete checkpoint with the highest step (:func:`latest_checkpoint`). A fresh start into a run dir that already
has checkpoints is refused (set ``latest`` or choose a new run dir).

Output contract: ``<run_dir>/output/`` holds the result (model / adapter + tokenizer) and ``studio.json`` with
at least ``kind`` and ``status``; an unfinished job has no ``studio.json`` (:func:`job_result`).
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as cfglib
from . import paths
from .errors import FieldError
from .paths import ROOT

CHECKPOINTS = "checkpoints"
STATE_FILES = ("trainer_state.json", "studio-state.json")


@dataclass
class Job:
    """The resolved engine-owned fields of a run."""

    kind: str
    data_dir: Path | None
    run_dir: Path
    output_dir: Path
    checkpoints_dir: Path
    deepspeed: str  # absolute path of the DeepSpeed JSON, or ""
    resume: str     # a complete checkpoint folder to continue from, or ""


# ------------------------------------------------------------------------------------------ parse
def ensure_args(schema: type, cfg: Any) -> Any:
    """A validated `schema` instance from an instance (re-checked) or a mapping (strings from a form are fine)."""
    if isinstance(cfg, schema):
        return cfglib.validate_fields(cfg)
    if isinstance(cfg, Mapping):
        return cfglib.from_dict(schema, cfg)
    raise TypeError(f"expected {schema.__name__} or a mapping, got {type(cfg).__name__}")


def recipe_name(argv: list[str]) -> str:
    """The recipe name of `--config FILE` when FILE is a recipe (its `name`, else the file's stem), else ""."""
    path = None
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = Path(argv[i + 1])
        elif a.startswith("--config="):
            path = Path(a.split("=", 1)[1])
    if path is None or not path.is_file():
        return ""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return ""
    if isinstance(raw, dict) and cfglib.is_recipe(raw):
        return str(raw.get("name") or path.stem)
    return ""


def parse_args(schema: type, argv: list[str] | None = None, *, kind: str, description: str | None = None) -> Any:
    """`--config FILE [--field value ...]` -> a validated `schema` instance (CLI values override the file)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    cfg = cfglib.parse_cli(schema, argv, kind=kind, prog=f"python -m backends.{kind}", description=description)
    if hasattr(cfg, "recipe") and not cfg.recipe:
        cfg.recipe = recipe_name(argv)
    return cfg


# ---------------------------------------------------------------------------------------- resolve
def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    """The complete `checkpoint-<step>` folder with the highest step (see the checkpoint contract), or None."""
    best, best_n = None, -1
    d = Path(checkpoints_dir)
    if d.is_dir():
        for c in d.iterdir():
            if c.is_dir() and c.name.startswith("checkpoint-") and c.name.split("-", 1)[1].isdigit():
                n = int(c.name.split("-", 1)[1])
                if n > best_n and is_complete_checkpoint(c):
                    best, best_n = c, n
    return best


def is_complete_checkpoint(folder: str | os.PathLike) -> bool:
    p = Path(folder)
    return p.is_dir() and any((p / n).is_file() for n in STATE_FILES)


def write_state(checkpoint_dir: str | os.PathLike, step: int, **extra: Any) -> Path:
    """For hand-written loops: mark `checkpoint_dir` complete (write it last, after the weights)."""
    p = Path(checkpoint_dir) / "studio-state.json"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"step": int(step), **extra}, indent=2, default=str) + "\n", encoding="utf-8")
    return p


def data_dir_of(cfg: Any) -> Path | None:
    dd = Path(cfg.data_dir).expanduser().resolve() if getattr(cfg, "data_dir", "") else None
    if dd is not None and not dd.is_dir():
        raise FieldError("data_dir", f"folder not found: {cfg.data_dir}")
    return dd


def deepspeed_file(value: str, *, field: str = "deepspeed") -> str:
    """The absolute path of a DeepSpeed JSON (relative paths: the working dir, then the project root), or ""."""
    if not value:
        return ""
    p = Path(value).expanduser()
    if not p.is_absolute() and not p.exists():
        p = ROOT / p
    if not p.is_file():
        raise FieldError(field, f"file not found: {value} (e.g. presets/deepspeed/zero2.json)")
    try:
        ds_json = json.loads(p.read_text(encoding="utf-8"))
    except ValueError as e:
        raise FieldError(field, f"{p.name} is not valid JSON: {e}") from None
    if not isinstance(ds_json, dict):
        raise FieldError(field, f"{p.name} must hold a JSON object")
    return str(p.resolve())


def resolve_job(cfg: Any, kind: str, *, checkpoints: bool = True) -> Job:
    """Resolve the JobFields of `cfg` (FieldError naming the field). `checkpoints=False`: a program that keeps
    none (resume_from_checkpoint is ignored)."""
    dd = data_dir_of(cfg)
    run_dir = paths.run_dir_of(cfg.run_dir, cfg.data_dir, f"runs/manual-{kind}")
    if dd is not None and not paths.inside(run_dir, dd):
        raise FieldError("run_dir", f"{run_dir} is outside the data dir {dd}; use a path inside it "
                                    "(e.g. runs/<name>)")
    output_dir, checkpoints_dir = run_dir / "output", run_dir / CHECKPOINTS
    ds_value = cfg.deepspeed
    if not ds_value and os.environ.get("ACCELERATE_USE_DEEPSPEED"):  # only then: distributed imports torch
        from .distributed import accelerate_deepspeed_config

        ds_value = accelerate_deepspeed_config()
    ds = deepspeed_file(ds_value)

    resume = ""
    if checkpoints:
        r = str(cfg.resume_from_checkpoint or "").strip()
        if r.lower() == "latest":
            latest = latest_checkpoint(checkpoints_dir)
            resume = str(latest) if latest else ""
        elif r:
            rp = Path(r).expanduser()
            if not rp.is_absolute() and not rp.exists():
                rp = checkpoints_dir / r
            if not is_complete_checkpoint(rp):
                raise FieldError("resume_from_checkpoint", f"no checkpoint at {r}; use latest, empty, or a "
                                                           f"checkpoint-N folder under {checkpoints_dir}")
            resume = str(rp.resolve())
        elif latest_checkpoint(checkpoints_dir) is not None:
            raise FieldError("resume_from_checkpoint", f"{run_dir} already has checkpoints from an earlier run: "
                                                       "set it to latest to continue, or choose a new run_dir")
    return Job(kind, dd, run_dir, output_dir, checkpoints_dir, ds, resume)


def job_result(value: str, data_dir: Path | None, *, field: str, kinds: tuple[str, ...] = ()) -> tuple[Path, dict]:
    """(output folder, its studio.json) of `job:<id>`: FieldError when the job is unknown, unfinished (no
    studio.json in its output yet) or of another kind than `kinds`."""
    from . import modeling

    if data_dir is None:
        raise FieldError(field, f"{value} names a job: it needs the data dir (--data_dir) the job ran in")
    out = modeling.job_output(value, data_dir, field=field)
    job = str(value).split(":", 1)[1].strip()
    if not out.parent.is_dir():
        raise FieldError(field, f"no job {job} in {paths.runs_dir(data_dir)}; pick a finished job from the Jobs tab")
    info = modeling.read_studio_json(out)
    if not info:
        raise FieldError(field, f"job {job} has not finished (no output/studio.json yet); wait for it, or pick a "
                                "finished job")
    if info.get("status") not in (None, "completed"):
        raise FieldError(field, f"job {job} ended {info.get('status')!r}, not completed; resume it first or pick a "
                                "completed job")
    if kinds and info.get("kind") not in kinds:
        raise FieldError(field, f"job {job} is a {info.get('kind')!r} job; this needs the result of a "
                                f"{' or '.join(kinds)} job")
    return out, info


# -------------------------------------------------------------------------------------------- main
def main(kind: str, schema: type, run: Callable[[Any, Job], Mapping[str, Any]], argv: list[str] | None = None,
         *, description: str | None = None, checkpoints: bool = True) -> int:
    """parse -> resolve -> run(cfg, job) -> exit code (0, 2 on a FieldError, the record's exit_code)."""
    try:
        cfg = parse_args(schema, argv, kind=kind, description=description)
        job = resolve_job(cfg, kind, checkpoints=checkpoints)
        if os.environ.get("RANK", "0") == "0":  # at once, before the seconds torch and transformers take to import
            print(f"[studio] {kind}: config read, loading the libraries (torch, transformers, ...)", flush=True)
        rec = run(cfg, job)
    except FieldError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return int((rec or {}).get("exit_code", 0))
