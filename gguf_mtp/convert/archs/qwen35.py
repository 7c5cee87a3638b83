"""Qwen3.5 dense (``Qwen3_5ForCausalLM``) -> GGUF arch ``qwen35``.

The MTP module is stored under ``mtp.*``: one full-attention Qwen3.5 decoder
layer with the DeepSeek-V3 input fusion (enorm on the token embedding, hnorm on
the trunk's hidden state, ``fc`` over their concatenation, embedding FIRST) and
a shared-head norm; the embedding and LM head are the trunk's. The pinned
converter appends it after the trunk as block N = num_hidden_layers.
"""

from .spec import MTPArch

QWEN35 = MTPArch(
    hf_architectures=("Qwen3_5ForCausalLM",),
    gguf_arch="qwen35",
    mtp_prefixes=("mtp.", "model.mtp."),
    mtp_layers_key="mtp_num_hidden_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
)
