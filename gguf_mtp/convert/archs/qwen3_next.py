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

from .spec import MTPArch

QWEN3_NEXT = MTPArch(
    hf_architectures=("Qwen3NextForCausalLM",),
    gguf_arch="qwen3next",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="num_nextn_predict_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
)
