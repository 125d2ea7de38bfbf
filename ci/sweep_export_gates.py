#!/usr/bin/env python
"""Every graph's export gate on bundles it was not tuned on: `tts-export` (all graphs, with the fp16 and int8
variants) of bundles built by upstream's own classes with upstream's own initialisation
(`make_random_bundle(..., calibrate=False)`), tiny seeds 0..N-1 and medium seeds 0..M-1. The hift gate has its
own, deeper sweep with planted bugs (ci/sweep_hift_gate.py); this one asks only: does any gate refuse a good
bundle, and how close does each output come to its bound?

Per graph/output: the worst `bound use` over bundles and cases (max |err| / allowed error; > 1 refuses; exact
outputs count 0 or refuse). Planted fp16 bugs, each on --bug-seeds tiny bundles, must be refused: the
estimator's fp16 variant with no fp32 rules (`no_fp32_rules`), and with its time embedding in fp16
(`time_embedding_fp16`: no trig-argument rule, Sin/Cos and the time MLP not kept). Writes WORK/gates.md.
Exit 1 on any false refusal or any planted bug that passes.

    .venv/bin/python ci/sweep_export_gates.py [--tiny 30] [--medium 3] [--bug-seeds 2] [--work build/sweep_hift_gate]
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import time
from collections import defaultdict
from pathlib import Path

import full_size  # noqa: E402, F401  (sys.path + the upstream oracle, before torch)
from sweep_hift_gate import gate_calls, sweep_arguments, upstream_bundle  # noqa: E402

BUGS = ("no_fp32_rules", "time_embedding_fp16")


@contextlib.contextmanager
def planted(bug: str):
    """The estimator's fp16 policy with `bug` planted (the graph and its fp32 gate stay as they are)."""
    from exporters.graphs.estimator import EstimatorExporter
    from specs.precision import Fp32Keep

    real = EstimatorExporter.variants

    def variants(self, spec):
        v = real(self, spec)
        keep = v["fp16"].fp32_keep
        if bug == "no_fp32_rules":
            keep = Fp32Keep(reason="planted bug")
        else:
            ops = tuple(o for o in keep.ops if o not in ("Sin", "Cos"))
            keep = dataclasses.replace(keep, ops=ops, name_patterns=(), trig_arguments=False)
        v["fp16"] = dataclasses.replace(v["fp16"], fp32_keep=keep)
        return v

    EstimatorExporter.variants = variants
    try:
        yield
    finally:
        EstimatorExporter.variants = real


def export_all(bundle: Path, out: Path, seed: int, graphs: list[str] | None = None):
    """(refusal line or '', comparisons of the graphs kept, onnxsim refusals) of `tts-export --fp16 --int8`."""
    from exporters.pipeline.graph import ExportOptions
    from exporters.pipeline.pack import export_pack
    from specs.errors import ToolError

    shutil.rmtree(out, ignore_errors=True)
    lines: list[str] = []
    with gate_calls() as calls:
        try:
            opts = ExportOptions(seed=seed, fp16=True, int8=True, log=lines.append)
            result = export_pack(bundle, out, graphs, opts, log=lines.append)
            refusal = ""
            comps = [c for g in result.graphs for c in g.comparisons]  # the graphs kept (simplified or not)
        except ToolError as e:
            refusal = str(e)
            comps = [c for call in calls for c in call]
        finally:
            shutil.rmtree(out, ignore_errors=True)
    unsimplified = [ln.strip() for ln in lines if "onnxsim costs accuracy" in ln]
    return refusal, comps, unsimplified


def output_of(label: str) -> str:
    graph, _case, output = label.split("/", 2)
    return f"{graph}/{output}"


def main() -> int:
    args = sweep_arguments(__doc__).parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    worst: dict[str, tuple[float, str, str]] = defaultdict(lambda: (0.0, "", ""))
    refusals: list[str] = []
    kept_unsimplified: dict[str, int] = defaultdict(int)  # graph -> bundles where onnxsim cost accuracy
    plan = [("tiny", s) for s in range(args.tiny)] + [("medium", s) for s in range(args.medium)]
    for size, seed in plan:
        name = f"{size}-{seed}"
        bundle = upstream_bundle(work, size, seed)
        t = time.time()
        refusal, comps, unsimplified = export_all(bundle, work / "packs" / f"all-{name}", seed)
        if refusal:
            refusals.append(f"{name}: {refusal}")
        for ln in unsimplified:
            kept_unsimplified[ln.split("(", 1)[1].split("/", 1)[0]] += 1
        for c in comps:
            use = c.bound_use if c.check != "exact" else (0.0 if c.passed else float("inf"))
            key = output_of(c.label)
            if use >= worst[key][0]:
                worst[key] = (use, name, c.line())
        top = max(comps, key=lambda c: c.bound_use, default=None)
        print(f"{'REFUSED' if refusal else 'ok':7s} {name:10s} {time.time() - t:5.1f} s | "
              f"{refusal or (top.line() if top else 'no comparisons')}", flush=True)  # fmt: skip
    missed: list[str] = []
    bug_lines: list[str] = []
    for bug in BUGS:
        for seed in range(args.bug_seeds):
            name = f"bug-{bug}-tiny-{seed}"
            with planted(bug):
                refusal, comps, _ = export_all(upstream_bundle(work, "tiny", seed), work / "packs" / name, seed,
                                               ["flow.decoder.estimator"])  # fmt: skip
            fp16 = [c for c in comps if c.label.startswith("flow.decoder.estimator.fp16/")]
            use = max((c.bound_use for c in fp16), default=float("nan"))
            line = f"{'ok' if refusal else 'MISSED':7s} {name:34s} bound use {use:.3g}"
            print(line, flush=True)
            bug_lines.append(f"- {name}: {'refused' if refusal else 'PASSED (missed)'}, bound use {use:.3g}")
            if not refusal:
                missed.append(name)
    rows = ["| graph/output | worst bound use | bundle | worst comparison |", "|---|---|---|---|"]
    for key in sorted(worst):
        use, name, line = worst[key]
        rows.append(f"| {key} | {use:.3g} | {name} | `{line}` |")
    table = work / "gates.md"
    table.write_text(
        f"{len(plan)} upstream-init bundles ({args.tiny} tiny, {args.medium} medium), {len(refusals)} refused\n\n"
        + "\n".join(rows)
        + "\n\nonnxsim's graph refused for costing accuracy (kept unsimplified): "
        + (", ".join(f"{g} in {n} bundles" for g, n in sorted(kept_unsimplified.items())) or "never")
        + f"\n\nPlanted fp16 bugs ({len(bug_lines) - len(missed)}/{len(bug_lines)} refused):\n\n"
        + "\n".join(bug_lines)
        + "\n"
    )
    print("\n".join(rows))
    print(f"{len(plan)} bundles, {len(refusals)} refused; planted bugs: {len(bug_lines) - len(missed)}/"
          f"{len(bug_lines)} refused; table: {table}; {time.time() - t0:.0f} s")  # fmt: skip
    for r in refusals:
        print(f"REFUSED {r}")
    for m in missed:
        print(f"MISSED {m}")
    ok = not refusals and not missed
    print("PASSED: no false refusal, every planted bug refused" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
