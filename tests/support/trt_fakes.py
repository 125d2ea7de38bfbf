"""Helpers for the trt tests: a synthetic pack that needs neither torch nor the oracle, a fake host, and a
fake plan committed through the real commit path."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from specs.io_spec import Dim, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.pack import PackWriter
from specs.precision import Fp32Keep, PrecisionPolicy

# CosyVoice2's policy (upstream CosyVoice2Model with the shipped yaml).
CHUNK_POLICY = {
    "token_hop_len": 25,
    "token_max_hop_len": 100,
    "stream_scale_factor": 2,
    "pre_lookahead_len": 3,
    "token_mel_ratio": 2,
    "mel_cache_len": 8,
    "source_cache_len": 3840,
    "samples_per_mel_frame": 480,
    "output_chunk_samples": 960,
    "crossfade": {"window": "hamming", "length": 7680},
    "hop_growth": "per_request",
}


def toy_spec(n_min: int = 0, profiles: dict | None = None) -> GraphSpec:
    """A synthetic graph y = f(x, cache) with a dim that may be zero-length; by default one profile that names no
    dim (so every dim keeps the spec's range) and an fp16 policy for TensorRT."""
    return GraphSpec(
        graph="toy",
        description="synthetic graph for trt tests",
        inputs=[TensorSpec("x", "float32", [1, "n"], "data"), TensorSpec("cache", "float32", [1, "c"], "state")],
        outputs=[TensorSpec("y", "float32", [1, "n"], "result")],
        dims={
            "n": Dim(1, 8, 64, "items", role="tokens"),
            "c": Dim(n_min, 4, 16, "cache length, 0 on the first call", role="cache"),
        },
        tolerances={"y": Tolerance(1e-5, 0.0, "synthetic graph: identical arithmetic on both sides")},
        cases=[TestCase("first", "empty cache"), TestCase("steady", "full cache")],
        profiles=profiles or {"any": [ProfileSpec("all_calls", "the spec's declared dim ranges")]},
        precisions={
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                {"y": Tolerance(5e-2, 2e-2, "synthetic fp16 budget for the trt tests")},
                ("tensorrt",),
                Fp32Keep(ops=("Softmax",), reason="synthetic: softmax kept fp32"),
            )
        },
    )


def make_fake_pack(dest: Path, spec: GraphSpec | None = None) -> Path:
    """A schema-valid pack with one graph; its '.onnx' is placeholder bytes (only hashes are used)."""
    spec = spec or toy_spec()
    with PackWriter(dest) as w:
        w.path(f"{spec.graph}.onnx").write_bytes(b"placeholder graph bytes for hash checks")
        vectors = {
            "first": (
                {"x": np.ones((1, 5), np.float32), "cache": np.zeros((1, 0), np.float32)},
                {"y": np.ones((1, 5), np.float32)},
            ),
            "steady": (
                {"x": np.ones((1, 5), np.float32), "cache": np.ones((1, 4), np.float32)},
                {"y": np.ones((1, 5), np.float32)},
            ),
        }
        w.add_graph(spec.graph, spec, f"{spec.graph}.onnx", vectors, opset=18)
        w.commit(
            {
                "tool": {"name": "cosyvoice-pack", "version": "test"},
                "model": {"family": "cosyvoice2", "source": {"files": {}}, "config": {}},
                "audio": {
                    "sample_rate": 24000,
                    "encoding": "pcm_s16le",
                    "channels": 1,
                    "chunk_policy": dict(CHUNK_POLICY),
                },
            }
        )
    return dest


def fake_host(trt_version="10.13.0.35", gpu_name="NVIDIA H200", cc="9.0"):
    from backends.trt_host import GpuInfo, HostInfo

    return HostInfo(trt_version, "0.53.6", GpuInfo(gpu_name, cc, "13.0"))


def commit_fake_plan(pack_dir: Path, host=None, precision: str = "fp16", engine: bytes = b"not a real engine"):
    """Plan + metadata for the pack's first graph, committed with the real commit path; returns the plan."""
    from specs.pack import Pack
    from trt.plan_store import commit_plan, make_meta
    from trt.plans import plan_engines, plan_tolerances

    pack = Pack.open(pack_dir)
    plan = plan_engines(pack, precisions=[precision]).engines[0]
    meta = make_meta(
        plan,
        host or fake_host(),
        pack.chunk_policy,
        built_onnx_sha256=plan.source_sha256,
        fp32_nodes=["/a/Softmax"],
        flags=["STRONGLY_TYPED"],
        workspace_bytes=1 << 30,
        build_seconds=1.5,
        tolerances=plan_tolerances(plan.spec, precision),
        validation=None,
        tool_version="test",
    )
    commit_plan(pack_dir, plan, engine, meta)
    return plan
