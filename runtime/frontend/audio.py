"""Prompt WAV loading for the frontend: soundfile read, checks with clear errors, upstream-exact resampling.

Behaviour (upstream `load_wav` + `_extract_speech_token` asserts, made explicit):
- container: RIFF/RF64 WAV only (what soundfile reports as WAV, WAVEX or RF64); anything else is refused.
- encoding: 16/24/32-bit PCM or 32/64-bit float; 8-bit PCM (48 dB dynamic range) and companded/ADPCM
  encodings are refused. Float samples are passed through unclipped, as upstream does; NaN/Inf are refused.
- channels: several channels are averaged to mono, as upstream's `mean(dim=0)`.
- truncated files (the header's data size exceeds the bytes present) are refused; libsndfile would
  silently read what is there.
- sample rate: at least 16 kHz (upstream asserts the same before resampling).
- duration: MIN_PROMPT_SECONDS (0.5 s) .. MAX_PROMPT_SECONDS (30 s). Upstream's speech tokenizer asserts
  <= 30 s. Upstream has no minimum; below 0.5 s the prompt gives fewer than 12 speech tokens and CAM++
  sees under 48 fbank frames, which is no usable voice prompt.
- resampling: by default upstream's own resampler, torchaudio 2.3.1's windowed sinc (width 6, rolloff 0.99),
  in numpy (runtime/frontend/resample.py: kernel equal bit for bit, output within float32 rounding), so the
  prompt's features and speech tokens are upstream's. `soxr` ('HQ', linear phase) is the option: it differs
  near the target Nyquist (at 24 -> 16 kHz soxr is flat to 7.3 kHz then cuts off steeply; torchaudio rolls
  off gradually, -6 dB at 7.95 kHz): about 47 dB SNR, kaldi fbank up to 3.3 apart in the top bins.
  Used only here in the frontend, never for synthesised audio.
  The output length is upstream's: ceil(N * target / source).
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from specs.errors import ToolError

MIN_PROMPT_SECONDS = 0.5
MAX_PROMPT_SECONDS = 30.0
MIN_SAMPLE_RATE = 16000
WAV_FORMATS = ("WAV", "WAVEX", "RF64")
PCM_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")
_UNKNOWN_DATA_SIZE = 0xFFFFFFFF  # streaming writers and RF64 put this in the RIFF data chunk size


@dataclass(frozen=True)
class PromptAudio:
    """A checked prompt: mono float32 samples at the file's own sample rate."""

    path: Path
    samples: np.ndarray
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.sample_rate

    def at(self, sample_rate: int, method: str = "sinc") -> np.ndarray:
        """The prompt at `sample_rate` (a copy-free view when no resampling is needed)."""
        return resample(self.samples, self.sample_rate, sample_rate, method)


def load_prompt_wav(
    path: str | Path, min_seconds: float = MIN_PROMPT_SECONDS, max_seconds: float = MAX_PROMPT_SECONDS
) -> PromptAudio:
    """Read and check a prompt WAV; raise ToolError naming the file and what is wrong with it."""
    import soundfile as sf

    path = Path(path)
    if not path.exists():
        raise ToolError(path, "prompt WAV does not exist", "a path to a mono or stereo WAV file of 0.5-30 s")
    if not path.is_file():
        raise ToolError(path, "prompt WAV is not a regular file", "a path to a WAV file")
    try:
        with sf.SoundFile(str(path)) as f:
            container, subtype, sample_rate, channels = f.format, f.subtype, int(f.samplerate), f.channels
            if container in WAV_FORMATS and subtype in PCM_SUBTYPES:
                samples = f.read(dtype="float32", always_2d=True)
    except PermissionError:
        raise ToolError(path, "prompt WAV cannot be read (permission denied)") from None
    except (sf.LibsndfileError, RuntimeError) as e:
        raise ToolError(path, f"is not a readable WAV file ({_first_line(e)})", _CONVERT_HINT) from None
    if container not in WAV_FORMATS:
        raise ToolError(path, f"is a {container} file, not a WAV", _CONVERT_HINT)
    if subtype not in PCM_SUBTYPES:
        what = "8-bit PCM" if subtype in ("PCM_U8", "PCM_S8") else f"{subtype} encoding"
        raise ToolError(path, f"uses {what}, which the frontend does not accept", _CONVERT_HINT)
    _check_not_truncated(path)
    if sample_rate < MIN_SAMPLE_RATE:
        raise ToolError(
            path,
            f"sample rate is {sample_rate} Hz",
            f"at least {MIN_SAMPLE_RATE} Hz (the speech tokenizer and CAM++ work at 16 kHz); "
            "record or export the prompt at 16 kHz or more",
        )
    seconds = len(samples) / sample_rate
    if seconds < min_seconds:
        raise ToolError(path, f"prompt is too short ({seconds:.3f} s)", f"at least {min_seconds:g} s of speech")
    if seconds > max_seconds:
        raise ToolError(
            path,
            f"prompt is too long ({seconds:.2f} s)",
            f"at most {max_seconds:g} s (the speech tokenizer's limit); cut the prompt",
        )
    if not np.isfinite(samples).all():
        raise ToolError(path, "contains NaN or infinite samples", "finite float samples in [-1, 1]")
    mono = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    return PromptAudio(path, np.ascontiguousarray(mono, dtype=np.float32), sample_rate)


RESAMPLERS = ("sinc", "soxr")


def resample(samples: np.ndarray, source_rate: int, target_rate: int, method: str = "sinc") -> np.ndarray:
    """Resample to `target_rate`, length ceil(N * target / source) like torchaudio's Resample: `sinc` is upstream's
    torchaudio kernel (the default), `soxr` the soxr 'HQ' resampler."""
    x = np.asarray(samples, dtype=np.float32)
    if source_rate == target_rate:
        return x
    if method == "sinc":
        from runtime.frontend.resample import resample_sinc

        return resample_sinc(x, source_rate, target_rate)
    if method != "soxr":
        raise ToolError("resampler", f"is {method!r}", f"one of {', '.join(RESAMPLERS)}")
    import soxr

    want = math.ceil(len(x) * target_rate / source_rate)
    y = soxr.resample(x, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)
    if len(y) >= want:
        return y[:want]
    return np.pad(y, (0, want - len(y)))


_CONVERT_HINT = (
    "a PCM WAV (16/24/32-bit int or float), e.g. `ffmpeg -i in.mp3 -ac 1 -ar 24000 -c:a pcm_s16le prompt.wav`"
)


def _first_line(err: Exception) -> str:
    return str(err).splitlines()[0][:200] if str(err) else type(err).__name__


def _check_not_truncated(path: Path) -> None:
    """Compare the RIFF `data` chunk's declared size with the bytes after it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] not in (b"RIFF", b"RF64") or head[8:12] != b"WAVE":
            return  # WAVEX/odd headers: libsndfile already parsed it; nothing more to check here
        offset = 12
        while offset + 8 <= size:
            f.seek(offset)
            chunk_id, chunk_size = struct.unpack("<4sI", f.read(8))
            if chunk_id == b"data":
                present = size - offset - 8
                if chunk_size != _UNKNOWN_DATA_SIZE and chunk_size > present:
                    raise ToolError(
                        path,
                        f"WAV file is truncated: its header announces {chunk_size} bytes of "
                        f"audio, the file holds {present}",
                        "a complete WAV file; re-export it",
                    )
                return
            offset += 8 + chunk_size + (chunk_size & 1)
