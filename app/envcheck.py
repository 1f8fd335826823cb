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
    """offline_flag (--offline), online or offline; `network_text` says it in words."""
    if offline:
        return "offline_flag"
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return "online"
    except OSError:
        return "offline"


def network_text(state: str, lang: str = "en") -> str:
    from app.i18n import t

    return t(f"env.net.{state}", lang)


def bundled_status(data_dir: Path) -> dict:
    from backends.bundled import smollm2, tiny_sd, tiny_sd_shapes

    return {"smollm2": smollm2.smollm2_status(data_dir), "tiny_sd": tiny_sd.tiny_sd_status(data_dir),
            "tiny_sd_shapes": tiny_sd_shapes.tiny_sd_shapes_status(data_dir)}


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


def _version(v: str, lang: str) -> str:
    from app.i18n import t

    return t("env.not_installed", lang) if v == "not installed" else v


def to_markdown(report: dict, lang: str = "en") -> str:
    from app.i18n import t

    s, tinfo, pk = report["system"], report["torch"], report["packages"]
    data_dir = f"`{s['data_dir']}`"
    lines = [
        f"### {t('env.system', lang)}",
        f"| {t('env.col.item', lang)} | {t('env.col.value', lang)} |", "|---|---|",
        f"| {t('env.os', lang)} | {s['os']} |",
        f"| {t('env.cpu', lang)} | {s['cpu']} — **{t('env.cores', lang).format(n=s['cores'])}** |",
        f"| {t('env.ram', lang)} | {t('env.ram_value', lang).format(total=s['ram_total_gb'], free=s['ram_free_gb'])} |",
        f"| {t('env.disk', lang)} | {t('env.disk_value', lang).format(free=s['disk_free_gb'], dir=data_dir)} |",
        f"| {t('env.python', lang)} | {s['python']} (`{s['python_exe']}`) |",
        f"| torch | **{tinfo['torch']}**, CUDA {tinfo['cuda_version'] or '—'} |",
        f"| GPU | {gpu_summary(report, lang)} |",
        f"| {t('env.distributed', lang)} | "
        + ", ".join(f"{k} {'✅' if v else '—'}" for k, v in tinfo["distributed"].items()) + " |",
        f"| {t('env.network', lang)} | {network_text(report['network'], lang)} |",
        "",
        f"### {t('env.software', lang)}",
        f"| {t('env.col.package', lang)} | {t('env.col.version', lang)} |", "|---|---|",
        *[f"| {k} | {_version(v, lang)} |" for k, v in pk.items()],
        *[f"| {t('env.launcher', lang).format(name=f'`{k}`')} | "
          f"`{t('env.missing', lang) if v == 'missing' else v}` |" for k, v in report["launchers"].items()],
        "",
        f"### {t('env.ds_ops', lang)}",
    ]
    ds = report["deepspeed"]
    if ds.get("error"):
        lines.append(t("env.ds_unusable", lang).format(error=f"`{ds['error']}`"))
    else:
        lines += [t("env.ds_accel", lang).format(acc=ds["accelerator"],
                                                 ninja="✅" if ds["ninja"] else t("env.no_ninja", lang)),
                  "", f"| {t('env.col.op', lang)} | {t('env.col.installed', lang)} | {t('env.col.compatible', lang)} |",
                  "|---|---|---|"]
        lines += [f"| {o['op']} | {t('env.yes' if o['installed'] else 'env.no', lang)} | "
                  f"{'✅' if o['compatible'] else '—'} |" for o in ds["ops"]]
    return "\n".join(lines)


def bundled_markdown(report: dict, lang: str = "en") -> str:
    from app.i18n import t

    lines = [f"### {t('env.bundled', lang)}"]
    for key, st in report["bundled"].items():
        mark = "✅" if st["ready"] else "➕" if st.get("optional") else "⚠️"
        detail = st.get("detail_zh") if lang == "zh" and st.get("detail_zh") else st["detail"]
        lines.append(f"- {mark} **{key}** — {detail}")
        if not st["ready"]:
            lines.append(f"  - {t('env.prepare_with', lang)} `{st['command']}`")
    return "\n".join(lines)


def to_text(report: dict, lang: str = "en") -> str:
    """The plain "Copy report" block: what to paste into a bug report."""
    from app.i18n import t

    s, tinfo = report["system"], report["torch"]
    out = [
        t("env.txt.title", lang),
        f"{t('env.txt.os', lang)}: {s['os']}",
        f"{t('env.txt.cpu', lang)}: {s['cpu']} ({t('env.cores', lang).format(n=s['cores'])})",
        f"{t('env.txt.ram', lang)}: {t('env.ram_value', lang).format(total=s['ram_total_gb'], free=s['ram_free_gb'])}",
        t("env.txt.disk", lang).format(free=s["disk_free_gb"]),
        f"{t('env.txt.python', lang)}: {s['python']} ({s['python_exe']})",
        t("env.txt.cuda", lang).format(ok=t("env.yes" if tinfo["cuda_available"] else "env.no", lang),
                                       ver=tinfo["cuda_version"] or "—"),
        *[f"{t('env.txt.gpu', lang)} {d['index']}: {d['name']} {d['memory_gb']} GB sm_{d['capability']}"
          for d in tinfo["devices"]],
        f"{t('env.txt.distributed', lang)}: " + ", ".join(k for k, v in tinfo["distributed"].items() if v),
        *[f"{k}: {_version(v, lang)}" for k, v in report["packages"].items()],
        f"{t('env.txt.network', lang)}: {network_text(report['network'], lang)}",
    ]
    ds = report["deepspeed"]
    if not ds.get("error"):
        out.append(f"{t('env.txt.ds_ops', lang)}: " + ", ".join(o["op"] for o in ds["ops"] if o["compatible"]))
    for key, st in report["bundled"].items():
        state = t("env.txt.ready", lang) if st["ready"] else t("env.missing", lang)
        out.append(t("env.txt.bundled", lang).format(key=key, state=state, path=st["path"]))
    return "\n".join(out)


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Print the studio's environment report.")
    ap.add_argument("--data-dir")
    ap.add_argument("--offline", action="store_true")
    a = ap.parse_args()
    print(to_text(collect(a.data_dir, a.offline)))
