#!/usr/bin/env python
"""CosyVoice 1 per-graph latency at full size: each graph of the pack on ONNX Runtime CPU vs the upstream
PyTorch call it replaces (fp32), on the same inputs, interleaved in one process, same thread count. After a
warm-up, medians of the runs and torch / ORT (> 1: ORT faster); max |torch - ORT| of each compared output as a
check that both sides computed the same thing:
  - llm.text_encoder (46 text ids + a speaker) vs TransformerLM text_embedding + encode and the speaker affine;
  - llm decode step after 299 cached positions, and a prefill of upstream's 200-position lm_input (40 + 6 text
    ids, 151 prompt speech tokens), vs upstream `llm.llm.forward_chunk` + `llm_decoder` as
    TransformerLM.inference calls them; the same decode step on `llm.int8` (weight-only int8) if the pack has it;
  - flow.encoder (no prompt, a 120-token stream window) vs upstream MaskedDiffWithXvec.inference up to its CFM
    (embedding, encoder, proj, length_regulator.inference, conds; the CFM stubbed out);
  - flow.decoder.estimator (206 frames, CFG batch 2) vs upstream flow.decoder.estimator(x, mask, mu, t, spks, cond);
  - hift (20 cached + 172 new frames, 5120-sample source cache) vs upstream hift.inference with the same noise
    and initial phase injected (exporters/graphs/hift_v1.py upstream_hift_v1).
The inputs are the pack's own test vectors (upstream's recorded calls) except the prefill, recorded here from
upstream's own TransformerLM.inference. Prints a table and writes it as JSON (--json). Needs build/full/pack-v1
and build/full/bundle-full-v1-0 (see ci/bench_e2e.py --family v1):

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_v1_graphs.py [--work build/full] [--threads 2]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK, full_bundle, full_pack  # noqa: E402

# the prefill's lm_input: sos, speaker, PREFILL_PROMPT_TEXT + PREFILL_TEXT text rows, task_id, prompt speech
PREFILL_PROMPT_TEXT, PREFILL_TEXT, PREFILL_SPEECH = 6, 40, 151


def measure(torch_fn, ort_fn, reps: int, warmup: int, min_seconds: float) -> tuple[dict, tuple, dict]:
    """Warm both up, then alternate torch and ORT runs: at least `reps` pairs, more (up to 10x) for fast calls
    so that about `min_seconds` is measured. Returns timings and the last warm-up outputs of each side."""
    for _ in range(max(1, warmup)):
        t0 = time.perf_counter()
        out_torch, out_ort = torch_fn(), ort_fn()
        pair = time.perf_counter() - t0
    n = max(reps, min(10 * reps, int(min_seconds / max(pair, 1e-6))))
    runs: dict[str, list[float]] = {"torch": [], "ort": []}
    for _ in range(n):
        for side, fn in (("torch", torch_fn), ("ort", ort_fn)):
            t0 = time.perf_counter()
            fn()
            runs[side].append((time.perf_counter() - t0) * 1e3)
    mt, mo = statistics.median(runs["torch"]), statistics.median(runs["ort"])
    timing = {
        "torch_ms": mt,
        "ort_ms": mo,
        "torch_over_ort": mt / mo,
        "median_pair_ratio": statistics.median(a / b for a, b in zip(runs["torch"], runs["ort"])),
        "n": n,
        "torch_runs_ms": runs["torch"],
        "ort_runs_ms": runs["ort"],
    }
    return timing, out_torch, out_ort


def max_abs(torch_out: tuple, ort_out: dict, names: tuple[str, ...]) -> dict[str, float]:
    """max |torch - ORT| per named output (torch_out in the order of `names`)."""
    import numpy as np

    diff = {}
    for name, a in zip(names, torch_out):
        a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
        b = ort_out[name]
        if a.shape != b.shape:
            raise RuntimeError(f"{name}: torch gives {a.shape}, ORT {b.shape}: not the same call")
        diff[name] = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
    return diff


@contextlib.contextmanager
def cfm_stubbed(flow):
    """upstream flow.inference without its CFM: the decoder returns zeros of the mel's shape and no cache."""
    import torch

    class NoCFM(torch.nn.Module):
        def forward(self, mu, mask, n_timesteps, temperature=1.0, spks=None, cond=None, prompt_len=0, cache=None):
            self.seen = (mu, spks, cond)
            return torch.zeros_like(mu), torch.zeros(1, mu.shape[1], 0, 2)

    real, stub = flow.decoder, NoCFM()
    flow.decoder = stub
    try:
        yield stub
    finally:
        flow.decoder = real


def print_table(rows: list[dict], threads: int) -> None:
    head = f"{'graph':<24} {'call':<44} {'torch ms':>9} {'ORT ms':>9} {'torch/ORT':>9} {'pairs':>6} {'n':>3}  max|diff|"
    print(f"\nthreads {threads}; medians after warm-up; pairs = median of per-pair ratios")
    print(head)
    print("-" * len(head))
    for r in rows:
        diff = ", ".join(f"{k} {v:.1e}" for k, v in r["max_abs"].items())
        print(
            f"{r['graph']:<24} {r['call']:<44} {r['torch_ms']:9.1f} {r['ort_ms']:9.1f} {r['torch_over_ort']:9.2f} "
            f"{r['median_pair_ratio']:6.2f} {r['n']:3d}  {diff}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both torch and ORT")
    ap.add_argument("--reps", type=int, default=7, help="measured torch/ORT pairs per graph (at least)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--min-seconds", type=float, default=2.0, help="fast calls get more pairs, up to 10x --reps")
    ap.add_argument("--json", type=Path, default=None, help="default: WORK/bench_v1_graphs.json")
    args = ap.parse_args()

    import logging

    import numpy as np
    import onnxruntime
    import torch
    import torch.nn.functional as F

    from backends.ort import OrtRunner
    from exporters.graphs.hift_v1 import upstream_hift_v1
    from exporters.model.bundle import Bundle
    from exporters.oracles.llm_v1 import upstream_run
    from specs.noise import phase_from_uniforms
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    pack_dir, bundle_dir = full_pack(args.work, "cosyvoice1"), args.work / f"bundle-full-v1-{args.seed}"
    if not (pack_dir.exists() and bundle_dir.exists()):
        print(f"ERROR | needs {pack_dir} and {bundle_dir} (ci/bench_e2e.py --family v1 makes them)")
        return 1
    pack = Pack.open(pack_dir)
    model = Bundle.open(full_bundle(args.work, args.seed, "cosyvoice1")).build()
    llm, flow = model.llm, model.flow
    rng = np.random.default_rng(args.seed)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    i32 = lambda n: torch.tensor([n], dtype=torch.int32)  # noqa: E731
    rows: list[dict] = []

    def bench(graph: str, call: str, torch_fn, feed: dict, compare: tuple[str, ...]) -> None:
        """One row; its ORT session is freed on return (one session at a time)."""
        entry = pack.graph(graph)
        runner = OrtRunner(entry.onnx_path, entry.spec(), threads=args.threads)
        timing, out_t, out_o = measure(torch_fn, lambda: runner.run(feed), args.reps, args.warmup, args.min_seconds)
        rows.append({"graph": graph, "call": call, **timing, "max_abs": max_abs(out_t, out_o, compare)})
        r = rows[-1]
        print(f"{graph:<24} {call:<44} torch {r['torch_ms']:8.1f} ms | ORT {r['ort_ms']:8.1f} ms", flush=True)

    def step_torch(xs, cache):
        """One upstream decode-loop call as TransformerLM.inference makes it (offset = cached positions)."""
        n = xs.shape[1]
        y, new_cache, _ = llm.llm.forward_chunk(
            xs,
            offset=cache.shape[2],
            required_cache_size=-1,
            att_cache=cache,
            cnn_cache=torch.zeros((0, 0, 0, 0)),
            att_mask=torch.tril(torch.ones((1, n, n))).to(torch.bool),
        )
        return llm.llm_decoder(y[:, -1]), new_cache

    print(f"threads {args.threads}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}", flush=True)
    with torch.no_grad():
        ins, _ = pack.graph("llm.text_encoder").vectors()["long_text"]
        ids, emb = t(ins["text_ids"]), t(ins["embedding"])

        def text_encoder_torch():
            h, _ = llm.encode(llm.text_embedding(ids), i32(ids.shape[1]))
            return h, llm.spk_embed_affine_layer(F.normalize(emb, dim=1)).unsqueeze(1)

        bench("llm.text_encoder", f"{ids.shape[1]} text ids + speaker", text_encoder_torch, ins, ("text_h", "spk_h"))

        llm_vectors = pack.graph("llm").vectors()
        ins, _ = llm_vectors["deep_decode"]
        deep = ins
        xs, cache = t(ins["inputs_embeds"]), t(ins["att_cache"])
        past = cache.shape[2]
        bench("llm", f"decode step ({past} cached)", lambda: step_torch(xs, cache), ins, ("logits", "att_cache_out"))
        if pack.has_graph("llm.int8"):
            bench(
                "llm.int8",
                f"decode step ({past} cached) vs torch fp32",
                lambda: step_torch(xs, cache),
                deep,
                ("logits", "att_cache_out"),
            )

        # upstream's own lm_input of a zero-shot request, from its first forward_chunk call
        s = llm_vectors["prefill"][0]["att_cache"].shape
        text = lambda n: rng.integers(0, int(llm.text_embedding.num_embeddings), n)  # noqa: E731
        run = upstream_run(
            llm,
            text(PREFILL_TEXT),
            text(PREFILL_PROMPT_TEXT),
            rng.integers(0, int(llm.speech_token_size), PREFILL_SPEECH),
            rng.standard_normal((1, int(llm.spk_embed_affine_layer.in_features))).astype(np.float32),
            max_tokens=1,
        )
        lm_input = run.calls[0].xs
        feed = {"inputs_embeds": lm_input, "att_cache": np.zeros((s[0], s[1], 0, s[3]), np.float32)}
        prefill_x = t(lm_input)
        bench(
            "llm",
            f"prefill ({lm_input.shape[1]} positions)",
            lambda: step_torch(prefill_x, torch.zeros((0, 0, 0, 0))),
            feed,
            ("logits", "att_cache_out"),
        )
        del llm_vectors, deep, run
        gc.collect()

        ins, _ = pack.graph("flow.encoder").vectors()["window_no_prompt"]
        kwargs = {
            "token": t(ins["token"]).to(torch.int32),
            "token_len": i32(ins["token"].shape[1]),
            "prompt_token": t(ins["prompt_token"]).to(torch.int32),
            "prompt_token_len": i32(ins["prompt_token"].shape[1]),
            "prompt_feat": t(ins["prompt_feat"]),
            "prompt_feat_len": i32(ins["prompt_feat"].shape[1]),
            "embedding": t(ins["embedding"]),
            "flow_cache": torch.zeros(1, int(flow.output_size), 0, 2),
        }
        with cfm_stubbed(flow) as stub:

            def encoder_torch():
                flow.inference(**kwargs)
                return stub.seen

            call = f"{ins['prompt_token'].shape[1]} prompt + {ins['token'].shape[1]} tokens"
            bench("flow.encoder", call, encoder_torch, ins, ("mu", "spks", "cond"))

        ins, _ = pack.graph("flow.decoder.estimator").vectors()["window_no_prompt"]
        feed_t = [t(ins[k]) for k in ("x", "mask", "mu", "t", "spks", "cond")]
        est = flow.decoder.estimator
        call = f"{ins['x'].shape[2]} frames, CFG batch {ins['x'].shape[0]}"
        bench("flow.decoder.estimator", call, lambda: (est(*feed_t),), ins, ("velocity",))

        ins, _ = pack.graph("hift").vectors()["steady_chunk"]
        u = rng.random((1, ins["phase"].shape[1]), dtype=np.float32)  # the SineGen uniforms both sides get
        feed = {**ins, "phase": phase_from_uniforms(u)}
        call = f"{ins['mel'].shape[2]} frames, {ins['cache_source'].shape[2]}-sample source cache"
        bench(
            "hift",
            call,
            lambda: upstream_hift_v1(model.hift, ins["mel"], ins["cache_source"], ins["noise"], u),
            feed,
            ("audio", "source"),
        )

    print_table(rows, args.threads)
    out = args.json or args.work / "bench_v1_graphs.json"
    info = {
        "threads": args.threads,
        "warmup": args.warmup,
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "pack": str(pack_dir),
        "bundle": str(bundle_dir),
        "rows": rows,
    }
    out.write_text(json.dumps(info, indent=1) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
