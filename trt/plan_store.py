"""Plans in a pack: metadata (specs/schema/plan_meta.schema.json) and atomic commit (the verified reading is
backends/trt_plan.py).

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

from backends.trt_host import HostInfo
from specs import FORMAT_VERSION
from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.pack import DIGEST_FIELD, MANIFEST, Pack, manifest_digest, sha256_file
from specs.plans import rebuild_command
from specs.schema import validate_json
from trt.plans import EnginePlan

LOCK = ".tts-build-trt.lock"


def make_meta(
    plan: EnginePlan,
    host: HostInfo,
    policy: ChunkPolicy,
    *,
    built_onnx_sha256: str,
    fp32_nodes: list[str],
    flags: list[str],
    workspace_bytes: int,
    build_seconds: float,
    tolerances: dict,
    validation: dict | None,
    tool_version: str = "",
) -> dict:
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
        "tolerances": {k: t.to_dict() for k, t in tolerances.items()},
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
                raise ToolError(
                    root / MANIFEST,
                    f"graph {plan.graph!r} changed while its plan was built",
                    "rebuild: " + rebuild_command(root, plan.graph, plan.precision, plan.chunk),
                )
            record = {
                "file": plan.plan_rel,
                "sha256": sha256_file(tmp_plan),
                "size": len(engine),
                "meta": plan.meta_rel,
                "meta_sha256": sha256_file(tmp_meta),
                "graph": plan.graph,
                "precision": plan.precision,
                "chunk": plan.chunk,
            }
            manifest.setdefault("plans", {})[plan.name] = record
            manifest[DIGEST_FIELD] = manifest_digest(manifest)
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
