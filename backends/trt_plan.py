"""TensorRT backend: load a plan only if it was built for this pack graph, TensorRT and GPU; run it.

`load_plan` checks, in order: the manifest record and both files' hashes, the metadata schema, the
source ONNX sha256 against the pack's graph, then this host's TensorRT version, GPU name and compute
capability. Any mismatch is one ToolError naming every mismatched field and the command that rebuilds
the plan. `PlanRunner` wraps Polygraphy's TrtRunner: it checks each feed against the I/O spec, picks the
optimisation profile whose ranges hold the call's dims, and says so when none does (the caller then
runs that call on ONNX Runtime, e.g. zero-length calls of a `--zero-length ort` plan).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from backends.trt_host import INSTALL_HINT, HostInfo, probe_host
from specs.chunk_policy import ANY_CHUNK
from specs.errors import ToolError
from specs.io_spec import GraphSpec
from specs.pack import MANIFEST, Pack, sha256_file
from specs.plans import plan_name, rebuild_command
from specs.schema import read_json, validate_json


def read_plan(pack: Pack, name: str) -> tuple[dict, dict]:
    """(manifest record, metadata) of plan `name`, with both files' hashes and the metadata schema checked."""
    plans = pack.manifest.get("plans", {})
    rec = plans.get(name)
    if rec is None:
        raise ToolError(
            pack.root / MANIFEST,
            f"pack has no plan {name!r}",
            f"plans in this pack: {', '.join(plans) or 'none'} (build one with tts-build-trt)",
        )
    for key, sha_key, what in (("file", "sha256", "plan"), ("meta", "meta_sha256", "plan metadata")):
        path = pack.root / rec[key]
        if not path.is_file():
            raise ToolError(
                path,
                f"{what} listed in the manifest is missing",
                "rebuild: " + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]),
            )
        got = sha256_file(path)
        if got != rec[sha_key]:
            raise ToolError(
                path,
                f"{what} has sha256 {got[:16]}…, the manifest says {rec[sha_key][:16]}…",
                "the file was modified after tts-build-trt; rebuild: "
                + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]),
            )
    meta_path = pack.root / rec["meta"]
    meta = read_json(meta_path, "plan metadata", "the JSON tts-build-trt wrote beside the plan")
    validate_json(meta, "plan_meta", str(meta_path))
    return rec, meta


def plan_mismatches(meta: Mapping, host: HostInfo, graph_sha256: str) -> list[str]:
    """Every field on which the plan does not match the pack graph or this host, in words."""
    out = []
    if meta["source_onnx_sha256"] != graph_sha256:
        out.append(
            f"source ONNX sha256: plan built from {meta['source_onnx_sha256'][:16]}…, the pack's graph is "
            f"{graph_sha256[:16]}…"
        )
    if meta["tensorrt_version"] != host.tensorrt_version:
        out.append(
            f"TensorRT version: plan built with {meta['tensorrt_version']}, this host has "
            f"{host.tensorrt_version or 'none'}"
        )
    gpu = host.gpu
    if gpu is None or meta["gpu"]["name"] != gpu.name:
        out.append(f"GPU name: plan built on {meta['gpu']['name']!r}, this host has {gpu.name if gpu else 'none'!r}")
    if gpu is None or meta["gpu"]["compute_capability"] != gpu.compute_capability:
        out.append(
            f"GPU compute capability: plan built for {meta['gpu']['compute_capability']}, this host has "
            f"{gpu.compute_capability if gpu else 'none'}"
        )
    return out


def check_plan(pack: Pack, name: str, host: HostInfo) -> tuple[dict, dict]:
    """(manifest record, metadata) of a plan that this host may load; ToolError otherwise."""
    rec, meta = read_plan(pack, name)
    graph = pack.graph(rec["graph"])
    problems = plan_mismatches(meta, host, graph.record["sha256"])
    if problems:
        raise ToolError(
            pack.root / rec["file"],
            "plan does not match " + "; ".join(problems),
            "plans are never built at run time; rebuild it on this host: "
            + rebuild_command(pack.root, rec["graph"], rec["precision"], rec["chunk"]),
        )
    return rec, meta


def find_plan(pack: Pack, graph: str, precision: str, chunk: str) -> str | None:
    """Name of the plan for graph x precision x chunk (or the graph's chunk-independent plan), if any."""
    plans = pack.manifest.get("plans", {})
    for c in (chunk, ANY_CHUNK):
        if plan_name(graph, precision, c) in plans:
            return plan_name(graph, precision, c)
    return None


def select_profile(meta: Mapping, dims: Mapping[str, int]) -> int | None:
    """Index of the first profile whose every range holds the call's bound dims, or None."""
    for i, prof in enumerate(meta["profiles"]):
        if all(r["min"] <= dims[d] <= r["max"] for d, r in prof["dims"].items() if d in dims):
            return i
    return None


class PlanRunner:
    """A loaded plan as a context manager: `with PlanRunner(...) as r: outputs = r.infer(feed)`."""

    def __init__(self, engine: bytes, meta: Mapping, spec: GraphSpec):
        self.engine_bytes, self.meta, self.spec = engine, meta, spec
        self.label = meta["plan"]
        self._runner: Any = None  # polygraphy TrtRunner while entered
        self._profile: int | None = None

    def __enter__(self) -> PlanRunner:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner

        self._runner = TrtRunner(EngineFromBytes(self.engine_bytes), name=self.label)
        self._runner.activate()
        return self

    def __exit__(self, *exc) -> None:
        if self._runner is not None:
            self._runner.deactivate()
            self._runner = None

    def profile_for(self, feed: Mapping[str, np.ndarray]) -> int | None:
        return select_profile(self.meta, self.spec.check_feed(feed, self.label))

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        idx = self.profile_for(feed)
        if idx is None:
            dims = self.spec.check_feed(feed, self.label)
            raise ToolError(
                self.label,
                f"no optimisation profile takes this call ({dims})",
                "run this call on ONNX Runtime; profiles: " + ", ".join(p["name"] for p in self.meta["profiles"]),
            )
        if idx != self._profile:
            self._runner.set_profile(idx)
            self._profile = idx
        out = self._runner.infer({k: np.ascontiguousarray(v) for k, v in feed.items()})
        return {name: np.array(out[name]) for name in self.spec.output_names}

    def run(self, feed: Mapping[str, np.ndarray], outputs=None, check: bool = True) -> dict[str, np.ndarray]:
        """The Runner protocol (every call must fit a profile; FallbackRunner handles those that do not)."""
        out = self.infer(feed)
        return {k: out[k] for k in (outputs or self.spec.output_names)}

    def binding(self):
        return None


def open_plan(pack: Pack, graph: str, precision: str, chunk: str, host: HostInfo | None = None) -> PlanRunner:
    """The runtime's entry point (tts-run): a PlanRunner for a matching plan, or a ToolError saying why not."""
    name = find_plan(pack, graph, precision, chunk)
    if name is None:
        raise ToolError(
            pack.root,
            f"pack has no {precision} plan for {graph} ({chunk})",
            "build it on the target GPU host: " + rebuild_command(pack.root, graph, precision, chunk),
        )
    host = host or probe_host()
    if host.tensorrt_version is None or host.gpu is None:
        raise ToolError(
            pack.root / pack.manifest["plans"][name]["file"],
            f"cannot load TensorRT plans here: {'; '.join(host.problems)}",
            INSTALL_HINT,
        )
    rec, meta = check_plan(pack, name, host)
    return PlanRunner((pack.root / rec["file"]).read_bytes(), meta, pack.graph(graph).spec())
