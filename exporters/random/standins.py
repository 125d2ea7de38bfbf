"""Stand-in frontend models for random-init bundles, with the real files' I/O signatures.

- `campplus.onnx`: input `input` (1, T, 80) float32 kaldi fbank → output (1, 192) float32 x-vector.
- `speech_tokenizer_v2.onnx`: inputs `feats` (1, 128, T) float32 whisper log-mel and `feats_length` (1,)
  int32 → output `indices` (1, ceil(T/4)) int32 speech tokens in [0, 6561): two stride-2 convs (25 Hz
  from 100 Hz frames, like the real tokenizer) and an FSQ head (8 dims × 3 levels = 6561 codes). CosyVoice 1's:
  (1, ceil(T/2)) tokens in [0, 4096) (50 Hz; 12 binary dims).
Both are small seeded random networks: they make the zero-shot frontend path runnable end to end.
"""

from __future__ import annotations

from pathlib import Path


def _export(module, args, path: Path, input_names, output_names, dynamic_axes) -> None:
    import torch

    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )


def write_campplus_standin(path: Path, seed: int) -> None:
    import torch

    class CampplusStandin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed + 101)
            self.conv = torch.nn.Conv1d(80, 64, 5, padding=2)
            self.proj = torch.nn.Linear(128, 192)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)

        def forward(self, feats):  # (1, T, 80)
            h = torch.relu(self.conv(feats.transpose(1, 2)))  # (1, 64, T)
            stats = torch.cat([h.mean(dim=2), h.std(dim=2)], dim=1)  # statistics pooling
            return self.proj(stats)

    _export(CampplusStandin(), (torch.randn(1, 120, 80),), path, ["input"], ["output"], {"input": {1: "frames"}})


def write_speech_tokenizer_standin(path: Path, seed: int, v1: bool = False) -> None:
    """v1: CosyVoice 1's tokenizer instead: 50 Hz (one stride-2 conv) and 4096 codes (12 binary dims)."""
    import torch

    dims, levels = (12, 2) if v1 else (8, 3)

    class SpeechTokenizerStandin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            g = torch.Generator().manual_seed(seed + 202)
            self.conv1 = torch.nn.Conv1d(128, 64, 3, stride=2, padding=1)
            self.conv2 = torch.nn.Conv1d(64, 64, 3, stride=1 if v1 else 2, padding=1)
            self.fsq = torch.nn.Linear(64, dims)
            with torch.no_grad():
                for p in self.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            self.register_buffer("powers", levels ** torch.arange(dims, dtype=torch.float32))

        def forward(self, feats, feats_length):
            # frames past feats_length are zeroed, so the input is used (and kept by the exporter)
            valid = torch.arange(feats.shape[2]).unsqueeze(0) < feats_length.unsqueeze(1)
            feats = feats * valid.unsqueeze(1).to(feats.dtype)
            h = torch.nn.functional.gelu(self.conv1(feats))
            h = torch.nn.functional.gelu(self.conv2(h))  # (1, 64, ceil(T/4))
            y = torch.tanh(self.fsq(h.transpose(1, 2)) * 2.0)
            z = (y > 0).to(y.dtype) if v1 else torch.round(y) + 1.0  # (1, T', dims) in {0, .., levels - 1}
            return (z * self.powers).sum(-1).to(torch.int32)

    _export(
        SpeechTokenizerStandin(),
        (torch.randn(1, 128, 300), torch.tensor([300], dtype=torch.int32)),
        path,
        ["feats", "feats_length"],
        ["indices"],
        {"feats": {2: "frames"}, "indices": {1: "tokens"}},
    )
