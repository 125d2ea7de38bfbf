"""I/O spec of one graph: tensors with named dims, dim ranges, cache pairs, tolerances, test cases, facts.

The JSON form (``NAME.io.json`` in a pack) is validated by ``specs/schema/io_spec.schema.json``. The
same object drives the exporters (dynamic axes, checks), TensorRT profiles (dim ranges) and the
runtime (input validation, zero-length first-chunk caches).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from specs import FORMAT_VERSION
from specs.errors import ToolError
from specs.schema import read_json, validate_json

DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "int64": np.int64,
    "int32": np.int32,
    "bool": np.bool_,
}
IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Dim:
    """A named dynamic dimension; `min/opt/max` become TensorRT profile values."""

    min: int
    opt: int
    max: int
    doc: str = ""
    # Set when the dim is a fixed affine function of another dim (e.g. samples = 480 * mel_frames);
    # such dims are never given a TensorRT profile of their own.
    derived_from: dict | None = None  # {"dim": name, "scale": int, "offset": int}

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
class Tolerance:
    atol: float
    rtol: float = 0.0
    reason: str = ""
    # "elementwise": |a-e| <= atol + rtol*|e| everywhere; "exact": equal (integer outputs).
    check: str = "elementwise"


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
    # Named TensorRT optimisation profiles: profile name -> dim name -> {min, opt, max}.
    profiles: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
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
            if dim["derived_from"] is None:
                del dim["derived_from"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"

    @classmethod
    def from_dict(cls, d: dict, source: str = "io spec") -> "GraphSpec":
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
            profiles=d.get("profiles", {}),
            precision=d.get("precision", "fp32"),
            format_version=d["format_version"],
        )
        spec.check_consistency(source)
        return spec

    @classmethod
    def load(cls, path: str | Path) -> "GraphSpec":
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
            for dim in t.dim_names():
                if dim not in self.dims:
                    raise ToolError(source, f"tensor {t.name!r} uses undeclared dim {dim!r}",
                                    "every named dim is declared under 'dims'")
        for name, dim in self.dims.items():
            if not (0 <= dim.min <= dim.opt <= dim.max):
                raise ToolError(source, f"dim {name!r} has min/opt/max {dim.min}/{dim.opt}/{dim.max}",
                                "0 <= min <= opt <= max")
            if dim.derived_from and dim.derived_from["dim"] not in self.dims:
                raise ToolError(source, f"dim {name!r} is derived from unknown dim {dim.derived_from['dim']!r}")
        for out in self.output_names:
            if out not in self.tolerances:
                raise ToolError(source, f"output {out!r} has no tolerance", "every output states atol/rtol and why")
        for c in self.caches:
            if c.input not in self.input_names or c.output not in self.output_names:
                raise ToolError(source, f"cache pair {c.input!r} -> {c.output!r} names unknown tensors")
        for pname, prof in self.profiles.items():
            for dname, r in prof.items():
                if dname not in self.dims:
                    raise ToolError(source, f"profile {pname!r} names unknown dim {dname!r}")
                if not (r["min"] <= r["opt"] <= r["max"]):
                    raise ToolError(source, f"profile {pname!r} dim {dname!r} has min/opt/max "
                                            f"{r['min']}/{r['opt']}/{r['max']}", "min <= opt <= max")

    # ---- runtime checks -----------------------------------------------------------------------------
    def check_feed(self, feed: Mapping[str, np.ndarray], where: str | None = None) -> dict[str, int]:
        """Check names, dtypes and shapes of a feed against the spec; returns the bound dim values."""
        where = where or self.graph
        missing = [n for n in self.input_names if n not in feed]
        extra = [n for n in feed if n not in self.input_names]
        if missing or extra:
            raise ToolError(where, f"inputs do not match the spec (missing {missing}, unexpected {extra})",
                            f"inputs are {self.input_names}")
        bound: dict[str, int] = {}
        for t in self.inputs:
            arr = feed[t.name]
            check_tensor(t, arr, bound, self.dims, where)
        return bound


def check_tensor(t: TensorSpec, arr: np.ndarray, bound: dict[str, int], dims: Mapping[str, Dim],
                 where: str) -> None:
    """Polygraphy-style check of one tensor: dtype, rank, fixed dims, named-dim consistency and range."""
    if arr.dtype != np.dtype(t.np_dtype):
        raise ToolError(where, f"tensor {t.name!r} has dtype {arr.dtype}", f"expected {t.dtype}")
    if arr.ndim != len(t.shape):
        raise ToolError(where, f"tensor {t.name!r} has shape {list(arr.shape)}", f"expected {t.shape}")
    for axis, (want, got) in enumerate(zip(t.shape, arr.shape)):
        if isinstance(want, int):
            if want != got:
                raise ToolError(where, f"tensor {t.name!r} has shape {list(arr.shape)}",
                                f"expected {t.shape} (axis {axis} fixed at {want})")
            continue
        dim = dims[want]
        derived = dim.value_from(bound)
        if derived is not None and derived != got:
            raise ToolError(where, f"tensor {t.name!r} axis {axis} ({want}) is {got}",
                            f"{want} = {dim.derived_from['scale']}*{dim.derived_from['dim']}"
                            f"+{dim.derived_from.get('offset', 0)} = {derived}")
        if want in bound and bound[want] != got:
            raise ToolError(where, f"tensor {t.name!r} axis {axis} ({want}) is {got}",
                            f"{want} was {bound[want]} in another input")
        if not (dim.min <= got <= dim.max):
            raise ToolError(where, f"tensor {t.name!r} axis {axis} ({want}) is {got}",
                            f"{want} in [{dim.min}, {dim.max}]")
        bound[want] = got
