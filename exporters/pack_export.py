"""Bundle -> pack: build the upstream modules, export every graph, write the manifest, commit atomically."""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from specs.pack import PackWriter, file_record
from exporters.bundle import QWEN_DIR, Bundle
from exporters.export_graph import ExportOptions, GraphResult, export_graph
from exporters.graphs import resolve

# Frontend files the runtime needs, copied from the bundle into PACK/frontend/.
FRONTEND_FILES = {
    "campplus": ("campplus.onnx", "speaker embedding model (kaldi fbank 80 @ 16 kHz -> 192-dim x-vector)"),
    "speech_tokenizer": ("speech_tokenizer_v2.onnx", "speech tokenizer (whisper log-mel 128 @ 16 kHz -> 25 Hz tokens)"),
    "tokenizer_vocab": (f"{QWEN_DIR}/vocab.json", "Qwen2 BPE vocabulary"),
    "tokenizer_merges": (f"{QWEN_DIR}/merges.txt", "Qwen2 BPE merges"),
    "tokenizer_config": (f"{QWEN_DIR}/tokenizer_config.json", "Qwen2 tokenizer config (special tokens)"),
}


@dataclass
class PackResult:
    path: Path
    graphs: list[GraphResult] = field(default_factory=list)
    seconds: float = 0.0


def model_config(model) -> dict:
    """Sizes the runtime and trt/ need, read from the built modules (that is, from the yaml + state dicts)."""
    llm, flow, hift = model.llm, model.flow, model.hift
    cfg: dict = {
        "sample_rate": model.sample_rate,
        "flow": {
            "vocab_size": int(flow.vocab_size),
            "mel_bins": int(flow.output_size),
            "token_mel_ratio": int(flow.token_mel_ratio),
            "pre_lookahead_len": int(flow.pre_lookahead_len),
            "encoder_output_size": int(flow.encoder.output_size()),
            "encoder_static_chunk_size": int(flow.encoder.static_chunk_size),
            "estimator_static_chunk_size": int(flow.decoder.estimator.static_chunk_size),
            "spk_embed_dim": int(flow.spk_embed_affine_layer.in_features),
        },
        "hift": {
            "upsample_rates": [int(m.stride[0]) for m in hift.ups],
            "istft_n_fft": int(hift.istft_params["n_fft"]),
            "istft_hop": int(hift.istft_params["hop_len"]),
            "samples_per_mel_frame": int(hift.f0_upsamp.scale_factor),
            "harmonics": int(hift.nb_harmonics) + 1,
            "audio_limit": float(hift.audio_limit),
        },
        "feat_extractor": model.feat_extractor,
    }
    if llm is not None:
        q = llm.llm.model.config
        cfg["llm"] = {
            "hidden_size": int(q.hidden_size), "num_layers": int(q.num_hidden_layers),
            "num_heads": int(q.num_attention_heads), "num_kv_heads": int(q.num_key_value_heads),
            "head_dim": int(q.hidden_size // q.num_attention_heads), "text_vocab_size": int(q.vocab_size),
            "rope_theta": float(q.rope_theta), "rms_norm_eps": float(q.rms_norm_eps),
            "speech_token_size": int(llm.speech_token_size), "mix_ratio": list(llm.mix_ratio),
            "sampling": model.sampling,
        }
    return cfg


def chunk_policy(model) -> dict:
    """Upstream CosyVoice2Model's streaming schedule, read from an instance of the upstream class."""
    from cosyvoice.cli.model import CosyVoice2Model

    up = CosyVoice2Model(model.llm, model.flow, model.hift)
    spm = int(model.hift.f0_upsamp.scale_factor)
    return {
        "token_hop_len": int(up.token_hop_len),
        "token_max_hop_len": int(up.token_max_hop_len),
        "stream_scale_factor": int(up.stream_scale_factor),
        "pre_lookahead_len": int(model.flow.pre_lookahead_len),
        "token_mel_ratio": int(model.flow.token_mel_ratio),
        "mel_cache_len": int(up.mel_cache_len),
        "source_cache_len": int(up.source_cache_len),
        "crossfade": {"window": "hamming", "length": int(len(up.speech_window))},
        "samples_per_mel_frame": spm,
        # Output chunking of tts-run: fixed 40 ms chunks (the last one may be shorter).
        "output_chunk_samples": int(model.sample_rate // 25),
        "hop_growth": "per request: hop starts at token_hop_len (+ prompt pad on the first chunk) and is "
                      "multiplied by stream_scale_factor up to token_max_hop_len after each chunk; upstream keeps "
                      "the grown hop across requests (its PR #1849), we reset it per request",
    }


def _copy_frontend(bundle: Bundle, writer: PackWriter) -> dict:
    out = {}
    for key, (rel, doc) in FRONTEND_FILES.items():
        src = bundle.root / rel
        dst_rel = f"frontend/{Path(rel).name}"
        dst = writer.path(dst_rel)
        shutil.copyfile(src, dst)  # a copy, not a link: the pack must not share inodes with the bundle
        out[key] = {"file": dst_rel, **file_record(dst), "doc": doc}
    return out


def export_pack(model_dir: Path, out: Path, graphs: list[str] | None, opts: ExportOptions,
                overwrite: bool = False, verify_official: bool = False, random_init: dict | None = None,
                log: Callable[[str], None] = print) -> PackResult:
    import onnx
    import onnxruntime
    import torch

    t0 = time.time()
    bundle = Bundle.open(model_dir)
    if verify_official:
        checked = bundle.verify_official()
        log(f"official size/sha256 verified: {', '.join(checked)}")
    exporters = resolve(graphs)
    with PackWriter(out, overwrite=overwrite) as writer:  # validates --out before the slow work
        log(f"loading {bundle.family} bundle {bundle.root}")
        model = bundle.build(with_llm=True)
        results: list[GraphResult] = []
        for exp in exporters:
            results.extend(export_graph(exp, model, writer, opts, getattr(exp, "fp16_tolerances", None)))
        manifest = {
            "tool": {"name": "cosyvoice-pack", "version": _tool_version(), "torch": torch.__version__,
                     "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
            "model": {"family": bundle.family,
                      "source": {"random_init": random_init, "files": bundle.hashes()},
                      "config": model_config(model)},
            "audio": {"sample_rate": model.sample_rate, "encoding": "pcm_s16le", "channels": 1,
                      "chunk_policy": chunk_policy(model)},
            "frontend": _copy_frontend(bundle, writer),
        }
        path = writer.commit(manifest)
    return PackResult(path, results, time.time() - t0)


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("cosyvoice-pack")
    except Exception:
        return "0.0.0+local"

