#!/usr/bin/env python
"""Full-size LLM check: export `llm` (+ `llm.int8`) from a full-size random-init bundle (the shipped
CosyVoice2-0.5B sizes) and compare the runtime's decoding with upstream PyTorch's `Qwen2LM.inference`.

1. the export's own checks (ORT vs upstream on prefill / first_decode / bistream_extend / deep_decode);
2. external data: the fp32 graph's weights are in one `llm.onnx.data` file, listed and sha256-hashed in
   the manifest, and `Pack.verify` passes;
3. greedy: the first 50 tokens of runtime/llm_stage.py (ORT, IO binding) equal upstream's;
4. sampled: ras_sampling with the same seed on both sides (our numpy sampler injected into upstream's
   loop) gives the same 50 tokens, for two seeds.
Exits 1 if anything fails. Uses ~9 GiB of RAM; on a shared machine run it under the full-size lock:

    flock /tmp/fullsize.lock .venv/bin/python ci/check_llm_full.py [--work build/full]

The bundle (~2.6 GB) and the pack (~2.5 GB) are kept in --work and reused by ci/bench_llm.py.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK, full_bundle  # noqa: E402


def check(ok: bool, line: str, failures: list) -> None:
    print(("PASSED | " if ok else "FAILED | ") + line, flush=True)
    if not ok:
        failures.append(line)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=50)
    ap.add_argument("--reuse-pack", action="store_true", help="skip the export if --work has a pack")
    args = ap.parse_args()

    import logging

    import numpy as np

    from exporters.model.bundle import Bundle
    from exporters.oracles.llm import upstream_decode
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from runtime.llm_stage import LLMStage
    from runtime.sampling import RasSampler, greedy
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    args.work.mkdir(parents=True, exist_ok=True)
    bundle = full_bundle(args.work, args.seed)
    pack_dir = args.work / "llm-pack"
    failures: list[str] = []
    if not (args.reuse_pack and pack_dir.exists()):
        t0 = time.time()
        result = export_pack(
            bundle,
            pack_dir,
            ["llm"],
            ExportOptions(seed=args.seed, int8=True),
            overwrite=True,
            random_init={"size": "full", "seed": args.seed},
        )
        print(f"exported llm + llm.int8 in {time.time() - t0:.0f} s", flush=True)
        for g in result.graphs:
            worst = max(g.comparisons, key=lambda c: c.max_abs / max(c.atol, 1e-30))
            check(
                all(c.passed for c in g.comparisons),
                f"{g.name}: {len(g.comparisons)} outputs vs upstream, "
                f"tightest {worst.label} max_abs {worst.max_abs:.2e} (atol {worst.atol:g})",
                failures,
            )
        del result
        gc.collect()

    pack = Pack.open(pack_dir)
    rec = pack.manifest["graphs"]["llm"]
    ext = rec.get("external_data", [])
    onnx_size = (pack_dir / rec["file"]).stat().st_size
    check(
        len(ext) == 1 and ext[0]["file"] == "llm.onnx.data" and ext[0]["size"] > 1_000_000_000,
        f"external data {[(e['file'], e['size']) for e in ext]} beside a {onnx_size / 1e6:.1f} MB llm.onnx",
        failures,
    )
    t0 = time.time()
    pack.verify(only={"llm", "llm.int8"})
    check(
        True,
        f"sha256 of llm.onnx, llm.onnx.data, llm.int8.onnx and their specs/vectors ({time.time() - t0:.0f} s)",
        failures,
    )

    model = Bundle.open(bundle).build()
    stage = LLMStage(pack)
    rng = np.random.default_rng(args.seed + 7)
    text, prompt_text = rng.integers(0, 151643, 40), rng.integers(0, 151643, 9)
    prompt_speech = rng.integers(0, stage.facts["speech_token_size"], 60)
    n = args.tokens
    t0 = time.time()
    ref = list(itertools.islice(upstream_decode(model.llm, text, prompt_text, prompt_speech), n))
    t_ref = time.time() - t0
    t0 = time.time()
    ours = list(itertools.islice(stage.generate(text, prompt_text, prompt_speech, sampler=greedy), n))
    t_ours = time.time() - t0
    first = next((i for i, (a, b) in enumerate(zip(ours, ref)) if a != b), None)
    check(
        ours == ref and len(ref) == n,
        f"greedy {n} tokens: ORT == upstream PyTorch (first difference at "
        f"{first}); {t_ref:.1f} s torch, {t_ours:.1f} s ORT incl. prefill",
        failures,
    )
    for seed in (args.seed, args.seed + 1):
        ref = list(
            itertools.islice(
                upstream_decode(model.llm, text, prompt_text, prompt_speech, sampler=RasSampler(seed, stage.params)), n
            )
        )
        ours = list(
            itertools.islice(
                stage.generate(text, prompt_text, prompt_speech, sampler=RasSampler(seed, stage.params)), n
            )
        )
        check(
            ours == ref and len(ref) == n,
            f"ras_sampling seed {seed}, {n} tokens: ORT == upstream with the "
            f"same sampler ({len(set(ours))} distinct tokens)",
            failures,
        )
    print(("PASSED" if not failures else f"FAILED ({len(failures)})") + " | ci/check_llm_full.py")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
