#!/usr/bin/env python
"""Full-size flow check: export flow.encoder + flow.decoder.estimator from a full-size random-init bundle
(the shipped CosyVoice2-0.5B sizes) and compare the runtime's token -> mel with upstream PyTorch.

Prints each graph's own export check (max_abs per case and output), then runtime/flow_stage.py over the
exported graphs vs upstream's CosyVoice2Model.tts flow calls, per chunk, for a stream (hops 25+pad, 50,
100, final) and for one offline call. Exits 1 if any comparison fails. Uses ~8 GiB of RAM; on a shared
machine run it under the full-size lock:

    flock /tmp/fullsize.lock .venv/bin/python ci/check_flow_full.py [--work build/full]

The bundle (~2.6 GB) is kept in --work and reused by later runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK, full_bundle  # noqa: E402

GRAPHS = ["flow.encoder", "flow.decoder.estimator"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--prompt-tokens", type=int, default=37, help="flow prompt tokens (37: first hop 25+13)")
    ap.add_argument("--tokens", type=int, default=200, help="generated tokens")
    args = ap.parse_args()

    import logging

    import numpy as np

    from exporters.model.bundle import Bundle
    from exporters.oracles.flow import TOKEN2MEL_TOLERANCE, upstream_token2mel
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from runtime.flow_stage import FlowStage
    from specs.compare import Report, compare
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = full_bundle(args.work, args.seed)
    pack_dir = args.work / "flow-pack"
    t0 = time.time()
    export_pack(
        bundle,
        pack_dir,
        GRAPHS,
        ExportOptions(seed=args.seed),
        overwrite=True,
        random_init={"size": "full", "seed": args.seed},
    )
    print(f"exported {', '.join(GRAPHS)} in {time.time() - t0:.0f} s", flush=True)

    pack = Pack.open(pack_dir)
    stage = FlowStage(pack)
    model = Bundle.open(bundle).build(with_llm=False)
    rng = np.random.default_rng(args.seed)
    n_prompt, n_gen = args.prompt_tokens, args.tokens
    prompt = rng.integers(0, model.flow.vocab_size, (1, n_prompt))
    gen = rng.integers(0, model.flow.vocab_size, (1, n_gen))
    feat = (-5.0 + 2.0 * rng.standard_normal((1, 2 * n_prompt, 80))).astype(np.float32)
    emb = rng.standard_normal((1, 192)).astype(np.float32)

    report = Report("runtime token2mel (ORT) vs upstream flow (PyTorch), full size")
    for stream in (True, False):
        ref = upstream_token2mel(model, gen, prompt, feat, emb, stream=stream)
        schedule = pack.chunk_policy.schedule(n_prompt)
        plan = schedule.plan(n_gen) if stream else [schedule.final_call(n_gen)]
        got_calls = [(c.end, c.token_offset, c.streaming, c.finalize) for c in plan]
        want_calls = [(c.end, c.token_offset, c.streaming, c.finalize) for c in ref]
        if got_calls != want_calls:
            print(f"FAILED | call schedule {got_calls} differs from upstream's {want_calls}")
            return 1
        for call, want in zip(plan, ref):
            mel = stage.token2mel(
                gen[:, : call.end], prompt, feat, emb, call.token_offset, call.streaming, call.finalize
            )
            mode = "stream" if stream else "offline"
            label = f"token2mel/{mode}/tokens[{call.token_offset}:{call.end}]"
            print(
                report.add(compare(mel, want.mel, TOKEN2MEL_TOLERANCE, label)).line()
                + f" | |mel|max={np.abs(want.mel).max():.2f}",
                flush=True,
            )
    print(report.summary())
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
