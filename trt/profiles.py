"""TensorRT optimisation profiles of one graph in one chunk mode, from its I/O spec alone.

The graph's exporter declares the profiles in the spec (`profiles[chunk mode]`, computed from the pack's
chunk policy at export); nothing here knows a graph by name. Every named dim of every input gets
min/opt/max in every profile:
1. the spec's profile gives ranges for the dims it names; the other free dims keep the spec's declared
   min/opt/max;
2. `--max-dim NAME=N` sets the max of that dim in every profile where it is not pinned (within the graph's
   declared range); a dim that is the sum of others (`sum_of`, e.g. total = past + sequence) is then kept
   consistent at the max corner: capping the sum lowers its first part, capping a part moves the sum;
3. every range is checked (0 <= min <= opt <= max, naming graph, profile, dim and the inputs using it),
   then clipped to the spec's declared range (a note says so); derived dims follow their base dim;
4. zero-length dims (range starting at 0) are handled explicitly, see ZERO_LENGTH below;
5. the input shapes are built and checked per tensor and axis.

Zero-length dims. TensorRT accepts empty tensors in principle but many layers reject or mishandle a
0-sized dim, and a profile spanning 0..N makes every tactic cover the empty case. So a call with a
zero-length input (HiFT's first chunk, the LLM's prefill, an encoder call without prompt) gets a
profile of its own with that dim pinned to 0 (min = opt = max = 0) and the other profiles start at 1;
the runtime selects the profile from the call's shapes. If TensorRT cannot build the pinned-zero
profile for a graph, `--zero-length ort` drops those profiles instead: the plan metadata then lists the
dim under `zero_length` with handling "ort", and the runtime must run such calls on ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from specs.errors import ToolError
from specs.io_spec import DimRange, GraphSpec

ZERO_LENGTH = ("profile", "ort")


@dataclass
class Profile:
    name: str
    dims: dict[str, DimRange]  # every named dim of the inputs, derived ones included
    doc: str = ""

    def fits(self, bound: Mapping[str, int]) -> bool:
        return all(r.contains(bound[d]) for d, r in self.dims.items() if d in bound)

    def shapes(self, spec: GraphSpec) -> dict[str, dict[str, list[int]]]:
        """Input name -> {"min": shape, "opt": shape, "max": shape}, for inputs with a dynamic axis."""
        out = {}
        for t in spec.inputs:
            if not t.dim_names():
                continue
            out[t.name] = {
                k: [d if isinstance(d, int) else getattr(self.dims[d], k) for d in t.shape]
                for k in ("min", "opt", "max")
            }
        return out

    def to_dict(self, spec: GraphSpec) -> dict:
        return {
            "name": self.name,
            "doc": self.doc,
            "dims": {d: r.to_dict() for d, r in self.dims.items()},
            "shapes": self.shapes(spec),
        }


@dataclass
class ZeroLength:
    dim: str
    tensors: list[str]
    handling: str  # "profile": pinned-zero profiles below; "ort": no profile takes the call
    profiles: list[str]
    note: str

    def to_dict(self) -> dict:
        return {
            "dim": self.dim,
            "tensors": self.tensors,
            "handling": self.handling,
            "profiles": self.profiles,
            "note": self.note,
        }


@dataclass
class GraphProfiles:
    graph: str
    chunk: str
    profiles: list[Profile]
    zero_length: list[ZeroLength] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def chunks_for(spec: GraphSpec) -> tuple[str, ...]:
    """The chunk modes the graph declares profiles for (one engine each)."""
    return tuple(spec.profiles)


def dim_uses(spec: GraphSpec) -> dict[str, list[str]]:
    """dim -> ["x[2]", "mask[2]", ...] over the inputs."""
    uses: dict[str, list[str]] = {}
    for t in spec.inputs:
        for axis, d in enumerate(t.shape):
            if isinstance(d, str):
                uses.setdefault(d, []).append(f"{t.name}[{axis}]")
    return uses


def derive_profiles(
    spec: GraphSpec, chunk: str, zero_length: str = "profile", max_dims: Mapping[str, int] | None = None
) -> GraphProfiles:
    if zero_length not in ZERO_LENGTH:
        raise ToolError("--zero-length", f"unknown handling {zero_length!r}", f"one of {', '.join(ZERO_LENGTH)}")
    if chunk not in spec.profiles:
        raise ToolError(
            spec.graph,
            f"its I/O spec declares no TensorRT profiles for chunk mode {chunk!r}",
            f"declared: {', '.join(spec.profiles) or 'none'} (re-export the pack)",
        )
    where = f"{spec.graph} ({chunk})"
    uses = dim_uses(spec)
    free = [d for d in uses if not spec.dims[d].derived_from]
    notes: list[str] = []
    caps = dict(max_dims or {})
    for d, n in caps.items():
        if d in spec.dims and n > spec.dims[d].max:
            raise ToolError(
                f"--max-dim {d}={n}",
                f"{spec.graph} declares {d} <= {spec.dims[d].max}",
                "a max within the graph's declared range",
            )
    profiles: list[Profile] = []
    for draft in spec.profiles[chunk]:
        dims = {d: replace(draft.dims[d]) if d in draft.dims else _spec_range(spec, d) for d in free}
        _apply_caps(spec, dims, caps)
        for d, r in dims.items():
            check_range(r, f"{where} profile {draft.name!r}", d, uses)
        dims = _clip_to_spec(spec, dims, f"{where} profile {draft.name!r}", uses, notes)
        if dims is None:
            notes.append(f"profile {draft.name!r} dropped: it pins a dim below the graph's declared minimum")
            continue
        profiles.append(Profile(draft.name, dims, draft.doc))
    profiles = _split_zero_length(profiles, zero_length)
    profiles = [Profile(p.name, _with_derived(spec, p.dims, uses), p.doc) for p in profiles]
    for p in profiles:
        check_shapes(spec, p, f"{where} profile {p.name!r}")
    zl = _zero_length_records(spec, profiles, zero_length, uses)
    return GraphProfiles(spec.graph, chunk, profiles, zl, notes)


def check_range(r: DimRange, where: str, dim: str, uses: Mapping[str, list[str]]) -> None:
    if not (0 <= r.min <= r.opt <= r.max):
        raise ToolError(
            where,
            f"dim {dim!r} (inputs {', '.join(uses.get(dim, [])) or 'none'}) has min/opt/max {r.min}/{r.opt}/{r.max}",
            "0 <= min <= opt <= max",
        )


def check_shapes(spec: GraphSpec, profile: Profile, where: str) -> None:
    """min <= opt <= max per input tensor and axis (after derived dims were filled in)."""
    for name, s in profile.shapes(spec).items():
        for axis, (lo, mid, hi) in enumerate(zip(s["min"], s["opt"], s["max"])):
            if not (0 <= lo <= mid <= hi):
                dim = spec.input(name).shape[axis]
                raise ToolError(
                    where,
                    f"input {name!r} axis {axis} ({dim}) has min/opt/max {lo}/{mid}/{hi}",
                    "0 <= min <= opt <= max",
                )


# ---- steps ----------------------------------------------------------------------------------------------------
def _spec_range(spec: GraphSpec, d: str) -> DimRange:
    dim = spec.dims[d]
    return DimRange(dim.min, dim.opt, dim.max, "the spec's declared range")


def _apply_caps(spec: GraphSpec, dims: dict[str, DimRange], caps: Mapping[str, int]) -> None:
    """--max-dim on one profile's free dims, then every `sum_of` dim made consistent at the max corner."""

    def cap(d: str, n: int, why: str) -> None:
        r = dims[d]
        if r.max == r.min:  # pinned (e.g. a zero-length call's profile): not a range to move
            return
        r.max = max(r.min, min(n, spec.dims[d].max))
        r.opt = min(r.opt, r.max)
        r.why += f"; {why}"

    for d, n in caps.items():
        if d in dims:
            cap(d, n, f"--max-dim {d}={n}")
    for d, dim in spec.dims.items():
        if not dim.sum_of or d not in dims or any(p not in dims for p in dim.sum_of):
            continue
        parts = [dims[p] for p in dim.sum_of]
        if d in caps:  # the sum was capped: its first unpinned part takes the cut
            rest = sum(r.max for r in parts[1:])
            cap(dim.sum_of[0], dims[d].max - rest, f"{d} = {' + '.join(dim.sum_of)} <= {dims[d].max}")
        elif any(p in caps for p in dim.sum_of):
            cap(d, sum(r.max for r in parts), f"= {' + '.join(dim.sum_of)} at the max corner")


def _clip_to_spec(spec: GraphSpec, dims: dict[str, DimRange], where: str, uses, notes) -> dict | None:
    out = {}
    for d, r in dims.items():
        lo, hi = spec.dims[d].min, spec.dims[d].max
        if r.max < lo:
            return None
        c = DimRange(max(r.min, lo), min(max(r.opt, lo), hi), min(r.max, hi), r.why)
        if (c.min, c.max) != (r.min, r.max):
            notes.append(f"{where}: {d} clipped from {r.min}..{r.max} to the graph's declared {lo}..{hi}")
        check_range(c, where, d, uses)
        out[d] = c
    return out


def _split_zero_length(profiles: list[Profile], handling: str) -> list[Profile]:
    out: list[Profile] = []
    for p in profiles:
        parts = [p]
        for d in list(p.dims):
            nxt = []
            for q in parts:
                r = q.dims[d]
                if r.min == 0 and r.max > 0:
                    nonzero = {**q.dims, d: DimRange(1, max(r.opt, 1), r.max, r.why)}
                    zero = {**q.dims, d: DimRange.pinned(0, "zero-length calls (split off: see trt/profiles.py)")}
                    nxt += [Profile(q.name, nonzero, q.doc), Profile(f"{q.name}.{d}_empty", zero, q.doc)]
                else:
                    nxt.append(q)
            parts = nxt
        out += parts
    if handling == "ort":
        out = [Profile(p.name, p.dims, p.doc) for p in out if all(r.max > 0 for r in p.dims.values())]
    return out


def _with_derived(spec: GraphSpec, dims: dict[str, DimRange], uses) -> dict[str, DimRange]:
    """Add the derived dims the inputs use (e.g. HiFT's noise samples = 480 * frames)."""
    out = dict(dims)
    for d, dim in spec.dims.items():
        if d in uses and dim.derived_from and dim.derived_from["dim"] in dims and d not in out:
            base = dims[dim.derived_from["dim"]]
            a, b = int(dim.derived_from.get("scale", 1)), int(dim.derived_from.get("offset", 0))
            out[d] = DimRange(
                a * base.min + b, a * base.opt + b, a * base.max + b, f"= {a} * {dim.derived_from['dim']} + {b}"
            )
    return out


def _zero_length_records(spec: GraphSpec, profiles: list[Profile], handling: str, uses) -> list[ZeroLength]:
    out = []
    for d, dim in spec.dims.items():
        if dim.min != 0 or d not in uses or dim.derived_from:
            continue
        pinned = [p.name for p in profiles if p.dims[d].max == 0]
        if pinned:
            note = f"calls with {d} = 0 run in profile(s) {', '.join(pinned)} ({d} pinned to 0)"
            how = "profile"
        else:
            note = f"no profile takes {d} = 0: the runtime must run such calls on ONNX Runtime" + (
                " (--zero-length ort)" if handling == "ort" else " (the chunk policy makes none)"
            )
            how = "ort" if handling == "ort" else "profile"
        out.append(ZeroLength(d, uses[d], how, pinned, note))
    return out
