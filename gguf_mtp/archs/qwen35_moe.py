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

from .base import MTPArch
from .qwen35 import QWEN_MTP_FUSION_AND_ATTENTION

#: the MTP layer's sparse-MoE FFN (shared by Qwen3.5-MoE and Qwen3-Next)
QWEN_MTP_MOE_FFN = (
        ("mtp.layers.0.mlp.gate.weight", "blk.N.ffn_gate_inp.weight"),
        ("mtp.layers.0.mlp.experts.{0..E-1}.{gate,up,down}_proj.weight",
         "blk.N.ffn_{gate,up,down}_exps.weight"),
        ("mtp.layers.0.mlp.shared_expert.{gate,up,down}_proj.weight",
         "blk.N.ffn_{gate,up,down}_shexp.weight"),
        ("mtp.layers.0.mlp.shared_expert_gate.weight", "blk.N.ffn_gate_inp_shexp.weight"),
)

QWEN35_MOE = MTPArch(
    hf_architectures=("Qwen3_5MoeForCausalLM",),
    gguf_arch="qwen35moe",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="mtp_num_hidden_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
    tensor_map=QWEN_MTP_FUSION_AND_ATTENTION + QWEN_MTP_MOE_FFN,
)
