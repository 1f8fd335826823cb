"""`python -m app [flags]`: serve the studio (launch.sh calls this after setting up the venv)."""
from __future__ import annotations

import inspect
import os
import shutil
import socket
import sys
import time
from pathlib import Path

from app.cli import DEFAULT_PORT, build_parser, parse_auth

BANNER_WARN = """
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! WARNING: {how} without --auth or --auth-file.
!! Anyone who can reach this port can start training jobs and read your data dir.
!! Add --auth user:password (or --auth-file FILE).
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
"""


AUTH_ARGV_WARN = ("[studio] WARNING: --auth puts the password in the process list, where every user of this "
                  "machine can read it (ps); on a shared machine use --auth-file FILE (mode 0600) instead.")
TMP_SWEEP_AGE = 3600  # seconds: Gradio temp files older than this are left over from an earlier run


def secure_data_dir(data_dir: Path) -> None:
    """Files and folders the studio and its jobs write are for this user only (umask 077): the data dir is made
    0700, the job store, datasets, logs and outputs 0600/0700. An existing data dir open to others is reported."""
    os.umask(0o077)
    if not data_dir.exists():
        data_dir.mkdir(parents=True, mode=0o700)
    elif data_dir.stat().st_mode & 0o077:
        print(f"[studio] note: the data dir {data_dir} can be read by other users "
              f"(mode {data_dir.stat().st_mode & 0o777:o}); `chmod 700 {data_dir}` keeps datasets, logs and "
              "results private", file=sys.stderr, flush=True)


def sweep_tmp(tmp: Path, max_age: float = TMP_SWEEP_AGE) -> int:
    """Deletes what an earlier run left in the studio's Gradio temp folder (uploads are copied out of it and
    deleted as they are handled); returns the number of entries removed."""
    removed = 0
    if not tmp.is_dir():
        return removed
    cutoff = time.time() - max_age
    for e in tmp.iterdir():
        try:
            if e.lstat().st_mtime > cutoff:
                continue
            if e.is_dir() and not e.is_symlink():
                shutil.rmtree(e)
            else:
                e.unlink()
            removed += 1
        except OSError:
            continue
    return removed


class OriginGuard:
    """ASGI middleware: a request that carries an Origin header (a browser's cross-site fetch or form post) is
    answered 403 unless that origin is the studio's own (the same host:port the request was sent to).

    Gradio's own CORS check trusts every `localhost` origin, so another local web app could post uploads or a
    login form to the studio and read its answers with the user's cookie; this closes that. Origins a reverse
    proxy rewrites can be allowed with STUDIO_ALLOWED_ORIGINS (comma-separated, e.g. https://studio.example.org).
    """

    share_origins: set[str] = set()  # the share link's origin, once Gradio has made one

    def __init__(self, app, extra: str = ""):
        self.app = app
        self.extra = {o.strip().rstrip("/").lower() for o in extra.split(",") if o.strip()}

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            origin = headers.get("origin")
            if origin is not None and not self.allowed(origin, headers.get("host", "")):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                body = b"cross-origin request refused by Finetune Studio"
                await send({"type": "http.response.start", "status": 403,
                            "headers": [(b"content-type", b"text/plain"),
                                        (b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    def allowed(self, origin: str, host: str) -> bool:
        from urllib.parse import urlsplit

        o = origin.strip().rstrip("/").lower()
        if o in self.extra or o in self.share_origins:
            return True
        try:
            parts = urlsplit(o)
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file://) and the like
        default = {"http": ":80", "https": ":443"}[parts.scheme]
        netloc = parts.netloc.removesuffix(default)
        return bool(host) and netloc == host.strip().lower().removesuffix(default)


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
    secure_data_dir(data_dir)
    os.environ["STUDIO_DATA_DIR"] = str(data_dir)
    os.environ.setdefault("GRADIO_TEMP_DIR", str(data_dir / "tmp"))
    if Path(os.environ["GRADIO_TEMP_DIR"]) == data_dir / "tmp":  # only the studio's own temp folder
        sweep_tmp(data_dir / "tmp")
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
    if args.auth and (args.listen or args.share):
        print(AUTH_ARGV_WARN, file=sys.stderr, flush=True)
    share = args.share
    if share and args.offline:
        print("--share: not attempted because --offline is set; serving locally only.", flush=True)
        share = False

    import torch

    torch.set_num_threads(1)  # the UI stays at one thread; jobs get their own budget

    from starlette.middleware import Middleware

    from app import ui
    from app.context import StudioContext
    from app.tabs import environment

    from app.jobs import Engine
    from backends.data.sources import max_upload_bytes

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
        elif not _shapes_ready(data_dir):  # offered, not forced: the Environment tab has its button
            from backends.bundled import prepare_command
            from backends.bundled.tiny_sd_shapes import BUILD_MINUTES

            print("[studio] optional: teach the tiny SD pipeline to draw coloured shapes (about "
                  f"{BUILD_MINUTES} min, once) with the "
                  "Environment tab's button or: " + prepare_command(data_dir, "shapes"), flush=True)
    environment.warm_up(ctx)
    demo = ui.build(ctx)
    demo.queue(default_concurrency_limit=4)
    print(f"[studio] data dir: {data_dir}", flush=True)
    footer = ["api", "gradio", "settings"] if args.api else ["gradio", "settings"]
    # Gradio's own check that localhost answers (HEAD / with a 3 s timeout) refuses to start the server when the first
    # render of this ~1100-component page takes longer on a busy 2-core machine; _local_answers() below waits longer.
    check = {"_frontend": False} if "_frontend" in inspect.signature(demo.launch).parameters else {}
    _, local_url, share_url = demo.launch(
        server_name=host, server_port=port, share=share, auth=auth or None,
        auth_message="Finetune Studio: log in" if auth else None,
        prevent_thread_lock=True, quiet=True, footer_links=footer, css=ui.CSS,
        allowed_paths=[str(data_dir)], max_file_size=max_upload_bytes(), strict_cors=True,
        app_kwargs={"middleware": [Middleware(OriginGuard,
                                              extra=os.environ.get("STUDIO_ALLOWED_ORIGINS", ""))]},
        **check,
    )
    if not share and not _local_answers(local_url):
        print(f"[studio] warning: {local_url} did not answer within {LOCAL_WAIT:.0f} s; a proxy may block localhost "
              "(NO_PROXY=127.0.0.1,localhost) or the machine is very busy", flush=True)
    print(f"[studio] ready in {time.time() - t_start:.1f} s: http://{'127.0.0.1' if host == '127.0.0.1' else host}:{port}",
          flush=True)
    if share:
        if share_url:
            from urllib.parse import urlsplit

            u = urlsplit(share_url)
            OriginGuard.share_origins.add(f"{u.scheme}://{u.netloc}".lower())
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


LOCAL_WAIT = 60.0


def _local_answers(url: str, wait: float = LOCAL_WAIT) -> bool:
    """Whether the page answers at `url` within `wait` seconds (what Gradio checks with one 3 s try)."""
    import httpx

    deadline = time.time() + wait
    while time.time() < deadline:
        try:
            code = httpx.head(url, timeout=max(1.0, deadline - time.time()), verify=False).status_code
            if code < 400 or code == 401:  # 401 / a redirect: --gradio-auth's login
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def _bundled_ready(data_dir) -> bool:
    from backends.bundled import smollm2, tiny_sd

    return smollm2.smollm2_status(data_dir)["ready"] and tiny_sd.tiny_sd_status(data_dir)["ready"]


def _shapes_ready(data_dir) -> bool:
    from backends.bundled import tiny_sd_shapes

    return tiny_sd_shapes.tiny_sd_shapes_status(data_dir)["ready"]


if __name__ == "__main__":
    sys.exit(main())
