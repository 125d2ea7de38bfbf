#!/usr/bin/env python
"""Fun-CosyVoice3 per-graph latency at full size: each graph of the pack on ONNX Runtime CPU vs the upstream
PyTorch module it was exported from (fp32: upstream runs v3's token2wav under fp16 autocast on GPU only), on the
pack's own test inputs, interleaved in one process, same thread count. Medians and torch / ORT (> 1: ORT faster):
  - flow.prep (steady case) vs the pre-ODE part of upstream's flow.inference (embedding, pre-lookahead, repeat);
  - flow.decoder.estimator (steady case, CFG batch 2, chunk mask) vs upstream's DiT forward;
  - hift.final (its longest case) vs upstream CausalHiFTGenerator.inference(finalize=True) (F0 in float64);
  - llm (deep_decode: one step after 300 cached positions) vs upstream's Qwen2 forward_one_step + head.
Needs build/full/pack-v3 (tts-export of the full v3 bundle, see ci/bench_e2e.py --family v3):

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_v3_graphs.py [--work build/full] [--threads 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from bench_flow import interleaved  # noqa: E402
from full_size import DEFAULT_WORK, full_bundle, full_pack  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both torch and ORT")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()

    import numpy as np
    import torch

    from backends.ort import OrtRunner
    from exporters.model.bundle import Bundle
    from exporters.oracles.hift_v3 import upstream_hift_v3
    from specs.pack import Pack

    torch.set_num_threads(args.threads)
    pack = Pack.open(full_pack(args.work, "cosyvoice3"))
    model = Bundle.open(full_bundle(args.work, args.seed, "cosyvoice3")).build()

    def graph(name):
        entry = pack.graph(name)
        return OrtRunner(entry.onnx_path, entry.spec(), threads=args.threads), entry.vectors()

    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    with torch.no_grad():
        runner, vectors = graph("flow.prep")
        ins, _ = vectors["steady_chunk"] if "steady_chunk" in vectors else next(iter(vectors.values()))
        flow = model.flow

        def prep_torch():
            tok = torch.cat([t(ins["token"]), t(ins["context"])], dim=1)
            emb = flow.input_embedding(torch.clamp(tok, min=0))
            h = flow.pre_lookahead_layer(emb[:, : ins["token"].shape[1]], context=emb[:, ins["token"].shape[1] :])
            return h.repeat_interleave(flow.token_mel_ratio, dim=1), flow.spk_embed_affine_layer(t(ins["embedding"]))

        interleaved(f"flow.prep ({ins['token'].shape[1]} tokens)", prep_torch, lambda: runner.run(ins), args.reps)

        runner, vectors = graph("flow.decoder.estimator")
        ins, _ = vectors["steady_chunk"]
        est = flow.decoder.estimator
        feed = [t(ins[k]) for k in ("x", "mask", "mu", "t", "spks", "cond")]
        interleaved(
            f"DiT estimator ({ins['x'].shape[2]} frames, CFG batch 2, chunk mask)",
            lambda: est(*feed, streaming=True),
            lambda: runner.run(ins),
            args.reps,
        )

        runner, vectors = graph("hift.final")
        case = max(vectors, key=lambda c: vectors[c][0]["mel"].shape[2])
        ins, _ = vectors[case]
        interleaved(
            f"hift.final ({ins['mel'].shape[2]} frames)",
            lambda: upstream_hift_v3(model.hift, ins["mel"], True),
            lambda: runner.run(ins),
            args.reps,
        )

        runner, vectors = graph("llm")
        ins, _ = vectors["deep_decode"]
        past = ins["past_key_values.0.key"].shape[2]
        layers = model.llm.llm.model.config.num_hidden_layers
        cache = tuple((t(ins[f"past_key_values.{i}.key"]), t(ins[f"past_key_values.{i}.value"])) for i in range(layers))
        from transformers.cache_utils import DynamicCache

        def llm_torch():
            kv = DynamicCache.from_legacy_cache(cache) if hasattr(DynamicCache, "from_legacy_cache") else cache
            out = model.llm.llm.model.model(
                inputs_embeds=t(ins["inputs_embeds"]), past_key_values=kv, use_cache=True, return_dict=True
            )
            return model.llm.llm_decoder(out.last_hidden_state[:, -1])

        interleaved(f"llm decode step ({past} cached)", llm_torch, lambda: runner.run(ins), args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
