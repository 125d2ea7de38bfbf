"""The orchestrator (`cosyvoice2`): one decoupled request = one stream, with upstream's I/O.

Each request runs runtime.session.TtsSession exactly as `tts-run --stream` makes it (text normalisation and
sentence split, seeds, the chunk schedule, fixed-size PCM chunks), on a worker thread, over a `RemoteEngine`:
the engine's flow and vocoder calls become one `token2wav` call per flow call, carrying the vocoder state; the
LLM is the repository's `llm` model (or an OpenAI-compatible URL); the prompt's speech tokens and x-vector
come from `speech_tokenizer` and `speaker_embedding`, its mel is computed here (as PromptFrontend does). So
the bytes and chunk boundaries of a stream are tts-run's for the same pack, text, prompt and seed, and every
per-stream state lives in that thread: nothing is kept across requests.

Inputs: target_text; optional reference_wav (16 kHz float samples, as upstream's clients send them) with
reference_wav_len, reference_text (without it the prompt is cross-lingual, as tts-run without --prompt-text)
and seed (default 0). One response per chunk: waveform (float32 = pcm16 / 32768), pcm16, sample_offset; then
an empty response with the final flag. Errors: one error response (the tools' one-line message), final.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.frontend.audio import MAX_PROMPT_SECONDS, MIN_PROMPT_SECONDS, PromptAudio
from runtime.frontend.features import WHISPER_SAMPLE_RATE
from runtime.frontend.prompt import PromptFrontend
from runtime.frontend.text import TextTokenizer
from runtime.session import Prompt, TtsSession, derive_seed
from serving.triton.models.base import (
    FINAL,
    ModelArgs,
    RemoteError,
    bls,
    bls_stream,
    error_response,
    get,
    log_error,
    tensors,
)
from specs.errors import ToolError

T2W_OUT = ["pcm16", "mel_cache_out", "source_cache_out", "speech_cache_out", "next_frame_out"]
REFERENCE_RATE = WHISPER_SAMPLE_RATE  # upstream's clients send the prompt at 16 kHz ("hard coding in server")


@dataclass(frozen=True)
class PendingFlow:
    """A flow call as TtsSession asks for it; token2wav runs it together with the vocoder call that follows."""

    token: np.ndarray
    prompt_token: np.ndarray
    prompt_feat: np.ndarray
    embedding: np.ndarray
    token_offset: int
    streaming: bool
    finalize: bool


class FlowProxy:
    def __init__(self, mel_bins: int):
        self.mel_bins = mel_bins

    def token2mel(self, token, prompt_token, prompt_feat, embedding, token_offset=0, streaming=False, finalize=True):
        return PendingFlow(token, prompt_token, prompt_feat, embedding, int(token_offset), streaming, finalize)


class VocoderProxy:
    """A stream's vocoder: its state (HiFT caches, next noise frame) goes to token2wav and comes back."""

    def __init__(self, seed: int, mel_bins: int):
        self.seed = seed
        self.state = {
            "mel_cache": np.zeros((1, mel_bins, 0), np.float32),
            "source_cache": np.zeros((1, 1, 0), np.float32),
            "speech_cache": np.zeros((1, 0), np.float32),
            "next_frame": np.zeros(1, np.int64),
        }

    def push(self, flow: PendingFlow, final: bool = False) -> np.ndarray:
        if final != flow.finalize:  # TtsSession finalizes flow and vocoder together
            raise RuntimeError("vocoder final flag differs from the flow call's finalize")
        feed = {
            "target_speech_tokens": np.asarray(flow.token, np.int64).reshape(1, -1),
            "prompt_speech_tokens": np.asarray(flow.prompt_token, np.int64).reshape(1, -1),
            "prompt_speech_feat": np.asarray(flow.prompt_feat, np.float32),
            "prompt_spk_embedding": np.asarray(flow.embedding, np.float32).reshape(1, -1),
            "token_offset": np.array([flow.token_offset], np.int64),
            "streaming": np.array([flow.streaming]),
            "finalize": np.array([flow.finalize]),
            "seed": np.array([self.seed], np.uint64),
            **self.state,
        }
        out = bls("token2wav", feed, T2W_OUT)
        self.state = {k[: -len("_out")]: out[k] for k in T2W_OUT[1:]}
        return out["pcm16"].reshape(-1)


@dataclass(frozen=True)
class Seeded:
    """What TtsSession's sampler factory gives here: the sentence's LLM seed, sent to the LLM tier."""

    seed: int


class LocalLLM:
    """The repository's `llm` model, streamed token by token."""

    def __init__(self, facts: dict, max_tokens: int):
        self.facts = facts
        self.max_tokens = max_tokens

    def generate(self, text_ids, prompt_text_ids=(), prompt_speech_tokens=(), sampler=None, seed=0, embedding=None):
        feed = {
            "text_ids": np.asarray(text_ids, np.int64).reshape(1, -1),
            "prompt_text_ids": np.asarray(prompt_text_ids, np.int64).reshape(1, -1),
            "prompt_speech_tokens": np.asarray(prompt_speech_tokens, np.int64).reshape(1, -1),
            "seed": np.array([sampler.seed if sampler is not None else seed], np.uint64),
            "max_tokens": np.array([self.max_tokens], np.int64),
        }
        for out in bls_stream("llm", feed, ["speech_token"]):
            yield int(out["speech_token"][0])


class RemoteEngine:
    """The part of runtime.engine.PackEngine that TtsSession uses, with the graphs behind Triton models."""

    def __init__(self, pack, llm, tokenizer: TextTokenizer):
        self.pack = pack
        self.family = pack.family
        self.chunk_policy = pack.chunk_policy
        self.sample_rate = pack.chunk_policy.sample_rate
        self.flow = FlowProxy(int(pack.graph("flow.decoder.estimator").spec().facts["mel_bins"]))
        self.llm = llm
        self.tokenizer = tokenizer

    def new_vocoder(self, seed: int) -> VocoderProxy:
        return VocoderProxy(seed, self.flow.mel_bins)


class RemotePromptFrontend(PromptFrontend):
    """PromptFrontend (same mel, alignment and transcript rules; built by its from_pack) whose two ONNX models are
    the repository's speaker_embedding and speech_tokenizer models instead of sessions in this process."""

    def __init__(self, campplus_path, speech_tokenizer_path, mel_params, text_tokenizer=None, token_mel_ratio=2,
                 device="cpu", resampler="sinc"):  # fmt: skip
        self.resampler = resampler
        self.mel_params = mel_params
        self.text_tokenizer = text_tokenizer
        self.token_mel_ratio = int(token_mel_ratio)
        self.embedder = self._embed
        self.speech_tokenizer = self._tokenize

    @staticmethod
    def _embed(wav16k: np.ndarray) -> np.ndarray:
        out = bls("speaker_embedding", {"reference_wav": wav16k[None]}, ["prompt_spk_embedding"])
        return out["prompt_spk_embedding"]

    @staticmethod
    def _tokenize(wav16k: np.ndarray) -> np.ndarray:
        out = bls("speech_tokenizer", {"reference_wav": wav16k[None]}, ["prompt_speech_tokens"])
        return out["prompt_speech_tokens"].astype(np.int32)  # PromptFrontend's dtype (SpeechTokenizer's output)


def text_input(request, name: str) -> str | None:
    value = get(request, name)
    if value is None:
        return None
    if value.size != 1:
        raise ToolError(name, f"has {value.size} elements", "one UTF-8 string")
    raw = value.reshape(-1)[0]
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError as e:
        raise ToolError(name, f"is not valid UTF-8 (byte {e.start})", "UTF-8 text") from None


def prompt_audio(wav: np.ndarray, length: np.ndarray | None) -> PromptAudio:
    """reference_wav[:reference_wav_len] at 16 kHz, with the duration and value checks of load_prompt_wav."""
    samples = np.asarray(wav, np.float32).reshape(-1)
    n = samples.size if length is None else int(np.asarray(length).reshape(-1)[0])
    if not 0 < n <= samples.size:
        raise ToolError("reference_wav_len", f"is {n}", f"1 .. {samples.size} (the samples sent in reference_wav)")
    samples = np.ascontiguousarray(samples[:n])
    seconds = n / REFERENCE_RATE
    if not MIN_PROMPT_SECONDS <= seconds <= MAX_PROMPT_SECONDS:
        raise ToolError(
            "reference_wav",
            f"is {seconds:.3f} s at {REFERENCE_RATE} Hz",
            f"{MIN_PROMPT_SECONDS:g} .. {MAX_PROMPT_SECONDS:g} s of 16 kHz speech",
        )
    if not np.isfinite(samples).all():
        raise ToolError("reference_wav", "contains NaN or infinite samples", "finite float samples in [-1, 1]")
    return PromptAudio(Path("reference_wav"), samples, REFERENCE_RATE)


class Model:
    def __init__(self, args):
        a = ModelArgs(args)
        pack = a.pack()
        recorded = json.loads(a.params["chunk_policy"])
        if recorded != pack.chunk_policy.to_dict():
            raise ToolError(
                pack.root / "manifest.json",
                "audio.chunk_policy differs from the one the Triton repository was generated with",
                "regenerate the repository: tts-export --pack PACK --triton-repo DIR",
            )
        facts = pack.graph("llm").spec().facts if pack.has_graph("llm") else {}
        tokenizer = TextTokenizer.from_pack(pack)
        if a.params["llm_mode"] == "openai":
            from serving.triton.models.openai_llm import OpenAILLM

            llm = OpenAILLM(a.params["llm_api_base"], facts, a.int("max_tokens"), tokenizer)
        else:
            llm = LocalLLM(facts, a.int("max_tokens"))
        self.engine = RemoteEngine(pack, llm, tokenizer)
        self.frontend = RemotePromptFrontend.from_pack(pack, text_tokenizer=self.engine.tokenizer)
        self.max_prompt_tokens = a.int("max_prompt_tokens")
        self.pool = ThreadPoolExecutor(max_workers=a.int("max_streams"), thread_name_prefix="stream")

    async def execute(self, requests):
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, self.stream, r) for r in requests))

    def session(self, r) -> TtsSession:
        text = text_input(r, "target_text")
        reference_text = text_input(r, "reference_text")
        wav = get(r, "reference_wav")
        seed_in = get(r, "seed")
        seed = 0 if seed_in is None else int(seed_in.reshape(-1)[0])
        prompt = None
        if wav is not None:
            audio = prompt_audio(wav, get(r, "reference_wav_len"))
            inputs = self.frontend.zero_shot(audio, reference_text or "")
            prompt = Prompt.from_inputs(inputs, cross_lingual=reference_text is None)
            if len(prompt.speech_tokens) > self.max_prompt_tokens:
                raise ToolError(
                    "reference_wav",
                    f"gives {len(prompt.speech_tokens)} prompt speech tokens",
                    f"at most {self.max_prompt_tokens} (the repository's max_prompt_tokens)",
                )
        elif reference_text is not None:
            raise ToolError("reference_text", "given without reference_wav", "the transcript of a reference_wav")
        # TtsSession's own per-sentence LLM seed, sent to the LLM tier instead of a local sampler
        seeds = lambda i: Seeded(derive_seed(seed, i, 0))  # noqa: E731
        session = TtsSession(self.engine, prompt=prompt, seed=seed, stream=True, sampler_factory=seeds)
        session.synthesize(text or "")
        return session

    def stream(self, r) -> None:
        """One request, on a worker thread: a response per chunk, then the final flag."""
        import triton_python_backend_utils as pb_utils

        sender = r.get_response_sender()
        try:
            for chunk in self.session(r).chunks():
                if r.is_cancelled():
                    break
                pcm = np.frombuffer(chunk.pcm, "<i2").astype(np.int16).reshape(1, -1)
                arrays = {
                    "waveform": pcm.astype(np.float32) / np.float32(32768.0),
                    "pcm16": pcm,
                    "sample_offset": np.array([[chunk.sample_offset]], np.int64),
                }
                sender.send(pb_utils.InferenceResponse(tensors(arrays)))
        except (ToolError, RemoteError) as e:
            sender.send(error_response(e.message if isinstance(e, ToolError) else str(e)), flags=FINAL)
            return
        except Exception as e:
            log_error(f"orchestrator: {type(e).__name__}: {e}")
            sender.send(error_response(f"orchestrator | internal error ({type(e).__name__}: {e})"), flags=FINAL)
            return
        sender.send(flags=FINAL)

    def finalize(self):
        self.pool.shutdown(wait=False, cancel_futures=True)
