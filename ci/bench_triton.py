"""Concurrency sweep of the Triton repository of a pack: first-chunk latency and RTF per number of concurrent
gRPC streams (upstream's client_grpc.py measures the same), on the PyPI-bundled tritonserver (CPU, Python backend).

    .venv/bin/python ci/bench_triton.py --pack PACK [--streams 1,2,4] [--repeats 2] [--text "..."]

Needs the Triton test venv (bash ci/triton_env.sh). Numbers from a shared 2-core box say little about a GPU host;
the capacity rule in RUNBOOK.md is what to measure there.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from serving.triton import write_triton_repo  # noqa: E402
from serving.triton.server import TritonInstall, TritonServer  # noqa: E402
from specs.pack import Pack  # noqa: E402

TEXT = "The quick brown fox jumps over the lazy dog, and then it runs far away into the quiet forest."


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pack", type=Path, required=True)
    ap.add_argument("--streams", default="1,2,4")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--text", default=TEXT)
    args = ap.parse_args()
    rate = Pack.open(args.pack).chunk_policy.sample_rate
    levels = [int(x) for x in args.streams.split(",")]
    rounds = [
        [{"id": f"c{c}r{r}s{i}", "text": args.text, "seed": 100 * c + 10 * r + i} for i in range(c)]
        for c in levels
        for r in range(args.repeats)
    ]
    install = TritonInstall.find()
    with tempfile.TemporaryDirectory(prefix="bench-triton-") as tmp:
        work = Path(tmp)
        repo = write_triton_repo(args.pack, work / "repo", max_streams=max(levels))
        warm = [{"id": "warm", "text": "Hello.", "seed": 0}]  # first calls pay ONNX Runtime's setup
        (work / "job.json").write_text(json.dumps({"streams": [warm, *rounds]}))
        with TritonServer(repo, install, work / "server") as server:
            cmd = [str(install.python), "-m", "serving.triton.client", "--grpc", server.grpc_url]
            cmd += ["--http", server.http_url, "--job", str(work / "job.json"), "--out", str(work / "out.npz")]
            subprocess.run(cmd, cwd=REPO, check=True, timeout=3600)
        data = np.load(work / "out.npz")
        summary = json.loads(str(data["summary"]))
    print("streams | first chunk mean / max (ms) | RTF (wall / audio of the round, per stream)")
    for c in levels:
        firsts, rtfs = [], []
        for rnd in summary["rounds"][1:]:
            reqs = rnd["requests"]
            if len(reqs) != c:
                continue
            audio = [len(data[f"{rid}/pcm16"]) / rate for rid in reqs]
            firsts += [r["first_s"] for r in reqs.values()]
            rtfs.append(rnd["wall_s"] / max(audio))
        print(f"{c:7d} | {1000 * np.mean(firsts):8.0f} / {1000 * np.max(firsts):6.0f} | {np.mean(rtfs):.3f}")


if __name__ == "__main__":
    main()
