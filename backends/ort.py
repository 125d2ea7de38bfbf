"""ONNX Runtime backend: one long-lived session per graph, behind the Runner protocol (backends/runner.py).

`OrtRunner` checks every feed against the graph's I/O spec before running (names, dtypes, shapes, dim
ranges), like Polygraphy's runner, so a wrong input is a one-line error rather than an ORT trace. Its
`binding()` is ORT I/O binding over caller-owned numpy buffers (CPU provider).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from specs.compare import Comparison, check_vectors
from specs.errors import ToolError
from specs.io_spec import GraphSpec

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def session_options(threads: int | None = None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    n = threads if threads is not None else int(os.environ.get("TTS_ORT_THREADS", "0") or 0)
    if n > 0:
        so.intra_op_num_threads = n
    so.inter_op_num_threads = 1
    return so


def providers_for(device: str) -> list[str]:
    import onnxruntime as ort

    if device not in PROVIDERS:
        raise ToolError("--device", f"unknown device {device!r}", f"one of {', '.join(PROVIDERS)}")
    if device == "cuda" and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ToolError(
            "--device cuda",
            "ONNX Runtime has no CUDA execution provider here",
            "install onnxruntime-gpu on a host with a CUDA GPU, or use --device cpu",
        )
    return PROVIDERS[device]


class OrtRunner:
    """One long-lived ORT session for one graph, checked against its spec on every call."""

    def __init__(self, onnx_path: str | Path, spec: GraphSpec, device: str = "cpu", threads: int | None = None):
        import onnxruntime as ort

        self.spec = spec
        self.device = device
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise ToolError(self.path, "graph file is missing", "every graph listed in the manifest is in the pack")
        try:
            self.session = ort.InferenceSession(
                str(self.path), sess_options=session_options(threads), providers=providers_for(device)
            )
        except ToolError:
            raise
        except Exception as e:  # ORT raises its own Fail/InvalidGraph types
            raise ToolError(
                self.path,
                f"ONNX Runtime cannot load it ({str(e).splitlines()[0][:200]})",
                "a graph written by tts-export; re-export the pack if it was modified",
            ) from None
        got_in = [i.name for i in self.session.get_inputs()]
        got_out = [o.name for o in self.session.get_outputs()]
        if got_in != spec.input_names or got_out != spec.output_names:
            raise ToolError(
                self.path,
                f"graph I/O {got_in} -> {got_out} differs from its spec {spec.input_names} -> {spec.output_names}",
                "graph and NAME.io.json from one export",
            )

    def run(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, check: bool = True
    ) -> dict[str, np.ndarray]:
        if check:
            self.spec.check_feed(feed)
        names = list(outputs) if outputs else self.spec.output_names
        values = self.session.run(names, dict(feed))
        return dict(zip(names, values))

    def binding(self) -> OrtBinding | None:
        """I/O binding on caller-owned CPU buffers (None on other providers: use `run`)."""
        return OrtBinding(self.session) if self.device == "cpu" else None


class OrtBinding:
    """One call's bindings: every input and output a contiguous numpy array the caller owns (views of larger
    preallocated buffers are fine). ORT reads and writes them in place."""

    def __init__(self, session):
        self.session = session
        self.io = session.io_binding()

    def bind_input(self, name: str, array: np.ndarray) -> None:
        self.io.bind_input(name, "cpu", 0, array.dtype, list(array.shape), _address(array))

    def bind_output(self, name: str, array: np.ndarray) -> None:
        self.io.bind_output(name, "cpu", 0, array.dtype, list(array.shape), _address(array))

    def run(self) -> None:
        self.session.run_with_iobinding(self.io)


def _address(array: np.ndarray) -> int:
    if not array.flags.c_contiguous:
        raise ValueError("bound arrays must be C-contiguous")
    return array.ctypes.data


def check_onnx_file(
    onnx_path: str | Path, spec: GraphSpec, vectors, device: str = "cpu", label: str | None = None
) -> list[Comparison]:
    """A graph file's test vectors on ONNX Runtime, judged by the one comparator."""
    return check_vectors(OrtRunner(onnx_path, spec, device=device), vectors, label=label)
