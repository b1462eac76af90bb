#!/usr/bin/env bash
# Set up .venv (scripts/setup.sh) and run the main job: python -m lumina_core generate ARGS.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >&2  # what it installs, on stderr
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec .venv/bin/python -m lumina_core generate "$@"
