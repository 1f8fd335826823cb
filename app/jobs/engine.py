"""The job engine: store + runner + FIFO queue + monitor thread + log/metrics readers.

Jobs are detached from the UI: each runs in its own session/process group under a tiny supervisor
(`_supervise.py`) that records the exit code in runs/<id>/exit.json, so a restarted UI (or a second
UI process on the same data dir) can re-attach to a running job and learn how it ended.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

from app import kinds
from backends.common.errors import FieldError
from backends.common.paths import ROOT
from backends.common.paths import data_dir as _data_dir
from backends.common.paths import runs_dir as _runs_dir

from .launcher import (
    LaunchSpec,
    build_command,
    default_cores,
    default_spec,
    module_for,
    render_command_sh,
)
from .launcher import preview_command as _preview_command
from .store import ACTIVE, JobStore
from .summary import summarize

log = logging.getLogger("studio.jobs")

SUPERVISE = Path(__file__).resolve().parent / "_supervise.py"
START_TIMEOUT = (
    120.0  # a job claimed (running, no pid yet) longer than this by a vanished engine -> interrupted
)
FINISHED = ("succeeded", "failed", "stopped", "interrupted", "cancelled")
RESUMABLE = ("interrupted", "failed", "stopped")
# Stop: the trainer finishes its step and saves a checkpoint within this many seconds, else SIGKILL.
# Generous on purpose: a CPU step of a real model plus its save can take a minute or more.
DEFAULT_GRACE_SECONDS = 120.0
STOPPED_NO_CHECKPOINT = (
    "stopped before any checkpoint could exist (no training step had finished): nothing to resume; "
    "re-run the job to start again"
)
ENGINE_KEYS = ("run_dir",)
PIPELINE_KEYS = ("after", "pipeline", "step")  # a pipeline step's meta (app/jobs/pipeline.py)
SCRUB_ENV = {
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "NODE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
}


class JobError(RuntimeError):
    """An action the job's state does not allow (delete a running job, resume without checkpoint...)."""


def _now_str(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t or time.time()))


def _first(config: dict, key: str | None) -> str:
    """The config's value of `key` (the kind's model or dataset field) as a short column text."""
    v = config.get(key) if key else None
    if not v:
        return ""
    return (", ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))[:300]


def devices_conflict(a: str, b: str) -> bool:
    """Device sets: 'cpu', 'gpu:*' (all GPUs), 'gpu:0,1'."""
    if a == b:
        return True
    if a.startswith("gpu:") and b.startswith("gpu:"):
        sa, sb = a[4:], b[4:]
        if "*" in (sa, sb):
            return True
        return bool(set(sa.split(",")) & set(sb.split(",")))
    return False


def checkpoints(run_dir: str | Path) -> list[Path]:
    """runs/<id>/checkpoints/checkpoint-N folders, oldest first."""
    d = Path(run_dir) / "checkpoints"
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        if p.is_dir() and p.name.startswith("checkpoint-"):
            try:
                out.append((int(p.name.split("-", 1)[1]), p))
            except ValueError:
                continue
    return [p for _, p in sorted(out)]


def _same_process(pid: int | None, create_time: float | None) -> psutil.Process | None:
    """The live process `pid` if it is the one started at `create_time` (a recycled pid is not)."""
    if not pid:
        return None
    try:
        p = psutil.Process(pid)
        if create_time is not None and abs(p.create_time() - create_time) > 0.05:
            return None
        if p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except psutil.Error:
        return None


class Engine:
    def __init__(
        self,
        data_dir=None,
        cores: int | None = None,
        offline: bool = False,
        grace_seconds: float = DEFAULT_GRACE_SECONDS,
        poll_interval: float = 0.5,
    ):
        self.data_dir = _data_dir(data_dir)
        self.runs_dir = _runs_dir(self.data_dir)
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.cores = int(cores) if cores else default_cores()
        self.offline = bool(offline)
        self.grace_seconds = float(grace_seconds)
        self.poll_interval = float(poll_interval)
        self.store = JobStore(self.data_dir / "jobs.sqlite")
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{secrets.token_hex(3)}"
        self._procs: dict[str, subprocess.Popen] = {}  # jobs this engine started (their supervisor)
        self._metrics: dict[str, dict] = {}
        self._lock = threading.RLock()
        self._tick_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self.reconcile()
        self._thread = threading.Thread(target=self._monitor, name="studio-jobs-monitor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(
        self,
        kind: str,
        config: dict,
        spec: LaunchSpec | dict | None = None,
        recipe: str = "",
        meta: dict | None = None,
        after: str = "",
    ) -> str:
        """Validate, write runs/<id>/{config.yaml, command.sh, launcher files}, queue. Returns the job id.
        Without a spec the kind's default launch is used (its `launch` in app/kinds.py). With `after` (a job id)
        the job starts only once that job succeeded, and is cancelled when it fails, stops or is deleted."""
        module_for(kind)
        if after:
            self.get(after)  # JobError when there is no such job
        if spec is None:
            spec = default_spec(kind)
        elif not isinstance(spec, LaunchSpec):
            spec = LaunchSpec.from_dict(spec)
        spec.validate()
        if not isinstance(config, dict):
            raise FieldError("config", "must be a mapping of option -> value")
        try:  # plain JSON types only (Paths -> str, tuples -> lists): the store and config.yaml hold it
            config = json.loads(json.dumps(config, default=str))
        except (TypeError, ValueError) as e:
            raise FieldError("config", f"cannot be saved: {e}") from None
        ds_config = self._ds_config_for(config, spec)
        job_id, run_dir = self._new_run_dir(kind)
        try:
            config["run_dir"] = str(run_dir)
            config["deepspeed"] = str(run_dir / "deepspeed.json") if ds_config is not None else ""
            config.setdefault("resume_from_checkpoint", "")
            if recipe:  # studio.json names it (JobFields.recipe)
                config.setdefault("recipe", recipe)
            argv, _env, _files = self._write_files(job_id, kind, config, spec, ds_config)
            meta = dict(meta or {})
            if after:
                meta["after"] = after
            with open(run_dir / "log.txt", "a") as f:
                f.write(f"=== queued at {_now_str()}" + (f", after {after}" if after else "") + " ===\n")
            self.store.insert(
                dict(
                    id=job_id,
                    kind=kind,
                    recipe=recipe or "",
                    status="queued",
                    device_set=spec.device_set,
                    created_at=time.time(),
                    run_dir=str(run_dir),
                    command=shlex.join(argv),
                    argv=argv,
                    model=str(meta.get("model") or _first(config, kinds.model_field(kind))),
                    dataset=str(meta.get("dataset") or _first(config, kinds.dataset_field(kind))),
                    launcher=spec.to_dict(),
                    config=config,
                    meta=meta,
                )
            )
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        self._wake.set()
        return job_id

    def preview_command(self, kind: str, config: dict, spec: LaunchSpec | dict | None = None) -> str:
        if spec is None:
            spec = default_spec(kind)
        elif not isinstance(spec, LaunchSpec):
            spec = LaunchSpec.from_dict(spec)
        return _preview_command(
            kind, config, spec, data_dir=self.data_dir, cores=self.cores, offline=self.offline
        )

    def list_jobs(self) -> list[dict]:
        """Every job, newest first."""
        return list(reversed(self.store.list()))

    def get(self, job_id: str) -> dict:
        job = self.store.get(job_id)
        if job is None:
            raise JobError(f"no job {job_id!r}")
        ck = checkpoints(job["run_dir"])
        job["checkpoints"] = [p.name for p in ck]
        job["can_resume"] = job["status"] in RESUMABLE and bool(ck)
        return job

    def stop(self, job_id: str, wait: bool = False) -> None:
        """Queued: cancelled at once. Running: one SIGTERM to each trainer rank (it finishes its step,
        saves a checkpoint and exits; the launchers then end by themselves), SIGKILL to whatever is left
        after grace_seconds. wait=True returns once every process is gone and the status set."""
        job = self.get(job_id)
        if job["status"] == "queued":
            if self.store.update(
                job_id, "queued", status="stopped", ended_at=time.time(), error="cancelled before it started"
            ):
                self._append_log(job, f"=== cancelled at {_now_str()} ===")
                return
            job = self.get(job_id)
        if job["status"] != "running":
            return
        self.store.update(job_id, stop_requested=1)
        self._append_log(job, f"=== stop requested at {_now_str()} ===")
        job = self.get(job_id)  # a launch that raced us either sees the flag or we see its pid
        if not job["pid"]:
            if wait:  # being started right now by some engine: it sees stop_requested after Popen
                deadline = time.time() + 15
                while time.time() < deadline and not self.get(job_id)["pid"]:
                    time.sleep(0.05)
                job = self.get(job_id)
                if not job["pid"]:
                    return
            else:
                return
        t = threading.Thread(target=self._terminate, args=(job,), name=f"stop-{job_id}", daemon=True)
        t.start()
        if wait:
            t.join()
            self._check(job_id, wait_exit=5.0)

    def resume(self, job_id: str, fresh_if_no_checkpoint: bool = False) -> None:
        """Relaunch the same job (same id, same run dir) with resume_from_checkpoint: latest. A cancelled
        pipeline step, and with fresh_if_no_checkpoint a failed job without checkpoints (a step that failed on
        its data before training), start again from scratch in the same run dir."""
        job = self.get(job_id)
        if job["status"] not in (*RESUMABLE, "cancelled"):
            raise JobError(
                f"job {job_id} is {job['status']}; only an interrupted, failed or stopped job can be resumed"
            )
        if job["checkpoints"]:
            config = dict(job["config"], resume_from_checkpoint="latest")
            what = f"resume requested at {_now_str()} (from {job['checkpoints'][-1]})"
        elif job["status"] == "cancelled" or fresh_if_no_checkpoint:
            config = dict(job["config"], resume_from_checkpoint="")
            what = f"restart requested at {_now_str()} (no checkpoint: from the start)"
        else:
            raise JobError("no checkpoint to resume from; re-run instead")
        self._write_config(Path(job["run_dir"]), config)
        self._append_log(job, f"=== {what} ===")
        if not self.store.update(
            job_id,
            job["status"],
            status="queued",
            config=config,
            stop_requested=0,
            error="",
            exit_code=None,
            ended_at=None,
        ):
            raise JobError(f"job {job_id} changed state meanwhile; try again")
        self._wake.set()

    def rerun(
        self,
        job_id: str,
        overrides: dict | None = None,
        spec: LaunchSpec | dict | None = None,
        recipe: str | None = None,
    ) -> str:
        """A new job with the old one's config (+ overrides) and launch spec (or `spec`)."""
        job = self.get(job_id)
        config = copy.deepcopy(job["config"])
        for k in ENGINE_KEYS:
            config.pop(k, None)
        if config.get("resume_from_checkpoint") == "latest":
            config["resume_from_checkpoint"] = ""
        old_spec = LaunchSpec.from_dict(job["launcher"])
        if old_spec.zero_stage is not None:
            config.pop("deepspeed", None)  # comes from the spec again
        config.update(overrides or {})
        if spec is None:
            spec = old_spec
        meta = {k: v for k, v in job["meta"].items() if k not in PIPELINE_KEYS}  # a re-run stands alone
        meta["rerun_of"] = job_id
        return self.submit(
            job["kind"], config, spec, recipe=job["recipe"] if recipe is None else recipe, meta=meta
        )

    def delete(self, job_id: str) -> None:
        job = self.get(job_id)
        if job["status"] in ACTIVE:
            raise JobError(f"job {job_id} is {job['status']}; stop it before deleting")
        if not self.store.delete(job_id):
            raise JobError(f"job {job_id} was started meanwhile; stop it before deleting")
        run_dir = Path(job["run_dir"]).resolve()
        if run_dir.parent == self.runs_dir.resolve() and run_dir.is_dir():
            shutil.rmtree(run_dir, ignore_errors=True)
        with self._lock:
            self._metrics.pop(job_id, None)
            self._procs.pop(job_id, None)

    def read_log_tail(self, job_id: str, max_bytes: int = 64_000) -> str:
        """The last max_bytes of log.txt (seeks from the end; cost independent of the log's size)."""
        path = Path(self.get(job_id)["run_dir"]) / "log.txt"
        return read_tail(path, max_bytes)

    def read_metrics(self, job_id: str) -> list[dict]:
        """Every complete line of metrics.jsonl; reads only what was appended since the last call."""
        path = Path(self.get(job_id)["run_dir"]) / "metrics.jsonl"
        with self._lock:
            c = self._metrics.get(job_id)
            try:
                st = path.stat()
            except FileNotFoundError:
                self._metrics.pop(job_id, None)
                return []
            if c is None or c["ino"] != st.st_ino or st.st_size < c["offset"]:
                c = self._metrics[job_id] = {"ino": st.st_ino, "offset": 0, "records": []}
            if st.st_size > c["offset"]:
                with open(path, "rb") as f:
                    f.seek(c["offset"])
                    data = f.read(st.st_size - c["offset"])
                end = data.rfind(b"\n")
                if end >= 0:  # a partial last line stays for the next call
                    for line in data[:end].split(b"\n"):
                        line = line.strip()
                        if not line:
                            continue
                        try:
                            rec = json.loads(line)
                        except ValueError:
                            continue
                        if isinstance(rec, dict):
                            c["records"].append(rec)
                    c["offset"] += end + 1
            return list(c["records"])

    def progress(self, job_id: str) -> dict:
        job = self.get(job_id)
        recs = self.read_metrics(job_id)
        last = recs[-1] if recs else {}
        step, total = last.get("step"), last.get("total_steps")
        loss = next((r["loss"] for r in reversed(recs) if isinstance(r.get("loss"), (int, float))), None)
        if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
            percent = max(0.0, min(100.0, 100.0 * step / total))
        else:
            percent = 100.0 if job["status"] == "succeeded" else 0.0
        # elapsed: wall time of this attempt from the job's own start (what the UI ticks from started_at)
        now = time.time()
        elapsed = ((job["ended_at"] or now) - job["started_at"]) if job["started_at"] else 0.0
        eta = _eta(recs, now)
        if job["status"] in FINISHED:
            eta = 0.0 if job["status"] == "succeeded" else None
        return {
            "status": job["status"],
            "step": step,
            "total_steps": total,
            "percent": percent,
            "elapsed": elapsed,
            "eta": eta,
            "loss": loss,
            "epoch": last.get("epoch"),
            "eval_loss": next(
                (r["eval_loss"] for r in reversed(recs) if isinstance(r.get("eval_loss"), (int, float))), None
            ),
            "lr": last.get("lr"),
            "samples_per_s": last.get("samples_per_s"),
            "tokens_per_s": last.get("tokens_per_s"),
        }

    def shutdown(self, timeout: float = 5.0) -> None:
        """Stop the monitor thread. Jobs keep running (detached); a new Engine re-attaches them."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        self.store.close()

    # ------------------------------------------------------------------ reconcile / monitor
    def reconcile(self) -> None:
        """At start: re-attach running jobs whose process lives; finalize the others."""
        for job in self.store.list(["running"]):
            try:
                self._check_job(job)
            except Exception:
                log.exception("reconcile %s", job["id"])

    def _monitor(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("job monitor")
            self._wake.wait(self.poll_interval)
            self._wake.clear()

    def tick(self) -> None:
        """One monitor pass: finalize ended jobs, cancel the steps whose earlier step did not succeed, start
        queued ones (a step only once the job it waits for succeeded)."""
        with self._tick_lock:
            for job in self.store.list(["running"]):
                self._check_job(job)
            self._cancel_waiting()
            if not self._stop.is_set():
                for job in self.store.claim_queued(devices_conflict, self.owner, ready=self._ready):
                    self._launch(job)

    def _ready(self, job: dict) -> bool:
        after = (job.get("meta") or {}).get("after")
        if not after:
            return True
        before = self.store.get(after)
        return before is not None and before["status"] == "succeeded"

    def _cancel_waiting(self) -> None:
        """A queued job whose `after` job ended without success (or is gone) becomes cancelled, with the reason."""
        for job in self.store.list(["queued"]):
            after = (job.get("meta") or {}).get("after")
            if not after:
                continue
            before = self.store.get(after)
            if before is not None and before["status"] in ("queued", "running", "succeeded"):
                continue
            if before is None:
                why = f"the job it waits for ({after}) was deleted"
            else:
                step = (before.get("meta") or {}).get("step")
                what = f"step {step} ({before['kind']}, {after})" if step else f"job {after} ({before['kind']})"
                why = f"{what} {before['status']}" + (f": {before['error']}" if before.get("error") else "")
            if self.store.update(job["id"], "queued", status="cancelled", ended_at=time.time(),
                                 error=f"cancelled: {why}"):
                self._append_log(job, f"=== cancelled at {_now_str()}: {why} ===")

    def _check(self, job_id: str, wait_exit: float = 0.0) -> None:
        deadline = time.time() + wait_exit
        while True:
            job = self.store.get(job_id)
            if job is None or job["status"] != "running":
                return
            self._check_job(job)
            if time.time() >= deadline:
                return
            time.sleep(0.05)

    def _alive(self, job: dict) -> bool:
        proc = self._procs.get(job["id"])
        if proc is not None and proc.pid == job["pid"]:
            return proc.poll() is None
        return _same_process(job["pid"], job["proc_create_time"]) is not None

    def _check_job(self, job: dict) -> None:
        if not job["pid"]:
            if job["owner"] != self.owner and time.time() - (job["started_at"] or 0) > START_TIMEOUT:
                if self.store.update(
                    job["id"],
                    "running",
                    status="interrupted",
                    ended_at=time.time(),
                    error="the UI that was starting this job went away; resume or re-run",
                ):
                    self._append_log(job, f"=== interrupted (never started) at {_now_str()} ===")
            return
        if self._alive(job):
            return
        self._finalize(job)

    def _finalize(self, job: dict) -> None:
        run_dir = Path(job["run_dir"])
        info = None
        try:
            info = json.loads((run_dir / "exit.json").read_text())
        except (OSError, ValueError):
            pass
        proc = self._procs.get(job["id"])
        if info is not None:
            rc = info.get("exit_code")
        elif proc is not None and proc.returncode not in (None, 0):
            rc = proc.returncode  # the supervisor itself was killed
        else:
            rc = None
        fresh = self.store.get(job["id"]) or job
        error = ""
        if fresh["stop_requested"]:  # even if the trainer ended cleanly on SIGTERM: it did not finish
            status = "stopped"
            ck = checkpoints(run_dir)
            if ck:
                error = f"stopped by the user; Resume continues from {ck[-1].name}"
            else:
                error = STOPPED_NO_CHECKPOINT
        elif rc == 0:
            status = "succeeded"
        elif rc is None:
            status = "interrupted"
            error = (
                "the job's processes ended while no Studio engine was watching and left no exit code "
                "(machine restart, or killed together with its supervisor); resume from the last "
                "checkpoint or re-run"
            )
        else:
            status = "failed"
            text = read_tail(run_dir / "log.txt", 200_000)
            cut = max(text.rfind("=== started at"), text.rfind("=== resumed at"))
            error = summarize(text[cut:] if cut >= 0 else text, rc)  # this attempt only
        recs = self.read_metrics(job["id"])
        final_loss = next(
            (r["loss"] for r in reversed(recs) if isinstance(r.get("loss"), (int, float))), None
        )
        ended = (info or {}).get("ended_at") or time.time()
        if self.store.update(
            job["id"],
            "running",
            status=status,
            exit_code=rc,
            ended_at=ended,
            error=error,
            final_loss=final_loss,
        ):
            tail = f" (exit code {rc})" if rc is not None else ""
            self._append_log(job, f"=== {status}{tail} at {_now_str(ended)} ===")
            if error and status == "failed":
                self._append_log(job, "error summary: " + error.replace("\n", "\n  "))
        with self._lock:
            self._procs.pop(job["id"], None)

    # ------------------------------------------------------------------ launching
    def _new_run_dir(self, kind: str) -> tuple[str, Path]:
        for _ in range(100):
            job_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{kind}-{secrets.token_hex(2)}"
            run_dir = self.runs_dir / job_id
            try:
                run_dir.mkdir(parents=True)
                return job_id, run_dir
            except FileExistsError:
                continue
        raise JobError("could not make a unique run dir")

    def _ds_config_for(self, config: dict, spec: LaunchSpec) -> dict | None:
        """The DeepSpeed JSON of the job: the ZeRO preset, else the user's own file in config.deepspeed."""
        if spec.zero_stage is not None:
            from .launcher import load_deepspeed_preset

            return load_deepspeed_preset(spec.zero_stage, spec.offload)
        path = config.get("deepspeed") or ""
        if not path:
            return None
        p = Path(path).expanduser()
        if not p.is_absolute():
            p = ROOT / p
        try:
            cfg = json.loads(p.read_text())
        except FileNotFoundError:
            raise FieldError("deepspeed", f"no such DeepSpeed config file: {path}") from None
        except ValueError as e:
            raise FieldError("deepspeed", f"{path} is not valid JSON: {e}") from None
        if not isinstance(cfg, dict):
            raise FieldError("deepspeed", f"{path} must hold a JSON object")
        return cfg

    @staticmethod
    def _write_config(run_dir: Path, config: dict) -> None:
        tmp = run_dir / "config.yaml.tmp"
        tmp.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
        os.replace(tmp, run_dir / "config.yaml")

    def _write_files(
        self, job_id: str, kind: str, config: dict, spec: LaunchSpec, ds_config: dict | None
    ) -> tuple[list[str], dict, dict]:
        run_dir = Path(config["run_dir"])
        argv, env, files = build_command(
            module_for(kind),
            run_dir / "config.yaml",
            spec,
            run_dir,
            cores=self.cores,
            offline=self.offline,
            data_dir=self.data_dir,
            ds_config=ds_config,
        )
        self._write_config(run_dir, config)
        for path, content in files.items():
            Path(path).write_text(content)
        sh = run_dir / "command.sh"
        sh.write_text(render_command_sh(argv, env, title=f"Finetune Studio job {job_id} ({kind})"))
        sh.chmod(0o700)  # executable by its owner only (umask 077 for everything else)
        return argv, env, files

    def _launch(self, job: dict) -> None:
        job_id, run_dir = job["id"], Path(job["run_dir"])
        try:
            spec = LaunchSpec.from_dict(job["launcher"])
            config = job["config"]
            ds_config = None
            if config.get("deepspeed"):
                ds_config = json.loads(Path(config["deepspeed"]).read_text())
            argv, env, _files = self._write_files(job_id, job["kind"], config, spec, ds_config)
            Path(run_dir / "exit.json").unlink(missing_ok=True)
            (Path(self.data_dir) / "cache" / "torch_extensions").mkdir(parents=True, exist_ok=True)
            # the UI's own distributed/launcher variables must not leak into a job (a stale RANK or
            # ACCELERATE_USE_CPU would silently change what the launcher does)
            full_env = {
                k: v for k, v in os.environ.items() if k not in SCRUB_ENV and not k.startswith("ACCELERATE_")
            }
            full_env.update(env)
            full_env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
            if sys.prefix != sys.base_prefix:
                full_env["VIRTUAL_ENV"] = sys.prefix
            marker = (
                f"=== resumed at {_now_str()} (attempt {job['attempts']}, "
                f"resume_from_checkpoint={config.get('resume_from_checkpoint')}) ==="
                if job["attempts"] > 1
                else f"=== started at {_now_str()} ==="
            )
            with open(run_dir / "log.txt", "ab") as logf:
                logf.write(f"{marker}\n$ {shlex.join(argv)}\n".encode())
                logf.flush()
                proc = subprocess.Popen(
                    [
                        sys.executable,
                        str(SUPERVISE),
                        str(run_dir / "exit.json"),
                        "--grace",
                        f"{self.grace_seconds:g}",
                        "--",
                        *argv,
                    ],
                    cwd=str(ROOT),
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=logf,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    close_fds=True,
                )
            with self._lock:
                self._procs[job_id] = proc
            try:
                ct = psutil.Process(proc.pid).create_time()
            except psutil.Error:
                ct = None
            self.store.update(
                job_id, pid=proc.pid, pgid=proc.pid, proc_create_time=ct, command=shlex.join(argv), argv=argv
            )
        except Exception as e:
            log.exception("start %s", job_id)
            msg = f"could not start the job: {type(e).__name__}: {e}"
            self.store.update(job_id, "running", status="failed", ended_at=time.time(), error=msg)
            self._append_log(job, "=== " + msg + " ===")
            return
        if (self.store.get(job_id) or {}).get("stop_requested"):
            threading.Thread(target=self._terminate, args=(self.get(job_id),), daemon=True).start()

    # ------------------------------------------------------------------ stopping
    def _collect(self, job: dict) -> list[psutil.Process]:
        """The job's whole process tree: the supervisor, its descendants, anything still in its group
        (and their descendants, even those that left the group)."""
        procs: dict[int, psutil.Process] = {}
        root = _same_process(job["pid"], job["proc_create_time"])
        if root is not None:
            procs[root.pid] = root
            try:
                for c in root.children(recursive=True):
                    procs[c.pid] = c
            except psutil.Error:
                pass
        pgid = job["pgid"]
        if pgid:
            for p in psutil.process_iter():
                try:
                    if p.pid not in procs and os.getpgid(p.pid) == pgid:
                        procs[p.pid] = p
                        for c in p.children(recursive=True):
                            procs.setdefault(c.pid, c)
                except (OSError, psutil.Error):
                    continue
        return list(procs.values())

    def _proc_alive(self, p: psutil.Process) -> bool:
        for proc in list(self._procs.values()):
            if proc.pid == p.pid:  # our own child: reap through Popen, not psutil (keeps returncode right)
                return proc.poll() is None
        try:
            return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def _signal_all(self, job: dict, procs: list[psutil.Process], sig: int) -> None:
        pgid = job["pgid"]
        if pgid:
            in_group = False
            for p in procs:
                try:
                    in_group = in_group or os.getpgid(p.pid) == pgid
                except OSError:
                    pass
            if in_group:  # never signal a group that no longer holds our processes
                try:
                    os.killpg(pgid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        for p in procs:
            try:
                if p.is_running():
                    p.send_signal(sig)
            except psutil.Error:
                pass

    def _ranks(self, job: dict, procs: list[psutil.Process]) -> list[psutil.Process]:
        """The trainer processes of the job: `python [opts] -m <the kind's module>` (the launchers'
        own processes run other modules or scripts)."""
        try:
            module = module_for(job["kind"])
        except FieldError:  # a job of a kind this studio no longer knows
            module = None
        out = []
        for p in procs:
            try:
                if module and python_module(p.cmdline()) == module:
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def _terminate(self, job: dict) -> None:
        procs = self._collect(job)
        if not procs:
            return
        ranks = self._ranks(job, procs)
        if ranks:
            # One SIGTERM per rank and none to the launchers: accelerate's simple launcher dies on it at
            # once (and its supervisor would then end the trainer mid-save), torch elastic and DeepSpeed's
            # launch.py forward it (a second signal). Each rank finishes its step, saves a checkpoint and
            # exits; the launchers see that and end. The supervisor is told too: it waits for the ranks
            # (up to the grace period) instead of reaping them as leftovers.
            self._append_log(
                job,
                f"=== stop: SIGTERM to {len(ranks)} trainer process(es) "
                f"({', '.join(str(p.pid) for p in ranks)}); they finish the current step and save a "
                f"checkpoint (grace period {self.grace_seconds:g}s, then SIGKILL) ===",
            )
            root = _same_process(job["pid"], job["proc_create_time"])
            for p in ([root] if root is not None else []) + ranks:
                try:
                    p.send_signal(signal.SIGTERM)
                except psutil.Error:
                    pass
        else:  # still starting (no trainer yet): nothing to save, end the whole tree
            self._signal_all(job, procs, signal.SIGTERM)
        deadline = time.time() + self.grace_seconds
        while time.time() < deadline:
            if not any(self._proc_alive(p) for p in procs):
                break
            time.sleep(0.1)
        # anything left (or spawned meanwhile): SIGKILL
        rest = [p for p in procs if self._proc_alive(p)]
        more = {p.pid: p for p in rest}
        for p in self._collect(job):
            more.setdefault(p.pid, p)
        rest = [p for p in more.values() if self._proc_alive(p)]
        if rest:
            self._append_log(
                job, f"=== {len(rest)} process(es) still alive after {self.grace_seconds:g}s: SIGKILL ==="
            )
            self._signal_all(job, rest, signal.SIGKILL)
            deadline = time.time() + 5
            while time.time() < deadline and any(self._proc_alive(p) for p in rest):
                time.sleep(0.05)
        self._wake.set()

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _append_log(job: dict, line: str) -> None:
        try:
            with open(Path(job["run_dir"]) / "log.txt", "a") as f:
                f.write(line + "\n")
        except OSError:
            pass


def python_module(cmdline: list[str]) -> str | None:
    """The module a Python command line runs with -m (`python -u -m backends.sft ...` -> backends.sft);
    None for a script or anything that is not `python ... -m`."""
    if not cmdline or "python" not in Path(cmdline[0]).name:
        return None
    args = iter(cmdline[1:])
    for a in args:
        if a == "-m":
            return next(args, None)
        if a.startswith("-m") and len(a) > 2:
            return a[2:]
        if a in ("-X", "-W", "-Q"):  # options with a separate value
            next(args, None)
            continue
        if not a.startswith("-") or a in ("-c", "-"):  # a script (or code): no module
            return None
    return None


def _eta(recs: list[dict], now: float) -> float | None:
    """Seconds left: the backend's estimate of its last record that has one, minus the time since that
    record was written; else from the pace of the step records after the first one (startup and the
    first step excluded). Only this attempt's records count (those after its last `start` line)."""
    starts = [i for i, r in enumerate(recs) if r.get("event") == "start"]
    recs = recs[starts[-1] + 1 :] if starts else recs
    if any(r.get("event") == "end" for r in recs):
        return None
    for r in reversed(recs):
        eta = r.get("eta")
        if isinstance(eta, (int, float)) and not isinstance(eta, bool):
            t = r.get("time")
            since = now - t if isinstance(t, (int, float)) and t <= now else 0.0
            return max(0.0, float(eta) - since)
    steps = [
        r
        for r in recs
        if isinstance(r.get("step"), (int, float))
        and isinstance(r.get("time"), (int, float))
        and isinstance(r.get("loss"), (int, float))
    ]
    if len(steps) < 2:
        return None
    a, b = steps[0], steps[-1]
    total = b.get("total_steps")
    if not isinstance(total, (int, float)) or b["step"] <= a["step"] or b["time"] <= a["time"]:
        return None
    pace = (b["time"] - a["time"]) / (b["step"] - a["step"])
    return max(0.0, pace * (total - b["step"]) - max(0.0, now - b["time"]))


def read_tail(path: str | Path, max_bytes: int = 64_000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            start = max(0, size - int(max_bytes))
            f.seek(start)
            data = f.read(size - start)
    except FileNotFoundError:
        return ""
    if start > 0:  # drop the partial first line
        nl = data.find(b"\n")
        if 0 <= nl < len(data) - 1:
            data = data[nl + 1 :]
    return data.decode("utf-8", errors="replace")
