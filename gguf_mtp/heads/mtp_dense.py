"""PyTorch MTP heads of dense llama-family targets: GGUF arch ``llama``
(SmolLM2, Llama), ``qwen2`` (Qwen2.5, and MiMo-7B), ``qwen3`` and ``gemma3``
(Gemma 3 text). One row of :data:`SPECS` per family says what its layer has.

MTP layer i is block N + i, gguf-mtp's appended layout (DeepSeek's): its own
fusion (``enorm``, ``hnorm``, ``eh_proj`` over ``[e; h]``, embedding first),
one decoder layer of the trunk's kind (transformers' ``LlamaDecoderLayer`` /
``Qwen2DecoderLayer`` / ``Qwen3DecoderLayer``), ``shared_head.norm``, and the
optional own ``embed_tokens`` / ``shared_head.head`` (frozen; otherwise the
trunk's embedding and LM head). Norms are plain RMSNorms.

Which GGUF tensor holds which heads tensor, and the converter's transform
between them, is this family's rows of :mod:`gguf_mtp.heads.tensor_map` (the
one table; ``gguf-mtp archs --tensors`` prints it); :func:`rules` reads them.

MiMo-7B converts to arch ``qwen2`` with its hidden-first ``input_proj``
``[W_h | W_e]`` stored as ``eh_proj = [W_e | W_h]`` (column halves swapped), so
the GGUF is indistinguishable from a Qwen2 target with appended heads and the
heads train in the embedding-first order llama.cpp runs; MiMo's own
``input_proj`` is :func:`mimo_input_proj` of the trained ``eh_proj``.

Gemma 3 (``gemma3``): transformers' ``Gemma3DecoderLayer``; its six norms
(``input_layernorm`` <-> ``attn_norm``, ``post_attention_layernorm`` <->
``post_attention_norm``, ``pre_feedforward_layernorm`` <-> ``ffn_norm``,
``post_feedforward_layernorm`` <-> ``post_ffw_norm``, ``self_attn.{q,k}_norm``
<-> ``attn_{q,k}_norm``) compute ``x * (1 + w)`` and the GGUF stores ``1 + w``
(the converter's shift, inverted on load). The fusion norms stay plain
RMSNorms (``LlamaRMSNorm``); the MTP's token embedding is scaled by
``sqrt(hidden_size)`` before ``enorm``, and the layer gets the rotary
embedding of the global layers (``full_attention``) and a plain causal mask,
as patch 0008 runs it. Final-logit soft-capping (none in Gemma 3) is refused.

RoPE scaling (llama-3 ``rope_freqs``, YaRN, linear) is not implemented here:
such targets are refused with the reason.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from torch import nn

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


@dataclass(frozen=True)
class DenseSpec:
    """How one dense family's MTP decoder layer is read from a GGUF and built
    in PyTorch: transformers' classes (``transformers.models.<module>``) and
    what differs from a llama layer."""

    module: str                      # transformers.models.<module>
    prefix: str                      # class-name prefix: Llama, Qwen2, Qwen3, Gemma3
    config_class: str = ""           # default: prefix + "Config"
    fusion_norm: tuple[str, str] | None = None   # (module, class) of the plain fusion RMSNorms; None: the family's
    embed_scale: bool = False        # gemma3: the MTP's token embedding is scaled by sqrt(hidden), as the trunk's
    rotary_layer_type: str | None = None          # gemma3: the rotary embedding of the global layers
    extra_config: Callable | None = None          # (view, n_trunk, n_heads) -> more config kwargs

    def classes(self):
        m = importlib.import_module(f"transformers.models.{self.module}.modeling_{self.module}")
        config_cls = getattr(m, self.config_class or self.prefix + "Config")
        fusion = m if self.fusion_norm is None else importlib.import_module(
            f"transformers.models.{self.fusion_norm[0]}.modeling_{self.fusion_norm[0]}")
        fusion_cls = getattr(fusion, self.prefix + "RMSNorm" if self.fusion_norm is None else self.fusion_norm[1])
        return (config_cls, getattr(m, self.prefix + "DecoderLayer"), fusion_cls,
                getattr(m, self.prefix + "RotaryEmbedding"))


def _llama_config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    if f"blk.{n_trunk}.attn_q.bias" in view.tensors:
        raise HeadsError("llama: attention biases in the MTP layer are not implemented for the PyTorch heads")
    return {"attention_bias": False, "mlp_bias": False}


def _gemma3_config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    if float(view.kv("final_logit_softcapping", 0.0) or 0.0):
        raise HeadsError("gemma3: final logit soft-capping is not implemented for the PyTorch heads")
    hidden = int(view.shape("token_embd.weight")[1])
    n_head = int(view.need("attention.head_count"))
    head_dim = int(view.kv("attention.key_length", hidden // n_head))
    window = int(view.kv("attention.sliding_window", 0) or 0)
    # llama.cpp (and gemma_pytorch) scale queries by 1/sqrt(head_dim), by 1/sqrt(hidden / n_head) for 27B (62 layers)
    scalar = hidden // n_head if n_trunk == 62 else head_dim
    # the MTP layers attend over their whole sequence; the trunk's pattern only matters for the trunk
    layer_types = ["sliding_attention" if window and (i + 1) % 6 else "full_attention" for i in range(n_trunk)]
    return {
        "hidden_activation": "gelu_pytorch_tanh",
        "query_pre_attn_scalar": scalar,
        "sliding_window": window or None,
        "layer_types": layer_types + ["full_attention"] * n_heads,
        "rope_parameters": {
            "full_attention": {"rope_type": "default", "rope_theta": float(view.kv("rope.freq_base", 1e6))},
            "sliding_attention": {"rope_type": "default",
                                  "rope_theta": float(view.kv("rope.freq_base_swa", 10000.0))},
        },
        "attention_bias": False,
        "attn_logit_softcapping": None,
        "final_logit_softcapping": None,
    }


#: GGUF architecture -> its dense MTP layer (one row per family; no per-arch branches below)
SPECS: dict[str, DenseSpec] = {
    "llama": DenseSpec("llama", "Llama", extra_config=_llama_config),
    "qwen2": DenseSpec("qwen2", "Qwen2",
                       extra_config=lambda v, n, h: {"use_sliding_window": False, "sliding_window": None}),
    "qwen3": DenseSpec("qwen3", "Qwen3",
                       extra_config=lambda v, n, h: {"use_sliding_window": False, "sliding_window": None,
                                                     "attention_bias": False}),
    "gemma3": DenseSpec("gemma3", "Gemma3", config_class="Gemma3TextConfig",
                        fusion_norm=("llama", "LlamaRMSNorm"), embed_scale=True,
                        rotary_layer_type="full_attention", extra_config=_gemma3_config),
}


def config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    spec = SPECS[view.arch]
    scaling = view.kv("rope.scaling.type")
    if scaling not in (None, "none") or "rope_freqs.weight" in view.tensors:
        raise HeadsError(f"{view.arch}: RoPE scaling ({scaling or 'rope_freqs'}) is not implemented for the "
                         "PyTorch heads")
    vocab, hidden = view.shape("token_embd.weight")
    n_head = int(view.need("attention.head_count"))
    key_len = int(view.kv("attention.key_length", hidden // n_head))
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
    if spec.extra_config is not None:
        cfg.update(spec.extra_config(view, n_trunk, n_heads))
    return cfg


def rules(layout: GGUFLayout) -> list[TensorRule]:
    return table_rules(tensor_map.BY_GGUF_ARCH[layout.arch], layout)


class LayerTypeRotary(nn.Module):
    """A per-layer-type rotary embedding (Gemma 3's) called as a plain one: ``(x, position_ids)``."""

    def __init__(self, rotary: nn.Module, layer_type: str):
        super().__init__()
        self.rotary, self.layer_type = rotary, layer_type

    def forward(self, x, position_ids):
        return self.rotary(x, position_ids, self.layer_type)


def build(layout: GGUFLayout, view: GGUFView, state: dict):
    from .fused import eager_config

    spec = SPECS[layout.arch]
    config_cls, layer_cls, norm_cls, rotary_cls = spec.classes()
    cfg = eager_config(config_cls.from_dict(dict(layout.config)))
    rotary = rotary_cls
    if spec.rotary_layer_type is not None:
        def rotary(c, _cls=rotary_cls, _t=spec.rotary_layer_type):
            return LayerTypeRotary(_cls(c), _t)
    return build_appended(layout, view, state, cfg, layer_cls, norm_cls, rotary,
                          embed_scale=float(cfg.hidden_size) ** 0.5 if spec.embed_scale else None)


def mimo_input_proj(eh_proj: np.ndarray) -> np.ndarray:
    """MiMo's hidden-first ``input_proj`` ``[W_h | W_e]`` from the embedding-first
    ``eh_proj`` ``[W_e | W_h]`` (the converter's column swap, undone)."""
    half = eh_proj.shape[1] // 2
    return np.concatenate([eh_proj[:, half:], eh_proj[:, :half]], axis=1)


DENSE = HeadsFamily(archs=tuple(SPECS), config=config, rules=rules, build=build)

__all__ = ["DENSE", "SPECS", "DenseSpec", "mimo_input_proj"]
