"""`tts-serve`: an OpenAI-compatible streaming speech server for one pack, on uvicorn."""

from __future__ import annotations

import signal
import socket
import sys
import time
from pathlib import Path

import typer

from runtime.cli import one_of
from specs.cli import console_log, new_app
from specs.errors import ToolError

app = new_app()


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a busy port is a one-line error and port 0 gets a free port. It
    listens at once: connections made before uvicorn runs wait in the backlog instead of being refused."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise ToolError(f"{host}:{port}", f"cannot listen ({e.strerror})", "a free port (--port 0: any)") from None
    return sock


def warm_up(engine, log, utterance: bool) -> None:
    """Load what sessions would load lazily (LLM, tokenizer, frontend: not to be raced on by several threads), and
    with `utterance` run one short one, so that the first request does not pay ONNX Runtime's first run."""
    from runtime.session import TtsSession

    engine.llm, engine.tokenizer  # noqa: B018
    try:
        engine.prompt_frontend  # noqa: B018
    except ToolError as e:
        log(f"WARNING | voices cannot be registered: {e.message}")
    if not utterance:
        return
    t = time.perf_counter()
    session = TtsSession(engine, seed=0, stream=True)
    session.synthesize("Ready.")
    for _ in session.chunks():
        pass
    log(f"warm-up utterance in {time.perf_counter() - t:.2f} s")


@app.command()
def serve(
    pack: Path = typer.Option(..., "--pack", "-p", help="Pack directory written by tts-export."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port to listen on (0: any free port)."),
    voices_dir: Path | None = typer.Option(
        None, "--voices-dir", help="Where registered voices are kept (POST /v1/voices); without it none can be."
    ),
    max_concurrency: int = typer.Option(
        4, "--max-concurrency", min=1, help="Sessions synthesizing at once (one worker thread each)."
    ),
    max_queue: int = typer.Option(
        16, "--max-queue", min=0, help="Requests that may wait for a session; beyond, 429 with Retry-After."
    ),
    retry_after: int = typer.Option(1, "--retry-after", min=1, help="Retry-After seconds sent with a 429."),
    max_chars: int = typer.Option(10_000, "--max-chars", min=1, help="Refuse longer texts (as tts-run)."),
    model_name: str | None = typer.Option(
        None, "--model-name", help="The model id GET /v1/models reports (default: the pack directory's name)."
    ),
    device: str = typer.Option(
        "cpu", "--device", callback=one_of("cpu", "cuda"), help="ONNX Runtime device: cpu or cuda."
    ),
    trt: str = typer.Option(
        "auto", "--trt", callback=one_of("auto", "off", "fp16", "fp32"), help="TensorRT plans, as tts-run --trt."
    ),
    llm_graph: str = typer.Option("llm", "--llm-graph", help="LLM graph of the pack, e.g. llm or llm.int8."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="ONNX Runtime intra-op threads per graph."),
    verify: bool = typer.Option(True, "--verify/--no-verify", help="Check pack files against the manifest first."),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup", help="Synthesize one short utterance at start."),
    shutdown_timeout: float = typer.Option(
        30.0,
        "--shutdown-timeout",
        min=0,
        help="On SIGTERM/SIGINT: seconds HTTP streams in flight may take to finish before they are cancelled "
        "(WebSocket streams are closed at once with code 1012).",
    ),
    access_log: bool = typer.Option(False, "--access-log/--no-access-log", help="Log every request."),
):
    """Serve a pack: OpenAI's POST /v1/audio/speech (pcm/wav, chunked or SSE), WS /v1/audio/speech/stream,
    voices, /health, /ready and Prometheus /metrics.

    Each request's PCM equals tts-run --stream for the same pack, text, voice and seed.
    """
    import uvicorn

    from runtime.engine import PackEngine
    from serving.app import Settings, create_app
    from serving.voices import VoiceStore

    log = console_log(stderr=True)
    t_load = time.perf_counter()
    engine = PackEngine.get(pack, device=device, llm_graph=llm_graph, threads=threads, trt=trt, verify=verify)
    warm_up(engine, log, utterance=warmup)
    voices = VoiceStore(engine, voices_dir, log=log)
    settings = Settings(
        model_id=model_name or pack.resolve().name,
        max_concurrency=max_concurrency,
        max_queue=max_queue,
        retry_after_s=retry_after,
        max_chars=max_chars,
    )
    sock = bind(host, port)
    where = sock.getsockname()
    log(
        f"loaded {pack} in {time.perf_counter() - t_load:.2f} s; {engine.describe_schedule()}; "
        f"{len(voices.list())} voices; {max_concurrency} streams at once, {max_queue} queued"
    )
    config = uvicorn.Config(
        create_app(engine, voices, settings),
        timeout_graceful_shutdown=shutdown_timeout,
        access_log=access_log,
        log_level="info" if access_log else "warning",
    )
    server = uvicorn.Server(config)
    # uvicorn re-raises a caught SIGTERM/SIGINT to the previous handler once it has shut down gracefully: make that
    # handler a no-op, so a graceful stop exits 0.
    stopped_by: list[int] = []
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: stopped_by.append(signum))
    log(f"tts-serve | listening on http://{host if ':' not in host else f'[{host}]'}:{where[1]}")
    server.run(sockets=[sock])
    reason = signal.Signals(stopped_by[0]).name if stopped_by else "exit"
    log(f"tts-serve | stopped ({reason})")


def main() -> None:
    # Not specs.errors.cli_entry: uvicorn owns SIGINT/SIGTERM (graceful shutdown) once serving.
    try:
        app()
    except ToolError as err:
        print(f"ERROR | {err.message}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
