"""CosyVoice 1 bundles (CosyVoice-300M / -SFT / -Instruct / -25Hz): detection by yaml name, the random-init bundle
built by upstream's own classes at the notes' sizes, the window chunk policy read from upstream's CosyVoiceModel,
the text tokenizer as tiktoken files (== upstream's whisper / 25 Hz tokenizers), the SFT speakers, instruct
detection and the one-line errors for what does not fit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from specs.errors import ToolError
from tests.conftest import DATA_DIR, needs_shared_data

BIN = Path(sys.executable).parent
V1_FILES = (
    "cosyvoice.yaml",
    "llm.pt",
    "flow.pt",
    "hift.pt",
    "campplus.onnx",
    "speech_tokenizer_v1.onnx",
    "spk2info.pt",
)
TEXTS = (
    "Hello, world! 123 dollars.",
    "<|en|>Hello<|zh|>你好，世界。",
    "收到好友从远方寄来的生日礼物，那份意外的惊喜与深深的祝福让我心中充满了甜蜜的快乐。",
    "Theo 'Crimson', is a fiery, passionate rebel leader.<|endofprompt|>",
)

pytestmark = pytest.mark.oracle


def _shapes(module) -> list[tuple[str, tuple]]:
    return [(k, tuple(v.shape)) for k, v in module.state_dict().items()]


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _rewrite(path: Path, text: str) -> None:
    path.unlink()  # hard-linked copy: never write through to the shared bundle
    path.write_text(text)


class _Writer:  # the part of PackWriter the frontend writers use
    def __init__(self, root: Path):
        self.root, self.data = root, {}

    def path(self, rel: str) -> Path:
        p = self.root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def add_data(self, name, array, doc):
        self.data[name] = array


@needs_shared_data
def test_full_v1_random_init_config_equals_upstream_300m_yaml(tmp_path):
    """`--random-init full --family v1` is the CosyVoice-300M architecture, module for module."""
    import torch

    from exporters.model.config import build_modules
    from exporters.random.config_v1 import render_v1_yaml

    (tmp_path / "ours.yaml").write_text(render_v1_yaml("full"))
    with torch.device("meta"):  # shapes only
        ours = build_modules(tmp_path / "ours.yaml", "cosyvoice1", tmp_path)
        shipped = build_modules(DATA_DIR / "cosyvoice_300m.yaml", "cosyvoice1", tmp_path)
    for part in ("llm", "flow", "hift"):
        assert _shapes(getattr(ours, part)) == _shapes(getattr(shipped, part)), part
    assert ours.feat_extractor == shipped.feat_extractor and ours.feat_extractor["sampling_rate"] == 22050
    assert ours.sampling == shipped.sampling and ours.sample_rate == 22050
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    # full-size counts measured in shared/notes/v1-v3-export.md §0 with upstream HEAD classes
    assert (count(ours.llm), count(ours.flow), count(ours.hift)) == (310_718_465, 104_874_752, 20_460_591)


def test_tiny_v1_bundle_is_the_sft_layout_at_the_notes_sizes(tiny_v1_bundle, tiny_v1_model):
    for rel in (*V1_FILES, "spk2info.pt"):
        assert (tiny_v1_bundle / rel).is_file(), rel
    assert not (tiny_v1_bundle / "CosyVoice-BlankEN").exists()  # v1 tokenizes with whisper's tiktoken
    info = json.loads((tiny_v1_bundle / "random_init.json").read_text())
    assert info["family"] == "cosyvoice1" and info["calibrated"] is False
    m = tiny_v1_model
    names = (type(m.llm).__name__, type(m.flow).__name__, type(m.hift).__name__)
    assert names == ("TransformerLM", "MaskedDiffWithXvec", "HiFTGenerator")
    count = lambda mod: sum(p.numel() for p in mod.parameters())  # noqa: E731
    assert (count(m.llm), count(m.flow), count(m.hift)) == (2_324_673, 651_680, 111_471)  # notes §4
    assert m.sample_rate == 22050 and m.flow.input_frame_rate == 50


def test_v1_chunk_policy_is_upstreams_window_schedule(tiny_v1_model):
    from exporters.model.facts import chunk_policy, model_config
    from specs.chunk_policy import ChunkPolicy

    p = chunk_policy(tiny_v1_model)
    assert p.stream == "window" and p.vocoder == "cached" and p.sample_rate == 22050
    assert (p.token_hop_len, p.token_max_hop_len, p.stream_scale_factor, p.token_overlap_len) == (100, 200, 1, 20)
    assert (p.mel_overlap_len, p.flow_cache_frames, p.mel_cache_len, p.source_cache_len) == (34, 34, 20, 5120)
    assert p.crossfade.length == 10240 and p.output_chunk_samples == 882 and p.token_rate == 50
    # windows of 120 tokens, 100 dropped per call; the final call takes the rest (upstream's loop)
    plan = p.schedule(prompt_tokens=37).plan(437)
    assert [(c.start, c.end, c.finalize) for c in plan] == [
        (0, 120, False), (100, 220, False), (200, 320, False), (300, 420, False), (400, 437, True),
    ]  # fmt: skip
    assert [(c.start, c.end) for c in p.schedule(0).plan(119)] == [(0, 119)]  # too short to stream
    # the emitted sample counts of shared/notes/v1-v3-export.md §2: the first chunk holds back the mel overlap and
    # the source cache, later ones also get the cached mel frames
    first = (p.mel(120) - p.mel_overlap_len) * p.samples_per_mel_frame - p.source_cache_len
    steady = (p.mel_cache_len + p.mel(120) - p.mel_overlap_len) * p.samples_per_mel_frame - p.source_cache_len
    assert (first, steady) == (38_912, 44_032)
    # upstream's float rule; 8960 tokens: int(179.2 * 22050 / 256) = 15434, one below floor(8960 * 441 / 256)
    assert [p.mel(n) for n in (1, 20, 100, 120, 8959, 8960)] == [1, 34, 172, 206, 15433, 15434]
    assert ChunkPolicy.from_dict(p.to_dict(), 22050) == p  # the manifest round trip
    cfg = model_config(tiny_v1_model)
    assert cfg["hift"]["upsample_rates"] == [8, 8] and cfg["hift"]["samples_per_mel_frame"] == 256
    assert cfg["flow"]["input_frame_rate"] == 50 and cfg["llm"]["speech_token_size"] == 4096


@needs_shared_data
def test_v1_25hz_variant_policy_and_tokenizer(tmp_path):
    """The 25 Hz model (upstream's example deltas: flow input_frame_rate 25, text_token_size 60515, upstream's own
    tokenizer): hop 50 + 20 overlap, 68 mel overlap frames but still 34 cached (notes P3)."""
    from exporters.model.config import build_modules
    from exporters.model.facts import chunk_policy
    from exporters.pipeline.frontend_v1 import text_tokenizer_files
    from exporters.random.config_v1 import render_v1_yaml
    from runtime.frontend.text_tiktoken import TiktokenTextTokenizer

    text = render_v1_yaml("tiny").replace("input_frame_rate: 50", "input_frame_rate: 25")
    text = text.replace("text_token_size: 51866", "text_token_size: 60515")
    text = text.replace("!name:whisper.tokenizer.get_tokenizer", "!name:cosyvoice.tokenizer.tokenizer.get_tokenizer")
    (tmp_path / "cosyvoice.yaml").write_text(text)
    m = build_modules(tmp_path / "cosyvoice.yaml", "cosyvoice1", tmp_path)
    p = chunk_policy(m)
    assert (p.token_hop_len, p.token_overlap_len, p.mel_overlap_len, p.flow_cache_frames) == (50, 20, 68, 34)
    assert p.token_rate == 25 and p.mel(50) == 172 and p.tokens(2.0) == 50
    recs = text_tokenizer_files(tmp_path / "cosyvoice.yaml", _Writer(tmp_path / "pack"))
    ours = TiktokenTextTokenizer.from_files(
        tmp_path / "pack" / recs["tiktoken_ranks"]["file"], tmp_path / "pack" / recs["tiktoken_config"]["file"]
    )
    from cosyvoice.tokenizer.tokenizer import get_tokenizer

    up = get_tokenizer(True, num_languages=100, language="en", task="transcribe")
    # 60510 ids: within the 60515-row text embedding of upstream's 25 Hz recipe
    assert len(ours) == up.encoding.n_vocab == 60510 and len(ours) <= m.llm.text_embedding.num_embeddings
    for t in TEXTS:
        assert ours.encode(t) == up.encode(t, allowed_special="all"), t


def test_v1_text_tokenizer_equals_whispers(tiny_v1_bundle, tmp_path):
    import whisper.tokenizer

    from exporters.pipeline.frontend_v1 import text_tokenizer_files
    from runtime.frontend.text_tiktoken import TiktokenTextTokenizer

    recs = text_tokenizer_files(tiny_v1_bundle / "cosyvoice.yaml", _Writer(tmp_path))
    ours = TiktokenTextTokenizer.from_files(
        tmp_path / recs["tiktoken_ranks"]["file"], tmp_path / recs["tiktoken_config"]["file"]
    )
    up = whisper.tokenizer.get_tokenizer(True, num_languages=100, language="en", task="transcribe")
    assert len(ours) == 51866
    for t in TEXTS:
        ids = ours.encode(t)
        assert ids == up.encode(t, allowed_special="all"), t
        assert ours.decode(ids, skip_special_tokens=False) == t
    assert len(ours.encode("<|en|>")) == 1  # language tags are single special ids (cross-lingual usage)


def test_v1_speakers_are_read_from_spk2info(tiny_v1_bundle, tmp_path):
    import torch

    from exporters.pipeline.frontend_v1 import read_speakers

    names, table = read_speakers(tiny_v1_bundle, 192)
    info = torch.load(tiny_v1_bundle / "spk2info.pt", weights_only=True)
    assert names == list(info) and len(names) == 7 and "中文女" in names
    assert np.array_equal(table[names.index("英文男")], info["英文男"]["embedding"].numpy().reshape(-1))
    b = _copy(tiny_v1_bundle, tmp_path / "b")
    (b / "spk2info.pt").unlink()
    assert read_speakers(b, 192)[0] == []  # optional: a base CosyVoice-300M without speakers
    info["bad"] = {"embedding": torch.zeros(1, 80)}
    torch.save(info, b / "spk2info.pt")
    with pytest.raises(ToolError, match=r"spk2info.pt \| speaker 'bad' has shape \[1, 80\]"):
        read_speakers(b, 192)
    torch.save({"x": {"speech_token": torch.zeros(1, 3)}}, b / "spk2info.pt")
    with pytest.raises(ToolError, match=r"speaker 'x' has a dict without 'embedding'"):
        read_speakers(b, 192)
    (b / "spk2info.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ToolError, match=r"spk2info.pt \| cannot be read as a PyTorch state dict"):
        read_speakers(b, 192)


def test_v1_instruct_is_told_by_the_official_llm_hash_or_the_directory_name(tiny_v1_bundle, tmp_path):
    from exporters.model.bundle import INSTRUCT_LLM_SHA256, Bundle

    sft = Bundle.open(tiny_v1_bundle)
    assert not sft.instruct(sft.hashes())
    assert sft.instruct({"llm.pt": {"sha256": next(iter(INSTRUCT_LLM_SHA256))}})
    named = Bundle.open(_copy(tiny_v1_bundle, tmp_path / "CosyVoice-300M-Instruct"))
    assert named.instruct(named.hashes())


def test_v1_yaml_alone_names_the_missing_files(tmp_path):
    (tmp_path / "b").mkdir()
    shutil.copy(DATA_DIR / "cosyvoice_300m.yaml", tmp_path / "b" / "cosyvoice.yaml")
    from exporters.model.bundle import Bundle

    with pytest.raises(
        ToolError, match=r"bundle is missing llm.pt, flow.pt, hift.pt, campplus.onnx, speech_tokenizer_v1"
    ):
        Bundle.open(tmp_path / "b")


def test_v1_yaml_with_v2_weights_is_refused_naming_the_weights(tiny_v1_bundle, tiny_bundle, tmp_path):
    from exporters.model.bundle import Bundle

    b = _copy(tiny_v1_bundle, tmp_path / "b")
    (b / "flow.pt").unlink()
    shutil.copy(tiny_bundle / "flow.pt", b / "flow.pt")  # a CosyVoice2 flow
    with pytest.raises(ToolError, match=r"flow.pt \| does not match the model the yaml declares"):
        Bundle.open(b).build()


def test_v1_yaml_under_a_v2_name_is_refused(tiny_v1_bundle, tmp_path):
    from exporters.model.bundle import Bundle

    b = _copy(tiny_v1_bundle, tmp_path / "b")
    (b / "cosyvoice.yaml").rename(b / "cosyvoice2.yaml")
    with pytest.raises(ToolError, match=r"cosyvoice2.yaml \| declares a cosyvoice1 model"):
        Bundle.open(b)


def test_v1_family_usage(tmp_path):
    r = subprocess.run([str(BIN / "tts-export"), "--out", "o", "--random-init", "tiny", "--family", "v9"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2 and "'v9' (choose from v1, v2, v3)" in " ".join(r.stderr.split()), r.stderr
    assert not list(tmp_path.iterdir())
