"""Pieces shared by the flow graphs (CosyVoice2 encoder and estimator, CosyVoice3 prep and DiT estimator): facts
for the runtime and realistic inputs."""

from __future__ import annotations

import numpy as np


def cfm_facts(model) -> dict:
    """What the runtime needs to run the ODE exactly as upstream's CausalConditionalCFM does."""
    dec = model.flow.decoder
    return {
        "n_timesteps": 10,  # hard-coded in CausalMaskedDiffWithXvec.inference and CausalMaskedDiffWithDiT.inference
        "t_scheduler": str(dec.t_scheduler),
        "inference_cfg_rate": float(dec.inference_cfg_rate),
        "solver": "euler",
        "noise": "data:flow.rand_noise",
        "mel_bins": int(model.flow.output_size),
        "token_mel_ratio": int(model.flow.token_mel_ratio),
    }


def ode_time(step: int, n_timesteps: int = 10, scheduler: str = "cosine") -> float:
    """t fed to the estimator at `step` (0-based), accumulated in float32 as upstream's solve_euler does."""
    import torch

    t_span = torch.linspace(0, 1, n_timesteps + 1, dtype=torch.float32)
    if scheduler == "cosine":
        t_span = 1 - torch.cos(t_span * 0.5 * torch.pi)
    t, dt = t_span[0], t_span[1] - t_span[0]
    for k in range(1, step + 1):
        t = t + dt
        dt = t_span[k + 1] - t
    return float(t)


def flow_reference_inputs(model, seed: int, n_prompt: int, n_gen: int, step: int):
    """mu / spks / cond / x / t as the flow would feed the estimator at ODE `step`, for random tokens.

    Returns numpy arrays with batch 1: mu (1,80,F), spks (1,80), cond (1,80,F), x (1,80,F), t (float). Works for
    the CosyVoice2 flow (conformer encoder) and the CosyVoice3 flow (pre-lookahead layer only).
    """
    import torch
    import torch.nn.functional as F

    flow = model.flow
    g = torch.Generator().manual_seed(seed)
    n = n_prompt + n_gen
    tokens = torch.randint(0, flow.vocab_size, (1, n), generator=g)
    spk_in = int(flow.spk_embed_affine_layer.in_features)
    with torch.no_grad():
        spks = flow.spk_embed_affine_layer(F.normalize(torch.randn(1, spk_in, generator=g), dim=1))
        emb = flow.input_embedding(tokens)
        if hasattr(flow, "encoder"):  # CosyVoice2: conformer encoder + projection
            h, _ = flow.encoder(emb, torch.tensor([n], dtype=torch.int32))
            mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
        else:  # CosyVoice3: pre-lookahead layer as in a final call (zero lookahead), repeated to mel frames
            h = flow.pre_lookahead_layer(emb).repeat_interleave(flow.token_mel_ratio, dim=1)
            mu = h.transpose(1, 2).contiguous()
    frames = mu.shape[2]
    cond = torch.zeros(1, flow.output_size, frames)
    prompt_frames = flow.token_mel_ratio * n_prompt
    cond[:, :, :prompt_frames] = -5.0 + 2.0 * torch.randn(1, flow.output_size, prompt_frames, generator=g)
    t = ode_time(step, scheduler=str(flow.decoder.t_scheduler))
    z = flow.decoder.rand_noise[:, :, :frames]
    x = (1 - t) * z + t * mu  # a plausible state on the path from noise to data
    return (
        mu.numpy().astype(np.float32),
        spks.numpy().astype(np.float32),
        cond.numpy().astype(np.float32),
        x.numpy().astype(np.float32),
        t,
    )


class ChunkMaskFlag:
    """Holds the graph's `streaming` tensor while the wrapped estimator runs (export-time only)."""

    value = None


def traceable_chunk_mask(
    xs,
    masks,
    use_dynamic_chunk,
    use_dynamic_left_chunk,
    decoding_chunk_size,
    static_chunk_size,
    num_decoding_left_chunks,
    enable_full_context=True,
):
    """Traceable `add_optional_chunk_mask`: block-causal with chunk `static_chunk_size` when the graph's
    `streaming` input is true, full attention when false. mask[i, j] = j < (i // c + 1) * c."""
    import torch

    n = torch._shape_as_tensor(xs)[1]
    idx = torch.arange(xs.size(1), device=xs.device)
    flag = ChunkMaskFlag.value
    if flag is None or static_chunk_size <= 0:
        return masks
    chunk = torch.where(flag.reshape(()), torch.full_like(n, static_chunk_size), n)
    limit = (torch.div(idx, chunk, rounding_mode="floor") + 1) * chunk
    block = idx.unsqueeze(0) < limit.unsqueeze(1)  # (T, T)
    return masks & block.unsqueeze(0)
