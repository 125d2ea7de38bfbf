"""Shared set-up of the full-size scripts in ci/: the upstream oracle on sys.path (before torch) and one
full-size random-init bundle that every check and benchmark reuses (~2.6 GB, made once).

    import full_size  # from a script in ci/: sets sys.path and imports the oracle
    bundle = full_size.full_bundle(work, seed)
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_WORK = REPO / "build" / "full"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
if (SHARED / "oracle" / "oracle_env.py").exists():
    sys.path.insert(0, str(SHARED / "oracle"))
    import oracle_env  # noqa: F401,E402  (before torch)


def full_bundle(work: Path = DEFAULT_WORK, seed: int = 0, family: str = "cosyvoice2") -> Path:
    """The full-size random-init bundle of `family` in `work` (made on first use): bundle-full-SEED (CosyVoice2),
    bundle-full-v3-SEED (Fun-CosyVoice3) and bundle-full-v1-SEED (CosyVoice 1), both upstream's own init."""
    from exporters.random.bundle import make_random_bundle

    tag = {"cosyvoice1": "v1-", "cosyvoice3": "v3-"}.get(family, "")
    bundle = work / f"bundle-full-{tag}{seed}"
    if not bundle.exists():
        print(f"writing full-size random {family} bundle to {bundle}", flush=True)
        make_random_bundle(bundle, "full", seed, family=family)
    return bundle


def full_pack(work: Path = DEFAULT_WORK, family: str = "cosyvoice2") -> Path:
    """Where the full-size scripts expect the exported pack of `family`."""
    return work / {"cosyvoice1": "pack-v1", "cosyvoice3": "pack-v3"}.get(family, "pack")
