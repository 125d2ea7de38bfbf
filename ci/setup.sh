#!/usr/bin/env bash
# Creates ./.venv with everything the toolchain and its tests need, from scratch, idempotently:
#   torch 2.13.0 (CPU wheel on disk), the upstream CosyVoice model code (the parity oracle, overlaid to
#   upstream HEAD by ../shared/oracle/install.sh), and this project with its export + test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
SHARED="${COSYVOICE_SHARED:-../shared}"
say() { echo "[setup] $*"; }
quiet_pip() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING: Location' || true; }

[ -x .venv/bin/python ] || { say "creating .venv"; "$PY" -m venv .venv; }
quiet_pip --upgrade pip
say "torch 2.13.0 (CPU)"
quiet_pip torch==2.13.0
if [ -f "$SHARED/oracle/install.sh" ]; then
  say "upstream CosyVoice model code ($SHARED/oracle/install.sh)"
  bash "$SHARED/oracle/install.sh" .venv/bin/python
else
  echo "[setup] ERROR | $SHARED/oracle/install.sh not found. Note: exporting needs the upstream CosyVoice model" \
       "code; place the shared folder beside the repository or set COSYVOICE_SHARED (see RUNBOOK.md)." >&2
  exit 1
fi
say "this project (runtime + export + serve + test extras)"
quiet_pip -e '.[export,serve,test]'
.venv/bin/python -c "import torch, onnx, onnxruntime, cosyvoice, whisper, fastapi, specs, exporters, runtime, trt, serving" \
  || { echo "[setup] ERROR | installation incomplete" >&2; exit 1; }
# The Triton test vehicle (nvidia-pytriton's tritonserver, numpy < 2) lives in its own venv; without it the live
# Triton tests skip with that reason.
say "Triton test venv (ci/triton_env.sh)"
bash ci/triton_env.sh || say "WARNING | the Triton test venv could not be made: tests/test_triton.py live tests skip"
say "done: $(.venv/bin/python -c 'import torch, onnxruntime; print("torch", torch.__version__, "| onnxruntime", onnxruntime.__version__)')"
