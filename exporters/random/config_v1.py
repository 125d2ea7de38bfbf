"""Sizes and yaml of random-init CosyVoice 1 bundles (CosyVoice-300M / -SFT / -Instruct): `full` = the shipped
300M architecture (upstream's example yaml, ../shared/data/cosyvoice_300m.yaml: a test proves ours builds the
same modules), `tiny` = the same architecture shrunk as in the shared notes (v1-v3-export.md §4): vocab 51866 /
4096, mel 80, x-vector 192 -> 80, HiFT ups [8, 8] + istft 16/4 (256 samples per frame), 50 Hz tokens, 20-token
overlap all kept; widths and depths small."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class V1Sizes:
    """Every width and depth of a CosyVoice 1 bundle that its yaml sets."""

    text_encoder_input: int
    llm_hidden: int
    text_heads: int
    text_units: int
    text_blocks: int
    llm_heads: int
    llm_units: int
    llm_blocks: int
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
    input_frame_rate: int = 50  # 25: the CosyVoice-300M-25Hz variant
    text_token_size: int = 51866


V1_ARCH = {
    "full": V1Sizes(
        text_encoder_input=512,
        llm_hidden=1024,
        text_heads=16,
        text_units=4096,
        text_blocks=6,
        llm_heads=16,
        llm_units=4096,
        llm_blocks=14,
        flow_input_size=512,
        enc_output=512,
        enc_heads=8,
        enc_units=2048,
        enc_blocks=6,
        est_channels=(256, 256),
        est_head_dim=64,
        est_blocks=4,
        est_mid_blocks=12,
        est_heads=8,
        hift_base=512,
        f0_channels=512,
    ),
    "tiny": V1Sizes(
        text_encoder_input=32,
        llm_hidden=64,
        text_heads=4,
        text_units=128,
        text_blocks=1,
        llm_heads=4,
        llm_units=128,
        llm_blocks=2,
        flow_input_size=64,
        enc_output=64,
        enc_heads=2,
        enc_units=128,
        enc_blocks=1,
        est_channels=(32, 32),
        est_head_dim=16,
        est_blocks=1,
        est_mid_blocks=1,
        est_heads=2,
        hift_base=32,
        f0_channels=32,
    ),
    "medium": V1Sizes(
        text_encoder_input=64,
        llm_hidden=128,
        text_heads=4,
        text_units=256,
        text_blocks=1,
        llm_heads=4,
        llm_units=256,
        llm_blocks=2,
        flow_input_size=128,
        enc_output=128,
        enc_heads=2,
        enc_units=256,
        enc_blocks=1,
        est_channels=(64, 64),
        est_head_dim=32,
        est_blocks=1,
        est_mid_blocks=1,
        est_heads=2,
        hift_base=128,
        f0_channels=256,
    ),
}

# The inference part of upstream's CosyVoice-300M yaml (same keys, classes and order), sizes from V1Sizes.
_V1_YAML = """\
# CosyVoice 1 model config written by `tts-export --random-init {size} --family v1` (seeded random weights).
# Same keys and classes as the cosyvoice.yaml of CosyVoice-300M(-SFT/-Instruct); sizes: {size}.
sample_rate: 22050
text_encoder_input_size: {a.text_encoder_input}
llm_input_size: {a.llm_hidden}
llm_output_size: {a.llm_hidden}
spk_embed_dim: 192

llm: !new:cosyvoice.llm.llm.TransformerLM
    text_encoder_input_size: !ref <text_encoder_input_size>
    llm_input_size: !ref <llm_input_size>
    llm_output_size: !ref <llm_output_size>
    text_token_size: {a.text_token_size}
    speech_token_size: 4096
    length_normalized_loss: True
    lsm_weight: 0
    spk_embed_dim: !ref <spk_embed_dim>
    text_encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
        input_size: !ref <text_encoder_input_size>
        output_size: {a.llm_hidden}
        attention_heads: {a.text_heads}
        linear_units: {a.text_units}
        num_blocks: {a.text_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.0
        normalize_before: True
        input_layer: 'linear'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        use_cnn_module: False
        macaron_style: False
        use_dynamic_chunk: False
        use_dynamic_left_chunk: False
        static_chunk_size: 1
    llm: !new:cosyvoice.transformer.encoder.TransformerEncoder
        input_size: !ref <llm_input_size>
        output_size: !ref <llm_output_size>
        attention_heads: {a.llm_heads}
        linear_units: {a.llm_units}
        num_blocks: {a.llm_blocks}
        dropout_rate: 0.1
        positional_dropout_rate: 0.1
        attention_dropout_rate: 0.0
        input_layer: 'linear_legacy'
        pos_enc_layer_type: 'rel_pos_espnet'
        selfattention_layer_type: 'rel_selfattn'
        static_chunk_size: 1
    sampling: !name:cosyvoice.utils.common.ras_sampling
        top_p: 0.8
        top_k: 25
        win_size: 10
        tau_r: 0.1

flow: !new:cosyvoice.flow.flow.MaskedDiffWithXvec
    input_size: {a.flow_input_size}
    output_size: 80
    spk_embed_dim: !ref <spk_embed_dim>
    output_type: 'mel'
    vocab_size: 4096
    input_frame_rate: {a.input_frame_rate}
    only_mask_loss: True
    encoder: !new:cosyvoice.transformer.encoder.ConformerEncoder
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
    length_regulator: !new:cosyvoice.flow.length_regulator.InterpolateRegulator
        channels: 80
        sampling_ratios: [1, 1, 1, 1]
    decoder: !new:cosyvoice.flow.flow_matching.ConditionalCFM
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
        estimator: !new:cosyvoice.flow.decoder.ConditionalDecoder
            in_channels: 320
            out_channels: 80
            channels: {channels}
            dropout: 0.0
            attention_head_dim: {a.est_head_dim}
            n_blocks: {a.est_blocks}
            num_mid_blocks: {a.est_mid_blocks}
            num_heads: {a.est_heads}
            act_fn: 'gelu'

hift: !new:cosyvoice.hifigan.generator.HiFTGenerator
    in_channels: 80
    base_channels: {a.hift_base}
    nb_harmonics: 8
    sampling_rate: !ref <sample_rate>
    nsf_alpha: 0.1
    nsf_sigma: 0.003
    nsf_voiced_threshold: 10
    upsample_rates: [8, 8]
    upsample_kernel_sizes: [16, 16]
    istft_params:
        n_fft: 16
        hop_len: 4
    resblock_kernel_sizes: [3, 7, 11]
    resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5], [1, 3, 5]]
    source_resblock_kernel_sizes: [7, 11]
    source_resblock_dilation_sizes: [[1, 3, 5], [1, 3, 5]]
    lrelu_slope: 0.1
    audio_limit: 0.99
    f0_predictor: !new:cosyvoice.hifigan.f0_predictor.ConvRNNF0Predictor
        num_class: 1
        in_channels: 80
        cond_channels: {a.f0_channels}

get_tokenizer: !name:whisper.tokenizer.get_tokenizer
    multilingual: True
    num_languages: 100
    language: 'en'
    task: 'transcribe'
allowed_special: 'all'
feat_extractor: !name:matcha.utils.audio.mel_spectrogram
    n_fft: 1024
    num_mels: 80
    sampling_rate: !ref <sample_rate>
    hop_size: 256
    win_size: 1024
    fmin: 0
    fmax: 8000
    center: False
"""


def render_v1_yaml(size: str) -> str:
    a = V1_ARCH[size]
    return _V1_YAML.format(a=a, size=size, channels=list(a.est_channels))
