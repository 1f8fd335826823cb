"""Launch specs and the exact command of a job: argv, environment, launcher config files.

Nothing here starts a process or writes a file: `build_command` returns what the engine writes and runs,
`preview_command` returns the body of `runs/<id>/command.sh` for the UI's command preview.

Facts this module follows (shared/reference/stack-notes.md):
- every executable comes from the running interpreter's environment (sys.executable, its bin/), so a
  job never picks up another Python (LlamaFactory #4577/#4761);
- `accelerate launch --cpu --use_deepspeed` is refused: with a ZeRO stage the accelerate config says
  DEEPSPEED and `use_cpu: false` (DeepSpeed runs on CPU anyway, with gloo);
- accelerate's MULTI_CPU type starts N ranks only through mpirun, so N CPU ranks use its torchrun
  launcher (MULTI_GPU type) plus ACCELERATE_USE_CPU=true, which yields a real MULTI_CPU/gloo group;
- the `deepspeed` launcher on CPU: no `--num_gpus` for 1 process, `--num_gpus N` for N;
  `--no_local_rank` so the backend only ever sees `--config FILE`;
- one thread budget per process: OMP_NUM_THREADS = cores // local processes (>= 1);
- a free MASTER_PORT per job so two jobs never collide.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shlex
import socket
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import yaml

from app import kinds
from backends.common.errors import FieldError
from backends.common.paths import ROOT
from backends.common.paths import data_dir as _data_dir
from backends.common.paths import runs_dir as _runs_dir

PRESETS_DIR = ROOT / "presets"
LAUNCHERS = ("accelerate", "deepspeed", "python")
PRESETS = ("cpu", "single_gpu", "multi_gpu", "multi_node")
DEFAULT_MULTI_NODE_PORT = 29500

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,252})$")
_HOSTFILE_LINE = re.compile(r"^(?P<host>\S+)\s+slots\s*=\s*(?P<slots>\d+)$")


def module_for(kind: str) -> str:
    """The python module a job of `kind` runs (`python -m MODULE --config runs/<id>/config.yaml`): app/kinds.py."""
    return kinds.get(kind).module


def default_spec(kind: str) -> LaunchSpec:
    """The launch spec a job of `kind` gets when none is given (the kind's `launch` in app/kinds.py)."""
    return LaunchSpec.from_dict(kinds.get(kind).launch or None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def _valid_host(h: str) -> bool:
    try:
        ipaddress.ip_address(h)
        return True
    except ValueError:
        return bool(_HOST_RE.match(h))


def parse_hostfile(text: str) -> list[tuple[str, int]]:
    """DeepSpeed hostfile lines `host slots=N` (blank lines and # comments allowed)."""
    hosts: list[tuple[str, int]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        m = _HOSTFILE_LINE.match(line)
        if not m:
            raise FieldError("hostfile_text", f"line {n} {raw.strip()!r}: expected `hostname slots=N`")
        host, slots = m["host"], int(m["slots"])
        if not _valid_host(host):
            raise FieldError("hostfile_text", f"line {n}: {host!r} is not a host name or IP address")
        if slots < 1:
            raise FieldError("hostfile_text", f"line {n}: slots must be >= 1")
        if host in (h for h, _ in hosts):
            raise FieldError("hostfile_text", f"line {n}: host {host!r} is listed twice")
        hosts.append((host, slots))
    return hosts


@dataclass
class LaunchSpec:
    """How a job is launched. `num_processes` is per machine (= GPUs per machine on GPU presets)."""

    launcher: str = "accelerate"  # accelerate | deepspeed | python
    preset: str = "cpu"  # cpu | single_gpu | multi_gpu | multi_node
    num_processes: int = 1
    zero_stage: int | None = None  # None = no DeepSpeed; 0..3
    offload: bool = False  # ZeRO-Offload (optimizer, and parameters with stage 3) to CPU RAM
    num_machines: int = 1
    machine_rank: int = 0
    main_ip: str = "127.0.0.1"
    main_port: int = 0  # 0 = pick a free port per job
    hostfile_text: str = ""  # deepspeed multi_node: lines `host slots=N`
    gpu_ids: str = ""  # "" / "all" = every visible GPU, else "0,1"

    def __post_init__(self):
        self.validate()

    # -- (de)serialisation for the store and the UI form --
    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> LaunchSpec:
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise FieldError(min(unknown), "unknown launch option")
        return cls(**d)

    @property
    def gpu_list(self) -> list[int]:
        g = (self.gpu_ids or "").strip()
        if g in ("", "all"):
            return []
        return [int(x) for x in g.split(",")]

    @property
    def device_set(self) -> str:
        """Which devices the job occupies on this machine; the queue runs one job per device set."""
        if self.preset == "cpu":
            return "cpu"
        ids = self.gpu_list
        return "gpu:" + (",".join(map(str, ids)) if ids else "*")

    def validate(self) -> None:
        def need_int(name: str, lo: int, hi: int | None = None):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                try:
                    v = int(str(v).strip())
                except ValueError:
                    raise FieldError(name, f"must be a whole number, got {getattr(self, name)!r}") from None
                setattr(self, name, v)
            if v < lo or (hi is not None and v > hi):
                bound = f"between {lo} and {hi}" if hi is not None else f">= {lo}"
                raise FieldError(name, f"must be {bound}, got {v}")

        if self.launcher not in LAUNCHERS:
            raise FieldError("launcher", f"must be one of {', '.join(LAUNCHERS)}, got {self.launcher!r}")
        if self.preset not in PRESETS:
            raise FieldError("preset", f"must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        need_int("num_processes", 1, 1024)
        need_int("num_machines", 1, 4096)
        need_int("machine_rank", 0)
        need_int("main_port", 0, 65535)
        if self.zero_stage in ("", "none", "None"):
            self.zero_stage = None
        if self.zero_stage is not None:
            need_int("zero_stage", 0, 3)
        self.offload = bool(self.offload)
        self.main_ip = (self.main_ip or "").strip()
        self.gpu_ids = (self.gpu_ids or "").strip().replace(" ", "")
        self.hostfile_text = self.hostfile_text or ""

        if self.offload and self.zero_stage not in (2, 3):
            raise FieldError("offload", "ZeRO-Offload needs ZeRO stage 2 or 3")
        if self.gpu_ids not in ("", "all"):
            if not re.fullmatch(r"\d+(,\d+)*", self.gpu_ids):
                raise FieldError(
                    "gpu_ids", f"comma-separated GPU numbers like 0,1 (or empty), got {self.gpu_ids!r}"
                )
            ids = self.gpu_list
            if len(set(ids)) != len(ids):
                raise FieldError("gpu_ids", "a GPU is listed twice")
            if self.preset == "cpu":
                raise FieldError("gpu_ids", "the cpu preset uses no GPU; clear gpu_ids or pick a GPU preset")
            if self.preset in ("single_gpu", "multi_gpu") and len(ids) != self.num_processes:
                raise FieldError(
                    "num_processes",
                    f"{self.num_processes} processes but {len(ids)} GPU(s) in gpu_ids; "
                    "use one process per GPU",
                )
        if self.launcher == "python" and self.num_processes != 1:
            raise FieldError(
                "num_processes", "the python launcher runs one process; use accelerate or deepspeed for more"
            )
        if self.launcher == "python" and self.preset == "multi_node":
            raise FieldError("launcher", "multi_node needs the accelerate or deepspeed launcher")
        if self.preset == "single_gpu" and self.num_processes != 1:
            raise FieldError("num_processes", "single_gpu runs 1 process; pick multi_gpu for more")
        if self.preset == "multi_gpu" and self.num_processes < 2:
            raise FieldError("num_processes", "multi_gpu needs at least 2 processes (one per GPU)")
        if self.preset == "multi_node":
            if self.num_machines < 2:
                raise FieldError("num_machines", "multi_node needs at least 2 machines")
            if not self.main_ip:
                raise FieldError(
                    "main_ip", "multi_node needs the address of machine 0 (reachable from the others)"
                )
            if not _valid_host(self.main_ip):
                raise FieldError("main_ip", f"{self.main_ip!r} is not a host name or IP address")
            if self.machine_rank >= self.num_machines:
                raise FieldError(
                    "machine_rank", f"must be < num_machines ({self.num_machines}), got {self.machine_rank}"
                )
            hosts = parse_hostfile(self.hostfile_text)
            if self.launcher == "deepspeed":
                if not hosts:
                    raise FieldError(
                        "hostfile_text",
                        "the deepspeed launcher needs a hostfile for multi_node: "
                        "one `host slots=N` line per machine",
                    )
                if len(hosts) < self.num_machines:
                    raise FieldError(
                        "num_machines", f"{self.num_machines} machines but the hostfile lists {len(hosts)}"
                    )
        else:
            if self.num_machines != 1:
                raise FieldError("num_machines", "more than one machine needs the multi_node preset")
            if self.machine_rank != 0:
                raise FieldError("machine_rank", "must be 0 on a single machine")
            if self.hostfile_text.strip():
                parse_hostfile(self.hostfile_text)  # still report a bad line


def threads_per_process(cores: int, num_processes: int) -> int:
    return max(1, int(cores) // max(1, int(num_processes)))


def load_accelerate_preset(name: str) -> dict:
    return yaml.safe_load((PRESETS_DIR / "accelerate" / f"{name}.yaml").read_text())


def load_deepspeed_preset(zero_stage: int, offload: bool = False) -> dict:
    if zero_stage == 1:  # no file of its own: ZeRO-2's settings with stage 1 (optimizer states only)
        cfg = json.loads((PRESETS_DIR / "deepspeed" / "zero2.json").read_text())
        cfg["zero_optimization"]["stage"] = 1
        return cfg
    name = f"zero{zero_stage}" + ("_offload" if offload else "")
    return json.loads((PRESETS_DIR / "deepspeed" / f"{name}.json").read_text())


def deepspeed_executable() -> list[str]:
    """The `deepspeed` launcher of this interpreter's environment (never one found on PATH)."""
    exe = Path(sys.executable).parent / "deepspeed"
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "deepspeed.launcher.runner"]


def _resolve_port(spec: LaunchSpec) -> int:
    if spec.main_port:
        return spec.main_port
    return DEFAULT_MULTI_NODE_PORT if spec.preset == "multi_node" else free_port()


def merged_accelerate_config(spec: LaunchSpec, port: int, ds_path: str | None) -> dict:
    cfg = load_accelerate_preset(spec.preset)
    total = spec.num_processes * spec.num_machines
    cfg.update(
        num_processes=total,
        num_machines=spec.num_machines,
        machine_rank=spec.machine_rank,
        main_process_port=port,
    )
    cfg["main_process_ip"] = spec.main_ip if spec.preset == "multi_node" else "127.0.0.1"
    if spec.gpu_ids not in ("", "all"):
        cfg["gpu_ids"] = spec.gpu_ids
    if spec.preset == "cpu":
        cfg["distributed_type"] = (
            "NO" if spec.num_processes == 1 else "MULTI_GPU"
        )  # torchrun + ACCELERATE_USE_CPU
        cfg["use_cpu"] = True
    elif spec.preset == "single_gpu":
        cfg["distributed_type"] = "NO"
    if ds_path:
        cfg["distributed_type"] = "DEEPSPEED"
        cfg["use_cpu"] = False  # --cpu with DeepSpeed is refused / silently drops DeepSpeed
        cfg.pop("mixed_precision", None)  # taken from the DeepSpeed JSON ("auto" -> the trainer)
        cfg["deepspeed_config"] = {
            "deepspeed_config_file": ds_path,
            "zero3_init_flag": spec.zero_stage == 3,
            "deepspeed_multinode_launcher": "standard",
        }
    return cfg


def build_command(
    module: str,
    config_path,
    spec: LaunchSpec,
    run_dir,
    *,
    cores: int | None = None,
    offline: bool = False,
    data_dir=None,
    ds_config: dict | None = None,
    port: int | None = None,
) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """The job's argv, the environment variables it needs (on top of the UI's), and the launcher
    files to write {absolute path: content}. `ds_config` replaces the ZeRO preset (a user's JSON)."""
    spec.validate()
    run_dir = Path(run_dir)
    config_path = str(config_path)
    cores = cores or default_cores()
    port = port or _resolve_port(spec)
    files: dict[str, str] = {}
    ds_path = None
    if spec.zero_stage is not None or ds_config is not None:
        ds = (
            copy.deepcopy(ds_config)
            if ds_config is not None
            else load_deepspeed_preset(spec.zero_stage, spec.offload)
        )
        ds_path = str(run_dir / "deepspeed.json")
        files[ds_path] = json.dumps(ds, indent=2) + "\n"

    env: dict[str, str] = {}
    nthreads = threads_per_process(cores, spec.num_processes)
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(nthreads)
    env["PYTHONUNBUFFERED"] = "1"
    if data_dir is not None:
        env["TORCH_EXTENSIONS_DIR"] = str(Path(data_dir) / "cache" / "torch_extensions")
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    env["HF_HUB_DISABLE_TELEMETRY"] = "1"
    env["DO_NOT_TRACK"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    if offline:
        env["HF_HUB_OFFLINE"] = env["HF_DATASETS_OFFLINE"] = env["TRANSFORMERS_OFFLINE"] = "1"

    target = ["-m", module, "--config", config_path]
    if spec.launcher == "python":
        argv = [sys.executable, *target]
        if ds_path:  # DeepSpeed without a launcher looks for MPI unless these are set
            env.update(
                RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
            )
        if spec.gpu_ids not in ("", "all"):
            env["CUDA_VISIBLE_DEVICES"] = spec.gpu_ids
    elif spec.launcher == "accelerate":
        acc_path = str(run_dir / "accelerate.yaml")
        cfg = merged_accelerate_config(spec, port, ds_path)
        files[acc_path] = (
            f"# written by Finetune Studio from presets/accelerate/{spec.preset}.yaml\n"
            + yaml.safe_dump(cfg, sort_keys=False)
        )
        if spec.preset == "cpu" and spec.num_processes > 1 and not ds_path:
            env["ACCELERATE_USE_CPU"] = "true"
        argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", acc_path, *target]
    else:  # deepspeed
        argv = deepspeed_executable()
        if spec.preset == "multi_node":
            hf_path = str(run_dir / "hostfile")
            files[hf_path] = "".join(f"{h} slots={s}\n" for h, s in parse_hostfile(spec.hostfile_text))
            argv += [
                "--hostfile",
                hf_path,
                "--num_nodes",
                str(spec.num_machines),
                "--master_addr",
                spec.main_ip,
            ]
            if spec.gpu_ids not in ("", "all"):
                raise FieldError("gpu_ids", "with a hostfile, choose GPUs with slots=N per host")
            argv += ["--num_gpus", str(spec.num_processes)]
        elif spec.gpu_ids not in ("", "all"):
            argv += ["--include", "localhost:" + spec.gpu_ids]
        elif spec.preset != "cpu" or spec.num_processes > 1:
            argv += ["--num_gpus", str(spec.num_processes)]
        # (CPU, 1 process: no --num_gpus; DeepSpeed starts one process)
        argv += ["--master_port", str(port), "--no_local_rank", "--module", module, "--config", config_path]
    return argv, env, files


def render_command_sh(argv: list[str], env: dict[str, str], *, title: str = "", cwd=ROOT) -> str:
    """The command.sh body: cd to the project root, export the job's variables, exec the argv."""
    venv_bin = str(Path(sys.executable).parent)
    lines = ["#!/usr/bin/env bash"]
    if title:
        lines.append(f"# {title}")
    lines += [
        "# The exact command of this job; run it by hand from anywhere: bash " + "path/to/command.sh",
        "set -euo pipefail",
        f"cd {shlex.quote(str(cwd))}",
        f'export PATH={shlex.quote(venv_bin)}:"$PATH"',
    ]
    for k, v in env.items():
        lines.append(f"export {k}={shlex.quote(str(v))}")
    lines.append("exec " + " ".join(shlex.quote(str(a)) for a in argv))
    return "\n".join(lines) + "\n"


def preview_command(
    kind: str,
    config: dict,
    spec: LaunchSpec,
    *,
    data_dir=None,
    run_dir=None,
    cores: int | None = None,
    offline: bool = False,
) -> str:
    """The command.sh a job with this config and spec would get (no job is created, nothing written)."""
    dd = _data_dir(data_dir)
    run_dir = Path(run_dir) if run_dir else _runs_dir(dd) / "<job-id>"
    argv, env, _files = build_command(
        module_for(kind), run_dir / "config.yaml", spec, run_dir, cores=cores, offline=offline, data_dir=dd
    )
    return render_command_sh(argv, env, title=f"Finetune Studio job preview ({kind})")
