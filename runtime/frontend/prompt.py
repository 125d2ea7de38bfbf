"""Zero-shot prompt processing: prompt WAV + transcript -> the LLM/flow prompt inputs of upstream's
`frontend_zero_shot` for CosyVoice2.

    speech 16 kHz -> kaldi fbank -> campplus.onnx            -> embedding      (1, 192) float32
    speech 16 kHz -> whisper log-mel -> speech_tokenizer.onnx -> speech tokens  (1, n) int32
    speech 24 kHz -> matcha mel (the pack's feat_extractor)   -> prompt mel     (1, T, 80) float32
    then n = min(T // token_mel_ratio, n) and the mel is cut to n * token_mel_ratio frames.

ORT sessions for the two frontend models are made once per process per (file, device) and reused.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from runtime.frontend.audio import PromptAudio, load_prompt_wav
from runtime.frontend.features import (
    CAMPPLUS_MEL_BINS,
    CAMPPLUS_SAMPLE_RATE,
    WHISPER_MEL_BINS,
    WHISPER_SAMPLE_RATE,
    MelParams,
    campplus_fbank,
    prompt_mel,
    whisper_log_mel,
)
from runtime.frontend.normalize import normalize_text
from runtime.frontend.text import TextTokenizer
from specs.errors import ToolError

SPEAKER_EMBEDDING_DIM = 192


@dataclass(frozen=True)
class PromptInputs:
    """Upstream's zero-shot model_input prompt entries (int tensors int32, as upstream)."""

    prompt_text: np.ndarray  # (1, L) int32 token ids of the normalised transcript
    speech_tokens: np.ndarray  # (1, n) int32: llm_ and flow_prompt_speech_token
    speech_feat: np.ndarray  # (1, n * token_mel_ratio, num_mels) float32: prompt_speech_feat
    embedding: np.ndarray  # (1, 192) float32: llm_ and flow_embedding


def align_prompt(
    speech_tokens: np.ndarray, speech_feat: np.ndarray, token_mel_ratio: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """CosyVoice2's alignment: n = min(T_mel // ratio, n_tokens); keep n tokens and n * ratio mel frames."""
    n = min(speech_feat.shape[1] // token_mel_ratio, speech_tokens.shape[1])
    return speech_tokens[:, :n], speech_feat[:, : n * token_mel_ratio]


# ---- ORT sessions, one per process per model file ------------------------------------------------------
_SESSIONS: dict[tuple[str, str], object] = {}
_SESSIONS_LOCK = threading.Lock()


def frontend_session(path: str | Path, device: str = "cpu"):
    """The process-wide ORT session for a frontend model (campplus.onnx, speech_tokenizer_v2.onnx)."""
    import onnxruntime as ort

    from backends.ort import providers_for, session_options

    path = Path(path)
    key = (str(path.resolve()), device)
    with _SESSIONS_LOCK:
        if key not in _SESSIONS:
            if not path.is_file():
                raise ToolError(path, "frontend model is missing", "the pack's frontend/ files as exported")
            try:
                # One intra-op thread, as upstream's frontend sessions.
                _SESSIONS[key] = ort.InferenceSession(
                    str(path), sess_options=session_options(threads=1), providers=providers_for(device)
                )
            except ToolError:
                raise
            except Exception as e:  # ORT's own exception types
                raise ToolError(
                    path,
                    f"ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})",
                    "the bundle's campplus.onnx / speech_tokenizer_v2.onnx",
                ) from None
        return _SESSIONS[key]


class SpeakerEmbedder:
    """campplus.onnx: (1, T, 80) mean-normalised kaldi fbank -> (1, 192) x-vector."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.session = frontend_session(path, device)
        inputs = self.session.get_inputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 3 or inputs[0].shape[2] not in (CAMPPLUS_MEL_BINS, None):
            raise ToolError(
                path, f"has inputs {[(i.name, i.shape) for i in inputs]}", "campplus.onnx with one input (1, T, 80)"
            )
        self.input_name = inputs[0].name

    def __call__(self, wav16k: np.ndarray) -> np.ndarray:
        feats = campplus_fbank(wav16k)[None]
        out = self.session.run(None, {self.input_name: feats})[0]
        return np.asarray(out, dtype=np.float32).reshape(1, -1)


class SpeechTokenizer:
    """speech_tokenizer_v2.onnx: whisper log-mel (1, 128, T) + length (1,) int32 -> 25 Hz tokens."""

    def __init__(self, path: str | Path, device: str = "cpu"):
        self.session = frontend_session(path, device)
        inputs = self.session.get_inputs()
        if len(inputs) != 2 or len(inputs[0].shape) != 3:
            raise ToolError(
                path,
                f"has inputs {[(i.name, i.shape) for i in inputs]}",
                "speech_tokenizer_v2.onnx with inputs feats (1, 128, T) and feats_length (1,)",
            )
        self.feats_name, self.length_name = inputs[0].name, inputs[1].name

    def __call__(self, wav16k: np.ndarray) -> np.ndarray:
        feats = whisper_log_mel(wav16k, WHISPER_MEL_BINS)
        out = self.session.run(
            None, {self.feats_name: feats, self.length_name: np.array([feats.shape[2]], dtype=np.int32)}
        )[0]
        return np.asarray(out).reshape(1, -1).astype(np.int32)


class PromptFrontend:
    """Prompt WAV + transcript -> PromptInputs, with the pack's frontend models and mel parameters."""

    def __init__(
        self,
        campplus_path: str | Path,
        speech_tokenizer_path: str | Path,
        mel_params: MelParams,
        text_tokenizer: TextTokenizer | None = None,
        token_mel_ratio: int = 2,
        device: str = "cpu",
        resampler: str = "sinc",
    ):
        self.resampler = resampler  # runtime/frontend/audio.py RESAMPLERS: upstream's sinc, or soxr
        self.embedder = SpeakerEmbedder(campplus_path, device)
        self.speech_tokenizer = SpeechTokenizer(speech_tokenizer_path, device)
        self.mel_params = mel_params
        self.text_tokenizer = text_tokenizer
        self.token_mel_ratio = int(token_mel_ratio)

    @classmethod
    def from_pack(cls, pack, device: str = "cpu", text_tokenizer: TextTokenizer | None = None) -> PromptFrontend:
        files = pack.manifest.get("frontend", {})
        missing = [k for k in ("campplus", "speech_tokenizer") if k not in files]
        if missing:
            raise ToolError(
                pack.root / "manifest.json",
                f"frontend section lacks {', '.join(missing)}",
                "a pack exported from a bundle with campplus.onnx and speech_tokenizer_v2.onnx",
            )
        config = pack.config
        if "feat_extractor" not in config:
            raise ToolError(
                pack.root / "manifest.json",
                "model.config has no feat_extractor",
                "a pack exported by this version of tts-export",
            )
        # CosyVoice 1 has no integer ratio (config lacks it) and upstream aligns only the 24 kHz families
        ratio = int(config.get("flow", {}).get("token_mel_ratio", 0 if pack.family == "cosyvoice1" else 2))
        return cls(
            pack.root / files["campplus"]["file"],
            pack.root / files["speech_tokenizer"]["file"],
            MelParams.from_config(config["feat_extractor"]),
            text_tokenizer or TextTokenizer.from_pack(pack),
            ratio,
            device,
        )

    def speaker_embedding(self, audio: PromptAudio) -> np.ndarray:
        return self.embedder(audio.at(CAMPPLUS_SAMPLE_RATE, self.resampler))

    def speech_tokens(self, audio: PromptAudio) -> np.ndarray:
        return self.speech_tokenizer(audio.at(WHISPER_SAMPLE_RATE, self.resampler))

    def speech_feat(self, audio: PromptAudio) -> np.ndarray:
        return prompt_mel(audio.at(self.mel_params.sampling_rate, self.resampler), self.mel_params)

    def prompt_text_ids(self, prompt_text: str) -> np.ndarray:
        if self.text_tokenizer is None:
            raise ValueError("PromptFrontend was built without a text tokenizer")
        text = cast(str, normalize_text(prompt_text, self.text_tokenizer.encode, split=False))  # split=False: a str
        return np.array([self.text_tokenizer.encode(text)], dtype=np.int32).reshape(1, -1)

    def zero_shot(self, prompt_wav: str | Path | PromptAudio, prompt_text: str) -> PromptInputs:
        audio = prompt_wav if isinstance(prompt_wav, PromptAudio) else load_prompt_wav(prompt_wav)
        tokens, feat = self.speech_tokens(audio), self.speech_feat(audio)
        if self.token_mel_ratio:  # CosyVoice2/3 (upstream: resample_rate == 24000); CosyVoice 1 keeps both whole
            tokens, feat = align_prompt(tokens, feat, self.token_mel_ratio)
        return PromptInputs(
            prompt_text=self.prompt_text_ids(prompt_text),
            speech_tokens=tokens,
            speech_feat=feat,
            embedding=self.speaker_embedding(audio),
        )
