"""The architecture's import rule: runtime/ and trt/ never load torch, the upstream package or exporters/
(the runtime installs with numpy + onnxruntime + a tokenizer library), and trt/ loads TensorRT, Polygraphy
and onnx only when it builds or runs a plan, so `--help` and `--dry-run` work without them."""
from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

from tests.conftest import REPO

BANNED = ("torch", "torchaudio", "cosyvoice", "matcha", "transformers", "exporters")
LAZY_IN_TRT = ("tensorrt", "polygraphy", "onnx")


def modules(package: str) -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages([str(REPO / package)], prefix=f"{package}."))


@pytest.mark.parametrize("package, banned", [("runtime", BANNED), ("trt", BANNED + LAZY_IN_TRT)])
def test_importing_every_module_loads_no_banned_package(package, banned):
    mods = modules(package)
    assert len(mods) >= 8
    code = (f"import importlib, sys\nfor m in {mods!r}: importlib.import_module(m)\n"
            f"print(sorted({{n.split('.')[0] for n in sys.modules}} & {set(banned)!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]", f"{package}/ imports {out.stdout.strip()}"
