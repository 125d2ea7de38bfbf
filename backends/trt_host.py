"""What this host offers for TensorRT: TensorRT and Polygraphy versions, and the GPU (CUDA driver API).

The GPU is read through the CUDA driver library (libcuda, installed with the NVIDIA driver) with ctypes,
so no torch or cuda-python is needed, and the device is the one TensorRT will use (CUDA device 0 after
CUDA_VISIBLE_DEVICES). Every probe returns a reason instead of raising when something is missing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass

from specs.errors import ToolError

INSTALL_HINT = (
    "on a host with an NVIDIA GPU and driver (CUDA 13: driver >= 580), pip install "
    "'tensorrt-cu13==11.4.0.106' 'polygraphy==0.53.6' 'onnx>=1.16' (see RUNBOOK.md, "
    '"TensorRT engines"); --dry-run needs neither'
)
_CC_MAJOR, _CC_MINOR = 75, 76  # CUdevice_attribute


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"
    driver_cuda_version: str = ""  # CUDA version the driver supports, e.g. "13.0"

    def to_dict(self) -> dict:
        return {"name": self.name, "compute_capability": self.compute_capability}


@dataclass(frozen=True)
class HostInfo:
    tensorrt_version: str | None
    polygraphy_version: str | None
    gpu: GpuInfo | None
    problems: tuple[str, ...] = ()

    @property
    def can_run(self) -> bool:
        return not self.problems


def probe_gpu(ordinal: int = 0) -> tuple[GpuInfo | None, str]:
    names = ["nvcuda.dll"] if sys.platform == "win32" else ["libcuda.so.1", ctypes.util.find_library("cuda")]
    lib = None
    for n in filter(None, names):
        try:
            lib = ctypes.CDLL(n)
            break
        except OSError:
            continue
    if lib is None:
        return None, "no NVIDIA driver (libcuda.so.1 cannot be loaded)"
    if lib.cuInit(0) != 0:
        return None, "the NVIDIA driver found no usable GPU (cuInit failed)"
    count = ctypes.c_int(0)
    if lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value <= ordinal:
        return None, f"no CUDA device {ordinal} (CUDA_VISIBLE_DEVICES?)"
    dev = ctypes.c_int(0)
    lib.cuDeviceGet(ctypes.byref(dev), ordinal)
    buf = ctypes.create_string_buffer(256)
    lib.cuDeviceGetName(buf, 256, dev)
    major, minor, drv = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
    lib.cuDeviceGetAttribute(ctypes.byref(major), _CC_MAJOR, dev)
    lib.cuDeviceGetAttribute(ctypes.byref(minor), _CC_MINOR, dev)
    lib.cuDriverGetVersion(ctypes.byref(drv))
    return GpuInfo(
        buf.value.decode(errors="replace"),
        f"{major.value}.{minor.value}",
        f"{drv.value // 1000}.{drv.value % 1000 // 10}",
    ), ""


def tensorrt_version() -> tuple[str | None, str]:
    try:
        import tensorrt as trt
    except Exception as e:  # ImportError, or OSError when its libraries are missing
        return None, f"TensorRT is not installed ({type(e).__name__}: {e})"
    return trt.__version__, ""


def polygraphy_version() -> tuple[str | None, str]:
    try:
        import polygraphy
    except ImportError as e:
        return None, f"Polygraphy is not installed ({e})"
    return polygraphy.__version__, ""


def probe_host() -> HostInfo:
    trt_v, p1 = tensorrt_version()
    poly_v, p2 = polygraphy_version()
    gpu, p3 = probe_gpu()
    return HostInfo(trt_v, poly_v, gpu, tuple(p for p in (p1, p2, p3) if p))


def require_host(what: str = "building TensorRT engines") -> HostInfo:
    host = probe_host()
    if not host.can_run:
        raise ToolError(
            "tts-build-trt", f"{what} is not possible on this host: {'; '.join(host.problems)}", INSTALL_HINT
        )
    return host
