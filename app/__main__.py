"""`python -m app [flags]`: serve the studio (launch.sh calls this after setting up the venv)."""
from __future__ import annotations

import os
import socket
import sys
import time

from app.cli import DEFAULT_PORT, build_parser, parse_auth

BANNER_WARN = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: {how} without --auth or --auth-file.
!! Anyone who can reach this port can start training jobs and read your data dir.
!! Add --auth user:password (or --auth-file FILE).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def pick_port(host: str, wanted: int | None) -> int:
    """--port N must be free (clear error otherwise); without it, 7860 or the next free one (A1111)."""
    if wanted is not None:
        if not 1 <= wanted <= 65535:
            raise SystemExit(f"--port: {wanted} is not a port number (1-65535)")
        if not _port_free(host, wanted):
            raise SystemExit(f"--port: port {wanted} is already in use; pick another or stop what uses it")
        return wanted
    for port in range(DEFAULT_PORT, DEFAULT_PORT + 100):
        if _port_free(host, port):
            return port
    raise SystemExit(f"no free port in {DEFAULT_PORT}-{DEFAULT_PORT + 99}; pass --port N")


def main(argv: list[str] | None = None) -> int:
    t_start = time.time()
    args = build_parser().parse_args(argv)
    try:
        auth = parse_auth(args.auth, args.auth_file)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from backends.common import paths

    data_dir = paths.data_dir(args.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    os.environ["STUDIO_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(data_dir / "tmp"))
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    if args.offline:
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
            os.environ[var] = "1"

    host = "0.0.0.0" if args.listen else "127.0.0.1"
    port = pick_port(host, args.port)

    if (args.listen or args.share) and not auth:
        print(BANNER_WARN.format(how=" and ".join(f for f, on in (("--listen", args.listen),
                                                                   ("--share", args.share)) if on)),
              file=sys.stderr, flush=True)
    share = args.share
    if share and args.offline:
        print("--share: not attempted because --offline is set; serving locally only.", flush=True)
        share = False

    import torch

    torch.set_num_threads(1)  # the UI stays at one thread; jobs get their own budget

    from app import ui
    from app.context import StudioContext
    from app.tabs import environment

    from app.jobs import Engine

    # Re-attaches jobs still running from an earlier UI process; dead ones become "interrupted".
    grace = {"grace_seconds": args.stop_grace} if args.stop_grace else {}
    engine = Engine(data_dir, offline=args.offline, **grace)
    ctx = StudioContext(data_dir=data_dir, offline=args.offline, engine=engine)
    if not args.no_prepare:
        status = _bundled_ready(data_dir)
        if not status:
            print("[studio] bundled models are not prepared yet: preparing them in the background "
                  "(progress here and in the Environment tab)", flush=True)
            ctx.preparer.start()
    environment.warm_up(ctx)
    demo = ui.build(ctx)
    demo.queue(default_concurrency_limit=4)
    print(f"[studio] data dir: {data_dir}", flush=True)
    footer = ["api", "gradio", "settings"] if args.api else ["gradio", "settings"]
    _, local_url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, auth=auth or None,
        auth_message="Finetune Studio: log in" if auth else None,
        prevent_thread_lock=True, quiet=True, footer_links=footer, css=ui.CSS,
        allowed_paths=[str(data_dir)], max_file_size="2gb",
    )
    print(f"[studio] ready in {time.time() - t_start:.1f} s: http://{'127.0.0.1' if host == '127.0.0.1' else host}:{port}",
          flush=True)
    if share:
        if share_url:
            print(f"[studio] share link: {share_url}", flush=True)
        else:
            print("[studio] --share: could not create a share link (no internet?); serving locally only.",
                  flush=True)
    try:
        demo.block_thread()
    except KeyboardInterrupt:
        pass
    finally:
        engine.shutdown()  # stops watching; running jobs are detached and keep going
        demo.close()
    return 0


def _bundled_ready(data_dir) -> bool:
    from backends.bundled import smollm2, tiny_sd

    return smollm2.smollm2_status(data_dir)["ready"] and tiny_sd.tiny_sd_status(data_dir)["ready"]


if __name__ == "__main__":
    sys.exit(main())
