"""Conformance harness: check a pack's files, specs and graphs (and golden vectors) on ONNX Runtime.

For each graph: the I/O spec is schema-valid, the graph's inputs/outputs equal the spec, and every test
vector (the pack's own, and the committed golden vectors when given) reproduces the expected outputs
under the spec's tolerances. Hashes of every file are checked first, so a tampered graph fails before
it is run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from backends.ort import OrtRunner
from specs.chunk_policy import check_policy_facts
from specs.compare import Comparison, Report, check_vectors
from specs.errors import ToolError
from specs.pack import Pack, load_vectors


@dataclass
class ValidationOptions:
    golden: Path | None = None
    graphs: list[str] | None = None
    device: str = "cpu"
    verify_hashes: bool = True
    plans: bool = True
    log: Callable[[str], None] = print


@dataclass
class ValidationResult:
    report: Report
    graphs_checked: list[str] = field(default_factory=list)
    golden_checked: list[str] = field(default_factory=list)


def golden_vectors_path(golden: Path, graph: str) -> Path:
    return golden / f"{graph}.vectors.npz"


def validate_pack(pack_dir: str | Path, opts: ValidationOptions) -> ValidationResult:
    pack = Pack.open(pack_dir)
    names = opts.graphs or pack.graph_names()
    for n in names:
        pack.graph(n)  # unknown names fail here with the list of graphs
    if opts.verify_hashes:
        pack.verify()
        opts.log(f"hashes: every file listed in {pack.root / 'manifest.json'} matches")
    if opts.golden is not None and not opts.golden.is_dir():
        raise ToolError(opts.golden, "golden directory does not exist", "e.g. golden/tiny in this repository")
    report = Report(f"tts-validate {pack.root}")
    result = ValidationResult(report)
    for name in names:
        entry = pack.graph(name)
        spec = entry.spec()
        check_policy_facts(pack.chunk_policy, spec)
        session = OrtRunner(entry.onnx_path, spec, device=opts.device)
        comps = check_vectors(session, entry.vectors(), label=name)
        _log_all(opts.log, comps)
        report.extend(comps)
        result.graphs_checked.append(name)
        if opts.golden is not None:
            gpath = golden_vectors_path(opts.golden, name)
            if not gpath.exists():
                report.notes.append(f"no golden vectors for {name} in {opts.golden}")
                opts.log(f"NOTE | {name} | no golden vectors in {opts.golden}")
                continue
            comps = check_vectors(session, load_vectors(gpath), label=f"golden:{name}")
            _log_all(opts.log, comps)
            report.extend(comps)
            result.golden_checked.append(name)
    if opts.plans and pack.manifest.get("plans"):
        report.extend(_check_plans(pack, opts))
    return result


def _check_plans(pack: Pack, opts: ValidationOptions) -> list[Comparison]:
    """TensorRT plans in the pack are validated against their test vectors when TensorRT is usable here."""
    from trt.validate import check_plans

    comps = check_plans(pack, log=opts.log)
    _log_all(opts.log, comps)
    return comps


def _log_all(log, comps: list[Comparison]) -> None:
    for c in comps:
        log(c.line())
