"""Step 1 of a graph's export: `torch.onnx.export` of the exporter's wrapper, saved as one graph file.

TorchScript path (the dynamo exporter cannot trace upstream's data-dependent control flow), opset from the
exporter, dynamic axes named after the spec's dims; graphs over the exporter's threshold are saved with one
external data file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from exporters.graphs.base import GraphExporter
from specs.io_spec import GraphSpec


def dynamic_axes(spec: GraphSpec) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {}
    for t in spec.inputs + spec.outputs:
        named = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if named:
            axes[t.name] = named
    return axes


def stamp_output_shapes(proto, spec: GraphSpec) -> None:
    """The TorchScript exporter names output dims after the op that made them (e.g. 'Mulvelocity_dim_0')
    and may leave fixed dims symbolic; write the spec's dims instead. The test vectors still check the
    real output shapes on every case."""
    by_name = {t.name: t for t in spec.outputs}
    for vi in proto.graph.output:
        t = by_name.get(vi.name)
        if t is None or len(vi.type.tensor_type.shape.dim) != len(t.shape):
            continue
        for d, want in zip(vi.type.tensor_type.shape.dim, t.shape):
            if isinstance(want, int):
                d.Clear()
                d.dim_value = want
            else:
                d.Clear()
                d.dim_param = want


def torch_export(exporter: GraphExporter, model, spec: GraphSpec, example: dict, path: Path) -> list[str]:
    """Export to `path`; returns the external data file names written beside it (maybe none)."""
    import shutil

    import onnx
    import torch

    wrapper = exporter.wrapper(model).eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[n])) for n in spec.input_names)
    # The TorchScript exporter writes one file per tensor for > 2 GB models: export into a scratch
    # folder, then re-save as one graph file (+ one external data file when needed).
    scratch = path.parent / f".{path.stem}.export"
    scratch.mkdir()
    try:
        with torch.no_grad(), exporter.patches(model), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings about Python control flow we froze on purpose
            torch.onnx.export(
                wrapper,
                args,
                str(scratch / "model.onnx"),
                input_names=spec.input_names,
                output_names=spec.output_names,
                dynamic_axes=dynamic_axes(spec),
                opset_version=exporter.opset,
                do_constant_folding=True,
                dynamo=False,
            )
        proto = onnx.load(str(scratch / "model.onnx"), load_external_data=True)
        stamp_output_shapes(proto, spec)
        return save_onnx(proto, path, exporter.external_data_threshold)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def save_onnx(proto, path: Path, threshold: int) -> list[str]:
    import onnx

    try:
        small = proto.ByteSize() <= threshold
    except Exception:  # protobuf refuses to size messages over 2 GB
        small = False
    if small:
        onnx.save_model(proto, str(path))
        return []
    location = path.name + ".data"
    onnx.save_model(
        proto,
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=1024,
    )
    (path.parent / location).chmod(0o644)  # onnx writes it 0600; a pack is readable like its other files
    return [location]
