"""runtime/frontend depends only on numpy, onnxruntime, tokenizers, soundfile, soxr, kaldi-native-fbank,
the standard library, specs/, backends/ and runtime/ (never torch, cosyvoice, transformers, librosa or exporters/)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATA_DIR, REPO, needs_shared_data

FRONTEND = REPO / "runtime" / "frontend"
ALLOWED = {
    "numpy",
    "onnxruntime",
    "tokenizers",
    "tiktoken",  # CosyVoice 1's text encoding
    "soundfile",
    "soxr",
    "kaldi_native_fbank",
    "specs",
    "backends",
    "runtime",
}
BANNED = (
    "torch",
    "torchaudio",
    "cosyvoice",
    "matcha",
    "transformers",
    "librosa",
    "whisper",
    "exporters",
    "inflect",
    "regex",
    "scipy",
)


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_static_imports_are_allowed():
    for path in sorted(FRONTEND.glob("*.py")):
        extra = {m for m in imported_roots(path) - ALLOWED if m not in sys.stdlib_module_names and m != "__future__"}
        assert not extra, f"{path.relative_to(REPO)} imports {sorted(extra)}"


@needs_shared_data
def test_running_the_frontend_loads_no_heavy_module(tmp_path):
    script = f"""
import sys
import numpy as np, soundfile as sf
from runtime.frontend import audio, dsp, features, normalize, number_words, prompt, text
x = (0.1 * np.sin(np.arange(24000) * 0.05)).astype(np.float32)
sf.write({str(tmp_path / "p.wav")!r}, x, 24000)
a = audio.load_prompt_wav({str(tmp_path / "p.wav")!r})
features.campplus_fbank(a.at(16000)); features.whisper_log_mel(a.at(16000))
features.prompt_mel(a.samples, features.MelParams(1920, 80, 24000, 480, 1920, 0, 8000))
vocab = {str(DATA_DIR / "qwen2_vocab.json")!r}
tok = text.TextTokenizer.from_files(vocab, vocab.replace("vocab.json", "merges.txt"))
normalize.normalize_text("Hello 42 world. 你好。", tok.encode)
bad = sorted(m for m in sys.modules if m.split(".")[0] in {BANNED!r})
assert not bad, bad
print("clean")
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "clean" in done.stdout, done.stderr[-2000:]
