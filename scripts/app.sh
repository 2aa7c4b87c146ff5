#!/usr/bin/env bash
# Install (if needed) and start Layerscope on the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/python -m streamlit run app.py "$@"
