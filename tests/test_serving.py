"""tts-serve under the real uvicorn server on 127.0.0.1, against `tts-run` itself: each stream's PCM and chunk
boundaries equal `tts-run --stream` (WebSocket: `--stream --bistream`, same text pieces) for the same pack, text,
voice and seed. Servers are subprocesses in their own process group, started and stopped here; every wait is
bounded."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import REPO

pytestmark = [pytest.mark.serving, pytest.mark.oracle]  # oracle: the tiny pack is exported from upstream modules

BIN = Path(sys.executable).parent
T_SHORT = "Hello there, this is a test of the server."  # seed 2: 3 flow calls on the tiny pack
T_OTHER = "The quick brown fox jumps over the lazy dog. It was a sunny day in the park."
T_LONG = " ".join(["This sentence keeps the synthesizer busy for a while."] * 20)  # ~20 segments, many seconds
TRANSCRIPT = "Hello, this is my voice."
START_TIMEOUT_S = 90
STREAM_TIMEOUT_S = 60
JSON = {"content-type": "application/json"}


def prompt_wav(path: Path) -> Path:
    """A 2 s voiced-like prompt (150 Hz with a slow tremolo plus a little noise), 24 kHz PCM16."""
    rng = np.random.default_rng(0)
    t = np.arange(48000) / 24000
    x = 0.3 * np.sin(2 * np.pi * 150 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) + 0.01 * rng.standard_normal(t.size)
    sf.write(str(path), x.astype(np.float32), 24000, subtype="PCM_16")
    return path


class Served:
    """`python -m serving` (= tts-serve) on a free port; its stderr is collected by a thread."""

    def __init__(self, pack: Path, voices: Path, *args: str, env: dict):
        cmd = [sys.executable, "-m", "serving", "--pack", str(pack), "--port", "0", "--voices-dir", str(voices)]
        self.proc = subprocess.Popen(
            [*cmd, *args], cwd=REPO, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, start_new_session=True
        )
        self.lines: list[str] = []
        self._port = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self._port.wait(START_TIMEOUT_S):
            self.stop()
            raise AssertionError("tts-serve did not start:\n" + "\n".join(self.lines[-30:]))
        self.http = httpx.Client(base_url=self.url, timeout=STREAM_TIMEOUT_S)
        try:
            assert self.http.get("/ready").json()["status"] == "ready", self.log()
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.lines.append(line)
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self.url = f"http://127.0.0.1:{self.port}"
                self._port.set()

    def log(self) -> str:
        return "\n".join(self.lines[-40:])

    def metric(self, name: str) -> float:
        text = self.http.get("/metrics").text
        m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    def wait_for(self, what, timeout: float = 15.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if what():
                return True
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting; server log:\n{self.log()}")

    def wait_idle(self) -> None:
        self.wait_for(lambda: self.http.get("/ready").json()["active"] == 0)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()  # this test's own child, by its pid
                self.proc.wait(10)
        return self.proc.returncode


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict:
    return {**os.environ, "TTS_VERIFY_CACHE": str(tmp_path_factory.mktemp("verify") / "verified.json")}


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    return prompt_wav(tmp_path_factory.mktemp("prompt") / "prompt.wav")


@pytest.fixture(scope="module")
def server(tiny_pack, tmp_path_factory, env, wav):
    """4 streams at once, 1 queued; one registered voice `me` (the prompt WAV + its transcript)."""
    s = Served(tiny_pack, tmp_path_factory.mktemp("voices"), "--max-concurrency", "4", "--max-queue", "1", env=env)
    try:
        r = register(s, "me", wav, TRANSCRIPT)
        assert r.status_code == 201, r.text
        yield s
    finally:
        assert s.stop() == 0, s.log()


def register(s: Served, voice_id: str, path: Path | None, transcript: str | None, data: bytes | None = None):
    form = {"id": voice_id} if transcript is None else {"id": voice_id, "transcript": transcript}
    body = path.read_bytes() if data is None else data
    return s.http.post("/v1/voices", data=form, files={"audio_sample": ("prompt.wav", body, "audio/wav")})


@pytest.fixture(scope="module")
def tts_run(tiny_pack, tmp_path_factory, env, wav):
    """The reference: `tts-run --stream` PCM and --chunk-log lines, cached per (text, seed, voice, bistream)."""
    cache: dict = {}
    tmp = tmp_path_factory.mktemp("tts-run")

    def run(text: str, seed: int, voice: str = "default", bistream: bool = False):
        key = (text, seed, voice, bistream)
        if key not in cache:
            log = tmp / f"chunks{len(cache)}.jsonl"
            cmd = [str(BIN / "tts-run"), "--pack", str(tiny_pack), "--text", text, "--seed", str(seed), "--stream"]
            cmd += ["--out", "-", "--chunk-log", str(log)] + (["--bistream"] if bistream else [])
            if voice == "me":
                cmd += ["--prompt-wav", str(wav), "--prompt-text", TRANSCRIPT]
            r = subprocess.run(cmd, capture_output=True, timeout=120, env=env)
            assert r.returncode == 0, r.stderr.decode()[-2000:]
            cache[key] = r.stdout, [json.loads(line) for line in log.read_text().splitlines()]
        return cache[key]

    return run


# ---- clients -------------------------------------------------------------------------------------------------
def speech_body(text: str, seed: int, voice: str = "default", **kw) -> dict:
    return {"model": "tts-1", "input": text, "voice": voice, "seed": seed, "response_format": "pcm", **kw}


def sse_stream(s: Served, text: str, seed: int, voice: str = "default"):
    """POST with stream_format sse -> (PCM, chunk metas, events after the last delta)."""
    pcm, metas, tail = b"", [], []
    with s.http.stream("POST", "/v1/audio/speech", json=speech_body(text, seed, voice, stream_format="sse")) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if not line.startswith("data: "):
                continue
            event = json.loads(line[6:])
            if event["type"] == "speech.audio.delta":
                assert not tail, "audio after the final event"
                audio = base64.b64decode(event["audio"])
                assert len(audio) == 2 * event["chunk"]["n_samples"]
                pcm += audio
                metas.append(event["chunk"])
            else:
                tail.append(event)
    return pcm, metas, tail


def ws_url(s: Served, **query) -> str:
    return f"ws://127.0.0.1:{s.port}/v1/audio/speech/stream?" + "&".join(f"{k}={v}" for k, v in query.items())


def ws_stream(s: Served, text: str, seed: int, voice: str = "default"):
    """Text pieces as tts-run --bistream splits them, then flush -> (PCM, chunk metas, final messages, close code)."""
    from websockets.sync.client import connect

    from runtime.cli import _pieces

    pcm, metas, tail = b"", [], []
    with connect(ws_url(s, voice=voice, seed=seed), open_timeout=STREAM_TIMEOUT_S) as ws:
        for piece in _pieces(text):
            ws.send(json.dumps({"type": "text", "text": piece}))
        ws.send(json.dumps({"type": "flush"}))
        pending = None
        for msg in ws:
            if isinstance(msg, bytes):
                assert pending is not None and len(msg) == 2 * pending["n_samples"], "PCM without its metadata"
                pcm += msg
                metas.append(pending)
                pending = None
                continue
            event = json.loads(msg)
            if event["type"] == "audio":
                assert not tail and pending is None
                pending = {k: v for k, v in event.items() if k != "type"}
            else:
                tail.append(event)
        code = ws.close_code
    return pcm, metas, tail, code


def assert_equals_tts_run(got_pcm, got_metas, ref):
    ref_pcm, ref_metas = ref
    assert got_metas == ref_metas  # chunk boundaries, offsets, segments, sha256 and the final flag, chunk by chunk
    assert got_pcm == ref_pcm
    assert [m["final"] for m in got_metas].count(True) == 1 and got_metas[-1]["final"]


# ---- tests ---------------------------------------------------------------------------------------------------
def test_openai_client_streaming_equals_tts_run(server, tts_run):
    import openai

    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    ref_pcm, _ = tts_run(T_SHORT, 2)
    for fmt in ("pcm", "wav"):
        with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="default", input=T_SHORT, response_format=fmt, extra_body={"seed": 2}
        ) as r:
            pieces = list(r.iter_bytes())
        body = b"".join(pieces)
        if fmt == "wav":
            info = sf.info(io.BytesIO(body))
            assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
            body = body[44:]
        assert body == ref_pcm, fmt
        assert len(pieces) > 1  # streamed, not one block
    with pytest.raises(openai.BadRequestError) as e:
        client.audio.speech.create(model="tts-1", voice="alloy", input=T_SHORT)
    assert e.value.body["param"] == "voice"


def test_four_concurrent_streams_http_and_ws_equal_tts_run(server, tts_run):
    server.wait_idle()
    jobs = [
        ("sse", T_SHORT, 2, "default"),
        ("sse", T_OTHER, 1, "me"),
        ("ws", T_SHORT, 3, "default"),
        ("ws", T_OTHER, 0, "me"),
    ]
    refs = [tts_run(text, seed, voice, bistream=kind == "ws") for kind, text, seed, voice in jobs]
    start = threading.Barrier(len(jobs))

    def client(job):
        kind, text, seed, voice = job
        start.wait(10)
        return sse_stream(server, text, seed, voice) if kind == "sse" else ws_stream(server, text, seed, voice)

    peak, stop = [0], threading.Event()

    def watch():  # the server's own count of sessions running at once
        while not stop.is_set():
            peak[0] = max(peak[0], server.http.get("/ready").json()["active"])
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(client, jobs))
    finally:
        stop.set()
        watcher.join(10)
    assert peak[0] >= 2, "the streams never overlapped"
    for job, ref, got in zip(jobs, refs, results):
        assert_equals_tts_run(got[0], got[1], ref)
        (done,) = got[2]  # one final marker
        assert done["type"] == ("speech.audio.done" if job[0] == "sse" else "done")
        assert done["samples"] == len(ref[0]) // 2 and done["chunks"] == len(ref[1])
        if job[0] == "ws":
            assert got[3] == 1000
    assert len({r[0] for r in results}) == len(jobs)  # four different streams, no cross-talk


def test_sequential_repeats_carry_no_state(server, tts_run):
    ref = tts_run(T_OTHER, 1, "me")
    other = tts_run(T_SHORT, 2)
    for _ in range(2):
        pcm, metas, _ = sse_stream(server, T_OTHER, 1, "me")
        assert_equals_tts_run(pcm, metas, ref)
        ws_stream(server, T_SHORT, 3)  # another voice and seed in between
        pcm, metas, _ = sse_stream(server, T_SHORT, 2)
        assert_equals_tts_run(pcm, metas, other)


def test_cancel_mid_stream_frees_the_session_and_server_stays_ready(server, tts_run):
    from websockets.sync.client import connect

    server.wait_idle()
    cancelled = 'tts_streams_total{endpoint="%s",outcome="cancelled"}'
    before_http, before_ws = server.metric(cancelled % "http"), server.metric(cancelled % "ws")
    # HTTP: ~20 sentences take many seconds to synthesize; leave after the first event
    with server.http.stream("POST", "/v1/audio/speech", json=speech_body(T_LONG, 0, stream_format="sse")) as r:
        assert r.status_code == 200
        first = next(line for line in r.iter_lines() if line.startswith("data: "))
        assert json.loads(first[6:])["chunk"]["index"] == 0
    # WebSocket: text without flush can never complete; leave after the first chunk
    with connect(ws_url(server, seed=0)) as ws:
        ws.send(json.dumps({"type": "text", "text": T_SHORT}))
        assert json.loads(ws.recv(STREAM_TIMEOUT_S))["type"] == "audio"
    server.wait_for(lambda: server.metric(cancelled % "http") == before_http + 1)
    server.wait_for(lambda: server.metric(cancelled % "ws") == before_ws + 1)
    server.wait_idle()  # both worker threads ended: their slots are free
    assert server.http.get("/ready").json() == {
        "status": "ready",
        "active": 0,
        "queued": 0,
        "max_concurrency": 4,
        "max_queue": 1,
    }
    pcm, metas, _ = sse_stream(server, T_SHORT, 2)
    assert_equals_tts_run(pcm, metas, tts_run(T_SHORT, 2))


def test_429_beyond_the_queue_then_the_queued_stream_runs(server, tts_run):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    server.wait_idle()
    held = [connect(ws_url(server, seed=0)) for _ in range(4)]  # 4 admitted streams waiting for text
    try:
        server.wait_for(lambda: server.http.get("/ready").json()["active"] == 4)
        with ThreadPoolExecutor(1) as pool:
            queued = pool.submit(ws_stream, server, T_SHORT, 3)  # the 5th waits in the queue (its handshake)
            server.wait_for(lambda: server.http.get("/ready").json()["queued"] == 1)
            r = server.http.post("/v1/audio/speech", json=speech_body(T_SHORT, 2))
            assert r.status_code == 429 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "rate_limit_exceeded"
            with pytest.raises(InvalidStatus) as e:
                connect(ws_url(server, seed=0))
            assert e.value.response.status_code == 429
            for ws in held:
                ws.close()
            pcm, metas, tail, code = queued.result(STREAM_TIMEOUT_S)
    finally:
        for ws in held:
            ws.close()
    assert_equals_tts_run(pcm, metas, tts_run(T_SHORT, 3, bistream=True))
    assert code == 1000 and server.metric('tts_rejected_total{endpoint="http"}') >= 1


BAD_SPEECH = [
    ({"input": ""}, "input"),
    ({"input": "  ?! "}, "input"),
    ({"input": "a" * 10_001}, "input"),  # over --max-chars (tts-run's 10 000)
    ({"input": "\ud800"}, "input"),  # a lone surrogate: valid JSON, not UTF-8
    ({"input": 5}, "input"),
    ({"voice": "alloy"}, "voice"),
    ({"voice": {"id": "nobody"}}, "voice"),
    ({"response_format": "mp3"}, "response_format"),
    ({"response_format": "wav", "stream_format": "sse"}, "response_format"),
    ({"stream_format": "chunks"}, "stream_format"),
    ({"seed": -1}, "seed"),
    ({"seed": "x"}, "seed"),
    ({"speed": 1.5}, "speed"),
    ({"instructions": "whisper"}, "instructions"),
    ({"temperature": 0.5}, "temperature"),
    ({"model": ""}, "model"),
]


def test_bad_input_is_json_naming_the_field_and_the_server_stays_ready(server, wav, tmp_path):
    voices_dir = Path(server.proc.args[server.proc.args.index("--voices-dir") + 1])
    before = sorted(p.name for p in voices_dir.iterdir())
    for change, param in BAD_SPEECH:
        body = json.dumps({**speech_body(T_SHORT, 0), **change})  # ASCII JSON: a lone surrogate as \\ud800
        r = server.http.post("/v1/audio/speech", content=body, headers=JSON)
        assert r.status_code == 400, (change, r.text)
        err = r.json()["error"]
        assert err["param"] == param and err["message"].startswith(f"{param} | "), (change, err)
    r = server.http.post("/v1/audio/speech", content=b'{"model": "tts-1", "input": ', headers=JSON)
    assert r.status_code == 400 and r.json()["error"]["param"] == "body"
    r = server.http.post("/v1/audio/speech", content=b" " * (2 << 20), headers=JSON)
    assert r.status_code == 413 and r.json()["error"]["param"] == "body"

    short = tmp_path / "short.wav"
    sf.write(str(short), np.zeros(2400, np.float32), 24000, subtype="PCM_16")  # 0.1 s
    bad_voices = [
        (("Bad Id!", wav, TRANSCRIPT, None), 400, "id"),
        (("default", wav, TRANSCRIPT, None), 409, "id"),
        (("me", wav, TRANSCRIPT, None), 409, "id"),
        (("x1", None, TRANSCRIPT, b"RIFF not a wav at all"), 400, "audio_sample"),
        (("x2", short, TRANSCRIPT, None), 400, "audio_sample"),
        (("x3", wav, " ... ", None), 400, "transcript"),
    ]
    for args, status, param in bad_voices:
        r = register(server, *args)
        assert r.status_code == status and r.json()["error"]["param"] == param, (args[0], r.text)
        assert "/tmp" not in r.json()["error"]["message"]  # no server paths in replies
    assert sorted(p.name for p in voices_dir.iterdir()) == before  # nothing half-written, no .tmp-* left
    assert [v["id"] for v in server.http.get("/v1/voices").json()["data"]] == ["default", "me"]

    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    for query, param in (({"voice": "alloy"}, "voice"), ({"seed": "x"}, "seed")):
        with pytest.raises(InvalidStatus) as e:
            connect(ws_url(server, **query))
        assert e.value.response.status_code == 400 and json.loads(e.value.response.body)["error"]["param"] == param
    for messages, param in (([{"type": "speak"}], "type"), ([{"type": "text", "text": 3}], "text"), (["{"], "type")):
        with connect(ws_url(server)) as ws:
            for m in messages:
                ws.send(m if isinstance(m, str) else json.dumps(m))
            event = json.loads(ws.recv(STREAM_TIMEOUT_S))
            assert event["type"] == "error" and event["error"]["param"] == param
            with pytest.raises(ConnectionClosed):
                ws.recv(STREAM_TIMEOUT_S)
            assert ws.close_code == 1008
    with connect(ws_url(server)) as ws:  # a flush with nothing said: the session's own error
        ws.send(json.dumps({"type": "text", "text": " "}))
        ws.send(json.dumps({"type": "flush"}))
        event = json.loads(ws.recv(STREAM_TIMEOUT_S))
        assert event["type"] == "error" and event["error"]["param"] == "text"
    server.wait_idle()
    assert server.http.get("/ready").status_code == 200


def test_metrics_count_a_stream(server, tts_run):
    server.wait_idle()
    ttfa = 'tts_ttfa_seconds_count{endpoint="http"}'
    rtf = 'tts_rtf_count{endpoint="http"}'
    audio = 'tts_audio_seconds_total{endpoint="http"}'
    before = [server.metric(n) for n in (ttfa, rtf, audio)]
    pcm, _, _ = sse_stream(server, T_SHORT, 2)
    after = [server.metric(n) for n in (ttfa, rtf, audio)]
    assert after[0] == before[0] + 1 and after[1] == before[1] + 1
    assert after[2] - before[2] == pytest.approx(len(pcm) / 2 / 24000, abs=1e-6)
    assert server.metric("tts_active_streams") == 0 and server.metric("tts_queue_depth") == 0
    assert server.http.get("/health").json() == {"status": "ok"}


def test_voices_survive_a_restart_and_shutdown_is_graceful(tiny_pack, tmp_path, env, wav, tts_run):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    voices = tmp_path / "voices"
    a = Served(tiny_pack, voices, "--no-warmup", env=env)
    try:
        assert register(a, "keep", wav, TRANSCRIPT).status_code == 201
        assert register(a, "accent", wav, None).json()["cross_lingual"] is True
        ws = connect(ws_url(a, seed=0))  # an open WebSocket stream, waiting for text
        a.wait_for(lambda: a.http.get("/ready").json()["active"] == 1)
        with a.http.stream("POST", "/v1/audio/speech", json=speech_body(T_LONG, 0, stream_format="sse")) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            next(line for line in lines if line.startswith("data: "))
            a.proc.send_signal(signal.SIGTERM)  # mid-stream
            events = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert events[-1]["type"] == "speech.audio.done"  # the HTTP stream in flight was finished
        assert [e["chunk"]["final"] for e in events[:-1]] == [False] * (len(events) - 2) + [True]
        with pytest.raises(ConnectionClosed):
            ws.recv(STREAM_TIMEOUT_S)
        assert ws.close_code == 1012  # the WebSocket stream was closed as "service restart"
        assert a.stop() == 0, a.log()
        assert "stopped (SIGTERM)" in a.log()
    finally:
        a.stop()
    assert sorted(p.name for p in voices.iterdir()) == ["accent", "keep"]

    b = Served(tiny_pack, voices, "--no-warmup", env=env)
    try:
        listed = {v["id"]: v for v in b.http.get("/v1/voices").json()["data"]}
        assert listed["keep"]["transcript"] == TRANSCRIPT and listed["accent"]["cross_lingual"] is True
        pcm, metas, _ = sse_stream(b, T_OTHER, 1, "keep")
        assert_equals_tts_run(pcm, metas, tts_run(T_OTHER, 1, "me"))  # same WAV + transcript as `me`
    finally:
        assert b.stop() == 0, b.log()


def test_sft_speakers_are_built_in_voices(tiny_v1_pack, tmp_path, env):
    r = subprocess.run(
        [str(BIN / "tts-run"), "--pack", str(tiny_v1_pack), "--list-speakers"], capture_output=True, env=env, timeout=60
    )
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    names = r.stdout.decode().split("\n")[:-1]
    s = Served(tiny_v1_pack, tmp_path / "voices", "--no-warmup", env=env)
    try:
        voices = s.http.get("/v1/voices").json()["data"]
        assert [v["id"] for v in voices if v["kind"] == "speaker"] == names
        log = tmp_path / "chunks.jsonl"
        cmd = [str(BIN / "tts-run"), "--pack", str(tiny_v1_pack), "--text", T_SHORT, "--seed", "1", "--stream"]
        r = subprocess.run(
            [*cmd, "--speaker", names[0], "--out", "-", "--chunk-log", str(log)],
            capture_output=True,
            env=env,
            timeout=120,
        )
        assert r.returncode == 0, r.stderr.decode()[-2000:]
        pcm, metas, (done,) = sse_stream(s, T_SHORT, 1, names[0])
        assert_equals_tts_run(pcm, metas, (r.stdout, [json.loads(line) for line in log.read_text().splitlines()]))
        assert done["type"] == "speech.audio.done"
    finally:
        assert s.stop() == 0, s.log()
