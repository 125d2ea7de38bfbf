"""Everything a pack needs at run time, loaded once per process: one ONNX Runtime session per graph
(long-lived, never per request), the embedding tables, the tokenizer and the prompt frontend.

`PackEngine.get(pack_dir, device)` returns the process-wide engine for that pack and device; sessions
(`TtsSession`) are cheap and hold only per-request state.
"""
from __future__ import annotations

import threading
from pathlib import Path

from specs.errors import ToolError
from specs.pack import Pack
from runtime.flow_stage import ENCODER, ESTIMATOR, FlowStage
from runtime.ort_session import GraphSession
from runtime.vocoder import GRAPH as HIFT

TOKEN2WAV_GRAPHS = (ENCODER, ESTIMATOR, HIFT)

_ENGINES: dict[tuple, "PackEngine"] = {}
_LOCK = threading.Lock()


class PackEngine:
    def __init__(self, pack: Pack, device: str = "cpu", llm_graph: str = "llm", threads: int | None = None):
        self.pack = pack
        self.device = device
        missing = [g for g in TOKEN2WAV_GRAPHS if not pack.has_graph(g)]
        if missing:
            raise ToolError(pack.root, f"pack has no graph {', '.join(missing)}",
                            f"tts-run needs {', '.join(TOKEN2WAV_GRAPHS)} (re-export with tts-export)")
        self.sample_rate = int(pack.audio["sample_rate"])
        self.chunk_policy = pack.audio["chunk_policy"]
        self.flow = FlowStage(pack, device=device, threads=threads)
        hift = pack.graph(HIFT)
        self.hift_session = GraphSession(hift.onnx_path, hift.spec(), device=device, threads=threads)
        self.llm_graph = llm_graph
        self.threads = threads
        self._llm = None
        self._tokenizer = None
        self._prompt_frontend = None

    @classmethod
    def get(cls, pack_dir: str | Path, device: str = "cpu", llm_graph: str = "llm",
            threads: int | None = None) -> "PackEngine":
        key = (str(Path(pack_dir).resolve()), device, llm_graph, threads)
        with _LOCK:
            if key not in _ENGINES:
                _ENGINES[key] = cls(Pack.open(pack_dir), device=device, llm_graph=llm_graph, threads=threads)
            return _ENGINES[key]

    # Text-side pieces load on first use: a tokens-only run needs neither the LLM nor the tokenizer.
    @property
    def llm(self):
        if self._llm is None:
            if not self.pack.has_graph(self.llm_graph):
                raise ToolError(self.pack.root, f"pack has no graph {self.llm_graph!r}, so it cannot synthesize "
                                "from text", "export the LLM too, or run token->audio with --tokens FILE")
            from runtime.llm_stage import LLMStage

            self._llm = LLMStage(self.pack, graph=self.llm_graph, device=self.device, threads=self.threads)
        return self._llm

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

            self._prompt_frontend = PromptFrontend.from_pack(self.pack, device=self.device,
                                                             text_tokenizer=self.tokenizer)
        return self._prompt_frontend

    def describe_schedule(self) -> str:
        p = self.chunk_policy
        return (f"streaming schedule: token hop {p['token_hop_len']} (+ prompt pad on the first chunk) x"
                f"{p['stream_scale_factor']} up to {p['token_max_hop_len']}, pre-lookahead {p['pre_lookahead_len']}, "
                f"mel cache {p['mel_cache_len']} frames, source cache {p['source_cache_len']} samples, "
                f"{p['crossfade']['window']} cross-fade {p['crossfade']['length']}, output chunks "
                f"{p['output_chunk_samples']} samples at {self.sample_rate} Hz")
