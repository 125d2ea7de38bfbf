#!/usr/bin/env python
"""Load benchmark of tts-serve, in the style of upstream's runtime/triton_trtllm/client_grpc.py: N concurrent
client tasks (N = 1, 2, 4, 8), each sending its share of a fixed list of utterances one after another as
streaming requests (POST /v1/audio/speech, stream_format sse, so every chunk's size is known), timed on the
client side.

Per concurrency level:
- first-chunk latency p50 / p90 / p99: request sent -> first chunk with audio received;
- per-stream RTF (total latency / audio seconds), mean and p50;
- aggregate audio-seconds per second: all audio received / the level's wall time;
- underrun share: streams whose worst underrun is <= 100 ms, where a listener starting playback at the first
  chunk runs dry by (arrival of chunk k) - (first chunk + audio before chunk k) (serving/metrics.py's definition);
- errors: non-200 replies, error events, transport errors.

Each --pack gets its own `tts-serve` subprocess on 127.0.0.1 (--max-concurrency = the largest level unless
given, a queue as long, so nothing is refused), started and stopped here; --url benchmarks a running server
instead. Writes bench_serving.json and bench_serving.png (latency vs concurrency) under --out.

    .venv/bin/python ci/bench_serving.py --pack build/tiny-pack
    flock /tmp/fullsize.lock .venv/bin/python ci/bench_serving.py --pack build/full/pack --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
UNDERRUN_OK_S = 0.100
# A fixed "dataset": short to medium English utterances (request i speaks TEXTS[i % len] with seed i).
TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "Streaming speech synthesis sends audio while the rest is still being made.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "A rainbow is a division of white light into many beautiful colors.",
    "She sells sea shells by the sea shore, and the shells she sells are surely seashells.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "Every morning the baker opens the shop at six and sells warm bread until noon.",
)


@dataclass
class Stream:
    first_chunk_s: float | None
    total_s: float
    audio_s: float
    worst_underrun_s: float
    error: str | None


async def one_stream(client: httpx.AsyncClient, text: str, seed: int, sample_rate: int) -> Stream:
    body = {"model": "bench", "input": text, "voice": "default", "seed": seed, "response_format": "pcm"}
    t0 = time.perf_counter()
    first, samples, worst, error = None, 0, 0.0, None
    try:
        async with client.stream("POST", "/v1/audio/speech", json={**body, "stream_format": "sse"}) as r:
            if r.status_code != 200:
                error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
            else:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    event = json.loads(line[6:])
                    now = time.perf_counter()
                    if event["type"] == "speech.audio.delta":
                        n = event["chunk"]["n_samples"]
                        if first is None:
                            first = now if n else None
                        else:
                            worst = max(worst, now - (first + samples / sample_rate))
                        samples += n
                    elif event["type"] == "error":
                        error = event["error"]["message"]
    except httpx.HTTPError as e:
        error = f"{type(e).__name__}: {e}"
    total = time.perf_counter() - t0
    return Stream(None if first is None else first - t0, total, samples / sample_rate, worst, error)


async def run_level(url: str, n: int, rounds: int, sample_rate: int, offset: int) -> tuple[list[Stream], float]:
    """n client tasks, `rounds` requests each, one after another (client_grpc.py's --num-tasks split)."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:

        async def task(k: int) -> list[Stream]:
            out = []
            for r in range(rounds):
                i = offset + k * rounds + r
                out.append(await one_stream(client, TEXTS[i % len(TEXTS)], i, sample_rate))
            return out

        t0 = time.perf_counter()
        results = await asyncio.gather(*(task(k) for k in range(n)))
        wall = time.perf_counter() - t0
    return [s for r in results for s in r], wall


def summarize(streams: list[Stream], wall: float) -> dict:
    ok = [s for s in streams if s.error is None and s.first_chunk_s is not None]
    first = np.array([s.first_chunk_s for s in ok]) if ok else np.array([np.nan])
    rtf = np.array([s.total_s / s.audio_s for s in ok if s.audio_s]) if ok else np.array([np.nan])
    pct = lambda a, q: float(np.percentile(a, q)) if np.isfinite(a).all() else float("nan")
    return {
        "streams": len(streams),
        "errors": len(streams) - len(ok),
        "first_chunk_p50_s": pct(first, 50),
        "first_chunk_p90_s": pct(first, 90),
        "first_chunk_p99_s": pct(first, 99),
        "rtf_mean": float(np.mean(rtf)),
        "rtf_p50": pct(rtf, 50),
        "audio_s_per_s": sum(s.audio_s for s in ok) / wall,
        "underrun_ok_share": (sum(s.worst_underrun_s <= UNDERRUN_OK_S for s in ok) / len(ok)) if ok else float("nan"),
        "wall_s": wall,
        "error_examples": sorted({s.error for s in streams if s.error})[:3],
    }


class Server:
    """tts-serve (python -m serving) on a free 127.0.0.1 port, in its own process group."""

    def __init__(self, pack: Path, concurrency: int, queue: int, extra: list[str]):
        cmd = [sys.executable, "-m", "serving", "--pack", str(pack), "--port", "0"]
        cmd += ["--max-concurrency", str(concurrency), "--max-queue", str(queue), *extra]
        self.proc = subprocess.Popen(cmd, cwd=REPO, stderr=subprocess.PIPE, start_new_session=True)
        self.lines: list[str] = []
        found = threading.Event()

        def read():
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                self.lines.append(line)
                m = re.search(r"listening on (http://\S+)", line)
                if m:
                    self.url = m.group(1)
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(600):
            self.stop()
            raise SystemExit("tts-serve did not start:\n" + "\n".join(self.lines[-20:]))
        for _ in range(600):  # the port listens at once; /ready answers once uvicorn runs
            try:
                if httpx.get(self.url + "/ready", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise SystemExit("tts-serve never became ready:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def bench(url: str, levels: list[int], rounds: int, label: str) -> dict:
    model = httpx.get(url + "/v1/models", timeout=30).json()["data"][0]
    sample_rate = int(model["sample_rate"])
    asyncio.run(run_level(url, 1, 1, sample_rate, offset=10_000))  # one warm-up request, not counted
    out, offset = {}, 0
    for n in levels:
        streams, wall = asyncio.run(run_level(url, n, rounds, sample_rate, offset))
        offset += n * rounds
        out[n] = summarize(streams, wall) | {"per_stream": [asdict(s) for s in streams]}
        s = out[n]
        print(
            f"{label} | c={n:<2} | first chunk p50 {s['first_chunk_p50_s'] * 1000:7.0f} ms  p90 "
            f"{s['first_chunk_p90_s'] * 1000:7.0f}  p99 {s['first_chunk_p99_s'] * 1000:7.0f} | RTF mean "
            f"{s['rtf_mean']:.3f} | {s['audio_s_per_s']:.2f} audio-s/s | underrun<=100ms "
            f"{s['underrun_ok_share']:.0%} | errors {s['errors']}/{s['streams']}",
            flush=True,
        )
    return {"model": model, "rounds": rounds, "levels": out}


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, r in results.items():
        levels = sorted(r["levels"], key=int)
        x = [int(n) for n in levels]
        for q, style in (("50", "-o"), ("90", "--s"), ("99", ":^")):
            y = [r["levels"][n][f"first_chunk_p{q}_s"] * 1000 for n in levels]
            ax1.plot(x, y, style, label=f"{label} p{q}")
        ax2.plot(x, [r["levels"][n]["audio_s_per_s"] for n in levels], "-o", label=f"{label} audio-s/s")
        ax2.plot(x, [r["levels"][n]["rtf_mean"] for n in levels], "--s", label=f"{label} mean RTF")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent streams")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    ax1.set_yscale("log")  # the tiny and full packs differ by orders of magnitude
    ax2.set_yscale("log")
    ax1.set_ylabel("first-chunk latency (ms)")
    ax1.set_title("tts-serve first-chunk latency vs concurrency")
    ax2.set_title("throughput and per-stream RTF")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pack", type=Path, action="append", default=[], help="pack to serve (repeatable)")
    p.add_argument("--url", help="benchmark a running tts-serve instead of starting one")
    p.add_argument("--levels", default="1,2,4,8", help="concurrency levels, comma separated")
    p.add_argument("--rounds", type=int, default=2, help="requests per client task per level")
    p.add_argument("--max-concurrency", type=int, default=None, help="tts-serve --max-concurrency (default: max level)")
    p.add_argument("--server-arg", action="append", default=[], help="extra tts-serve argument (repeatable)")
    p.add_argument("--out", type=Path, default=REPO / "build" / "bench_serving")
    p.add_argument("--replot", type=Path, help="only redraw the PNG from a bench_serving.json")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    levels = [int(x) for x in args.levels.split(",")]
    if bool(args.pack) == bool(args.url):
        p.error("give --pack (one or more) or --url")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.url:
        results["server"] = bench(args.url.rstrip("/"), levels, args.rounds, args.url)
    for pack in args.pack:
        concurrency = args.max_concurrency or max(levels)
        label = f"{pack.parent.name}/{pack.name}"  # packs are often all called "pack"
        server = Server(pack, concurrency, max(levels), args.server_arg)
        try:
            results[label] = bench(server.url, levels, args.rounds, label)
        finally:
            server.stop()
    (args.out / "bench_serving.json").write_text(json.dumps(results, indent=1))
    plot(results, args.out / "bench_serving.png")
    print(f"wrote {args.out / 'bench_serving.json'} and {args.out / 'bench_serving.png'}")


if __name__ == "__main__":
    main()
