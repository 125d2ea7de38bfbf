"""Thin runtime over an artifact pack: ONNX Runtime (CPU/CUDA) or TensorRT plans, numpy, a tokenizer.

Never imports torch, the upstream CosyVoice package or `exporters/`.
"""
