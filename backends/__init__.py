"""Backends: how a pack graph is run, below both runtime/ and trt/.

One `Runner` protocol (backends/runner.py) for every engine: an ONNX Runtime session (backends/ort.py), a
TensorRT plan (backends/trt_plan.py), a plan with a per-call ONNX Runtime fallback (backends/fallback.py).
The one fp16 converter (backends/fp16.py) serves the exporters' fp16 variants and trt/'s fp16 plans.
Imports flow one way: specs <- backends <- {runtime, trt} <- conformance / CLIs. Backends import specs only;
onnxruntime, TensorRT, Polygraphy and onnx are imported where they are used.
"""
