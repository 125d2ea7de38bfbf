"""Step 6 of a graph's export: the reduced-precision ONNX Runtime variants its exporter declares.

Each `PrecisionPolicy` offered on "ort" (specs/precision.py) and asked for by an option (`--fp16`, `--int8`)
becomes a graph `NAME.PRECISION` in the pack: float16 through the one converter (backends/fp16.py),
weight-only through ONNX Runtime's MatMulNBits quantizer; both checked on every case against the fp32
PyTorch outputs under the policy's tolerances, by the same check-and-add path.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from exporters.pipeline.checks import GraphResult, check_graph_matches_spec, judge
from exporters.pipeline.metadata import add_metadata
from exporters.pipeline.onnx_export import save_onnx
from specs.io_spec import GraphSpec
from specs.pack import PackWriter
from specs.precision import PrecisionPolicy


def variant_spec(spec: GraphSpec, policy: PrecisionPolicy) -> GraphSpec:
    """The I/O spec of a variant: same I/O, the policy's tolerances; no profiles or precisions of its own (a
    variant is never a TensorRT source)."""
    facts = dict(spec.facts)
    if policy.method == "weight_only":
        facts["weight_only"] = {
            "method": "onnxruntime MatMulNBitsQuantizer (weight-only, MatMul weights only)",
            **policy.weight_only,
        }
    return replace(
        spec,
        graph=f"{spec.graph}.{policy.precision}",
        precision=policy.precision,
        tolerances={**spec.tolerances, **policy.tolerances},
        facts=facts,
        profiles={},
        precisions={},
    )


def write_variant(src: Path, dst: Path, policy: PrecisionPolicy, threshold: int) -> list[str]:
    """Write the variant graph of `src` to `dst`; returns its external data files."""
    if policy.method == "float16":
        from backends.fp16 import make_mixed_onnx

        make_mixed_onnx(src, dst, policy.fp32_keep)
        return [dst.name + ".data"] if (dst.parent / (dst.name + ".data")).exists() else []
    from exporters.pipeline.weight_only import WeightOnlyConfig, quantize_matmul_weights

    return save_onnx(quantize_matmul_weights(src, WeightOnlyConfig(**policy.weight_only)), dst, threshold)


def add_variant(
    writer: PackWriter,
    spec: GraphSpec,
    policy: PrecisionPolicy,
    src: Path,
    cases: dict,
    opset: int,
    threshold: int,
    log,
):
    """Make, check and add one variant of the graph at `src`; returns its GraphResult."""
    import onnx

    t0 = time.time()
    vspec = variant_spec(spec, policy)
    rel = f"{vspec.graph}.onnx"
    path = writer.path(rel)
    external = write_variant(src, path, policy, threshold)
    onnx.checker.check_model(str(path), full_check=True)
    check_graph_matches_spec(onnx.load(str(path), load_external_data=False), vspec, rel)
    log(f"[{vspec.graph}] ONNX Runtime ({policy.method}, {policy.precision}) vs PyTorch (fp32)")
    results = judge(path, vspec, cases, vspec.graph, log)
    add_metadata(path, vspec, vspec.facts)
    res = GraphResult(vspec.graph, results, False, time.time() - t0)
    writer.add_graph(
        vspec.graph,
        vspec,
        rel,
        cases,
        opset,
        external_data=external,
        extra={"variant_of": spec.graph, "simplified": False, "report": res.summary()},
    )
    return res
