"""PyTorch MTP heads of dense llama-family targets: GGUF arch ``llama``
(SmolLM2, Llama), ``qwen2`` (Qwen2.5, and MiMo-7B) and ``qwen3``.

MTP layer i is block N + i, gguf-mtp's appended layout (DeepSeek's): its own
fusion (``enorm``, ``hnorm``, ``eh_proj`` over ``[e; h]``, embedding first),
one decoder layer of the trunk's kind (transformers' ``LlamaDecoderLayer`` /
``Qwen2DecoderLayer`` / ``Qwen3DecoderLayer``), ``shared_head.norm``, and the
optional own ``embed_tokens`` / ``shared_head.head`` (frozen; otherwise the
trunk's embedding and LM head). Norms are plain RMSNorms.

GGUF tensor -> heads state (``mtp.layers.i.`` + name, the checkpoint's
``model.layers.{N+i}.`` names), with the converter's transform and its inverse:

=================================  ==========================================  =========================================
GGUF (``blk.{N+i}.``)              heads state (after ``layers.i.``)           transform
=================================  ==========================================  =========================================
``nextn.{enorm,hnorm,eh_proj}``    ``{enorm,hnorm,eh_proj}.weight``            none (MiMo: see below)
``nextn.shared_head_norm``         ``shared_head.norm.weight``                 none
``attn_norm``                      ``input_layernorm.weight``                  none
``attn_q`` / ``attn_k`` (llama)    ``self_attn.{q,k}_proj.weight``             rows permuted per head (n_head / n_head_kv):
                                                                               [n, 2, d/2] -> [n, d/2, 2]
``attn_{q,k,v}``                   ``self_attn.{q,k,v}_proj.weight``           none (qwen2, qwen3; llama v)
``attn_{q,k,v}.bias`` (qwen2)      ``self_attn.{q,k,v}_proj.bias``             none
``attn_{q,k}_norm`` (qwen3)        ``self_attn.{q,k}_norm.weight``             none
``attn_output``                    ``self_attn.o_proj.weight``                 none
``ffn_norm``                       ``post_attention_layernorm.weight``         none
``ffn_{gate,up,down}``             ``mlp.{gate,up,down}_proj.weight``          none
=================================  ==========================================  =========================================

MiMo-7B converts to arch ``qwen2`` with its hidden-first ``input_proj``
``[W_h | W_e]`` stored as ``eh_proj = [W_e | W_h]`` (column halves swapped), so
the GGUF is indistinguishable from a Qwen2 target with appended heads and the
heads train in the embedding-first order llama.cpp runs; MiMo's own
``input_proj`` is :func:`mimo_input_proj` of the trained ``eh_proj``.

RoPE scaling (llama-3 ``rope_freqs``, YaRN, linear) is not implemented here:
such targets are refused with the reason.
"""

from __future__ import annotations

import importlib

import numpy as np

from .heads_common import (
    GGUFLayout,
    GGUFView,
    HeadsError,
    HeadsFamily,
    TensorRule,
    appended_fusion_rules,
    build_appended,
    dense_ffn_rules,
    plain,
    rope_permuted,
)

_CLASSES = {"llama": ("llama", "Llama"), "qwen2": ("qwen2", "Qwen2"), "qwen3": ("qwen3", "Qwen3")}


def _classes(arch: str):
    module, prefix = _CLASSES[arch]
    m = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    return (getattr(m, prefix + "Config"), getattr(m, prefix + "DecoderLayer"), getattr(m, prefix + "RMSNorm"),
            getattr(m, prefix + "RotaryEmbedding"))


def config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    scaling = view.kv("rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in view.tensors:
        raise HeadsError(f"{view.arch}: RoPE scaling ({scaling or 'rope_freqs'}) is not implemented for the "
                         "PyTorch heads")
    vocab, hidden = view.shape("token_embd.weight")
    n_head = int(view.need("attention.head_count"))
    key_len = int(view.kv("attention.key_length", hidden // n_head))
    b = f"blk.{n_trunk}."
    if view.arch == "llama" and b + "attn_q.bias" in view.tensors:
        raise HeadsError("llama: attention biases in the MTP layer are not implemented for the PyTorch heads")
    cfg = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(view.need("feed_forward_length")),
        "num_hidden_layers": n_trunk + n_heads,
        "num_attention_heads": n_head,
        "num_key_value_heads": int(view.kv("attention.head_count_kv", n_head)),
        "head_dim": key_len,
        "rms_norm_eps": float(view.need("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(view.kv("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(view.kv("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in view.tensors,
        "hidden_act": "silu",
    }
    if view.arch == "llama":
        cfg.update(attention_bias=False, mlp_bias=False)
    else:
        cfg.update(use_sliding_window=False, sliding_window=None)
        if view.arch == "qwen3":
            cfg["attention_bias"] = False
    return cfg


def rules(layout: GGUFLayout) -> list[TensorRule]:
    cfg = layout.config
    out: list[TensorRule] = []
    for i in range(layout.n_heads):
        b, p = layout.blk(i), f"layers.{i}."
        a = p + "self_attn."
        out += appended_fusion_rules(layout, i)
        out.append(plain(p + "input_layernorm.weight", b + "attn_norm.weight"))
        if layout.arch == "llama":
            out += [rope_permuted(a + "q_proj.weight", b + "attn_q.weight", cfg["num_attention_heads"]),
                    rope_permuted(a + "k_proj.weight", b + "attn_k.weight", cfg["num_key_value_heads"]),
                    plain(a + "v_proj.weight", b + "attn_v.weight")]
        else:
            out += [plain(f"{a}{w}_proj.weight", f"{b}attn_{w}.weight") for w in ("q", "k", "v")]
        if layout.arch == "qwen2":
            out += [plain(f"{a}{w}_proj.bias", f"{b}attn_{w}.bias") for w in ("q", "k", "v")]
        if layout.arch == "qwen3":
            out += [plain(a + "q_norm.weight", b + "attn_q_norm.weight"),
                    plain(a + "k_norm.weight", b + "attn_k_norm.weight")]
        out += [plain(a + "o_proj.weight", b + "attn_output.weight"),
                plain(p + "post_attention_layernorm.weight", b + "ffn_norm.weight")]
        out += dense_ffn_rules(layout, i)
    return out


def build(layout: GGUFLayout, view: GGUFView, state: dict):
    from ..mtp_module import eager_config

    config_cls, layer_cls, norm_cls, rotary_cls = _classes(layout.arch)
    cfg = eager_config(config_cls.from_dict(dict(layout.config)))
    return build_appended(layout, view, state, cfg, layer_cls, norm_cls, rotary_cls)


def mimo_input_proj(eh_proj: np.ndarray) -> np.ndarray:
    """MiMo's hidden-first ``input_proj`` ``[W_h | W_e]`` from the embedding-first
    ``eh_proj`` ``[W_e | W_h]`` (the converter's column swap, undone)."""
    half = eh_proj.shape[1] // 2
    return np.concatenate([eh_proj[:, half:], eh_proj[:, :half]], axis=1)


DENSE = HeadsFamily(archs=("llama", "qwen2", "qwen3"), config=config, rules=rules, build=build)

__all__ = ["DENSE", "mimo_input_proj"]
