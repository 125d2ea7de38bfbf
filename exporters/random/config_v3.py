"""Sizes and yaml of random-init Fun-CosyVoice3 bundles: `full` = the shipped Fun-CosyVoice3-0.5B-2512
architecture (a test proves our yaml builds the same modules as the shipped `cosyvoice3.yaml`), `tiny` = the
same architecture shrunk as in the shared notes (v1-v3-export.md §4): every length rule of the real model
kept (speech vocab 6561 + 200, token_mel_ratio 2, chunk 25, lookahead 3, conv_pre_look_right 4, ups [8, 5, 3],
9 harmonics), widths and depths small. `medium` widens HiFT and the F0 predictor for width-dependent sweeps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class V3Sizes:
    """Every width and depth of a CosyVoice3 bundle that its yaml and Qwen config.json set."""

    llm_hidden: int
    qwen_layers: int
    qwen_heads: int
    qwen_kv_heads: int
    qwen_intermediate: int
    lookahead_channels: int
    dit_dim: int
    dit_depth: int
    dit_heads: int  # >= 2: upstream applies rotary to head 0 only
    dit_head_dim: int
    hift_base: int  # divisible by 8
    f0_channels: int
    qwen_vocab: int = 151936


V3_ARCH = {
    "full": V3Sizes(
        llm_hidden=896,
        qwen_layers=24,
        qwen_heads=14,
        qwen_kv_heads=2,
        qwen_intermediate=4864,
        lookahead_channels=1024,
        dit_dim=1024,
        dit_depth=22,
        dit_heads=16,
        dit_head_dim=64,
        hift_base=512,
        f0_channels=512,
    ),
    "tiny": V3Sizes(
        llm_hidden=64,
        qwen_layers=2,
        qwen_heads=4,
        qwen_kv_heads=2,
        qwen_intermediate=128,
        lookahead_channels=64,
        dit_dim=64,  # % 16 == 0: the conv position embedding has 16 groups
        dit_depth=2,
        dit_heads=4,
        dit_head_dim=16,
        hift_base=32,
        f0_channels=32,
    ),
    "medium": V3Sizes(
        llm_hidden=128,
        qwen_layers=2,
        qwen_heads=4,
        qwen_kv_heads=2,
        qwen_intermediate=256,
        lookahead_channels=128,
        dit_dim=128,
        dit_depth=2,
        dit_heads=4,
        dit_head_dim=32,
        hift_base=128,
        f0_channels=256,
    ),
}

# The inference part of the shipped cosyvoice3.yaml (same keys, classes and order), sizes from V3Sizes. The
# shipped file's seeds come first: building flow + hift after them reproduces upstream's fixed buffers
# (rand_noise, sine_waves), which depend only on construction order, not on weights.
_V3_YAML = """\
# CosyVoice3 model config written by `tts-export --random-init {size} --family v3` (seeded random weights).
# Same keys and classes as the cosyvoice3.yaml shipped with Fun-CosyVoice3-0.5B-2512; sizes: {size}.
sample_rate: 24000
llm_input_size: {a.llm_hidden}
llm_output_size: {a.llm_hidden}
spk_embed_dim: 192
qwen_pretrain_path: ''
token_frame_rate: 25
token_mel_ratio: 2
chunk_size: 25
num_decoding_left_chunks: -1

llm: !new:cosyvoice.llm.llm.CosyVoice3LM
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

flow: !new:cosyvoice.flow.flow.CausalMaskedDiffWithDiT
    input_size: 80
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 6561
    input_frame_rate: !ref <token_frame_rate>
    only_mask_loss: True
    token_mel_ratio: !ref <token_mel_ratio>
    pre_lookahead_len: 3
    pre_lookahead_layer: !new:cosyvoice.transformer.upsample_encoder.PreLookaheadLayer
        in_channels: 80
        channels: {a.lookahead_channels}
        pre_lookahead_len: 3
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
        estimator: !new:cosyvoice.flow.DiT.dit.DiT
            dim: {a.dit_dim}
            depth: {a.dit_depth}
            heads: {a.dit_heads}
            dim_head: {a.dit_head_dim}
            ff_mult: 2
            mel_dim: 80
            mu_dim: 80
            spk_dim: 80
            out_channels: 80
            static_chunk_size: !ref <chunk_size> * <token_mel_ratio>
            num_decoding_left_chunks: !ref <num_decoding_left_chunks>

hift: !new:cosyvoice.hifigan.generator.CausalHiFTGenerator
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
    conv_pre_look_right: 4
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.CausalConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {a.f0_channels}

get_tokenizer: !name:cosyvoice.tokenizer.tokenizer.get_qwen_tokenizer
    token_path: !ref <qwen_pretrain_path>
    skip_special_tokens: True
    version: cosyvoice3
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1920
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 480
    win_size: 1920
    fmin: 0
    fmax: null
    center: False
"""


def render_v3_yaml(size: str) -> str:
    return _V3_YAML.format(a=V3_ARCH[size], size=size)
