"""Exporters: CosyVoice bundle (upstream PyTorch modules) -> artifact pack (ONNX graphs + specs + vectors).

One module per graph under `exporters/graphs/`; the shared export/check pipeline in `export_graph.py`.
Imports torch and the upstream `cosyvoice` package lazily, so `tts-export --help` works without them.
"""
