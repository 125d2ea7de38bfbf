"""Bundle -> pack: build the upstream modules, export every graph, write the manifest, commit atomically."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from exporters.graphs import resolve
from exporters.model.bundle import QWEN_DIR, Bundle
from exporters.model.facts import chunk_policy, model_config
from exporters.pipeline.graph import ExportOptions, GraphResult, export_graph
from specs.pack import PackWriter, file_record

# Frontend files the runtime needs, copied from the bundle into PACK/frontend/.
FRONTEND_FILES = {
    "campplus": ("campplus.onnx", "speaker embedding model (kaldi fbank 80 @ 16 kHz -> 192-dim x-vector)"),
    "speech_tokenizer": ("{speech_tokenizer}", "speech tokenizer (whisper log-mel 128 @ 16 kHz -> 25 Hz tokens)"),
    "tokenizer_vocab": (f"{QWEN_DIR}/vocab.json", "Qwen2 BPE vocabulary"),
    "tokenizer_merges": (f"{QWEN_DIR}/merges.txt", "Qwen2 BPE merges"),
    "tokenizer_config": (f"{QWEN_DIR}/tokenizer_config.json", "Qwen2 tokenizer config (special tokens)"),
}

SPEECH_TOKENIZER = {
    "cosyvoice1": "speech_tokenizer_v1.onnx",
    "cosyvoice2": "speech_tokenizer_v2.onnx",
    "cosyvoice3": "speech_tokenizer_v3.onnx",
}


@dataclass
class PackResult:
    path: Path
    graphs: list[GraphResult] = field(default_factory=list)
    seconds: float = 0.0


def added_special_tokens(bundle: Bundle) -> list[str]:
    """The special tokens upstream's tokenizer class for this family adds after Qwen2's (upstream's order), read
    from an instance of that class over the bundle's CosyVoice-BlankEN/ (the runtime has no list of its own)."""
    from exporters.model.upstream import require_upstream

    require_upstream()
    from cosyvoice.tokenizer.tokenizer import get_qwen_tokenizer

    tok = get_qwen_tokenizer(str(bundle.qwen_dir), skip_special_tokens=True, version=bundle.family)
    return [str(t) for t in tok.special_tokens["additional_special_tokens"]]


def _copy_files(bundle: Bundle, writer: PackWriter, keys) -> dict:
    out = {}
    for key in keys:
        rel, doc = FRONTEND_FILES[key]
        rel = rel.format(speech_tokenizer=SPEECH_TOKENIZER[bundle.family])
        dst_rel = f"frontend/{Path(rel).name}"
        dst = writer.path(dst_rel)
        shutil.copyfile(bundle.root / rel, dst)  # a copy, not a link: the pack must not share inodes with the bundle
        out[key] = {"file": dst_rel, **file_record(dst), "doc": doc}
    return out


def _copy_frontend_v1(bundle: Bundle, writer: PackWriter, speakers) -> tuple[dict, dict]:
    """CosyVoice 1: CAM++ and the speech tokenizer as shipped, the text tokenizer as tiktoken files, the speakers
    (read_speakers' names and table); returns (frontend records, the modes the pack offers)."""
    from exporters.pipeline.frontend_v1 import speaker_files, text_tokenizer_files

    out = _copy_files(bundle, writer, ("campplus", "speech_tokenizer"))
    out.update(text_tokenizer_files(bundle.yaml_path, writer))
    out.update(speaker_files(*speakers, writer))
    return out, {"speakers": len(speakers[0])}


def _copy_frontend(bundle: Bundle, writer: PackWriter) -> dict:
    out = {}
    rel = "frontend/added_special_tokens.json"
    writer.path(rel).write_text(json.dumps(added_special_tokens(bundle), ensure_ascii=False, indent=0) + "\n")
    out["added_special_tokens"] = {
        "file": rel,
        **file_record(writer.path(rel)),
        "doc": "special tokens upstream's tokenizer adds after Qwen2's, in its order (ids from 151646 on)",
    }
    out.update(_copy_files(bundle, writer, FRONTEND_FILES))
    return out


def export_pack(
    model_dir: Path,
    out: Path,
    graphs: list[str] | None,
    opts: ExportOptions,
    overwrite: bool = False,
    verify_official: bool = False,
    random_init: dict | None = None,
    log: Callable[[str], None] = print,
) -> PackResult:
    import onnx
    import onnxruntime
    import torch

    t0 = time.time()
    bundle = Bundle.open(model_dir)
    if verify_official:
        checked = bundle.verify_official()
        log(f"official size/sha256 verified: {', '.join(checked)}")
    exporters = resolve(graphs, bundle.family)  # before any work: a family without exporters is refused
    with PackWriter(out, overwrite=overwrite) as writer:  # validates --out before the slow work
        log(f"loading {bundle.family} bundle {bundle.root}")
        model = bundle.build(with_llm=True)
        policy = chunk_policy(model)
        speakers = None
        if bundle.family == "cosyvoice1":  # read once, and a malformed spk2info.pt is refused before the graphs
            from exporters.pipeline.frontend_v1 import read_speakers

            speakers = read_speakers(bundle.root, int(model.flow.spk_embed_affine_layer.in_features))
        results: list[GraphResult] = []
        for exp in exporters:
            results.extend(export_graph(exp, model, policy, writer, opts))
        hashes = bundle.hashes()
        config = model_config(model)
        if bundle.family == "cosyvoice1":
            frontend, modes = _copy_frontend_v1(bundle, writer, speakers)
            config["modes"] = {**modes, "instruct": bundle.instruct(hashes)}
        else:
            frontend = _copy_frontend(bundle, writer)
        manifest = {
            "tool": {
                "name": "cosyvoice-pack",
                "version": _tool_version(),
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__,
            },
            "model": {
                "family": bundle.family,
                "source": {"random_init": random_init, "files": hashes},
                "config": config,
            },
            "audio": {
                "sample_rate": model.sample_rate,
                "encoding": "pcm_s16le",
                "channels": 1,
                "chunk_policy": policy.to_dict(),
            },
            "frontend": frontend,
        }
        path = writer.commit(manifest)
    return PackResult(path, results, time.time() - t0)


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("cosyvoice-pack")
    except Exception:
        return "0.0.0+local"
