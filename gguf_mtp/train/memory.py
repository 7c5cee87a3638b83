"""What training one MTP head costs in memory, from a checkpoint's config.json.

    python -m gguf_mtp.train.memory CONFIG.json [--batch-size 8] [--seq-len 128] [-K 3]

The trained parameters are the MTP block (``eh_proj`` 2H x H, the norms, one
decoder layer: attention, dense MLP or MoE experts); the embedding and LM head
are the trunk's, frozen and shared, held once in bf16. AdamW in fp32: weights,
gradients and two moments, 16 bytes per trained parameter (bf16 mixed
precision keeps an fp32 master copy: the same 16 plus 2). Activations at the
default window are dominated by the logits: K recursive steps x batch x window
x vocabulary x fp32, kept for the backward pass with their log-softmax (x 2).
The block's own activations are approximated as 12 x H per token per step.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

GiB = 1 << 30


@dataclass
class HeadMemory:
    trained_params: int
    frozen_params: int
    weights_optimizer_bytes: int
    frozen_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_optimizer_bytes + self.frozen_bytes + self.activation_bytes


def _attention_params(c: dict) -> int:
    H = c["hidden_size"]
    if c.get("kv_lora_rank"):            # multi-head latent attention (DeepSeek-V3)
        nh = c["num_attention_heads"]
        qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
        q = H * c["q_lora_rank"] + c["q_lora_rank"] * nh * qk if c.get("q_lora_rank") else H * nh * qk
        kv = H * (c["kv_lora_rank"] + c["qk_rope_head_dim"]) + c["kv_lora_rank"] * nh * (
            c["qk_nope_head_dim"] + c["v_head_dim"])
        return q + kv + nh * c["v_head_dim"] * H
    nh = c["num_attention_heads"]
    nkv = c.get("num_key_value_heads", nh)
    hd = c.get("head_dim") or H // nh
    # Qwen3.5 / Qwen3-Next gate the attention output: q_proj is twice as wide
    gate = 2 if c.get("attn_output_gate", str(c.get("model_type", "")).startswith(("qwen3_5", "qwen3_next"))) else 1
    return H * nh * hd * gate + 2 * H * nkv * hd + nh * hd * H + 2 * hd     # + q/k norms


def _mlp_params(c: dict) -> int:
    H = c["hidden_size"]
    n_exp = c.get("n_routed_experts") or c.get("num_experts") or 0
    if n_exp:
        inter = c.get("moe_intermediate_size") or c["intermediate_size"]
        shared = (c.get("n_shared_experts") or 0) * 3 * H * inter
        shared += 3 * H * (c.get("shared_expert_intermediate_size") or 0)
        return n_exp * 3 * H * inter + shared + n_exp * H
    return 3 * H * c["intermediate_size"]


def head_memory(config: dict, batch_size: int = 8, seq_len: int = 128, n_predict: int = 3,
                mixed_precision: bool = False) -> HeadMemory:
    c = {**config, **config.get("text_config", {})}
    H, V = c["hidden_size"], c["vocab_size"]
    n_layers = int(c.get("num_nextn_predict_layers") or c.get("mtp_num_hidden_layers") or 1)
    block = 2 * H * H + 5 * H + _attention_params(c) + _mlp_params(c)   # eh_proj, 5 norms
    trained = n_layers * block
    frozen = V * H * (1 if c.get("tie_word_embeddings") else 2)
    per_param = 18 if mixed_precision else 16
    tokens = batch_size * seq_len
    logits = n_predict * tokens * V * 4 * 2
    hidden = n_predict * tokens * H * 4 * 12
    return HeadMemory(trained, frozen, trained * per_param, frozen * 2, logits + hidden)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Memory to train one MTP head, from a config.json.")
    ap.add_argument("config")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("-K", "--n-predict", type=int, default=3)
    ap.add_argument("--bf16", action="store_true", help="mixed precision (fp32 master weights)")
    a = ap.parse_args(argv)
    with open(a.config) as f:
        m = head_memory(json.load(f), a.batch_size, a.seq_len, a.n_predict, a.bf16)
    print(f"trained parameters {m.trained_params / 1e9:.2f} B; frozen embedding + LM head "
          f"{m.frozen_params / 1e9:.2f} B")
    print(f"weights + gradients + AdamW {m.weights_optimizer_bytes / GiB:.1f} GiB, frozen (bf16) "
          f"{m.frozen_bytes / GiB:.1f} GiB, activations {m.activation_bytes / GiB:.1f} GiB; "
          f"total {m.total_bytes / GiB:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
