"""Which engines to build for a pack: one per graph x precision x chunk mode, with its profiles.

Everything comes from the graphs' I/O specs: the chunk modes and profiles each declares (`profiles`), and
for fp16 its float16 precision policy (`precisions.fp16`: nodes kept fp32, tolerances). Plan names and
files: specs/plans.py. Plans are built from a pack's fp32 graphs only; its ORT variants (`variant_of`,
e.g. `NAME.fp16`, `llm.int8`) are not TensorRT sources.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from specs.chunk_policy import ANY_CHUNK, CHUNK_MODES
from specs.errors import ToolError
from specs.io_spec import GraphSpec, Tolerance
from specs.pack import Pack
from specs.plans import PLAN_PRECISIONS, plan_name, rebuild_command
from specs.precision import Fp32Keep
from trt.profiles import GraphProfiles, chunks_for, derive_profiles

PRECISIONS = PLAN_PRECISIONS


@dataclass
class EnginePlan:
    graph: str
    precision: str
    chunk: str
    spec: GraphSpec
    profiles: GraphProfiles
    source_file: str
    source_sha256: str
    keep: Fp32Keep | None = None  # fp16 only

    @property
    def name(self) -> str:
        return plan_name(self.graph, self.precision, self.chunk)

    @property
    def plan_rel(self) -> str:
        return f"trt/{self.name}.plan"

    @property
    def meta_rel(self) -> str:
        return f"trt/{self.name}.json"


@dataclass
class PlanSet:
    engines: list[EnginePlan] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan_tolerances(spec: GraphSpec, precision: str) -> dict[str, Tolerance]:
    """Tolerance per output for comparing a plan of `precision` with ONNX Runtime's fp32 graph: fp32 plans
    (TF32 off) use the spec's own (both sides fp32, reassociation only); fp16 plans the graph's fp16 policy."""
    if precision == "fp32":
        return dict(spec.tolerances)
    policy = spec.precisions.get(precision)
    if policy is None:
        raise ToolError(spec.graph, f"declares no {precision} precision policy", "see its exporter's variants()")
    return dict(policy.tolerances)


def fp16_policy_problem(spec: GraphSpec) -> str | None:
    policy = spec.precisions.get("fp16")
    if policy is None or not policy.offered_on("tensorrt") or policy.method != "float16":
        return "its I/O spec declares no float16 policy for TensorRT"
    return None


def resolve_name(names: list[str], wanted: str) -> str | None:
    """A graph name, or a unique last dotted component of one ('estimator' -> 'flow.decoder.estimator')."""
    if wanted in names:
        return wanted
    hits = [n for n in names if n.rsplit(".", 1)[-1] == wanted]
    return hits[0] if len(hits) == 1 else None


def source_graphs(pack: Pack) -> list[str]:
    return [n for n in pack.graph_names() if "variant_of" not in pack.manifest["graphs"][n]]


def resolve_graphs(pack: Pack, names: Iterable[str] | None) -> list[str]:
    available = source_graphs(pack)
    if not names:
        return available
    out = []
    for n in names:
        full = resolve_name(pack.graph_names(), n) or n
        rec = pack.manifest["graphs"].get(full)
        if rec is None:
            raise ToolError("--graphs", f"pack has no graph {n!r}", f"graphs in this pack: {', '.join(available)}")
        if "variant_of" in rec:
            raise ToolError(
                "--graphs",
                f"{full!r} is an ONNX Runtime variant of {rec['variant_of']!r} (precision {rec['precision']})",
                f"TensorRT plans are built from the fp32 graph: --graphs {rec['variant_of']} --precision fp16",
            )
        if full not in out:
            out.append(full)
    return out


def plan_engines(
    pack: Pack,
    graphs: Iterable[str] | None = None,
    precisions: Iterable[str] = ("fp16",),
    chunks: Iterable[str] = CHUNK_MODES,
    zero_length: str = "profile",
    max_dims: Mapping[str, int] | None = None,
) -> PlanSet:
    """Every engine to build, with its profiles; engines that would have no profile are skipped with a reason."""
    chunks = list(chunks)
    out = PlanSet()
    used_dims: set[str] = set()
    for graph in resolve_graphs(pack, graphs):
        entry = pack.graph(graph)
        if entry.precision != "fp32":
            out.skipped.append(f"{graph}: source graph precision is {entry.precision}, TensorRT plans need fp32")
            continue
        spec = entry.spec()
        used_dims |= set(spec.dims)
        own = chunks_for(spec)
        if not own:
            out.skipped.append(f"{graph}: its I/O spec declares no TensorRT profiles")
            continue
        for chunk in [ANY_CHUNK] if ANY_CHUNK in own else [c for c in chunks if c in own]:
            gp = derive_profiles(spec, chunk, zero_length, max_dims)
            for precision in precisions:
                if not gp.profiles:
                    out.skipped.append(
                        f"{plan_name(graph, precision, chunk)}: no profile left "
                        f"({'; '.join(z.note for z in gp.zero_length)})"
                    )
                    continue
                if precision == "fp16" and (why := fp16_policy_problem(spec)):
                    out.skipped.append(f"{plan_name(graph, precision, chunk)}: {why}")
                    continue
                keep = spec.precisions["fp16"].fp32_keep if precision == "fp16" else None
                out.engines.append(
                    EnginePlan(graph, precision, chunk, spec, gp, entry.record["file"], entry.record["sha256"], keep)
                )
    unknown = sorted(set(max_dims or {}) - used_dims)
    if unknown:
        raise ToolError(
            "--max-dim",
            f"no planned graph has dim(s) {', '.join(unknown)}",
            f"dims of the planned graphs: {', '.join(sorted(used_dims))}",
        )
    return out


def parse_choices(values: Iterable[str] | None, allowed: Iterable[str], default: Iterable[str]) -> list[str]:
    """Repeated and/or comma-separated option values, checked against `allowed` (ValueError names the bad one)."""
    allowed = list(allowed)
    items = [v.strip() for value in (values or []) for v in value.split(",") if v.strip()]
    bad = [v for v in items if v not in allowed]
    if bad:
        raise ValueError(f"{', '.join(bad)} (choose from {', '.join(allowed)})")
    return list(dict.fromkeys(items)) or list(default)


def parse_max_dims(values: Iterable[str] | None) -> dict[str, int]:
    out = {}
    for v in values or []:
        name, sep, num = v.partition("=")
        if not sep or not name or not num.isdigit():
            raise ValueError(f"{v!r} (expected DIM=N, e.g. past_sequence_length=8191)")
        out[name] = int(num)
    return out


__all__ = ["EnginePlan", "PlanSet", "plan_engines", "plan_name", "plan_tolerances", "rebuild_command", "PRECISIONS"]
