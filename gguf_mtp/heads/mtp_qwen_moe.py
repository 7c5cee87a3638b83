"""PyTorch MTP heads of Qwen3.5-MoE (GGUF arch ``qwen35moe``) and Qwen3-Next
(``qwen3next``) targets.

The MTP block is the Qwen layout: one fusion (``mtp.fc`` over
``[pre_fc_norm_embedding(e); pre_fc_norm_hidden(h)]``, embedding first) and one
shared-head norm (``mtp.norm``) in block N, shared by the stack of decoder
layers ``mtp.layers.i`` (block N + i): full attention with the output gate
and q/k norms, sparse MoE with a sigmoid-gated shared expert. The embedding
and LM head are the trunk's. The decoder layer is transformers' own
(``Qwen3_5MoeDecoderLayer`` / ``Qwen3NextDecoderLayer``), so the module
computes what llama.cpp's MTP graph computes.

GGUF tensor -> heads state (``mtp.`` + name), with the converter's transform
and its inverse:

=====================================  ==========================================  ==================
GGUF (N = trunk depth)                 heads state                                 transform
=====================================  ==========================================  ==================
``blk.N.nextn.enorm``                  ``pre_fc_norm_embedding.weight``            GGUF = 1 + w
``blk.N.nextn.hnorm``                  ``pre_fc_norm_hidden.weight``               GGUF = 1 + w
``blk.N.nextn.eh_proj``                ``fc.weight``                               none
``blk.N.nextn.shared_head_norm``       ``norm.weight``                             GGUF = 1 + w
``blk.{N+i}.attn_norm``                ``layers.i.input_layernorm.weight``         GGUF = 1 + w
``blk.{N+i}.attn_{q,k,v,output}``      ``layers.i.self_attn.{q,k,v,o}_proj.weight``  none (q keeps the gate rows)
``blk.{N+i}.attn_{q,k}_norm``          ``layers.i.self_attn.{q,k}_norm.weight``    GGUF = 1 + w
``blk.{N+i}.post_attention_norm``      ``layers.i.post_attention_layernorm.weight``  GGUF = 1 + w
``blk.{N+i}.ffn_gate_inp``             ``layers.i.mlp.gate.weight``                none
``blk.{N+i}.ffn_{gate,up}_exps``       ``layers.i.mlp.experts.gate_up_proj``       [E,I,H] x2 <-> [E,2I,H]
``blk.{N+i}.ffn_down_exps``            ``layers.i.mlp.experts.down_proj``          none ([E,H,I])
``blk.{N+i}.ffn_{gate,up,down}_shexp`` ``layers.i.mlp.shared_expert.*_proj.weight``  none
``blk.{N+i}.ffn_gate_inp_shexp``       ``layers.i.mlp.shared_expert_gate.weight``  none ([1,H])
=====================================  ==========================================  ==================

The checkpoint stores experts one by one (``mlp.experts.{e}.{gate,up,down}_proj``);
the heads keep transformers' fused form, which is what the GGUF stacks.
"""

from __future__ import annotations

import importlib

from torch import nn

from . import tensor_map
from .common import (
    GGUFLayout,
    GGUFView,
    HeadsFamily,
    MTPHeads,
    TensorRule,
    module_names,
    shared_embed_and_head,
    table_rules,
)

#: GGUF arch -> (transformers module, class-name prefix, config class, rotary class)
_CLASSES = {
    "qwen35moe": ("qwen3_5_moe", "Qwen3_5Moe", "Qwen3_5MoeTextConfig", "Qwen3_5MoeTextRotaryEmbedding"),
    "qwen3next": ("qwen3_next", "Qwen3Next", "Qwen3NextConfig", "Qwen3NextRotaryEmbedding"),
}

#: FusedMTP's own module names -> the Qwen checkpoint's
_FUSION_NAMES = {"enorm.weight": "pre_fc_norm_embedding.weight", "hnorm.weight": "pre_fc_norm_hidden.weight",
                 "eh_proj.weight": "fc.weight", "head_norm.weight": "norm.weight"}


def _classes(arch: str):
    module, prefix, config_cls, rotary = _CLASSES[arch]
    m = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    return (getattr(m, config_cls), getattr(m, prefix + "DecoderLayer"), getattr(m, prefix + "RMSNorm"),
            getattr(m, rotary))


def config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    """transformers config kwargs of the MTP decoder layers (full attention)."""
    key_len = int(view.need("attention.key_length"))
    rope_dims = int(view.kv("rope.dimension_count", key_len))
    vocab, hidden = view.shape("token_embd.weight")
    n_v_heads = int(view.kv("ssm.time_step_rank", 1))
    cfg = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "num_hidden_layers": n_heads,
        "layer_types": ["full_attention"] * n_heads,
        "num_attention_heads": int(view.need("attention.head_count")),
        "num_key_value_heads": int(view.need("attention.head_count_kv")),
        "head_dim": key_len,
        "rms_norm_eps": float(view.need("attention.layer_norm_rms_epsilon")),
        "num_experts": int(view.need("expert_count")),
        "num_experts_per_tok": int(view.need("expert_used_count")),
        "moe_intermediate_size": int(view.need("expert_feed_forward_length")),
        "shared_expert_intermediate_size": int(view.need("expert_shared_feed_forward_length")),
        "norm_topk_prob": True,
        "linear_conv_kernel_dim": int(view.kv("ssm.conv_kernel", 4)),
        "linear_key_head_dim": int(view.kv("ssm.state_size", 128)),
        "linear_num_key_heads": int(view.kv("ssm.group_count", 16)),
        "linear_num_value_heads": n_v_heads,
        "linear_value_head_dim": int(view.kv("ssm.inner_size", 128 * n_v_heads)) // n_v_heads,
        "max_position_embeddings": int(view.kv("context_length", 262144)),
        "attention_bias": False,
        "tie_word_embeddings": "output.weight" not in view.tensors,
    }
    theta = float(view.kv("rope.freq_base", 10000.0))
    if view.arch == "qwen3next":
        cfg.update(rope_theta=theta, partial_rotary_factor=rope_dims / key_len, decoder_sparse_step=1,
                   mlp_only_layers=[], intermediate_size=int(view.kv("feed_forward_length", 0) or 0) or None)
        if cfg["intermediate_size"] is None:
            del cfg["intermediate_size"]
    else:
        # the converter pads transformers' three M-RoPE sections (t, h, w) with a 0 to four
        rope = {"rope_type": "default", "rope_theta": theta, "partial_rotary_factor": rope_dims / key_len,
                "mrope_interleaved": True}
        sections = [int(x) for x in (view.kv("rope.dimension_sections") or [])][:3]
        if sections:
            rope["mrope_section"] = sections
        cfg["rope_parameters"] = rope
    return cfg


def rules(layout: GGUFLayout) -> list[TensorRule]:
    return table_rules(tensor_map.BY_GGUF_ARCH[layout.arch], layout)


def build(layout: GGUFLayout, view: GGUFView, state: dict) -> MTPHeads:
    from .fused import FusedMTP, eager_config

    config_cls, layer_cls, norm_cls, rotary_cls = _classes(layout.arch)
    cfg = eager_config(config_cls.from_dict(dict(layout.config)), _experts_implementation="eager")
    hidden, eps = cfg.hidden_size, cfg.rms_norm_eps
    embed, lm_head = shared_embed_and_head(view, layout.tied)
    layers = nn.ModuleList(layer_cls(cfg, i) for i in range(layout.n_heads))
    fused = FusedMTP(enorm=norm_cls(hidden, eps=eps), hnorm=norm_cls(hidden, eps=eps),
                     eh_proj=nn.Linear(2 * hidden, hidden, bias=False), layers=layers,
                     head_norm=norm_cls(hidden, eps=eps), embed=embed, lm_head=lm_head,
                     rotary_emb=rotary_cls(cfg))
    names = module_names("mtps.0.", fused, "", _FUSION_NAMES, skip=("embed.", "lm_head.", "rotary_emb."))
    heads = MTPHeads([fused], [(0, i) for i in range(layout.n_heads)], names, embed, lm_head)
    heads.load_mtp_state(state)
    return heads.float().eval()


QWEN_MOE = HeadsFamily(archs=("qwen35moe", "qwen3next"), config=config, rules=rules, build=build)

__all__ = ["QWEN_MOE"]
