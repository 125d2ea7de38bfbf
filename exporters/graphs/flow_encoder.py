"""`flow.encoder`: everything the CosyVoice2 flow computes before its ODE solver (tokens -> mu, spks, cond).

Upstream's `CausalMaskedDiffWithXvec.inference` embeds prompt + generated tokens, runs the
`UpsampleConformerEncoder` (pre-lookahead conv fed 3 context tokens, conformer blocks, 2x upsampling,
more conformer blocks), projects to 80 mel bins (`mu`), projects the x-vector (`spks`) and lays the
prompt mel into `cond`. It keeps no encoder cache: every streaming call recomputes the whole prefix.
This graph does the same, one call per upstream call, so the first chunk, later chunks and the final /
offline call all run through it:

- `token` is the prefix without the lookahead, `context` the 3 lookahead tokens. When `finalize` is true
  upstream passes no context and the pre-lookahead layer zero-pads instead; zero padding equals the
  embedded context times 0, so the graph multiplies the embedded context by (1 - finalize) and keeps a
  static context shape (no zero-length branch).
- `streaming` selects the attention masks inside the graph (block-causal chunks of `static_chunk_size`
  tokens before upsampling and twice that after, or full attention), as the estimator graph does.

Export-only rewrites are the two patches in `patches()`; upstream code runs unchanged otherwise.
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter, typical_prompt_tokens, typical_utterance_tokens
from exporters.graphs.estimator import MAX_FRAMES
from exporters.graphs.flow_common import ChunkMaskFlag, traceable_chunk_mask
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

PROMPT_TOKENS = 17  # an odd prompt length: the first hop then carries a prompt pad of 8 tokens


class _ContextKeep:
    """Holds (1 - finalize) as a float tensor while the wrapped encoder runs (export-time only)."""

    value = None


def _scale_context(module, args, kwargs):
    """Forward pre-hook on the pre-lookahead layer: embedded context times (1 - finalize)."""
    keep = _ContextKeep.value
    if keep is None or "context" not in kwargs:
        return None
    return args, {**kwargs, "context": kwargs["context"] * keep}


def rel_pos_max_tokens(model) -> int:
    """Most prefix tokens the exported rel-pos tables cover: the up-encoder runs on ratio x tokens
    positions and its table (built for `max_len` positions at module init, frozen into the graph) has
    2 * max_len - 1 rows."""
    enc = model.flow.encoder
    positions = min(enc.embed.pos_enc.pe.size(1), enc.up_embed.pos_enc.pe.size(1)) // 2 + 1
    return positions // int(model.flow.token_mel_ratio)


def max_tokens(model) -> int:
    """The graph's token range: the rel-pos limit, capped so frames fit the estimator's range."""
    return min(rel_pos_max_tokens(model), MAX_FRAMES // int(model.flow.token_mel_ratio))


def condition_io(mel: int, ratio: int, spk_in: int, n_max: int) -> dict:
    """What every family's token -> ODE condition graph declares alike (runtime/flow_stage.py feeds both): the
    `token`, `embedding` and `prompt_feat` inputs, the `spks` and `cond` outputs, the `prompt_frames` and
    `frames` dims (`tokens` and `mu` differ by family)."""
    f32 = lambda n, s, d: TensorSpec(n, "float32", s, d)  # noqa: E731
    return {
        "token": TensorSpec(
            "token",
            "int64",
            [1, "tokens"],
            "prompt speech tokens then generated tokens, without the lookahead tokens; negative ids are clamped to 0",
        ),
        "embedding": f32("embedding", [1, spk_in], "speaker x-vector (campplus), not normalised"),
        "prompt_feat": f32(
            "prompt_feat",
            [1, "prompt_frames", mel],
            f"prompt mel (frames x {mel} bins); prompt_frames = {ratio} x prompt tokens, 0 without a "
            "prompt, never more than frames",
        ),
        "spks": f32("spks", [1, mel], "F.normalize(embedding) through spk_embed_affine_layer"),
        "cond": f32(
            "cond", [1, mel, "frames"], "prompt_feat transposed in the first prompt_frames frames, zeros after"
        ),
        "prompt_frames": Dim(
            0, 2 * PROMPT_TOKENS, ratio * n_max, "prompt mel frames (50 Hz); at most frames", role="prompt"
        ),
        "frames": Dim(
            ratio,
            ratio * 200,
            ratio * n_max,
            f"mel frames = {ratio} x tokens",
            role="frames",
            derived_from={"dim": "tokens", "scale": ratio, "offset": 0},
        ),
    }


class FlowEncoderExporter(GraphExporter):
    name = "flow.encoder"
    opset = 18
    trace_case = "steady_chunk"

    def spec(self, model) -> GraphSpec:
        flow = model.flow
        mel = int(flow.output_size)
        ratio = int(flow.token_mel_ratio)
        look = int(flow.pre_lookahead_len)
        chunk = int(flow.encoder.static_chunk_size)
        up_chunk = chunk * int(flow.encoder.up_layer.stride)
        spk_in = int(flow.spk_embed_affine_layer.in_features)
        n_max = max_tokens(model)
        f32 = lambda n, s, d: TensorSpec(n, "float32", s, d)  # noqa: E731
        io = condition_io(mel, ratio, spk_in, n_max)
        return GraphSpec(
            graph=self.name,
            description=(
                "CosyVoice2 flow before the ODE: speech tokens -> mu (encoder output projected to mel bins), "
                "spks (projected x-vector) and cond (prompt mel, zeros after). Upstream keeps no encoder "
                "cache, so the runtime calls this graph once per token2wav call on the whole prefix "
                "(prompt tokens + every generated token so far) and slices the new frames off the mel "
                "afterwards. Non-final streaming call: token = prefix without its last "
                f"{look} tokens, context = those {look} lookahead tokens, finalize=false, streaming=true. "
                f"Final call of a stream and offline call: token = whole prefix, finalize=true, "
                f"streaming=false; context is then ignored (any {look} tokens, e.g. zeros)."
            ),
            inputs=[
                io["token"],
                TensorSpec(
                    "context",
                    "int64",
                    [1, look],
                    f"the {look} lookahead tokens that follow `token` (non-final streaming calls); "
                    "ignored when finalize is true",
                ),
                TensorSpec(
                    "finalize",
                    "bool",
                    [1],
                    "true: no lookahead (the pre-lookahead layer sees zeros after the last token)",
                ),
                TensorSpec(
                    "streaming",
                    "bool",
                    [1],
                    f"true: block-causal attention, chunks of {chunk} tokens before upsampling and "
                    f"{up_chunk} frames after; false: full attention",
                ),
                io["embedding"],
                io["prompt_feat"],
            ],
            outputs=[
                f32("mu", [1, mel, "frames"], "encoder output projected to mel bins (the ODE condition)"),
                io["spks"],
                io["cond"],
            ],
            dims={
                "tokens": Dim(
                    1,
                    200,
                    n_max,
                    f"prefix tokens without lookahead (25 Hz); max {n_max}: the rel-pos tables are "
                    f"frozen at {rel_pos_max_tokens(model)} tokens ({ratio}x that up-encoder "
                    f"positions) and frames must fit the estimator ({MAX_FRAMES})",
                    role="tokens",
                ),
                "prompt_frames": io["prompt_frames"],
                "frames": io["frames"],
            },
            tolerances={
                "mu": Tolerance(
                    atol=1e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation through the conformer blocks (rel-pos attention softmax, "
                    "LayerNorm, SiLU FFN) and two convs; measured <= 2.2e-6 on tiny and full bundles "
                    "(|mu| up to ~2.6). A wrong chunk mask moves mu by >= 7e-3 and a dropped "
                    "lookahead by >= 0.16 even on the 1-block tiny encoder",
                ),
                "spks": Tolerance(atol=1e-5, rtol=1e-5, reason="one normalize + Linear(192->80); measured ~1e-7"),
                "cond": Tolerance(atol=0.0, check="exact", reason="a copy of prompt_feat and zeros: no arithmetic"),
            },
            cases=[
                TestCase(
                    "offline",
                    "finalize=true, streaming=false: prompt + 60 tokens (odd total, one token "
                    "id -1 to exercise the clamp), as the non-stream token2wav call",
                ),
                TestCase(
                    "first_chunk",
                    f"streaming, finalize=false, no prompt: {chunk} tokens + {look} context (prompt_frames = 0)",
                ),
                TestCase(
                    "first_chunk_prompt",
                    f"streaming, finalize=false: {PROMPT_TOKENS} prompt tokens + "
                    f"{chunk}+pad generated, + {look} context",
                ),
                TestCase(
                    "steady_chunk",
                    "streaming, finalize=false: prompt + first hop + a 50-token hop (4 attention chunks) + context",
                ),
                TestCase(
                    "final_chunk",
                    "finalize=true, streaming=false (upstream's last stream call): "
                    "prompt + 121 generated tokens; context holds tokens that must be "
                    "ignored",
                ),
            ],
            facts={
                "token_mel_ratio": ratio,
                "pre_lookahead_len": look,
                "encoder_static_chunk_size": chunk,
                "up_encoder_static_chunk_size": up_chunk,
                "mel_bins": mel,
                "spk_embed_dim": spk_in,
                "vocab_size": int(flow.vocab_size),
                "rel_pos_max_tokens": rel_pos_max_tokens(model),
                "max_tokens": n_max,
                "call_protocol": "prefix_recompute",
                "finalize_semantics": "finalize=true: all tokens are input, no lookahead (context ignored); "
                "upstream's final stream call and offline call also use streaming=false",
                "new_frames": "upstream keeps mel[:, :, prompt_frames + token_mel_ratio * token_offset:] of the "
                "ODE output, token_offset = generated tokens already emitted",
            },
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """Calls without a prompt (zero-length prompt_feat) and zero-shot calls, per chunk mode."""
        (tokens,), (prompt,) = spec.dims_with_role("tokens"), spec.dims_with_role("prompt")
        t_top, p_top = spec.dims[tokens].max, spec.dims[prompt].max
        pt, nt = typical_prompt_tokens(p), typical_utterance_tokens(p)

        def token_range(chunk: str, prompt_tokens: int) -> DimRange:
            if chunk == "stream":
                return DimRange(
                    1,
                    p.steady_prefix_tokens(prompt_tokens),
                    t_top,
                    "prefix without lookahead; opt: the first max-hop call",
                )
            return DimRange(1, prompt_tokens + nt, t_top, "the whole utterance (+ prompt) in one call")

        def mode(chunk: str) -> list[ProfileSpec]:
            return [
                ProfileSpec(
                    "no_prompt",
                    "calls without a prompt",
                    {prompt: DimRange.pinned(0, "no prompt: zero-length prompt_feat"), tokens: token_range(chunk, 0)},
                ),
                ProfileSpec(
                    "with_prompt",
                    "zero-shot calls (prompt mel present)",
                    {
                        prompt: DimRange(1, p.mel(pt), p_top, f"prompt mel; opt: a {pt}-token prompt"),
                        tokens: token_range(chunk, pt),
                    },
                ),
            ]

        return {"stream": mode("stream"), "offline": mode("offline")}

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Exp",), reason="LayerNorm statistics and the relative-position attention softmax"
        )
        budget = (
            "fp16 unit roundoff 4.9e-4 over the conformer blocks with norms and softmax fp32; |mu| up to ~2.6. "
            "Initial budget, not yet measured on TensorRT; catches O(1) errors (a broken engine) only"
        )
        tol = {
            "mu": Tolerance(atol=5e-2, rtol=2e-2, reason=budget),
            "spks": Tolerance(atol=5e-2, rtol=2e-2, reason="one normalize + Linear in fp16; initial budget"),
            "cond": spec.tolerances["cond"],
        }
        return {"fp16": PrecisionPolicy("fp16", "float16", tol, ("tensorrt",), keep, doc="TensorRT fp16 plans only")}

    def wrapper(self, model):
        import torch
        import torch.nn.functional as F

        class FlowEncoderWrapper(torch.nn.Module):
            def __init__(self, flow):
                super().__init__()
                self.flow = flow

            def forward(self, token, context, finalize, streaming, embedding, prompt_feat):
                flow = self.flow
                spks = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
                xs = flow.input_embedding(torch.clamp(token, min=0))
                ctx = flow.input_embedding(torch.clamp(context, min=0))
                # Upstream's lengths are never shorter than xs, so its padding masks are all true.
                lengths = torch._shape_as_tensor(xs)[1:2]
                ChunkMaskFlag.value = streaming
                _ContextKeep.value = (~finalize).to(xs.dtype)
                try:
                    h, _ = flow.encoder(xs, lengths, context=ctx, streaming=True)
                finally:
                    ChunkMaskFlag.value = None
                    _ContextKeep.value = None
                mu = flow.encoder_proj(h).transpose(1, 2).contiguous()
                n_after = torch._shape_as_tensor(h)[1] - torch._shape_as_tensor(prompt_feat)[1]
                zeros = torch.zeros(1, n_after, prompt_feat.size(2), dtype=prompt_feat.dtype)
                cond = torch.cat([prompt_feat, zeros], dim=1).transpose(1, 2).contiguous()
                return mu, spks, cond

        return FlowEncoderWrapper(model.flow)

    @contextlib.contextmanager
    def patches(self, model):
        import cosyvoice.transformer.upsample_encoder as encoder_mod

        saved = encoder_mod.add_optional_chunk_mask
        encoder_mod.add_optional_chunk_mask = traceable_chunk_mask
        hook = model.flow.encoder.pre_lookahead_layer.register_forward_pre_hook(_scale_context, with_kwargs=True)
        try:
            yield
        finally:
            hook.remove()
            encoder_mod.add_optional_chunk_mask = saved

    def cases(self, model, seed: int) -> dict[str, Case]:
        flow = model.flow
        look = int(flow.pre_lookahead_len)
        hop = int(flow.encoder.static_chunk_size)
        pad = -PROMPT_TOKENS % hop
        # (case, prompt tokens, generated tokens incl. lookahead, streaming, finalize)
        plan = [
            ("offline", PROMPT_TOKENS, 60, False, True),
            ("first_chunk", 0, hop + look, True, False),
            ("first_chunk_prompt", PROMPT_TOKENS, hop + pad + look, True, False),
            ("steady_chunk", PROMPT_TOKENS, hop + pad + 2 * hop + look, True, False),
            ("final_chunk", PROMPT_TOKENS, 121, False, True),
        ]
        out: dict[str, Case] = {}
        for i, (case, n_prompt, n_gen, streaming, finalize) in enumerate(plan):
            rng = np.random.default_rng(seed * 1000 + i)
            prompt = rng.integers(0, flow.vocab_size, (1, n_prompt))
            gen = rng.integers(0, flow.vocab_size, (1, n_gen))
            if case == "offline":
                gen[0, 5] = -1
            prompt_feat = (
                -5.0 + 2.0 * rng.standard_normal((1, flow.token_mel_ratio * n_prompt, flow.output_size))
            ).astype(np.float32)
            embedding = rng.standard_normal((1, flow.spk_embed_affine_layer.in_features)).astype(np.float32)
            expected = upstream_pre_ode(model, gen, prompt, prompt_feat, embedding, streaming, finalize)
            prefix = np.concatenate([prompt, gen], axis=1)
            if finalize:
                token, context = prefix, rng.integers(0, flow.vocab_size, (1, look))
            else:
                token, context = prefix[:, :-look], prefix[:, -look:]
            feed = {
                "token": token.astype(np.int64),
                "context": context.astype(np.int64),
                "finalize": np.array([finalize]),
                "streaming": np.array([streaming]),
                "embedding": embedding,
                "prompt_feat": prompt_feat,
            }
            out[case] = (feed, expected)
        return out


def _capture_stub():
    """A module that stands in for `flow.decoder` during one upstream `flow.inference` call: it records
    what the ODE solver would receive (and the family's flags: CosyVoice2/3's streaming, CosyVoice 1's
    prompt_len and cache) and returns zeros of the right shape (and no cache)."""
    import torch

    class CaptureDecoder(torch.nn.Module):
        seen: dict = {}

        def forward(self, mu, mask, n_timesteps, temperature=1.0, spks=None, cond=None, **flags):
            self.seen = {
                "mu": mu.clone(),
                "mask": mask.clone(),
                "spks": spks.clone(),
                "cond": cond.clone(),
                "n_timesteps": n_timesteps,
                **flags,
            }
            return torch.zeros_like(mu), None

    return CaptureDecoder()


@contextlib.contextmanager
def captured_decoder(flow):
    """Temporarily replace `flow.decoder` by a capture stub (the real decoder is put back afterwards); yields the
    stub, whose `seen` holds what the last call passed."""
    real = flow.decoder
    stub = _capture_stub()
    flow.decoder = stub
    try:
        yield stub
    finally:
        flow.decoder = real


def upstream_pre_ode(model, gen, prompt, prompt_feat, embedding, streaming: bool, finalize: bool) -> dict:
    """mu / spks / cond exactly as upstream's `flow.inference` hands them to its ODE solver.

    gen: generated tokens including the lookahead tokens (as upstream token2wav passes them), int (1, N);
    prompt: (1, P); prompt_feat: (1, 2P, 80); embedding: (1, 192)."""
    import torch

    flow = model.flow
    i32 = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(torch.int32)  # noqa: E731
    with captured_decoder(flow) as stub:
        flow.inference(
            token=i32(gen),
            token_len=torch.tensor([gen.shape[1]], dtype=torch.int32),
            prompt_token=i32(prompt),
            prompt_token_len=torch.tensor([prompt.shape[1]], dtype=torch.int32),
            prompt_feat=torch.from_numpy(prompt_feat),
            prompt_feat_len=torch.tensor([prompt_feat.shape[1]], dtype=torch.int32),
            embedding=torch.from_numpy(embedding),
            streaming=streaming,
            finalize=finalize,
        )
    seen = stub.seen
    if not bool((seen["mask"] == 1).all()) or seen.get("streaming", False) != streaming:
        raise RuntimeError(
            "upstream flow.inference no longer calls its decoder as this exporter assumes "
            "(all-ones mask, streaming passed through)"
        )
    return {k: seen[k].numpy().astype(np.float32) for k in ("mu", "spks", "cond")}
