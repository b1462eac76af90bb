#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh), lint (ruff, configured in pyproject.toml) and run the whole test suite.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ -z "${COMFYUI_PATH:-}" ] && [ -f ../shared/comfyui/main.py ]; then
  export COMFYUI_PATH="$(cd ../shared/comfyui && pwd)"
fi
# The newest ComfyUI frontend, beside the pinned one (the comfyui-frontend-package in .venv), for the browser tests
# of both: its static files in .venv/frontends/VERSION (the version: NEWEST_FRONTEND in tests/comfy_host.py). Only
# the tests fetch it (about 120 MB once), so the main command does not.
FRONTEND="$(sed -n 's/^NEWEST_FRONTEND = "\([^"]*\)".*/\1/p' tests/comfy_host.py)"
if [ ! -f ".venv/frontends/$FRONTEND/index.html" ]; then
  WHEELS="$(mktemp -d)"
  if .venv/bin/python -m pip download --quiet --no-deps -d "$WHEELS" "comfyui-frontend-package==$FRONTEND"; then
    .venv/bin/python -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$WHEELS"/*.whl "$WHEELS/x"
    mkdir -p ".venv/frontends"
    rm -rf ".venv/frontends/$FRONTEND"
    mv "$WHEELS/x/comfyui_frontend_package/static" ".venv/frontends/$FRONTEND"
  else
    echo "test: could not download comfyui-frontend-package $FRONTEND (offline?); the browser tests skip it" >&2
  fi
  rm -rf "$WHEELS"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONDONTWRITEBYTECODE=1
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
