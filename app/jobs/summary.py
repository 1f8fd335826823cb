"""Turn the tail of a failed job's log (+ its exit code) into a short, actionable error summary."""

from __future__ import annotations

import re

KILLED_HINT = (
    "the process was killed (SIGKILL); often the host ran out of RAM: lower batch size / "
    "sequence length or use LoRA / ZeRO offload"
)
GPU_OOM_HINT = (
    "GPU out of memory: lower batch size / sequence length, enable gradient checkpointing, "
    "use LoRA, or a ZeRO stage (3 + offload frees the most GPU memory)"
)
HOST_OOM_EXIT_CODES = {-9, 137, 247}  # -9: direct; 137 = 128+9 (shell); 247 = sys.exit(-9) (deepspeed launch)

_PREFIX = re.compile(r"^(\[(rank|default)\d*\]:?\s*|\d+:\s)")
_TRACEBACK = "Traceback (most recent call last):"
_FILE_LINE = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+)(?:, in (?P<fn>.+))?')
_EXC_LINE = re.compile(
    r"^(?P<name>(?:[A-Za-z_][\w.]*\.)?\w*(?:Error|Exception|Exit|Interrupt|Warning|Failure|Fault)|"
    r"[A-Za-z_][\w.]*\.[A-Z]\w*|StopIteration)"
    r"(?::\s?(?P<msg>.*))?$"
)
# Exceptions raised by launchers only to say "the child failed": never the real cause.
_WRAPPERS = ("subprocess.CalledProcessError", "CalledProcessError", "ChildFailedError", "SystemExit")
_KILLED_PATTERNS = [
    re.compile(r"Signals\.SIGKILL"),
    re.compile(r"exit(?:s with)? (?:return code|status|code) ?=? ?-9\b"),
    re.compile(r"return code = -9\b"),
    re.compile(r"Signal 9 \(SIGKILL\)"),
    re.compile(r"^Killed\s*$", re.MULTILINE),
    re.compile(r"\bOut of memory: Killed process\b"),
]
_GPU_OOM = re.compile(
    r"CUDA out of memory|torch\.(cuda\.)?OutOfMemoryError|CUDA error: out of memory|"
    r"HIP out of memory|XPU out of memory"
)
_STANDALONE = [
    re.compile(r"^error: .*"),  # a backend's refusal naming its field (backends/common/runner.py: exit 2)
    re.compile(r"\bFileNotFoundError: .*"),
    re.compile(r"\b(No such file or directory|does not appear to have a file named).*"),
    re.compile(r"\S*: error: .*"),  # argparse (accelerate / deepspeed CLI usage errors)
    re.compile(r"\[ERROR\].*"),
    re.compile(
        r"^(?:RuntimeError|ValueError|AssertionError|ImportError|ModuleNotFoundError|OSError|KeyError|"
        r"TypeError|NotImplementedError|torch\.\S+Error)\b.*"
    ),
]


def _clean(line: str) -> str:
    return _PREFIX.sub("", line.rstrip("\r\n"))


def _traceback_blocks(lines: list[str]) -> list[tuple[str, str | None]]:
    """Every traceback in the text as (exception line, last 'File ..., line N, in f' line)."""
    blocks: list[tuple[str, str | None]] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != _TRACEBACK:
            i += 1
            continue
        last_file = None
        j = i + 1
        exc = None
        while j < len(lines):
            s = lines[j]
            if s.strip() == _TRACEBACK:
                break
            m = _FILE_LINE.match(s)
            if m:
                last_file = s.strip()
            elif s and not s[0].isspace() and _EXC_LINE.match(s.strip()):
                exc = s.strip()
                # chained exceptions and multi-line messages: keep scanning until a blank/new block
                j += 1
                break
            j += 1
        if exc:
            blocks.append((exc, last_file))
        i = j
    return blocks


def _torchrun_root_cause(lines: list[str]) -> str:
    """torchrun's (accelerate multi-process) failure table: 'Root Cause' -> rank, exitcode, traceback."""
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip().startswith("Root Cause"):
            info = {}
            for s in lines[i + 1 : i + 12]:
                m = re.match(r"^\s*(rank|exitcode|traceback)\s*:\s*(.*)$", s)
                if m and m[1] not in info:
                    info[m[1]] = m[2].strip()
            if info:
                out = f"rank {info.get('rank', '?')} failed with exitcode {info.get('exitcode', '?')}"
                tb = info.get("traceback", "")
                if tb and not tb.startswith("To enable traceback"):
                    out += f" ({tb})"
                return out
    return ""


def summarize(log_text: str, exit_code: int | None) -> str:
    """A few lines: the real exception (+ where), and a hint for kills and OOMs."""
    lines = [_clean(x) for x in log_text.splitlines()]
    parts: list[str] = []
    hints: list[str] = []

    blocks = _traceback_blocks(lines)
    real = [b for b in blocks if not b[0].split(":", 1)[0].strip().endswith(_WRAPPERS)]
    if real:
        exc, where = real[-1]
        parts.append(exc[:600])
        if where:
            parts.append("  at " + where[:300])
    else:
        root = _torchrun_root_cause(lines)
        if root:
            parts.append(root)
        else:
            for line in reversed(lines[-400:]):
                s = line.strip()
                if (
                    s.startswith(("===", "error summary:"))
                    or "exits with return code" in s
                    or s.split(":", 1)[0].endswith(_WRAPPERS)
                ):
                    continue
                if any(p.search(s) for p in _STANDALONE):
                    parts.append(s[:600])
                    break
        if not parts and blocks:  # only a launcher's "child failed" exception: still says how
            parts.append(blocks[-1][0][:600])

    text_tail = "\n".join(lines[-400:])
    if _GPU_OOM.search(text_tail):
        hints.append(GPU_OOM_HINT)
    if exit_code in HOST_OOM_EXIT_CODES or any(p.search(text_tail) for p in _KILLED_PATTERNS):
        hints.append(KILLED_HINT)

    if not parts and not hints:
        last = [s.strip() for s in lines if s.strip() and not s.startswith("===")]
        if last:
            parts.append("last log line: " + last[-1][:400])
    head = f"exit code {exit_code}" if exit_code is not None else "no exit code"
    return "\n".join([head + (": " + parts[0] if parts else ""), *parts[1:], *hints]).strip()
