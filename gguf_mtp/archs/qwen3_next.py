"""Qwen3-Next (``Qwen3NextForCausalLM``) -> GGUF arch ``qwen3next``.

The MTP module is stored under ``mtp.*``: the DeepSeek-V3 input fusion (enorm
on the token embedding, hnorm on the trunk's hidden state, ``fc`` over their
concatenation, embedding FIRST), one full-attention decoder layer of the
trunk's kind (output-gated attention, sparse MoE with a gated shared expert,
experts stored one by one) and a shared-head norm; the embedding and LM head
are the trunk's. The released config has no key counting the MTP layers, so
their number comes from the ``mtp.layers.*`` tensors. The pinned converter
appends the layer after the trunk as block N = num_hidden_layers and stacks
the experts; its norms get the ``+1`` of the zero-centred RMSNorm.
"""

from .base import MTPArch

QWEN3_NEXT = MTPArch(
    hf_architectures=("Qwen3NextForCausalLM",),
    gguf_arch="qwen3next",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="num_nextn_predict_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
    tensor_map=(
        ("mtp.pre_fc_norm_embedding.weight", "blk.N.nextn.enorm.weight"),
        ("mtp.pre_fc_norm_hidden.weight", "blk.N.nextn.hnorm.weight"),
        ("mtp.fc.weight", "blk.N.nextn.eh_proj.weight"),
        ("mtp.norm.weight", "blk.N.nextn.shared_head_norm.weight"),
        ("mtp.layers.0.input_layernorm.weight", "blk.N.attn_norm.weight"),
        ("mtp.layers.0.self_attn.{q,k,v,o}_proj.weight", "blk.N.attn_{q,k,v,output}.weight"),
        ("mtp.layers.0.self_attn.{q,k}_norm.weight", "blk.N.attn_{q,k}_norm.weight"),
        ("mtp.layers.0.post_attention_layernorm.weight", "blk.N.post_attention_norm.weight"),
        ("mtp.layers.0.mlp.gate.weight", "blk.N.ffn_gate_inp.weight"),
        ("mtp.layers.0.mlp.experts.{0..E-1}.{gate,up,down}_proj.weight",
         "blk.N.ffn_{gate,up,down}_exps.weight"),
        ("mtp.layers.0.mlp.shared_expert.{gate,up,down}_proj.weight",
         "blk.N.ffn_{gate,up,down}_shexp.weight"),
        ("mtp.layers.0.mlp.shared_expert_gate.weight", "blk.N.ffn_gate_inp_shexp.weight"),
    ),
)
