"""Thin runtime over an artifact pack: frontend, LLM / flow / vocoder stages, TtsSession, tts-run.

Runs graphs through backends/ (ONNX Runtime on CPU/CUDA, or TensorRT plans); reads every constant from the
pack (the typed chunk policy, the graphs' I/O specs). Imports specs and backends only: never torch, the
upstream CosyVoice package, exporters/ or trt/.
"""
