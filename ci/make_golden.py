#!/usr/bin/env python
"""Regenerate golden/tiny: the committed golden vectors of the tiny random-init CosyVoice2 bundle (seed 0).

The expected outputs come from the upstream PyTorch modules (each exporter's `cases()`), exactly as in
a pack's own NAME.vectors.npz; `tts-validate PACK --golden golden/tiny` then checks that a freshly
exported pack still reproduces them. `run.json` records a golden streaming synthesis of GOLDEN_TEXT
(seed 0): speech tokens, chunk count, total samples, RMS, peak, silence ratio and per-chunk sha256
(bit-exact only on a CPU with the same vector ISA, which run.json records).
Run after a deliberate change of a graph's I/O, its test cases, or the runtime's output:

    .venv/bin/python ci/make_golden.py               # writes golden/tiny/     (CosyVoice2)
    .venv/bin/python ci/make_golden.py --family v3   # writes golden/tiny-v3/  (Fun-CosyVoice3)
    .venv/bin/python ci/make_golden.py --family v1   # writes golden/tiny-v1/  (CosyVoice 1)

golden/tiny-v3 leaves out the vectors of `hift` / `hift.final`: their `noise` input is a slice of upstream's
fixed uniform sine noise (3.4 + 3.9 MB of incompressible floats for four cases). The v3 vocoder is pinned by
run.json instead (per-chunk sha256 of a streaming run through every graph) and by each pack's own vectors.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
if (SHARED / "oracle" / "oracle_env.py").exists():
    sys.path.insert(0, str(SHARED / "oracle"))
    import oracle_env  # noqa: F401,E402  (before torch)


GOLDEN_TEXT = (
    "Golden run of the tiny CosyVoice2 pack. The random weights say nothing, but they say it the same way every time."
)


def cpu_isa() -> str:
    """The widest x86 vector ISA of this CPU: ONNX Runtime's kernels (and so the last bits of PCM) depend on it."""
    try:
        flags = set(open("/proc/cpuinfo").read().split())
    except OSError:
        return "unknown"
    for isa in ("avx512f", "avx2", "sse4_1"):
        if isa in flags:
            return isa
    return "other"


GOLDEN_TOKENS = 160  # token-driven golden run: seeded speech tokens, several streaming flow calls


def run_stats(pack_dir: Path, text: str | None = GOLDEN_TEXT, seed: int = 0) -> dict:
    """One streaming synthesis through the runtime; everything about its output that a golden run pins.
    `text` None: token -> audio on GOLDEN_TOKENS seeded speech tokens (the tiny upstream-init CosyVoice3 LLM
    stops after a few tokens, so its golden run drives flow and vocoder directly; the LLM has golden vectors)."""
    import numpy as np

    from runtime.engine import PackEngine
    from runtime.session import TtsSession

    engine = PackEngine.get(pack_dir)
    s = TtsSession(engine, seed=seed, stream=True)
    if text is None:
        vocab = int(engine.pack.config["flow"]["vocab_size"])
        s.push_tokens(np.random.default_rng(seed).integers(0, vocab, GOLDEN_TOKENS))
    else:
        s.synthesize(text)
    chunks = list(s.chunks())
    pcm = np.frombuffer(b"".join(c.pcm for c in chunks), "<i2").astype(np.float64) / 32768.0
    return {
        "text": text,
        "seed": seed,
        "stream": True,
        "cpu_isa": cpu_isa(),
        "speech_tokens": s.speech_tokens,
        "chunks": len(chunks),
        "total_samples": int(pcm.size),
        "flow_calls": s.flow_calls,
        "rms": float(np.sqrt(np.mean(pcm**2))),
        "peak": float(np.abs(pcm).max()),
        "silence_ratio": float(np.mean(np.abs(pcm) < 1e-3)),
        "chunk_sha256": [c.sha256 for c in chunks],
    }


# --family -> (bundle family, golden directory, graphs without golden vectors, golden run text or None = tokens)
FAMILIES = {
    "v2": ("cosyvoice2", "tiny", set(), GOLDEN_TEXT),
    "v3": ("cosyvoice3", "tiny-v3", {"hift", "hift.final"}, None),
    "v1": ("cosyvoice1", "tiny-v1", set(), GOLDEN_TEXT),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=sorted(FAMILIES), default="v2")
    ap.add_argument("--out", type=Path, default=None, help="default golden/tiny (v2), golden/tiny-v1, golden/tiny-v3")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    family, dirname, skipped, run_text = FAMILIES[args.family]
    args.out = args.out or REPO / "golden" / dirname

    import torch

    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from exporters.random.bundle import make_random_bundle
    from specs.pack import Pack, sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_random_bundle(Path(tmp) / "bundle", "tiny", args.seed, family=family)
        pack_dir = Path(tmp) / "pack"
        random_init = {"size": "tiny", "seed": args.seed, "family": family}
        export_pack(bundle, pack_dir, None, ExportOptions(seed=args.seed), random_init=random_init)
        pack = Pack.open(pack_dir)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        files = {}
        for name in pack.graph_names():
            g = pack.graph(name)
            if g.record.get("variant_of") or name in skipped:
                continue
            for src in (g.vectors_path, g.spec_path):
                shutil.copyfile(src, args.out / src.name)
                files[src.name] = sha256_file(args.out / src.name)
        (args.out / "run.json").write_text(json.dumps(run_stats(pack_dir, run_text, args.seed), indent=1) + "\n")
        (args.out / "golden.json").write_text(
            json.dumps(
                {
                    "what": f"golden test vectors of the tiny random-init {family} bundle; expected outputs computed "
                    "by the upstream PyTorch modules (FunAudioLLM/CosyVoice @ ace7c47 via ../shared/oracle)",
                    "bundle": {"random_init": "tiny", "seed": args.seed, "family": family},
                    "graphs_without_vectors": sorted(skipped),
                    "vector_seed": args.seed,
                    "torch": torch.__version__,
                    "made_by": "ci/make_golden.py",
                    "files": files,
                },
                indent=2,
            )
            + "\n"
        )
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"wrote {len(files)} files to {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
