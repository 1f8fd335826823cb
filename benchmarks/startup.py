"""Startup benchmark: seconds from process start to the first HTTP 200, cold and warm, and idle RSS.

cold = the first start in a fresh data dir (Python's caches of the project already warm: we measure the
studio, not the disk); warm = a second start of the same data dir. The reference is a plain Gradio
hello-world served from the same interpreter in the same run. Last line:
    startup ratio <warm seconds / hello-world seconds> (...)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
HELLO = """
import sys, gradio as gr
with gr.Blocks() as demo:
    gr.Markdown("hello")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def time_to_200(argv: list[str], port: int, settle: float = 0.0) -> tuple[float, float]:
    env = dict(os.environ, OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"{argv} exited with {proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.05)
        seconds = time.perf_counter() - t0
        time.sleep(settle)
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
        return seconds, rss
    finally:
        proc.terminate()
        proc.wait(20)


def main() -> None:
    with tempfile.TemporaryDirectory() as td:
        hello = Path(td) / "hello.py"
        hello.write_text(HELLO)
        data = Path(td) / "data"
        studio = [sys.executable, "-m", "app", "--offline", "--no-prepare", "--data-dir", str(data)]
        hello_s, hello_rss = time_to_200([sys.executable, str(hello), str(p := free_port())], p)
        cold_s, _ = time_to_200(studio + ["--port", str(p := free_port())], p)
        warm_s, rss = time_to_200(studio + ["--port", str(p := free_port())], p, settle=5.0)
    print(f"hello-world gradio: {hello_s:.2f} s to first 200, RSS {hello_rss:.0f} MiB")
    print(f"studio cold start : {cold_s:.2f} s")
    print(f"studio warm start : {warm_s:.2f} s, idle RSS {rss:.0f} MiB (after the environment report warmed up)")
    print(f"startup ratio {warm_s / hello_s:.2f} (warm {warm_s:.2f} s / hello-world {hello_s:.2f} s; "
          f"cold {cold_s:.2f} s; idle RSS {rss:.0f} MiB)")


if __name__ == "__main__":
    main()
