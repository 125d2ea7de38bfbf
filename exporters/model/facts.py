"""Model facts read from the built upstream modules (that is, from the yaml and the state dicts): the sizes the
runtime and tools need (manifest `model.config`) and the streaming chunk policy (manifest `audio.chunk_policy`).

Below both exporters/graphs/ and exporters/pipeline/: a graph's spec and the pack's manifest read the same
numbers from here, so they cannot disagree.
"""

from __future__ import annotations

from specs.chunk_policy import ChunkPolicy, Crossfade


def model_config(model) -> dict:
    """Sizes the runtime and trt/ need, read from the built modules (that is, from the yaml + state dicts)."""
    llm, flow, hift = model.llm, model.flow, model.hift
    flow_cfg = {
        "vocab_size": int(flow.vocab_size),
        "mel_bins": int(flow.output_size),
        "spk_embed_dim": int(flow.spk_embed_affine_layer.in_features),
    }
    if model.family == "cosyvoice1":  # MaskedDiffWithXvec: interpolated lengths, non-causal U-Net
        flow_cfg["input_frame_rate"] = int(flow.input_frame_rate)
    else:
        flow_cfg["token_mel_ratio"] = int(flow.token_mel_ratio)
        flow_cfg["pre_lookahead_len"] = int(flow.pre_lookahead_len)
        flow_cfg["estimator_static_chunk_size"] = int(flow.decoder.estimator.static_chunk_size)
    if hasattr(flow, "encoder"):  # conformer encoder (CosyVoice3 has only the pre-lookahead layer)
        flow_cfg["encoder_output_size"] = int(flow.encoder.output_size())
        flow_cfg["encoder_static_chunk_size"] = int(flow.encoder.static_chunk_size)
    cfg: dict = {
        "sample_rate": model.sample_rate,
        "flow": flow_cfg,
        "hift": {
            # CosyVoice3's causal upsampling layers are Upsample + conv (stride 1): the rate is the Upsample's
            "upsample_rates": [
                int(getattr(getattr(m, "upsample", None), "scale_factor", 0) or m.stride[0]) for m in hift.ups
            ],  # fmt: skip
            "istft_n_fft": int(hift.istft_params["n_fft"]),
            "istft_hop": int(hift.istft_params["hop_len"]),
            "samples_per_mel_frame": int(hift.f0_upsamp.scale_factor),
            "harmonics": int(hift.nb_harmonics) + 1,
            "audio_limit": float(hift.audio_limit),
        },
        "feat_extractor": model.feat_extractor,
    }
    if llm is not None and model.family == "cosyvoice1":  # TransformerLM: conformer text encoder + transformer
        att = llm.llm.encoders[0].self_attn
        cfg["llm"] = {
            "hidden_size": int(llm.llm_input_size),
            "num_layers": len(llm.llm.encoders),
            "num_heads": int(att.h),
            "head_dim": int(att.d_k),
            "text_vocab_size": int(llm.text_embedding.num_embeddings),
            "text_encoder_layers": len(llm.text_encoder.encoders),
            "speech_token_size": int(llm.speech_token_size),
            "sampling": model.sampling,
        }
    elif llm is not None:
        q = llm.llm.model.config
        cfg["llm"] = {
            "hidden_size": int(q.hidden_size),
            "num_layers": int(q.num_hidden_layers),
            "num_heads": int(q.num_attention_heads),
            "num_kv_heads": int(q.num_key_value_heads),
            "head_dim": int(q.hidden_size // q.num_attention_heads),
            "text_vocab_size": int(q.vocab_size),
            "rope_theta": float(q.rope_theta),
            "rms_norm_eps": float(q.rms_norm_eps),
            "speech_token_size": int(llm.speech_token_size),
            "mix_ratio": list(llm.mix_ratio),
            "sampling": model.sampling,
        }
    return cfg


def chunk_policy(model) -> ChunkPolicy:
    """The streaming schedule of the bundle's upstream model class (CosyVoiceModel / CosyVoice2Model /
    CosyVoice3Model)."""
    from cosyvoice.cli.model import CosyVoice2Model, CosyVoice3Model

    if model.family == "cosyvoice1":
        return window_chunk_policy(model)
    if model.family == "cosyvoice3":
        # v2's hop schedule (25+pad, 50, 100, ...; lookahead 3), but the causal HiFT re-runs over all mel so far
        # and only new samples are emitted: no mel/source cache, no cross-fade
        up = CosyVoice3Model(model.llm, model.flow, model.hift)
        vocoder = {
            "mel_cache_len": 0,
            "source_cache_len": 0,
            "crossfade": Crossfade("hamming", 0),
            "vocoder": "recompute",
        }
    else:
        up = CosyVoice2Model(model.llm, model.flow, model.hift)
        vocoder = {
            "mel_cache_len": int(up.mel_cache_len),
            "source_cache_len": int(up.source_cache_len),
            "crossfade": Crossfade("hamming", int(len(up.speech_window))),
        }
    policy = ChunkPolicy(
        token_hop_len=int(up.token_hop_len),
        token_max_hop_len=int(up.token_max_hop_len),
        stream_scale_factor=int(up.stream_scale_factor),
        pre_lookahead_len=int(model.flow.pre_lookahead_len),
        token_mel_ratio=int(model.flow.token_mel_ratio),
        samples_per_mel_frame=int(model.hift.f0_upsamp.scale_factor),
        output_chunk_samples=int(model.sample_rate // 25),  # tts-run's fixed 40 ms chunks (the last may be shorter)
        # The hop restarts per request; upstream keeps the grown hop across requests (its PR #1849).
        hop_growth="per_request",
        sample_rate=int(model.sample_rate),
        **vocoder,
    )
    policy.check(f"the chunk policy of upstream {type(up).__name__} for this bundle")
    return policy


# What upstream hard-codes in ConditionalCFM.forward (cosyvoice/flow/flow_matching.py): the noise/mu frames after
# the prompt that one CosyVoice 1 flow call hands to the next. Not tied to the overlap (the 25 Hz model overlaps 68
# frames but still caches 34: notes P3).
V1_FLOW_CACHE_FRAMES = 34


def window_chunk_policy(model) -> ChunkPolicy:
    """CosyVoice 1's stream (upstream CosyVoiceModel): windows of hop + overlap tokens, flow cache, mel and speech
    cross-fades; every constant read from an upstream CosyVoiceModel over the bundle's modules."""
    from cosyvoice.cli.model import CosyVoiceModel

    up = CosyVoiceModel(model.llm, model.flow, model.hift)
    rate = int(model.flow.input_frame_rate)
    policy = ChunkPolicy(
        token_hop_len=int(up.token_min_hop_len),
        token_max_hop_len=int(up.token_max_hop_len),
        stream_scale_factor=int(up.stream_scale_factor),
        pre_lookahead_len=0,
        token_mel_ratio=0,  # 22050 / 256 / 50 = 1.72 frames per token: lengths follow token_rate
        mel_cache_len=int(up.mel_cache_len),
        source_cache_len=int(up.source_cache_len),
        samples_per_mel_frame=int(model.hift.f0_upsamp.scale_factor),
        output_chunk_samples=int(model.sample_rate // 25),  # 882 samples = 40 ms at 22 050 Hz
        crossfade=Crossfade("hamming", int(len(up.speech_window))),
        hop_growth="per_request",
        stream="window",
        token_rate=rate,
        token_overlap_len=int(up.token_overlap_len),
        mel_overlap_len=int(up.mel_overlap_len),
        flow_cache_frames=V1_FLOW_CACHE_FRAMES,
        sample_rate=int(model.sample_rate),
    )
    policy.check(f"the chunk policy of upstream {type(up).__name__} for this bundle")
    return policy
