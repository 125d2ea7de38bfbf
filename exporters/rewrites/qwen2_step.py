"""Export-only forward of CosyVoice2's LM: one step of the Qwen2 backbone with an explicit KV cache, plus the
`llm_decoder` head on the last position. Written for `torch.onnx.export` (TorchScript path):

- the upstream weights are used as they are (projections, RMSNorms, MLPs and the head are the upstream
  modules); only RoPE and attention are re-written, as plain tensor ops with no Python branch on shapes,
  so one traced graph serves prefill (zero-length past), single-token decode and multi-token extension;
- no `scaled_dot_product_attention`: matmul / masked softmax / matmul, which every ONNX backend runs;
- grouped-query attention without repeating K/V: the query heads sharing one KV head are folded into the
  row axis, so a decode step reads the cache once instead of `num_heads / num_kv_heads` times;
- decode is bound by reading the weights once per step, so the graph is kept lean for it: q/k/v and
  gate/up projections are each one MatMul over concatenated upstream weights, every reshape has a
  constant target (no per-layer Shape/Gather chains), RoPE tables and the mask are built once per call;
- the attention mask is built in the graph from the `attention_mask` input (valid cache slots) and the
  cache length: query i (cache slot past + i) sees key slot j iff j <= past + i and attention_mask[j] == 1.
  `position_ids` only drive RoPE.
"""

from __future__ import annotations

import torch


def fused_linear(*linears) -> torch.nn.Linear:
    """One Linear computing the given upstream Linears side by side (outputs concatenated)."""
    has_bias = [m.bias is not None for m in linears]
    fused = torch.nn.Linear(linears[0].in_features, sum(m.out_features for m in linears), bias=all(has_bias))
    if any(has_bias) and not all(has_bias):
        raise ValueError("cannot fuse linears with and without bias")
    with torch.no_grad():
        fused.weight.copy_(torch.cat([m.weight for m in linears], dim=0))
        if fused.bias is not None:
            fused.bias.copy_(torch.cat([m.bias for m in linears], dim=0))
    return fused.eval()


class Qwen2Step(torch.nn.Module):
    """forward(inputs_embeds, attention_mask, position_ids, past_key_0, past_value_0, ...) ->
    (logits, present_key_0, present_value_0, ...)."""

    def __init__(self, qwen2lm):
        super().__init__()
        backbone = qwen2lm.llm.model.model  # transformers Qwen2Model inside upstream's Qwen2Encoder
        cfg = backbone.config
        rope = backbone.rotary_emb
        if getattr(rope, "rope_type", "default") != "default" or float(rope.attention_scaling) != 1.0:
            raise NotImplementedError(f"RoPE type {rope.rope_type!r} (only Qwen2's default RoPE is exported)")
        if getattr(cfg, "use_sliding_window", False):
            raise NotImplementedError("Qwen2 sliding-window attention is not exported")
        self.layers = backbone.layers
        self.qkv = torch.nn.ModuleList(
            fused_linear(layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)
            for layer in backbone.layers
        )
        self.gate_up = torch.nn.ModuleList(
            fused_linear(layer.mlp.gate_proj, layer.mlp.up_proj) for layer in backbone.layers
        )
        self.norm = backbone.norm
        self.head = qwen2lm.llm_decoder
        self.num_heads = int(cfg.num_attention_heads)
        self.num_kv_heads = int(cfg.num_key_value_heads)
        self.head_dim = int(getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads)
        self.groups = self.num_heads // self.num_kv_heads
        self.intermediate = int(cfg.intermediate_size)
        self.scale = self.head_dim**-0.5
        self.register_buffer("inv_freq", rope.inv_freq.detach().clone().float(), persistent=False)

    def rope_tables(self, position_ids):
        """cos/sin (1, 1, S, head_dim) for the given positions, as HF computes them (fp32, halves repeated)."""
        freqs = position_ids[0].float().unsqueeze(1) * self.inv_freq.unsqueeze(0)  # (S, head_dim/2)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos()[None, None], emb.sin()[None, None]

    def rotate(self, x, cos, sin):
        half = self.head_dim // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def attention_bias(self, attention_mask, past_len, seq_len):
        """(groups*S, T) additive mask, rows in (group, query) order: 0 where query slot past+i may see key
        slot j, float32 min elsewhere."""
        total = attention_mask.shape[1]
        key_slot = torch.arange(total, device=attention_mask.device)
        query_slot = torch.arange(seq_len, device=attention_mask.device) + past_len
        allowed = (key_slot.unsqueeze(0) <= query_slot.unsqueeze(1)) & (attention_mask[0] != 0).unsqueeze(0)
        zero = torch.zeros((), dtype=torch.float32)
        bias = torch.where(allowed, zero, torch.full((), torch.finfo(torch.float32).min))
        return bias.repeat(self.groups, 1)

    def attend(self, attn, qkv, h, cos, sin, bias, past_k, past_v):
        nh, nkv, hd = self.num_heads, self.num_kv_heads, self.head_dim
        q, k, v = qkv(h).split([nh * hd, nkv * hd, nkv * hd], dim=-1)
        q = self.rotate(q.reshape(1, -1, nh, hd).transpose(1, 2), cos, sin)  # (1, heads, S, d)
        k = self.rotate(k.reshape(1, -1, nkv, hd).transpose(1, 2), cos, sin)
        keys = torch.cat((past_k, k), dim=2)  # (1, kv_heads, T, d): the present cache
        values = torch.cat((past_v, v.reshape(1, -1, nkv, hd).transpose(1, 2)), dim=2)
        # Query head h uses KV head h // groups: fold the group into the row axis, (1, kv, groups*S, d).
        scores = torch.matmul(q.reshape(1, nkv, -1, hd), keys.transpose(2, 3)) * self.scale + bias
        out = torch.matmul(torch.softmax(scores, dim=-1), values).reshape(1, nh, -1, hd)
        return attn.o_proj(out.transpose(1, 2).reshape(1, -1, nh * hd)), keys, values

    def mlp(self, layer, gate_up, h):
        gate, up = gate_up(h).split([self.intermediate, self.intermediate], dim=-1)
        return layer.mlp.down_proj(layer.mlp.act_fn(gate) * up)

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        past_len = past[0].shape[2]
        cos, sin = self.rope_tables(position_ids)
        bias = self.attention_bias(attention_mask, past_len, inputs_embeds.shape[1])
        h = inputs_embeds
        presents = []
        for i, layer in enumerate(self.layers):
            a, keys, values = self.attend(
                layer.self_attn, self.qkv[i], layer.input_layernorm(h), cos, sin, bias, past[2 * i], past[2 * i + 1]
            )
            h = h + a
            h = h + self.mlp(layer, self.gate_up[i], layer.post_attention_layernorm(h))
            presents += [keys, values]
        last = self.norm(h[:, -1, :])  # (1, hidden): only the last position is scored
        return (self.head(last), *presents)
