"""What every graph exporter provides (one module per graph under exporters/graphs/).

A graph exporter is a small declarative object, in the spirit of optimum's OnnxConfig. Everything known
about its graph is declared here and written into the graph's I/O spec, which is all that trt/, the
runtime and the tools read:
- `spec(model)`: names, dims (each with its role and declared range), cache pairs, tolerances with
  reasons, test cases, facts for the runtime;
- `profiles(spec, policy)`: TensorRT optimisation profiles per chunk mode, from the pack's chunk policy;
- `variants(spec)`: the reduced precisions it supports (specs/precision.py): fp16 (nodes kept fp32,
  tolerances, whether ONNX Runtime and/or TensorRT get it), weight-only int8, ...;
- `wrapper(model)`: a thin `nn.Module` around the upstream module whose `forward` takes the spec's inputs
  in order and returns its outputs in order (export-only rewrites live in `patches()`);
- `cases(model, seed)`: seeded inputs for each test case with the expected outputs computed by the
  **upstream PyTorch code path** (the parity oracle), not by the wrapper;
- `trace_case`: which case's inputs are used to trace the export.
First chunk vs steady state are test cases of one graph, never modes of the exporter.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np

from specs.chunk_policy import ChunkPolicy
from specs.errors import ToolError
from specs.io_spec import GraphSpec, ProfileSpec
from specs.precision import PrecisionPolicy

Case = tuple[dict[str, np.ndarray], dict[str, np.ndarray]]

# What TensorRT tunes kernels for (profile `opt` shapes only: min/max come from the schedule and the graph's
# declared ranges, so a wrong guess here costs speed, never correctness).
TYPICAL_PROMPT_SECONDS = 3.0  # zero-shot prompt length
TYPICAL_UTTERANCE_SECONDS = 10.0  # generated speech per text segment
TYPICAL_TEXT_TOKENS = 50  # prompt text + target text of such a segment (BPE ids)
# Ops every float16 policy keeps in fp32: normalisation statistics and softmax overflow or lose mass in fp16.
NORM_SOFTMAX = (
    "LayerNormalization",
    "GroupNormalization",
    "InstanceNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
)


def typical_prompt_tokens(p: ChunkPolicy) -> int:
    return p.tokens(TYPICAL_PROMPT_SECONDS)


def typical_utterance_tokens(p: ChunkPolicy) -> int:
    return p.tokens(TYPICAL_UTTERANCE_SECONDS)


class GraphExporter:
    name: str = ""
    opset: int = 18
    trace_case: str = ""
    # ONNX data larger than this goes to an external data file (protobuf's 2 GB limit).
    external_data_threshold: int = 1_800_000_000

    def spec(self, model) -> GraphSpec:
        raise NotImplementedError

    def profiles(self, spec: GraphSpec, policy: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        raise NotImplementedError

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
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

    def graph_spec(self, model, policy: ChunkPolicy) -> GraphSpec:
        """The complete spec this exporter writes: I/O, profiles and precision policies, checked."""
        spec = self.spec(model)
        spec.profiles = self.profiles(spec, policy)
        spec.precisions = self.variants(spec)
        check_declarations(spec)
        return spec


def check_declarations(spec: GraphSpec) -> None:
    """What every registered graph must declare, beyond what the schema requires: a role and range on every
    dynamic dim, TensorRT profiles for at least one chunk mode, and an fp16 policy with a tolerance (and a
    reason) for every output."""
    where = f"{spec.graph} exporter"
    spec.check_consistency(where)
    used = {d for t in spec.inputs + spec.outputs for d in t.dim_names()}
    unused = sorted(set(spec.dims) - used)
    if unused:
        raise ToolError(where, f"declares dims no tensor uses: {unused}")
    if not spec.profiles:
        raise ToolError(where, "declares no TensorRT profiles", "profiles(spec, policy) per chunk mode")
    if "fp16" not in spec.precisions:
        raise ToolError(where, "declares no fp16 precision policy", "variants(spec): fp32_keep and tolerances")
    for policy in spec.precisions.values():
        for out, tol in policy.tolerances.items():
            if len(tol.reason) < 20:
                raise ToolError(where, f"{policy.precision} tolerance of {out!r} gives no reason")
