"""Page CPU benchmark: what an open studio page costs the machine, against a Gradio hello-world page.

Headless Debian Chromium (Playwright) opens each page; after it settles, the CPU seconds of the browser's
process tree and of the UI server process are summed over a window and divided by its length (cores).
Cases, one browser each:
  hello-world  a two-tab Gradio page (a Markdown per tab), the reference, served from this interpreter
  idle SFT     the studio with no job, the SFT tab open
  idle Env     the studio with no job, the Environment tab open (the tab a page opens on)
  following    the SFT tab following a running job (a fake trainer that logs a step a second: tests/fake_run.py)
Last line:
    page_cpu ratio <worse idle studio / hello-world> (...; following <following / hello-world>; ...)
Goals: idle ≤ 1.5×, following ≤ 2×. The machine may be shared: run it twice and read the spread.

    .venv/bin/python benchmarks/page_cpu.py [--seconds 20]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
HELLO = """
import sys, gradio as gr
with gr.Blocks() as demo:
    with gr.Tab("One"):
        gr.Markdown("hello")
    with gr.Tab("Two"):
        gr.Markdown("world")
demo.launch(server_name="127.0.0.1", server_port=int(sys.argv[1]), quiet=True)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(argv: list[str], port: int) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{argv} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"{argv} did not answer on port {port}")


def cpu_seconds(procs: list[psutil.Process]) -> dict[int, float]:
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def browser_tree() -> list[psutil.Process]:
    """Chromium's processes: descendants of this process (via Playwright's driver) named chrom*."""
    return [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]


def measure(url: str, ui_pid: int, seconds: float, tab: str | None, settle: float = 6.0) -> tuple[float, float]:
    """(browser cores, UI process cores) of a page open on `tab`, averaged over `seconds` after it settled."""
    from playwright.sync_api import sync_playwright

    ui = psutil.Process(ui_pid)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        if tab:
            page.get_by_role("tab", name=tab).click()
        page.wait_for_timeout(settle * 1000)
        b0, u0, t0 = cpu_seconds(browser_tree()), cpu_seconds([ui]), time.perf_counter()
        time.sleep(seconds)
        b1, u1, t1 = cpu_seconds(browser_tree()), cpu_seconds([ui]), time.perf_counter()
        browser.close()
    wall = t1 - t0
    browser_cpu = sum(v - b0.get(pid, 0.0) for pid, v in b1.items())
    return browser_cpu / wall, (u1[ui_pid] - u0[ui_pid]) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="measuring window per case")
    args = ap.parse_args()
    if not os.path.exists(CHROMIUM):
        raise SystemExit("Debian chromium is not installed (apt-get install chromium)")
    from tests import fake_run

    rows = {}
    with tempfile.TemporaryDirectory() as td:
        hello = Path(td) / "hello.py"
        hello.write_text(HELLO)
        port = free_port()
        proc = serve([sys.executable, str(hello), str(port)], port)
        try:
            rows["hello-world"] = measure(f"http://127.0.0.1:{port}", proc.pid, args.seconds, None)
        finally:
            proc.terminate()
            proc.wait(20)

        data = Path(td) / "data"
        port = free_port()
        proc = serve([sys.executable, "-m", "app", "--offline", "--no-prepare", "--data-dir", str(data),
                      "--port", str(port)], port)
        url = f"http://127.0.0.1:{port}"
        job = None
        try:
            rows["idle SFT"] = measure(url, proc.pid, args.seconds, "SFT")
            rows["idle Env"] = measure(url, proc.pid, args.seconds, None)
            steps = int(args.seconds + 30)  # outlasts the window: one step a second
            _job_id, job = fake_run.start(data, steps=steps, interval=1.0, eval_every=5)
            rows["following"] = measure(url, proc.pid, args.seconds, "SFT")
        finally:
            if job is not None:
                job.kill()
                job.wait()
            proc.terminate()
            proc.wait(20)

    for name, (b, u) in rows.items():
        print(f"{name:12s} browser {b:.3f} cores, UI process {u:.3f} cores")
    hb = rows["hello-world"][0]
    idle_name = max(("idle SFT", "idle Env"), key=lambda k: rows[k][0])
    idle, follow = rows[idle_name][0] / hb, rows["following"][0] / hb
    print(f"page_cpu ratio {idle:.2f} (browser cores, {idle_name} {rows[idle_name][0]:.3f} / hello-world {hb:.3f}; "
          f"following a job {follow:.2f}x ({rows['following'][0]:.3f}); UI process idle "
          f"{rows[idle_name][1]:.3f}, following {rows['following'][1]:.3f}, hello-world {rows['hello-world'][1]:.3f}; "
          f"goal idle <= 1.5, following <= 2; {args.seconds:.0f} s windows)")


if __name__ == "__main__":
    main()
