"""Shared fixtures. The upstream oracle (../shared/oracle) is imported before torch in this process."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.hift"]  # fixtures shared by several test modules

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("COSYVOICE_SHARED", REPO.parent / "shared")).resolve()
ORACLE_DIR = SHARED / "oracle"
DATA_DIR = SHARED / "data"

HAVE_ORACLE = False
# TTS_NO_ORACLE=1 (make test-fast): run as if the oracle were absent, so everything that needs it skips.
if (ORACLE_DIR / "oracle_env.py").is_file() and not os.environ.get("TTS_NO_ORACLE"):
    sys.path.insert(0, str(ORACLE_DIR))
    try:
        import cosyvoice  # noqa: F401
        import oracle_env  # noqa: F401  (must precede torch / cosyvoice imports)

        HAVE_ORACLE = True
    except ImportError:
        HAVE_ORACLE = False

needs_oracle = pytest.mark.skipif(
    not HAVE_ORACLE,
    reason="upstream CosyVoice oracle not installed (bash ../shared/oracle/install.sh .venv/bin/python)",
)
needs_shared_data = pytest.mark.skipif(not DATA_DIR.is_dir(), reason=f"{DATA_DIR} not present")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "oracle" in item.keywords and not HAVE_ORACLE:
            item.add_marker(pytest.mark.skip(reason="upstream CosyVoice oracle not installed"))


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A tiny random-init CosyVoice2 bundle (seed 0), made once per test session."""
    if not HAVE_ORACLE:
        pytest.skip("upstream CosyVoice oracle not installed")
    from exporters.random.bundle import make_random_bundle

    return make_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", 0)


@pytest.fixture(scope="session")
def tiny_model(tiny_bundle):
    """The upstream modules of the tiny bundle, weights loaded strictly (shared: do not mutate)."""
    from exporters.model.bundle import Bundle

    return Bundle.open(tiny_bundle).build()


@pytest.fixture(scope="session")
def tiny_v3_bundle(tmp_path_factory) -> Path:
    """A tiny random-init Fun-CosyVoice3 bundle (seed 0, upstream's own init), made once per test session."""
    if not HAVE_ORACLE:
        pytest.skip("upstream CosyVoice oracle not installed")
    from exporters.random.bundle import make_random_bundle

    return make_random_bundle(tmp_path_factory.mktemp("bundle-v3") / "tiny-v3", "tiny", 0, family="cosyvoice3")


@pytest.fixture(scope="session")
def tiny_v3_model(tiny_v3_bundle):
    """The upstream modules of the tiny v3 bundle, weights loaded strictly (shared: do not mutate)."""
    from exporters.model.bundle import Bundle

    return Bundle.open(tiny_v3_bundle).build()


@pytest.fixture(scope="session")
def tiny_v1_bundle(tmp_path_factory) -> Path:
    """A tiny random-init CosyVoice 1 bundle (SFT layout with spk2info.pt; seed 0, upstream's own init)."""
    if not HAVE_ORACLE:
        pytest.skip("upstream CosyVoice oracle not installed")
    from exporters.random.bundle import make_random_bundle

    return make_random_bundle(tmp_path_factory.mktemp("bundle-v1") / "tiny-v1", "tiny", 0, family="cosyvoice1")


@pytest.fixture(scope="session")
def tiny_v1_model(tiny_v1_bundle):
    """The upstream modules of the tiny v1 bundle, weights loaded strictly (shared: do not mutate)."""
    from exporters.model.bundle import Bundle

    return Bundle.open(tiny_v1_bundle).build()


def export_tiny(bundle: Path, out: Path, random_init: dict) -> Path:
    """A tiny bundle exported with every graph its family registers (seed 0), quietly."""
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack

    export_pack(bundle, out, None, ExportOptions(seed=0, log=lambda m: None), random_init=random_init,
                log=lambda m: None)  # fmt: skip
    return out


@pytest.fixture(scope="session")
def tiny_v3_pack(tiny_v3_bundle, tmp_path_factory) -> Path:
    """The tiny v3 bundle exported with every registered CosyVoice3 graph (seed 0)."""
    out = tmp_path_factory.mktemp("pack-v3") / "tiny-v3-pack"
    return export_tiny(tiny_v3_bundle, out, {"size": "tiny", "seed": 0, "family": "cosyvoice3"})


@pytest.fixture(scope="session")
def tiny_v1_pack(tiny_v1_bundle, tmp_path_factory) -> Path:
    """The tiny v1 bundle exported with every registered CosyVoice 1 graph (seed 0)."""
    out = tmp_path_factory.mktemp("pack-v1") / "tiny-v1-pack"
    return export_tiny(tiny_v1_bundle, out, {"size": "tiny", "seed": 0, "family": "cosyvoice1"})


@pytest.fixture(scope="session")
def tiny_pack(tiny_bundle, tmp_path_factory) -> Path:
    """The tiny bundle exported with every registered graph (seed 0)."""
    return export_tiny(tiny_bundle, tmp_path_factory.mktemp("pack") / "tiny-pack", {"size": "tiny", "seed": 0})
