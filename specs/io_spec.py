"""I/O spec of one graph: everything known about it, written by its exporter, read by everything else.

Tensors with named dims (each dim tagged by its role, with min/opt/max), cache pairs, tolerances with
reasons, test cases, facts for the runtime, TensorRT optimisation profiles per chunk mode, and the reduced
precisions the graph supports (specs/precision.py). The JSON form (``NAME.io.json`` in a pack) is validated
by ``specs/schema/io_spec.schema.json``. The exporters use it for dynamic axes and checks, trt/ for
profiles and fp16 plans (trt/ knows no graph by name), the runtime for input validation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np

from specs import FORMAT_VERSION
from specs.chunk_policy import ANY_CHUNK, CHUNK_MODES
from specs.errors import ToolError
from specs.precision import PrecisionPolicy
from specs.schema import read_json, validate_json
from specs.tolerance import Tolerance

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What a dynamic dim counts. TensorRT planning and tools read dims by role, never by tensor or dim name.
ROLES = {
    "frames": "mel frames (50 Hz for CosyVoice2)",
    "prompt": "frames or tokens of the zero-shot prompt (0 without a prompt)",
    "tokens": "speech tokens",
    "samples": "audio samples",
    "cache": "length of a streaming cache carried between calls (0 on the first call)",
    "past": "cached positions of an attention (KV) cache (0 on the first call)",
    "sequence": "new positions of this call",
    "total": "past + sequence positions",
}


@dataclass
class Dim:
    """A named dynamic dimension with its role and declared range (the graph's whole valid range)."""

    min: int
    opt: int
    max: int
    doc: str = ""
    role: str = ""
    # Set when the dim is a fixed affine function of another dim (e.g. samples = 480 * mel_frames);
    # such dims are never given a TensorRT profile of their own.
    derived_from: dict | None = None  # {"dim": name, "scale": int, "offset": int}
    # Set when the dim is the sum of other dims of the same call (total = past + sequence).
    sum_of: list[str] | None = None

    def value_from(self, dims: Mapping[str, int]) -> int | None:
        if not self.derived_from:
            return None
        base = dims.get(self.derived_from["dim"])
        if base is None:
            return None
        return int(self.derived_from.get("scale", 1)) * base + int(self.derived_from.get("offset", 0))


@dataclass
class TensorSpec:
    name: str
    dtype: str
    shape: list  # ints and dim names
    doc: str = ""

    @property
    def np_dtype(self):
        return DTYPES[self.dtype]

    def dim_names(self) -> list[str]:
        return [d for d in self.shape if isinstance(d, str)]


@dataclass
class CachePair:
    """A state tensor carried from one call to the next: `output` of call k is `input` of call k+1."""

    input: str
    output: str
    doc: str = ""
    # What the first call gets, e.g. "zero-length" (dim at 0) or "zeros".
    first_call: str = "zero-length"


@dataclass
class DimRange:
    """min/opt/max of one named dim in one TensorRT optimisation profile, with where the numbers come from."""

    min: int
    opt: int
    max: int
    why: str = ""

    @classmethod
    def pinned(cls, value: int, why: str = "") -> DimRange:
        return cls(value, value, value, why)

    def contains(self, value: int) -> bool:
        return self.min <= value <= self.max

    def to_dict(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max, "why": self.why}


@dataclass
class ProfileSpec:
    """One TensorRT optimisation profile as the exporter declares it: ranges of the free dims it knows
    (derived dims follow their base; dims not named keep the spec's declared range)."""

    name: str
    doc: str
    dims: dict[str, DimRange] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "doc": self.doc, "dims": {d: r.to_dict() for d, r in self.dims.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> ProfileSpec:
        return cls(d["name"], d.get("doc", ""), {k: DimRange(**v) for k, v in d["dims"].items()})


@dataclass
class TestCase:
    """A named test-vector case of a graph (first chunk, steady chunk, ...)."""

    __test__ = False  # not a pytest test class
    name: str
    doc: str


@dataclass
class GraphSpec:
    graph: str
    description: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dims: dict[str, Dim]
    tolerances: dict[str, Tolerance]
    cases: list[TestCase]
    caches: list[CachePair] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    # TensorRT optimisation profiles per chunk mode ("stream", "offline", or "any" for graphs whose calls do
    # not depend on it): one engine per mode, one profile per kind of call.
    profiles: dict[str, list[ProfileSpec]] = field(default_factory=dict)
    # Reduced precisions the graph supports (specs/precision.py), keyed by precision ("fp16", "int8").
    precisions: dict[str, PrecisionPolicy] = field(default_factory=dict)
    precision: str = "fp32"
    format_version: int = FORMAT_VERSION

    # ---- lookup -------------------------------------------------------------------------------
    def input(self, name: str) -> TensorSpec:
        for t in self.inputs:
            if t.name == name:
                return t
        raise KeyError(name)

    def output(self, name: str) -> TensorSpec:
        for t in self.outputs:
            if t.name == name:
                return t
        raise KeyError(name)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dims_with_role(self, role: str) -> list[str]:
        return [n for n, d in self.dims.items() if d.role == role]

    def free_dims(self) -> list[str]:
        """Dims that a caller chooses (not derived), in first-use order over the inputs."""
        seen: list[str] = []
        for t in self.inputs:
            for d in t.dim_names():
                if d not in seen and not self.dims[d].derived_from:
                    seen.append(d)
        return seen

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_dict(self) -> dict:
        d = asdict(self)
        for dim in d["dims"].values():
            for key in ("derived_from", "sum_of"):
                if dim[key] is None:
                    del dim[key]
        d["tolerances"] = {k: t.to_dict() for k, t in self.tolerances.items()}
        d["profiles"] = {mode: [p.to_dict() for p in profs] for mode, profs in self.profiles.items()}
        d["precisions"] = {k: p.to_dict() for k, p in self.precisions.items()}
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict, source: str = "io spec") -> GraphSpec:
        if isinstance(d, dict) and d.get("format_version") != FORMAT_VERSION:
            raise ToolError(
                source,
                f"I/O spec format_version is {d.get('format_version')!r}, this tool reads {FORMAT_VERSION}",
                "re-export the pack with this version of tts-export",
            )
        validate_json(d, "io_spec", source)
        spec = cls(
            graph=d["graph"],
            description=d["description"],
            inputs=[TensorSpec(**t) for t in d["inputs"]],
            outputs=[TensorSpec(**t) for t in d["outputs"]],
            dims={k: Dim(**v) for k, v in d["dims"].items()},
            tolerances={k: Tolerance(**v) for k, v in d["tolerances"].items()},
            cases=[TestCase(**c) for c in d["cases"]],
            caches=[CachePair(**c) for c in d.get("caches", [])],
            facts=d.get("facts", {}),
            profiles={mode: [ProfileSpec.from_dict(p) for p in profs] for mode, profs in d["profiles"].items()},
            precisions={k: PrecisionPolicy.from_dict(p) for k, p in d.get("precisions", {}).items()},
            precision=d.get("precision", "fp32"),
            format_version=d["format_version"],
        )
        spec.check_consistency(source)
        return spec

    @classmethod
    def load(cls, path: str | Path) -> GraphSpec:
        d = read_json(path, "I/O spec file", "every graph in a pack has NAME.io.json")
        return cls.from_dict(d, str(path))

    # ---- consistency (beyond what JSON Schema can say) ------------------------------------------
    def check_consistency(self, source: str = "io spec") -> None:
        names = self.input_names + self.output_names
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ToolError(source, f"tensor names used twice: {sorted(dup)}", "input and output names are unique")
        for t in self.inputs + self.outputs:
            if t.dtype not in DTYPES:
                raise ToolError(source, f"tensor {t.name!r} has dtype {t.dtype!r}", f"one of {sorted(DTYPES)}")
            for dim_name in t.dim_names():
                if dim_name not in self.dims:
                    raise ToolError(
                        source,
                        f"tensor {t.name!r} uses undeclared dim {dim_name!r}",
                        "every named dim is declared under 'dims'",
                    )
        for name, dim in self.dims.items():
            if not (0 <= dim.min <= dim.opt <= dim.max):
                raise ToolError(
                    source, f"dim {name!r} has min/opt/max {dim.min}/{dim.opt}/{dim.max}", "0 <= min <= opt <= max"
                )
            if dim.role not in ROLES:
                raise ToolError(source, f"dim {name!r} has role {dim.role!r}", f"one of {', '.join(ROLES)}")
            if dim.derived_from and dim.derived_from["dim"] not in self.dims:
                raise ToolError(source, f"dim {name!r} is derived from unknown dim {dim.derived_from['dim']!r}")
            if dim.sum_of and any(p not in self.dims for p in dim.sum_of):
                raise ToolError(source, f"dim {name!r} is the sum of unknown dims {dim.sum_of}")
        for out in self.output_names:
            if out not in self.tolerances:
                raise ToolError(source, f"output {out!r} has no tolerance", "every output states atol/rtol and why")
        for c in self.caches:
            if c.input not in self.input_names or c.output not in self.output_names:
                raise ToolError(source, f"cache pair {c.input!r} -> {c.output!r} names unknown tensors")
        for mode, profs in self.profiles.items():
            if mode not in CHUNK_MODES + (ANY_CHUNK,):
                raise ToolError(
                    source,
                    f"profiles for unknown chunk mode {mode!r}",
                    f"one of {', '.join(CHUNK_MODES + (ANY_CHUNK,))}",
                )
            for prof in profs:
                for dname, r in prof.dims.items():
                    if dname not in self.dims or self.dims[dname].derived_from:
                        raise ToolError(
                            source,
                            f"profile {mode}/{prof.name} names {dname!r}",
                            "a declared dim that is not derived from another",
                        )
                    if not (0 <= r.min <= r.opt <= r.max):
                        raise ToolError(
                            source,
                            f"profile {mode}/{prof.name} dim {dname!r} has min/opt/max {r.min}/{r.opt}/{r.max}",
                            "0 <= min <= opt <= max",
                        )
        for policy in self.precisions.values():
            policy.check(self.output_names, source)

    # ---- runtime checks -----------------------------------------------------------------------------
    def check_feed(self, feed: Mapping[str, np.ndarray], where: str | None = None) -> dict[str, int]:
        """Check names, dtypes and shapes of a feed against the spec; returns the bound dim values."""
        where = where or self.graph
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise ToolError(
                where,
                f"inputs do not match the spec (missing {missing}, unexpected {extra})",
                f"inputs are {self.input_names}",
            )
        bound: dict[str, int] = {}
        for t in self.inputs:
            arr = feed[t.name]
            check_tensor(t, arr, bound, self.dims, where)
        for name, dim in self.dims.items():
            if dim.sum_of and name in bound and all(p in bound for p in dim.sum_of):
                want = sum(bound[p] for p in dim.sum_of)
                if bound[name] != want:
                    raise ToolError(where, f"{name} is {bound[name]}", f"{name} = {' + '.join(dim.sum_of)} = {want}")
        return bound


def check_tensor(t: TensorSpec, arr: np.ndarray, bound: dict[str, int], dims: Mapping[str, Dim], where: str) -> None:
    """Polygraphy-style check of one tensor: dtype, rank, fixed dims, named-dim consistency and range."""
    if arr.dtype != np.dtype(t.np_dtype):
        raise ToolError(where, f"tensor {t.name!r} has dtype {arr.dtype}", f"expected {t.dtype}")
    if arr.ndim != len(t.shape):
        raise ToolError(where, f"tensor {t.name!r} has shape {list(arr.shape)}", f"expected {t.shape}")
    for axis, (want, got) in enumerate(zip(t.shape, arr.shape)):
        if isinstance(want, int):
            if want != got:
                raise ToolError(
                    where,
                    f"tensor {t.name!r} has shape {list(arr.shape)}",
                    f"expected {t.shape} (axis {axis} fixed at {want})",
                )
            continue
        dim = dims[want]
        derived = dim.value_from(bound)
        if derived is not None and derived != got:
            rule = cast(dict, dim.derived_from)  # set whenever value_from gives a value
            raise ToolError(
                where,
                f"tensor {t.name!r} axis {axis} ({want}) is {got}",
                f"{want} = {rule['scale']}*{rule['dim']}+{rule.get('offset', 0)} = {derived}",
            )
        if want in bound and bound[want] != got:
            raise ToolError(
                where, f"tensor {t.name!r} axis {axis} ({want}) is {got}", f"{want} was {bound[want]} in another input"
            )
        if not (dim.min <= got <= dim.max):
            raise ToolError(
                where, f"tensor {t.name!r} axis {axis} ({want}) is {got}", f"{want} in [{dim.min}, {dim.max}]"
            )
        bound[want] = got
