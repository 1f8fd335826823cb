"""Pipelines: a chain of ordinary jobs (DeepSpeed-Chat's e2e_rlhf.py: SFT -> reward model -> RLHF).

A pipeline is not a training program of its own. Each step is a normal job of the engine (its own run dir, log,
command.sh, Stop, Resume) whose meta names the pipeline, its step number and the job it waits for (``after``); a
field of a later step names an earlier step's result as ``job:@<step>`` here, stored as ``job:<id>`` and resolved
by the backend when the step starts (the earlier job has succeeded by then). The engine starts a step only once
the step before it succeeded, and cancels the later steps, with the reason, when one fails or is stopped
(:meth:`Engine.tick`). The group lives in ``<data-dir>/pipelines/<id>/``:

- ``pipeline.json`` -- its id, name, the steps (job id, kind, title) and when it was made;
- ``pipeline.sh`` -- runs the steps' command.sh files in order and stops at the first failure, so the whole
  pipeline re-runs from a shell (each step's earlier output/checkpoints are moved to ``previous/<time>/`` first:
  nothing is lost, and the re-run does not mistake them for its own).
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import time
from pathlib import Path
from typing import Any

from app import kinds
from backends.common.errors import FieldError

from .engine import RESUMABLE, Engine, JobError, _now_str
from .launcher import LaunchSpec

REF = re.compile(r"^job:@(\d+)$")
PIPELINES = "pipelines"


def pipelines_dir(engine: Engine) -> Path:
    return Path(engine.data_dir) / PIPELINES


def _refs(config: dict) -> dict[str, int]:
    """{field: step number} of the `job:@<n>` values of a step's config."""
    return {k: int(m.group(1)) for k, v in config.items() if isinstance(v, str) and (m := REF.match(v.strip()))}


def validate_steps(steps: list[dict]) -> None:
    """Check every step before anything is queued (FieldError naming `step <n>: <field>`): its kind, its launch
    spec, references to earlier steps only, and the kind's own validation with each reference standing for the
    model that step starts from (a check of the referenced result itself happens when the step starts)."""
    if not steps:
        raise FieldError("steps", "a pipeline needs at least one step")
    for n, step in enumerate(steps, 1):
        try:
            kind = kinds.get(step.get("kind", ""))
            spec = step.get("spec")
            (spec if isinstance(spec, LaunchSpec) else LaunchSpec.from_dict(spec or {})).validate()
            config = dict(step.get("config") or {})
            refs = _refs(config)
            for field, k in refs.items():
                if not 1 <= k < n:
                    raise FieldError(field, f"job:@{k} must name an earlier step (1..{n - 1})")
            stand_in = dict(config)
            for field, k in refs.items():
                stand_in[field] = _start_of(steps, k)
            try:
                kind.validate(stand_in)
            except FieldError as e:
                if e.field not in refs:  # a referenced result is checked when its step starts
                    raise
        except FieldError as e:
            raise FieldError(f"step {n}: {e.field}", e.message) from None


def _start_of(steps: list[dict], k: int) -> str:
    """The model step k starts from, following references back to the first step's own model."""
    cfg = steps[k - 1].get("config") or {}
    field = kinds.model_field(steps[k - 1]["kind"])
    value = str(cfg.get(field, "")) if field else ""
    m = REF.match(value.strip())
    return _start_of(steps, int(m.group(1))) if m else value


def submit(engine: Engine, name: str, steps: list[dict], *, validate: bool = True) -> dict:
    """Queue the steps as a chain; returns the pipeline record. steps: [{kind, config, spec, recipe, title}]."""
    if validate:
        validate_steps(steps)
    pid = f"{time.strftime('%Y%m%d-%H%M%S')}-pipeline-{secrets.token_hex(2)}"
    folder = pipelines_dir(engine) / pid
    folder.mkdir(parents=True, exist_ok=False)
    ids: list[str] = []
    record = {"id": pid, "name": name or pid, "created_at": time.time(), "steps": []}
    try:
        for n, step in enumerate(steps, 1):
            config = dict(step.get("config") or {})
            for field, k in _refs(config).items():
                config[field] = f"job:{ids[k - 1]}"
            meta = {**(step.get("meta") or {}), "pipeline": pid, "step": n, "pipeline_name": record["name"]}
            job_id = engine.submit(step["kind"], config, step.get("spec"), recipe=step.get("recipe", ""), meta=meta,
                                   after=ids[-1] if ids else "")
            ids.append(job_id)
            record["steps"].append({"job": job_id, "kind": step["kind"], "title": step.get("title") or step["kind"]})
    except BaseException:
        for job_id in ids:  # nothing half-queued: the steps already queued go away again
            try:
                engine.stop(job_id)
                engine.delete(job_id)
            except JobError:
                pass
        raise
    _write(folder / "pipeline.json", json.dumps(record, indent=2) + "\n")
    _write(folder / "pipeline.sh", pipeline_sh(engine, record), mode=0o700)
    return record


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def pipeline_sh(engine: Engine, record: dict) -> str:
    lines = ["#!/usr/bin/env bash",
             f"# Finetune Studio pipeline {record['id']} ({record['name']}): the steps' command.sh in order,",
             "# stopping at the first failure. Run it by hand from anywhere: bash path/to/pipeline.sh",
             "set -euo pipefail",
             'stamp="$(date +%Y%m%d-%H%M%S)"',
             "run_step() {  # a step's earlier result is moved to previous/<time>/ first: nothing is lost",
             '  local n="$1" title="$2" run="$3"',
             '  if [ -e "$run/output" ] || [ -e "$run/checkpoints" ]; then',
             '    mkdir -p "$run/previous/$stamp"',
             '    for f in output checkpoints metrics.jsonl; do',
             '      if [ -e "$run/$f" ]; then mv "$run/$f" "$run/previous/$stamp/"; fi',
             "    done",
             "  fi",
             '  echo "=== pipeline step $n ($title): $run ==="',
             '  local rc=0',
             '  bash "$run/command.sh" || rc=$?',
             '  if [ "$rc" -ne 0 ]; then',
             '    echo "=== pipeline step $n ($title) failed with exit code $rc: the later steps are not run ===" >&2',
             '    exit "$rc"',
             "  fi",
             "}"]
    for n, step in enumerate(record["steps"], 1):
        run = Path(engine.get(step["job"])["run_dir"])
        lines.append(f"run_step {n} {shlex.quote(step['title'])} {shlex.quote(str(run))}")
    lines.append('echo "=== pipeline done ==="')
    return "\n".join(lines) + "\n"


def load(engine: Engine, pid: str) -> dict:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", pid or ""):
        raise JobError(f"no pipeline {pid!r}")
    try:
        return json.loads((pipelines_dir(engine) / pid / "pipeline.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise JobError(f"no pipeline {pid!r}") from None


def list_pipelines(engine: Engine) -> list[dict]:
    """Every pipeline, newest first, with its steps' jobs (see :func:`status`)."""
    folder = pipelines_dir(engine)
    out = []
    for p in sorted(folder.iterdir(), reverse=True) if folder.is_dir() else ():
        try:
            out.append(status(engine, p.name))
        except JobError:
            continue
    return out


def status(engine: Engine, pid: str) -> dict:
    """The pipeline record plus `jobs` (each step's job record, None when deleted), `status` (running, queued,
    succeeded, failed, stopped, cancelled, interrupted: of the first step that did not succeed) and `current`
    (the index of the step running or next)."""
    rec = load(engine, pid)
    jobs: list[dict | None] = []
    for step in rec["steps"]:
        try:
            jobs.append(engine.get(step["job"]))
        except JobError:
            jobs.append(None)
    current, state = len(jobs) - 1, "succeeded"
    for i, j in enumerate(jobs):
        if j is None:
            current, state = i, "cancelled"
            break
        if j["status"] != "succeeded":
            current, state = i, j["status"]
            break
    return {**rec, "jobs": jobs, "status": state, "current": current}


def stop(engine: Engine, pid: str) -> None:
    """Stop the running step (it saves a checkpoint); the steps after it are cancelled with the reason."""
    st = status(engine, pid)
    for j in st["jobs"]:
        if j is not None and j["status"] in ("running", "queued"):
            engine.stop(j["id"])
            engine._append_log(j, f"=== pipeline {pid} stopped at {_now_str()} ===")
            break
    engine.tick()


def resume(engine: Engine, pid: str) -> str:
    """Resume the step that did not succeed (from its checkpoint, or from the start when it has none -- e.g. it
    failed on its data, since fixed) and queue the cancelled steps after it again. Returns that step's job id."""
    st = status(engine, pid)
    jobs = st["jobs"]
    i = st["current"]
    if st["status"] == "succeeded":
        raise JobError(f"pipeline {pid} has finished; nothing to resume")
    if any(j is None for j in jobs[i:]):
        raise JobError(f"a step of pipeline {pid} was deleted; start the pipeline again")
    job = jobs[i]
    if job["status"] in ("queued", "running"):
        raise JobError(f"step {i + 1} ({job['id']}) is {job['status']}; nothing to resume")
    if job["status"] not in (*RESUMABLE, "cancelled"):
        raise JobError(f"step {i + 1} is {job['status']}")
    with engine._tick_lock:  # no monitor pass in between (it would cancel a later step again)
        engine.resume(job["id"], fresh_if_no_checkpoint=True)
        for j in jobs[i + 1:]:  # queued again, each waiting for the step before it
            if j["status"] == "cancelled":
                engine.resume(j["id"])
    return job["id"]


def overall_progress(engine: Engine, st: dict) -> dict[str, Any]:
    """{percent, eta, step, steps}: finished steps count whole, the current one by its own progress; the ETA is
    the current step's plus, for each step still to come, the mean time of the steps done (None before one)."""
    jobs = st["jobs"]
    n = len(jobs)
    done = [j for j in jobs if j is not None and j["status"] == "succeeded"]
    cur = jobs[st["current"]] if jobs and jobs[st["current"]] is not None else None
    frac, eta = 0.0, None
    if cur is not None and cur["status"] == "running":
        prog = engine.progress(cur["id"])
        frac = (prog.get("percent") or 0.0) / 100
        eta = prog.get("eta")
    durations = [j["ended_at"] - j["started_at"] for j in done if j.get("ended_at") and j.get("started_at")]
    left = n - len(done) - (1 if cur is not None and cur["status"] == "running" else 0)
    if st["status"] in ("running", "queued") and durations and left > 0:
        eta = (eta or 0.0) + left * sum(durations) / len(durations)
    return {"percent": 100.0 * (len(done) + frac) / n if n else 0.0, "eta": eta, "step": st["current"] + 1,
            "steps": n}
