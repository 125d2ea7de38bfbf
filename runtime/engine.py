"""Everything a pack needs at run time, loaded once per process: one ONNX Runtime session per graph
(long-lived, never per request), the embedding tables, the tokenizer and the prompt frontend.

`PackEngine.get(pack_dir, device)` returns the process-wide engine for that pack and device; sessions
(`TtsSession`) are cheap and hold only per-request state.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from backends.ort import OrtRunner
from runtime.flow_stage import CONDITION_GRAPHS, ENCODER, ESTIMATOR, FlowStage
from runtime.vocoder import GRAPH as HIFT
from runtime.vocoder import VocoderStage
from runtime.vocoder_recompute import FINAL_GRAPH as RECOMPUTE_HIFT_FINAL
from runtime.vocoder_recompute import GRAPH as RECOMPUTE_HIFT
from runtime.vocoder_recompute import RecomputeVocoder
from specs.chunk_policy import ChunkPolicy, check_policy_facts
from specs.errors import ToolError
from specs.pack import Pack, VerifiedFiles

# token -> audio graphs per family (the LLM is loaded on first use)
TOKEN2WAV_GRAPHS = {
    "cosyvoice1": (ENCODER, ESTIMATOR, HIFT),  # window stream: runtime/token2wav_v1.py
    "cosyvoice2": (ENCODER, ESTIMATOR, HIFT),
    "cosyvoice3": (CONDITION_GRAPHS["cosyvoice3"], ESTIMATOR, RECOMPUTE_HIFT, RECOMPUTE_HIFT_FINAL),
}

if TYPE_CHECKING:
    from runtime.flow_v1 import V1FlowStage

_ENGINES: dict[tuple, PackEngine] = {}
_LOCK = threading.Lock()

RUNNABLE_FAMILIES = tuple(TOKEN2WAV_GRAPHS)


class PackEngine:
    def __init__(
        self,
        pack: Pack,
        device: str = "cpu",
        llm_graph: str = "llm",
        threads: int | None = None,
        trt: str = "auto",
        trt_chunk: str = "stream",
        verify: bool = True,
        llm_threads: int | None = None,
        chunk_policy: ChunkPolicy | None = None,
    ):
        """`chunk_policy`: a tuned copy of the pack's (ChunkPolicy.with_overrides), else the pack's own.
        `trt`: 'off', a plan precision ('fp16'/'fp32'), or 'auto' (on a CUDA device, the pack's fp16 plans,
        else its fp32 ones; none on CPU). Graphs with a matching plan for `trt_chunk` ('stream'/'offline') run
        on TensorRT, the others on ONNX Runtime. `verify`: every file the manifest lists is checked against its
        sha256 before anything is loaded (verdicts cached per file identity, specs.pack.VerifiedFiles); False is
        the development opt-out (tts-run --no-verify, logged)."""
        self.pack = pack
        self.verified = verify
        family = pack.manifest["model"]["family"]
        if family not in RUNNABLE_FAMILIES:
            raise ToolError(
                pack.root,
                f"is a {family} pack: this version's runtime streams {', '.join(RUNNABLE_FAMILIES)} packs only",
                "tts-validate checks any pack's graphs",
            )
        if verify:
            pack.verify(cache=VerifiedFiles())
        self.device = device
        self.trt = resolve_trt(pack, device, trt)
        self.trt_chunk = trt_chunk
        graphs = TOKEN2WAV_GRAPHS[family]
        missing = [g for g in graphs if not pack.has_graph(g)]
        if missing:
            raise ToolError(
                pack.root,
                f"pack has no graph {', '.join(missing)}",
                f"tts-run needs {', '.join(graphs)} (re-export with tts-export)",
            )
        self.sample_rate = pack.chunk_policy.sample_rate
        self.chunk_policy = chunk_policy or pack.chunk_policy
        self.policy_tuned = self.chunk_policy != pack.chunk_policy
        for g in graphs:  # graph facts that repeat the policy (rates, caches) must agree with it
            check_policy_facts(pack.chunk_policy, pack.graph(g).spec())
        self.threads = threads
        self.llm_threads = llm_threads if llm_threads is not None else threads  # the LLM's own budget, if split
        self.plans_used: list[str] = []
        self.family = family
        flow_sessions = {g: self._plan_session(g) for g in graphs[:2]}
        if family == "cosyvoice1":  # fresh seeded noise per call and a flow cache (runtime/flow_v1.py)
            from runtime.flow_v1 import V1FlowStage

            self.flow: FlowStage | V1FlowStage = V1FlowStage(
                pack, device=device, threads=threads, sessions=flow_sessions
            )
        else:
            self.flow = FlowStage(pack, device=device, threads=threads, sessions=flow_sessions)
        self.vocoder_sessions = {g: self._plan_session(g) or self._ort_session(g) for g in graphs[2:]}
        self.hift_session = self.vocoder_sessions[graphs[2]]
        self._sine_noise = (  # CosyVoice3's fixed vocoder noise: opened once, shared by every utterance
            RecomputeVocoder.pack_noise(pack, self.hift_session) if pack.chunk_policy.vocoder == "recompute" else None
        )
        self.llm_graph = llm_graph
        self._llm = None
        self._speakers: dict[str, np.ndarray] | None = None
        self._tokenizer = None
        self._prompt_frontend = None

    def new_vocoder(self, seed: int):
        """A vocoder stage for one utterance: CosyVoice2's cached/cross-faded HiFT (noise seeded per utterance) or
        CosyVoice3's recomputing causal HiFT (fixed noise from the pack)."""
        if self._sine_noise is not None:  # the pack's chunk policy says vocoder: recompute
            sessions = self.vocoder_sessions
            return RecomputeVocoder(
                sessions[RECOMPUTE_HIFT], sessions[RECOMPUTE_HIFT_FINAL], self.chunk_policy, self._sine_noise
            )
        return VocoderStage(self.hift_session, self.chunk_policy, seed=seed)

    @classmethod
    def get(
        cls,
        pack_dir: str | Path,
        device: str = "cpu",
        llm_graph: str = "llm",
        threads: int | None = None,
        trt: str = "auto",
        trt_chunk: str = "stream",
        verify: bool = True,
        llm_threads: int | None = None,
        chunk_policy_overrides: Mapping[str, Any] | None = None,
    ) -> PackEngine:
        """`chunk_policy_overrides`: ChunkPolicy.TUNABLE fields to change (tts-run --chunk-policy), checked by
        ChunkPolicy.with_overrides."""
        tuned = dict(chunk_policy_overrides or {})
        key = (
            str(Path(pack_dir).resolve()),
            device,
            llm_graph,
            threads,
            trt,
            trt_chunk,
            verify,
            llm_threads,
            json.dumps(tuned, sort_keys=True),  # any JSON values: with_overrides refuses the bad ones
        )
        with _LOCK:
            if key not in _ENGINES:
                pack = Pack.open(pack_dir)
                policy = pack.chunk_policy.with_overrides(tuned) if tuned else None
                _ENGINES[key] = cls(
                    pack,
                    chunk_policy=policy,
                    device=device,
                    llm_graph=llm_graph,
                    threads=threads,
                    trt=trt,
                    trt_chunk=trt_chunk,
                    verify=verify,
                    llm_threads=llm_threads,
                )
            return _ENGINES[key]

    def _ort_session(self, graph: str) -> OrtRunner:
        entry = self.pack.graph(graph)
        return OrtRunner(entry.onnx_path, entry.spec(), device=self.device, threads=self.threads)

    def _plan_session(self, graph: str):
        """The graph's TensorRT plan (checked against this host and the pack), if plans are on and it has one."""
        if self.trt is None:
            return None
        from backends.fallback import FallbackRunner
        from backends.trt_plan import find_plan, open_plan

        if find_plan(self.pack, graph, self.trt, self.trt_chunk) is None:
            return None
        session = FallbackRunner(
            open_plan(self.pack, graph, self.trt, self.trt_chunk), lambda: self._ort_session(graph)
        )
        self.plans_used.append(graph)
        return session

    # Text-side pieces load on first use: a tokens-only run needs neither the LLM nor the tokenizer.
    @property
    def llm(self):
        if self._llm is None:
            if not self.pack.has_graph(self.llm_graph):
                raise ToolError(
                    self.pack.root,
                    f"pack has no graph {self.llm_graph!r}, so it cannot synthesize from text",
                    "export the LLM too, or run token->audio with --tokens FILE",
                )
            kwargs = dict(
                graph=self.llm_graph,
                device=self.device,
                threads=self.llm_threads,
                session=self._plan_session(self.llm_graph),
            )
            if self.family == "cosyvoice1":  # TransformerLM: text encoder graph (maybe a plan too) + K||V step graph
                from runtime.llm_v1 import V1LLMStage

                self._llm = V1LLMStage(self.pack, text_session=self._plan_session("llm.text_encoder"), **kwargs)
            else:
                from runtime.llm_stage import LLMStage

                self._llm = LLMStage(self.pack, **kwargs)
        return self._llm

    @property
    def speakers(self) -> dict[str, np.ndarray]:
        """Built-in speakers (CosyVoice 1 SFT / Instruct packs): name -> (1, spk_dim) x-vector; {} if none."""
        if self._speakers is None:
            self._speakers = read_speakers(self.pack)
        return self._speakers

    @property
    def instruct(self) -> bool:
        """Whether the pack's LLM takes instruct text (CosyVoice-300M-Instruct)."""
        return bool(self.pack.config.get("modes", {}).get("instruct", False))

    def speaker(self, name: str) -> np.ndarray:
        """One built-in speaker's x-vector, or a one-line error listing the known names."""
        if not self.speakers:
            raise ToolError("--speaker", f"{name!r}: this pack has no built-in speakers", "a -SFT/-Instruct pack")
        if name not in self.speakers:
            raise ToolError("--speaker", f"unknown speaker {name!r}", f"one of {', '.join(self.speakers)}")
        return self.speakers[name]

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from runtime.frontend.text import TextTokenizer

            self._tokenizer = TextTokenizer.from_pack(self.pack)
        return self._tokenizer

    @property
    def prompt_frontend(self):
        if self._prompt_frontend is None:
            from runtime.frontend.prompt import PromptFrontend

            self._prompt_frontend = PromptFrontend.from_pack(
                self.pack, device=self.device, text_tokenizer=self.tokenizer
            )
        return self._prompt_frontend

    def describe_schedule(self) -> str:
        return self.chunk_policy.describe()


def read_speakers(pack: Pack) -> dict[str, np.ndarray]:
    """name -> (1, spk_dim) x-vector from the pack's speakers.json + data `speakers.embedding`."""
    rec = pack.manifest.get("frontend", {}).get("speakers")
    if rec is None:
        return {}
    from specs.schema import read_json

    names = read_json(pack.root / rec["file"], "file", "a JSON list of speaker names")
    table = np.asarray(pack.data("speakers.embedding"), np.float32)
    if not isinstance(names, list) or len(names) != table.shape[0]:
        raise ToolError(pack.root / rec["file"], "does not list one name per row of data speakers.embedding")
    return {str(n): table[i : i + 1].copy() for i, n in enumerate(names)}


def resolve_trt(pack: Pack, device: str, trt: str) -> str | None:
    """The plan precision to use, or None for ONNX Runtime only."""
    plans = pack.manifest.get("plans", {})
    precisions = {rec["precision"] for rec in plans.values()}
    if trt == "off":
        return None
    if trt == "auto":
        if device != "cuda" or not precisions:
            return None
        return "fp16" if "fp16" in precisions else "fp32"
    if trt not in ("fp16", "fp32"):
        raise ToolError("--trt", f"is {trt!r}", "auto, off, fp16 or fp32")
    if device != "cuda":
        raise ToolError("--trt", "TensorRT plans run on a CUDA GPU", "add --device cuda")
    if trt not in precisions:
        raise ToolError(
            pack.root,
            f"pack has no {trt} TensorRT plans",
            f"build them: tts-build-trt --pack PACK --precision {trt}, or run with --trt off",
        )
    return trt
