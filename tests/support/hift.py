"""Fixtures shared by the HiFT tests: a hift-only tiny pack (registered in conftest.py's pytest_plugins)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def hift_pack(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle with only the `hift` graph exported (seed 0), through the shared pipeline."""
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    out = tmp_path_factory.mktemp("hift") / "tiny-hift-pack"
    export_pack(
        tiny_bundle,
        out,
        ["hift"],
        ExportOptions(seed=0, log=lambda m: None),
        random_init={"size": "tiny", "seed": 0},
        log=lambda m: None,
    )
    return out
