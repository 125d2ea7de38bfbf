"""The one fp16 converter: a mixed-precision copy of an fp32 graph under the graph's `Fp32Keep` rules.

Used by `tts-export --fp16` (the ONNX Runtime variant `NAME.fp16`) and by `tts-build-trt --precision fp16`
(the graph a strongly typed TensorRT plan is built from). Precision lives in the graph, not in builder
flags: TensorRT 11 removed weak typing (BuilderFlag.FP16, OBEY_PRECISION_CONSTRAINTS, per-layer precision),
and TensorRT 10 supports the same strongly typed build. ONNX Runtime's float16 converter converts weights
and compute to fp16, keeps the graph's I/O fp32 (so the runtime feeds the same tensors on every backend)
and keeps every node matched by the rules (specs/precision.py) in fp32 with casts around it; TensorRT then
obeys those types exactly. onnx and onnxruntime are imported only here, when converting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from specs.errors import ToolError
from specs.precision import Fp32Keep

EXTERNAL_DATA_THRESHOLD = 1_800_000_000  # protobuf's 2 GB limit, with margin


@dataclass
class MixedOnnx:
    path: Path
    fp32_nodes: list[str] = field(default_factory=list)


def resolve_fp32_nodes(model, keep: Fp32Keep) -> list[str]:
    """Names of the nodes of an onnx.ModelProto that `keep` keeps in fp32 (unnamed nodes get names)."""
    graph = model.graph
    for i, n in enumerate(graph.node):
        if not n.name:
            n.name = f"fp32_keep_unnamed_{i}"
    names = {
        n.name for n in graph.node if n.op_type in keep.ops or any(re.search(p, n.name) for p in keep.name_patterns)
    }
    for op, output in keep.paths:
        names |= _nodes_between(graph, op, output)
    if keep.trig_arguments:
        names |= _trig_argument_nodes(graph)
    return sorted(names)


def _trig_argument_nodes(graph) -> set[str]:
    """Sin/Cos nodes and every node computing their arguments: sinusoidal time embeddings take arguments up
    to ~1000 (1000 * t * freq), where fp16's spacing is 0.5 rad."""
    producer = {out: n for n in graph.node for out in n.output}
    keep: set[str] = set()
    todo = [n for n in graph.node if n.op_type in ("Sin", "Cos")]
    while todo:
        node = todo.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        todo.extend(producer[i] for i in node.input if i in producer)
    return keep


def _nodes_between(graph, op: str, output: str) -> set[str]:
    consumers: dict[str, list] = {}
    producer = {}
    for n in graph.node:
        for t in n.input:
            consumers.setdefault(t, []).append(n)
        for t in n.output:
            producer[t] = n
    forward: set[str] = set()
    stack = [n for n in graph.node if n.op_type == op]
    while stack:
        n = stack.pop()
        if n.name in forward:
            continue
        forward.add(n.name)
        stack += [c for t in n.output for c in consumers.get(t, [])]
    backward: set[str] = set()
    stack = [producer[output]] if output in producer else []
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
        from onnxruntime.transformers.onnx_model import OnnxModel
    except ImportError as e:
        raise ToolError(
            "fp16",
            f"making the mixed-precision graph needs onnx and onnxruntime ({e})",
            "pip install 'onnx>=1.16' onnxruntime (both are in the export extras), or use fp32",
        ) from None
    import logging

    logging.getLogger("onnxruntime.transformers.float16").setLevel(logging.WARNING)  # it logs its whole block list
    model = onnx.load(str(src), load_external_data=True)
    nodes = resolve_fp32_nodes(model, keep)
    fp32_inputs = {i.name for i in model.graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    op_block_list = list(DEFAULT_OP_BLOCK_LIST) + list(keep.ops)
    blocked = {n.name for n in model.graph.node if n.op_type in op_block_list} | set(nodes)
    half = OnnxModel(
        convert_float_to_float16(
            model,
            keep_io_types=True,
            disable_shape_infer=_too_big(model),
            op_block_list=op_block_list,
            node_block_list=nodes,
        )
    )
    collapse_round_trips(half.model.graph, fp32_inputs, blocked)
    half.topological_sort()  # the converter appends its input Casts at the end of the node list
    if _too_big(half.model):
        onnx.save_model(
            half.model,
            str(dst),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=dst.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(half.model, str(dst))
    return MixedOnnx(dst, nodes)


def collapse_round_trips(graph, fp32_inputs: set[str], fp32_nodes: set[str]) -> int:
    """Let fp32 nodes read fp32 values directly. ORT's converter casts every float graph input to fp16 and every
    output of a kept node to fp16, then casts back up before each kept consumer: a value that never leaves fp32
    in the rules is rounded to fp16 anyway. That rounding is what the rules exist to avoid: the estimator's `t`
    (a graph input) feeds sin/cos(1000 * t * freq), and t = 0.7 in fp16 is off by up to 2.4e-4, i.e. 0.24 rad.
    Each Cast(to=float) of a Cast(to=float16) of a known-fp32 tensor (a float graph input or a kept node's output)
    reads that tensor instead; Casts left without consumers are removed. Returns the number collapsed."""
    import onnx

    float16, float32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    producer = {out: n for n in graph.node for out in n.output}
    exact = set(fp32_inputs) | {out for n in graph.node if n.name in fp32_nodes for out in n.output}

    def cast_to(n) -> int | None:
        return next((a.i for a in n.attribute if a.name == "to"), None) if n.op_type == "Cast" else None

    collapsed = 0
    for n in graph.node:
        down = producer.get(n.input[0]) if cast_to(n) == float32 else None
        if down is not None and cast_to(down) == float16 and down.input[0] in exact:
            n.input[0] = down.input[0]  # now a float -> float Cast: a copy (kept so graph output names stay)
            collapsed += 1
    used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
    while dead:
        for n in dead:
            graph.node.remove(n)
        used = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
        dead = [n for n in graph.node if n.op_type == "Cast" and not any(o in used for o in n.output)]
    return collapsed


def _too_big(model) -> bool:
    try:
        return model.ByteSize() > EXTERNAL_DATA_THRESHOLD
    except Exception:  # protobuf refuses to size messages over 2 GB
        return True
