"""TensorRT plans for a pack: profiles from the graphs' I/O specs, Polygraphy builds, validation, dry run.

trt/ reads only specs: every graph's profiles, chunk modes and fp16 policy are declared by its exporter in
its I/O spec, so adding a graph never edits this package. Loading and running plans is a backend
(backends/trt_plan.py), shared with the runtime. Pure-Python parts (profiles, plans, plan_store, dry run)
import numpy and specs/ only; TensorRT, Polygraphy, onnx and ONNX Runtime are imported inside the functions
that need them, so `tts-build-trt --help` and `--dry-run` work on any host. Imports specs and backends only.
"""
