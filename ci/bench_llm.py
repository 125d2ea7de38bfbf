#!/usr/bin/env python
"""LLM latency at full size: ONNX Runtime CPU (the pack's `llm` and `llm.int8`, runtime/llm_stage.py) vs
upstream PyTorch CPU (`Qwen2Encoder.forward_one_step` + `llm_decoder`, as `Qwen2LM.inference` calls them),
measured interleaved in one process so that load from other jobs hits every side alike; plus the INT8
variant's agreement with FP32 over 200 greedy steps.

Prints medians in ms and ratios torch / ORT (> 1: ORT faster) for
  - prefill of --prefill positions (a fresh cache each time);
  - one decode step at each --depths cached positions (the cache grows by one per timed step);
  - IO-bound vs plain `session.run` decode steps (same graph);
  - INT8: 200 greedy steps (argmax over speech tokens, stop ids excluded) of the FP32 graph; the INT8 graph
    teacher-forced on that sequence (top-1 agreement, logits error) and free-running (first divergence).
Targets on the quiet 2-core reference machine: FP32 decode <= 80 ms/step, INT8 <= 30 ms/step.
Needs the full-size bundle and pack that ci/check_llm_full.py leaves in --work:

    flock /tmp/fullsize.lock .venv/bin/python ci/bench_llm.py [--work build/full] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from full_size import DEFAULT_WORK  # noqa: E402


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def report(label: str, times: dict[str, list[float]], base: str = "torch") -> None:
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    parts = " | ".join(f"{k} {v:7.1f} ms" for k, v in med.items())
    ratios = " | ".join(f"{base}/{k} {med[base] / v:5.2f}" for k, v in med.items() if k != base)
    print(f"{label:<30} {parts} | {ratios} (n={len(next(iter(times.values())))})", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for both torch and ORT")
    ap.add_argument("--reps", type=int, default=5, help="interleaved rounds")
    ap.add_argument("--steps", type=int, default=4, help="decode steps per side per round")
    ap.add_argument("--prefill", type=int, default=200)
    ap.add_argument("--depths", default="50,300", help="cached positions for the decode measurements")
    ap.add_argument("--agreement-steps", type=int, default=200)
    args = ap.parse_args()

    import logging

    import numpy as np
    import torch

    from exporters.model.bundle import Bundle
    from exporters.oracles.llm import lm_input, upstream_step
    from runtime.llm_stage import BoundStepper, LLMStage, PlainStepper
    from specs.pack import Pack

    logging.getLogger().setLevel(logging.WARNING)
    bundle, pack_dir = args.work / f"bundle-full-{args.seed}", args.work / "pack"
    if not (bundle.exists() and (pack_dir / "llm.int8.onnx").exists()):
        print(
            f"ERROR | {args.work} has no full bundle + llm pack with llm.int8. Note: tts-export --random-init full "
            f"--int8 --keep-bundle {args.work}/bundle-full-{args.seed} --out {args.work}/pack"
        )
        return 1
    torch.set_num_threads(args.threads)
    llm = Bundle.open(bundle).build().llm
    pack = Pack.open(pack_dir)
    fp32 = LLMStage(pack, threads=args.threads)
    int8 = LLMStage(pack, graph="llm.int8", threads=args.threads)
    speech_size = fp32.facts["speech_token_size"]
    rng = np.random.default_rng(args.seed)
    print(f"threads {args.threads}, torch {torch.__version__}; the machine may be shared: compare ratios", flush=True)

    def sequence(n: int):
        """lm_input of n positions: sos + text + task_id + prompt speech (1/3 text)."""
        n_text = max(1, (n - 2) // 3)
        return lm_input(llm, rng.integers(0, 151643, n_text), rng.integers(0, speech_size, n - 2 - n_text))

    # ---- prefill ---------------------------------------------------------------------------------------------
    x = sequence(args.prefill)
    xn = x.numpy()
    sides = {
        "torch": lambda: upstream_step(llm, x, None),
        "ORT fp32": lambda: BoundStepper(fp32, xn.shape[1])(xn),
        "ORT int8": lambda: BoundStepper(int8, xn.shape[1])(xn),
    }
    times = {k: [] for k in sides}
    for fn in sides.values():
        fn()
    for _ in range(args.reps):
        for k, fn in sides.items():
            times[k].append(timed(fn))
    report(f"prefill {args.prefill} positions", times)

    # ---- decode ----------------------------------------------------------------------------------------------
    budget = args.reps * args.steps + 8
    tokens = rng.integers(0, speech_size, budget)
    rows = [llm.speech_embedding.weight[int(t)].detach().reshape(1, 1, -1) for t in tokens]
    for depth in (int(d) for d in args.depths.split(",")):
        x = sequence(depth)
        _, cache = upstream_step(llm, x, None)
        steppers = {
            "ORT fp32": BoundStepper(fp32, depth + budget),
            "ORT int8": BoundStepper(int8, depth + budget),
            "ORT fp32 plain run": PlainStepper(fp32),
        }
        for s in steppers.values():
            s(x.numpy())
        state = {"torch": cache, **{k: 0 for k in steppers}}
        pos = {k: 0 for k in state}

        def torch_step(state=state, pos=pos):
            _, state["torch"] = upstream_step(llm, rows[pos["torch"]], state["torch"])
            pos["torch"] += 1

        def ort_step(k, steppers=steppers, pos=pos):
            steppers[k](rows[pos[k]].numpy())
            pos[k] += 1

        sides = {"torch": torch_step, **{k: (lambda k=k: ort_step(k)) for k in steppers}}
        for fn in sides.values():
            fn()
        times = {k: [] for k in sides}
        for _ in range(args.reps):
            for k, fn in sides.items():
                times[k] += [timed(fn) for _ in range(args.steps)]
        report(f"decode step, ~{depth} cached", times)
        del cache, state, steppers

    # ---- INT8 agreement ----------------------------------------------------------------------------------
    n = args.agreement_steps
    x = fp32.lm_input(rng.integers(0, 151643, 30), rng.integers(0, 151643, 8), rng.integers(0, speech_size, 60))
    a, b = BoundStepper(fp32, x.shape[1] + n), BoundStepper(int8, x.shape[1] + n)
    la, lb = a(x).copy(), b(x).copy()
    ref, agree, errs = [], 0, []
    for _ in range(n):  # teacher-forced: both graphs get the fp32 greedy token
        token = int(np.argmax(la[0, :speech_size]))
        agree += int(np.argmax(lb[0, :speech_size])) == token
        errs.append(np.abs(la - lb).max())
        ref.append(token)
        row = fp32.speech_embedding[token][None, None]
        la, lb = a(row).copy(), b(row).copy()
    free = BoundStepper(int8, x.shape[1] + n)
    logits, free_run = free(x), []
    for _ in range(n):
        free_run.append(int(np.argmax(logits[0, :speech_size])))
        logits = free(int8.speech_embedding[free_run[-1]][None, None])
    first = next((i for i, (p, q) in enumerate(zip(ref, free_run)) if p != q), n)
    print(
        f"int8 vs fp32 over {n} greedy steps: teacher-forced top-1 agreement {agree}/{n} "
        f"({100 * agree / n:.1f} %), logits max-abs error median {np.median(errs):.3f} max {max(errs):.3f}; "
        f"free-running: identical for the first {first} tokens, {sum(p == q for p, q in zip(ref, free_run))}/{n} "
        f"positions equal",
        flush=True,
    )
    kv_mb = sum(arr.nbytes for bank in a.banks for arr in bank) / 1e6
    print(f"IO-bound cache: {kv_mb:.1f} MB in two banks for {x.shape[1] + n} positions, allocated once")
    return 0


if __name__ == "__main__":
    sys.exit(main())
