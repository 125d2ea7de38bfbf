#!/usr/bin/env python
"""HiFT latency at full size: ONNX Runtime CPU (the pack's `hift` graph) vs upstream PyTorch CPU, measured
interleaved in one process so that load from other jobs hits both sides alike.

Same mel for both (--frames frames of a flow-made mel, default 50 = 1 s of audio), one whole-chunk call:
  - upstream: `hift.inference(speech_feat=mel)` exactly as token2wav calls it (its own random draws,
    weight norm recomputed per call, as upstream runs it);
  - ORT graph: `OrtRunner.run` with a zero-length cache and pre-drawn noise;
  - ORT runtime: `VocoderStage.push(mel, final=True)`: noise drawing + graph + PCM conversion.
Prints medians of --reps runs, torch/ORT (> 1: ORT faster) from the medians and the median of per-pair
ratios, process CPU time ratios, and with --profile ORT's time per op type. Needs the full-size bundle and
pack that ci/check_hift_full.py leaves in --work:

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_hift.py [--work build/full] [--threads 2]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK  # noqa: E402


def interleaved(fns: dict, reps: int, gap: float) -> dict[str, tuple[list[float], list[float]]]:
    """Warm every function up twice, then run them round-robin: {name: (wall seconds, cpu seconds)}.

    `gap` seconds of sleep before each timed call: ORT's intra-op pool and torch's OpenMP threads spin-wait
    after a call, and without the pause one side's spinning threads steal the cores from the other's next
    call (measured: upstream at 208 frames took 7.0 s interleaved back to back, 0.43 s alone)."""
    for fn in fns.values():
        fn(), fn()
    out = {k: ([], []) for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            time.sleep(gap)
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            out[k][0].append(time.perf_counter() - t0)
            out[k][1].append(time.process_time() - c0)
    return out


def op_profile(path: Path, feed: dict, threads: int, runs: int = 5) -> list[tuple[str, float]]:
    """ORT's own profiler: milliseconds per call by op type."""
    import onnxruntime as ort

    from backends.ort import session_options

    so = session_options(threads)
    so.enable_profiling = True
    so.profile_file_prefix = str(path.parent / "hift_profile")
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    trace = Path(sess.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_op: dict[str, float] = collections.defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_op[e["args"]["op_name"]] += e["dur"] / 1e3 / runs
    return sorted(per_op.items(), key=lambda kv: -kv[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--bundle", type=Path, default=None, help="default: --work/bundle-full-SEED")
    ap.add_argument("--pack", type=Path, default=None, help="default: --work/hift-pack")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=2, help="torch threads and ORT intra-op threads")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds of idle before each timed call")
    ap.add_argument("--profile", action="store_true", help="also print ORT's time per op type")
    args = ap.parse_args()

    import logging

    import numpy as np
    import torch

    from backends.ort import OrtRunner
    from exporters.model.bundle import Bundle
    from exporters.oracles.flow import upstream_flow_mel
    from runtime.vocoder import VocoderStage
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    bundle = args.bundle or args.work / f"bundle-full-{args.seed}"
    pack = Pack.open(args.pack or args.work / "pack")
    torch.set_num_threads(args.threads)
    model = Bundle.open(bundle).build(with_llm=False)
    hift = model.hift
    mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(args.seed), n_tokens=(args.frames + 1) // 2)
    mel = mel[:, :, : args.frames].contiguous()
    mel_np = mel.numpy()

    entry = pack.graph("hift")
    session = OrtRunner(entry.onnx_path, entry.spec(), threads=args.threads)
    stage = VocoderStage(session, pack.chunk_policy, seed=args.seed)
    facts = entry.spec().facts
    feed = {"mel": mel_np, "cache_source": np.zeros((1, 1, 0), np.float32), "noise": stage.noise(0, args.frames)}
    fns = {
        "upstream torch": lambda: hift.inference(speech_feat=mel),
        "ORT graph": lambda: session.run(feed),
        "ORT runtime (noise+graph+PCM)": lambda: stage.push(mel_np, final=True),
    }
    load_before = os.getloadavg()[0]
    res = interleaved(fns, args.reps, args.gap)
    load_after = os.getloadavg()[0]
    audio_s = args.frames * facts["samples_per_mel_frame"] / facts["sample_rate"]
    print(
        f"HiFT full size, {args.frames} mel frames ({audio_s:.2f} s of audio), {args.threads} threads, "
        f"median of {args.reps} interleaved runs; 1-min load average {load_before:.2f} -> {load_after:.2f} "
        f"on {os.cpu_count()} CPUs (other jobs contending for the cores slow torch's OpenMP far more than ORT)"
    )
    wall_t, cpu_t = res["upstream torch"]
    for name, (wall, cpu) in res.items():
        ratio = statistics.median(wall_t) / statistics.median(wall)
        pair = statistics.median(a / b for a, b in zip(wall_t, wall))
        cpu_ratio = statistics.median(cpu_t) / statistics.median(cpu)
        print(
            f"  {name:<31} {statistics.median(wall) * 1e3:8.1f} ms (cpu {statistics.median(cpu) * 1e3:7.1f} ms)"
            f" | torch/this {ratio:5.2f} (per-pair median {pair:5.2f}, cpu {cpu_ratio:5.2f})"
        )
    if args.profile:
        print("ORT time per op type (ms per call):")
        for op, ms in op_profile(entry.onnx_path, feed, args.threads)[:12]:
            print(f"  {op:<16} {ms:7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
