#!/usr/bin/env bash
# Creates the dedicated venv of the Triton serving tests (tests/test_triton.py), idempotently:
#   nvidia-pytriton 0.7.0 installed --no-deps (only its bundled tritonserver 2.51 binary + Python backend are
#   used, never its API), tritonclient (gRPC + HTTP) and the runtime's dependencies with numpy < 2: the 2.51
#   backend stub sends zero-byte tensors under numpy 2 (serving-facts note, section 5). onnxruntime is pinned to
#   the main venv's version so the served PCM equals tts-run's bit for bit.
# The venv is $TTS_TRITON_VENV (default ./.venv-triton); the tests find it the same way and skip without it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON311:-python3.11}"  # the stub set of the wheel has 3.8-3.13; the tests use 3.11, as the main venv
VENV="${TTS_TRITON_VENV:-.venv-triton}"
say() { echo "[triton-env] $*"; }
# pip's resolver complains that pytriton's own API dependencies are absent: expected (--no-deps), so filtered
pip_q() {
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$@" 2>&1 \
    | grep -v -e '^WARNING: Location' -e "dependency resolver does not currently" -e '^nvidia-pytriton .* requires' || true
}

[ -x "$VENV/bin/python" ] || { say "creating $VENV with $PY"; "$PY" -m venv "$VENV"; }
ORT="$(.venv/bin/python -c 'import onnxruntime; print(onnxruntime.__version__)' 2>/dev/null || echo 1.32.0)"
say "nvidia-pytriton 0.7.0 (--no-deps: its tritonserver binary and Python backend only)"
pip_q --no-deps nvidia-pytriton==0.7.0
say "tritonclient, numpy < 2, onnxruntime $ORT and the runtime's dependencies"
pip_q "tritonclient[grpc,http]==2.51.0" "numpy<2" "onnxruntime==$ORT" \
  "tokenizers>=0.19" "tiktoken>=0.7" "jsonschema>=4.20" "soundfile>=0.12" "soxr>=0.3" "kaldi-native-fbank>=1.19"
"$VENV/bin/python" - <<'EOF' || { echo "[triton-env] ERROR | installation incomplete" >&2; exit 1; }
import importlib.util, pathlib, numpy, onnxruntime, tritonclient.grpc, tritonclient.http
# found without importing pytriton (installed --no-deps, its own API's dependencies are absent)
root = pathlib.Path(importlib.util.find_spec("pytriton").submodule_search_locations[0]) / "tritonserver"
assert (root / "bin" / "tritonserver").is_file(), f"no tritonserver binary under {root}"
assert int(numpy.__version__.split(".")[0]) < 2, numpy.__version__
print("[triton-env] done: tritonserver", root / "bin" / "tritonserver", "| numpy", numpy.__version__,
      "| onnxruntime", onnxruntime.__version__)
EOF
