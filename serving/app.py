"""The tts-serve ASGI app: OpenAI's speech endpoint, a bi-streaming WebSocket, voices, health and metrics.

One PackEngine per process, one TtsSession per request (on its own worker thread, serving/worker.py), made exactly
as `tts-run --stream` makes it, so a request's PCM and chunk boundaries are tts-run's for the same pack, text,
voice and seed. See serving/__init__.py for the wire formats.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, File, Form, Request, UploadFile, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.websockets import WebSocketDisconnect

from runtime.cli import wav_header
from runtime.session import TtsSession
from serving.admission import Admission, Draining, Full
from serving.metrics import CONTENT_TYPE_LATEST, Metrics, StreamClock
from serving.voices import DEFAULT_VOICE, VoiceError, VoiceStore
from serving.worker import Cancelled, SessionWorker
from specs.errors import ToolError

log = logging.getLogger("tts-serve")

SEED_MAX = 2**63 - 1
RESPONSE_FORMATS = ("pcm", "wav")
STREAM_FORMATS = ("audio", "sse")
_GONE_POLL_S = 0.2  # while a request waits (queue, first chunk), how often to look for a client that left


@dataclass(frozen=True)
class Settings:
    model_id: str
    max_concurrency: int = 4
    max_queue: int = 16
    retry_after_s: int = 1
    max_chars: int = 10_000
    buffer_chunks: int = 32
    max_json_bytes: int = 1 << 20
    max_upload_bytes: int = 16 << 20


# ---- errors: OpenAI's shape, the offending field in `param` -----------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None, headers=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    @classmethod
    def from_tool_error(cls, e: ToolError, param: str | None = None) -> ApiError:
        """A ToolError about request field `param` (a VoiceError names its own), in the same grammar."""
        param = getattr(e, "param", param)
        message = e.message if param is None else ToolError(param, e.problem, e.expected).message
        return cls(getattr(e, "status", 400), message, param, "invalid_value")

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, headers=self.headers)


def session_error(e: ToolError, text_field: str) -> ApiError:
    """A session's ToolError as an API error; its subject "text" is the request's text field."""
    return ApiError.from_tool_error(e, text_field if e.subject == "text" else None)


class ClientGone(Exception):
    pass


async def unless_gone(awaitable, request: Request):
    """Await `awaitable`, giving up (ClientGone) if the HTTP client disconnects meanwhile."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_GONE_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                raise ClientGone()
    finally:
        if not task.done():
            task.cancel()


# ---- requests ---------------------------------------------------------------------------------------------
class VoiceRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str


class SpeechRequest(BaseModel):
    """OpenAI's `POST /v1/audio/speech` body, plus `seed`. Unknown fields are refused by name."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str
    voice: str | VoiceRef
    response_format: str = "wav"
    stream_format: str = "audio"
    speed: float = 1.0
    instructions: str | None = None
    seed: int = 0


def check_seed(seed: int) -> int:
    if not 0 <= seed <= SEED_MAX:
        raise ApiError(400, f"seed | is {seed}. Note: an integer in [0, 2^63 - 1]", "seed")
    return seed


def check_utf8(text: str, field: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ApiError(400, f"{field} | is not valid UTF-8 (character {e.start}). Note: UTF-8 text", field) from None
    return text


def check_speech(req: SpeechRequest, sample_rate: int) -> None:
    if not req.model:
        raise ApiError(400, "model | is empty. Note: any model name (GET /v1/models lists this server's)", "model")
    check_utf8(req.input, "input")
    if req.response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format | {req.response_format!r} is not supported. Note: pcm (raw PCM16LE mono at "
            f"{sample_rate} Hz) or wav",
            "response_format",
        )
    if req.stream_format not in STREAM_FORMATS:
        raise ApiError(400, f"stream_format | is {req.stream_format!r}. Note: audio or sse", "stream_format")
    if req.stream_format == "sse" and req.response_format != "pcm":
        raise ApiError(400, "response_format | sse events carry pcm only. Note: response_format pcm", "response_format")
    if req.speed != 1.0:
        raise ApiError(400, f"speed | is {req.speed}. Note: only 1.0 (the model's own pace)", "speed")
    check_seed(req.seed)


def speech_prompt(engine, voice, instructions: str | None):
    """The voice's prompt; with `instructions`, upstream's inference_instruct for a built-in speaker (tts-run
    --speaker NAME --instruct TEXT), refused elsewhere."""
    if not instructions:
        return voice.prompt
    if voice.kind != "speaker":
        raise ApiError(
            400,
            "instructions | apply to a built-in speaker of an -Instruct pack only. Note: omit them, or a speaker voice",
            "instructions",
        )
    from runtime.session import speaker_prompt

    try:
        return speaker_prompt(engine, voice.id, check_utf8(instructions, "instructions"))
    except ToolError as e:
        raise ApiError.from_tool_error(e, "instructions") from None


# ---- the server's state -----------------------------------------------------------------------------------
class Server:
    def __init__(self, engine, voices: VoiceStore, settings: Settings):
        self.engine, self.voices, self.settings = engine, voices, settings
        self.sample_rate = int(engine.sample_rate)
        self.admission = Admission(settings.max_concurrency, settings.max_queue)
        self.metrics = Metrics(self.admission)
        self.executor = ThreadPoolExecutor(settings.max_concurrency, thread_name_prefix="tts-session")
        self.workers: set[SessionWorker] = set()

    async def admit(self, endpoint: str, request: Request | None = None, clock: StreamClock | None = None) -> None:
        try:
            await (unless_gone(self.admission.acquire(), request) if request else self.admission.acquire())
        except Full:
            self.metrics.rejected.labels(endpoint).inc()
            s = self.settings
            raise ApiError(
                429,
                f"server | all {s.max_concurrency} streams are busy and {s.max_queue} requests wait. "
                f"Note: retry after {s.retry_after_s} s",
                None,
                "rate_limit_exceeded",
                {"Retry-After": str(s.retry_after_s)},
            ) from None
        except Draining:
            raise ApiError(503, "server | is shutting down. Note: retry on another replica", None, "draining") from None
        if clock is not None:
            clock.admitted()

    def start(self, prompt, seed: int) -> SessionWorker:
        """A worker for an admitted request; the slot is given back when its thread has ended."""
        engine, max_chars = self.engine, self.settings.max_chars

        def make_session():  # as tts-run --stream makes it
            return TtsSession(engine, prompt=prompt, seed=seed, stream=True, max_chars=max_chars)

        def on_exit():
            self.workers.discard(worker)
            self.admission.release()

        worker = SessionWorker(
            asyncio.get_running_loop(), self.executor, make_session, on_exit, self.settings.buffer_chunks
        )
        self.workers.add(worker)
        return worker

    def shutdown(self) -> None:
        self.admission.draining = True
        for w in list(self.workers):
            w.cancel()
        self.executor.shutdown(wait=True, cancel_futures=True)


class WorkerResponse(StreamingResponse):
    """A streamed response whose end, normal or not (client disconnect), cancels its worker and records it."""

    def __init__(self, content: AsyncIterator[bytes], worker: SessionWorker, clock: StreamClock, **kw):
        super().__init__(content, **kw)
        self.worker, self.clock = worker, clock
        self.outcome = "cancelled"

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.worker.cancel()
            self.clock.finish(self.outcome)


class BodyLimit:
    """Refuses request bodies over the limit (JSON: max_json_bytes, voice uploads: max_upload_bytes) from their
    Content-Length, before anything is read; a POST without one is refused too (pure ASGI: streaming untouched)."""

    def __init__(self, app, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            s = self.settings
            limit = s.max_upload_bytes if scope["path"] == "/v1/voices" else s.max_json_bytes
            length = dict(scope["headers"]).get(b"content-length", b"").decode()
            error = None
            if not length.isdigit():
                error = ApiError(411, "body | has no Content-Length. Note: send a sized body", "body")
            elif int(length) > limit:
                error = ApiError(413, f"body | is {length} bytes. Note: at most {limit} bytes", "body")
            if error is not None:
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


# ---- the app ----------------------------------------------------------------------------------------------
def create_app(engine, voices: VoiceStore, settings: Settings) -> FastAPI:
    server = Server(engine, voices, settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown)

    app = FastAPI(title="tts-serve", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)
    app.state.server = server
    sr = server.sample_rate

    app.add_middleware(BodyLimit, settings=settings)

    @app.exception_handler(ApiError)
    async def api_error(request, e: ApiError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request, e: RequestValidationError):
        err = e.errors()[0]
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "query", "form")]
        if err.get("type") == "json_invalid":
            loc = []
        param = loc[0] if loc else "body"
        where = ".".join(loc) if loc else "body"
        return ApiError(400, f"{where} | {err.get('msg', 'is invalid')}", param, err.get("type")).response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return ApiError(e.status_code, f"request | {e.detail}", None, None, getattr(e, "headers", None)).response()

    # -- health ----------------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/ready")
    async def ready():
        a = server.admission
        body = {"active": a.active, "queued": a.waiting, "max_concurrency": a.limit, "max_queue": a.queue}
        if a.draining:
            return JSONResponse({"status": "draining", **body}, 503)
        return {"status": "ready", **body}

    @app.get("/metrics")
    async def metrics():
        return Response(server.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        info = {"family": engine.pack.family, "sample_rate": sr}
        model = {"id": settings.model_id, "object": "model", "owned_by": "tts-serve", **info}
        return {"object": "list", "data": [model]}

    # -- voices ----------------------------------------------------------------------------------------
    @app.get("/v1/voices")
    async def list_voices():
        return {"object": "list", "data": [v.public() for v in voices.list()]}

    @app.post("/v1/voices", status_code=201)
    async def register_voice(
        request: Request,
        id: str = Form(...),
        audio_sample: UploadFile = File(...),
        transcript: str | None = Form(None),
    ):
        wav = await audio_sample.read()
        try:  # the frontend's models take a session slot while they run: registrations count against the limit
            await server.admit("voices", request)
        except ClientGone:
            return Response(status_code=499)
        try:
            voice = await asyncio.get_running_loop().run_in_executor(
                server.executor, voices.register, id, wav, transcript
            )
        except ToolError as e:
            raise ApiError.from_tool_error(e) from None
        finally:
            server.admission.release()
        return voice.public()

    # -- speech over HTTP ------------------------------------------------------------------------------
    @app.post("/v1/audio/speech")
    async def speech(req: SpeechRequest, request: Request):
        t_request = time.perf_counter()
        check_speech(req, sr)
        try:
            voice = voices.get(req.voice.id if isinstance(req.voice, VoiceRef) else req.voice)
        except VoiceError as e:
            raise ApiError.from_tool_error(e) from None
        prompt = speech_prompt(engine, voice, req.instructions)
        clock = StreamClock(server.metrics, "http", sr, t_request)
        try:
            await server.admit("http", request, clock)
        except ClientGone:
            return Response(status_code=499)
        worker = server.start(prompt, req.seed)
        worker.synthesize(req.input)
        try:  # the first chunk before the status line: errors found before any audio are proper 4xx replies
            first = await unless_gone(worker.next(), request)
        except ToolError as e:
            clock.finish("error")
            raise session_error(e, "input") from None
        except (ClientGone, Cancelled):
            worker.cancel()
            clock.finish("cancelled")
            return Response(status_code=499)

        headers = {"X-Sample-Rate": str(sr), "X-Audio-Format": "pcm_s16le_mono", "Cache-Control": "no-store"}
        sse_mode = req.stream_format == "sse"

        async def body() -> AsyncIterator[bytes]:
            if req.response_format == "wav":
                yield wav_header(sr, None)  # sizes unknown while streaming (0xFFFFFFFF), as tts-run to a FIFO
            chunk, n = first, 0
            try:
                while chunk is not None:
                    clock.sent(chunk.n_samples)
                    n += 1
                    if sse_mode:
                        yield sse(
                            {
                                "type": "speech.audio.delta",
                                "audio": base64.b64encode(chunk.pcm).decode(),
                                "chunk": chunk.meta(),
                            }
                        )
                    elif chunk.pcm:
                        yield chunk.pcm
                    chunk = await worker.next()
            except ToolError as e:
                response.outcome = "error"
                if not sse_mode:
                    raise  # a raw stream can only be cut: the client sees an incomplete body
                yield sse({"type": "error", **session_error(e, "input").body()})
                return
            if sse_mode:
                yield sse(
                    {
                        "type": "speech.audio.done",
                        "chunks": n,
                        "samples": clock.samples,
                        "sample_rate": sr,
                        "usage": {"input_characters": len(req.input)},
                    }
                )
            response.outcome = "completed"

        media = "text/event-stream" if sse_mode else "audio/wav" if req.response_format == "wav" else "audio/pcm"
        response = WorkerResponse(body(), worker, clock, media_type=media, headers=headers)
        return response

    # -- speech over WebSocket (bi-streaming text in) --------------------------------------------------
    @app.websocket("/v1/audio/speech/stream")
    async def speech_stream(ws: WebSocket):
        t_request = time.perf_counter()
        clock = StreamClock(server.metrics, "ws", sr, t_request)
        q = ws.query_params
        try:
            try:
                seed = check_seed(int(q.get("seed", "0")))
            except ValueError:
                raise ApiError(400, f"seed | is {q.get('seed')!r}. Note: an integer", "seed") from None
            if q.get("response_format", "pcm") != "pcm":
                raise ApiError(400, "response_format | the WebSocket streams pcm only", "response_format")
            try:
                voice = voices.get(q.get("voice", DEFAULT_VOICE))
            except VoiceError as e:
                raise ApiError.from_tool_error(e) from None
            await server.admit("ws", None, clock)
        except ApiError as e:  # refused in the handshake: an HTTP reply with the same JSON body
            await ws.send_denial_response(e.response())
            return
        worker = server.start(voice.prompt, seed)
        protocol_error: list[ApiError] = []
        outcome = "cancelled"
        reader = None
        try:
            await ws.accept()
            reader = asyncio.create_task(read_pieces(ws, worker, protocol_error))
            n = 0
            while (chunk := await worker.next()) is not None:
                clock.sent(chunk.n_samples)
                n += 1
                await ws.send_text(json.dumps({"type": "audio", **chunk.meta()}))
                await ws.send_bytes(chunk.pcm)
            await ws.send_text(json.dumps({"type": "done", "chunks": n, "samples": clock.samples, "sample_rate": sr}))
            await ws.close(1000)
            outcome = "completed"
        except ToolError as e:
            outcome = "error"
            await close_with(ws, session_error(e, "text"))
        except Cancelled:
            if protocol_error:
                outcome = "error"
                await close_with(ws, protocol_error[0])
        except (WebSocketDisconnect, OSError, RuntimeError):
            pass  # the client left
        finally:
            if reader is not None:
                reader.cancel()
            worker.cancel()
            clock.finish(outcome)

    return app


async def read_pieces(ws: WebSocket, worker: SessionWorker, protocol_error: list) -> None:
    """Client messages -> the worker: {"type": "text", "text": ...} pieces, then {"type": "flush"} (no more text).
    A disconnect cancels the stream; a malformed message too (the writer reports it)."""
    flushed = False
    while True:
        try:
            msg = await ws.receive()
        except (WebSocketDisconnect, RuntimeError):  # the socket is closed already
            msg = {"type": "websocket.disconnect"}
        if msg["type"] == "websocket.disconnect":
            worker.cancel()
            return
        try:
            if msg.get("text") is None:
                raise ApiError(400, "message | is binary. Note: JSON text messages", "type")
            try:
                data = json.loads(msg["text"])
            except ValueError:
                raise ApiError(400, 'message | is not JSON. Note: {"type": "text", "text": ...}', "type") from None
            kind = data.get("type") if isinstance(data, dict) else None
            if flushed:
                raise ApiError(400, "message | arrived after flush. Note: a new stream per request", "type")
            if kind == "text":
                text = data.get("text")
                if not isinstance(text, str):
                    raise ApiError(400, f"text | is a {type(text).__name__}. Note: a string", "text")
                worker.push_text(check_utf8(text, "text"))
            elif kind == "flush":
                flushed = True
                worker.flush()
            else:
                raise ApiError(400, f"type | is {str(kind)[:40]!r}. Note: text or flush", "type")
        except ApiError as e:
            protocol_error.append(e)
            worker.cancel()
            return


async def close_with(ws: WebSocket, e: ApiError) -> None:
    try:
        await ws.send_text(json.dumps({"type": "error", **e.body()}))
        await ws.close(1008 if e.status < 500 else 1011)
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
