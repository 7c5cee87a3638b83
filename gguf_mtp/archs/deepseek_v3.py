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
pinned converter dequantizes per tensor (see :mod:`gguf_mtp.archs.fp8`).
"""

from __future__ import annotations

from .fp8 import FP8Checked
from .nextn import AppendedNextNArch


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
    tensor_map=(
        ("model.layers.N.embed_tokens.weight", "blk.N.nextn.embed_tokens.weight"),
        ("model.layers.N.enorm.weight", "blk.N.nextn.enorm.weight"),
        ("model.layers.N.hnorm.weight", "blk.N.nextn.hnorm.weight"),
        ("model.layers.N.eh_proj.weight", "blk.N.nextn.eh_proj.weight"),
        ("model.layers.N.shared_head.norm.weight", "blk.N.nextn.shared_head_norm.weight"),
        ("model.layers.N.shared_head.head.weight", "blk.N.nextn.shared_head_head.weight"),
        ("model.layers.N.input_layernorm.weight", "blk.N.attn_norm.weight"),
        ("model.layers.N.self_attn.q_a_proj.weight", "blk.N.attn_q_a.weight"),
        ("model.layers.N.self_attn.q_a_layernorm.weight", "blk.N.attn_q_a_norm.weight"),
        ("model.layers.N.self_attn.q_b_proj.weight", "blk.N.attn_q_b.weight"),
        ("model.layers.N.self_attn.kv_a_proj_with_mqa.weight", "blk.N.attn_kv_a_mqa.weight"),
        ("model.layers.N.self_attn.kv_a_layernorm.weight", "blk.N.attn_kv_a_norm.weight"),
        ("model.layers.N.self_attn.kv_b_proj.weight", "blk.N.attn_k_b.weight + blk.N.attn_v_b.weight (split)"),
        ("model.layers.N.self_attn.o_proj.weight", "blk.N.attn_output.weight"),
        ("model.layers.N.post_attention_layernorm.weight", "blk.N.ffn_norm.weight"),
        ("model.layers.N.mlp.gate.weight", "blk.N.ffn_gate_inp.weight"),
        ("model.layers.N.mlp.gate.e_score_correction_bias", "blk.N.exp_probs_b.bias"),
        ("model.layers.N.mlp.experts.{0..E-1}.{gate,up,down}_proj.weight", "blk.N.ffn_{gate,up,down}_exps.weight (stacked)"),
        ("model.layers.N.mlp.shared_experts.{gate,up,down}_proj.weight", "blk.N.ffn_{gate,up,down}_shexp.weight"),
        ("*.weight_scale_inv (FP8 128x128 block scales)", "folded in: written weight = fp8 x scale"),
    ),
    converter_mixin=DeepseekV3MTPConverter,
)
