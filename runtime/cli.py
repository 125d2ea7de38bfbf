"""`tts-run`: synthesize with a pack. Text (or speech tokens) in, mono PCM16LE out at the pack's rate (24 kHz for
CosyVoice2/3, 22 050 Hz for CosyVoice 1)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from specs.cli import console_log, new_app
from specs.errors import ToolError, cli_entry
from specs.outputs import OutputFile, OutputTarget, check_output

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


INT64_MAX = 2**63 - 1


def read_tokens(path: Path) -> list[int]:
    """Speech tokens from a .npy array or a text file of integers (whitespace/comma separated)."""
    import numpy as np

    if not path.is_file():
        raise ToolError(path, "token file does not exist")
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except Exception as e:  # truncated, zero-byte (EOFError), not .npy, object arrays
            raise ToolError(
                path, f"cannot be read as .npy ({type(e).__name__}: {e})", "an integer .npy array"
            ) from None
        if not np.issubdtype(arr.dtype, np.integer):
            raise ToolError(path, f"holds {arr.dtype} values", "integer speech token ids")
        tokens = [int(t) for t in arr.reshape(-1)]
    else:
        text = read_text_file(path).replace(",", " ")
        try:
            tokens = [int(t) for t in text.split()]
        except ValueError as e:
            raise ToolError(path, f"holds a non-integer ({e})", "integer speech token ids") from None
    huge = [t for t in tokens if not -INT64_MAX - 1 <= t <= INT64_MAX]
    if huge:
        raise ToolError(path, f"holds {len(huge)} id(s) outside the 64-bit range, e.g. {huge[0]}", "speech token ids")
    return tokens


def check_utf8(value: str, option: str) -> str:
    """Command-line text arrives as str with surrogate escapes where its bytes were not UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = value[e.start].encode("utf-8", "surrogateescape")
        raise ToolError(
            option, f"is not valid UTF-8 (character {e.start}: byte 0x{bad[0]:02x})", "UTF-8 text (or --text-file FILE)"
        ) from None
    return value


class PcmSink:
    """A WAV file (PCM16LE mono at the pack rate) or raw PCM16LE on stdout ('-'), written chunk by chunk under the
    output rules of specs/outputs.py: a regular file through a .part file renamed when complete (its WAV sizes
    filled in then), a FIFO or character device streamed in place (a streaming WAV header with unknown sizes)."""

    def __init__(self, target: OutputTarget, sample_rate: int):
        self.target = target
        self.out = OutputFile(target)
        self.sample_rate = sample_rate
        self.samples = 0

    def __enter__(self) -> PcmSink:
        self.out.__enter__()
        if self.target.kind != "stdout":
            self.out.write(wav_header(self.sample_rate, None))
        return self

    def write(self, pcm: bytes) -> None:
        self.out.write(pcm)
        self.samples += len(pcm) // 2

    def close(self, ok: bool) -> None:
        if ok:
            if self.target.kind == "file":
                self.out.rewrite_at(0, wav_header(self.sample_rate, self.samples))
            self.out.commit()
        self.out.__exit__(None if ok else RuntimeError, None, None)


def wav_header(sample_rate: int, samples: int | None) -> bytes:
    """44-byte RIFF/WAVE header, PCM 16-bit mono; unknown length (a stream) as 0xFFFFFFFF, as ffmpeg writes it."""
    import struct

    data = 0xFFFFFFFF if samples is None else 2 * samples
    riff = 0xFFFFFFFF if samples is None else 36 + data
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, sample_rate, 2 * sample_rate, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def one_of(*choices: str):
    """A typer callback accepting only `choices` (tts-run's and tts-serve's option values)."""

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
    speaker: str | None = typer.Option(
        None,
        "--speaker",
        help="A built-in speaker of the pack (CosyVoice-300M-SFT / -Instruct), instead of a prompt WAV. "
        "See --list-speakers.",
    ),
    instruct: str | None = typer.Option(
        None,
        "--instruct",
        help="Instruct text for a CosyVoice-300M-Instruct pack, with --speaker (upstream's inference_instruct; its "
        "examples end it with <|endofprompt|>).",
    ),
    list_speakers: bool = typer.Option(
        False, "--list-speakers", help="Print the pack's built-in speaker names, one per line, and exit."
    ),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Output WAV (PCM16LE mono at the pack's rate), or '-' for raw PCM16LE on stdout."
    ),
    stream: bool = typer.Option(
        False,
        "--stream",
        help="Streaming synthesis (upstream's chunk schedule); audio is written chunk by chunk as it is produced.",
    ),
    pipeline: bool = typer.Option(
        False,
        "--pipeline/--no-pipeline",
        help="Run the LLM on its own thread ahead of flow and vocoder (same bytes). Off by default: it pays only "
        "where cores are spare (on 2 cores it measured slower).",
    ),
    bistream: bool = typer.Option(
        False,
        "--bistream",
        help="Feed the text word by word into the session "
        "(CosyVoice2 bi-streaming text input) instead of sentence by sentence.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for sampling and vocoder noise: same seed, same bytes."),
    device: str = typer.Option(
        "cpu", "--device", callback=one_of("cpu", "cuda"), help="ONNX Runtime device: cpu or cuda."
    ),
    trt: str = typer.Option(
        "auto",
        "--trt",
        callback=one_of("auto", "off", "fp16", "fp32"),
        help="TensorRT plans: auto (on --device cuda, the pack's plans if "
        "it has any, fp16 first), off, fp16 or fp32. Mismatched plans (other GPU, TensorRT "
        "version or graph) are refused; plans are never built at run time.",
    ),
    llm_graph: str = typer.Option("llm", "--llm-graph", help="LLM graph of the pack, e.g. llm or llm.int8."),
    threads: int | None = typer.Option(
        None, "--threads", min=1, help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice)."
    ),
    max_chars: int = typer.Option(10_000, "--max-chars", min=1, help="Refuse longer texts (split documents instead)."),
    chunk_log: Path | None = typer.Option(
        None,
        "--chunk-log",
        help="Write one JSON line per output chunk (offsets, sizes, sha256); with --chunk-policy or --realtime "
        "also a first line with the chunk policy used and a last line with the playout report.",
    ),
    chunk_policy: Path | None = typer.Option(
        None,
        "--chunk-policy",
        help="JSON file overriding the pack's tunable chunk-policy fields (token_hop_len, token_max_hop_len, "
        "stream_scale_factor, output_chunk_samples). The pack's own policy is upstream's (parity); a tuned one "
        "changes when audio comes out and is printed.",
    ),
    realtime: bool = typer.Option(
        False,
        "--realtime",
        help="Paced playout: chunks are released at the audio clock from a fixed ring of blocks after the "
        "pre-roll; prints time to first audio, underruns and release jitter.",
    ),
    preroll_ms: float = typer.Option(
        200.0, "--preroll-ms", min=0, help="With --realtime: audio buffered before playout starts."
    ),
    resampler: str = typer.Option(
        "sinc",
        "--resampler",
        callback=one_of("sinc", "soxr"),
        help="Prompt resampler: sinc (upstream's torchaudio kernel, exact features) or soxr. Output audio is "
        "never resampled.",
    ),
    verify: bool = typer.Option(
        True,
        "--verify/--no-verify",
        help="Check every pack file against the manifest's sha256 before loading (verdicts are cached per file "
        "identity, so reloads are fast). --no-verify is for development only and is logged.",
    ),
):
    """Synthesize speech with a pack on ONNX Runtime (CPU or CUDA), or on its TensorRT plans.

    Prints the streaming schedule at start and, at the end, time-to-first-audio, real-time factor and
    the number of chunks. Output chunks are 40 ms (960 samples at 24 kHz, 882 at 22 050 Hz); chunk boundaries
    and bytes are identical across runs with the same seed. CosyVoice 1 packs also speak with built-in
    speakers (--speaker, --list-speakers) and instruct text (--instruct, -Instruct packs).
    """
    from runtime.engine import PackEngine
    from runtime.session import Prompt, TtsSession, speaker_prompt

    log = console_log(stderr=True)
    if list_speakers:
        engine = PackEngine.get(pack, device=device, verify=verify)
        if not engine.speakers:
            raise ToolError(pack, "has no built-in speakers", "a pack exported from a bundle with spk2info.pt")
        typer.echo("\n".join(engine.speakers))
        return
    if out is None:
        raise typer.BadParameter("missing (a WAV path, or '-' for raw PCM on stdout)", param_hint="--out")
    if speaker is not None and prompt_wav is not None:
        raise typer.BadParameter("give --speaker or --prompt-wav, not both", param_hint="--speaker")
    if instruct is not None and speaker is None:
        raise typer.BadParameter("needs --speaker (instruct mode speaks in a built-in voice)", param_hint="--instruct")
    if realtime and bistream:
        raise typer.BadParameter("paces a whole request; not with --bistream", param_hint="--realtime")
    sources = [s for s in (text, text_file, tokens) if s is not None]
    if len(sources) != 1:  # usage errors: typer's exit code 2
        raise typer.BadParameter("give exactly one of --text, --text-file or --tokens", param_hint="--text")
    if prompt_text is not None and prompt_wav is None:
        raise typer.BadParameter(
            "given without --prompt-wav (it is the transcript of a prompt WAV)", param_hint="--prompt-text"
        )
    # Every output is checked before any work (specs/outputs.py): a directory, an unwritable place, a socket
    # is refused now, not after synthesis.
    target = check_output(out, "--out", allow_stdout=True)
    log_target = check_output(chunk_log, "--chunk-log") if chunk_log is not None else None
    if target.followed_link:
        log(f"--out {out} is a symbolic link: writing to {target.real}")
    if text is not None:
        text = check_utf8(text, "--text")
    if prompt_text is not None:
        prompt_text = check_utf8(prompt_text, "--prompt-text")
    if text_file is not None:
        text = read_text_file(text_file)
    token_ids = read_tokens(tokens) if tokens is not None else None
    overrides = read_policy_overrides(chunk_policy) if chunk_policy is not None else {}

    t_load = time.perf_counter()
    if not verify:
        log("WARNING | --no-verify: pack files are NOT checked against the manifest (development only)")
    engine = PackEngine.get(
        pack,
        device=device,
        llm_graph=llm_graph,
        threads=threads,
        trt=trt,
        trt_chunk="stream" if stream else "offline",
        verify=verify,
        chunk_policy_overrides=overrides,
    )
    if engine.policy_tuned:
        log(f"chunk policy tuned by {chunk_policy}: {json.dumps(overrides, sort_keys=True)}")
    prompt = None
    if speaker is not None:
        prompt = speaker_prompt(
            engine, check_utf8(speaker, "--speaker"), check_utf8(instruct, "--instruct") if instruct else None
        )
    if prompt_wav is not None:
        engine.prompt_frontend.resampler = resampler
        inputs = engine.prompt_frontend.zero_shot(prompt_wav, prompt_text or "")
        prompt = Prompt.from_inputs(inputs, cross_lingual=prompt_text is None)
    session = TtsSession(engine, prompt=prompt, seed=seed, stream=stream, max_chars=max_chars, pipeline=pipeline)
    backend = (
        f"TensorRT {engine.trt} plans for {', '.join(engine.plans_used)}"
        if engine.plans_used
        else f"ONNX Runtime ({device})"
    )
    stages = (
        f"LLM on its own thread, token queue {session.token_queue_capacity}"
        if pipeline and not bistream and tokens is None
        else "one thread"
    )
    log(f"loaded {pack} in {time.perf_counter() - t_load:.2f} s on {backend}; {engine.describe_schedule()}; {stages}")

    sink = PcmSink(target, engine.sample_rate)
    logf = OutputFile(log_target) if log_target else None
    ok = False
    n_chunks = n_samples = 0
    try:
        sink.__enter__()
        if logf:
            logf.__enter__()
            if chunk_policy is not None or realtime:
                record = {"chunk_policy": engine.chunk_policy.to_dict(), "tuned": overrides}
                logf.write((json.dumps(record, sort_keys=True) + "\n").encode())
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
        if realtime:
            from runtime.playout import play

            report = play(session, lambda pcm, chunk: _emit(chunk, sink, logf, 0, 0), preroll_ms=preroll_ms)
            n_chunks, n_samples = report.chunks, report.samples
            log(report.line())
            if logf:
                logf.write((json.dumps({"playout": report.to_dict()}) + "\n").encode())
        for chunk in session.chunks():
            n_chunks, n_samples = _emit(chunk, sink, logf, n_chunks, n_samples)
        ok = True
    finally:
        sink.close(ok)
        if logf:
            if ok:
                logf.commit()
            logf.__exit__(None if ok else RuntimeError, None, None)
    wall = time.perf_counter() - session.t_start if session.t_start else 0.0
    seconds = n_samples / engine.sample_rate
    ttfa = session.ttfa
    log(
        f"PASSED | {seconds:.2f} s of audio in {n_chunks} chunks | TTFA {ttfa * 1000 if ttfa else float('nan'):.0f} ms"
        f" | RTF {wall / seconds if seconds else float('nan'):.3f} | {session.flow_calls} flow calls | "
        f"tts-run {'stdout' if str(out) == '-' else out}"
    )


def read_policy_overrides(path: Path) -> dict:
    """--chunk-policy FILE: a JSON object of tunable chunk-policy fields (checked against the pack's policy later)."""
    text = read_text_file(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ToolError(path, f"is not JSON ({e.msg} at line {e.lineno})", 'e.g. {"token_hop_len": 50}') from None
    if not isinstance(data, dict):
        raise ToolError(path, f"holds a JSON {type(data).__name__}", 'a JSON object, e.g. {"token_hop_len": 50}')
    return data  # fields and values are checked by ChunkPolicy.with_overrides


def _pieces(text: str):
    """Words with their trailing spaces, as a streaming text source would deliver them."""
    import re

    return [m.group(0) for m in re.finditer(r"\S+\s*|\s+", text)]


def _emit(chunk, sink, logf, n_chunks, n_samples):
    sink.write(chunk.pcm)
    if logf:
        logf.write((json.dumps(chunk.meta()) + "\n").encode())
    return n_chunks + 1, n_samples + chunk.n_samples


@cli_entry
def main() -> None:
    app()


if __name__ == "__main__":
    main()
