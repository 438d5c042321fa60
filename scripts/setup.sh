#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install diffuser into it.
#   VENV=path   where the environment lives (default: .venv)
#   EXTRAS=...  optional extras to install (default: envs,dev)
# The venv sees the system's site-packages, so a torch that is already installed (a CUDA build, say)
# is kept; only where no torch is importable is the CPU wheel torch==2.13.0 installed first.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-envs,dev}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv --system-site-packages "$VENV"
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet torch==2.13.0
fi
"$VENV/bin/pip" install --quiet -e ".[${EXTRAS}]"
"$VENV/bin/python" -c "import torch, diffuser; print(f'diffuser ready: torch {torch.__version__}, cuda available: {torch.cuda.is_available()}')"
