"""Qwen3.5-MoE text model (``Qwen3_5MoeForCausalLM``) -> GGUF arch ``qwen35moe``.

The MTP module is stored under ``mtp.*`` like Qwen3.5 dense's (enorm on the
token embedding, hnorm on the trunk's hidden state, ``fc`` over their
concatenation, embedding FIRST; one full-attention decoder layer; a
shared-head norm; the trunk's embedding and LM head), with a sparse-MoE FFN.
The released checkpoints store the trunk's experts fused
(``mlp.experts.gate_up_proj`` / ``mlp.experts.down_proj``) but the MTP
layer's one by one; the pinned converter handles both and appends the layer
after the trunk as block N = num_hidden_layers.
"""

from .spec import MTPArch

QWEN35_MOE = MTPArch(
    hf_architectures=("Qwen3_5MoeForCausalLM",),
    gguf_arch="qwen35moe",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="mtp_num_hidden_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
)
