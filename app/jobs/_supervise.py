"""The tiny parent of every job: `python app/jobs/_supervise.py EXIT_FILE [--grace S] -- ARGV...`.

The engine starts this file (by path, so no package import slows it down) as the leader of a new
session/process group with stdout+stderr on runs/<id>/log.txt. It runs ARGV (the job's real command,
the one in command.sh) as its child, survives SIGTERM/SIGINT/SIGHUP (it waits for the child instead;
a SIGTERM tells it that the engine is stopping the job), then
  - ends any descendant the job left behind, so nothing outlives a job: during a stop it first waits
    up to S seconds (the engine's grace period, default 3) for them, since a trainer rank whose launcher
    already ended may still be saving its checkpoint; otherwise SIGTERM at once, SIGKILL after 3 s;
  - writes {"exit_code": N, "ended_at": T} to EXIT_FILE (atomically).
The exit file is how an engine that did not start the job (the UI was restarted, or another UI
process) learns how it ended. Exits with the child's status (128+signal for a signal).
"""

import json
import os
import signal
import subprocess
import sys
import time


def _descendants():
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil is a project dependency
        return []
    try:
        return psutil.Process().children(recursive=True)
    except psutil.Error:
        return []


STOPPING = False


def _on_signal(signum, _frame) -> None:
    global STOPPING
    if signum == signal.SIGTERM:
        STOPPING = True


def _reap_leftovers(grace: float = 3.0, wait_first: float = 0.0) -> None:
    import psutil

    procs = _descendants()
    if procs and wait_first > 0:
        print(
            f"=== stopping: waiting up to {wait_first:g}s for {len(procs)} process(es) to finish "
            f"(a trainer may still be saving its checkpoint): {', '.join(str(p.pid) for p in procs)} ===",
            flush=True,
        )
        _gone, procs = psutil.wait_procs(procs, timeout=wait_first)
        procs = [p for p in procs if p.is_running()] + [p for p in _descendants() if p not in procs]
    if not procs:
        return
    print(
        f"=== ending {len(procs)} process(es) the job left behind: "
        f"{', '.join(str(p.pid) for p in procs)} ===",
        flush=True,
    )
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _gone, alive = psutil.wait_procs(procs, timeout=grace)
    for p in alive + _descendants():
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def _become_subreaper() -> None:
    """Orphaned descendants (a rank whose launcher died) are re-parented to us, not to init, so the
    engine still finds every process of the job in our tree and nothing escapes a stop."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:
        pass


def main() -> int:
    args = sys.argv[1:]
    grace = 3.0
    if len(args) >= 3 and args[1] == "--grace":
        try:
            grace = float(args[2])
        except ValueError:
            print(f"--grace: not a number of seconds: {args[2]!r}", file=sys.stderr)
            return 2
        del args[1:3]
    if len(args) < 3 or args[1] != "--":
        print("usage: _supervise.py EXIT_FILE [--grace SECONDS] -- ARGV...", file=sys.stderr)
        return 2
    exit_file, argv = args[0], args[2:]
    if sys.platform.startswith("linux"):
        _become_subreaper()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)  # never die before the child; a SIGTERM marks a stop
    try:
        child = subprocess.Popen(argv, restore_signals=True)
    except OSError as e:
        print(f"cannot start {argv[0]}: {e}", flush=True)
        rc = 127
    else:
        # Popen starts the child with default handlers (signal handlers are not inherited through exec).
        while True:
            try:
                rc = child.wait()
                break
            except InterruptedError:  # pragma: no cover
                continue
    try:
        _reap_leftovers(wait_first=grace if STOPPING else 0.0)
    except Exception as e:  # never lose the exit file
        print(f"cleanup failed: {e}", flush=True)
    tmp = exit_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"exit_code": rc, "ended_at": time.time()}, f)
    os.replace(tmp, exit_file)
    return 128 - rc if rc < 0 else rc


if __name__ == "__main__":
    sys.exit(main())
