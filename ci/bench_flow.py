#!/usr/bin/env python
"""Flow latency at full size: ONNX Runtime CPU (the pack's graphs, runtime/flow_stage.py) vs upstream
PyTorch CPU, measured interleaved in one process so that load from other jobs hits both sides alike.

Reports medians and the ratio torch / ORT (> 1: ORT faster) for
  - flow encoder: one `flow.encoder` call vs upstream's pre-ODE part of `flow.inference`;
  - estimator: one CFG batch-2 velocity call;
  - token -> mel: encoder + 10 Euler steps, FlowStage.token2mel vs upstream `flow.inference`.
Needs the full-size bundle and flow pack that ci/check_flow_full.py leaves in --work:

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_flow.py [--work build/full] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK  # noqa: E402


def interleaved(label: str, torch_fn, ort_fn, reps: int) -> None:
    """Warm both up, then alternate torch and ORT runs; print medians and ratios."""
    torch_fn(), ort_fn()
    t_torch, t_ort = [], []
    for _ in range(reps):
        for fn, out in ((torch_fn, t_torch), (ort_fn, t_ort)):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    mt, mo = statistics.median(t_torch), statistics.median(t_ort)
    pair = statistics.median(a / b for a, b in zip(t_torch, t_ort))
    print(
        f"{label:<48} torch {mt * 1e3:8.1f} ms | ORT {mo * 1e3:8.1f} ms | torch/ORT {mt / mo:5.2f} "
        f"(median of per-pair ratios {pair:5.2f}, n={reps})",
        flush=True,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both torch and ORT")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import logging

    import numpy as np
    import torch

    from exporters.graphs.flow_encoder import upstream_pre_ode
    from exporters.model.bundle import Bundle
    from runtime.flow_stage import FlowStage
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    bundle, pack_dir = args.work / f"bundle-full-{args.seed}", args.work / "pack"
    if not (bundle.exists() and pack_dir.exists()):
        print(
            f"ERROR | {args.work} has no full bundle + flow pack. Note: tts-export --random-init full --int8 "
            f"--keep-bundle {args.work}/bundle-full-{args.seed} --out {args.work}/pack"
        )
        return 1
    torch.set_num_threads(args.threads)
    model = Bundle.open(bundle).build(with_llm=False)
    stage = FlowStage(Pack.open(pack_dir), threads=args.threads)
    flow = model.flow
    rng = np.random.default_rng(args.seed)
    emb = rng.standard_normal((1, 192)).astype(np.float32)
    no_prompt, no_feat = np.zeros((1, 0), np.int64), np.zeros((1, 0, 80), np.float32)
    print(f"threads {args.threads}, torch {torch.__version__}; the machine may be shared: compare ratios")

    # Flow encoder: a streaming call on a 37-token prompt + 91 generated tokens (3 of them lookahead).
    prompt = rng.integers(0, flow.vocab_size, (1, 37))
    gen = rng.integers(0, flow.vocab_size, (1, 91))
    feat = (-5.0 + 2.0 * rng.standard_normal((1, 74, 80))).astype(np.float32)
    prefix = np.concatenate([prompt, gen], axis=1)
    interleaved(
        "flow encoder, 125+3 tokens, streaming",
        lambda: upstream_pre_ode(model, gen, prompt, feat, emb, True, False),
        lambda: stage.encode(prefix, feat, emb, True, False),
        args.reps,
    )

    # Estimator: one CFG batch-2 call at 100 frames (upstream's own loop feeds it these shapes).
    c = stage.encode(rng.integers(0, flow.vocab_size, (1, 50)), no_feat, emb, False, True)
    x = np.array(stage.noise[:, :, :100], np.float32)
    feed = {
        "x": np.concatenate([x, x]),
        "mask": np.ones((2, 1, 100), np.float32),
        "mu": np.concatenate([c.mu, 0 * c.mu]),
        "t": np.array([0.3, 0.3], np.float32),
        "spks": np.concatenate([c.spks, 0 * c.spks]),
        "cond": np.zeros((2, 80, 100), np.float32),
        "streaming": np.array([False]),
    }
    torch_feed = [torch.from_numpy(feed[k]) for k in ("x", "mask", "mu", "t", "spks", "cond")]

    def torch_estimator():
        with torch.inference_mode():
            flow.decoder.estimator(*torch_feed, streaming=False)

    interleaved("estimator, 100 frames, CFG batch 2", torch_estimator, lambda: stage.estimator.run(feed), args.reps)

    # Token -> mel: 50 tokens offline (100 frames, 10 ODE steps), as a non-stream token2wav call.
    tokens = rng.integers(0, flow.vocab_size, (1, 50))

    def torch_token2mel():
        t = torch.from_numpy(tokens).to(torch.int32)
        flow.inference(
            token=t,
            token_len=torch.tensor([50], dtype=torch.int32),
            prompt_token=torch.zeros(1, 0, dtype=torch.int32),
            prompt_token_len=torch.tensor([0], dtype=torch.int32),
            prompt_feat=torch.from_numpy(no_feat),
            prompt_feat_len=torch.tensor([0], dtype=torch.int32),
            embedding=torch.from_numpy(emb),
            streaming=False,
            finalize=True,
        )

    interleaved(
        "token -> mel, 50 tokens (100 frames, 10 steps)",
        torch_token2mel,
        lambda: stage.token2mel(tokens, no_prompt, no_feat, emb),
        max(3, args.reps // 2),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
