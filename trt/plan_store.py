"""Plans in a pack: metadata (specs/schema/plan_meta.schema.json), atomic commit, verified reading.

Commit order: the engine bytes, metadata and new manifest are all written to temporary files and checked
(schemas, hashes) first; then plan, metadata and finally manifest.json are renamed into place, under a
lock file so two builders cannot interleave their manifest updates. A build that fails before that point
leaves the pack as it was. Each engine is committed on its own once it is built (and validated).
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from specs import FORMAT_VERSION
from specs.errors import ToolError
from specs.pack import MANIFEST, Pack, sha256_file
from specs.schema import read_json, validate_json
from trt.host import HostInfo
from trt.plans import EnginePlan, rebuild_command
from trt.policy import ChunkPolicy

LOCK = ".tts-build-trt.lock"


def make_meta(plan: EnginePlan, host: HostInfo, policy: ChunkPolicy, *, built_onnx_sha256: str,
              fp32_nodes: list[str], flags: list[str], workspace_bytes: int, build_seconds: float,
              tolerances: dict, validation: dict | None, tool_version: str = "") -> dict:
    meta = {
        "format_version": FORMAT_VERSION,
        "plan": plan.name,
        "graph": plan.graph,
        "precision": plan.precision,
        "chunk": plan.chunk,
        "tensorrt_version": host.tensorrt_version or "",
        "polygraphy_version": host.polygraphy_version or "",
        "gpu": host.gpu.to_dict() if host.gpu else {"name": "", "compute_capability": "0.0"},
        "source_onnx": plan.source_file,
        "source_onnx_sha256": plan.source_sha256,
        "built_onnx_sha256": built_onnx_sha256,
        "chunk_policy": policy.to_dict(),
        "profiles": [p.to_dict(plan.spec) for p in plan.profiles.profiles],
        "zero_length": [z.to_dict() for z in plan.profiles.zero_length],
        "flags": flags,
        "fp32_rules": plan.keep.to_dict() if plan.keep else None,
        "fp32_layers": fp32_nodes,
        "io_dtypes": {t.name: t.dtype for t in plan.spec.inputs + plan.spec.outputs},
        "tolerances": {k: {"atol": t.atol, "rtol": t.rtol, "check": t.check, "reason": t.reason}
                       for k, t in tolerances.items()},
        "validation": validation,
        "workspace_bytes": int(workspace_bytes),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_seconds": round(float(build_seconds), 1),
        "tool_version": tool_version,
    }
    meta = json.loads(json.dumps(meta))  # validate exactly what will be written
    validate_json(meta, "plan_meta", f"metadata of plan {plan.name}")
    return meta


@contextlib.contextmanager
def pack_lock(root: Path):
    with open(root / LOCK, "a+") as f:
        try:
            import fcntl

            fcntl.flock(f, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: no lock
            pass
        yield


def commit_plan(pack_root: str | Path, plan: EnginePlan, engine: bytes, meta: dict) -> dict:
    """Write the plan + metadata into the pack and register them in manifest `plans`, atomically."""
    root = Path(pack_root)
    (root / "trt").mkdir(exist_ok=True)
    tag = f".tmp-{os.getpid()}"
    tmp_plan, tmp_meta = root / (plan.plan_rel + tag), root / (plan.meta_rel + tag)
    tmp_manifest = root / (MANIFEST + tag)
    try:
        _write(tmp_plan, engine)
        _write(tmp_meta, (json.dumps(meta, indent=2) + "\n").encode())
        with pack_lock(root):
            manifest = Pack.open(root).manifest  # fresh: another builder may have committed meanwhile
            graph = manifest["graphs"].get(plan.graph)
            if graph is None or graph["sha256"] != plan.source_sha256:
                raise ToolError(root / MANIFEST, f"graph {plan.graph!r} changed while its plan was built",
                                "rebuild: " + rebuild_command(root, plan.graph, plan.precision, plan.chunk))
            record = {"file": plan.plan_rel, "sha256": sha256_file(tmp_plan), "size": len(engine),
                      "meta": plan.meta_rel, "meta_sha256": sha256_file(tmp_meta), "graph": plan.graph,
                      "precision": plan.precision, "chunk": plan.chunk}
            manifest.setdefault("plans", {})[plan.name] = record
            validate_json(manifest, "manifest", "manifest being written")
            _write(tmp_manifest, (json.dumps(manifest, indent=2) + "\n").encode())
            os.replace(tmp_plan, root / plan.plan_rel)
            os.replace(tmp_meta, root / plan.meta_rel)
            os.replace(tmp_manifest, root / MANIFEST)
        return record
    finally:
        for p in (tmp_plan, tmp_meta, tmp_manifest):
            p.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def read_plan(pack: Pack, name: str) -> tuple[dict, dict]:
    """(manifest record, metadata) of plan `name`, with both files' hashes and the metadata schema checked."""
    plans = pack.manifest.get("plans", {})
    rec = plans.get(name)
    if rec is None:
        raise ToolError(pack.root / MANIFEST, f"pack has no plan {name!r}",
                        f"plans in this pack: {', '.join(plans) or 'none'} (build one with tts-build-trt)")
    for key, sha_key, what in (("file", "sha256", "plan"), ("meta", "meta_sha256", "plan metadata")):
        path = pack.root / rec[key]
        if not path.is_file():
            raise ToolError(path, f"{what} listed in the manifest is missing",
                            "rebuild: " + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]))
        got = sha256_file(path)
        if got != rec[sha_key]:
            raise ToolError(path, f"{what} has sha256 {got[:16]}…, the manifest says {rec[sha_key][:16]}…",
                            "the file was modified after tts-build-trt; rebuild: "
                            + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]))
    meta_path = pack.root / rec["meta"]
    meta = read_json(meta_path, "plan metadata", "the JSON tts-build-trt wrote beside the plan")
    validate_json(meta, "plan_meta", str(meta_path))
    return rec, meta
