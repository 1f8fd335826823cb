"""Hardware and software report for the Environment tab (and `python -m app.envcheck`).

Everything here reads the machine; nothing changes it. DeepSpeed's op table is read through its
op builders (what `ds_report` prints), not by parsing its text.
"""
from __future__ import annotations

import importlib.metadata as md
import os
import platform
import shutil
import socket
import sys
import time
from pathlib import Path

from backends.common import paths

PACKAGES = ["torch", "gradio", "transformers", "peft", "trl", "diffusers", "accelerate",
            "deepspeed", "datasets", "safetensors", "gguf"]
GiB = 1024 ** 3


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def system_info(data_dir: Path) -> dict:
    import psutil

    vm = psutil.virtual_memory()
    probe = data_dir if data_dir.exists() else data_dir.parent
    while not probe.exists():
        probe = probe.parent
    du = shutil.disk_usage(probe)
    return {
        "os": f"{platform.system()} {platform.release()} ({platform.platform(terse=True)})",
        "cpu": _cpu_model(),
        "cores": usable_cores(),
        "ram_total_gb": round(vm.total / GiB, 1),
        "ram_free_gb": round(vm.available / GiB, 1),
        "data_dir": str(data_dir),
        "disk_free_gb": round(du.free / GiB, 1),
        "python": sys.version.split()[0],
        "python_exe": sys.executable,
    }


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def torch_info() -> dict:
    import torch
    import torch.distributed as dist

    info: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
                  "cuda_version": torch.version.cuda, "devices": [],
                  "threads": torch.get_num_threads()}
    if info["cuda_available"]:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["devices"].append({"index": i, "name": p.name, "memory_gb": round(p.total_memory / GiB, 1),
                                    "capability": f"{p.major}.{p.minor}"})
    info["distributed"] = {
        "gloo": dist.is_available() and dist.is_gloo_available(),
        "nccl": dist.is_available() and dist.is_nccl_available(),
        "mpi": dist.is_available() and dist.is_mpi_available(),
    }
    return info


def deepspeed_ops() -> dict:
    """DeepSpeed's op table: for each op, installed (prebuilt) and compatible (can JIT-build here)."""
    try:
        from torch.utils.cpp_extension import is_ninja_available
        from deepspeed.accelerator import get_accelerator
        from deepspeed.git_version_info import accelerator_name, installed_ops
        from deepspeed.ops.op_builder.all_ops import ALL_OPS
        from deepspeed.ops.op_builder.builder import probe_is_compatible
    except Exception as e:  # deepspeed missing or broken: say so, keep the page up
        return {"error": f"{type(e).__name__}: {e}", "ops": []}
    acc = get_accelerator()._name
    ops = []
    for name, builder in ALL_OPS.items():
        try:
            compatible = bool(probe_is_compatible(builder, False))
        except Exception:
            compatible = False
        installed = bool(installed_ops.get(name, False)) and accelerator_name == acc
        ops.append({"op": name, "installed": installed, "compatible": compatible})
    return {"accelerator": acc, "ninja": is_ninja_available(), "ops": ops}


def launchers() -> dict:
    """The interpreter and launchers a job will use (a job never picks up another Python)."""
    bindir = Path(sys.executable).parent
    return {name: str(bindir / name) if (bindir / name).exists() else "missing"
            for name in ("accelerate", "deepspeed", "torchrun")}


def network_state(offline: bool, timeout: float = 1.5) -> str:
    if offline:
        return "offline (--offline): nothing is fetched"
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return "online: the model hub is reachable"
    except OSError:
        return "offline: the model hub is not reachable (local models and datasets only)"


def bundled_status(data_dir: Path) -> dict:
    from backends.bundled import smollm2, tiny_sd

    return {"smollm2": smollm2.smollm2_status(data_dir), "tiny_sd": tiny_sd.tiny_sd_status(data_dir)}


def collect(data_dir=None, offline: bool = False) -> dict:
    dd = paths.data_dir(data_dir)
    t0 = time.time()
    report = {
        "system": system_info(dd),
        "packages": package_versions(),
        "torch": torch_info(),
        "deepspeed": deepspeed_ops(),
        "launchers": launchers(),
        "network": network_state(offline),
        "bundled": bundled_status(dd),
    }
    report["seconds"] = round(time.time() - t0, 2)
    return report


def gpu_summary(report: dict, lang: str = "en") -> str:
    from app.i18n import t

    tinfo = report["torch"]
    if not tinfo["devices"]:
        return t("msg.no_gpu", lang)
    return "; ".join(f"cuda:{d['index']} {d['name']} {d['memory_gb']} GB (sm {d['capability']})"
                     for d in tinfo["devices"])


def to_markdown(report: dict, lang: str = "en") -> str:
    from app.i18n import t

    s, tinfo, pk = report["system"], report["torch"], report["packages"]
    lines = [
        f"### {t('env.system', lang)}",
        "| item | value |", "|---|---|",
        f"| OS | {s['os']} |",
        f"| CPU | {s['cpu']} — **{s['cores']} cores** |",
        f"| RAM | {s['ram_total_gb']} GB total, {s['ram_free_gb']} GB free |",
        f"| Disk | {s['disk_free_gb']} GB free under `{s['data_dir']}` |",
        f"| Python | {s['python']} (`{s['python_exe']}`) |",
        f"| torch | **{tinfo['torch']}**, CUDA {tinfo['cuda_version'] or '—'} |",
        f"| GPU | {gpu_summary(report, lang)} |",
        "| Distributed | " + ", ".join(f"{k} {'✅' if v else '—'}" for k, v in tinfo["distributed"].items()) + " |",
        f"| Network | {report['network']} |",
        "",
        f"### {t('env.software', lang)}",
        "| package | version |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in pk.items()],
        *[f"| launcher `{k}` | `{v}` |" for k, v in report["launchers"].items()],
        "",
        f"### {t('env.ds_ops', lang)}",
    ]
    ds = report["deepspeed"]
    if ds.get("error"):
        lines.append(f"DeepSpeed is not usable: `{ds['error']}`")
    else:
        lines += [f"accelerator **{ds['accelerator']}**, ninja {'✅' if ds['ninja'] else '❌ (JIT ops cannot build)'}",
                  "", "| op | installed | compatible |", "|---|---|---|"]
        lines += [f"| {o['op']} | {'yes' if o['installed'] else 'no'} | {'✅' if o['compatible'] else '—'} |"
                  for o in ds["ops"]]
    return "\n".join(lines)


def bundled_markdown(report: dict, lang: str = "en") -> str:
    from app.i18n import t

    lines = [f"### {t('env.bundled', lang)}"]
    for key, st in report["bundled"].items():
        mark = "✅" if st["ready"] else "⚠️"
        lines.append(f"- {mark} **{key}** — {st['detail']}")
        if not st["ready"]:
            lines.append(f"  - prepare with: `{st['command']}`")
    return "\n".join(lines)


def to_text(report: dict) -> str:
    """The plain "Copy report" block: what to paste into a bug report."""
    s, tinfo = report["system"], report["torch"]
    out = [
        "Finetune Studio environment report",
        f"os: {s['os']}",
        f"cpu: {s['cpu']} ({s['cores']} cores)",
        f"ram: {s['ram_total_gb']} GB total, {s['ram_free_gb']} GB free",
        f"disk free under data dir: {s['disk_free_gb']} GB",
        f"python: {s['python']} ({s['python_exe']})",
        f"cuda available: {tinfo['cuda_available']} (cuda {tinfo['cuda_version']})",
        *[f"gpu {d['index']}: {d['name']} {d['memory_gb']} GB sm_{d['capability']}" for d in tinfo["devices"]],
        "distributed: " + ", ".join(k for k, v in tinfo["distributed"].items() if v),
        *[f"{k}: {v}" for k, v in report["packages"].items()],
        f"network: {report['network']}",
    ]
    ds = report["deepspeed"]
    if not ds.get("error"):
        out.append("deepspeed ops compatible: " + ", ".join(o["op"] for o in ds["ops"] if o["compatible"]))
    for key, st in report["bundled"].items():
        out.append(f"bundled {key}: {'ready' if st['ready'] else 'missing'} ({st['path']})")
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Print the studio's environment report.")
    ap.add_argument("--data-dir")
    ap.add_argument("--offline", action="store_true")
    a = ap.parse_args()
    print(to_text(collect(a.data_dir, a.offline)))
