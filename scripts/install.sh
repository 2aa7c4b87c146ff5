#!/usr/bin/env bash
# Create .venv and install everything Layerscope needs. Quick when nothing changed (a stamp file
# records the hash of the requirement files). Usage: bash scripts/install.sh [--test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.layerscope-installed
want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q torch==2.13.0
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
  # core/ and ui/ importable from anywhere (tests, bench, AppTest scripts) without sys.path edits
  .venv/bin/python -m pip install -q --no-deps --no-build-isolation -e . 2>.venv/editable.log \
    || { cat .venv/editable.log; exit 1; }
  echo "$want" >"$stamp"
fi
if [ "${1:-}" = "--test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium for the end-to-end test…"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
