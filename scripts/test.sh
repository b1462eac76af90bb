#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), lint (ruff, configured in pyproject.toml) and run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ -z "${COMFYUI_PATH:-}" ] && [ -f ../shared/comfyui/main.py ]; then
  export COMFYUI_PATH="$(cd ../shared/comfyui && pwd)"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
