#!/usr/bin/env bash
# Install (if needed, Chromium included) and run every test: unit, integration, app and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --test
exec .venv/bin/python -m pytest "$@"
