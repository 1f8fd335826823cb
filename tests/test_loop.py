"""The runner's stop / metrics / checkpoints for hand-written loops (backends/common/loop.py), on a toy loop."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from backends.common.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def _start(run_dir: Path, *extra: str) -> subprocess.Popen:
    cfg = run_dir.parent / f"{run_dir.name}.yaml"
    cfg.write_text(f"run_dir: {run_dir}\n")
    return subprocess.Popen([sys.executable, "-m", "tests.loop_toy", "--config", str(cfg), *extra], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "event" not in r]


def test_a_loop_runs_logs_saves_and_rotates(tmp_path):
    run_dir = tmp_path / "run"
    p = _start(run_dir, "--steps", "6", "--save_steps", "2")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    recs = read_metrics(run_dir / "metrics.jsonl")
    assert recs[0]["event"] == "start" and recs[0]["total_steps"] == 6 and recs[0]["kind"] == "toy"
    assert _steps(run_dir) == [1, 2, 3, 4, 5, 6]
    assert recs[-1]["event"] == "end" and recs[-1]["status"] == "completed" and recs[-1]["step"] == 6
    assert recs[3]["tokens_per_s"] > 0 and recs[-2]["eta"] == 0
    assert "w " in out and "step 6/6 loss" in out  # the human line shows the loop's own key
    # saves at 2 and 4 (not at the last step: the output is the result), the newest 2 kept, each complete
    assert sorted(c.name for c in (run_dir / "checkpoints").iterdir()) == ["checkpoint-2", "checkpoint-4"]
    assert json.loads((run_dir / "checkpoints/checkpoint-4/studio-state.json").read_text())["step"] == 4
    assert abs(float((run_dir / "output/w.txt").read_text()) - 3) < 1.5  # it learned towards w = 3


def test_stop_inside_a_step_saves_then_resume_continues_from_it(tmp_path):
    run_dir = tmp_path / "run"
    p = _start(run_dir, "--steps", "8", "--save_steps", "100", "--sleep", "0.5")
    deadline = time.time() + 90
    while time.time() < deadline and 2 not in (_steps(run_dir) if (run_dir / "metrics.jsonl").exists() else []):
        time.sleep(0.1)
    time.sleep(0.2)  # inside step 3
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 128 + signal.SIGTERM, out
    assert "stopping after this step and saving a checkpoint" in out
    stopped_at = _steps(run_dir)[-1]
    assert stopped_at >= 3  # the step under way finished
    ck = run_dir / "checkpoints" / f"checkpoint-{stopped_at}"
    assert (ck / "toy.pt").is_file() and json.loads((ck / "studio-state.json").read_text())["step"] == stopped_at
    assert not (run_dir / "checkpoints/.partial").exists()
    end = read_metrics(run_dir / "metrics.jsonl")[-1]
    assert end["status"] == "stopped" and end["step"] == stopped_at

    # a fresh start into the same run dir is refused, naming the field
    p = _start(run_dir, "--steps", "8")
    out, _ = p.communicate(timeout=60)
    assert p.returncode == 2 and "resume_from_checkpoint" in out

    p = _start(run_dir, "--steps", "8", "--sleep", "0", "--resume_from_checkpoint", "latest")
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    assert f"resuming at step {stopped_at}" in out
    steps = _steps(run_dir)
    assert steps == list(range(1, stopped_at + 1)) + list(range(stopped_at + 1, 9))  # no step twice, none lost
    assert read_metrics(run_dir / "metrics.jsonl")[-1]["status"] == "completed"


def test_stop_before_the_first_step_exits_at_once_without_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    p = _start(run_dir, "--steps", "3")
    time.sleep(0.3)  # still importing torch
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    assert p.returncode in (128 + signal.SIGTERM, -signal.SIGTERM), out
    assert not (run_dir / "checkpoints").exists() or not list((run_dir / "checkpoints").glob("checkpoint-*"))
