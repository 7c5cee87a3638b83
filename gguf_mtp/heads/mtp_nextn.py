"""PyTorch MTP heads of DeepSeek-V3 (GGUF arch ``deepseek2``) and GLM-4.5
(``glm4moe``) targets.

MTP layer i is block N + i (N = trunk depth), DeepSeek's layout: its own
fusion (``enorm``, ``hnorm``, ``eh_proj`` over ``[e; h]``, embedding first),
one decoder layer of the trunk's kind (transformers' ``DeepseekV3DecoderLayer``
/ ``Glm4MoeDecoderLayer`` built with ``layer_idx = N + i``, so it is a MoE
layer exactly when the trunk's would be), ``shared_head.norm``, and the
layer's own ``embed_tokens`` / ``shared_head.head`` when the GGUF has them
(frozen, like the trunk's embedding and LM head, which are used otherwise).
Norms are plain RMSNorms (no ``1 + w``).

Which GGUF tensor holds which heads tensor, and the converter's transform
between them, is this family's rows of :mod:`gguf_mtp.heads.tensor_map` (the
one table; ``gguf-mtp archs --tensors`` prints it); :func:`rules` reads them.

FP8 checkpoints are dequantized by the converter; the heads see (and stitch
writes) the GGUF's own types. ``e_score_correction_bias`` is a buffer in
transformers (not trained, written back unchanged).
"""

from __future__ import annotations

import importlib


from . import tensor_map
from .common import (
    GGUFLayout,
    GGUFView,
    HeadsError,
    HeadsFamily,
    TensorRule,
    build_appended,
    table_rules,
)

_CLASSES = {"deepseek2": ("deepseek_v3", "DeepseekV3"), "glm4moe": ("glm4_moe", "Glm4Moe")}


def _classes(arch: str):
    module, prefix = _CLASSES[arch]
    m = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    return (getattr(m, prefix + "Config"), getattr(m, prefix + "DecoderLayer"), getattr(m, prefix + "RMSNorm"),
            getattr(m, prefix + "RotaryEmbedding"))


def _moe_config(view: GGUFView) -> dict:
    gating = int(view.kv("expert_gating_func", 2) or 2)
    if gating != 2:
        raise HeadsError(f"{view.arch}: expert gating function {gating} (only sigmoid, 2, is implemented)")
    return {
        "n_routed_experts": int(view.need("expert_count")),
        "num_experts_per_tok": int(view.need("expert_used_count")),
        "n_shared_experts": int(view.kv("expert_shared_count", 1)),
        "moe_intermediate_size": int(view.need("expert_feed_forward_length")),
        "n_group": int(view.kv("expert_group_count", 1) or 1),
        "topk_group": int(view.kv("expert_group_used_count", 1) or 1),
        "routed_scaling_factor": float(view.kv("expert_weights_scale", 1.0)),
        "norm_topk_prob": bool(view.kv("expert_weights_norm", False)),
        "first_k_dense_replace": int(view.kv("leading_dense_block_count", 0)),
    }


def config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    vocab, hidden = view.shape("token_embd.weight")
    cfg = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(view.need("feed_forward_length")),
        "num_hidden_layers": n_trunk + n_heads,
        "num_attention_heads": int(view.need("attention.head_count")),
        "rms_norm_eps": float(view.need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(view.kv("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(view.kv("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in view.tensors,
        **_moe_config(view),
    }
    scaling = view.kv("rope.scaling.type")
    if view.arch == "deepseek2":
        rope_dims = int(view.need("rope.dimension_count"))
        q_lora = view.kv("attention.q_lora_rank")
        cfg.update(
            num_key_value_heads=cfg["num_attention_heads"],   # MLA: the GGUF's head_count_kv is 1
            q_lora_rank=int(q_lora) if q_lora else None,
            kv_lora_rank=int(view.need("attention.kv_lora_rank")),
            qk_rope_head_dim=rope_dims,
            qk_nope_head_dim=int(view.need("attention.key_length_mla")) - rope_dims,
            v_head_dim=int(view.need("attention.value_length_mla")),
            topk_method="noaux_tc", scoring_func="sigmoid", attention_bias=False)
        if scaling == "yarn":
            # the converter stores 0.1 * mscale_all_dim as yarn_log_multiplier and no mscale;
            # the released models have mscale == mscale_all_dim
            mscale = round(float(view.kv("rope.scaling.yarn_log_multiplier", 0.0)) / 0.1, 6)
            cfg["rope_scaling"] = {
                "type": "yarn", "factor": float(view.need("rope.scaling.factor")),
                "original_max_position_embeddings": int(view.need("rope.scaling.original_context_length")),
                "beta_fast": float(view.kv("rope.scaling.yarn_beta_fast", 32.0)),
                "beta_slow": float(view.kv("rope.scaling.yarn_beta_slow", 1.0)),
                "mscale": mscale, "mscale_all_dim": mscale}
        elif scaling not in (None, "none"):
            raise HeadsError(f"deepseek2: RoPE scaling {scaling!r} is not implemented for the PyTorch heads")
    else:
        key_len = int(view.need("attention.key_length"))
        b = f"blk.{n_trunk}."
        cfg.update(
            num_key_value_heads=int(view.need("attention.head_count_kv")),
            head_dim=key_len,
            partial_rotary_factor=int(view.kv("rope.dimension_count", key_len)) / key_len,
            attention_bias=b + "attn_q.bias" in view.tensors,
            use_qk_norm=b + "attn_q_norm.weight" in view.tensors)
        if scaling not in (None, "none"):
            raise HeadsError(f"glm4moe: RoPE scaling {scaling!r} is not implemented for the PyTorch heads")
    return cfg


def features(layout: GGUFLayout, i: int) -> frozenset[str]:
    """Which optional rows of the table MTP layer ``i`` has: a q LoRA or not
    (DeepSeek), q/k/v biases and q/k norms (GLM), MoE or a dense FFN (the
    layer's depth against ``first_k_dense_replace``), the router bias."""
    cfg = layout.config
    moe = layout.n_trunk + i >= cfg.get("first_k_dense_replace", 0)
    out = {"q_lora" if cfg.get("q_lora_rank") else "no_q_lora", "moe" if moe else "dense_ffn"}
    if cfg.get("attention_bias"):
        out.add("qkv_bias")
    if cfg.get("use_qk_norm"):
        out.add("qk_norm")
    if moe and layout.has(layout.blk(i) + "exp_probs_b.bias"):
        out.add("exp_probs_b")
    return frozenset(out)


def rules(layout: GGUFLayout) -> list[TensorRule]:
    return table_rules(tensor_map.BY_GGUF_ARCH[layout.arch], layout, lambda i: features(layout, i))


def build(layout: GGUFLayout, view: GGUFView, state: dict):
    from .fused import eager_config

    config_cls, layer_cls, norm_cls, rotary_cls = _classes(layout.arch)
    cfg = eager_config(config_cls.from_dict(dict(layout.config)), _experts_implementation="eager")
    return build_appended(layout, view, state, cfg, layer_cls, norm_cls, rotary_cls)


NEXTN = HeadsFamily(archs=("deepseek2", "glm4moe"), config=config, rules=rules, build=build)

__all__ = ["NEXTN", "features"]
