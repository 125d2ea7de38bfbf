"""How a graph may run below fp32, declared by its exporter in the graph's I/O spec (`precisions`).

One `PrecisionPolicy` per reduced precision the graph supports:
- `float16`: weights and compute in fp16, graph I/O kept fp32, and the nodes matched by `fp32_keep` kept in
  fp32 with casts around them. The one converter (backends/fp16.py) makes both the ONNX Runtime variant
  (`tts-export --fp16`, graph `NAME.fp16`) and the mixed-precision ONNX a strongly typed TensorRT fp16 plan
  is built from (`tts-build-trt --precision fp16`).
- `weight_only`: MatMul weights quantized (ONNX Runtime MatMulNBits; `tts-export --int8`, graph `NAME.int8`).
`tolerances` hold, for every output, the budget against the fp32 reference on the same inputs, with the
reason; `backends` says where the policy is offered ("ort": a variant graph in the pack, "tensorrt": plans).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from specs.errors import ToolError
from specs.tolerance import Tolerance

METHODS = ("float16", "weight_only")
BACKENDS = ("ort", "tensorrt")
# Graph names of the variants: NAME.<suffix>; the CLI option that asks for them.
VARIANT_OPTIONS = {"fp16": "--fp16", "int8": "--int8"}


@dataclass(frozen=True)
class Fp32Keep:
    """Nodes kept in fp32 in a float16 graph: by op type, by node-name regex, every node on a path from an op to
    a graph output (e.g. HiFT's exp magnitude through the ISTFT to `audio`), and, with `trig_arguments`, every
    Sin/Cos with all the nodes computing its argument (sinusoidal embeddings take arguments up to ~1000)."""

    ops: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()
    paths: tuple[tuple[str, str], ...] = ()  # (op type, graph output)
    trig_arguments: bool = False
    reason: str = ""

    def to_dict(self) -> dict:
        return {
            "ops": list(self.ops),
            "name_patterns": list(self.name_patterns),
            "paths": [{"from_op": a, "to_output": b} for a, b in self.paths],
            "trig_arguments": self.trig_arguments,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Fp32Keep:
        return cls(
            tuple(d.get("ops", ())),
            tuple(d.get("name_patterns", ())),
            tuple((p["from_op"], p["to_output"]) for p in d.get("paths", ())),
            bool(d.get("trig_arguments", False)),
            d.get("reason", ""),
        )


@dataclass
class PrecisionPolicy:
    precision: str  # "fp16" | "int8" | "int4": the variant suffix and the manifest's precision
    method: str  # one of METHODS
    tolerances: dict[str, Tolerance]  # output name -> budget vs the fp32 reference
    backends: tuple[str, ...] = ("ort", "tensorrt")
    fp32_keep: Fp32Keep | None = None  # float16 only
    weight_only: dict[str, Any] = field(default_factory=dict)  # weight_only only: bits, block_size, accuracy_level
    doc: str = ""

    def to_dict(self) -> dict:
        d = {
            "precision": self.precision,
            "method": self.method,
            "backends": list(self.backends),
            "tolerances": {k: t.to_dict() for k, t in self.tolerances.items()},
            "doc": self.doc,
        }
        if self.fp32_keep is not None:
            d["fp32_keep"] = self.fp32_keep.to_dict()
        if self.weight_only:
            d["weight_only"] = dict(self.weight_only)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> PrecisionPolicy:
        return cls(
            d["precision"],
            d["method"],
            {k: Tolerance(**v) for k, v in d["tolerances"].items()},
            tuple(d.get("backends", BACKENDS)),
            Fp32Keep.from_dict(d["fp32_keep"]) if "fp32_keep" in d else None,
            dict(d.get("weight_only", {})),
            d.get("doc", ""),
        )

    def check(self, outputs: list[str], source: str) -> None:
        where = f"{source}: precisions.{self.precision}"
        if self.method not in METHODS:
            raise ToolError(where, f"method is {self.method!r}", f"one of {', '.join(METHODS)}")
        missing = [o for o in outputs if o not in self.tolerances]
        if missing:
            raise ToolError(
                where,
                f"no tolerance for output(s) {', '.join(missing)}",
                "every output states its budget at this precision and why",
            )
        if self.method == "float16" and self.fp32_keep is None:
            raise ToolError(where, "a float16 policy without fp32_keep", "the nodes that stay fp32, with the reason")
        if self.method == "weight_only" and not self.weight_only:
            raise ToolError(where, "a weight_only policy without its parameters", "bits, block_size, accuracy_level")
        unknown = [b for b in self.backends if b not in BACKENDS]
        if unknown:
            raise ToolError(where, f"unknown backend(s) {unknown}", f"some of {', '.join(BACKENDS)}")

    def offered_on(self, backend: str) -> bool:
        return backend in self.backends
