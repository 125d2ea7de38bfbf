"""`TtsSession`: text (or speech tokens) in, fixed-size PCM16LE chunks out, streaming, deterministic.

    s = TtsSession(PackEngine.get("pack"), prompt=..., seed=0)
    s.push_text("Hello, ")          # incremental text: CosyVoice2 bi-streaming (text/speech mix 5:15)
    s.push_text("world.")
    s.flush()                       # no more text
    while (chunk := s.next_audio_chunk()) is not None:
        out.write(chunk.pcm)        # 960 samples (40 ms at 24 kHz) each, the last one may be shorter

`synthesize(text)` is the other text mode: the whole text at once, normalised and split into sentences
like upstream's `inference_zero_shot`, each sentence an independent LLM/flow/vocoder run (upstream's
non-bi-streaming `Qwen2LM.inference`). `push_tokens(tokens)` runs token -> audio only.

Chunk boundaries depend only on sample counts, never on timing; with the same seed two runs give the
same bytes. `next_audio_chunk()` returns None when no chunk can be produced yet (in push_text mode: more
text is needed) or when everything was returned (`done` is then true).
"""

from __future__ import annotations

import hashlib
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from runtime.engine import PackEngine
from runtime.frontend.normalize import has_nothing_to_say
from specs.errors import ToolError

NOTHING_TO_SAY = "has nothing to say (no letters or digits)"
_WAIT = object()  # internal: the producer needs more text


@dataclass(frozen=True)
class Prompt:
    """Prompt inputs as upstream's frontend makes them (see runtime.frontend.prompt.PromptInputs)."""

    text_ids: np.ndarray  # (L,) int: the LLM prompt text (empty in cross-lingual mode)
    speech_tokens: np.ndarray  # (n,) int: LLM + flow prompt speech tokens (LLM gets none if cross-lingual)
    speech_feat: np.ndarray  # (1, 2n, mel) float32
    embedding: np.ndarray  # (1, 192) float32
    llm_uses_prompt: bool = True  # False: cross-lingual (LLM sees no prompt text/speech)
    # CosyVoice 1's LLM takes the x-vector as a speaker position (upstream's llm_embedding); instruct mode and
    # no-prompt runs leave it out. CosyVoice2/3's LLMs ignore it (upstream's Qwen2LM does).
    llm_speaker: bool = True

    @classmethod
    def none(cls, mel_bins: int, spk_dim: int = 192) -> Prompt:
        """No prompt: empty prompt tokens/mel and a zero x-vector (a neutral, unconditioned voice)."""
        return cls(
            np.zeros(0, np.int64),
            np.zeros(0, np.int64),
            np.zeros((1, 0, mel_bins), np.float32),
            np.zeros((1, spk_dim), np.float32),
            llm_uses_prompt=False,
            llm_speaker=False,
        )

    @classmethod
    def speaker(cls, embedding: np.ndarray, mel_bins: int, instruct_ids=None) -> Prompt:
        """A built-in speaker (CosyVoice 1 SFT: upstream's frontend_sft, the x-vector for LLM and flow), or with
        `instruct_ids` upstream's frontend_instruct: the instruct text as LLM prompt text, no LLM speaker row."""
        instruct = instruct_ids is not None
        return cls(
            np.asarray(instruct_ids if instruct else (), np.int64).reshape(-1),
            np.zeros(0, np.int64),
            np.zeros((1, 0, mel_bins), np.float32),
            np.asarray(embedding, np.float32).reshape(1, -1),
            llm_uses_prompt=instruct,
            llm_speaker=not instruct,
        )

    @classmethod
    def from_inputs(cls, p, cross_lingual: bool = False) -> Prompt:
        return cls(
            np.asarray(p.prompt_text).reshape(-1).astype(np.int64),
            np.asarray(p.speech_tokens).reshape(-1).astype(np.int64),
            np.asarray(p.speech_feat, np.float32),
            np.asarray(p.embedding, np.float32),
            llm_uses_prompt=not cross_lingual,
        )


@dataclass(frozen=True)
class AudioChunk:
    pcm: bytes  # PCM16LE mono
    index: int
    sample_offset: int  # first sample of this chunk in the whole output
    n_samples: int
    segment: int  # sentence (synthesize) or 0
    token_offset: int  # speech-token offset of the flow call that produced the chunk's first sample
    sha256: str
    final: bool

    def meta(self) -> dict:
        return {
            "index": self.index,
            "sample_offset": self.sample_offset,
            "n_samples": self.n_samples,
            "segment": self.segment,
            "token_offset": self.token_offset,
            "sha256": self.sha256,
            "final": self.final,
        }


def speaker_prompt(engine: PackEngine, name: str, instruct: str | None = None) -> Prompt:
    """The prompt of a built-in speaker (upstream inference_sft), with `instruct` text upstream's
    inference_instruct: normalised (split=False) and tokenised as upstream's frontend does; refused on a pack whose
    LLM is not instruct-trained."""
    embedding = engine.speaker(name)
    ids = None
    if instruct is not None:
        if not engine.instruct:
            raise ToolError(
                "--instruct",
                "this pack's LLM is not instruct-trained",
                "a CosyVoice-300M-Instruct pack (tts-export of that bundle)",
            )
        from runtime.frontend.normalize import normalize_text

        if has_nothing_to_say(instruct):
            raise ToolError("--instruct", NOTHING_TO_SAY, "a description of the voice or style")
        text = str(normalize_text(instruct, engine.tokenizer.encode, split=False))
        ids = engine.tokenizer.encode(text)
    return Prompt.speaker(embedding, engine.flow.mel_bins, ids)


def derive_seed(seed: int, *parts: int) -> int:
    """A 64-bit seed for one sub-stream (segment, component) of a request seed."""
    return int(np.random.SeedSequence([int(seed), *map(int, parts)]).generate_state(1, np.uint64)[0])


class TtsSession:
    def __init__(
        self,
        engine: PackEngine,
        prompt: Prompt | None = None,
        seed: int = 0,
        stream: bool = True,
        max_chars: int = 10_000,
        sampler_factory=None,
        pipeline: bool = False,
    ):
        """`pipeline`: the LLM runs on a worker thread ahead of flow and vocoder (runtime/token_pipe.py; same
        bytes as False, the sequential path), its tokens queued up to `token_queue_capacity` = two max hops plus
        lookahead (the LLM may run one flow call ahead; a full queue blocks it). Text segments mode only. Off by
        default: on a 2-core CPU every stage already keeps both cores busy, and overlapping them measured TTFA
        1.4-2.1x and RTF 1.03-1.18x of the sequential path (ci/bench_e2e.py, full size, two runs); it pays
        where cores or a GPU are spare."""
        self.engine = engine
        self.pipeline = pipeline
        policy = engine.chunk_policy
        self.token_queue_capacity = 2 * (policy.token_max_hop_len + policy.pre_lookahead_len)
        self.prompt = prompt or Prompt.none(engine.flow.mel_bins)
        self.seed = int(seed)
        self.stream = stream
        self.max_chars = max_chars
        # segment index -> sampler `(log-probs, decoded) -> token`; default: seeded ras_sampling (the yaml's)
        self.sampler_factory = sampler_factory
        self.chunk_samples = engine.chunk_policy.output_chunk_samples
        self._mode: str | None = None
        self._texts: deque[str] = deque()
        self._chars = 0
        self._closed = False
        self._speakable = False  # push_text mode: some piece had a letter or digit
        self._producer: Iterator | None = None
        self._pending: np.ndarray = np.zeros(0, np.int16)  # produced samples not yet returned as a chunk
        self._pending_meta: deque[tuple[int, int, int]] = deque()  # (start sample, segment, token offset)
        self._produced = 0
        self._emitted = 0
        self._index = 0
        self._exhausted = False
        self.done = False
        self.t_start: float | None = None
        self.t_first_audio: float | None = None
        self.flow_calls = 0
        self.speech_tokens: list[list[int]] = []  # per segment: the speech tokens that were vocoded

    # ---- input -----------------------------------------------------------------------------------------
    def _set_mode(self, mode: str) -> None:
        if self._mode not in (None, mode):
            raise ToolError("TtsSession", f"cannot mix {self._mode} and {mode} in one session", "one input mode")
        if self._closed:
            raise ToolError("TtsSession", "input after flush()", "a new session per request")
        self._mode = mode
        if self.t_start is None:
            self.t_start = time.perf_counter()

    def push_text(self, text: str) -> None:
        """Incremental text (bi-streaming): pieces are tokenised as they arrive, like upstream's generator."""
        if self.engine.family == "cosyvoice1":
            raise ToolError(
                "push_text", "CosyVoice 1 has no bi-streaming text input (upstream: v2/v3 only)", "synthesize(text)"
            )
        self._set_mode("bistream")
        self._check_text(text, allow_empty=True)
        self._texts.append(text)
        self._speakable = self._speakable or not has_nothing_to_say(text)

    def synthesize(self, text: str) -> None:
        """The whole text at once: normalised and split into sentences, each synthesized independently."""
        self._set_mode("segments")
        self._check_text(text)
        self._texts.append(text)
        self.flush()

    def push_tokens(self, tokens: Sequence[int] | np.ndarray) -> None:
        """Speech tokens in, audio out (flow + vocoder only)."""
        self._set_mode("tokens")
        try:
            tokens = np.asarray(tokens, np.int64).reshape(-1)
        except (OverflowError, ValueError, TypeError) as e:
            raise ToolError("speech tokens", f"are not 64-bit integers ({e})", "integer speech token ids") from None
        vocab = int(self.engine.pack.config["flow"]["vocab_size"])
        if tokens.size == 0:
            raise ToolError("speech tokens", "are empty", "at least one token")
        bad = tokens[(tokens < 0) | (tokens >= vocab)]
        if bad.size:
            raise ToolError(
                "speech tokens", f"{bad.size} token(s) out of range, e.g. {int(bad[0])}", f"ids in [0, {vocab})"
            )
        self._tokens = tokens
        self.flush()

    def flush(self) -> None:
        if self._mode == "bistream" and not self._closed and not self._speakable:
            raise ToolError("text", NOTHING_TO_SAY, "words or characters to synthesize")
        self._closed = True

    def _check_text(self, text: str, allow_empty: bool = False) -> None:
        if not isinstance(text, str):
            raise ToolError("text", f"is a {type(text).__name__}", "a str")
        if not allow_empty and has_nothing_to_say(text):
            # empty, whitespace-, punctuation-, emoji- or control-character-only: refused alike, before any work
            raise ToolError("text", NOTHING_TO_SAY, "words or characters to synthesize")
        total = self._chars + len(text)
        if total > self.max_chars:
            raise ToolError(
                "text",
                f"is {total} characters",
                f"at most {self.max_chars} per request (--max-chars); split long documents into several requests",
            )
        self._chars = total

    # ---- output ----------------------------------------------------------------------------------------
    def next_audio_chunk(self) -> AudioChunk | None:
        while len(self._pending) < self.chunk_samples and not self._exhausted:
            if self._producer is None:
                if self._mode is None or (self._mode == "bistream" and not self._closed and not self._texts):
                    return None
                self._producer = self._produce()
            piece = next(self._producer, None)
            if piece is None:
                self._exhausted = True
            elif piece is _WAIT:
                return None
            else:
                self._append(*piece)
        if self.done:
            return None
        if not len(self._pending) and not self._exhausted:
            return None
        # The last piece of audio is marked by its producer, so the final chunk is known without waiting;
        # if a request ends with nothing left to say, a zero-length final chunk closes the stream.
        n = min(self.chunk_samples, len(self._pending))
        samples, self._pending = self._pending[:n], self._pending[n:]
        start = self._emitted
        while len(self._pending_meta) > 1 and self._pending_meta[1][0] <= start:
            self._pending_meta.popleft()
        segment, token_offset = self._pending_meta[0][1:] if self._pending_meta else (0, 0)
        self._emitted += n
        final = self._exhausted and not len(self._pending)
        pcm = samples.astype("<i2").tobytes()
        chunk = AudioChunk(pcm, self._index, start, n, segment, token_offset, hashlib.sha256(pcm).hexdigest(), final)
        self._index += 1
        if self.t_first_audio is None and n:
            self.t_first_audio = time.perf_counter()
        self.done = final
        return chunk

    def chunks(self) -> Iterator[AudioChunk]:
        """The chunks available now; after flush / synthesize / push_tokens, every remaining chunk. In push_text
        mode before flush it stops where more text is needed."""
        while (c := self.next_audio_chunk()) is not None:
            yield c

    @property
    def ttfa(self) -> float | None:
        if self.t_start is None or self.t_first_audio is None:
            return None
        return self.t_first_audio - self.t_start

    def _append(self, pcm: np.ndarray, segment: int, token_offset: int, last: bool) -> None:
        if last:
            self._exhausted = True  # the producer has nothing after this piece
        if len(pcm):
            self._pending_meta.append((self._produced, segment, token_offset))
            self._pending = np.concatenate([self._pending, pcm])
            self._produced += len(pcm)

    # ---- producers: each yields (pcm int16, segment, token offset, last) pieces, or _WAIT -----------------
    def _produce(self):
        if self._mode == "tokens":
            yield from self._token2wav(iter(self._tokens.tolist()), 0, last_segment=True)
        elif self._mode == "segments":
            yield from self._segments()
        else:
            yield from self._bistream()

    def _segments(self):
        e = self.engine
        from runtime.frontend.normalize import normalize_text

        text = "".join(self._texts)
        segments = normalize_text(text, e.tokenizer.encode, split=True)
        if not segments:
            raise ToolError("text", f"{NOTHING_TO_SAY} after normalisation", "words or characters to synthesize")
        p = self.prompt
        from runtime.sampling import RasSampler

        requests = []  # (text ids, LLM prompt text ids) per segment, tokenised here (the caller's thread)
        for seg in segments:
            ids = e.tokenizer.encode(seg)
            requests.append((ids, self._llm_prompt_text(ids)))

        def generate(i: int):
            ids, prompt_text = requests[i]
            sampler = (
                self.sampler_factory(i)
                if self.sampler_factory
                else RasSampler(derive_seed(self.seed, i, 0), e.llm.params)
            )
            speech = p.speech_tokens if p.llm_uses_prompt else ()
            return e.llm.generate(ids, prompt_text, speech, sampler=sampler, embedding=self._llm_embedding())

        last = len(requests) - 1
        if not self.pipeline:
            for i in range(len(requests)):
                yield from self._token2wav(generate(i), i, last_segment=i == last)
            return
        from runtime.token_pipe import TokenPipe

        pipe = TokenPipe(lambda: (generate(i) for i in range(len(requests))), self.token_queue_capacity)
        try:
            for i in range(len(requests)):
                yield from self._token2wav(pipe.segment(i), i, last_segment=i == last)
        finally:
            pipe.close()

    def _llm_embedding(self) -> np.ndarray | None:
        return self.prompt.embedding if self.prompt.llm_speaker else None

    def _llm_prompt_text(self, text_ids) -> np.ndarray:
        """The LLM's prompt text ids. A family whose LLM requires a token in prompt_text ++ text (CosyVoice3:
        <|endofprompt|>, upstream asserts it) gets the pack's default instruction before the prompt text when
        neither has it, as upstream's examples write it."""
        p, facts = self.prompt, self.engine.llm.facts
        prompt_ids = np.asarray(p.text_ids if p.llm_uses_prompt else (), np.int64)
        required = facts.get("required_text_token")
        if required is None or required in prompt_ids or required in np.asarray(text_ids):
            return prompt_ids
        instruction = np.asarray(self.engine.tokenizer.encode(str(facts["default_instruction"])), np.int64)
        return np.concatenate([instruction, prompt_ids])

    def _bistream(self):
        from runtime.llm_bistream import NEED_TEXT, BistreamDecoder

        e, p = self.engine, self.prompt
        dec = BistreamDecoder(
            e.llm,
            self._llm_prompt_text(()),  # upstream's bistream wants <|endofprompt|> in the prompt text itself
            p.speech_tokens if p.llm_uses_prompt else (),
            seed=derive_seed(self.seed, 0, 0),
        )

        def tokens():
            gen = dec.tokens()
            for tok in gen:
                while tok is NEED_TEXT:
                    if self._texts:
                        dec.push(e.tokenizer.encode(self._texts.popleft()))
                    elif self._closed:
                        dec.close()
                    else:
                        yield _WAIT
                        continue
                    tok = next(gen, None)
                    if tok is None:
                        return
                yield tok

        yield from self._token2wav(tokens(), 0, last_segment=True)

    def _token2wav(self, tokens: Iterator, segment: int, last_segment: bool):
        """Upstream CosyVoice2Model.tts's chunk loop over a token stream (LLM output or given tokens)."""
        e, p = self.engine, self.prompt
        vocoder = e.new_vocoder(seed=derive_seed(self.seed, segment, 1))
        schedule = e.chunk_policy.schedule(prompt_tokens=len(p.speech_tokens))
        got: list[int] = []
        self.speech_tokens.append(got)
        window = None
        if e.chunk_policy.stream == "window":  # CosyVoice 1: fixed windows, flow cache, mel cross-fade
            from runtime.flow_v1 import V1FlowStage
            from runtime.token2wav_v1 import WindowToken2Wav

            if not isinstance(e.flow, V1FlowStage):
                raise ToolError(e.pack.root, f"a window-stream chunk policy in a {e.family} pack", "a CosyVoice 1 pack")
            window = WindowToken2Wav(e.flow, vocoder, e.chunk_policy, seed=derive_seed(self.seed, segment, 2))

        def run(call):
            if window is not None:
                self.flow_calls += 1
                pcm = window(got, call, p.speech_tokens, p.speech_feat, p.embedding)
                return pcm, segment, call.token_offset, call.finalize and last_segment
            mel = e.flow.token2mel(
                np.asarray(got[: call.end], np.int64),
                p.speech_tokens,
                p.speech_feat,
                p.embedding,
                call.token_offset,
                streaming=call.streaming,
                finalize=call.finalize,
            )
            self.flow_calls += 1
            last = call.finalize and last_segment
            return vocoder.push(mel, final=call.finalize), segment, call.token_offset, last

        for tok in tokens:
            if tok is _WAIT:
                yield _WAIT
                continue
            got.append(int(tok))
            while self.stream and (call := schedule.next_call(len(got))) is not None:
                yield run(call)
        if not got:
            return  # the LLM stopped at once: nothing to say for this segment
        yield run(schedule.final_call(len(got)))
