# Two commands on a fresh machine: `make demo` (setup + the main job on the embedded default) and `make test`.
PY := .venv/bin/python
BIN := .venv/bin
OUT := build

.PHONY: setup demo test test-fast bench clean

setup: .venv/.setup-done
.venv/.setup-done: pyproject.toml ci/setup.sh
	bash ci/setup.sh
	touch $@

# Tiny random-init CosyVoice2 bundle -> pack -> validate against golden/ -> synthesize a WAV.
demo: setup
	$(BIN)/tts-export --random-init tiny --seed 0 --out $(OUT)/tiny-pack --overwrite
	$(BIN)/tts-validate $(OUT)/tiny-pack --golden golden/tiny
	$(BIN)/tts-run --pack $(OUT)/tiny-pack --text "Hello from the tiny CosyVoice pack." --out $(OUT)/demo.wav

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(OUT) .pytest_cache
