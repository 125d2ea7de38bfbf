"""TensorRT plans vs ONNX Runtime on the pack's test vectors, judged by specs/compare.py.

`check_plans(pack)` is what `tts-validate` calls when the manifest lists plans. Without TensorRT or a
GPU it still checks what it can (files, hashes, metadata schema, the plan's source ONNX hash against
the pack's graph) and logs that the plans were not run. On a GPU host a plan that does not match the
host (TensorRT version, GPU) is a failure: the runtime would refuse it. Each test case runs in the
profile that holds its shapes; cases no profile holds are noted, not run (e.g. steady-state HiFT cases
against an offline plan). Labels: `plan:NAME` for file/metadata problems, `trt:NAME/case/output` for
comparisons.
"""

from __future__ import annotations

from collections.abc import Callable

from backends.trt_host import HostInfo, probe_host
from backends.trt_plan import PlanRunner, plan_mismatches, read_plan
from specs.compare import Comparison, compare
from specs.errors import ToolError
from specs.io_spec import Tolerance
from specs.pack import Pack
from specs.plans import rebuild_command


def problem(label: str, text: str) -> Comparison:
    return Comparison(label=label, passed=False, check="exact", atol=0.0, rtol=0.0, problem=text)


def compare_engine(
    pack: Pack, engine: bytes, meta: dict, label: str | None = None, ort_device: str = "cpu"
) -> tuple[list[Comparison], list[str]]:
    """Run every test case that fits a profile on the engine and on ONNX Runtime; compare every output."""
    from backends.ort import OrtRunner

    label = label or f"trt:{meta['plan']}"
    entry = pack.graph(meta["graph"])
    spec = entry.spec()
    tol = {k: Tolerance(**v) for k, v in meta["tolerances"].items()}
    ort = OrtRunner(entry.onnx_path, spec, device=ort_device)
    comps: list[Comparison] = []
    notes: list[str] = []
    with PlanRunner(engine, meta, spec) as runner:
        for case, (inputs, _) in entry.vectors().items():
            idx = runner.profile_for(inputs)
            if idx is None:
                notes.append(f"{label}/{case}: shapes outside every profile of this plan, not run")
                continue
            got, want = runner.infer(inputs), ort.run(inputs)
            for out in spec.output_names:
                comps.append(
                    compare(got[out], want[out], tol[out], f"{label}/{case}/{out} [{meta['profiles'][idx]['name']}]")
                )
    return comps, notes


def check_plans(
    pack: Pack, log: Callable[[str], None] = print, host: HostInfo | None = None, ort_device: str = "cpu"
) -> list[Comparison]:
    comps: list[Comparison] = []
    plans = pack.manifest.get("plans", {})
    host = host or probe_host()
    runnable = []
    for name in plans:
        try:
            rec, meta = read_plan(pack, name)
        except ToolError as e:
            comps.append(problem(f"plan:{name}", e.message))
            continue
        graph_sha = pack.graph(rec["graph"]).record["sha256"]
        if meta["source_onnx_sha256"] != graph_sha:
            comps.append(
                problem(
                    f"plan:{name}",
                    plan_mismatches(meta, host, graph_sha)[0]
                    + "; rebuild: "
                    + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]),
                )
            )
            continue
        runnable.append((name, rec, meta))
    if not host.can_run:
        if runnable:
            log(
                f"NOTE | plans | {len(runnable)} plan(s) checked (hashes, metadata, source graph) but not run: "
                + "; ".join(host.problems)
            )
        return comps
    for name, rec, meta in runnable:
        problems = plan_mismatches(meta, host, meta["source_onnx_sha256"])
        if problems:
            comps.append(
                problem(
                    f"plan:{name}",
                    "; ".join(problems)
                    + "; rebuild on this host: "
                    + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]),
                )
            )
            continue
        c, notes = compare_engine(pack, (pack.root / rec["file"]).read_bytes(), meta, ort_device=ort_device)
        for n in notes:
            log(f"NOTE | {n}")
        comps += c or [problem(f"trt:{name}", "no test vector fits any profile of this plan")]
    return comps
