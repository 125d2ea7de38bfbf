"""Access to the upstream CosyVoice model code (the parity oracle), imported lazily.

The upstream package `cosyvoice` (PyPI `cosyvoice-minicpmo==0.1.0` overlaid to upstream HEAD by
`../shared/oracle/install.sh`, see RUNBOOK.md) imports torchaudio at module level, but torchaudio has no
build for torch 2.13 and the inference classes we build (llm, flow, hift) never call it. If torchaudio is
not importable we register a placeholder package whose attributes raise a clear error when used. When the
oracle's `oracle_env` was imported first (tests), its fuller placeholder is used instead.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

from specs.errors import ToolError

_PLACEHOLDER_MODULES = (
    "torchaudio",
    "torchaudio.compliance",
    "torchaudio.compliance.kaldi",
    "torchaudio.functional",
    "torchaudio.transforms",
)


def _placeholder(name: str) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    mod.__path__ = []

    def __getattr__(attr):  # noqa: N807 - module-level __getattr__
        if attr.startswith("__"):
            raise AttributeError(attr)
        raise RuntimeError(
            f"{name}.{attr} is not available: torchaudio is not installed (no build for this "
            "torch); the export path does not need it"
        )

    mod.__getattr__ = __getattr__
    return mod


def _ensure_torchaudio_importable() -> None:
    if "torchaudio" in sys.modules or importlib.util.find_spec("torchaudio") is not None:
        return
    for name in _PLACEHOLDER_MODULES:
        sys.modules[name] = _placeholder(name)
    sys.modules["torchaudio"].compliance = sys.modules["torchaudio.compliance"]
    sys.modules["torchaudio.compliance"].kaldi = sys.modules["torchaudio.compliance.kaldi"]


def _ensure_matcha_utils_importable() -> None:
    """`matcha/utils/__init__.py` imports lightning (training only). Without lightning, register
    `matcha.utils` as a bare package over its folder so `matcha.utils.audio` still imports."""
    if "matcha.utils" in sys.modules or importlib.util.find_spec("lightning") is not None:
        return
    spec = importlib.util.find_spec("matcha")
    if spec is None or not spec.submodule_search_locations:
        return
    import os

    mu = types.ModuleType("matcha.utils")
    mu.__spec__ = importlib.machinery.ModuleSpec("matcha.utils", None, is_package=True)
    mu.__path__ = [os.path.join(list(spec.submodule_search_locations)[0], "utils")]
    sys.modules["matcha.utils"] = mu


def require_upstream() -> None:
    """Make `import cosyvoice...` work, or raise a ToolError saying how to install it."""
    if importlib.util.find_spec("cosyvoice") is None:
        raise ToolError(
            "upstream CosyVoice code",
            "the Python package 'cosyvoice' is not installed",
            "run `make setup` (ci/setup.sh), or `bash ../shared/oracle/install.sh .venv/bin/python`; "
            "see RUNBOOK.md 'Installing the upstream model code'",
        )
    _ensure_torchaudio_importable()
    _ensure_matcha_utils_importable()
