# Two commands on a fresh machine: `make demo` (setup + the main job on the embedded default) and `make test`.
PY := .venv/bin/python
BIN := .venv/bin
OUT := build
LOCK := flock /tmp/fullsize.lock

.PHONY: setup demo lint test test-fast bench clean

setup: .venv/.setup-done
.venv/.setup-done: pyproject.toml ci/setup.sh
	bash ci/setup.sh
	touch $@

# Tiny random-init CosyVoice2, Fun-CosyVoice3 and CosyVoice 1 bundles -> packs -> validate against golden/ -> WAVs.
demo: setup
	$(BIN)/tts-export --random-init tiny --seed 0 --out $(OUT)/tiny-pack --overwrite
	$(BIN)/tts-validate $(OUT)/tiny-pack --golden golden/tiny
	$(BIN)/tts-run --pack $(OUT)/tiny-pack --text "Hello from the tiny CosyVoice pack." --out $(OUT)/demo.wav
	$(BIN)/tts-export --random-init tiny --family v3 --seed 0 --out $(OUT)/tiny-v3-pack --overwrite
	$(BIN)/tts-validate $(OUT)/tiny-v3-pack --golden golden/tiny-v3
	$(BIN)/tts-run --pack $(OUT)/tiny-v3-pack --text "Hello from the tiny CosyVoice3 pack." --out $(OUT)/demo-v3.wav --stream
	$(BIN)/tts-export --random-init tiny --family v1 --seed 0 --out $(OUT)/tiny-v1-pack --overwrite
	$(BIN)/tts-validate $(OUT)/tiny-v1-pack --golden golden/tiny-v1
	$(BIN)/tts-run --pack $(OUT)/tiny-v1-pack --speaker 英文女 --text "Hello from the tiny CosyVoice one pack." --out $(OUT)/demo-v1.wav --stream

# ruff (lint + format check) on everything, mypy on specs/, backends/ and runtime/ (pyproject.toml).
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check specs backends runtime trt conformance
	$(BIN)/mypy

# What CI runs after lint: the whole suite (the oracle-backed parity tests included).
test: setup lint
	$(PY) -m pytest -q

# The suite without the upstream oracle (no torch export, no tiny pack): specs, schemas, trt planning on
# synthetic packs, frontend, CLIs' usage errors. Under a minute.
test-fast: setup
	TTS_NO_ORACLE=1 $(PY) -m pytest -q

# Full-size parity checks and benchmarks vs upstream PyTorch (several GB each, tens of minutes; one at a time
# on shared machines). Ratios come from the same run; see RUNBOOK.md "Full-size checks and benchmarks".
bench: setup
	$(LOCK) $(PY) ci/bench_e2e.py
	$(LOCK) $(PY) ci/bench_llm.py
	$(LOCK) $(PY) ci/bench_flow.py
	$(LOCK) $(PY) ci/bench_hift.py

clean:
	rm -rf $(OUT) .pytest_cache
