"""Conformance against the committed golden/tiny (CosyVoice2), golden/tiny-v1 (CosyVoice 1) and golden/tiny-v3
(Fun-CosyVoice3): a tiny pack
exported from scratch reproduces the golden vectors (upstream PyTorch outputs) and the golden streaming run."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from tests.conftest import REPO

GOLDEN = REPO / "golden" / "tiny"
GOLDEN_V3 = REPO / "golden" / "tiny-v3"
GOLDEN_V1 = REPO / "golden" / "tiny-v1"


def make_golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", REPO / "ci" / "make_golden.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_fresh_tiny_pack_reproduces_golden_vectors(tiny_pack):
    from conformance.validate import ValidationOptions, validate_pack

    lines = []
    result = validate_pack(tiny_pack, ValidationOptions(golden=GOLDEN, log=lines.append))
    assert result.report.passed, "\n".join(lines)
    assert sorted(result.golden_checked) == sorted(p.name[: -len(".vectors.npz")] for p in GOLDEN.glob("*.vectors.npz"))
    assert {"flow.encoder", "flow.decoder.estimator", "hift", "llm"} <= set(result.golden_checked)
    golden_lines = [ln for ln in lines if ln.startswith(("PASSED | golden:", "FAILED | golden:"))]
    assert golden_lines and all(ln.startswith("PASSED") for ln in golden_lines)


def test_golden_specs_equal_the_exported_specs(tiny_pack):
    """The golden vectors belong to these I/O specs: a changed graph interface must regenerate golden/."""
    for spec_file in GOLDEN.glob("*.io.json"):
        assert json.loads(spec_file.read_text()) == json.loads((tiny_pack / spec_file.name).read_text()), spec_file.name


def check_golden_run(pack, golden_dir):
    golden = json.loads((golden_dir / "run.json").read_text())
    mg = make_golden_module()
    got = mg.run_stats(pack, golden["text"], golden["seed"])
    assert got["speech_tokens"] == golden["speech_tokens"]
    for key in ("chunks", "total_samples", "flow_calls"):
        assert got[key] == golden[key], key
    # PCM may differ in the last bit on another CPU (ORT picks kernels by ISA): stats within 1e-3 relative,
    # and bit-exact chunks wherever the ISA is the one the golden run was made on.
    assert got["rms"] == pytest.approx(golden["rms"], rel=1e-3)
    assert got["peak"] == pytest.approx(golden["peak"], abs=2e-3)
    assert got["silence_ratio"] == pytest.approx(golden["silence_ratio"], abs=1e-2)
    if got["cpu_isa"] == golden["cpu_isa"]:
        assert got["chunk_sha256"] == golden["chunk_sha256"]


def test_golden_streaming_run(tiny_pack):
    check_golden_run(tiny_pack, GOLDEN)


def test_v3_fresh_pack_reproduces_golden_vectors_and_run(tiny_v3_pack):
    from conformance.validate import ValidationOptions, validate_pack

    lines = []
    result = validate_pack(tiny_v3_pack, ValidationOptions(golden=GOLDEN_V3, log=lines.append))
    assert result.report.passed, "\n".join(lines)
    assert sorted(result.golden_checked) == ["flow.decoder.estimator", "flow.prep", "llm"]
    for spec_file in GOLDEN_V3.glob("*.io.json"):
        assert json.loads(spec_file.read_text()) == json.loads((tiny_v3_pack / spec_file.name).read_text())
    info = json.loads((GOLDEN_V3 / "golden.json").read_text())
    assert info["bundle"]["family"] == "cosyvoice3" and info["graphs_without_vectors"] == ["hift", "hift.final"]
    check_golden_run(tiny_v3_pack, GOLDEN_V3)


def test_v1_fresh_pack_reproduces_golden_vectors_and_run(tiny_v1_pack):
    from conformance.validate import ValidationOptions, validate_pack

    lines = []
    result = validate_pack(tiny_v1_pack, ValidationOptions(golden=GOLDEN_V1, log=lines.append))
    assert result.report.passed, "\n".join(lines)
    assert sorted(result.golden_checked) == [
        "flow.decoder.estimator",
        "flow.encoder",
        "hift",
        "llm",
        "llm.text_encoder",
    ]
    for spec_file in GOLDEN_V1.glob("*.io.json"):
        assert json.loads(spec_file.read_text()) == json.loads((tiny_v1_pack / spec_file.name).read_text())
    info = json.loads((GOLDEN_V1 / "golden.json").read_text())
    assert info["bundle"]["family"] == "cosyvoice1"
    manifest = json.loads((tiny_v1_pack / "manifest.json").read_text())
    assert manifest["audio"]["sample_rate"] == 22050 and manifest["audio"]["chunk_policy"]["stream"] == "window"
    check_golden_run(tiny_v1_pack, GOLDEN_V1)


def test_golden_files_are_small():
    sizes = {p.name: p.stat().st_size for p in GOLDEN.iterdir()}
    assert sum(sizes.values()) < 5_000_000, sizes
    assert sum(p.stat().st_size for p in GOLDEN_V3.iterdir()) < 2_000_000
    assert sum(p.stat().st_size for p in GOLDEN_V1.iterdir()) < 5_000_000
    assert np.load(GOLDEN / "hift.vectors.npz")["first_chunk/in/cache_source"].shape[2] == 0  # first chunk: empty cache
