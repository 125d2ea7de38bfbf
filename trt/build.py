"""Build TensorRT engines for a pack with Polygraphy's loaders, validate them, commit them into the pack.

Per engine: (fp16: mixed-precision ONNX from the graph's fp16 policy, backends/fp16.py) ->
NetworkFromOnnxPath(strongly typed) -> CreateConfig(profiles, workspace, TF32 off) -> EngineBytesFromNetwork
-> run the graph's test vectors that fit a profile on TensorRT and ONNX Runtime and compare (trt/validate.py)
-> commit (plan_store).
Engines are only ever built here, never at run time. TensorRT and Polygraphy are imported lazily.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backends.fp16 import make_mixed_onnx
from backends.trt_host import HostInfo, require_host
from specs.errors import ToolError
from specs.pack import Pack, sha256_file
from trt.plan_store import commit_plan, make_meta
from trt.plans import EnginePlan, plan_tolerances

FLAGS = ["STRONGLY_TYPED", "TF32_DISABLED"]


@dataclass
class BuiltEngine:
    engine: bytes
    built_onnx_sha256: str
    fp32_nodes: list[str]
    seconds: float


def polygraphy_profiles(plan: EnginePlan) -> list:
    """One polygraphy Profile per planned profile: every dynamic input with its min/opt/max shape."""
    from polygraphy.backend.trt import Profile

    out = []
    for p in plan.profiles.profiles:
        prof = Profile()
        for name, s in p.shapes(plan.spec).items():
            prof.add(name, min=tuple(s["min"]), opt=tuple(s["opt"]), max=tuple(s["max"]))
        out.append(prof)
    return out


def build_engine(
    pack: Pack, plan: EnginePlan, workspace_gib: float, log: Callable[[str], None] = print, verbose: bool = False
) -> BuiltEngine:
    import tensorrt as trt
    from polygraphy.backend.trt import CreateConfig, EngineBytesFromNetwork, NetworkFromOnnxPath
    from polygraphy.exception import PolygraphyException
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.VERBOSE if verbose else G_LOGGER.WARNING
    t0 = time.time()
    src = pack.root / plan.source_file
    with tempfile.TemporaryDirectory(prefix=f"tts-build-trt-{plan.name}-") as tmp:
        onnx_path, built_sha, nodes = src, plan.source_sha256, []
        if plan.precision == "fp16":
            mixed = make_mixed_onnx(src, Path(tmp) / "mixed.onnx", plan.keep)
            onnx_path, built_sha, nodes = mixed.path, sha256_file(mixed.path), mixed.fp32_nodes
            log(f"  [{plan.name}] mixed-precision ONNX: {len(nodes)} nodes kept fp32")
        config = CreateConfig(
            profiles=polygraphy_profiles(plan),
            tf32=False,
            memory_pool_limits={trt.MemoryPoolType.WORKSPACE: int(workspace_gib * (1 << 30))},
            profiling_verbosity=trt.ProfilingVerbosity.DETAILED,
        )
        try:
            engine = EngineBytesFromNetwork(NetworkFromOnnxPath(str(onnx_path), strongly_typed=True), config=config)()
        except (PolygraphyException, RuntimeError, TypeError, ValueError) as e:
            raise ToolError(
                f"{plan.name} ({onnx_path.name})",
                f"TensorRT build failed: {_first_line(e)}",
                "rerun with --verbose; inspect the graph with `polygraphy inspect model "
                f"{src} --show layers`; try --workspace with more GiB, --precision fp32, "
                '--zero-length ort, or a smaller --max-dim (RUNBOOK.md, "TensorRT engines")',
            ) from None
    if not engine:
        raise ToolError(plan.name, "TensorRT returned no engine", "rerun with --verbose to see the builder log")
    return BuiltEngine(bytes(engine), built_sha, nodes, time.time() - t0)


def build_plans(
    pack_dir: str | Path,
    plans: list[EnginePlan],
    workspace_gib: float = 4.0,
    validate: bool = True,
    verbose: bool = False,
    log: Callable[[str], None] = print,
    host: HostInfo | None = None,
) -> list[str]:
    """Build, validate and commit every planned engine; returns the committed plan names.

    Stops at the first failure (ToolError); engines committed before it stay in the pack, complete."""
    host = host or require_host()
    pack = Pack.open(pack_dir)
    policy = pack.chunk_policy
    done = []
    for plan in plans:
        log(
            f"[{plan.name}] building on {host.gpu.name} (sm {host.gpu.compute_capability}), "
            f"TensorRT {host.tensorrt_version}, {len(plan.profiles.profiles)} profile(s)"
        )
        built = build_engine(pack, plan, workspace_gib, log, verbose)
        tolerances = plan_tolerances(plan.spec, plan.precision)
        meta = make_meta(
            plan,
            host,
            policy,
            built_onnx_sha256=built.built_onnx_sha256,
            fp32_nodes=built.fp32_nodes,
            flags=FLAGS,
            workspace_bytes=int(workspace_gib * (1 << 30)),
            build_seconds=built.seconds,
            tolerances=tolerances,
            validation=None,
            tool_version=_tool_version(),
        )
        if validate:
            from trt.validate import compare_engine

            comps, notes = compare_engine(pack, built.engine, meta, label=f"trt:{plan.name}")
            lines = [c.line() for c in comps] + [f"NOTE | {n}" for n in notes]
            for line in lines:
                log("  " + line)
            meta["validation"] = {"passed": bool(comps) and all(c.passed for c in comps), "lines": lines}
            if not meta["validation"]["passed"]:
                raise ToolError(
                    plan.name,
                    "TensorRT outputs differ from ONNX Runtime beyond tolerance"
                    if comps
                    else "no test vector fits the plan's profiles",
                    "the plan was not written; see the lines above (--no-validate skips this check)",
                )
        commit_plan(pack.root, plan, built.engine, meta)
        log(f"  [{plan.name}] {len(built.engine) / 2**20:.1f} MiB in {built.seconds:.0f} s -> {plan.plan_rel}")
        done.append(plan.name)
    return done


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


def _tool_version() -> str:
    try:
        from importlib.metadata import version

        return version("cosyvoice-pack")
    except Exception:
        return "0.0.0+local"


__all__ = ["build_plans", "build_engine", "polygraphy_profiles"]
