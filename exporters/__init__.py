"""Exporters: CosyVoice bundle (upstream PyTorch modules) -> artifact pack (ONNX graphs + specs + vectors).

    model/     the bundle on disk (layout, yaml, family, official hashes), the upstream modules it builds,
               and the model facts (sizes, chunk policy) read from them: below graphs/ and pipeline/
    graphs/    one exporter per graph: I/O spec, profiles, precision policies, wrapper, test cases
    rewrites/  export-only rewrites of upstream code (conv STFT/ISTFT, noise-driven sine source, Qwen2 step)
    oracles/   upstream's own code paths that compute every expected output (the parity oracle)
    pipeline/  what every graph goes through: ONNX export, checks, onnxsim, metadata, variants, the pack
    random/    random-init bundles in the official layout (tests and benchmarks: no real weights here)

Imports specs and backends only (never runtime/, trt/ or conformance/), and torch and the upstream
`cosyvoice` package lazily, so `tts-export --help` works without them.
"""
