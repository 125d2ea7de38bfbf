"""The pack contract: I/O specs, manifest, JSON Schemas, the comparator and the user-facing error type.

Imports numpy and the standard library only (plus jsonschema), so that exporters/, trt/ and runtime/ can
all depend on it. Nothing here knows torch, ONNX Runtime or TensorRT.
"""

from specs.errors import ToolError

# 2: dims carry roles, specs carry TensorRT profiles and precision policies, the chunk policy is typed.
FORMAT_VERSION = 2

__all__ = ["ToolError", "FORMAT_VERSION"]
