"""FP16 plans: which layers stay FP32 (as data), the FP16 comparison tolerances, and the mixed ONNX.

Precision lives in the graph, not in builder flags: TensorRT 11 removed weak typing (BuilderFlag.FP16,
OBEY_PRECISION_CONSTRAINTS, per-layer precision), and TensorRT 10 supports the same strongly typed
build. So an FP16 plan is built strongly typed from a mixed-precision copy of the pack's FP32 graph:
ONNX Runtime's float16 converter (the one tts-export uses for its ORT fp16 variants) converts weights and
compute to fp16, keeps the graph's I/O fp32 (so the runtime feeds the same tensors as on ORT) and keeps
every node matched by the graph's `Fp32Keep` rules in fp32 with casts around it. TensorRT then obeys
those types exactly: the strictest form of precision constraints. FP32 plans are built from the FP32
graph with TF32 off.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from specs.errors import ToolError
from specs.io_spec import GraphSpec, Tolerance

PRECISIONS = ("fp16", "fp32")


@dataclass(frozen=True)
class Fp32Keep:
    """Nodes kept in FP32 in an FP16 plan: by op type, by node-name regex, and every node on a path from
    an op to a graph output (e.g. HiFT's exp magnitude through the ISTFT to `audio`)."""

    ops: tuple[str, ...] = ()
    name_patterns: tuple[str, ...] = ()
    paths: tuple[tuple[str, str], ...] = ()  # (op type, graph output)
    reason: str = ""

    def to_dict(self) -> dict:
        return {"ops": list(self.ops), "name_patterns": list(self.name_patterns),
                "paths": [{"from_op": a, "to_output": b} for a, b in self.paths], "reason": self.reason}


NORM_SOFTMAX = ("LayerNormalization", "GroupNormalization", "InstanceNormalization", "Softmax", "ReduceMean",
                "Pow", "Sqrt", "Reciprocal")
FP32_KEEP: dict[str, Fp32Keep] = {
    "flow.decoder.estimator": Fp32Keep(
        ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp", "Softplus"),
        name_patterns=(r"time_embeddings", r"time_mlp"),
        reason="normalisation statistics and attention softmax overflow or lose mass in fp16; the timestep "
               "embedding is sin/cos of 1000*t (fp16 spacing at 1000 is 0.5 rad); Mish's softplus/exp"),
    "hift": Fp32Keep(
        ops=NORM_SOFTMAX + ("Exp", "Sin", "Cos", "CumSum", "Div", "Atan", "Log"),
        name_patterns=(r"^/source/", r"f0_predictor", r"m_source"),
        paths=(("Exp", "audio"),),
        reason="the harmonic source integrates phase (cumsum of f0/sr over a whole call: thousands of radians, "
               "fp16 spacing ~1 rad) and the f0 that drives it; the magnitude path exp -> clip -> polar -> "
               "ISTFT -> window-envelope division -> audio needs fp32 range and precision"),
    "flow.encoder": Fp32Keep(
        ops=NORM_SOFTMAX + ("Exp",),
        reason="LayerNorm statistics and the relative-position attention softmax"),
    "llm": Fp32Keep(
        ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp"),
        reason="RMSNorm (Pow/ReduceMean/Sqrt) statistics, attention softmax and the RoPE angles"),
}
DEFAULT_KEEP = Fp32Keep(ops=NORM_SOFTMAX + ("Exp",), reason="default: normalisation, softmax, exp")


def fp32_keep(graph: str) -> Fp32Keep:
    return FP32_KEEP.get(graph, DEFAULT_KEEP)


# ---- tolerances -------------------------------------------------------------------------------------------------
# TensorRT vs ONNX Runtime on the same inputs. FP32 plans (TF32 off) use the spec's tolerances: both sides
# are fp32 and differ by reassociation only. FP16 plans get these, per graph and output; they are
# initial budgets, NOT measured on TensorRT yet: the first GPU validation prints "required atol" per
# output; tighten them from that. A broken engine (wrong profile, mask, cache) errs by O(|output|).
FP16_TOLERANCES: dict[str, dict[str, Tolerance]] = {
    "flow.decoder.estimator": {"velocity": Tolerance(
        atol=0.25, rtol=0.05,
        reason="fp16 U-Net, |velocity| up to ~4; ORT-CPU fp16 emulation of the tiny random graph (softmax + "
               "LayerNorm fp32) erred 4e-3 / 1.3e-2 / 0.37 max on first/steady/final cases. Catches O(1) "
               "errors only; one ODE step of 10, the runtime's mel comparison is the stronger check")},
    "hift": {"audio": Tolerance(atol=2e-2, rtol=0.0, reason="fp16 convs with fp32 source and magnitude path; "
                                "audio in [-0.99, 0.99]: 2e-2 is -34 dBFS, still far below a broken engine"),
             "source": Tolerance(atol=1e-2, rtol=0.0, reason="source computed in fp32 (Fp32Keep); fp16 only in "
                                 "the f0 predictor's inputs")},
}
DEFAULT_FP16 = (5e-2, 2e-2)  # atol, rtol floors on top of the spec's fp32 tolerance


def plan_tolerances(spec: GraphSpec, precision: str, base_graph: str | None = None) -> dict[str, Tolerance]:
    """Tolerance per output for comparing a plan of `precision` with ONNX Runtime's fp32 graph."""
    if precision == "fp32":
        return dict(spec.tolerances)
    table = FP16_TOLERANCES.get(base_graph or spec.graph, {})
    out = {}
    for name, tol in spec.tolerances.items():
        if tol.check == "exact":
            out[name] = tol
        elif name in table:
            out[name] = table[name]
        else:
            out[name] = Tolerance(atol=max(tol.atol, DEFAULT_FP16[0]), rtol=max(tol.rtol, DEFAULT_FP16[1]),
                                  reason=f"default fp16 budget: max(spec atol/rtol, {DEFAULT_FP16}); fp16 unit "
                                         "roundoff 4.9e-4 over ~100 layers; unmeasured on TensorRT")
    return out


# ---- the mixed-precision ONNX -------------------------------------------------------------------------------------
@dataclass
class MixedOnnx:
    path: Path
    fp32_nodes: list[str] = field(default_factory=list)


def resolve_fp32_nodes(model, keep: Fp32Keep) -> list[str]:
    """Names of the nodes of an onnx.ModelProto that `keep` keeps in fp32 (unnamed nodes get names)."""
    graph = model.graph
    for i, n in enumerate(graph.node):
        if not n.name:
            n.name = f"trt_fp32_keep_unnamed_{i}"
    names = {n.name for n in graph.node if n.op_type in keep.ops
             or any(re.search(p, n.name) for p in keep.name_patterns)}
    for op, output in keep.paths:
        names |= _nodes_between(graph, op, output)
    return sorted(names)


def _nodes_between(graph, op: str, output: str) -> set[str]:
    consumers: dict[str, list] = {}
    producer = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
        for t in n.output:
            producer[t] = n
    forward, stack = set(), [n for n in graph.node if n.op_type == op]
    while stack:
        n = stack.pop()
        if n.name in forward:
            continue
        forward.add(n.name)
        stack += [c for t in n.output for c in consumers.get(t, [])]
    backward, stack = set(), [producer[output]] if output in producer else []
    while stack:
        n = stack.pop()
        if n.name in backward:
            continue
        backward.add(n.name)
        stack += [producer[t] for t in n.input if t in producer]
    return forward & backward


def make_mixed_onnx(src: Path, dst: Path, keep: Fp32Keep) -> MixedOnnx:
    """Write an fp16 copy of `src` (fp32 I/O, `keep` nodes fp32) to `dst` (external data beside it if big)."""
    try:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    except ImportError as e:
        raise ToolError("--precision fp16", f"needs the onnx package to make the mixed-precision graph ({e})",
                        "pip install 'onnx>=1.16' (it is in the export extras), or build --precision fp32") from None
    model = onnx.load(str(src), load_external_data=True)
    nodes = resolve_fp32_nodes(model, keep)
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=_too_big(model),
                                    op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep.ops),
                                    node_block_list=nodes)
    if _too_big(half):
        onnx.save_model(half, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=dst.name + ".data", size_threshold=1024)
    else:
        onnx.save_model(half, str(dst))
    return MixedOnnx(dst, nodes)


def _too_big(model) -> bool:
    try:
        return model.ByteSize() > 1_800_000_000
    except Exception:  # protobuf refuses to size messages over 2 GB
        return True
