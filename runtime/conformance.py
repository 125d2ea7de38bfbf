"""Run a graph's test vectors on ONNX Runtime and judge them with the one comparator.

Used by `tts-validate`, by the exporters' self-check after every export, and by the tests.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np

from specs.compare import Comparison, compare
from specs.io_spec import GraphSpec, Tolerance
from runtime.ort_session import GraphSession

Vectors = Mapping[str, tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]]


def check_vectors(session: GraphSession, vectors: Vectors, label: str | None = None,
                  tolerances: Mapping[str, Tolerance] | None = None) -> list[Comparison]:
    """Every case: run its inputs, compare each expected output under the spec's tolerance."""
    spec = session.spec
    tol = dict(spec.tolerances)
    tol.update(tolerances or {})
    label = label or spec.graph
    results = []
    for case, (ins, outs) in vectors.items():
        got = session.run(ins)
        for name, expected in outs.items():
            if name not in got:
                c = Comparison(label=f"{label}/{case}/{name}", passed=False, check="elementwise", atol=0, rtol=0,
                               problem=f"graph has no output {name!r}")
            else:
                c = compare(got[name], expected, tol[name], f"{label}/{case}/{name}")
            results.append(c)
    return results


def check_onnx_file(onnx_path: str | Path, spec: GraphSpec, vectors: Vectors, device: str = "cpu",
                    label: str | None = None) -> list[Comparison]:
    return check_vectors(GraphSession(onnx_path, spec, device=device), vectors, label=label)
