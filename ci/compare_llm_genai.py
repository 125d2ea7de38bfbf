#!/usr/bin/env python
"""Route comparison behind exporters/graphs/llm.py: the pack's `llm` graph (torch export) vs the Qwen2 graph
of onnxruntime-genai's model builder (GroupQueryAttention, `exclude_embeds`, `exclude_lm_head`), on parity
with upstream PyTorch (the pack's test vectors; the `llm_decoder` head applied to GenAI's hidden states in
numpy) and on decode / prefill latency, interleaved.

The builder needs transformers 5 and onnxruntime-genai, which the project venv does not carry; build the
GenAI graph in a throwaway venv layered on the project's packages (nothing is installed into .venv):

    python3.11 -m venv /tmp/gvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/gvenv/lib/python3.11/site-packages/project.pth
    /tmp/gvenv/bin/pip install --no-deps onnxruntime-genai==0.18.0 transformers==5.24.0
    /tmp/gvenv/bin/pip install "huggingface-hub>=1.31,<3" "safetensors>=0.8" "tokenizers>=0.23.1,<0.24"
    # an HF folder of the bundle's Qwen2 (weights from llm.pt): model.llm.llm.model.save_pretrained(DIR),
    # plus vocab.json, merges.txt, tokenizer_config.json from CosyVoice-BlankEN/
    /tmp/gvenv/bin/python -m onnxruntime_genai.models.builder -i DIR -o GENAI -p fp32 -e cpu \\
        --extra_options exclude_embeds=true exclude_lm_head=true

    flock /tmp/fullsize.lock .venv/bin/python ci/compare_llm_genai.py --pack build/llm-full/llm-pack \\
        --genai GENAI --llm-pt build/llm-full/bundle-full-0/llm.pt
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", type=Path, required=True)
    ap.add_argument("--genai", type=Path, required=True, help="folder with the builder's model.onnx")
    ap.add_argument("--llm-pt", type=Path, required=True, help="the bundle's llm.pt (for the llm_decoder head)")
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import numpy as np
    import onnxruntime as ort
    import torch

    from backends.ort import session_options
    from specs.pack import load_vectors

    vectors = load_vectors(args.pack / "llm.vectors.npz")
    sd = torch.load(args.llm_pt, map_location="cpu", weights_only=True)
    w, b = sd["llm_decoder.weight"].numpy(), sd["llm_decoder.bias"].numpy()
    del sd
    cpu = ["CPUExecutionProvider"]
    ours = ort.InferenceSession(str(args.pack / "llm.onnx"), session_options(args.threads), providers=cpu)
    genai = ort.InferenceSession(str(args.genai / "model.onnx"), session_options(args.threads), providers=cpu)
    genai_inputs = {i.name for i in genai.get_inputs()}  # no position_ids: GQA derives them from the mask

    def run_genai(feed):
        return genai.run(["hidden_states"], {k: v for k, v in feed.items() if k in genai_inputs})[0]

    print("parity, logits max abs vs upstream PyTorch:")
    for case, (ins, outs) in vectors.items():
        e_ours = np.abs(ours.run(["logits"], ins)[0] - outs["logits"]).max()
        e_genai = np.abs(run_genai(ins)[:, -1] @ w.T + b - outs["logits"]).max()
        print(f"  {case:<16} ours {e_ours:.2e} | genai {e_genai:.2e}")

    rng = np.random.default_rng(0)
    template = vectors["deep_decode"][0]

    def feed(past: int, seq: int) -> dict:
        f = {
            "inputs_embeds": (rng.standard_normal((1, seq, template["inputs_embeds"].shape[2])) * 0.05).astype(
                np.float32
            ),
            "attention_mask": np.ones((1, past + seq), np.int64),
            "position_ids": np.arange(past, past + seq, dtype=np.int64)[None],
        }
        for k, v in template.items():
            if k.startswith("past_key_values."):
                f[k] = rng.standard_normal((1, v.shape[1], past, v.shape[3])).astype(np.float32)
        return f

    runs = {"ours": lambda f: ours.run(None, f), "genai": run_genai}
    for label, f, inner in (("decode, 300 cached", feed(300, 1), 5), ("prefill, 200 positions", feed(0, 200), 1)):
        times = {k: [] for k in runs}
        for fn in runs.values():
            fn(f)
        for r in range(args.reps):
            for k in ("ours", "genai") if r % 2 == 0 else ("genai", "ours"):
                for _ in range(inner):
                    t0 = time.perf_counter()
                    runs[k](f)
                    times[k].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        print(
            f"{label:<24} ours {med['ours']:7.1f} ms | genai (no head) {med['genai']:7.1f} ms | "
            f"genai/ours {med['genai'] / med['ours']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
