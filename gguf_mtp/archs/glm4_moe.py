"""GLM-4.5 / 4.5-Air / 4.6 (``Glm4MoeForCausalLM``) -> GGUF arch ``glm4moe``.

The MTP module is layer ``N = num_hidden_layers`` (``num_nextn_predict_layers``
= 1), laid out as DeepSeek-V3's: ``embed_tokens``, ``enorm``, ``hnorm``,
``eh_proj`` (embedding FIRST), one GLM-4.5 decoder layer (GQA attention with
q/k/v biases and optional q/k RMSNorm, partial NeoX RoPE; sigmoid-routed MoE
with ``e_score_correction_bias`` and a shared expert), ``shared_head.norm`` and
``shared_head.head``. The pinned converter (``Glm4MoeModel``) already appends
it as ``blk.N`` and writes ``glm4moe.nextn_predict_layers``; the mixin only
adds the FP8 scale check of :mod:`gguf_mtp.archs.fp8` (for FP8 exports in
DeepSeek's block-scaled layout) and a vocabulary fallback for tokenizers
without GLM's chat tokens.
"""

from __future__ import annotations

from .fp8 import FP8Checked
from .nextn import AppendedNextNArch

#: added tokens the pinned converter's GLM vocabulary writer looks up by name
GLM_SPECIAL_TOKENS = ("[gMASK]", "<|user|>", "<|endoftext|>", "<|observation|>")


class Glm4MoeMTPConverter(FP8Checked):
    def set_vocab(self):
        from transformers import AutoTokenizer

        added = AutoTokenizer.from_pretrained(self.dir_model).get_added_vocab()
        if all(t in added for t in GLM_SPECIAL_TOKENS):
            return super().set_vocab()
        # a GLM-architecture model with another BPE tokenizer: its own
        # tokenizer files say which tokens are special
        return self._set_vocab_gpt2()


GLM4_MOE = AppendedNextNArch(
    hf_architectures=("Glm4MoeForCausalLM",),
    gguf_arch="glm4moe",
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
        ("model.layers.N.self_attn.{q,k,v}_proj.{weight,bias}", "blk.N.attn_{q,k,v}.{weight,bias}"),
        ("model.layers.N.self_attn.{q,k}_norm.weight", "blk.N.attn_{q,k}_norm.weight"),
        ("model.layers.N.self_attn.o_proj.weight", "blk.N.attn_output.weight"),
        ("model.layers.N.post_attention_layernorm.weight", "blk.N.post_attention_norm.weight"),
        ("model.layers.N.mlp.gate.weight", "blk.N.ffn_gate_inp.weight"),
        ("model.layers.N.mlp.gate.e_score_correction_bias", "blk.N.exp_probs_b.bias"),
        ("model.layers.N.mlp.experts.{0..E-1}.{gate,up,down}_proj.weight", "blk.N.ffn_{gate,up,down}_exps.weight (stacked)"),
        ("model.layers.N.mlp.shared_experts.{gate,up,down}_proj.weight", "blk.N.ffn_{gate,up,down}_shexp.weight"),
    ),
    converter_mixin=Glm4MoeMTPConverter,
)
