#!/usr/bin/env bash
# Finetune Studio launcher (AUTOMATIC1111 style).
#   ./launch.sh [flags]          create .venv on first run, install, then serve the studio
#   ./launch.sh --tests [args]   do all the set-up a fresh machine needs, then run pytest [args]
#   ./launch.sh --help           every flag
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

PYTHON_BIN="${PYTHON:-python3}"
VENV_DIR="${VENV_DIR:-.venv}"
SKIP_INSTALL=0
RUN_TESTS=0
REINSTALL=0
ARGS=()
for a in "$@"; do
  if [ "$RUN_TESTS" = 1 ]; then ARGS+=("$a"); continue; fi
  case "$a" in
    -h|--help)
      # The flags live in one argparse table (app/cli.py); it needs only the standard library.
      exec "$PYTHON_BIN" -m app.cli --help ;;
    --skip-install) SKIP_INSTALL=1 ;;
    --reinstall) REINSTALL=1 ;;
    --tests) RUN_TESTS=1 ;;
    *) ARGS+=("$a") ;;
  esac
done

say() { printf '[launch] %s\n' "$*"; }

# ---------------------------------------------------------------- environment
if [ ! -x "$VENV_DIR/bin/python" ]; then
  say "creating virtual environment in $VENV_DIR (first run)"
  "$PYTHON_BIN" -m venv "$VENV_DIR"
fi
PY="$VENV_DIR/bin/python"

want_extras=""
[ "$RUN_TESTS" = 1 ] && want_extras="test"
stamp_file="$VENV_DIR/.studio-install-stamp"
stamp="$(cat pyproject.toml launch.sh | sha256sum | cut -c1-16)-${want_extras:-base}"

needs_install() {
  [ "$REINSTALL" = 1 ] && return 0
  [ -f "$stamp_file" ] || return 0
  # a stamp made with the test extras also covers a plain start
  grep -qx "$stamp" "$stamp_file" && return 1
  [ -z "$want_extras" ] && grep -qx "${stamp%-base}-test" "$stamp_file" && return 1
  return 0
}

if [ "$SKIP_INSTALL" = 0 ] && needs_install; then
  say "installing packages (first run or pyproject.toml changed); this takes a few minutes"
  "$PY" -m pip install --quiet --upgrade pip
  # torch first and pinned, so that no multi-GB CUDA build is pulled on a CPU machine.
  TORCH_SPEC="$("$PYTHON_BIN" -m app.cli --print-deps | grep -E '^torch[=<>~ ]' | head -n1)"
  "$PY" -m pip install --quiet "${TORCH_SPEC:-torch==2.13.0}"
  mapfile -t DEPS < <("$PYTHON_BIN" -m app.cli --print-deps ${want_extras:+--extras "$want_extras"})
  "$PY" -m pip install --quiet "${DEPS[@]}"
  echo "$stamp" > "$stamp_file"
  say "packages installed"
fi

# Everything the studio and its jobs write (data dir, jobs.sqlite, datasets, logs, outputs) is for this user only.
umask 077
export GRADIO_ANALYTICS_ENABLED=False
export HF_HUB_DISABLE_TELEMETRY=1
export DO_NOT_TRACK=1
# The UI process stays at one torch thread; every job gets its own budget (see app/jobs).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

if [ "$RUN_TESTS" = 1 ]; then
  # Browser tests drive Debian's Chromium (Playwright cannot download its own browser here).
  # Fonts with CJK glyphs and emoji so the 中文 labels and status marks render in screenshots.
  if ! command -v chromium >/dev/null 2>&1 || ! fc-list 2>/dev/null | grep -qi "noto.*cjk"; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      say "installing Debian chromium and fonts for the browser tests"
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
          chromium fonts-noto-cjk fonts-noto-color-emoji >/dev/null) \
        || say "could not install chromium: browser tests will be skipped"
    else
      say "chromium is missing and cannot be installed here (not root): browser tests will be skipped"
    fi
  fi
  # on CI, the 25 slowest tests close the output: the suite's time budget is watched from there
  [ "${CI:-}" = "true" ] && ARGS=(--durations=25 "${ARGS[@]}")
  say "running tests: pytest ${ARGS[*]:-}"
  exec "$PY" -m pytest "${ARGS[@]}"
fi

exec "$PY" -m app "${ARGS[@]}"
