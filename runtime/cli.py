"""`tts-run`: synthesize with a pack. Text (or speech tokens) in, 24 kHz mono PCM16LE out."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from specs.cli import console_log, new_app
from specs.errors import ToolError, cli_entry

app = new_app()


def read_text_file(path: Path) -> str:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ToolError(path, "text file does not exist") from None
    except OSError as e:
        raise ToolError(path, f"cannot be read ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ToolError(
            path, f"is not valid UTF-8 (byte {e.start}: 0x{data[e.start]:02x})", "a UTF-8 text file"
        ) from None


def read_tokens(path: Path) -> list[int]:
    """Speech tokens from a .npy array or a text file of integers (whitespace/comma separated)."""
    import numpy as np

    if not path.is_file():
        raise ToolError(path, "token file does not exist")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:
            raise ToolError(path, f"cannot be read as .npy ({e})") from None
        if not np.issubdtype(arr.dtype, np.integer):
            raise ToolError(path, f"holds {arr.dtype} values", "integer speech token ids")
        return [int(t) for t in arr.reshape(-1)]
    text = read_text_file(path).replace(",", " ")
    try:
        return [int(t) for t in text.split()]
    except ValueError as e:
        raise ToolError(path, f"holds a non-integer ({e})", "integer speech token ids") from None


class PcmSink:
    """WAV file (PCM_16 mono at the pack rate) or raw PCM16LE on stdout ('-'); written chunk by chunk."""

    def __init__(self, out: Path, sample_rate: int):
        self.raw = str(out) == "-"
        if self.raw:
            self.f: Any = sys.stdout.buffer  # or a soundfile.SoundFile
        else:
            import soundfile as sf

            out.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = out.with_name(f".{out.name}.part")
            self.out = out
            self.f = sf.SoundFile(
                str(self.tmp), "w", samplerate=sample_rate, channels=1, subtype="PCM_16", format="WAV"
            )

    def write(self, pcm: bytes) -> None:
        if self.raw:
            self.f.write(pcm)
            self.f.flush()
        else:
            import numpy as np

            self.f.write(np.frombuffer(pcm, "<i2"))  # int16 into a PCM_16 file: written as is

    def close(self, ok: bool) -> None:
        if self.raw:
            return
        self.f.close()
        if ok:
            self.tmp.replace(self.out)  # no half-written WAV under the final name
        else:
            self.tmp.unlink(missing_ok=True)


def _one_of(*choices: str):
    def check(value: str) -> str:
        if value not in choices:
            raise typer.BadParameter(f"{value!r} (choose from {', '.join(choices)})")
        return value

    return check


@app.command()
def run(
    pack: Path = typer.Option(..., "--pack", "-p", help="Pack directory written by tts-export."),
    text: str | None = typer.Option(None, "--text", "-t", help="Text to synthesize."),
    text_file: Path | None = typer.Option(None, "--text-file", help="UTF-8 file with the text."),
    tokens: Path | None = typer.Option(
        None,
        "--tokens",
        help="Speech tokens (.npy or integers in a text file): token -> audio only (flow + vocoder), no LLM needed.",
    ),
    prompt_wav: Path | None = typer.Option(
        None,
        "--prompt-wav",
        help="Zero-shot voice prompt (WAV, mono or stereo, >= 16 kHz, 0.5-30 s). Resampled for the frontend only.",
    ),
    prompt_text: str | None = typer.Option(
        None,
        "--prompt-text",
        help="Transcript of --prompt-wav. Without it the prompt is used cross-lingually (voice only).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Output WAV (PCM16LE mono at the pack's rate), or '-' for raw PCM16LE on stdout."
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Streaming synthesis (upstream's chunk schedule); audio is written chunk by chunk as it is produced.",
    ),
    bistream: bool = typer.Option(
        False,
        "--bistream",
        help="Feed the text word by word into the session "
        "(CosyVoice2 bi-streaming text input) instead of sentence by sentence.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and vocoder noise: same seed, same bytes."),
    device: str = typer.Option(
        "cpu", "--device", callback=_one_of("cpu", "cuda"), help="ONNX Runtime device: cpu or cuda."
    ),
    trt: str = typer.Option(
        "auto",
        "--trt",
        callback=_one_of("auto", "off", "fp16", "fp32"),
        help="TensorRT plans: auto (on --device cuda, the pack's plans if "
        "it has any, fp16 first), off, fp16 or fp32. Mismatched plans (other GPU, TensorRT "
        "version or graph) are refused; plans are never built at run time.",
    ),
    llm_graph: str = typer.Option("llm", "--llm-graph", help="LLM graph of the pack, e.g. llm or llm.int8."),
    threads: int = typer.Option(0, "--threads", min=0, help="ONNX Runtime intra-op threads (0: ORT default)."),
    max_chars: int = typer.Option(10_000, "--max-chars", min=1, help="Refuse longer texts (split documents instead)."),
    chunk_log: Path | None = typer.Option(
        None, "--chunk-log", help="Write one JSON line per output chunk (offsets, sizes, sha256)."
    ),
):
    """Synthesize speech with a pack on ONNX Runtime (CPU or CUDA), or on its TensorRT plans.

    Prints the streaming schedule at start and, at the end, time-to-first-audio, real-time factor and
    the number of chunks. Output chunks are 40 ms (960 samples at 24 kHz); chunk boundaries and bytes
    are identical across runs with the same seed.
    """
    from runtime.engine import PackEngine
    from runtime.session import Prompt, TtsSession

    log = console_log(stderr=True)
    sources = [s for s in (text, text_file, tokens) if s is not None]
    if len(sources) != 1:  # usage errors: typer's exit code 2
        raise typer.BadParameter("give exactly one of --text, --text-file or --tokens", param_hint="--text")
    if prompt_text is not None and prompt_wav is None:
        raise typer.BadParameter(
            "given without --prompt-wav (it is the transcript of a prompt WAV)", param_hint="--prompt-text"
        )
    if text_file is not None:
        text = read_text_file(text_file)
    token_ids = read_tokens(tokens) if tokens is not None else None

    t_load = time.perf_counter()
    engine = PackEngine.get(
        pack,
        device=device,
        llm_graph=llm_graph,
        threads=threads or None,
        trt=trt,
        trt_chunk="stream" if stream else "offline",
    )
    prompt = None
    if prompt_wav is not None:
        inputs = engine.prompt_frontend.zero_shot(prompt_wav, prompt_text or "")
        prompt = Prompt.from_inputs(inputs, cross_lingual=prompt_text is None)
    session = TtsSession(engine, prompt=prompt, seed=seed, stream=stream, max_chars=max_chars)
    backend = (
        f"TensorRT {engine.trt} plans for {', '.join(engine.plans_used)}"
        if engine.plans_used
        else f"ONNX Runtime ({device})"
    )
    log(f"loaded {pack} in {time.perf_counter() - t_load:.2f} s on {backend}; {engine.describe_schedule()}")

    sink = PcmSink(out, engine.sample_rate)
    logf = open(chunk_log, "w") if chunk_log else None
    ok = False
    n_chunks = n_samples = 0
    try:
        if token_ids is not None:
            session.push_tokens(token_ids)
        elif bistream:
            for word in _pieces(text or ""):
                session.push_text(word)
                for chunk in session.chunks():
                    n_chunks, n_samples = _emit(chunk, sink, logf, n_chunks, n_samples)
            session.flush()
        else:
            session.synthesize(text or "")
        for chunk in session.chunks():
            n_chunks, n_samples = _emit(chunk, sink, logf, n_chunks, n_samples)
        ok = True
    finally:
        sink.close(ok)
        if logf:
            logf.close()
    wall = time.perf_counter() - session.t_start if session.t_start else 0.0
    seconds = n_samples / engine.sample_rate
    ttfa = session.ttfa
    log(
        f"PASSED | {seconds:.2f} s of audio in {n_chunks} chunks | TTFA {ttfa * 1000 if ttfa else float('nan'):.0f} ms"
        f" | RTF {wall / seconds if seconds else float('nan'):.3f} | {session.flow_calls} flow calls | "
        f"tts-run {'stdout' if str(out) == '-' else out}"
    )


def _pieces(text: str):
    """Words with their trailing spaces, as a streaming text source would deliver them."""
    import re

    return [m.group(0) for m in re.finditer(r"\S+\s*|\s+", text)]


def _emit(chunk, sink, logf, n_chunks, n_samples):
    sink.write(chunk.pcm)
    if logf:
        logf.write(json.dumps(chunk.meta()) + "\n")
    return n_chunks + 1, n_samples + chunk.n_samples


@cli_entry
def main() -> None:
    app()


if __name__ == "__main__":
    main()
