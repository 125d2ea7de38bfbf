"""Fun-CosyVoice3 flow graphs: `flow.prep` (everything before the ODE) and `flow.decoder.estimator` (the DiT).

Upstream's `CausalMaskedDiffWithDiT.inference` has no encoder: it embeds prompt + generated tokens, runs the
`PreLookaheadLayer` (conv1 over the token and `pre_lookahead_len` tokens of right context, leaky ReLU, causal
conv2, residual), repeats every frame `token_mel_ratio` times (`mu`), projects the x-vector (`spks`), lays the
prompt mel into `cond`, then runs `CausalConditionalCFM` (10 Euler steps, CFG batch 2, fixed `rand_noise`) over
the `DiT` estimator. Every streaming call recomputes the whole prefix (no cache), as in CosyVoice2.

- `flow.prep`: one graph for non-final and final calls. `token` is the prefix without the lookahead, `context`
  the lookahead tokens; upstream's final call passes no context and the pre-lookahead layer zero-pads instead.
  Zero padding equals the embedded context times 0, so the graph multiplies the embedded context by
  (1 - finalize): exact (x * 0 = 0 for every finite embedding), static shapes, no zero-length branch.
- `flow.decoder.estimator`: the DiT with a `streaming` input selecting the attention mask inside the graph
  (block-causal chunks of `static_chunk_size` frames, or full attention), exactly as the CosyVoice2 estimator
  graph does (exporters/graphs/estimator.py): upstream ships only the full-attention ONNX, whose streaming
  chunks then silently differ from PyTorch. Unlike the U-Net, the DiT's output is not multiplied by the mask.
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter
from exporters.graphs.estimator import MAX_FRAMES, EstimatorExporter, cfg_velocity_io
from exporters.graphs.flow_common import cfm_facts, traceable_chunk_mask
from exporters.graphs.flow_encoder import PROMPT_TOKENS, FlowEncoderExporter, condition_io, upstream_pre_ode
from specs.io_spec import Dim, GraphSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy


def chunk_tokens(model) -> int:
    """Tokens per DiT attention chunk (static_chunk_size frames / token_mel_ratio): upstream's token hop."""
    return int(model.flow.decoder.estimator.static_chunk_size) // int(model.flow.token_mel_ratio)


def max_tokens(model) -> int:
    """The prep graph's token range: frames must fit the estimator's range (the layer itself has no limit)."""
    return MAX_FRAMES // int(model.flow.token_mel_ratio)


class FlowPrepV3Exporter(GraphExporter):
    name = "flow.prep"
    opset = 18
    trace_case = "steady_chunk"
    # Calls without a prompt and zero-shot calls, per chunk mode: the same dims and call pattern as the
    # CosyVoice2 flow.encoder (tokens / prompt roles), so the same profiles.
    profiles = FlowEncoderExporter.profiles

    def spec(self, model) -> GraphSpec:
        flow = model.flow
        mel = int(flow.output_size)
        mu_dim = int(flow.pre_lookahead_layer.in_channels)
        ratio = int(flow.token_mel_ratio)
        look = int(flow.pre_lookahead_len)
        spk_in = int(flow.spk_embed_affine_layer.in_features)
        chunk = chunk_tokens(model)
        n_max = max_tokens(model)
        f32 = lambda n, s, d: TensorSpec(n, "float32", s, d)  # noqa: E731
        io = condition_io(mel, ratio, spk_in, n_max)
        return GraphSpec(
            graph=self.name,
            description=(
                "CosyVoice3 flow before the ODE: speech tokens -> mu (token embedding through the pre-lookahead "
                f"layer, each frame repeated {ratio}x), spks (projected x-vector) and cond (prompt mel, zeros "
                "after). Upstream keeps no cache, so the runtime calls this graph once per token2wav call on "
                "the whole prefix (prompt tokens + every generated token so far). Non-final streaming call: "
                f"token = prefix without its last {look} tokens, context = those {look} lookahead tokens, "
                f"finalize=false. Final call of a stream and offline call: token = whole prefix, finalize=true; "
                f"context is then ignored (any {look} tokens, e.g. zeros)."
            ),
            inputs=[
                io["token"],
                TensorSpec(
                    "context",
                    "int64",
                    [1, look],
                    f"the {look} lookahead tokens that follow `token` (non-final calls); ignored when finalize is true",
                ),
                TensorSpec(
                    "finalize",
                    "bool",
                    [1],
                    "true: no lookahead (the pre-lookahead conv sees zeros after the last token)",
                ),
                io["embedding"],
                io["prompt_feat"],
            ],
            outputs=[
                f32("mu", [1, mu_dim, "frames"], "pre-lookahead layer output, repeated to mel frames"),
                io["spks"],
                io["cond"],
            ],
            dims={
                "tokens": Dim(
                    1,
                    200,
                    n_max,
                    f"prefix tokens without lookahead (25 Hz); max {n_max}: frames must fit the estimator "
                    f"({MAX_FRAMES})",
                    role="tokens",
                ),
                "prompt_frames": io["prompt_frames"],
                "frames": io["frames"],
            },
            tolerances={
                "mu": Tolerance(
                    atol=1e-5,
                    rtol=1e-5,
                    reason="fp32 reassociation in the two convs of the pre-lookahead layer (80 x 4 and "
                    "channels x 3 taps); measured <= 5.1e-7 on the tiny bundle's cases (|mu| up to ~4.4). A "
                    "different lookahead context moves the last frames by 0.61 (tiny), so a dropped lookahead or "
                    "a context leaking into a final call is caught",
                ),
                "spks": Tolerance(
                    atol=1e-5, rtol=1e-5, reason="one normalize + Linear(192->80); measured <= 6e-8 (tiny)"
                ),
                "cond": Tolerance(atol=0.0, check="exact", reason="a copy of prompt_feat and zeros: no arithmetic"),
            },
            cases=[
                TestCase(
                    "offline",
                    f"finalize=true: {PROMPT_TOKENS} prompt tokens + 60 generated (one id -1 to exercise the "
                    "clamp), as the non-stream token2wav call",
                ),
                TestCase(
                    "first_chunk",
                    f"finalize=false, no prompt: {chunk} tokens + {look} context (prompt_frames = 0)",
                ),
                TestCase(
                    "steady_chunk",
                    f"finalize=false: {PROMPT_TOKENS} prompt tokens + first hop with pad + two {chunk}-token "
                    f"hops + {look} context",
                ),
                TestCase(
                    "final_chunk",
                    "finalize=true (upstream's last stream call): prompt + 121 generated tokens; context holds "
                    "tokens that must be ignored",
                ),
            ],
            facts={
                "token_mel_ratio": ratio,
                "pre_lookahead_len": look,
                "mel_bins": mel,
                "spk_embed_dim": spk_in,
                "vocab_size": int(flow.vocab_size),
                "max_tokens": n_max,
                "call_protocol": "prefix_recompute",
                "finalize_semantics": "finalize=true: all tokens are input, no lookahead (context ignored); "
                "upstream's final stream call and offline call then run the estimator with streaming=false",
                "new_frames": "upstream keeps mel[:, :, prompt_frames + token_mel_ratio * token_offset:] of the "
                "ODE output, token_offset = generated tokens already emitted",
            },
        )

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=("ReduceL2", "Div"),
            paths=(("Concat", "cond"),),
            reason="F.normalize of the x-vector (sum of squares, divide); cond is a copy of prompt_feat, kept "
            "fp32 so it stays exact",
        )
        tol = {
            "mu": Tolerance(
                atol=2e-2,
                rtol=1e-2,
                reason="fp16 weights and activations over two convs (fp16 unit roundoff 4.9e-4, |mu| up to "
                "~4.4); ORT-CPU fp16 (same fp32 rules) measured <= 3.6e-3 on the tiny bundle's cases, ~5x "
                "headroom. Not yet measured at full size (1024 channels) nor on TensorRT",
            ),
            "spks": Tolerance(
                atol=1e-2,
                rtol=1e-2,
                reason="normalize kept fp32, then one fp16 Linear(192->80); ORT-CPU fp16 measured <= 3.9e-5 "
                "(tiny, |spks| ~0.15); the budget covers a full-size x-vector norm",
            ),
            "cond": spec.tolerances["cond"],
        }
        return {"fp16": PrecisionPolicy("fp16", "float16", tol, ("tensorrt",), keep, doc="TensorRT fp16 plans only")}

    def wrapper(self, model):
        import torch
        import torch.nn.functional as F

        class FlowPrepWrapper(torch.nn.Module):
            def __init__(self, flow):
                super().__init__()
                self.flow = flow

            def forward(self, token, context, finalize, embedding, prompt_feat):
                flow = self.flow
                spks = flow.spk_embed_affine_layer(F.normalize(embedding, dim=1))
                xs = flow.input_embedding(torch.clamp(token, min=0))
                keep = (~finalize).to(xs.dtype)  # final call: zero padding == embedded context x 0
                ctx = flow.input_embedding(torch.clamp(context, min=0)) * keep
                h = flow.pre_lookahead_layer(xs, context=ctx)
                h = h.repeat_interleave(flow.token_mel_ratio, dim=1)
                mu = h.transpose(1, 2).contiguous()
                n_after = torch._shape_as_tensor(h)[1] - torch._shape_as_tensor(prompt_feat)[1]
                zeros = torch.zeros(1, n_after, prompt_feat.size(2), dtype=prompt_feat.dtype)
                cond = torch.cat([prompt_feat, zeros], dim=1).transpose(1, 2).contiguous()
                return mu, spks, cond

        return FlowPrepWrapper(model.flow).eval()

    def cases(self, model, seed: int) -> dict[str, Case]:
        flow = model.flow
        look = int(flow.pre_lookahead_len)
        hop = chunk_tokens(model)
        pad = -PROMPT_TOKENS % hop
        # (case, prompt tokens, generated tokens incl. lookahead, finalize)
        plan = [
            ("offline", PROMPT_TOKENS, 60, True),
            ("first_chunk", 0, hop + look, False),
            ("steady_chunk", PROMPT_TOKENS, hop + pad + 2 * hop + look, False),
            ("final_chunk", PROMPT_TOKENS, 121, True),
        ]
        mel, spk_in = int(flow.output_size), int(flow.spk_embed_affine_layer.in_features)
        out: dict[str, Case] = {}
        for i, (case, n_prompt, n_gen, finalize) in enumerate(plan):
            rng = np.random.default_rng(seed * 1000 + i)
            prompt = rng.integers(0, flow.vocab_size, (1, n_prompt))
            gen = rng.integers(0, flow.vocab_size, (1, n_gen))
            if case == "offline":
                gen[0, 5] = -1
            prompt_feat = (-5.0 + 2.0 * rng.standard_normal((1, flow.token_mel_ratio * n_prompt, mel))).astype(
                np.float32
            )
            embedding = rng.standard_normal((1, spk_in)).astype(np.float32)
            # upstream streams non-final calls with streaming=True and the final one with streaming=False;
            # the pre-ODE part does not depend on it
            expected = upstream_pre_ode(model, gen, prompt, prompt_feat, embedding, not finalize, finalize)
            prefix = np.concatenate([prompt, gen], axis=1)
            if finalize:
                token, context = prefix, rng.integers(0, flow.vocab_size, (1, look))
            else:
                token, context = prefix[:, :-look], prefix[:, -look:]
            feed = {
                "token": token.astype(np.int64),
                "context": context.astype(np.int64),
                "finalize": np.array([finalize]),
                "embedding": embedding,
                "prompt_feat": prompt_feat,
            }
            out[case] = (feed, expected)
        return out


class EstimatorV3Exporter(EstimatorExporter):
    """The DiT velocity field. Same I/O, profiles, wrapper, cases (upstream's own module call) and noise data
    as the CosyVoice2 estimator; the spec, fp16 policy and the mask patch are the DiT's."""

    name = "flow.decoder.estimator"
    opset = 18
    trace_case = "steady_chunk"

    def spec(self, model) -> GraphSpec:
        flow = model.flow
        est = flow.decoder.estimator
        c = int(est.static_chunk_size)
        mel = int(flow.output_size)
        mu_dim = int(flow.pre_lookahead_layer.in_channels)
        spk = int(est.input_embed.spk_dim)
        return GraphSpec(
            graph=self.name,
            description="Flow-matching velocity field v(x, t | mu, spks, cond) of the CosyVoice3 flow decoder "
            f"(DiT, {len(est.transformer_blocks)} blocks of width {int(est.dim)}), for one Euler step with "
            "classifier-free guidance: batch row 0 is conditional, row 1 unconditional (mu, spks, cond zeroed). "
            "The runtime combines v = (1 + cfg) * v0 - cfg * v1 and steps x += dt * v.",
            **cfg_velocity_io(
                mel, mu_dim, spk, c, "flow.prep output mu", "estimated velocity (not multiplied by mask)"
            ),
            tolerances={
                "velocity": Tolerance(
                    atol=2e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation across the DiT's projections, grouped conv position embedding "
                    "(Mish), rotary attention softmax and tanh-GELU FFNs; measured <= 9.6e-7 on the tiny bundle's "
                    "cases (|velocity| up to ~2.3; the shared notes: <= 1.1e-6 traced at 256 frames, run at "
                    "100/173/256). 2e-4 still catches the other mask (full vs chunk differ by 7.2e-2 to 7.8e-2 "
                    "on the multi-chunk cases, tiny) or a DiT left in train mode (dropout 0.1, ~5e-2)",
                )
            },
            cases=[
                TestCase(
                    "first_chunk",
                    f"streaming=true, first chunk of a stream with no prompt: {c // int(flow.token_mel_ratio)} "
                    f"tokens -> {c} frames (one attention chunk)",
                ),
                TestCase(
                    "steady_chunk",
                    "streaming=true, prompt + three chunks: several attention chunks, "
                    "a partial last chunk, prompt mel in cond",
                ),
                TestCase("final_chunk", "streaming=false (full attention), odd length, late ODE time"),
            ],
            facts={**cfm_facts(model), "static_chunk_size": c, "velocity_masked": False},
        )

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp", "Softplus", "Tanh"),
            name_patterns=(r"time_embed",),
            trig_arguments=True,
            reason="LayerNorm statistics and attention softmax overflow or lose mass in fp16; the timestep "
            "embedding is sin/cos of 1000*t and the rotary tables sin/cos of frame index x inv_freq (up to "
            "3000 rad; fp16 spacing 2 rad there); Mish's softplus/tanh and the tanh-GELU",
        )
        velocity = Tolerance(
            atol=2e-2,
            rtol=5e-3,
            reason="fp16 unit roundoff u = 4.9e-4 over the DiT blocks with norms, softmax, rotary and time "
            "embeddings kept fp32: ORT-CPU fp16 measured max |err| 1.2e-3 (|velocity| <= 2.3) on the tiny "
            "bundle's first/steady/final cases; the CosyVoice2 estimator's budget (2e-2 + 5e-3 |v|). Initial "
            "budget at full size (22 blocks): not yet measured there nor on TensorRT, where a plain "
            "fp16 flag is reported to give NaN (v1-v3-export.md section 3)",
        )
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                {"velocity": velocity},
                ("tensorrt",),
                keep,
                doc="weights and compute fp16, I/O fp32 (TensorRT fp16 plans only until measured at full size)",
            )
        }

    @contextlib.contextmanager
    def patches(self, model):
        import cosyvoice.flow.DiT.dit as dit_mod

        saved = dit_mod.add_optional_chunk_mask
        dit_mod.add_optional_chunk_mask = traceable_chunk_mask
        try:
            yield
        finally:
            dit_mod.add_optional_chunk_mask = saved

    def wrapper(self, model):
        # DiT has dropout 0.1: the wrapper must be in eval mode, or exporting it flips the DiT to train mode
        return super().wrapper(model).eval()
