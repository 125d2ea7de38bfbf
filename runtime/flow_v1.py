"""Flow stage of the runtime for CosyVoice 1: speech tokens -> mel, as upstream `MaskedDiffWithXvec.inference`.

One call = one upstream flow call (offline: the whole utterance; streaming: one window of generated tokens):
the `flow.encoder` graph on prompt + window tokens (mu, spks, cond), then upstream `ConditionalCFM.forward`:
z = noise (drawn afresh per call upstream; here supplied by the caller, seeded: `FlowNoise`), the flow cache of
the previous call overwriting the first frames of z and mu, the new cache cut from z and mu, then a fixed-step
Euler ODE over the `flow.decoder.estimator` graph with classifier-free guidance (the same schedule and CFG
arithmetic as CosyVoice2: runtime/flow_stage.py). The prompt frames are sliced off the result. Every constant
comes from the pack: graph spec facts and the typed chunk policy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from backends.ort import OrtRunner
from runtime.flow_stage import ENCODER, ESTIMATOR, FlowCondition, euler_cfg, ode_schedule
from specs.errors import ToolError
from specs.pack import Pack


@dataclass
class FlowCache:
    """Upstream's flow_cache (1, mel, c, 2) as two arrays: z = [..., 0], mu = [..., 1]; c = 0 before the first call."""

    z: np.ndarray  # (1, mel, c)
    mu: np.ndarray  # (1, mel, c)

    @classmethod
    def empty(cls, mel_bins: int) -> FlowCache:
        return cls(np.zeros((1, mel_bins, 0), np.float32), np.zeros((1, mel_bins, 0), np.float32))

    @property
    def frames(self) -> int:
        return int(self.z.shape[2])


class V1FlowStage:
    """`flow.encoder` + upstream v1's CFM (flow cache, Euler/CFG over `flow.decoder.estimator`)."""

    def __init__(self, pack: Pack, device: str = "cpu", threads: int | None = None, sessions: dict | None = None):
        """`sessions` may supply graph name -> session objects with the OrtRunner `run` API (TensorRT plans)."""
        enc, est = pack.graph(ENCODER), pack.graph(ESTIMATOR)
        sessions = sessions or {}
        self.encoder = sessions.get(ENCODER) or OrtRunner(enc.onnx_path, enc.spec(), device=device, threads=threads)
        self.estimator = sessions.get(ESTIMATOR) or OrtRunner(est.onnx_path, est.spec(), device=device, threads=threads)
        facts, enc_facts = self.estimator.spec.facts, self.encoder.spec.facts
        if facts.get("solver") != "euler":
            raise ToolError(est.spec_path, f"fact solver is {facts.get('solver')!r}", "'euler'")
        if facts.get("noise") != "runtime":
            raise ToolError(est.spec_path, f"fact noise is {facts.get('noise')!r}", "'runtime' (a CosyVoice 1 pack)")
        self.mel_bins = int(facts["mel_bins"])
        self.cfg_rate = np.float32(facts["inference_cfg_rate"])
        self.steps = ode_schedule(int(facts["n_timesteps"]), str(facts["t_scheduler"]))
        rule = enc_facts["mel_len_rule"]
        self.mel_num, self.mel_div = int(rule["numerator"]), int(rule["divisor"])
        self.cache_frames = pack.chunk_policy.flow_cache_frames
        if self.cache_frames < 1:
            raise ToolError(
                pack.root / "manifest.json",
                f"audio.chunk_policy.flow_cache_frames is {self.cache_frames}",
                "a CosyVoice 1 pack (window stream, flow cache of 34 frames)",
            )

    def frames(self, n_tokens: int, prompt_frames: int) -> int:
        """Mel frames of a call on `n_tokens` generated tokens after a `prompt_frames`-frame prompt: the noise a
        caller draws for it is (1, mel_bins, frames)."""
        return int(prompt_frames) + int(n_tokens) * self.mel_num // self.mel_div

    # ---- the two graphs -------------------------------------------------------------------------------
    def encode(self, token, prompt_token, prompt_feat, embedding) -> FlowCondition:
        token = np.asarray(token, dtype=np.int64).reshape(1, -1)
        prompt_token = np.asarray(prompt_token, dtype=np.int64).reshape(1, -1)
        prompt_feat = np.ascontiguousarray(prompt_feat, dtype=np.float32).reshape(1, -1, self.mel_bins)
        if (prompt_token.shape[1] == 0) != (prompt_feat.shape[1] == 0):
            raise ToolError(
                ENCODER,
                f"a prompt of {prompt_token.shape[1]} tokens and {prompt_feat.shape[1]} mel frames",
                "both or neither (upstream's regulator needs prompt frames for prompt tokens)",
            )
        out = self.encoder.run(
            {
                "prompt_token": np.ascontiguousarray(prompt_token),
                "token": np.ascontiguousarray(token),
                "embedding": np.ascontiguousarray(embedding, dtype=np.float32).reshape(1, -1),
                "prompt_feat": prompt_feat,
            }
        )
        return FlowCondition(out["mu"], out["spks"], out["cond"])

    def solve(self, c: FlowCondition, z: np.ndarray) -> np.ndarray:
        """Euler steps with CFG from z; returns the mel (1, mel, frames), float32 (upstream solve_euler)."""
        return euler_cfg(self.estimator, c, z, self.steps, self.cfg_rate)

    # ---- one upstream flow.inference call -------------------------------------------------------------
    def inference(
        self,
        token: np.ndarray,
        prompt_token: np.ndarray,
        prompt_feat: np.ndarray,
        embedding: np.ndarray,
        noise: np.ndarray,
        cache: FlowCache | None = None,
    ) -> tuple[np.ndarray, FlowCache]:
        """(mel of the generated tokens (1, mel, mel_len2), the cache for the next call).

        token (1, N): this call's generated tokens (a stream window, or the whole utterance); prompt_token (1, P)
        and prompt_feat (1, prompt_frames, mel): the flow prompt (both empty without one); embedding (1, 192);
        noise (1, mel, prompt_frames + mel_len2): this call's z (`frames()` gives its length); cache: the previous
        call's (None or empty on the first call of a request)."""
        c = self.encode(token, prompt_token, prompt_feat, embedding)
        frames = c.mu.shape[2]
        z = np.array(noise, dtype=np.float32)
        if z.shape != (1, self.mel_bins, frames):
            raise ToolError(ESTIMATOR, f"noise of shape {list(z.shape)}", f"(1, {self.mel_bins}, {frames})")
        mu = c.mu.copy()
        if cache is not None and cache.frames:
            if cache.frames > frames:
                raise ToolError(ESTIMATOR, f"a flow cache of {cache.frames} frames", f"at most this call's {frames}")
            z[:, :, : cache.frames] = cache.z
            mu[:, :, : cache.frames] = cache.mu
        prompt_frames = np.asarray(prompt_feat).reshape(1, -1, self.mel_bins).shape[1]
        # prompt frames + the last cache_frames (all of them in a shorter call, as Python's z[:, :, -34:] slices)
        tail = max(frames - self.cache_frames, 0)
        new = FlowCache(
            np.concatenate([z[:, :, :prompt_frames], z[:, :, tail:]], axis=2),
            np.concatenate([mu[:, :, :prompt_frames], mu[:, :, tail:]], axis=2),
        )
        mel = self.solve(FlowCondition(mu, c.spks, c.cond), z)
        return mel[:, :, prompt_frames:], new
