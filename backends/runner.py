"""The protocol every backend implements, so stages run on ONNX Runtime, TensorRT or anything later unchanged.

`run(feed)` takes and returns numpy arrays named as in the graph's I/O spec. `binding()` is the I/O-binding
hook: a backend that can read inputs from and write outputs into caller-owned buffers returns a `Binding`
(bind contiguous numpy arrays, then `run()`), so a hot loop allocates nothing per call; others return None
and the caller uses `run`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

from specs.io_spec import GraphSpec


class Binding(Protocol):
    def bind_input(self, name: str, array: np.ndarray) -> None: ...

    def bind_output(self, name: str, array: np.ndarray) -> None: ...

    def run(self) -> None: ...


class Runner(Protocol):
    spec: GraphSpec

    def run(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, check: bool = True
    ) -> dict[str, np.ndarray]: ...

    def binding(self) -> Binding | None: ...
