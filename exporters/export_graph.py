"""The export pipeline every graph goes through, whatever the graph:

1. `torch.onnx.export` of the exporter's wrapper (TorchScript path, opset from the exporter) with dynamic
   axes named after the spec's dims; graphs over ~1.8 GB are saved with one external data file;
2. `onnx.checker` (full check) and graph == spec (names, dtypes, ranks, fixed dims, dim names);
3. ONNX Runtime on every test case vs the upstream PyTorch outputs, under the spec's tolerances;
4. onnxsim: the simplified graph is kept only if step 3 still passes on it;
5. optional FP16 variant (weights and compute in fp16, fp32 I/O) checked under its own tolerances;
6. key facts into the ONNX `metadata_props`, files into the pack.
Any failure raises; the pack writer then removes everything (atomic pack writes).
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np

from specs.compare import Comparison, Report
from specs.errors import ToolError
from specs.io_spec import GraphSpec, Tolerance
from specs.pack import PackWriter
from exporters.graphs.base import GraphExporter

ONNX_DTYPES = {"float32": 1, "int32": 6, "int64": 7, "bool": 9, "float16": 10}


@dataclass
class ExportOptions:
    seed: int = 0
    simplify: bool = True
    fp16: bool = False
    int8: bool = False  # weight-only INT8 variants of graphs that declare `weight_only` (the LLM)
    log: Callable[[str], None] = print


@dataclass
class GraphResult:
    name: str
    comparisons: list[Comparison] = field(default_factory=list)
    simplified: bool = False
    seconds: float = 0.0

    def summary(self) -> dict:
        return {
            "simplified": self.simplified,
            "export_seconds": round(self.seconds, 1),
            "max_abs": {c.label.split("/", 1)[1]: c.max_abs for c in self.comparisons},
            "passed": all(c.passed for c in self.comparisons),
        }


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for t in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if named:
            axes[t.name] = named
    return axes


def stamp_output_shapes(proto, spec: GraphSpec) -> None:
    """The TorchScript exporter names output dims after the op that made them (e.g. 'Mulvelocity_dim_0')
    and may leave fixed dims symbolic; write the spec's dims instead. The test vectors still check the
    real output shapes on every case."""
    by_name = {t.name: t for t in spec.outputs}
    for vi in proto.graph.output:
        t = by_name.get(vi.name)
        if t is None or len(vi.type.tensor_type.shape.dim) != len(t.shape):
            continue
        for d, want in zip(vi.type.tensor_type.shape.dim, t.shape):
            if isinstance(want, int):
                d.Clear()
                d.dim_value = want
            else:
                d.Clear()
                d.dim_param = want


def check_graph_matches_spec(model_proto, spec: GraphSpec, where: str) -> None:
    """Optimum-style check after export: exact names and order, dtypes, ranks, fixed dims, dim names."""
    def describe(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        return vi.name, tt.elem_type, dims

    for kind, got, want in (("inputs", model_proto.graph.input, spec.inputs),
                            ("outputs", model_proto.graph.output, spec.outputs)):
        got = [describe(v) for v in got]
        if [g[0] for g in got] != [t.name for t in want]:
            raise ToolError(where, f"graph {kind} {[g[0] for g in got]} differ from the spec {[t.name for t in want]}")
        for (name, etype, dims), t in zip(got, want):
            if etype != ONNX_DTYPES[t.dtype]:
                raise ToolError(where, f"graph tensor {name!r} has ONNX elem type {etype}", f"{t.dtype}")
            if len(dims) != len(t.shape):
                raise ToolError(where, f"graph tensor {name!r} has rank {len(dims)}", f"shape {t.shape}")
            for axis, (g, w) in enumerate(zip(dims, t.shape)):
                if isinstance(w, int) and g != w:
                    raise ToolError(where, f"graph tensor {name!r} axis {axis} is {g!r}", f"fixed {w}")
                if isinstance(w, str) and g != w:
                    raise ToolError(where, f"graph tensor {name!r} axis {axis} is {g!r}", f"dynamic dim {w!r}")


def torch_export(exporter: GraphExporter, model, spec: GraphSpec, example: dict, path: Path) -> list[str]:
    """Export to `path`; returns the external data file names written beside it (maybe none)."""
    import shutil

    import onnx
    import torch

    wrapper = exporter.wrapper(model).eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in spec.input_names)
    # The TorchScript exporter writes one file per tensor for > 2 GB models: export into a scratch
    # folder, then re-save as one graph file (+ one external data file when needed).
    scratch = path.parent / f".{path.stem}.export"
    scratch.mkdir()
    try:
        with torch.no_grad(), exporter.patches(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python control flow we froze on purpose
            torch.onnx.export(wrapper, args, str(scratch / "model.onnx"), input_names=spec.input_names,
                              output_names=spec.output_names, dynamic_axes=dynamic_axes(spec),
                              opset_version=exporter.opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(str(scratch / "model.onnx"), load_external_data=True)
        stamp_output_shapes(proto, spec)
        return _save(proto, path, exporter.external_data_threshold)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _save(proto, path: Path, threshold: int) -> list[str]:
    import onnx

    try:
        small = proto.ByteSize() <= threshold
    except Exception:  # protobuf refuses to size messages over 2 GB
        small = False
    if small:
        onnx.save_model(proto, str(path))
        return []
    location = path.name + ".data"
    onnx.save_model(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=1024)
    (path.parent / location).chmod(0o644)  # onnx writes it 0600; a pack is readable like its other files
    return [location]


def ort_check(path: Path, spec: GraphSpec, cases: dict, label: str) -> list[Comparison]:
    from runtime.conformance import check_onnx_file

    return check_onnx_file(path, spec, cases, label=label)


def try_simplify(path: Path, spec: GraphSpec, cases: dict, label: str, log) -> tuple[bool, list[Comparison]]:
    """Replace the graph with onnxsim's result only if it still passes every case."""
    import onnx
    import onnxsim

    proto = onnx.load(str(path))
    try:
        simplified, ok = onnxsim.simplify(proto)
    except Exception as e:  # onnxsim fails on some ops/shapes: keep the original graph
        log(f"  onnxsim failed ({type(e).__name__}: {str(e)[:100]}); keeping the unsimplified graph")
        return False, []
    if not ok:
        log("  onnxsim's own check failed; keeping the unsimplified graph")
        return False, []
    check_graph_matches_spec(simplified, spec, f"{label} (simplified)")
    tmp = path.with_suffix(".sim.onnx")
    onnx.save_model(simplified, str(tmp))
    results = ort_check(tmp, spec, cases, label)
    if all(c.passed for c in results):
        tmp.replace(path)
        return True, results
    tmp.unlink()
    log("  onnxsim changed the outputs beyond tolerance; keeping the unsimplified graph")
    return False, []


def add_metadata(path: Path, spec: GraphSpec, facts: dict) -> None:
    """A lone .onnx explains itself: graph name, precision, facts and the whole I/O spec."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {"cosyvoice_pack.graph": spec.graph, "cosyvoice_pack.precision": spec.precision,
            "cosyvoice_pack.format_version": str(spec.format_version),
            "cosyvoice_pack.io_spec": json.dumps(spec.to_dict(), separators=(",", ":"))}
    meta.update({f"cosyvoice_pack.fact.{k}": json.dumps(v) for k, v in facts.items()})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save_model(proto, str(path))


def trig_argument_nodes(proto) -> list[str]:
    """Sin/Cos nodes and every node computing their arguments: sinusoidal time embeddings take arguments up
    to ~1000 (1000 * t * freq), where fp16's spacing is 0.5 rad; these stay fp32 in an fp16 variant."""
    producer = {out: n for n in proto.graph.node for out in n.output}
    keep, todo = set(), [n for n in proto.graph.node if n.op_type in ("Sin", "Cos")]
    while todo:
        node = todo.pop()
        if node.name in keep:
            continue
        keep.add(node.name)
        todo.extend(producer[i] for i in node.input if i in producer)
    return sorted(keep)


def fp16_variant(src: Path, dst: Path, spec: GraphSpec, fp16_tolerances: dict[str, Tolerance]) -> GraphSpec:
    """Weights and compute in fp16, I/O kept fp32 (so the runtime feeds the same tensors)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    proto = onnx.load(str(src))
    half = OnnxModel(convert_float_to_float16(proto, keep_io_types=True, op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                              node_block_list=trig_argument_nodes(proto)))
    half.topological_sort()  # the converter appends its input Casts at the end of the node list
    onnx.save_model(half.model, str(dst))
    return replace(spec, graph=spec.graph + ".fp16", precision="fp16",
                   tolerances={**spec.tolerances, **fp16_tolerances})


def export_graph(exporter: GraphExporter, model, writer: PackWriter, opts: ExportOptions,
                 fp16_tolerances: dict[str, Tolerance] | None = None) -> list[GraphResult]:
    """Export, check, simplify, and add one graph (and its fp16 variant if asked) to the pack."""
    import onnx

    t0 = time.time()
    name = exporter.name
    log = opts.log
    spec = exporter.spec(model)
    spec.check_consistency(f"{name} spec")
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
        simplified, sim_results = try_simplify(path, spec, cases, name, log)
        if simplified:
            results = sim_results
    facts = spec.facts
    add_metadata(path, spec, facts)
    out = [GraphResult(name, results, simplified, time.time() - t0)]
    writer.add_graph(name, spec, onnx_rel, cases, exporter.opset, external_data=external,
                     extra={"simplified": simplified, "report": out[0].summary()})
    for key, (array, doc) in exporter.data(model).items():
        writer.add_data(key, array, doc)

    if opts.fp16:
        if external:
            log(f"[{name}] fp16 variant skipped: external-data graphs are converted with the LLM's own tooling")
        elif not fp16_tolerances:
            log(f"[{name}] fp16 variant skipped: this graph declares no fp16 tolerances")
        else:
            t1 = time.time()
            half_rel = f"{name}.fp16.onnx"
            half_spec = fp16_variant(path, writer.path(half_rel), spec, fp16_tolerances)
            onnx.checker.check_model(str(writer.path(half_rel)), full_check=True)
            log(f"[{half_spec.graph}] ONNX Runtime (fp16) vs PyTorch (fp32)")
            out.append(add_variant(writer, name, half_spec, half_rel, [], cases, exporter.opset, t1, log))
    if opts.int8 and getattr(exporter, "weight_only", None):
        out.append(_weight_only_variant(exporter, path, spec, cases, writer, facts, log))
    return out


def _weight_only_variant(exporter: GraphExporter, src: Path, spec: GraphSpec, cases: dict, writer: PackWriter,
                         facts: dict, log) -> GraphResult:
    """MatMul weights quantized (exporters/weight_only.py), fp32 I/O; checked against the fp32 PyTorch outputs
    under the exporter's `weight_only_tolerances(spec)`."""
    from exporters.weight_only import quantize_matmul_weights

    t0 = time.time()
    cfg = exporter.weight_only
    name = f"{spec.graph}.{cfg.precision}"
    rel = f"{name}.onnx"
    external = _save(quantize_matmul_weights(src, cfg), writer.path(rel), exporter.external_data_threshold)
    vspec = replace(spec, graph=name, precision=cfg.precision,
                    tolerances={**spec.tolerances, **exporter.weight_only_tolerances(spec)},
                    facts={**facts, "weight_only": cfg.facts()})
    log(f"[{name}] ONNX Runtime ({cfg.precision} weights) vs PyTorch (fp32)")
    return add_variant(writer, spec.graph, vspec, rel, external, cases, exporter.opset, t0, log)


def judge(path: Path, spec: GraphSpec, cases: dict, label: str, log) -> list[Comparison]:
    """ONNX Runtime on every case under the spec's tolerances; one line per output; raise on any failure."""
    results = ort_check(path, spec, cases, label)
    for c in results:
        log("  " + c.line())
    if not all(c.passed for c in results):
        _fail(label, results)
    return results


def add_variant(writer: PackWriter, base: str, vspec: GraphSpec, rel: str, external: list[str], cases: dict,
                opset: int, t0: float, log) -> GraphResult:
    """Check a variant graph (fp16, int8, ...) already written under `rel` and add it to the pack."""
    import onnx

    path = writer.path(rel)
    check_graph_matches_spec(onnx.load(str(path), load_external_data=False), vspec, rel)
    results = judge(path, vspec, cases, vspec.graph, log)
    add_metadata(path, vspec, vspec.facts)
    res = GraphResult(vspec.graph, results, False, time.time() - t0)
    writer.add_graph(vspec.graph, vspec, rel, cases, opset, external_data=external,
                     extra={"variant_of": base, "simplified": False, "report": res.summary()})
    return res


def _fail(name: str, results: list[Comparison]) -> None:
    report = Report(name, results)
    worst = [c for c in results if not c.passed]
    raise ToolError(name, f"ONNX Runtime output differs from the upstream PyTorch module "
                    f"({len(worst)}/{len(results)} outputs failed; first: {worst[0].line()})",
                    "no pack was written; see the lines above: " + report.summary())
