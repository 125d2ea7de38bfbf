"""tts-serve: one pack served over HTTP and WebSocket on one machine (FastAPI on uvicorn).

One PackEngine per process; one TtsSession per request on a worker thread, made as `tts-run --stream` makes it,
so every request's PCM (bytes and chunk boundaries) is tts-run's for the same pack, text, voice and seed.

POST /v1/audio/speech    OpenAI's body: model (any name), input, voice ("default", a registered id, an SFT
                         speaker, or {"id": ...}), response_format pcm | wav (default wav), stream_format
                         audio | sse, plus seed (0 .. 2^63-1, default 0). speed must be 1.0, instructions absent.
    stream_format audio  the body is streamed as produced: raw PCM16LE mono at the pack rate (pcm), or a WAV
                         header with unknown sizes (0xFFFFFFFF) then the PCM (wav). Its end is the final marker;
                         a stream cut by an error ends without the closing chunk (an incomplete body).
    stream_format sse    text/event-stream, one event per chunk:
                           {"type": "speech.audio.delta", "audio": base64 PCM, "chunk": {index, sample_offset,
                            n_samples, segment, token_offset, sha256, final}}   (tts-run --chunk-log's lines)
                         then one {"type": "speech.audio.done", "chunks", "samples", "sample_rate", "usage"}
                         or, if synthesis fails after audio began, one {"type": "error", "error": {...}}.
WS /v1/audio/speech/stream?voice=&seed=    bi-streaming text in (TtsSession.push_text):
    client -> server     {"type": "text", "text": "piece"} ..., then {"type": "flush"} (no more text)
    server -> client     per chunk a text message {"type": "audio", index, sample_offset, n_samples, ...,
                         sha256, final} followed by one binary message with its PCM16LE; after the last chunk
                         {"type": "done", "chunks", "samples", "sample_rate"} and close 1000. Errors:
                         {"type": "error", "error": {...}} and close 1008 (bad input) or 1011. Closing the socket
                         cancels the stream. Refusals (bad query, unknown voice, 429) are HTTP replies to the
                         handshake with the same JSON body.
POST /v1/voices          multipart: id ([a-z0-9_-]{1,64}), audio_sample (WAV, 0.5-30 s), transcript (optional;
                         without it the voice is cross-lingual, as tts-run without --prompt-text) -> 201.
GET  /v1/voices, /v1/models, /health (alive), /ready (503 while draining), /metrics (Prometheus).

Errors are OpenAI's JSON, {"error": {"message", "type", "param", "code"}}, `param` naming the field, `message` in
the tools' one-line grammar ("field | problem. Note: expected"). Admission: --max-concurrency sessions at once,
--max-queue waiting, then 429 with Retry-After.
"""
