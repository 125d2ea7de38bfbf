"""Conformance: `tts-validate` checks a pack against its manifest, its specs, its own test vectors and the
committed golden vectors, on ONNX Runtime, and its TensorRT plans where the host can run them.

The top layer with the CLIs: imports specs, backends, runtime and trt; nothing imports it.
"""
