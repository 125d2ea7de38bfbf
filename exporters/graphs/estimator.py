"""`flow.decoder.estimator`: the flow-matching velocity field (CosyVoice2 `CausalConditionalDecoder`).

Same first six inputs, in upstream's order, as upstream's `export_onnx.py` (x, mask, mu, t, spks, cond;
CFG batch 2; dynamic time axis), plus a `streaming` flag. Upstream exports with `streaming=False`, so its
ONNX/TRT estimator silently uses full attention where the PyTorch streaming path uses block-causal chunk
masks; here the flag selects the mask inside the graph (chunk = `static_chunk_size` frames when true, the
whole sequence when false), so one graph reproduces both the streaming chunks and the final/offline call.
"""

from __future__ import annotations

import contextlib

import numpy as np

from exporters.graphs.base import NORM_SOFTMAX, Case, GraphExporter, typical_prompt_tokens, typical_utterance_tokens
from exporters.graphs.flow_common import ChunkMaskFlag, cfm_facts, flow_reference_inputs, traceable_chunk_mask
from specs.chunk_policy import ChunkPolicy
from specs.io_spec import Dim, DimRange, GraphSpec, ProfileSpec, TensorSpec, TestCase, Tolerance
from specs.precision import Fp32Keep, PrecisionPolicy

MAX_FRAMES = 3000  # 60 s of mel at 50 Hz, prompt included (upstream's TRT profile max)


def cfg_velocity_io(mel: int, mu_dim: int, spk: int, chunk: int, mu_doc: str, velocity_doc: str) -> dict:
    """Inputs, outputs and dims of a flow-matching velocity graph called once per Euler step with classifier-free
    guidance in one batch of 2 (row 0 conditional, row 1 with mu, spks, cond zeroed), as both families' flows are."""
    t = lambda n, s, d: TensorSpec(n, "float32", s, d)  # noqa: E731
    return {
        "inputs": [
            t("x", [2, mel, "frames"], "current ODE state; both rows equal"),
            t("mask", [2, 1, "frames"], "1.0 for valid frames (all ones for one utterance)"),
            t("mu", [2, mu_dim, "frames"], f"row 0: {mu_doc}; row 1: zeros"),
            t("t", [2], "ODE time of this step, both rows equal"),
            t("spks", [2, spk], "row 0: projected speaker embedding; row 1: zeros"),
            t("cond", [2, mel, "frames"], "row 0: prompt mel in the first frames, zeros after; row 1: zeros"),
            TensorSpec(
                "streaming",
                "bool",
                [1],
                f"true: block-causal attention with {chunk}-frame chunks (non-final streaming chunks); "
                "false: full attention (final chunk, offline)",
            ),
        ],
        "outputs": [t("velocity", [2, mel, "frames"], velocity_doc)],
        "dims": {
            "frames": Dim(1, 500, MAX_FRAMES, "mel frames of prompt + generated speech so far (50 Hz)", role="frames")
        },
    }


CFG_INPUTS = ("x", "mask", "mu", "t", "spks", "cond")  # upstream's estimator arguments, in its order


def cfg_batch(x: np.ndarray, mu: np.ndarray, t, spks: np.ndarray, cond: np.ndarray) -> dict[str, np.ndarray]:
    """One Euler step's CFG batch of 2 as upstream's solve_euler builds it (row 1: mu, spks, cond zeroed), for a
    state x (1, mel, frames) at ODE time t."""
    return {
        "x": np.concatenate([x, x]),
        "mask": np.ones((2, 1, mu.shape[2]), np.float32),
        "mu": np.concatenate([mu, np.zeros_like(mu)]),
        "t": np.array([t, t], np.float32),
        "spks": np.concatenate([spks, np.zeros_like(spks)]),
        "cond": np.concatenate([cond, np.zeros_like(cond)]),
    }


def upstream_velocity(est, feed: dict[str, np.ndarray], **kwargs) -> np.ndarray:
    """The upstream estimator on a `cfg_batch` feed, called as upstream's solve_euler calls it (`kwargs`: the
    family's flags, e.g. CosyVoice2's streaming)."""
    import torch

    with torch.no_grad():
        return est(*(torch.from_numpy(feed[k]) for k in CFG_INPUTS), **kwargs).numpy()


class EstimatorExporter(GraphExporter):
    name = "flow.decoder.estimator"
    opset = 18
    trace_case = "steady_chunk"

    def spec(self, model) -> GraphSpec:
        est = model.flow.decoder.estimator
        c = int(est.static_chunk_size)
        mel = int(model.flow.output_size)
        spk = int(model.flow.decoder.estimator.in_channels) - 3 * mel  # in = x + mu + spks + cond
        return GraphSpec(
            graph=self.name,
            description="Flow-matching velocity field v(x, t | mu, spks, cond) of the CosyVoice2 flow decoder "
            "(causal U-Net), for one Euler step with classifier-free guidance: batch row 0 is "
            "conditional, row 1 unconditional (mu, spks, cond zeroed). The runtime combines "
            "v = (1 + cfg) * v0 - cfg * v1 and steps x += dt * v.",
            **cfg_velocity_io(mel, mel, spk, c, "flow encoder output", "estimated velocity, times mask"),
            tolerances={
                "velocity": Tolerance(
                    atol=2e-4,
                    rtol=1e-4,
                    reason="fp32 reassociation across the U-Net's convs, attention softmax and GELU/Mish; measured "
                    "< 1e-5 at full size (output absmax ~4); 2e-4 still catches a dropped bias or a wrong "
                    "mask (errors >= 1e-2)",
                )
            },
            cases=[
                TestCase(
                    "first_chunk",
                    "streaming=true, first chunk of a stream with no prompt: 25 tokens "
                    "-> 50 frames (one attention chunk)",
                ),
                TestCase(
                    "steady_chunk",
                    "streaming=true, prompt + three chunks: several attention chunks, "
                    "a partial last chunk, prompt mel in cond",
                ),
                TestCase("final_chunk", "streaming=false (full attention), odd length, late ODE time"),
            ],
            facts={**cfm_facts(model), "static_chunk_size": c},
        )

    def profiles(self, spec: GraphSpec, p: ChunkPolicy) -> dict[str, list[ProfileSpec]]:
        """One profile per chunk mode: every flow call is one CFG batch of 2 over the whole prefix."""
        (frames,) = spec.dims_with_role("frames")
        top, pt, nt = spec.dims[frames].max, typical_prompt_tokens(p), typical_utterance_tokens(p)
        stream = DimRange(
            p.mel(1),
            p.mel(p.steady_prefix_tokens(pt)),
            top,
            f"min: final-only call of a 1-token stream without prompt; opt: first max-hop call after a "
            f"{pt}-token prompt ({p.steady_prefix_tokens(pt)} tokens); max: the graph's max (prompt + "
            "everything generated, recomputed on every call)",
        )
        offline = DimRange(
            p.mel(1),
            p.mel(pt + nt),
            top,
            f"min: a 1-token utterance; opt: {pt}-token prompt + {nt} generated tokens; max: the graph's max",
        )
        doc = "every flow call of the policy: one CFG batch of 2, whole prefix"
        return {
            "stream": [ProfileSpec("all_calls", doc, {frames: stream})],
            "offline": [ProfileSpec("all_calls", doc, {frames: offline})],
        }

    def variants(self, spec: GraphSpec) -> dict[str, PrecisionPolicy]:
        keep = Fp32Keep(
            ops=NORM_SOFTMAX + ("Sin", "Cos", "Exp", "Softplus"),
            name_patterns=(r"time_embeddings", r"time_mlp"),
            trig_arguments=True,
            reason="normalisation statistics and attention softmax overflow or lose mass in fp16; the timestep "
            "embedding is sin/cos of 1000*t (fp16 spacing at 1000 is 0.5 rad); Mish's softplus/exp",
        )
        velocity = Tolerance(
            atol=2e-2,
            rtol=5e-3,
            reason="fp16 unit roundoff u = 4.9e-4 over the U-Net's resnet/attention blocks, with norms, softmax, "
            "Mish and the time embedding (t in fp32 to sin/cos of 1000 t) kept fp32: ORT-CPU fp16 measured max "
            "|err| <= 2.4e-3 * max|velocity| (~5u; 9e-3 absolute, |velocity| <= 4.6) over 33 bundles of "
            "upstream's own init, tiny and medium, first/steady/final chunks (ci/sweep_export_gates.py); allowed "
            "2e-2 + 5e-3 |v| (~20u at the peaks), bound use <= 0.3. With t rounded to fp16 (0.24 rad at "
            "1000 t) or no fp32 rules the error is 0.23 (refused), so is a wrong mask or a dropped block (> 1). "
            "Not yet measured on TensorRT",
        )
        return {
            "fp16": PrecisionPolicy(
                "fp16",
                "float16",
                {"velocity": velocity},
                ("ort", "tensorrt"),
                keep,
                doc="weights and compute fp16, I/O fp32 (tts-export --fp16; TensorRT fp16 plans)",
            )
        }

    def wrapper(self, model):
        import torch

        class EstimatorWrapper(torch.nn.Module):
            def __init__(self, estimator):
                super().__init__()
                self.estimator = estimator

            def forward(self, x, mask, mu, t, spks, cond, streaming):
                ChunkMaskFlag.value = streaming
                try:
                    return self.estimator(x, mask, mu, t, spks, cond, streaming=True)
                finally:
                    ChunkMaskFlag.value = None

        return EstimatorWrapper(model.flow.decoder.estimator)

    @contextlib.contextmanager
    def patches(self, model):
        import cosyvoice.flow.decoder as decoder_mod

        saved = decoder_mod.add_optional_chunk_mask
        decoder_mod.add_optional_chunk_mask = traceable_chunk_mask
        try:
            yield
        finally:
            decoder_mod.add_optional_chunk_mask = saved

    def cases(self, model, seed: int) -> dict[str, Case]:
        est = model.flow.decoder.estimator
        out: dict[str, Case] = {}
        # (case, prompt tokens, generated tokens, streaming, ODE step)
        plan = [("first_chunk", 0, 25, True, 0), ("steady_chunk", 17, 75, True, 3), ("final_chunk", 17, 96, False, 8)]
        for i, (case, n_prompt, n_gen, streaming, step) in enumerate(plan):
            mu, spks, cond, x, t = flow_reference_inputs(model, seed + i, n_prompt, n_gen, step)
            feed = {**cfg_batch(x, mu, t, spks, cond), "streaming": np.array([streaming])}
            out[case] = (feed, {"velocity": upstream_velocity(est, feed, streaming=streaming)})
        return out

    def data(self, model):
        noise = model.flow.decoder.rand_noise.numpy().astype(np.float32)
        return {
            "flow.rand_noise": (
                noise,
                "CFM initial noise z (1, 80, 15000): upstream's fixed buffer "
                "(torch.manual_seed(0); randn) sliced [:, :, :frames] for every call",
            )
        }
