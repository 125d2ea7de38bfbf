"""Step 5 of a graph's export: a lone .onnx explains itself (graph name, precision, facts, the whole I/O spec)."""

from __future__ import annotations

import json
from pathlib import Path

from specs.io_spec import GraphSpec


def add_metadata(path: Path, spec: GraphSpec, facts: dict) -> None:
    """A lone .onnx explains itself: graph name, precision, facts and the whole I/O spec."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    meta = {
        "cosyvoice_pack.graph": spec.graph,
        "cosyvoice_pack.precision": spec.precision,
        "cosyvoice_pack.format_version": str(spec.format_version),
        "cosyvoice_pack.io_spec": json.dumps(spec.to_dict(), separators=(",", ":")),
    }
    meta.update({f"cosyvoice_pack.fact.{k}": json.dumps(v) for k, v in facts.items()})
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save_model(proto, str(path))
