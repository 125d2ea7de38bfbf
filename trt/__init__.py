"""TensorRT plans for a pack: profiles from the I/O specs + chunk policy, Polygraphy builds, plan loading.

Pure-Python parts (policy, graph_rules, profiles, precision rules, plan_store, dry run) import numpy and
specs/ only. TensorRT, Polygraphy, onnx and ONNX Runtime are imported lazily inside the functions that
need them, so `tts-build-trt --help` and `--dry-run` work on any host. Never imports torch, the upstream
CosyVoice package or `exporters/`.
"""
