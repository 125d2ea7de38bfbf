#!/usr/bin/env python
"""Full-size HiFT check: export only the `hift` graph from a full-size random-init bundle (the shipped
CosyVoice2-0.5B sizes) and compare it with upstream PyTorch.

Prints the export's own check (max_abs per case and output, ORT vs upstream `hift.inference`), then
runtime/vocoder.py over the exported graph vs upstream `CosyVoice2Model.token2wav` chunk by chunk (hops
25, 50, 100, 100, final), as is and with upstream's F0 pinned to the graph's (see
tests/test_hift_streaming.py), in float and in PCM LSB. Exits 1 if anything is out of tolerance. Uses
~4 GiB of RAM (the bundle build includes the LLM); on a shared machine run it under the full-size lock:

    flock /tmp/fullsize.lock .venv/bin/python ci/check_hift_full.py [--work build/full] [--bundle DIR]

The bundle (~2.6 GB) is kept in --work and reused by later runs; --bundle reuses any full-size bundle.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK, full_bundle  # noqa: E402


def stream_errors(hift, pack, mel, hops, seed: int, pin: bool) -> list[tuple[int, float, int]]:
    """(samples, max |float err|, max PCM diff) per call: runtime VocoderStage vs upstream token2wav."""
    import numpy as np

    from exporters.oracles.hift import graph_f0, pinned_f0, upstream_streaming_vocoder
    from runtime.vocoder import VocoderStage, pcm16
    from specs.noise import FrameNoise

    facts = pack.graph("hift").spec().facts
    spm, harmonics = facts["samples_per_mel_frame"], facts["harmonics"]
    stage = VocoderStage.from_pack(pack, seed=seed)
    got, start = [], 0
    for k, hop in enumerate(hops):
        got.append(stage._synthesize(mel[:, :, start : start + 2 * hop], final=k == len(hops) - 1))
        start += 2 * hop
    noise = FrameNoise(seed, spm, harmonics)
    if pin:
        with pinned_f0(hift, graph_f0(pack.graph("hift").onnx_path, spm, harmonics)):
            want = upstream_streaming_vocoder(hift, mel, hops, noise_for=noise)
    else:
        want = upstream_streaming_vocoder(hift, mel, hops, noise_for=noise)
    out = []
    for g, w in zip(got, want):
        w = w[0]
        if g.shape != w.shape:
            raise SystemExit(f"chunk length {g.shape} differs from upstream's {w.shape}")
        lsb = int(np.abs(pcm16(g).astype(np.int32) - pcm16(w).astype(np.int32)).max())
        out.append((g.shape[0], float(np.abs(g - w).max()), lsb))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument(
        "--bundle", type=Path, default=None, help="an existing full-size bundle (default: make one in --work)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--tokens",
        type=int,
        default=312,
        help="speech tokens of the streamed utterance (312: hops 25, 50, 100, 100, final 37)",
    )
    args = ap.parse_args()

    import logging

    import torch

    from exporters.model.bundle import Bundle
    from exporters.oracles.flow import upstream_flow_mel
    from exporters.oracles.hift import PINNED_FLOAT_TOL, PINNED_PCM_TOL_LSB, STREAM_FLOAT_TOL, STREAM_PCM_TOL_LSB
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = args.bundle or full_bundle(args.work, args.seed)
    pack_dir = args.work / "hift-pack"
    t0 = time.time()
    export_pack(
        bundle,
        pack_dir,
        ["hift"],
        ExportOptions(seed=args.seed),
        overwrite=True,
        random_init={"size": "full", "seed": args.seed},
    )
    print(f"exported hift in {time.time() - t0:.0f} s", flush=True)

    pack = Pack.open(pack_dir)
    model = Bundle.open(bundle).build(with_llm=False)
    hops = pack.chunk_policy.schedule(0).hops(args.tokens)
    mel = upstream_flow_mel(model.flow, torch.Generator().manual_seed(args.seed + 3), n_tokens=args.tokens).numpy()
    ok = True
    for pin, float_tol, lsb_tol in (
        (False, STREAM_FLOAT_TOL, STREAM_PCM_TOL_LSB),
        (True, PINNED_FLOAT_TOL, PINNED_PCM_TOL_LSB),
    ):
        label = "F0 pinned to the graph's" if pin else "as is"
        print(f"streaming vs upstream token2wav, {label} (tolerance {float_tol:g}, {lsb_tol} LSB), hops {hops}:")
        for k, (n, err, lsb) in enumerate(stream_errors(model.hift, pack, mel, hops, args.seed, pin)):
            passed = err <= float_tol and lsb <= lsb_tol
            ok &= passed
            print(
                f"  {'PASSED' if passed else 'FAILED'} | call {k}: {n} samples | max |err| {err:.2e} | "
                f"max PCM diff {lsb} LSB",
                flush=True,
            )
    report = pack.manifest["graphs"]["hift"]["report"]
    ok &= bool(report["passed"])
    print(f"{'PASSED' if ok else 'FAILED'} | {time.time() - t0:.0f} s | ci/check_hift_full.py")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
