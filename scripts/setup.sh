#!/usr/bin/env bash
# Create (or reuse) a virtual environment and install diffuser into it.
#   VENV=path    where the environment lives (default: .venv)
#   EXTRAS=...   optional extras to install (default: envs,dev)
#   PYTHON=...   the interpreter to build it from (default: python3)
# Where that interpreter already has torch (a CUDA build, say), the environment is made with access to
# its packages so that torch is kept; otherwise it is isolated and gets the CPU wheel torch==2.13.0.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
EXTRAS="${EXTRAS:-envs,dev}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" 2>/dev/null; then
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  "$VENV/bin/pip" install --quiet torch==2.13.0
fi
"$VENV/bin/pip" install --quiet -e ".[${EXTRAS}]"
"$VENV/bin/python" -c "import torch, diffuser; print(f'diffuser ready: torch {torch.__version__}, cuda available: {torch.cuda.is_available()}')"
