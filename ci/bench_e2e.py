#!/usr/bin/env python
"""End-to-end streaming benchmark at full size on CPU: `TtsSession` (the `tts-run` runtime) on the pack vs
upstream PyTorch `CosyVoice2Model.tts(stream=True)` (`--family v3`: `CosyVoice3Model.tts`, fp32: upstream runs
v3's token2wav under fp16 autocast on GPU only; `--family v1`: `CosyVoiceModel.tts` with the runtime's flow and
HiFT noise injected), in one run.

Both sides synthesize the same utterance with the same work: the same text ids, no prompt, the same
ras_sampling with the same seed but with every stop id masked, so both generate exactly max_len = 20 x
(text tokens) speech tokens; the same HiFT noise. Each side runs in its own subprocess (so its peak RSS is
its own), loads its models, does one short warm-up, then the measured run. Printed per side: load time,
TTFA (first audio chunk), wall time, audio seconds, RTF, peak RSS; then the ratios runtime / upstream and
whether the two outputs agree (speech tokens identical; PCM within the end-to-end parity bounds).

Targets: TTFA <= 0.5 x upstream's and RTF <= 0.5 x upstream's at FP32, same outputs. The runtime runs twice,
as tts-run does by default (sequential) and pipelined (`tts-run --pipeline`: LLM on its own thread), which must
give the same bytes. Upstream's streaming
loop polls with `time.sleep(0.1)` per iteration: that is part of its real TTFA and is measured as is.

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_e2e.py [--work build/full] [--threads 2] [--family v1|v3]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import full_size  # noqa: E402,F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK, full_bundle, full_pack  # noqa: E402

FAMILIES = {"v1": "cosyvoice1", "v2": "cosyvoice2", "v3": "cosyvoice3"}
# PCM bounds (max, mean LSB) of the tiny end-to-end parity tests, streaming: tests/test_e2e_parity.py (v2: F0
# phase drift over calibrated voiced audio), tests/test_v3_e2e_parity.py (v3, upstream init)
PCM_BOUNDS = {"cosyvoice1": (2, 0.1), "cosyvoice2": (20, 2.0), "cosyvoice3": (2, 0.1)}

# About 8 text tokens: with every stop id masked, both sides generate max_len = 20 x 8 = 160 speech tokens.
TEXT = "Both engines say this in full."


def never_stop_sampler(seed: int, params, stop_ids):
    """Seeded ras_sampling over the speech tokens only: the utterance runs to max_len on both sides."""
    import numpy as np

    from runtime.sampling import RasSampler

    inner = RasSampler(seed, params)
    stops = list(stop_ids)

    def sample(scores, decoded):
        scores = np.array(scores, dtype=np.float32)
        scores[stops] = -np.inf
        return inner(scores, decoded)

    return sample


def worker(side: str, args) -> dict:
    import numpy as np

    from runtime.frontend.normalize import normalize_text
    from runtime.frontend.text import TextTokenizer
    from runtime.session import derive_seed
    from specs.pack import Pack

    family = FAMILIES[args.family]
    pack_dir = full_pack(args.work, family)
    pack = Pack.open(pack_dir)
    tokenizer = TextTokenizer.from_pack(pack)
    sample_rate = pack.chunk_policy.sample_rate
    t_load = time.perf_counter()
    if side in ("runtime", "pipelined", "pipelined-split"):
        from runtime.engine import PackEngine
        from runtime.session import TtsSession

        # pipelined-split: the thread budget split between the stages (LLM N//2, flow + vocoder the rest)
        split = side == "pipelined-split"
        llm_threads = max(1, args.threads // 2) if split else None
        stage_threads = max(1, args.threads - args.threads // 2) if split else args.threads
        engine = PackEngine.get(pack_dir, threads=stage_threads, llm_threads=llm_threads)
        params, stops = engine.llm.params, engine.llm.facts["stop_tokens"]
        load = time.perf_counter() - t_load

        def run(text):
            s = TtsSession(
                engine,
                seed=args.seed,
                stream=True,
                sampler_factory=lambda i: never_stop_sampler(derive_seed(args.seed, i, 0), params, stops),
                pipeline=side != "runtime",  # tts-run --pipeline; "runtime" is the default (sequential)
            )
            t0 = time.perf_counter()
            s.synthesize(text)
            first, pcm = None, []
            for chunk in s.chunks():
                if first is None:
                    first = time.perf_counter() - t0
                pcm.append(chunk.pcm)
            wall = time.perf_counter() - t0
            return first, wall, np.frombuffer(b"".join(pcm), "<i2"), s.speech_tokens[0]
    else:
        import torch

        from exporters.model.bundle import Bundle
        from exporters.oracles.tts import upstream_tts
        from runtime.sampling import RasParams
        from runtime.session import Prompt
        from runtime.vocoder import pcm16

        torch.set_num_threads(args.threads)
        model = Bundle.open(full_bundle(args.work, args.seed, family)).build()
        facts = pack.graph("llm").spec().facts
        params = RasParams(**model.sampling)
        stops = [int(t) for t in facts["stop_tokens"]]
        load = time.perf_counter() - t_load

        def run(text):
            # the ids upstream's frontend makes (runtime/frontend is tested equal to it)
            ids = tokenizer.encode(normalize_text(text, tokenizer.encode, split=True)[0])
            # the LLM prompt text the runtime uses: CosyVoice3's default instruction (<|endofprompt|>)
            instruction = facts.get("default_instruction")
            prompt_text = tokenizer.encode(instruction) if instruction else None
            tokens = []
            base = never_stop_sampler(derive_seed(args.seed, 0, 0), params, stops)
            sampler = lambda sc, dec: tokens.append(base(sc, dec)) or tokens[-1]  # noqa: E731
            t0 = time.perf_counter()
            first, out = None, []
            noise_seed, flow_seed = derive_seed(args.seed, 0, 1), derive_seed(args.seed, 0, 2)
            prompt = Prompt.none(80)
            for chunk in upstream_tts(model, ids, prompt, True, sampler, noise_seed, prompt_text, flow_seed=flow_seed):
                if first is None:
                    first = time.perf_counter() - t0
                out.append(chunk)
            return first, time.perf_counter() - t0, pcm16(np.concatenate(out)), tokens

    run("Warm up.")  # short: loads lazy parts, fills allocator pools
    ttfa, wall, pcm, tokens = run(args.text)
    np.save(args.work / f"bench_e2e_{args.family}_{side}.npy", pcm)
    return {
        "side": side,
        "load_s": load,
        "ttfa_s": ttfa,
        "wall_s": wall,
        "audio_s": len(pcm) / sample_rate,
        "rtf": wall / (len(pcm) / sample_rate),
        "speech_tokens": [int(t) for t in tokens],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--text", default=TEXT, help="the utterance (speech tokens = 20 x its text tokens)")
    ap.add_argument(
        "--family", choices=sorted(FAMILIES), default="v2", help="v1 (CosyVoice 1), v2 (CosyVoice2) or v3 (CosyVoice3)"
    )
    ap.add_argument("--side", choices=["runtime", "pipelined", "pipelined-split", "upstream"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        print(json.dumps(worker(args.side, args)))
        return 0

    import numpy as np

    family = FAMILIES[args.family]
    pack_dir = full_pack(args.work, family)
    if not (pack_dir / "manifest.json").exists():
        bundle = full_bundle(args.work, args.seed, family)
        print(f"ERROR | {pack_dir} is missing. Note: make it with tts-export --model-dir {bundle} --out {pack_dir}")
        return 1
    res = {}
    for side in ("upstream", "runtime", "pipelined", "pipelined-split"):
        cmd = [
            sys.executable,
            __file__,
            "--side",
            side,
            "--work",
            str(args.work),
            "--seed",
            str(args.seed),
            "--threads",
            str(args.threads),
            "--text",
            args.text,
            "--family",
            args.family,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        res[side] = json.loads(out.strip().splitlines()[-1])
    print(
        f"full-size {family}, {len(res['runtime']['speech_tokens'])} speech tokens, streaming, CPU, "
        f"{args.threads} threads: {args.text!r}"
    )
    print(f"{'':<10} {'load s':>8} {'TTFA s':>8} {'wall s':>8} {'audio s':>8} {'RTF':>7} {'peak RSS MB':>12}")
    for side, r in res.items():
        print(
            f"{side:<10} {r['load_s']:8.2f} {r['ttfa_s']:8.2f} {r['wall_s']:8.2f} {r['audio_s']:8.2f} "
            f"{r['rtf']:7.3f} {r['peak_rss_mb']:12.0f}"
        )
    u, o, q = res["upstream"], res["runtime"], res["pipelined"]
    print(
        f"runtime / upstream: TTFA {o['ttfa_s'] / u['ttfa_s']:.2f}x (target <= 0.5) | RTF {o['rtf'] / u['rtf']:.2f}x "
        f"(target <= 0.5) | peak RSS {o['peak_rss_mb'] / u['peak_rss_mb']:.2f}x"
    )
    sq = res["pipelined-split"]
    half = max(1, args.threads // 2)
    for label, r in ((f"pipelined, {args.threads} threads per stage", q),
                     (f"pipelined, LLM {half} / flow+vocoder {args.threads - half} threads", sq)):  # fmt: skip
        print(f"{label} / sequential: TTFA {r['ttfa_s'] / o['ttfa_s']:.2f}x | RTF {r['rtf'] / o['rtf']:.2f}x")
    best = min(("sequential", o), ("pipelined", q), ("pipelined-split", sq), key=lambda kv: kv[1]["rtf"])
    print(f"thread budget: best RTF with {best[0]} ({best[1]['rtf']:.3f})")
    # same threads per graph: bitwise equal; the split run changes thread counts, so only the last bits (README)
    seq = np.load(args.work / f"bench_e2e_{args.family}_runtime.npy")
    if not np.array_equal(np.load(args.work / f"bench_e2e_{args.family}_pipelined.npy"), seq):
        print("FAILED | pipelined and sequential runtime PCM differ (they must be bitwise equal)")
        return 1
    a = np.load(args.work / f"bench_e2e_{args.family}_runtime.npy").astype(np.int64)
    b = np.load(args.work / f"bench_e2e_{args.family}_upstream.npy").astype(np.int64)
    same_tokens = o["speech_tokens"] == u["speech_tokens"]
    diff = np.abs(a - b) if a.shape == b.shape else None
    bound_max, bound_mean = PCM_BOUNDS[family]
    verdict = same_tokens and diff is not None and diff.max() <= bound_max and diff.mean() <= bound_mean
    print(
        f"outputs: speech tokens {'identical' if same_tokens else 'DIFFERENT'}; PCM "
        + (f"max |diff| {diff.max()} LSB, mean {diff.mean():.2f} LSB" if diff is not None else "lengths differ")
        + f" -> {'SAME' if verdict else 'DIFFERENT'} (bounds {bound_max} / {bound_mean} LSB: the tiny parity tests)"
    )
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
