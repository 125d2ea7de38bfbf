"""A small synthetic I/O spec for the specs and pack tests."""

from __future__ import annotations

from specs.io_spec import CachePair, Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance


def make_spec(**over) -> GraphSpec:
    kw = dict(
        graph="toy",
        description="a toy graph",
        inputs=[
            TensorSpec("x", "float32", [1, 4, "frames"], "input"),
            TensorSpec("cache", "float32", [1, "cache_len"], "state"),
        ],
        outputs=[
            TensorSpec("y", "float32", [1, "samples"], "output"),
            TensorSpec("cache_out", "float32", [1, "cache_len"], "next state"),
        ],
        dims={
            "frames": Dim(1, 10, 100, "frames", role="frames"),
            "cache_len": Dim(0, 8, 8, "cache", role="cache"),
            "samples": Dim(4, 40, 400, "samples", role="samples", derived_from={"dim": "frames", "scale": 4}),
        },
        tolerances={
            "y": Tolerance(1e-5, 0, "fp32 reassociation only"),
            "cache_out": Tolerance(0, 0, "copied values, exact", check="exact"),
        },
        cases=[TestCase("first_chunk", "empty cache")],
        caches=[CachePair("cache", "cache_out", "carried")],
        profiles={"stream": [ProfileSpec("all_calls", "every call", {"frames": DimRange(1, 10, 100, "toy")})]},
    )
    kw.update(over)
    return GraphSpec(**kw)
