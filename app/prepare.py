"""Prepares the bundled models in a subprocess (`python -m backends.bundled prepare`).

A subprocess keeps the UI process small and at one torch thread; its output goes to the console
and to `<data-dir>/logs/prepare.log`, which the Environment tab tails.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from app.i18n import t
from backends.common import paths

# The preparer's own status lines in the log file (English there); the tab shows them in the page's language.
_STARTED = re.compile(r"^=== prepare started (?P<when>[0-9: -]+) ===$", re.M)
_FINISHED = re.compile(r"^=== prepare finished with exit code (?P<code>-?\d+|None) ===$", re.M)


class Preparer:
    def __init__(self, data_dir: Path, offline: bool = False, echo: bool = True):
        self.data_dir = Path(data_dir)
        self.offline = offline
        self.echo = echo
        self.log_path = self.data_dir / "logs" / "prepare.log"
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.last_exit: int | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def argv(self, only: str | None = None) -> list[str]:
        argv = [sys.executable, "-m", "backends.bundled", "prepare", "--data-dir", str(self.data_dir)]
        if self.offline:
            argv.append("--offline")
        if only:  # "shapes": the optional tiny SD taught to draw shapes
            argv += ["--only", only]
        return argv

    def start(self, only: str | None = None) -> bool:
        """Start preparing (`only`: one of `prepare --only`'s choices) unless a preparation already runs.
        Returns False when one was already running."""
        with self._lock:
            if self.running:
                return False
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS=str(max(1, (os.cpu_count() or 2))))
            self._proc = subprocess.Popen(self.argv(only), cwd=paths.ROOT, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, bufsize=1)
            threading.Thread(target=self._pump, args=(self._proc,), daemon=True).start()
            return True

    def _pump(self, proc: subprocess.Popen) -> None:
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(f"=== prepare started {time.strftime('%Y-%m-%d %H:%M:%S')} ===\n")
            log.flush()
            for line in proc.stdout:  # type: ignore[union-attr]
                log.write(line)
                log.flush()
                if self.echo:
                    print(f"[prepare] {line}", end="", flush=True)
            self.last_exit = proc.wait()
            log.write(f"=== prepare finished with exit code {self.last_exit} ===\n")

    def wait(self, timeout: float | None = None) -> int | None:
        if self._proc is None:
            return self.last_exit
        self._proc.wait(timeout)
        # let the pump thread write the closing line
        for _ in range(50):
            if self.last_exit is not None:
                break
            time.sleep(0.05)
        return self.last_exit

    def log_tail(self, max_bytes: int = 20_000, lang: str = "en") -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - max_bytes))
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""
        if lang == "en":
            return text
        text = _STARTED.sub(lambda m: "=== " + t("prepare.started", lang).format(when=m["when"]) + " ===", text)
        return _FINISHED.sub(lambda m: "=== " + t("prepare.finished", lang).format(code=m["code"]) + " ===", text)
