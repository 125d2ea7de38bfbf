"""Helpers shared by the HiFT tests: a hift-only tiny pack."""
from __future__ import annotations

from pathlib import Path

import pytest


_PACKS: dict[str, Path] = {}


@pytest.fixture(scope="session")
def hift_pack(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with only the `hift` graph exported (seed 0), through the shared pipeline.

    Imported by several test modules: pytest then registers one session fixture per module, so the pack is
    cached here to export it once per session."""
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    key = str(tiny_bundle)
    if key not in _PACKS:
        out = tmp_path_factory.mktemp("hift") / "tiny-hift-pack"
        export_pack(tiny_bundle, out, ["hift"], ExportOptions(seed=0, log=lambda m: None),
                    random_init={"size": "tiny", "seed": 0}, log=lambda m: None)
        _PACKS[key] = out
    return _PACKS[key]
