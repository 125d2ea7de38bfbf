"""`tts-build-trt --dry-run`: every planned engine with its profiles, as a plain-text table (like
`trtllm-build --dry_run`). Pure Python: no TensorRT, Polygraphy or GPU needed."""

from __future__ import annotations

from trt.plans import PlanSet

HEADER = ("PLAN", "PROFILE", "DIM", "MIN", "OPT", "MAX", "INPUTS")


def plan_rows(plans: PlanSet) -> list[tuple[str, ...]]:
    rows = []
    for e in plans.engines:
        uses = {}
        for t in e.spec.inputs:
            for axis, d in enumerate(t.shape):
                if isinstance(d, str):
                    uses.setdefault(d, []).append(f"{t.name}[{axis}]")
        for p in e.profiles.profiles:
            for d, r in p.dims.items():
                derived = " (derived)" if e.spec.dims[d].derived_from else ""
                rows.append((e.name, p.name, d + derived, str(r.min), str(r.opt), str(r.max), _inputs(uses[d])))
    return rows


def _inputs(uses: list[str]) -> str:
    return " ".join(uses) if len(uses) <= 4 else f"{uses[0]} … {uses[-1]} ({len(uses)} inputs)"


def format_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    right = {3, 4, 5}
    return [
        "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        for r in [HEADER, *rows]
    ]


def dry_run_lines(plans: PlanSet) -> list[str]:
    lines = format_table(plan_rows(plans)) if plans.engines else ["(no engine planned)"]
    for e in plans.engines:
        extra = [f"file {e.plan_rel}, source {e.source_file} ({e.source_sha256[:12]}…)"]
        if e.keep is not None:
            k = e.keep
            kept = (
                [f"ops {','.join(k.ops)}"]
                + ([f"names /{'/, /'.join(k.name_patterns)}/"] if k.name_patterns else [])
                + [f"paths {a}->{b}" for a, b in k.paths]
                + (["sin/cos arguments"] if k.trig_arguments else [])
            )
            extra.append("fp16, strongly typed; kept fp32: " + "; ".join(kept))
        else:
            extra.append("fp32, strongly typed, TF32 off")
        extra += [f"zero-length {z.dim} ({z.handling}): {z.note}" for z in e.profiles.zero_length]
        extra += [f"note: {n}" for n in e.profiles.notes]
        lines.append(f"{e.name}:")
        lines += [f"  {x}" for x in extra]
    lines += [f"skipped: {s}" for s in plans.skipped]
    return lines
