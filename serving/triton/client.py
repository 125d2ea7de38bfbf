"""Client side of the Triton serving checks (runs in the Triton venv: tritonclient + numpy only).

    python -m serving.triton.client --grpc HOST:PORT --http HOST:PORT --model cosyvoice2 --job job.json --out r.npz

job.json: {"streams": [[request, ...], ...], "sse": [request, ...], "cancel": request, "bad": true}, a request =
{"id", "text", "seed", "reference_wav" (path of a float32 .npy at 16 kHz, optional), "reference_text" (optional)}.
"streams" are rounds: each round's requests are sent together on one gRPC stream (concurrent streams), rounds
one after another (sequential repeats). Results go to an .npz: per request id "ID/pcm16" (concatenated),
"ID/offsets", "ID/sizes", and a JSON "summary" (finals, errors, timings, robustness results). Every wait is
bounded; nothing here retries.
"""

from __future__ import annotations

import argparse
import json
import queue
import time
import urllib.error
import urllib.request

import numpy as np

TIMEOUT_S = 60.0


def grpc_inputs(module, req: dict) -> list:
    """The orchestrator's inputs for one request, shaped as upstream's client_grpc.py sends them."""

    def add(name, array, dtype):
        t = module.InferInput(name, list(array.shape), dtype)
        t.set_data_from_numpy(array)
        inputs.append(t)

    inputs: list = []
    add("target_text", np.array([[req["text"].encode()]], dtype=object), "BYTES")
    if req.get("reference_wav"):
        wav = np.load(req["reference_wav"]).astype(np.float32).reshape(1, -1)
        add("reference_wav", wav, "FP32")
        add("reference_wav_len", np.array([[wav.shape[1]]], np.int32), "INT32")
        if req.get("reference_text") is not None:
            add("reference_text", np.array([[req["reference_text"].encode()]], dtype=object), "BYTES")
    if "seed" in req:
        add("seed", np.array([[req["seed"]]], np.uint64), "UINT64")
    return inputs


def run_round(url: str, model: str, reqs: list[dict]) -> dict:
    """All requests of a round on one gRPC stream at once; collect every response until each has its final."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    events: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((time.monotonic(), result, error)))
    t0 = time.monotonic()
    out = {r["id"]: {"chunks": [], "finals": 0, "error": None, "first_s": None} for r in reqs}
    pending = set(out)
    try:
        for r in reqs:
            try:
                client.async_stream_infer(
                    model, grpc_inputs(grpcclient, r), request_id=r["id"], enable_empty_final_response=True
                )
            except Exception as e:  # the stream broke before this request went out; its cause comes as an event
                out[r["id"]]["error"] = f"not sent: {e}"
                pending.discard(r["id"])
        deadline = t0 + TIMEOUT_S
        while pending and time.monotonic() < deadline:
            try:
                t, result, error = events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if error is not None:  # an error response names no request id: one per request is expected
                rid = error_request(error, pending)
                if rid:
                    out[rid]["error"] = str(error)
                    pending.discard(rid)
                continue
            resp = result.get_response()
            rec = out[resp.id]
            if result.as_numpy("pcm16") is not None:
                pcm = result.as_numpy("pcm16").reshape(-1)
                wave = result.as_numpy("waveform").reshape(-1)
                offset = int(result.as_numpy("sample_offset").reshape(-1)[0])
                rec["chunks"].append((offset, pcm, wave))
                rec["first_s"] = rec["first_s"] if rec["first_s"] is not None else t - t0
            if resp.parameters["triton_final_response"].bool_param:
                rec["finals"] += 1
                pending.discard(resp.id)
        for rid in pending:
            out[rid]["error"] = out[rid]["error"] or f"no final response within {TIMEOUT_S:.0f} s"
    finally:
        client.stop_stream()
        client.close()
    return out


def error_request(error, pending: set[str]) -> str:
    """Which pending request an error event belongs to: the one its message names, else the first pending."""
    if not pending:
        return ""
    text = str(error)
    named = [rid for rid in pending if f"request id: {rid}]" in text]
    return named[0] if named else sorted(pending)[0]


def sse(http: str, model: str, req: dict) -> dict:
    """POST /v2/models/MODEL/generate_stream: one SSE `data:` event per response."""
    body: dict = {"target_text": req["text"]}
    if "seed" in req:
        body["seed"] = req["seed"]
    r = urllib.request.Request(
        f"http://{http}/v2/models/{model}/generate_stream",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    chunks, error = [], None
    try:
        with urllib.request.urlopen(r, timeout=TIMEOUT_S) as resp:
            for raw in resp:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[len("data:") :])
                if "error" in event:
                    error = event["error"]
                    break
                if "pcm16" in event:
                    chunks.append((int(np.reshape(event["sample_offset"], -1)[0]), np.array(event["pcm16"], np.int16)))
    except urllib.error.HTTPError as e:
        error = f"HTTP {e.code}: {e.read().decode(errors='replace')}"
    return {"chunks": chunks, "error": error}


def http_post(http: str, path: str, body: dict) -> tuple[int, str]:
    r = urllib.request.Request(
        f"http://{http}{path}", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(r, timeout=TIMEOUT_S) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def ready(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http}/v2/health/ready", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def cancel_then_retry(url: str, http: str, model: str, req: dict) -> dict:
    """Cancel a stream after its first chunk (stop_stream(cancel_requests=True)), then the same request again
    on a new stream must complete."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    events: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    client.async_stream_infer(
        model, grpc_inputs(grpcclient, req), request_id="cancelled", enable_empty_final_response=True
    )
    first = None
    try:
        result, error = events.get(timeout=TIMEOUT_S)
        first = error is None and result.as_numpy("pcm16") is not None
    except queue.Empty:
        pass
    client.stop_stream(cancel_requests=True)
    client.close()
    again = run_round(url, model, [{**req, "id": "after_cancel"}])["after_cancel"]
    return {"first_chunk_before_cancel": bool(first), "ready_after": ready(http), "retry": again}


def bad_inputs(url: str, http: str, model: str) -> dict:
    """Empty text, a wrong dtype and an unknown model: each an error, the server ready afterwards."""
    import tritonclient.grpc as grpcclient

    res = {}
    empty = run_round(url, model, [{"id": "empty", "text": "   "}])["empty"]
    res["empty_text"] = {"error": empty["error"], "chunks": len(empty["chunks"]), "finals": empty["finals"]}
    client = grpcclient.InferenceServerClient(url)
    events: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: events.put((result, error)))
    wrong = grpcclient.InferInput("target_text", [1, 1], "INT32")
    wrong.set_data_from_numpy(np.array([[7]], np.int32))
    client.async_stream_infer(model, [wrong], request_id="wrong_dtype")
    try:
        _, error = events.get(timeout=TIMEOUT_S)
        res["wrong_dtype"] = None if error is None else str(error)
    except queue.Empty:
        res["wrong_dtype"] = None
    client.stop_stream()
    try:
        client.infer("no_such_model", [wrong])
        res["unknown_model"] = None
    except Exception as e:  # tritonclient's InferenceServerException
        res["unknown_model"] = str(e)
    client.close()
    res["infer_on_decoupled"] = http_post(http, f"/v2/models/{model}/infer", {"inputs": []})
    res["ready_after"] = ready(http)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grpc", required=True)
    ap.add_argument("--http", required=True)
    ap.add_argument("--model", default="cosyvoice2")
    ap.add_argument("--job", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    job = json.loads(open(args.job).read())
    arrays: dict[str, np.ndarray] = {}
    summary: dict = {"rounds": [], "sse": {}, "robustness": {}}

    def keep(rid: str, rec: dict, with_wave: bool) -> dict:
        chunks = rec["chunks"]
        arrays[f"{rid}/pcm16"] = np.concatenate([c[1] for c in chunks]) if chunks else np.zeros(0, np.int16)
        arrays[f"{rid}/offsets"] = np.array([c[0] for c in chunks], np.int64)
        arrays[f"{rid}/sizes"] = np.array([len(c[1]) for c in chunks], np.int64)
        if with_wave:
            arrays[f"{rid}/waveform"] = np.concatenate([c[2] for c in chunks]) if chunks else np.zeros(0, np.float32)
        return {k: v for k, v in rec.items() if k != "chunks"}

    for reqs in job.get("streams", []):
        t0 = time.monotonic()
        got = run_round(args.grpc, args.model, reqs)
        summary["rounds"].append(
            {"wall_s": time.monotonic() - t0, "requests": {rid: keep(rid, rec, True) for rid, rec in got.items()}}
        )
    for req in job.get("sse", []):
        summary["sse"][req["id"]] = keep(req["id"], sse(args.http, args.model, req), False)
    if job.get("cancel"):
        c = cancel_then_retry(args.grpc, args.http, args.model, job["cancel"])
        c["retry"] = keep("after_cancel", c["retry"], False)
        summary["robustness"]["cancel"] = c
    if job.get("bad"):
        summary["robustness"]["bad"] = bad_inputs(args.grpc, args.http, args.model)
    arrays["summary"] = np.array(json.dumps(summary))
    np.savez(args.out, **arrays)


if __name__ == "__main__":
    main()
