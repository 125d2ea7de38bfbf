"""CosyVoice 1 flow graphs (upstream `MaskedDiffWithXvec`): `flow.encoder` and `flow.decoder.estimator`.

Upstream's `MaskedDiffWithXvec.inference(token, prompt_token, prompt_feat, embedding, flow_cache)` embeds prompt +
generated tokens, runs a full-attention `ConformerEncoder`, projects to 80 mel bins, resizes the token sequence to
mel frames with `InterpolateRegulator.inference`, then runs `ConditionalCFM` (fresh `randn_like` noise, the flow
cache overwriting the first noise/mu frames, 10 CFG Euler steps over the non-causal U-Net `ConditionalDecoder`).

- `flow.encoder`: everything before the CFM, one graph for every call (offline, stream windows, final call).
  Upstream's regulator branches in Python (a generated part of more than 40 tokens has its first and last 20
  tokens resized on their own) and its lengths are Python numbers; here every length is shape arithmetic and
  the linear interpolation is a gather + lerp whose indices and weights are computed per output frame, with the
  branch selected per frame by `where` (`frame_sources`), so nothing is frozen by tracing.
- `flow.decoder.estimator`: the U-Net with upstream export_onnx.py's six inputs (no `streaming`: v1 has no chunk
  masks), output `velocity`. Noise is not in any graph: the runtime draws it per call (runtime/flow_v1.py).
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter, typical_prompt_tokens, typical_utterance_tokens
from exporters.graphs.estimator import MAX_FRAMES, EstimatorExporter, cfg_batch, cfg_velocity_io, upstream_velocity
from exporters.graphs.flow_common import traceable_chunk_mask
from exporters.graphs.flow_encoder import PROMPT_TOKENS
from exporters.model.facts import V1_FLOW_CACHE_FRAMES
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

# Hard-coded in MaskedDiffWithXvec.inference and InterpolateRegulator.inference (whatever the bundle's HiFT).
UPSTREAM_SAMPLE_RATE = 22050
UPSTREAM_HOP = 256
# InterpolateRegulator.inference: a generated part of more than SPLIT_ABOVE tokens has its first and last
# EDGE_TOKENS tokens resized on their own ("20 corresponds to token_overlap_len"), so window seams fall on frames.
EDGE_TOKENS = 20
SPLIT_ABOVE = 2 * EDGE_TOKENS


def mel_len(n_tokens: int, rate: int) -> int:
    """Upstream's rule, in Python float arithmetic: int(N / input_frame_rate * 22050 / 256)."""
    return int(n_tokens / rate * UPSTREAM_SAMPLE_RATE / UPSTREAM_HOP)


def mel_len_divisor(rate: int) -> int:
    """The graph computes mel_len(N) as N * 22050 // (rate * 256): int64, no float rounding on any backend."""
    return rate * UPSTREAM_HOP


def exact_token_limit(rate: int, limit: int) -> int:
    """The largest n <= limit such that the integer rule equals upstream's float rule for every N in [1, n]
    (the float form is 1 lower at some multiples of 256 from 8,960 tokens on at 50 Hz)."""
    div = mel_len_divisor(rate)
    for n in range(1, limit + 1):
        if n * UPSTREAM_SAMPLE_RATE // div != mel_len(n, rate):
            return n - 1
    return limit


def rel_pos_max_tokens(model) -> int:
    """Most prompt + generated tokens the encoder's rel-pos table (2 * max_len - 1 rows, frozen into the graph at
    module init) covers."""
    return (int(model.flow.encoder.embed.pos_enc.pe.size(1)) + 1) // 2


def token_limits(model) -> tuple[int, int]:
    """(max generated tokens, max prompt tokens) of the encoder graph: frames fit the estimator's range, the
    integer length rule is exact, and prompt + generated fit the rel-pos table."""
    rate = int(model.flow.input_frame_rate)
    n = 1
    while mel_len(n + 1, rate) <= MAX_FRAMES:
        n += 1
    n = exact_token_limit(rate, n)
    return n, min(n, rel_pos_max_tokens(model) - n)


def regulated_frames(n_tokens, rate: int):
    """mel_len2 of `n_tokens` generated tokens (int64 tensor arithmetic, exact in the graph's range)."""
    import torch

    return torch.div(n_tokens * UPSTREAM_SAMPLE_RATE, mel_len_divisor(rate), rounding_mode="floor")


def frame_sources(rate: int):
    """A module computing, per regulated frame, the two rows of h it interpolates and their weights.

    `InterpolateRegulator.inference` resizes the P prompt rows to mel_len1 frames and the N generated rows to
    mel_len2 frames, or, when N > 40, rows [0, 20), [20, N-20), [N-20, N) to 34, mel_len2 - 68 and 34 frames
    (50 Hz), each with `F.interpolate(mode='linear', align_corners=False)`. Per output frame k of a segment of
    `rows` rows and `frames` frames torch computes scale = rows / frames (float32), src = scale * (k + 0.5) - 0.5
    (one fused multiply-add in its AVX2 CPU kernel: a single rounding), clamped at 0, rows floor(src) and the next
    (clamped), weight src - floor(src). Here src's single rounding is exact without float64 (TensorRT has none):
    S = scale * 2^40 is an integer (scale >= 2^-12 for frames < 4096, 24-bit mantissa), the exact value is
    (S * (2k + 1) - 2^40) / 2^41 (int64, < 2^52), and the int64 -> float32 cast rounds it once. The branch is a
    per-frame `where`, never Python control flow. Its own module so an fp16 policy can keep its nodes fp32 by name.
    """
    import torch

    edge = mel_len(EDGE_TOKENS, rate)

    class FrameSources(torch.nn.Module):
        def forward(self, n_prompt, n, mel_len1, mel_len2):
            j = torch.arange(mel_len1 + mel_len2)
            jg = j - mel_len1  # index among the generated frames
            split = n > SPLIT_ABOVE
            head, tail = jg < edge, jg >= mel_len2 - edge
            ends = head | tail
            # the segment each generated frame lies in: its first row, rows, frames, and the frame's index in it
            g_first = torch.where(split, torch.where(head, 0, torch.where(tail, n - EDGE_TOKENS, EDGE_TOKENS)), 0)
            g_rows = torch.where(split, torch.where(ends, EDGE_TOKENS, n - 2 * EDGE_TOKENS), n)
            g_frames = torch.where(split, torch.where(ends, edge, mel_len2 - 2 * edge), mel_len2)
            g_k = torch.where(split, torch.where(head, jg, torch.where(tail, jg - (mel_len2 - edge), jg - edge)), jg)
            prompt = j < mel_len1
            first = torch.where(prompt, 0, n_prompt + g_first)
            rows = torch.where(prompt, n_prompt, g_rows)
            frames = torch.where(prompt, mel_len1, g_frames)
            k = torch.where(prompt, j, g_k)
            scale = rows.to(torch.float32) / frames.to(torch.float32)
            exact = (scale * 2.0**40).to(torch.int64) * (2 * k + 1) - 2**40
            src = torch.clamp(exact.to(torch.float32) * 2.0**-41, min=0.0)
            i0 = torch.minimum(torch.floor(src).to(torch.int64), rows - 1)
            w1 = torch.clamp(src - i0.to(torch.float32), 0.0, 1.0)
            i1 = i0 + (i0 < rows - 1).to(torch.int64)
            return first + i0, first + i1, (1.0 - w1)[None, :, None], w1[None, :, None]

    return FrameSources()


def _v1_inputs(model, rng, n_prompt: int, n_gen: int):
    """Random prompt tokens, generated tokens, prompt mel (mel_len(P) frames, as a prompt of P tokens' length
    has) and x-vector."""
    flow = model.flow
    rate = int(flow.input_frame_rate)
    prompt = rng.integers(0, flow.vocab_size, (1, n_prompt))
    gen = rng.integers(0, flow.vocab_size, (1, n_gen))
    feat = (-5.0 + 2.0 * rng.standard_normal((1, mel_len(n_prompt, rate), int(flow.output_size)))).astype(np.float32)
    emb = rng.standard_normal((1, int(flow.spk_embed_affine_layer.in_features))).astype(np.float32)
    return prompt, gen, feat, emb


class FlowEncoderV1Exporter(GraphExporter):
    name = "flow.encoder"
    opset = 18
    trace_case = "window_prompt"

    def spec(self, model) -> GraphSpec:
        flow = model.flow
        enc = flow.encoder
        if enc.static_chunk_size or enc.use_dynamic_chunk:
            raise ValueError("CosyVoice 1 flow encoder with chunk masks: this exporter assumes full attention")
        mel = int(flow.output_size)
        rate = int(flow.input_frame_rate)
        spk_in = int(flow.spk_embed_affine_layer.in_features)
        n_max, p_max = token_limits(model)
        edge = mel_len(EDGE_TOKENS, rate)
        window = 2 * rate + EDGE_TOKENS  # upstream CosyVoiceModel: token_min_hop_len = 2 * rate, + 20 overlap
        f32 = lambda n, s, d: TensorSpec(n, "float32", s, d)  # noqa: E731
        i64 = lambda n, s, d: TensorSpec(n, "int64", s, d)  # noqa: E731
        rule = f"mel_len2 = int(tokens / {rate} * 22050 / 256)"
        return GraphSpec(
            graph=self.name,
            description=(
                "CosyVoice 1 flow before the CFM: prompt + generated speech tokens -> mu (conformer encoder, "
                "projection to mel bins, InterpolateRegulator resizing to mel frames and its convs), spks "
                "(projected x-vector) and cond (prompt mel, zeros after). One call per upstream flow.inference "
                "call: offline the whole utterance, streaming one window of generated tokens (the flow cache "
                "and the noise are the runtime's). frames = prompt_frames + mel_len2, " + rule + "; if the "
                f"window has more than {SPLIT_ABOVE} tokens its first and last {EDGE_TOKENS} tokens are resized "
                f"to {edge} frames each, separately from the middle."
            ),
            inputs=[
                i64("prompt_token", [1, "prompt_tokens"], "prompt speech tokens (0 without a prompt)"),
                i64("token", [1, "tokens"], "generated speech tokens of this call; negative ids are clamped to 0"),
                f32("embedding", [1, spk_in], "speaker x-vector (campplus), not normalised"),
                f32(
                    "prompt_feat",
                    [1, "prompt_frames", mel],
                    f"prompt mel ({UPSTREAM_SAMPLE_RATE} Hz, hop {UPSTREAM_HOP}); 0 frames exactly when there are "
                    "no prompt tokens (upstream fails on a prompt with tokens and no frames)",
                ),
            ],
            outputs=[
                f32("mu", [1, mel, "frames"], "regulated encoder output (the CFM condition)"),
                f32("spks", [1, mel], "F.normalize(embedding) through spk_embed_affine_layer"),
                f32(
                    "cond", [1, mel, "frames"], "prompt_feat transposed in the first prompt_frames frames, zeros after"
                ),
            ],
            dims={
                "prompt_tokens": Dim(
                    0,
                    PROMPT_TOKENS,
                    p_max,
                    f"prompt tokens; prompt + generated <= {rel_pos_max_tokens(model)} (rel-pos table)",
                    role="prompt",
                ),
                "tokens": Dim(
                    1,
                    window,
                    n_max,
                    f"generated tokens of this call ({rate} Hz; opt: a stream window); max {n_max}: frames "
                    f"fit the estimator ({MAX_FRAMES}) and the graph's integer length rule is exact",
                    role="tokens",
                ),
                "prompt_frames": Dim(
                    0, mel_len(PROMPT_TOKENS, rate), MAX_FRAMES, "prompt mel frames (0 without a prompt)", role="prompt"
                ),
                "frames": Dim(
                    1,
                    mel_len(PROMPT_TOKENS, rate) + mel_len(window, rate),
                    MAX_FRAMES,
                    f"prompt_frames + {rule} (not an affine function of tokens); at most {MAX_FRAMES} in all",
                    role="frames",
                ),
            },
            tolerances={
                "mu": Tolerance(
                    atol=1e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation through the conformer (rel-pos attention softmax, LayerNorm, SiLU "
                    "FFN), the projection and the regulator's 4 conv + GroupNorm + Mish blocks; the interpolation "
                    "itself reproduces torch's index and weight arithmetic bit for bit (frame_sources). "
                    "Measured <= 1.4e-6 on the tiny bundle's cases and <= 4.2e-6 up to 1742 tokens (|mu| up to "
                    "~2.6). The other regulator branch moves mu by 0.66 (N = 60) and a mel length off by one changes "
                    "its shape",
                ),
                "spks": Tolerance(atol=1e-5, rtol=1e-5, reason="one normalize + Linear(192->80); measured ~1e-7"),
                "cond": Tolerance(atol=0.0, check="exact", reason="a copy of prompt_feat and zeros: no arithmetic"),
            },
            cases=[
                TestCase(
                    "offline",
                    f"{PROMPT_TOKENS} prompt tokens + 61 generated (one id -1 to exercise the clamp), as the "
                    "non-stream token2wav call",
                ),
                TestCase("window_prompt", f"a stream window: {PROMPT_TOKENS} prompt tokens + {window} tokens"),
                TestCase("window_no_prompt", f"a stream window without a prompt: {window} tokens, no prompt frames"),
                TestCase(
                    "final_short",
                    f"a stream's final call: prompt + {EDGE_TOKENS} tokens (no head/tail split, <= {SPLIT_ABOVE})",
                ),
                TestCase("split_edge", f"no prompt, {SPLIT_ABOVE + 1} tokens: the smallest split (middle of 1 token)"),
                TestCase("one_token", "no prompt, 1 token (mel_len2 = 1 at 50 Hz)"),
            ],
            facts={
                "input_frame_rate": rate,
                "mel_bins": mel,
                "spk_embed_dim": spk_in,
                "vocab_size": int(flow.vocab_size),
                "mel_len_rule": {
                    "formula": f"{rule} (upstream, Python float); the graph computes tokens * 22050 // "
                    f"{mel_len_divisor(rate)}, equal for every tokens in the graph's range",
                    "numerator": UPSTREAM_SAMPLE_RATE,
                    "divisor": mel_len_divisor(rate),
                },
                "regulator": {
                    "edge_tokens": EDGE_TOKENS,
                    "split_above_tokens": SPLIT_ABOVE,
                    "edge_frames": edge,
                    "rule": f"more than {SPLIT_ABOVE} generated tokens: first and last {EDGE_TOKENS} tokens -> "
                    f"{edge} frames each, the middle -> mel_len2 - {2 * edge}; else all -> mel_len2; prompt tokens "
                    "-> prompt_frames; linear, align_corners=False",
                },
                "rel_pos_max_tokens": rel_pos_max_tokens(model),
                "max_tokens": n_max,
                "call_protocol": "window",
                "new_frames": "upstream keeps mel[:, :, prompt_frames:] of the CFM output (the whole window)",
            },
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """Calls without a prompt and zero-shot calls, per chunk mode: a stream call sees one window of generated
        tokens (hop + overlap), an offline call the whole utterance."""
        t_top, pt_top, pf_top = (spec.dims[d].max for d in ("tokens", "prompt_tokens", "prompt_frames"))
        pt, nt = typical_prompt_tokens(p), typical_utterance_tokens(p)
        window = p.token_hop_len + p.token_overlap_len

        def token_range(chunk: str) -> DimRange:
            if chunk == "stream":
                return DimRange(1, window, t_top, f"one window; opt: hop {p.token_hop_len} + overlap")
            return DimRange(1, nt, t_top, "the whole utterance in one call")

        def mode(chunk: str) -> list[ProfileSpec]:
            return [
                ProfileSpec(
                    "no_prompt",
                    "calls without a prompt",
                    {
                        "prompt_tokens": DimRange.pinned(0, "no prompt"),
                        "prompt_frames": DimRange.pinned(0, "no prompt: zero-length prompt_feat"),
                        "tokens": token_range(chunk),
                    },
                ),
                ProfileSpec(
                    "with_prompt",
                    "zero-shot calls (prompt tokens and mel present)",
                    {
                        "prompt_tokens": DimRange(1, pt, pt_top, f"opt: a {pt}-token prompt"),
                        "prompt_frames": DimRange(1, p.mel(pt), pf_top, f"prompt mel; opt: a {pt}-token prompt"),
                        "tokens": token_range(chunk),
                    },
                ),
            ]

        return {"stream": mode("stream"), "offline": mode("offline")}

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Exp", "Softplus", "Tanh", "ReduceL2"),
            name_patterns=(r"^/frame_sources/",),
            paths=(("Concat", "cond"),),
            reason="LayerNorm/GroupNorm statistics, the rel-pos attention softmax, Mish and the x-vector norm; "
            "the regulator's index and weight arithmetic (frame positions up to ~3000: fp16 spacing 2 there; "
            "2^-41 underflows); cond is a copy of prompt_feat, kept exact",
        )
        tol = {
            "mu": Tolerance(
                atol=2e-2,
                rtol=1e-2,
                reason="fp16 weights and activations over the conformer, projection and regulator convs (unit "
                "roundoff 4.9e-4, |mu| up to ~2.5) with norms, softmax, Mish and the regulator's index arithmetic "
                "fp32: ORT-CPU fp16 measured <= 2.3e-3 on the tiny bundle's cases, no NaN/inf (~9x headroom). Not "
                "measured at full size nor on TensorRT, where upstream users report NaN mel from the v1 flow in "
                "fp16 (QwenAudio/CosyVoice#1113)",
            ),
            "spks": Tolerance(
                atol=1e-2, rtol=1e-2, reason="normalize in fp32, one fp16 Linear(192->80); measured <= 6e-5 (tiny)"
            ),
            "cond": spec.tolerances["cond"],
        }
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                tol,
                ("ort",),
                keep,
                doc="ONNX Runtime fp16 variant only (tts-export --fp16): upstream's maintainers keep the v1 flow "
                "fp32 on TensorRT (NaN mel in fp16)",
            )
        }

    def wrapper(self, model):
        import torch
        import torch.nn.functional as F

        rate = int(model.flow.input_frame_rate)

        class FlowEncoderV1Wrapper(torch.nn.Module):
            def __init__(self, flow):
                super().__init__()
                self.flow = flow
                self.frame_sources = frame_sources(rate)

            def forward(self, prompt_token, token, embedding, prompt_feat):
                flow = self.flow
                spks = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
                xs = flow.input_embedding(torch.clamp(torch.cat([prompt_token, token], dim=1), min=0))
                # Upstream's lengths equal xs's, so its padding mask is all true (and its `* mask` exact).
                h, _ = flow.encoder(xs, torch._shape_as_tensor(xs)[1:2])
                h = flow.encoder_proj(h)
                n = torch._shape_as_tensor(token)[1]
                mel_len1, mel_len2 = torch._shape_as_tensor(prompt_feat)[1], regulated_frames(n, rate)
                i0, i1, w0, w1 = self.frame_sources(torch._shape_as_tensor(prompt_token)[1], n, mel_len1, mel_len2)
                x = h.index_select(1, i0) * w0 + h.index_select(1, i1) * w1
                mu = flow.length_regulator.model(x.transpose(1, 2).contiguous())
                # from the shapes, not from mu: cond must not depend on mu (fp16 keeps the prompt_feat -> cond path)
                zeros = torch.zeros(1, mel_len2, prompt_feat.size(2), dtype=prompt_feat.dtype)
                cond = torch.cat([prompt_feat, zeros], dim=1).transpose(1, 2).contiguous()
                return mu, spks, cond

        return FlowEncoderV1Wrapper(model.flow).eval()

    @contextlib.contextmanager
    def patches(self, model):
        """The encoder's chunk-mask helper ends in a data-dependent `.item()` check (all-false rows); with full
        attention and no padding there are none, and the traceable helper returns the padding mask unchanged."""
        import cosyvoice.transformer.encoder as encoder_mod

        saved = encoder_mod.add_optional_chunk_mask
        encoder_mod.add_optional_chunk_mask = traceable_chunk_mask
        try:
            yield
        finally:
            encoder_mod.add_optional_chunk_mask = saved

    def cases(self, model, seed: int) -> dict[str, Case]:
        from exporters.oracles.flow_v1 import upstream_pre_ode_v1

        window = 2 * int(model.flow.input_frame_rate) + EDGE_TOKENS
        # (case, prompt tokens, generated tokens)
        plan = [
            ("offline", PROMPT_TOKENS, 61),
            ("window_prompt", PROMPT_TOKENS, window),
            ("window_no_prompt", 0, window),
            ("final_short", PROMPT_TOKENS, EDGE_TOKENS),
            ("split_edge", 0, SPLIT_ABOVE + 1),
            ("one_token", 0, 1),
        ]
        out: dict[str, Case] = {}
        for i, (case, n_prompt, n_gen) in enumerate(plan):
            rng = np.random.default_rng(seed * 1000 + i)
            prompt, gen, feat, emb = _v1_inputs(model, rng, n_prompt, n_gen)
            if case == "offline":
                gen[0, 5] = -1
            expected = upstream_pre_ode_v1(model, gen, prompt, feat, emb)
            feed = {
                "prompt_token": prompt.astype(np.int64),
                "token": gen.astype(np.int64),
                "embedding": emb,
                "prompt_feat": feat,
            }
            out[case] = (feed, expected)
        return out


def cfm_facts_v1(model) -> dict:
    """What the runtime needs to run upstream's ConditionalCFM (v1) exactly: schedule, CFG, noise and cache."""
    dec = model.flow.decoder
    return {
        "n_timesteps": 10,  # hard-coded in MaskedDiffWithXvec.inference
        "t_scheduler": str(dec.t_scheduler),
        "inference_cfg_rate": float(dec.inference_cfg_rate),
        "solver": "euler",
        "noise": "runtime",
        "noise_doc": "z ~ N(0, 1) of shape (1, mel_bins, frames), drawn afresh on every flow call (upstream "
        "ConditionalCFM.forward: randn_like(mu)); the runtime supplies it (seeded), no graph draws noise",
        "mel_bins": int(model.flow.output_size),
        "flow_cache_frames": V1_FLOW_CACHE_FRAMES,  # ConditionalCFM.forward's hard-coded z[:, :, -34:]
        "flow_cache": "before the ODE, the first c frames of z and mu are overwritten by the previous call's "
        "cache; the new cache is (z, mu) of the first prompt_frames frames + the last flow_cache_frames frames",
        "velocity_masked": True,
    }


class EstimatorV1Exporter(EstimatorExporter):
    """The v1 U-Net velocity field. Inherits the mask patch (full attention, no `.item()` in the trace); its own
    I/O (no `streaming`), spec, profiles, fp16 policy and cases; no noise data (drawn per call)."""

    name = "flow.decoder.estimator"
    opset = 18
    trace_case = "window_prompt"

    def spec(self, model) -> GraphSpec:
        flow = model.flow
        est = flow.decoder.estimator
        mel = int(flow.output_size)
        spk = int(est.in_channels) - 3 * mel  # in = x + mu + spks + cond
        io = cfg_velocity_io(mel, mel, spk, 0, "regulated flow encoder output", "estimated velocity, times mask")
        io["inputs"] = [t for t in io["inputs"] if t.name != "streaming"]
        frames_per_s = UPSTREAM_SAMPLE_RATE / UPSTREAM_HOP
        io["dims"] = {
            "frames": Dim(
                1,
                500,
                MAX_FRAMES,
                f"mel frames of prompt + this call's tokens ({frames_per_s:.2f} Hz); any length, the U-Net "
                "crops odd ones",
                role="frames",
            )
        }
        window = 2 * int(flow.input_frame_rate) + EDGE_TOKENS
        return GraphSpec(
            graph=self.name,
            description="Flow-matching velocity field v(x, t | mu, spks, cond) of the CosyVoice 1 flow decoder "
            f"(non-causal U-Net, channels {[int(res.res_conv.out_channels) for res, _, _ in est.down_blocks]}, "
            f"{len(est.mid_blocks)} mid blocks, full attention), for one Euler "
            "step with classifier-free guidance: batch row 0 is conditional, row 1 unconditional (mu, spks, cond "
            "zeroed). The runtime combines v = (1 + cfg) * v0 - cfg * v1 and steps x += dt * v.",
            **io,
            tolerances={
                "velocity": Tolerance(
                    atol=2e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation across the U-Net's convs, GroupNorm, attention softmax and "
                    "GELU/Mish; measured <= 5.5e-6 on the tiny bundle's cases (|velocity| up to ~5.4); 2e-4 still "
                    "catches a dropped bias, a wrong crop or a wrong mask (errors >= 1e-2)",
                )
            },
            cases=[
                TestCase(
                    "window_prompt",
                    f"a stream window: {PROMPT_TOKENS} prompt tokens + {window} generated -> odd frames, "
                    "prompt mel in cond",
                ),
                TestCase("window_no_prompt", f"a stream window without a prompt ({window} tokens), first ODE step"),
                TestCase("offline_odd", "prompt + 61 tokens, odd frames, late ODE time"),
                TestCase("one_frame", "1 token -> 1 frame: the smallest call (down/up-sampling of length 1)"),
            ],
            facts={**cfm_facts_v1(model), "static_chunk_size": 0},
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """One profile per chunk mode: every flow call is one CFG batch of 2 over prompt + this call's frames."""
        (frames,) = spec.dims_with_role("frames")
        top, pt, nt = spec.dims[frames].max, typical_prompt_tokens(p), typical_utterance_tokens(p)
        window = p.token_hop_len + p.token_overlap_len
        stream = DimRange(
            p.mel(1),
            p.mel(pt) + p.mel(window),
            top,
            f"min: a 1-token final-only call without prompt; opt: a {pt}-token prompt + one {window}-token "
            "window; max: the graph's max",
        )
        offline = DimRange(
            p.mel(1),
            p.mel(pt) + p.mel(nt),
            top,
            f"min: a 1-token utterance; opt: {pt}-token prompt + {nt} generated tokens; max: the graph's max",
        )
        doc = "every flow call of the policy: one CFG batch of 2 over prompt + this call's frames"
        return {
            "stream": [ProfileSpec("all_calls", doc, {frames: stream})],
            "offline": [ProfileSpec("all_calls", doc, {frames: offline})],
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp", "Softplus", "Tanh", "Erf"),
            name_patterns=(r"time_embeddings", r"time_mlp"),
            trig_arguments=True,
            reason="normalisation statistics and attention softmax overflow or lose mass in fp16; the timestep "
            "embedding is sin/cos of 1000*t (fp16 spacing at 1000 is 0.5 rad); Mish's softplus/tanh, GELU's erf",
        )
        velocity = Tolerance(
            atol=2e-2,
            rtol=5e-3,
            reason="fp16 unit roundoff u = 4.9e-4 over the U-Net's resnet/attention blocks with norms, softmax, "
            "Mish, GELU and the time embedding kept fp32: ORT-CPU fp16 measured max |err| 7.5e-3 (|velocity| <= "
            "5.4, no NaN/inf) on the tiny bundle's cases; the CosyVoice2 estimator's budget (2e-2 + 5e-3 |v|). "
            "Offered on ONNX Runtime only: on TensorRT fp16 upstream users get NaN mel from this flow "
            "(QwenAudio/CosyVoice#1113, #1114; maintainers: keep fp32), and it is not measured at full size",
        )
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                {"velocity": velocity},
                ("ort",),
                keep,
                doc="ONNX Runtime fp16 variant only (tts-export --fp16); TensorRT plans stay fp32",
            )
        }

    def wrapper(self, model):
        import torch

        class EstimatorV1Wrapper(torch.nn.Module):
            def __init__(self, estimator):
                super().__init__()
                self.estimator = estimator

            def forward(self, x, mask, mu, t, spks, cond):
                return self.estimator(x, mask, mu, t, spks, cond)

        return EstimatorV1Wrapper(model.flow.decoder.estimator).eval()

    def cases(self, model, seed: int) -> dict[str, Case]:
        from exporters.graphs.flow_common import ode_time
        from exporters.oracles.flow_v1 import upstream_pre_ode_v1

        est = model.flow.decoder.estimator
        sched = str(model.flow.decoder.t_scheduler)
        window = 2 * int(model.flow.input_frame_rate) + EDGE_TOKENS
        # (case, prompt tokens, generated tokens, ODE step)
        plan = [
            ("window_prompt", PROMPT_TOKENS, window, 3),
            ("window_no_prompt", 0, window, 0),
            ("offline_odd", PROMPT_TOKENS, 61, 8),
            ("one_frame", 0, 1, 5),
        ]
        out: dict[str, Case] = {}
        for i, (case, n_prompt, n_gen, step) in enumerate(plan):
            rng = np.random.default_rng(seed * 1000 + 100 + i)
            prompt, gen, feat, emb = _v1_inputs(model, rng, n_prompt, n_gen)
            c = upstream_pre_ode_v1(model, gen, prompt, feat, emb)
            mu, spks, cond = c["mu"], c["spks"], c["cond"]
            t = ode_time(step, scheduler=sched)
            z = rng.standard_normal(mu.shape).astype(np.float32)
            x = ((1 - t) * z + t * mu).astype(np.float32)  # a plausible state on the path from noise to data
            feed = cfg_batch(x, mu, t, spks, cond)
            out[case] = (feed, {"velocity": upstream_velocity(est, feed)})
        return out

    def data(self, model):
        return {}  # v1 draws its noise per call: no fixed noise buffer
