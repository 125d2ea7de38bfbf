"""Registry of graph exporters: graph name -> exporter class (a plain dict, in export order)."""

from __future__ import annotations

from exporters.graphs.base import GraphExporter
from exporters.graphs.estimator import EstimatorExporter
from exporters.graphs.flow_encoder import FlowEncoderExporter
from exporters.graphs.hift import HiftExporter
from exporters.graphs.llm import LLMExporter

REGISTRY: dict[str, type[GraphExporter]] = {
    FlowEncoderExporter.name: FlowEncoderExporter,
    EstimatorExporter.name: EstimatorExporter,
    HiftExporter.name: HiftExporter,
    LLMExporter.name: LLMExporter,
}


def resolve(names: list[str] | None) -> list[GraphExporter]:
    from specs.errors import ToolError

    if not names:
        return [cls() for cls in REGISTRY.values()]
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ToolError("--graphs", f"unknown graph(s) {', '.join(unknown)}", f"choose from {', '.join(REGISTRY)}")
    return [REGISTRY[n]() for n in names]
