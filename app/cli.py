"""Command-line flags of the studio, in AUTOMATIC1111's spirit.

Standard library only: launch.sh calls `python3 -m app.cli --help` and `--print-deps` with the
system Python, before the virtual environment exists.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PORT = 7860


def _seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds, got {text}")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="./launch.sh",
        description="Finetune Studio: fine-tune language and image models from a web page.",
        epilog=(
            "Examples:\n"
            "  ./launch.sh                          serve on http://127.0.0.1:7860\n"
            "  ./launch.sh --listen --auth-file ~/.studio-auth --port 8080\n"
            "                                       (the file holds me:secret, chmod 600)\n"
            "  ./launch.sh --tests                  set everything up and run the test suite\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    net = p.add_argument_group("network")
    net.add_argument("--listen", action="store_true",
                     help="bind 0.0.0.0 so other machines can reach the studio (use --auth-file!); "
                          "anyone on the network can then try to log in, so use a strong password")
    net.add_argument("--share", action="store_true",
                     help="ask Gradio for a public share link (anyone with the link reaches the login page: "
                          "use --auth-file); without internet it says so and serves locally")
    net.add_argument("--port", type=int, default=None,
                     help=f"port to serve on (default {DEFAULT_PORT}, or the next free one)")
    net.add_argument("--auth", default=None, metavar="USER:PASS[,USER2:PASS2]",
                     help="require a login; several pairs separated by commas. Every local user can read "
                          "it in the process list: on a shared machine use --auth-file")
    net.add_argument("--auth-file", default=None, metavar="FILE",
                     help="file with one USER:PASS per line (blank lines and # comments ignored); "
                          "keeps the password out of the process list (chmod 600 it)")
    net.add_argument("--api", action="store_true",
                     help="show the API page link in the footer (endpoints are always callable with gradio_client)")
    data = p.add_argument_group("data")
    data.add_argument("--data-dir", default=None, metavar="DIR",
                      help="models, datasets, runs and the jobs database (default ./data)")
    data.add_argument("--offline", action="store_true",
                      help="never try the network: no model hub, no package index, no share link")
    data.add_argument("--no-prepare", action="store_true",
                      help="do not prepare the bundled models at start (the Environment tab still can)")
    data.add_argument("--stop-grace", type=_seconds, default=None, metavar="SECONDS",
                      help="Stop: time a job gets to finish its step and save a checkpoint before it is "
                           "killed (default 120)")
    inst = p.add_argument_group("launcher (launch.sh)")
    inst.add_argument("--skip-install", action="store_true",
                      help="do not check or install packages; start right away")
    inst.add_argument("--reinstall", action="store_true", help="install the packages again")
    inst.add_argument("--tests", action="store_true",
                      help="set up a fresh machine (venv, packages, Debian chromium) and run pytest; "
                           "the remaining arguments go to pytest")
    p.add_argument("--print-deps", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--extras", default="", help=argparse.SUPPRESS)
    return p


def read_dependencies(extras: str = "") -> list[str]:
    """Dependencies from pyproject.toml (the one list), plus the named optional groups."""
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    deps = list(data["project"]["dependencies"])
    optional = data["project"].get("optional-dependencies", {})
    for name in filter(None, (e.strip() for e in extras.split(","))):
        deps += optional.get(name, [])
    return deps


def parse_auth(auth: str | None, auth_file: str | None) -> list[tuple[str, str]]:
    """`user:pass[,user2:pass2]` and/or a file of `user:pass` lines → list of pairs.

    Raises ValueError with a message naming the flag when a pair is malformed.
    """
    pairs: list[tuple[str, str]] = []

    def add(item: str, where: str) -> None:
        item = item.strip()
        if not item:
            return
        user, sep, password = item.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"{where}: expected USER:PASS, got {item!r}")
        pairs.append((user, password))

    if auth:
        for item in auth.split(","):
            add(item, "--auth")
    if auth_file:
        path = Path(auth_file)
        if not path.is_file():
            raise ValueError(f"--auth-file: no such file {auth_file}")
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip().startswith("#"):
                continue
            add(line, f"--auth-file {auth_file} line {n}")
        if not pairs:
            raise ValueError(f"--auth-file {auth_file}: no USER:PASS lines")
    return pairs


def default_data_dir() -> Path:
    return Path(os.environ.get("STUDIO_DATA_DIR") or (ROOT / "data"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.print_deps:
        print("\n".join(read_dependencies(args.extras)))
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
