"""A TensorRT plan as a Runner, with a per-call ONNX Runtime fallback, so every stage runs on plans unchanged.

Plans are only loaded, never built (tts-build-trt builds them); `backends.trt_plan.open_plan` refuses a plan made
for another GPU, TensorRT version or source graph. A call that no optimisation profile of the plan takes
(e.g. a zero-length cache when the plan was built with `--zero-length ort`) runs on the ONNX Runtime
session instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from backends.runner import Runner


class FallbackRunner:
    """`runner` (a PlanRunner) for every call one of its profiles takes, `fallback()` (made on first need) else."""

    def __init__(self, runner, fallback: Callable[[], Runner]):
        self.runner = runner.__enter__()  # lives as long as the process' engine
        self.spec = runner.spec
        self._fallback_factory = fallback
        self._fallback: Runner | None = None
        self.calls = {"trt": 0, "ort": 0}

    def run(
        self, feed: Mapping[str, np.ndarray], outputs: Sequence[str] | None = None, check: bool = True
    ) -> dict[str, np.ndarray]:
        if self.runner.profile_for(feed) is None:
            if self._fallback is None:
                self._fallback = self._fallback_factory()
            self.calls["ort"] += 1
            return self._fallback.run(feed, outputs, check)
        self.calls["trt"] += 1
        out = self.runner.infer(feed)
        return {k: out[k] for k in (outputs or self.spec.output_names)}

    def binding(self):
        return None  # plans run through `run`; binding is an ONNX Runtime hook
