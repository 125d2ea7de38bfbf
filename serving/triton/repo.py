"""The generator: pack -> Triton model repository (`write_triton_repo`, called by `tts-export --triton-repo`).

Every model is a Python-backend model whose `model.py` is a small shim: it puts the toolchain's source tree (the
`repo_path` parameter) on sys.path and hands over to `serving.triton.models.<module>`, which runs the pack's
graphs through the project's runtime on ONNX Runtime. The pack is referenced by path and pinned by its manifest
digest; the models refuse to load if the pack changed since generation.

Consistency rules, checked here (a ToolError otherwise):
- a component model's tensor that carries a graph tensor (its `io_map` parameter: config name -> GRAPH:TENSOR)
  takes that tensor's dtype, rank and dims from the pack's NAME.io.json, named dynamic axes written as -1;
- the orchestrator's worst case (max_prompt_seconds of prompt, max_tokens speech tokens per sentence,
  max_text_tokens of LLM text) fits every graph's declared dim range, its TensorRT profiles and the flow noise;
- the orchestrator records the manifest's chunk policy, and refuses at load a pack whose policy differs.
Same pack path, options and toolchain path give the same bytes (no timestamps, sorted JSON).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from specs.errors import ToolError
from specs.io_spec import GraphSpec
from specs.pack import DIGEST_FIELD, Pack

REPO_ROOT = Path(__file__).resolve().parents[2]  # the toolchain's source tree, imported by the models
MARKER = "tts_triton_repo.json"  # written at the repository root; Triton loads only directories
FAMILIES = ("cosyvoice2",)
ENCODER, ESTIMATOR, HIFT, LLM = "flow.encoder", "flow.decoder.estimator", "hift", "llm"
TRITON_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int16": "TYPE_INT16",
    "uint64": "TYPE_UINT64",
    "bool": "TYPE_BOOL",
    "string": "TYPE_STRING",
}
# runtime.frontend.audio.MAX_PROMPT_SECONDS (tests check they agree; this module imports specs only, so that
# exporters/cli.py can call it within the import rules)
MAX_PROMPT_SECONDS = 30.0
MAX_SENTENCE_SECONDS = 30.0  # default speech per sentence: upstream's BLS max_tokens 750 = 30 s at 25 Hz
MAX_TEXT_TOKENS = 256  # default LLM text ids (prompt transcript + one sentence) per call


@dataclass(frozen=True)
class T:
    """A config tensor: own dtype/dims, or `graph` = 'GRAPH:TENSOR' whose io.json gives them."""

    name: str
    dtype: str = ""
    dims: tuple = ()
    optional: bool = False
    graph: str = ""


@dataclass
class ModelDef:
    name: str
    module: str  # serving.triton.models.<module>
    inputs: list[T]
    outputs: list[T]
    parameters: dict[str, str] = field(default_factory=dict)
    decoupled: bool = False
    count: int = 1
    doc: str = ""


@dataclass(frozen=True)
class Limits:
    """What one orchestrator request may need at most (the worst case checked against the pack)."""

    max_prompt_tokens: int
    max_tokens: int
    max_text_tokens: int


def write_triton_repo(
    pack_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    llm: str = "local",
    *,
    max_tokens: int | None = None,
    max_text_tokens: int = MAX_TEXT_TOKENS,
    max_prompt_seconds: float = MAX_PROMPT_SECONDS,
    token2wav_instances: int = 1,
    max_streams: int = 8,
    overwrite: bool = False,
) -> Path:
    """Write the Triton model repository of the pack at `pack_dir` into `out_dir` (a new directory, or with
    `overwrite` one this function wrote before); returns its path. `llm`: 'local' (the pack's LLM graph as the
    repository's `llm` model) or 'openai=URL' (an OpenAI-compatible /v1/chat/completions endpoint)."""
    pack_dir = Path(pack_dir).absolute()
    pack = Pack.open(pack_dir)
    if pack.family not in FAMILIES:
        raise ToolError(
            pack_dir,
            f"is a {pack.family} pack: this version writes Triton repositories for {', '.join(FAMILIES)} packs",
            "a CosyVoice2 pack (CosyVoice 1 and 3 packs run with tts-run / tts-serve for now)",
        )
    llm_mode, llm_url = parse_llm(llm)
    needed = [ENCODER, ESTIMATOR, HIFT] + ([LLM] if llm_mode == "local" else [])
    missing = [g for g in needed if not pack.has_graph(g)]
    if missing:
        raise ToolError(pack_dir, f"pack has no graph {', '.join(missing)}", f"--triton-repo needs {', '.join(needed)}")
    front = pack.manifest.get("frontend", {})
    lacking = [k for k in ("campplus", "speech_tokenizer") if k not in front]
    if lacking:
        raise ToolError(pack_dir, f"pack has no frontend {', '.join(lacking)}", "a pack exported from a full bundle")
    for what, value in (("token2wav instances", token2wav_instances), ("max streams", max_streams)):
        if value < 1:
            raise ToolError("--triton-repo", f"{what} is {value}", "at least 1")
    specs = {g: pack.graph(g).spec() for g in needed}
    policy = pack.chunk_policy
    limits = Limits(
        max_prompt_tokens=policy.tokens(max_prompt_seconds),
        max_tokens=int(max_tokens) if max_tokens is not None else policy.tokens(MAX_SENTENCE_SECONDS),
        max_text_tokens=int(max_text_tokens),
    )
    check_capacity(pack, specs, limits)
    models = model_defs(pack, specs, limits, llm_mode, llm_url, token2wav_instances, max_streams)
    files = {f"{m.name}/config.pbtxt": render_config(m, specs) for m in models}
    files.update({f"{m.name}/1/model.py": render_shim(m) for m in models})
    files[MARKER] = json.dumps(
        {
            "tool": "cosyvoice-pack tts-export --triton-repo",
            "pack": str(pack_dir),
            "pack_manifest_sha256": pack.manifest[DIGEST_FIELD],
            "family": pack.family,
            "llm": llm,
            "limits": limits.__dict__,
            "models": [m.name for m in models],
        },
        indent=2,
        sort_keys=True,
    )
    return write_files(Path(out_dir), files, overwrite)


def parse_llm(llm: str) -> tuple[str, str]:
    if llm == "local":
        return "local", ""
    if llm.startswith("openai="):
        url = llm[len("openai=") :]
        if url.startswith(("http://", "https://")) and len(url) > len("https://"):
            return "openai", url
    raise ToolError("--llm", f"is {llm!r}", "'local' or 'openai=URL' (e.g. openai=http://llm:8000/v1/chat/completions)")


# ---- capacity -------------------------------------------------------------------------------------------------
def check_capacity(pack: Pack, specs: dict[str, GraphSpec], limits: Limits) -> None:
    """The orchestrator's worst case fits each graph's dim range, its TensorRT profiles and the flow noise."""
    policy = pack.chunk_policy
    if min(limits.max_prompt_tokens, limits.max_tokens, limits.max_text_tokens) < 1:
        raise ToolError("--triton-repo", f"limits {limits.__dict__}", "every limit at least 1")
    tokens = limits.max_prompt_tokens + limits.max_tokens  # the final flow call: prompt + every generated token
    frames = policy.mel(tokens)
    # new tokens of one flow call: the first hop (with the prompt pad), a max hop, or a final call
    call_tokens = max(
        policy.first_hop_max,
        policy.token_max_hop_len,
        policy.final_only_max_tokens,
        policy.final_after_chunks_tokens[1],
    )
    why_tokens = f"{limits.max_prompt_tokens} prompt + {limits.max_tokens} generated tokens"
    need = [
        (ENCODER, "token", 1, tokens, why_tokens),
        (ENCODER, "prompt_feat", 1, policy.mel(limits.max_prompt_tokens), f"{limits.max_prompt_tokens} prompt tokens"),
        (ENCODER, "mu", 2, frames, why_tokens),
        (ESTIMATOR, "x", 2, frames, why_tokens),
        (HIFT, "mel", 2, policy.mel_cache_len + policy.mel(call_tokens), f"mel cache + {call_tokens} tokens"),
    ]
    if LLM in specs:
        prefill = 2 + limits.max_text_tokens + limits.max_prompt_tokens  # sos, text ids, task_id, prompt speech
        why = f"sos + {limits.max_text_tokens} text ids + task_id + {limits.max_prompt_tokens} prompt tokens"
        need += [
            (LLM, "inputs_embeds", 1, prefill, why),
            (LLM, "attention_mask", 1, prefill + limits.max_tokens - 1, f"{why} + {limits.max_tokens} generated"),
        ]
    for graph, tensor, axis, value, why in need:
        spec = specs[graph]
        dim = spec_tensor(spec, tensor).shape[axis]
        if isinstance(dim, int):
            continue
        limit, where = dim_limit(spec, dim)
        if value > limit:
            raise ToolError(
                f"{graph} I/O spec",
                f"dim {dim} allows at most {limit} ({where}); the Triton orchestrator's worst case needs {value} "
                f"({why})",
                "lower max_tokens / max_text_tokens / max_prompt_seconds, or a pack exported with larger ranges",
            )
    noise_ref = str(specs[ESTIMATOR].facts.get("noise", ""))
    if noise_ref.startswith("data:"):
        have = pack.data(noise_ref[len("data:") :]).shape[-1]
        if frames > have:
            raise ToolError(
                f"data {noise_ref[5:]}",
                f"has {have} noise frames; the worst case needs {frames} ({why_tokens})",
                "lower max_tokens or max_prompt_seconds",
            )


def dim_limit(spec: GraphSpec, dim: str) -> tuple[int, str]:
    """The largest value of `dim` a call may use: its declared max, and the largest max of any TensorRT profile
    (stream or any chunk mode) that ranges it, whichever is smaller."""
    limit, where = spec.dims[dim].max, "declared range"
    in_profiles = [p.dims[dim].max for mode in ("stream", "any") for p in spec.profiles.get(mode, []) if dim in p.dims]
    if in_profiles and max(in_profiles) < limit:
        limit, where = max(in_profiles), "largest TensorRT profile"
    return limit, where


def spec_tensor(spec: GraphSpec, name: str):
    for t in spec.inputs + spec.outputs:
        if t.name == name:
            return t
    raise ToolError(f"{spec.graph} I/O spec", f"has no tensor {name!r}", "a graph exported by this tts-export")


# ---- the models ---------------------------------------------------------------------------------------------
def model_defs(pack, specs, limits: Limits, llm_mode, llm_url, token2wav_instances, max_streams) -> list[ModelDef]:
    family = pack.family
    common = {
        "repo_path": str(REPO_ROOT),
        "pack_dir": str(pack.root.absolute()),
        "pack_manifest_sha256": pack.manifest[DIGEST_FIELD],
    }
    enc = lambda t: f"{ENCODER}:{t}"  # noqa: E731
    hift = lambda t: f"{HIFT}:{t}"  # noqa: E731
    # first call: zero-length caches; after a final call the caches come back zero-length again
    token2wav = ModelDef(
        "token2wav",
        "token2wav",
        inputs=[
            T("target_speech_tokens", graph=enc("token")),
            T("prompt_speech_tokens", graph=enc("token")),
            T("prompt_speech_feat", graph=enc("prompt_feat")),
            T("prompt_spk_embedding", graph=enc("embedding")),
            T("token_offset", "int64", (1,)),
            T("streaming", graph=enc("streaming")),
            T("finalize", graph=enc("finalize")),
            T("seed", "uint64", (1,)),
            T("mel_cache", graph=hift("mel")),
            T("source_cache", graph=hift("cache_source")),
            T("speech_cache", graph=hift("audio")),
            T("next_frame", "int64", (1,)),
        ],
        outputs=[
            T("pcm16", "int16", (1, -1)),
            T("mel_cache_out", graph=hift("mel")),
            T("source_cache_out", graph=hift("source")),
            T("speech_cache_out", graph=hift("audio")),
            T("next_frame_out", "int64", (1,)),
        ],
        parameters=common,
        count=token2wav_instances,
        doc="stateless flow + HiFT call: every streaming cache comes in and goes out as a tensor",
    )
    wav = T("reference_wav", "float32", (1, -1))
    speaker = ModelDef(
        "speaker_embedding",
        "frontend",
        inputs=[wav],
        outputs=[T("prompt_spk_embedding", graph=enc("embedding"))],
        parameters={**common, "frontend": "campplus"},
        doc="CAM++ x-vector of a 16 kHz prompt",
    )
    tokenizer = ModelDef(
        "speech_tokenizer",
        "frontend",
        inputs=[wav],
        outputs=[T("prompt_speech_tokens", graph=enc("token"))],
        parameters={**common, "frontend": "speech_tokenizer"},
        doc="speech tokens of a 16 kHz prompt",
    )
    policy = pack.chunk_policy
    orchestrator = ModelDef(
        family,
        "orchestrator",
        inputs=[
            T("target_text", "string", (1, 1)),
            T("reference_wav", "float32", (1, -1), optional=True),
            T("reference_wav_len", "int32", (1, 1), optional=True),
            T("reference_text", "string", (1, 1), optional=True),
            T("seed", "uint64", (1, 1), optional=True),
        ],
        outputs=[
            T("waveform", "float32", (1, -1)),
            T("pcm16", "int16", (1, -1)),
            T("sample_offset", "int64", (1, 1)),
        ],
        parameters={
            **common,
            "chunk_policy": json.dumps(policy.to_dict(), sort_keys=True),
            "sample_rate": str(policy.sample_rate),
            "llm_mode": llm_mode,
            "llm_api_base": llm_url,
            "max_prompt_tokens": str(limits.max_prompt_tokens),
            "max_tokens": str(limits.max_tokens),
            "max_streams": str(max_streams),
        },
        decoupled=True,
        doc="per-stream orchestrator: TtsSession's chunk loop over the component models",
    )
    models = [orchestrator, token2wav, speaker, tokenizer]
    if llm_mode == "local":
        models.append(
            ModelDef(
                "llm",
                "llm",
                inputs=[
                    T("text_ids", "int64", (1, -1)),
                    T("prompt_text_ids", "int64", (1, -1)),
                    T("prompt_speech_tokens", graph=enc("token")),
                    T("seed", "uint64", (1,)),
                    T("max_tokens", "int64", (1,)),
                ],
                outputs=[T("speech_token", "int64", (1,))],
                parameters={**common, "max_text_tokens": str(limits.max_text_tokens)},
                decoupled=True,
                doc="the pack's LLM graph: one streamed speech token per response",
            )
        )
    return models


def resolve(t: T, specs: dict[str, GraphSpec]) -> tuple[str, tuple]:
    """(dtype, dims) of a config tensor; a graph tensor's from its io.json, named dims as -1."""
    if not t.graph:
        return t.dtype, t.dims
    graph, name = t.graph.split(":")
    src = spec_tensor(specs[graph], name)
    return src.dtype, tuple(-1 if isinstance(d, str) else int(d) for d in src.shape)


# ---- rendering (deterministic text) --------------------------------------------------------------------------------
def quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_tensors(kind: str, tensors: Sequence[T], specs) -> list[str]:
    out = [f"{kind} ["]
    for i, t in enumerate(tensors):
        dtype, dims = resolve(t, specs)
        out += ["  {", f"    name: {quote(t.name)}", f"    data_type: {TRITON_DTYPES[dtype]}"]
        out.append(f"    dims: [ {', '.join(str(d) for d in dims)} ]")
        if t.optional:
            out.append("    optional: true")
        out.append("  }" + ("," if i + 1 < len(tensors) else ""))
    return out + ["]"]


def render_config(m: ModelDef, specs) -> str:
    io_map = {t.name: t.graph for t in m.inputs + m.outputs if t.graph}
    params = {**m.parameters, **({"io_map": json.dumps(io_map, sort_keys=True)} if io_map else {})}
    lines = [
        f"# {m.doc}. Written by tts-export --triton-repo; regenerate rather than edit.",
        f"name: {quote(m.name)}",
        'backend: "python"',
        "max_batch_size: 0",
    ]
    if m.decoupled:
        lines.append("model_transaction_policy { decoupled: true }")
    lines += render_tensors("input", m.inputs, specs)
    lines += render_tensors("output", m.outputs, specs)
    lines.append(f"instance_group [ {{ count: {m.count} kind: KIND_CPU }} ]")
    lines.append("parameters [")
    items = sorted(params.items())
    for i, (k, v) in enumerate(items):
        comma = "," if i + 1 < len(items) else ""
        lines.append(f"  {{ key: {quote(k)} value: {{ string_value: {quote(v)} }} }}{comma}")
    lines.append("]")
    return "\n".join(lines) + "\n"


SHIM = '''"""Triton model `{name}` of a cosyvoice-pack repository (written by tts-export --triton-repo; do not edit):
{doc}. The code is serving/triton/models/{module}.py of the toolchain at the `repo_path` parameter."""

import json
import sys


def _implementation(args):
    repo = json.loads(args["model_config"])["parameters"]["repo_path"]["string_value"]
    if repo not in sys.path:
        sys.path.insert(0, repo)
    from serving.triton.models.{module} import Model

    return Model(args)


class TritonPythonModel:
    def initialize(self, args):
        self.model = _implementation(args)

    {async_}def execute(self, requests):
        return {await_}self.model.execute(requests)

    def finalize(self):
        self.model.finalize()
'''


def render_shim(m: ModelDef) -> str:
    decoupled = m.decoupled  # decoupled models here are async: streams interleave on one instance
    return SHIM.format(
        name=m.name,
        doc=m.doc,
        module=m.module,
        async_="async " if decoupled else "",
        await_="await " if decoupled else "",
    )


# ---- writing ------------------------------------------------------------------------------------------------------
def write_files(out: Path, files: dict[str, str], overwrite: bool) -> Path:
    """Write into a temporary sibling and rename into place; an existing directory is replaced only if it is a
    repository written here and `overwrite` is set."""
    out = out.absolute()
    if out.is_symlink():
        raise ToolError(out, "is a symbolic link; refusing to write through it", "the repository's real path")
    if out.exists():
        if not (out.is_dir() and (out / MARKER).is_file()):
            raise ToolError(out, "exists and is not a Triton repository written by tts-export", "a new directory")
        if not overwrite:
            raise ToolError(out, "already exists", "a new directory, or overwrite=True")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for rel, text in sorted(files.items()):
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.rename(out, old)
            os.rename(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
