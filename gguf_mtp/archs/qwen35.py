"""Qwen3.5 dense (``Qwen3_5ForCausalLM``) -> GGUF arch ``qwen35``.

The MTP module is stored under ``mtp.*``: one full-attention Qwen3.5 decoder
layer with the DeepSeek-V3 input fusion (enorm on the token embedding, hnorm on
the trunk's hidden state, ``fc`` over their concatenation, embedding FIRST) and
a shared-head norm; the embedding and LM head are the trunk's. The pinned
converter appends it after the trunk as block N = num_hidden_layers.
"""

from .base import MTPArch

#: the Qwen MTP module's fusion, head norm and attention (shared by Qwen3.5, Qwen3.5-MoE, Qwen3-Next)
QWEN_MTP_FUSION_AND_ATTENTION = (
        ("mtp.pre_fc_norm_embedding.weight", "blk.N.nextn.enorm.weight"),
        ("mtp.pre_fc_norm_hidden.weight", "blk.N.nextn.hnorm.weight"),
        ("mtp.fc.weight", "blk.N.nextn.eh_proj.weight"),
        ("mtp.norm.weight", "blk.N.nextn.shared_head_norm.weight"),
        ("mtp.layers.0.input_layernorm.weight", "blk.N.attn_norm.weight"),
        ("mtp.layers.0.self_attn.{q,k,v,o}_proj.weight", "blk.N.attn_{q,k,v,output}.weight"),
        ("mtp.layers.0.self_attn.{q,k}_norm.weight", "blk.N.attn_{q,k}_norm.weight"),
        ("mtp.layers.0.post_attention_layernorm.weight", "blk.N.post_attention_norm.weight"),
)

QWEN35 = MTPArch(
    hf_architectures=("Qwen3_5ForCausalLM",),
    gguf_arch="qwen35",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="mtp_num_hidden_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
    tensor_map=QWEN_MTP_FUSION_AND_ATTENTION + (
        ("mtp.layers.0.mlp.{gate,up,down}_proj.weight", "blk.N.ffn_{gate,up,down}.weight"),
    ),
)
