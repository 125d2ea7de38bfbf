#!/usr/bin/env python
"""Regenerate golden/tiny: the committed golden vectors of the tiny random-init CosyVoice2 bundle (seed 0).

The expected outputs come from the upstream PyTorch modules (each exporter's `cases()`), exactly as in
a pack's own NAME.vectors.npz; `tts-validate PACK --golden golden/tiny` then checks that a freshly
exported pack still reproduces them. `run.json` records a golden streaming synthesis of GOLDEN_TEXT
(seed 0): speech tokens, chunk count, total samples, RMS, peak, silence ratio and per-chunk sha256
(bit-exact only on a CPU with the same vector ISA, which run.json records).
Run after a deliberate change of a graph's I/O, its test cases, or the runtime's output:

    .venv/bin/python ci/make_golden.py            # writes golden/tiny/
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


def run_stats(pack_dir: Path, text: str = GOLDEN_TEXT, seed: int = 0) -> dict:
    """One streaming synthesis through the runtime; everything about its output that a golden run pins."""
    import numpy as np

    from runtime.engine import PackEngine
    from runtime.session import TtsSession

    s = TtsSession(PackEngine.get(pack_dir), seed=seed, stream=True)
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "golden" / "tiny")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from exporters.random.bundle import make_random_bundle
    from specs.pack import Pack, sha256_file

    with tempfile.TemporaryDirectory() as tmp:
        bundle = make_random_bundle(Path(tmp) / "bundle", "tiny", args.seed)
        pack_dir = Path(tmp) / "pack"
        export_pack(
            bundle, pack_dir, None, ExportOptions(seed=args.seed), random_init={"size": "tiny", "seed": args.seed}
        )
        pack = Pack.open(pack_dir)
        if args.out.exists():
            shutil.rmtree(args.out)
        args.out.mkdir(parents=True)
        files = {}
        for name in pack.graph_names():
            g = pack.graph(name)
            if g.record.get("variant_of"):
                continue
            for src in (g.vectors_path, g.spec_path):
                shutil.copyfile(src, args.out / src.name)
                files[src.name] = sha256_file(args.out / src.name)
        (args.out / "run.json").write_text(json.dumps(run_stats(pack_dir, seed=args.seed), indent=1) + "\n")
        (args.out / "golden.json").write_text(
            json.dumps(
                {
                    "what": "golden test vectors of the tiny random-init CosyVoice2 bundle; expected outputs computed "
                    "by "
                    "the upstream PyTorch modules (FunAudioLLM/CosyVoice @ ace7c47 via ../shared/oracle)",
                    "bundle": {"random_init": "tiny", "seed": args.seed},
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
