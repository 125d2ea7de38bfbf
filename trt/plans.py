"""Which engines to build for a pack: one per graph x precision x chunk policy, with its profiles.

Plan name `GRAPH.PRECISION.CHUNK` (e.g. `hift.fp16.stream`), files `trt/NAME.plan` + `trt/NAME.json` in
the pack, manifest key NAME under `plans`. Graphs whose calls do not depend on the chunk policy (the
LLM) get one engine with chunk `any`. Plans are built from a pack's fp32 graphs only; its ORT variants
(`variant_of`, e.g. `NAME.fp16`, `llm.int8`) are not TensorRT sources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

from specs.errors import ToolError
from specs.io_spec import GraphSpec
from specs.pack import MANIFEST, Pack
from trt.graph_rules import ALIASES
from trt.policy import ANY_CHUNK, CHUNKS, ChunkPolicy
from trt.precision import PRECISIONS, Fp32Keep, fp32_keep
from trt.profiles import GraphProfiles, chunks_for, derive_profiles


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


def plan_name(graph: str, precision: str, chunk: str) -> str:
    return f"{graph}.{precision}.{chunk}"


def rebuild_command(pack_root, graph: str, precision: str, chunk: str) -> str:
    chunk_opt = "" if chunk == ANY_CHUNK else f" --chunk {chunk}"
    return f"tts-build-trt --pack {pack_root} --graphs {graph} --precision {precision}{chunk_opt}"


def source_graphs(pack: Pack) -> list[str]:
    return [n for n in pack.graph_names() if "variant_of" not in pack.manifest["graphs"][n]]


def resolve_graphs(pack: Pack, names: Iterable[str] | None) -> list[str]:
    available = source_graphs(pack)
    if not names:
        return available
    out = []
    for n in names:
        full = ALIASES.get(n, n)
        rec = pack.manifest["graphs"].get(full)
        if rec is None:
            raise ToolError("--graphs", f"pack has no graph {n!r}", f"graphs in this pack: {', '.join(available)}")
        if "variant_of" in rec:
            raise ToolError("--graphs", f"{full!r} is an ONNX Runtime variant of {rec['variant_of']!r} "
                            f"(precision {rec['precision']})",
                            f"TensorRT plans are built from the fp32 graph: --graphs {rec['variant_of']} "
                            "--precision fp16")
        if full not in out:
            out.append(full)
    return out


def plan_engines(pack: Pack, graphs: Iterable[str] | None = None, precisions: Iterable[str] = ("fp16",),
                 chunks: Iterable[str] = CHUNKS, zero_length: str = "profile",
                 max_dims: Mapping[str, int] | None = None) -> PlanSet:
    """Every engine to build, with its profiles; engines that would have no profile are skipped with a reason."""
    policy = ChunkPolicy.from_manifest(pack.audio, str(pack.root / MANIFEST))
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
        own = chunks_for(graph)
        for chunk in ([ANY_CHUNK] if own == (ANY_CHUNK,) else [c for c in chunks if c in own]):
            gp = derive_profiles(spec, policy, chunk, zero_length, max_dims)
            for precision in precisions:
                if not gp.profiles:
                    out.skipped.append(f"{plan_name(graph, precision, chunk)}: no profile left "
                                       f"({'; '.join(z.note for z in gp.zero_length)})")
                    continue
                out.engines.append(EnginePlan(graph, precision, chunk, spec, gp, entry.record["file"],
                                              entry.record["sha256"],
                                              fp32_keep(graph) if precision == "fp16" else None))
    unknown = sorted(set(max_dims or {}) - used_dims)
    if unknown:
        raise ToolError("--max-dim", f"no planned graph has dim(s) {', '.join(unknown)}",
                        f"dims of the planned graphs: {', '.join(sorted(used_dims))}")
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


__all__ = ["EnginePlan", "PlanSet", "plan_engines", "plan_name", "rebuild_command", "PRECISIONS"]
