"""Fun-CosyVoice3 bundles: the official layout, detection by yaml name, strict loading, official hashes, and the
random-init v3 bundle (`tts-export --random-init tiny|full --family v3`) built by upstream's own classes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specs.errors import ToolError
from tests.conftest import DATA_DIR, needs_shared_data

BIN = Path(sys.executable).parent
V3_FILES = ("cosyvoice3.yaml", "llm.pt", "flow.pt", "hift.pt", "campplus.onnx", "speech_tokenizer_v3.onnx")


def _shapes(module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


@needs_shared_data
@pytest.mark.oracle
def test_full_v3_random_init_config_equals_shipped_yaml(tmp_path):
    """`--random-init full --family v3` must be the real Fun-CosyVoice3-0.5B-2512 architecture, module for module."""
    import torch

    from exporters.model.config import build_modules
    from exporters.random.config import qwen_config
    from exporters.random.config_v3 import render_v3_yaml

    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "config.json").write_text(json.dumps(qwen_config("full", "cosyvoice3")))
    (tmp_path / "ours.yaml").write_text(render_v3_yaml("full"))
    with torch.device("meta"):  # shapes only
        ours = build_modules(tmp_path / "ours.yaml", "cosyvoice3", tmp_path / "q")
        shipped = build_modules(DATA_DIR / "cosyvoice3.yaml", "cosyvoice3", tmp_path / "q")
    for part in ("llm", "flow", "hift"):
        assert _shapes(getattr(ours, part)) == _shapes(getattr(shipped, part)), part
    assert ours.feat_extractor == shipped.feat_extractor and ours.feat_extractor["fmax"] is None
    assert ours.sampling == shipped.sampling


@pytest.mark.oracle
def test_tiny_v3_bundle_is_the_official_layout_at_the_notes_sizes(tiny_v3_bundle, tiny_v3_model):
    for rel in V3_FILES:
        assert (tiny_v3_bundle / rel).is_file(), rel
    info = json.loads((tiny_v3_bundle / "random_init.json").read_text())
    assert info["family"] == "cosyvoice3" and info["calibrated"] is False
    m = tiny_v3_model
    assert (type(m.llm).__name__, type(m.flow).__name__, type(m.hift).__name__) == (
        "CosyVoice3LM",
        "CausalMaskedDiffWithDiT",
        "CausalHiFTGenerator",
    )
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    # the tiny v3 config of shared/notes/v1-v3-export.md §4, measured there with upstream HEAD classes
    assert (count(m.llm), count(m.flow), count(m.hift)) == (10_663_616, 763_328, 114_627)
    assert m.sample_rate == 24000 and m.llm.llm_decoder.bias is None and m.llm.speech_embedding.num_embeddings == 6761


@pytest.mark.oracle
def test_v3_chunk_policy_is_upstreams_recompute_schedule(tiny_v3_model):
    from exporters.model.facts import chunk_policy, model_config

    p = chunk_policy(tiny_v3_model)
    assert (p.token_hop_len, p.token_max_hop_len, p.stream_scale_factor, p.pre_lookahead_len) == (25, 100, 2, 3)
    assert p.vocoder == "recompute" and p.mel_cache_len == p.source_cache_len == p.crossfade.length == 0
    assert p.samples_per_mel_frame == 480 and p.hops(0, 6) == [25, 50, 100, 100, 100, 100]
    cfg = model_config(tiny_v3_model)
    assert cfg["hift"]["upsample_rates"] == [8, 5, 3] and cfg["hift"]["harmonics"] == 9
    assert "encoder_output_size" not in cfg["flow"] and cfg["flow"]["vocab_size"] == 6561


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


@needs_shared_data
@pytest.mark.oracle
def test_v3_bundle_with_a_v2_yaml_is_refused_naming_the_file(tiny_v3_bundle, tmp_path):
    from exporters.model.bundle import Bundle

    b = _copy(tiny_v3_bundle, tmp_path / "b")
    (b / "cosyvoice3.yaml").unlink()
    (b / "cosyvoice3.yaml").write_bytes((DATA_DIR / "cosyvoice2.yaml").read_bytes())
    with pytest.raises(ToolError, match=r"cosyvoice3.yaml \| declares a cosyvoice2 model"):
        Bundle.open(b)


@pytest.mark.oracle
def test_v3_bundle_without_its_speech_tokenizer_is_refused(tiny_v3_bundle, tmp_path):
    from exporters.model.bundle import Bundle

    b = _copy(tiny_v3_bundle, tmp_path / "b")
    (b / "speech_tokenizer_v3.onnx").unlink()
    with pytest.raises(ToolError, match="bundle is missing speech_tokenizer_v3.onnx"):
        Bundle.open(b)


@pytest.mark.oracle
def test_v3_yaml_and_weights_that_disagree_are_refused_naming_the_weights(tiny_v3_bundle, tmp_path):
    from exporters.model.bundle import Bundle

    b = _copy(tiny_v3_bundle, tmp_path / "b")
    text = (b / "cosyvoice3.yaml").read_text().replace("speech_token_size: 6561", "speech_token_size: 6000")
    (b / "cosyvoice3.yaml").unlink()
    (b / "cosyvoice3.yaml").write_text(text)
    with pytest.raises(ToolError, match=r"llm.pt \| tensor .* has shape \[6761, 64\]"):
        Bundle.open(b).build()


@pytest.mark.oracle
def test_verify_official_knows_the_v3_files(tiny_v3_bundle):
    from exporters.model.bundle import OFFICIAL, Bundle

    assert set(V3_FILES) <= set(OFFICIAL["cosyvoice3"])
    with pytest.raises(ToolError, match="the official .* is .* bytes"):
        Bundle.open(tiny_v3_bundle).verify_official()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--random-init", "tiny", "--family", "v4"], "'v4' (choose from v1, v2, v3)"),
        (["--model-dir", "m", "--family", "v3"], "--family needs --random-init"),
    ],
)
def test_family_usage_errors_exit_2(tmp_path, args, expect):
    r = subprocess.run([str(BIN / "tts-export"), "--out", "o", *args], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and expect in " ".join(r.stderr.split()), r.stderr
    assert not list(tmp_path.iterdir())
