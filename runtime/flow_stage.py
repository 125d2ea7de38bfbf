"""Flow stage of the runtime: speech tokens -> mel, as upstream CosyVoice2's `token2wav` computes its mel.

One call = one upstream `flow.inference` call: the `flow.encoder` graph on the whole prefix (prompt +
every generated token so far; upstream keeps no encoder cache), then a fixed-step Euler ODE over the
`flow.decoder.estimator` graph with classifier-free guidance, starting from the pack's fixed noise, then
the prompt frames and the frames already emitted are sliced off. Every constant comes from the pack:
graph spec facts, the typed chunk policy and the `flow.rand_noise` data tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.ort import OrtRunner
from backends.runner import Runner
from specs.errors import ToolError
from specs.pack import Pack

ENCODER = "flow.encoder"
ESTIMATOR = "flow.decoder.estimator"
# The graph that turns tokens into the ODE's condition (mu, spks, cond), per family: CosyVoice2's conformer
# encoder, CosyVoice3's embedding + pre-lookahead layer. Same inputs and outputs (v3 has no `streaming` input:
# no attention there).
CONDITION_GRAPHS = {"cosyvoice2": ENCODER, "cosyvoice3": "flow.prep"}


def ode_schedule(n_timesteps: int, scheduler: str) -> list[tuple[np.float32, np.float32]]:
    """(t fed to the estimator, dt) per Euler step, in float32 as upstream's solve_euler accumulates them:
    t starts at t_span[0], then t += dt and dt = t_span[k + 1] - t (not t_span[k + 1] - t_span[k])."""
    f32 = np.float32
    t_span = np.linspace(0.0, 1.0, n_timesteps + 1).astype(f32)
    if scheduler == "cosine":
        angle = (t_span * f32(0.5)) * f32(np.pi)  # float32 products, as torch computes them
        t_span = f32(1.0) - np.cos(angle.astype(np.float64)).astype(f32)  # cos correctly rounded to float32
    elif scheduler != "linear":
        raise ToolError(ESTIMATOR, f"fact t_scheduler is {scheduler!r}", "'cosine' or 'linear'")
    steps = []
    t, dt = t_span[0], f32(t_span[1] - t_span[0])
    for k in range(1, n_timesteps + 1):
        steps.append((t, dt))
        t = f32(t + dt)
        if k < n_timesteps:
            dt = f32(t_span[k + 1] - t)
    return steps


@dataclass
class FlowCondition:
    """What the ODE is conditioned on, from one `flow.encoder` call (batch 1)."""

    mu: np.ndarray  # (1, mel, frames)
    spks: np.ndarray  # (1, mel)
    cond: np.ndarray  # (1, mel, frames)


def euler_cfg(
    estimator: Runner,
    c: FlowCondition,
    x0: np.ndarray,
    steps: list[tuple[np.float32, np.float32]],
    cfg_rate: np.float32,
    extra_feed: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Upstream's solve_euler with classifier-free guidance (CosyVoice 1, 2 and 3 alike): from x0 (1, mel, frames),
    one estimator call per `ode_schedule` step on the batch [conditional, unconditional], x += dt * ((1 + r) v_c -
    r v_u). `extra_feed`: inputs only some estimators take (`streaming`: CosyVoice2 and 3, not 1). Returns the
    mel, float32."""
    frames = c.mu.shape[2]
    x: np.ndarray = np.array(x0, dtype=np.float32)
    zeros = np.zeros_like(c.mu)
    feed = {
        "mask": np.ones((2, 1, frames), np.float32),
        "mu": np.concatenate([c.mu, zeros]),  # row 1: unconditional
        "spks": np.concatenate([c.spks, np.zeros_like(c.spks)]),
        "cond": np.concatenate([c.cond, zeros]),
        **(extra_feed or {}),
    }
    guided, unguided = np.float32(1.0) + cfg_rate, cfg_rate
    for t, dt in steps:
        feed["x"] = np.concatenate([x, x])
        feed["t"] = np.array([t, t], np.float32)
        v = estimator.run(feed)["velocity"]
        x = x + dt * (guided * v[0:1] - unguided * v[1:2])
    return x


class FlowStage:
    """`flow.encoder` + Euler/CFG over `flow.decoder.estimator`, reading every constant from the pack."""

    def __init__(self, pack: Pack, device: str = "cpu", threads: int | None = None, sessions: dict | None = None):
        """`sessions` may supply graph name -> session objects with the OrtRunner `run` API (TensorRT plans)."""
        self.encoder_graph = CONDITION_GRAPHS[pack.family]
        enc, est = pack.graph(self.encoder_graph), pack.graph(ESTIMATOR)
        sessions = sessions or {}
        self.encoder = sessions.get(self.encoder_graph) or OrtRunner(
            enc.onnx_path, enc.spec(), device=device, threads=threads
        )
        self.encoder_inputs = set(enc.spec().input_names)
        self.estimator = sessions.get(ESTIMATOR) or OrtRunner(est.onnx_path, est.spec(), device=device, threads=threads)
        ode_facts = self.estimator.spec.facts
        self.lookahead = pack.chunk_policy.pre_lookahead_len
        self.token_mel_ratio = pack.chunk_policy.token_mel_ratio
        if ode_facts.get("solver") != "euler":
            raise ToolError(est.spec_path, f"fact solver is {ode_facts.get('solver')!r}", "'euler'")
        self.mel_bins = int(ode_facts["mel_bins"])
        self.cfg_rate = np.float32(ode_facts["inference_cfg_rate"])
        self.steps = ode_schedule(int(ode_facts["n_timesteps"]), str(ode_facts["t_scheduler"]))
        noise_ref = str(ode_facts["noise"])
        if not noise_ref.startswith("data:"):
            raise ToolError(est.spec_path, f"fact noise is {noise_ref!r}", "'data:NAME' naming a pack data tensor")
        self.noise = pack.data(noise_ref[len("data:") :])  # (1, mel, max_frames), memory-mapped

    # ---- the two graphs -------------------------------------------------------------------------------
    def encode(
        self, prefix: np.ndarray, prompt_feat: np.ndarray, embedding: np.ndarray, streaming: bool, finalize: bool
    ) -> FlowCondition:
        """`flow.encoder` on the whole prefix (prompt + generated tokens; when not finalizing its last
        `lookahead` tokens are the lookahead context, as upstream splits them)."""
        prefix = np.asarray(prefix, dtype=np.int64).reshape(1, -1)
        token: np.ndarray
        context: np.ndarray
        if finalize:
            token, context = prefix, np.zeros((1, self.lookahead), np.int64)  # context ignored
        else:
            if prefix.shape[1] <= self.lookahead:
                raise ToolError(
                    self.encoder_graph,
                    f"a non-final call got {prefix.shape[1]} tokens",
                    f"more than the {self.lookahead} lookahead tokens",
                )
            token, context = prefix[:, : -self.lookahead], prefix[:, -self.lookahead :]
        prompt_feat = np.ascontiguousarray(prompt_feat, dtype=np.float32).reshape(1, -1, self.mel_bins)
        if prompt_feat.shape[1] > self.token_mel_ratio * token.shape[1]:
            raise ToolError(
                self.encoder_graph,
                f"prompt_feat has {prompt_feat.shape[1]} frames",
                f"at most {self.token_mel_ratio} x {token.shape[1]} tokens",
            )
        feed = {
            "token": np.ascontiguousarray(token),
            "context": np.ascontiguousarray(context),
            "finalize": np.array([finalize]),
            "streaming": np.array([streaming]),
            "embedding": np.ascontiguousarray(embedding, dtype=np.float32).reshape(1, -1),
            "prompt_feat": prompt_feat,
        }
        out = self.encoder.run({k: v for k, v in feed.items() if k in self.encoder_inputs})
        return FlowCondition(out["mu"], out["spks"], out["cond"])

    def solve(self, c: FlowCondition, streaming: bool) -> np.ndarray:
        """Euler steps with CFG from the fixed noise; returns the mel (1, mel, frames), float32."""
        frames = c.mu.shape[2]
        if frames > self.noise.shape[2]:
            raise ToolError(ESTIMATOR, f"{frames} mel frames", f"at most {self.noise.shape[2]} (the pack's noise)")
        x0 = self.noise[:, :, :frames]
        return euler_cfg(self.estimator, c, x0, self.steps, self.cfg_rate, {"streaming": np.array([streaming])})

    # ---- one upstream token2wav flow call -------------------------------------------------------------
    def token2mel(
        self,
        token: np.ndarray,
        prompt_token: np.ndarray,
        prompt_feat: np.ndarray,
        embedding: np.ndarray,
        token_offset: int = 0,
        streaming: bool = False,
        finalize: bool = True,
    ) -> np.ndarray:
        """Mel frames of generated tokens from `token_offset` on, as upstream token2wav slices them.

        token: generated tokens so far (incl. the lookahead tokens when not finalizing); prompt_token:
        the flow prompt tokens; prompt_feat (1, frames, mel): the prompt mel; embedding (1, 192)."""
        prompt_token = np.asarray(prompt_token, dtype=np.int64).reshape(1, -1)
        prefix = np.concatenate([prompt_token, np.asarray(token, dtype=np.int64).reshape(1, -1)], axis=1)
        c = self.encode(prefix, prompt_feat, embedding, streaming, finalize)
        mel = self.solve(c, streaming)
        prompt_frames = np.asarray(prompt_feat).reshape(1, -1, self.mel_bins).shape[1]
        return mel[:, :, prompt_frames + self.token_mel_ratio * int(token_offset) :]
