"""The export pipeline every graph goes through, whatever the graph:

1. `torch.onnx.export` of the exporter's wrapper (onnx_export.py);
2. `onnx.checker` (full check) and graph == spec (names, dtypes, ranks, fixed dims, dim names) (checks.py);
3. ONNX Runtime on every test case vs the upstream PyTorch outputs, under the spec's tolerances;
4. onnxsim: the simplified graph is kept only if step 3 still passes on it;
5. key facts and the I/O spec into the ONNX `metadata_props` (metadata.py), files into the pack;
6. the reduced-precision variants the exporter declares and the options ask for (variants.py).
Any failure raises; the pack writer then removes everything (atomic pack writes).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from exporters.graphs.base import GraphExporter
from exporters.pipeline.checks import GraphResult, check_graph_matches_spec, judge, try_simplify
from exporters.pipeline.metadata import add_metadata
from exporters.pipeline.onnx_export import torch_export
from exporters.pipeline.variants import add_variant
from specs.chunk_policy import ChunkPolicy, check_policy_facts
from specs.pack import PackWriter
from specs.precision import VARIANT_OPTIONS


@dataclass
class ExportOptions:
    seed: int = 0
    simplify: bool = True
    fp16: bool = False  # ONNX Runtime fp16 variants of graphs whose fp16 policy is offered on "ort"
    int8: bool = False  # weight-only INT8 variants of graphs that declare one (the LLM)
    log: Callable[[str], None] = print

    def wants(self, precision: str) -> bool:
        return {"fp16": self.fp16, "int8": self.int8}.get(precision, False)


def export_graph(
    exporter: GraphExporter, model, policy: ChunkPolicy, writer: PackWriter, opts: ExportOptions
) -> list[GraphResult]:
    """Export, check, simplify, and add one graph (and the variants asked for) to the pack."""
    import onnx

    t0 = time.time()
    name = exporter.name
    log = opts.log
    spec = exporter.graph_spec(model, policy)
    log(f"[{name}] computing test vectors with the upstream PyTorch modules")
    cases = exporter.cases(model, opts.seed)
    missing = [c.name for c in spec.cases if c.name not in cases]
    if missing:
        raise RuntimeError(f"{name}: exporter produced no vectors for cases {missing}")
    log(f"[{name}] exporting to ONNX (opset {exporter.opset})")
    onnx_rel = f"{name}.onnx"
    path = writer.path(onnx_rel)
    external = torch_export(exporter, model, spec, cases[exporter.trace_case][0], path)
    onnx.checker.check_model(str(path), full_check=True)
    check_graph_matches_spec(onnx.load(str(path), load_external_data=False), spec, str(path))
    log(f"[{name}] ONNX Runtime vs PyTorch on {len(cases)} cases")
    results = judge(path, spec, cases, name, log)
    simplified = False
    if opts.simplify and not external:
        log(f"[{name}] onnxsim")
        simplified, sim_results = try_simplify(path, spec, cases, name, log, results)
        if simplified:
            results = sim_results
    facts = spec.facts
    add_metadata(path, spec, facts)
    out = [GraphResult(name, results, simplified, time.time() - t0)]
    writer.add_graph(
        name,
        spec,
        onnx_rel,
        cases,
        exporter.opset,
        external_data=external,
        extra={"simplified": simplified, "report": out[0].summary()},
    )
    for key, (array, doc) in exporter.data(model).items():
        writer.add_data(key, array, doc)

    check_policy_facts(policy, spec)
    for precision, vpolicy in spec.precisions.items():
        if not opts.wants(precision):
            continue
        if not vpolicy.offered_on("ort"):
            log(
                f"[{name}] no ONNX Runtime {precision} variant ({VARIANT_OPTIONS.get(precision, precision)}): "
                f"its {precision} policy is for {', '.join(vpolicy.backends)} only"
            )
            continue
        out.append(
            add_variant(writer, spec, vpolicy, path, cases, exporter.opset, exporter.external_data_threshold, log)
        )
    return out
