"""DeepSeek-V3 / R1 / V3.1 (``DeepseekV3ForCausalLM``) -> GGUF arch ``deepseek2``.

The MTP module is layer ``N = num_hidden_layers`` of the checkpoint
(``num_nextn_predict_layers`` = 1): the input fusion (``enorm`` on the token
embedding, ``hnorm`` on the trunk's hidden state, ``eh_proj`` over their
concatenation, embedding FIRST), one full decoder layer of the trunk's kind
(MLA attention with a q LoRA, MoE FFN with a shared expert, sigmoid routing
with ``e_score_correction_bias``), then ``shared_head.norm`` and
``shared_head.head``. The layer also ships its own ``embed_tokens`` copy.

The pinned converter class (``DeepseekV2Model``) drops every layer >= N;
:class:`DeepseekV3MTPConverter` keeps them as ``blk.N`` and writes
``deepseek2.nextn_predict_layers``, which is what the pinned runtime's
``llama_model_deepseek2::graph_mtp`` reads.

Released checkpoints are FP8: the attention, dense-MLP, expert and
shared-expert projections of every layer (the MTP layer's decoder included)
are ``float8_e4m3fn`` with 128x128 ``weight_scale_inv`` tiles; embeddings,
``lm_head``, ``eh_proj``, ``shared_head.head``, norms and the router
(``mlp.gate.weight``, ``e_score_correction_bias``) are not quantized. The
pinned converter dequantizes per tensor (see :mod:`gguf_mtp.convert.archs.fp8`).
"""

from __future__ import annotations

from .fp8 import FP8Checked
from .appended import AppendedNextNArch


class DeepseekV3MTPConverter(FP8Checked):
    """Mixed in before the pinned ``DeepseekV2Model``: keep the nextn layers."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import gguf

        n_nextn = 0 if self.no_mtp else int(self.hparams.get("num_nextn_predict_layers") or 0)
        self._n_nextn = n_nextn
        # DeepseekV2Model.modify_tensors drops every layer >= num_hidden_layers
        # while skip_mtp is set; keep them unless the MTP layers are not wanted
        self.skip_mtp = n_nextn == 0
        self.block_count = int(self.hparams["num_hidden_layers"]) + n_nextn
        self.tensor_map = gguf.get_tensor_name_map(self.model_arch, self.block_count)

    def set_gguf_parameters(self):
        super().set_gguf_parameters()
        if self._n_nextn:
            self.gguf_writer.add_nextn_predict_layers(self._n_nextn)


DEEPSEEK_V3 = AppendedNextNArch(
    hf_architectures=("DeepseekV3ForCausalLM",),
    gguf_arch="deepseek2",
    mtp_prefixes=("model.layers.N.",),  # N = num_hidden_layers; see AppendedNextNArch
    mtp_layers_key="num_nextn_predict_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
    converter_mixin=DeepseekV3MTPConverter,
    notes=("FP8 checkpoints: every *.weight_scale_inv (128x128 block scales) is folded in: the written "
           "weight is fp8 x scale",),
)
