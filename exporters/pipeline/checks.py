"""Steps 2-4 of a graph's export: graph == spec, ONNX Runtime vs the upstream outputs, onnxsim if still passing.

Each output of each case gets one verdict line from the one comparator (specs/compare.py); any failure
raises, and the pack writer then removes everything (atomic pack writes).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from backends.ort import check_onnx_file
from specs.compare import Comparison, Report
from specs.errors import ToolError
from specs.io_spec import GraphSpec

ONNX_DTYPES = {"float32": 1, "int32": 6, "int64": 7, "bool": 9, "float16": 10}


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


def check_graph_matches_spec(model_proto, spec: GraphSpec, where: str) -> None:
    """Optimum-style check after export: exact names and order, dtypes, ranks, fixed dims, dim names."""

    def describe(vi):
        tt = vi.type.tensor_type
        dims = [d.dim_param if d.dim_param else d.dim_value for d in tt.shape.dim]
        return vi.name, tt.elem_type, dims

    for kind, got, want in (
        ("inputs", model_proto.graph.input, spec.inputs),
        ("outputs", model_proto.graph.output, spec.outputs),
    ):
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


def ort_check(path: Path, spec: GraphSpec, cases: dict, label: str) -> list[Comparison]:
    return check_onnx_file(path, spec, cases, label=label)


# onnxsim's rewrites can cost accuracy (the estimator's error on late ODE steps grew 10-20x, still within its
# gate: ci/sweep_export_gates.py). A simplified graph is kept only if it costs none: each output's max |err| at
# most twice the unsimplified graph's, plus 1% of its atol for outputs already at rounding level.
SIMPLIFY_ERROR_GROWTH = 2.0
SIMPLIFY_ATOL_FLOOR = 0.01


def costs_accuracy(simplified: list[Comparison], baseline: list[Comparison]) -> Comparison | None:
    """The first output the simplified graph got materially worse on, or None."""
    before = {c.label: c for c in baseline}
    for c in simplified:
        b = before.get(c.label)
        if not c.passed or b is None:
            return c
        if c.check != "exact" and c.max_abs > SIMPLIFY_ERROR_GROWTH * b.max_abs + SIMPLIFY_ATOL_FLOOR * c.atol:
            return c
    return None


def try_simplify(
    path: Path, spec: GraphSpec, cases: dict, label: str, log, baseline: list[Comparison]
) -> tuple[bool, list[Comparison]]:
    """Replace the graph with onnxsim's result only if it still passes every case and costs no accuracy."""
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
    worse = costs_accuracy(results, baseline)
    if worse is None:
        tmp.replace(path)
        return True, results
    tmp.unlink()
    before = next((b.max_abs for b in baseline if b.label == worse.label), float("nan"))
    log(
        f"  onnxsim costs accuracy ({worse.label}: max_abs {before:.2e} -> {worse.max_abs:.2e}"
        f"{'' if worse.passed else ', fails'}); keeping the unsimplified graph"
    )
    return False, []


def judge(path: Path, spec: GraphSpec, cases: dict, label: str, log) -> list[Comparison]:
    """ONNX Runtime on every case under the spec's tolerances; one line per output; raise on any failure."""
    results = ort_check(path, spec, cases, label)
    for c in results:
        log("  " + c.line())
    if not all(c.passed for c in results):
        _fail(label, results)
    return results


def _fail(name: str, results: list[Comparison]) -> None:
    report = Report(name, results)
    worst = [c for c in results if not c.passed]
    raise ToolError(
        name,
        f"ONNX Runtime output differs from the upstream PyTorch module "
        f"({len(worst)}/{len(results)} outputs failed; first: {worst[0].line()})",
        "no pack was written; see the lines above: " + report.summary(),
    )
