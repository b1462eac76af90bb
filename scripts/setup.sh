#!/usr/bin/env bash
# Create (or update) .venv with everything the command line, the tests and the benchmarks need.
# Safe to re-run. torch: a torch already in .venv (2.5 or newer) is kept; otherwise scripts/install_torch.py
# installs 2.13.0, the CPU-only build where there is no NVIDIA GPU (it says what and how big first).
# When a ComfyUI source tree is found (COMFYUI_PATH, or ../shared/comfyui), its dependencies are
# installed too so the host tests can boot it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$PWD"
PY="${PYTHON:-python3}"
VENV="$ROOT/.venv"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
export PATH="$VENV/bin:$PATH"
python -m pip install --quiet --upgrade pip 2>/dev/null || true

COMFY="${COMFYUI_PATH:-}"
if [ -z "$COMFY" ] && [ -f "$ROOT/../shared/comfyui/main.py" ]; then
  COMFY="$ROOT/../shared/comfyui"
fi
CONSTRAINTS=()
HOST_SETUP=""
if [ -n "$COMFY" ] && [ -f "$COMFY/main.py" ]; then
  for candidate in "$COMFY/../comfyui-host" "$ROOT/../shared/comfyui-host"; do
    if [ -f "$candidate/install-deps.sh" ]; then HOST_SETUP="$candidate"; break; fi
  done
fi
if [ -n "$HOST_SETUP" ]; then
  PYTHON="$VENV/bin/python" bash "$HOST_SETUP/install-deps.sh" "$COMFY"
  CONSTRAINTS=(-c "$HOST_SETUP/constraints.txt")
fi
python scripts/install_torch.py
# the rest must not replace the torch chosen above
python -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > "$VENV/torch-constraint.txt"
python -m pip install --quiet -r requirements-dev.txt "${CONSTRAINTS[@]}" -c "$VENV/torch-constraint.txt"
python -c "import torch, einops, transformers, diffusers, cv2, av, safetensors" \
  || { echo "setup: the environment in $VENV is incomplete" >&2; exit 1; }
echo "setup: ok ($VENV, torch $(python -c 'import torch; print(torch.__version__, "CUDA " + torch.version.cuda
                                                              if torch.version.cuda else "CPU build")'))"
