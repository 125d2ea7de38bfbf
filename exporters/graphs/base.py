"""What every graph exporter provides (one module per graph under exporters/graphs/).

A graph exporter is a small declarative object, in the spirit of optimum's OnnxConfig:
- `spec(model)`: the I/O spec (names, dims with ranges, cache pairs, tolerances with reasons, facts);
- `wrapper(model)`: a thin `nn.Module` around the upstream module whose `forward` takes the spec's inputs
  in order and returns its outputs in order (export-only rewrites live in `patches()`);
- `cases(model, seed)`: seeded inputs for each test case with the expected outputs computed by the
  **upstream PyTorch code path** (the parity oracle), not by the wrapper;
- `trace_case`: which case's inputs are used to trace the export.
First chunk vs steady state are test cases of one graph, never modes of the exporter.
"""
from __future__ import annotations

import contextlib
from typing import Mapping

import numpy as np

from specs.io_spec import GraphSpec

Case = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]


class GraphExporter:
    name: str = ""
    opset: int = 18
    trace_case: str = ""
    # ONNX data larger than this goes to an external data file (protobuf's 2 GB limit).
    external_data_threshold: int = 1_800_000_000

    def spec(self, model) -> GraphSpec:
        raise NotImplementedError

    def wrapper(self, model):
        raise NotImplementedError

    def cases(self, model, seed: int) -> dict[str, Case]:
        raise NotImplementedError

    def patches(self, model):
        """Context manager for export-only rewrites of upstream code (none by default)."""
        return contextlib.nullcontext()

    def data(self, model) -> Mapping[str, tuple[np.ndarray, str]]:
        """Tensors the runtime needs from this component that are not graphs: name -> (array, doc)."""
        return {}
