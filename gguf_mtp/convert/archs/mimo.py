"""MiMo-7B (``MiMoForCausalLM``, model_type ``mimo``) -> GGUF arch ``qwen2``.

The trunk is a Qwen2 decoder (q/k/v biases, untied LM head). The MTP layers
(``num_nextn_predict_layers``, 1 in MiMo-7B) live under
``model.mtp_layers.{i}``: ``token_layernorm`` on the token embedding,
``hidden_layernorm`` on the trunk's hidden state (after its final norm),
``input_proj`` over their concatenation with the HIDDEN STATE FIRST, one Qwen2
decoder layer (``input_layernorm``, ``self_attn.{q,k,v,o}_proj``,
``post_attention_layernorm``, ``mlp.{gate,up,down}_proj``) and
``final_layernorm``; the embedding and LM head are the trunk's.

The pinned converter has no MiMo class; the trunk goes through its
``Qwen2ForCausalLM`` converter and :class:`MiMoMTPConverter` renames
``model.mtp_layers.{i}`` to the appended layout of :mod:`.dense`
(``model.layers.{N+i}``), which the runtime's dense MTP graph runs.

That graph computes ``eh_proj @ concat[enorm(e), hnorm(h)]``, embedding
first. For MiMo's ``input_proj`` ``W = [W_h | W_e]`` (columns 0..H-1 act on
the hidden state, H..2H-1 on the embedding) the converter writes
``eh_proj = [W_e | W_h]``: the two column halves swapped, so that
``eh_proj @ [e, h] = W_e e + W_h h = W @ [h, e]``, exactly MiMo's function.
"""

from __future__ import annotations

from .spec import MTPArch
from ...heads.tensor_map import MIMO as MIMO_TENSORS, appended_renames
from .dense import NEXTN_TENSORS, DenseMTPConverter

#: MiMo MTP tensor (after ``model.mtp_layers.{i}.``) -> appended-layout name (after ``model.layers.{N}.``)
MIMO_RENAMES = appended_renames(MIMO_TENSORS)
assert set(MIMO_RENAMES.values()) >= set(NEXTN_TENSORS) - {"shared_head.head.weight", "embed_tokens.weight"}


def swap_column_halves(w):
    """``[A | B]`` -> ``[B | A]`` along the input dimension (hidden-first ->
    embedding-first fusion)."""
    import torch

    half = w.shape[1] // 2
    return torch.cat([w[:, half:], w[:, :half]], dim=1)


class MiMoMTPConverter(DenseMTPConverter):
    def get_vocab_base(self):
        # config.json names MiMo's remote code (auto_map), so transformers would
        # stop to ask whether to run it while the converter loads the tokenizer,
        # which needs none of it: answer "no" up front
        from functools import partial
        from unittest import mock

        import transformers

        load = partial(transformers.AutoTokenizer.from_pretrained, trust_remote_code=False)
        with mock.patch.object(transformers.AutoTokenizer, "from_pretrained", load):
            return super().get_vocab_base()

    def to_appended_layout(self, name, gen, n_trunk):
        prefix = "model.mtp_layers."
        if not name.startswith(prefix):
            return name, gen
        idx, rest = name[len(prefix):].split(".", 1)
        if rest == "input_proj.weight":
            gen = lambda g=gen: swap_column_halves(g())  # noqa: E731
        return f"model.layers.{n_trunk + int(idx)}.{MIMO_RENAMES.get(rest, rest)}", gen


MIMO = MTPArch(
    hf_architectures=("MiMoForCausalLM",),
    gguf_arch="qwen2",
    mtp_prefixes=("model.mtp_layers.",),
    mtp_layers_key="num_nextn_predict_layers",
    hidden_source="the trunk's last hidden state AFTER its final norm (model.norm)",
    converter_base="Qwen2ForCausalLM",
    converter_mixin=MiMoMTPConverter,
    stock_mtp=False,            # the dense MTP graph of patch 0004
)
