"""Registry of graph exporters: graph name -> exporter class (a plain dict, in export order)."""

from __future__ import annotations

from exporters.graphs.base import GraphExporter
from exporters.graphs.estimator import EstimatorExporter
from exporters.graphs.flow_encoder import FlowEncoderExporter
from exporters.graphs.flow_v1 import EstimatorV1Exporter, FlowEncoderV1Exporter
from exporters.graphs.flow_v3 import EstimatorV3Exporter, FlowPrepV3Exporter
from exporters.graphs.hift import HiftExporter
from exporters.graphs.hift_v1 import HiftV1Exporter
from exporters.graphs.hift_v3 import HiftV3Exporter, HiftV3FinalExporter
from exporters.graphs.llm import LLMExporter
from exporters.graphs.llm_v1 import LLMV1Exporter, TextEncoderV1Exporter
from exporters.graphs.llm_v3 import LLMV3Exporter

REGISTRY: dict[str, type[GraphExporter]] = {  # CosyVoice2
    FlowEncoderExporter.name: FlowEncoderExporter,
    EstimatorExporter.name: EstimatorExporter,
    HiftExporter.name: HiftExporter,
    LLMExporter.name: LLMExporter,
}
REGISTRY_V3: dict[str, type[GraphExporter]] = {  # Fun-CosyVoice3
    FlowPrepV3Exporter.name: FlowPrepV3Exporter,
    EstimatorV3Exporter.name: EstimatorV3Exporter,
    HiftV3Exporter.name: HiftV3Exporter,
    HiftV3FinalExporter.name: HiftV3FinalExporter,
    LLMV3Exporter.name: LLMV3Exporter,
}
REGISTRY_V1: dict[str, type[GraphExporter]] = {  # CosyVoice 1 (CosyVoice-300M / -SFT / -Instruct)
    FlowEncoderV1Exporter.name: FlowEncoderV1Exporter,
    EstimatorV1Exporter.name: EstimatorV1Exporter,
    HiftV1Exporter.name: HiftV1Exporter,
    TextEncoderV1Exporter.name: TextEncoderV1Exporter,
    LLMV1Exporter.name: LLMV1Exporter,
}
REGISTRIES: dict[str, dict[str, type[GraphExporter]]] = {
    "cosyvoice1": REGISTRY_V1,
    "cosyvoice2": REGISTRY,
    "cosyvoice3": REGISTRY_V3,
}


def exportable_families() -> list[str]:
    return [family for family, registry in REGISTRIES.items() if registry]


def resolve(names: list[str] | None, family: str = "cosyvoice2") -> list[GraphExporter]:
    from specs.errors import ToolError

    registry = REGISTRIES.get(family) or {}
    if not registry:
        raise ToolError(
            family,
            "bundles cannot be exported by this version yet (no graph exporters)",
            f"exportable: {', '.join(exportable_families())}",
        )
    if not names:
        return [cls() for cls in registry.values()]
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise ToolError("--graphs", f"unknown graph(s) {', '.join(unknown)}", f"choose from {', '.join(registry)}")
    return [registry[n]() for n in names]
