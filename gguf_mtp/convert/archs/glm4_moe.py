"""GLM-4.5 / 4.5-Air / 4.6 (``Glm4MoeForCausalLM``) -> GGUF arch ``glm4moe``.

The MTP module is layer ``N = num_hidden_layers`` (``num_nextn_predict_layers``
= 1), laid out as DeepSeek-V3's: ``embed_tokens``, ``enorm``, ``hnorm``,
``eh_proj`` (embedding FIRST), one GLM-4.5 decoder layer (GQA attention with
q/k/v biases and optional q/k RMSNorm, partial NeoX RoPE; sigmoid-routed MoE
with ``e_score_correction_bias`` and a shared expert), ``shared_head.norm`` and
``shared_head.head``. The pinned converter (``Glm4MoeModel``) already appends
it as ``blk.N`` and writes ``glm4moe.nextn_predict_layers``; the mixin only
adds the FP8 scale check of :mod:`gguf_mtp.convert.archs.fp8` (for FP8 exports in
DeepSeek's block-scaled layout) and a vocabulary fallback for tokenizers
without GLM's chat tokens.
"""

from __future__ import annotations

from .fp8 import FP8Checked
from .appended import AppendedNextNArch

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
    converter_mixin=Glm4MoeMTPConverter,
)
