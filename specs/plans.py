"""TensorRT plan records of the pack contract: plan names and the command that rebuilds a plan.

Plan name `GRAPH.PRECISION.CHUNK` (e.g. `hift.fp16.stream`), files `trt/NAME.plan` + `trt/NAME.json` in the
pack, manifest key NAME under `plans`; CHUNK is a chunk mode, or `any` for graphs whose calls do not depend
on it. Metadata: specs/schema/plan_meta.schema.json.
"""

from __future__ import annotations

from specs.chunk_policy import ANY_CHUNK

PLAN_PRECISIONS = ("fp16", "fp32")


def plan_name(graph: str, precision: str, chunk: str) -> str:
    return f"{graph}.{precision}.{chunk}"


def rebuild_command(pack_root, graph: str, precision: str, chunk: str) -> str:
    chunk_opt = "" if chunk == ANY_CHUNK else f" --chunk {chunk}"
    return f"tts-build-trt --pack {pack_root} --graphs {graph} --precision {precision}{chunk_opt}"
