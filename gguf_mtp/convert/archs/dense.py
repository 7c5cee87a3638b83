"""Dense llama-family trunks with MTP heads: ``LlamaForCausalLM`` (SmolLM2,
Llama), ``Qwen2ForCausalLM`` (Qwen2.5), ``Qwen3ForCausalLM`` (Qwen3) and
``Gemma3ForCausalLM`` (Gemma 3 text) -> GGUF arch ``llama`` / ``qwen2`` /
``qwen3`` / ``gemma3``.

No released checkpoint of these families ships MTP layers; this is the layout
gguf-mtp defines for heads trained on them, DeepSeek-V3's appended after the
trunk: MTP layer ``i`` is ``model.layers.{N + i}`` (N = num_hidden_layers,
``num_nextn_predict_layers`` in config.json counts them), holding

* the input fusion: ``enorm`` (RMSNorm of the token embedding), ``hnorm``
  (RMSNorm of the trunk's hidden state after its final norm) and ``eh_proj``
  over their concatenation, embedding FIRST;
* one decoder layer of the trunk's own kind under the usual names
  (``input_layernorm``, ``self_attn.*`` with the trunk's biases / q-k norms,
  ``post_attention_layernorm``, ``mlp.*``);
* ``shared_head.norm``, and optionally ``shared_head.head`` and its own
  ``embed_tokens`` (otherwise the trunk's LM head and embedding are shared).

The patched runtime (patch 0004; 0008 for gemma3) loads block N as that layer
and runs it as the MTP drafter.

Gemma 3: the decoder layer is a Gemma 3 layer (q/k norms, the sandwich norms
``post_attention_layernorm`` / ``pre_feedforward_layernorm`` /
``post_feedforward_layernorm``, GELU-tanh MLP) whose RMSNorms are Gemma's
``x * (1 + w)`` (the converter stores ``1 + w``, as for the trunk); the token
embedding is scaled by ``sqrt(hidden_size)`` before ``enorm``, as the trunk
scales its input embedding; the layer attends without a sliding window with
the RoPE of the global (``full_attention``) layers. The fusion norms
(``enorm``, ``hnorm``, ``shared_head.norm``) are plain RMSNorms (``x * w``,
stored as they are), the layout's own tensors in every family. The pinned converters know nothing of the extra layers:
:class:`DenseMTPConverter` keeps them as ``blk.{N+i}`` (the decoder tensors
through the converter's own mapping, so e.g. llama's q/k RoPE permutation
applies to them too) and writes ``<arch>.nextn_predict_layers``.
"""

from __future__ import annotations

from ...heads.tensor_map import LLAMA, nextn_renames
from .appended import AppendedNextNArch

#: appended-layer tensor (after ``model.layers.{N}.``) -> GGUF name (after ``blk.{N}.``) of the
#: tensors only an MTP layer has, which the pinned converters do not know
NEXTN_TENSORS = nextn_renames(LLAMA)


def _layer_of(name: str) -> int | None:
    parts = name.split(".", 3)
    if len(parts) > 3 and parts[:2] == ["model", "layers"] and parts[2].isdecimal():
        return int(parts[2])
    return None


class DenseMTPConverter:
    """Mixed in before the pinned Llama/Qwen2/Qwen3 converter class: keeps the
    appended MTP layers as blocks N.. (or drops them with ``no_mtp``)."""

    def index_tensors(self, remote_hf_model_id=None):
        tensors = super().index_tensors(remote_hf_model_id)
        n_trunk = int(self.hparams["num_hidden_layers"])
        out = {}
        for name, gen in tensors.items():
            name, gen = self.to_appended_layout(name, gen, n_trunk)
            layer = _layer_of(name)
            if self.no_mtp and layer is not None and layer >= n_trunk:
                continue
            out[name] = gen
        return out

    def to_appended_layout(self, name, gen, n_trunk):
        """Hook: the checkpoint's MTP tensor names -> the appended layout."""
        return name, gen

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        import gguf

        self._n_trunk = int(self.hparams["num_hidden_layers"])
        self._n_nextn = 0 if self.no_mtp else int(self.hparams.get("num_nextn_predict_layers") or 0)
        self.block_count = self._n_trunk + self._n_nextn
        self.tensor_map = gguf.get_tensor_name_map(self.model_arch, self.block_count)

    def set_gguf_parameters(self):
        super().set_gguf_parameters()
        if self._n_nextn:
            self.gguf_writer.add_nextn_predict_layers(self._n_nextn)

    def modify_tensors(self, data_torch, name, bid):

        layer = _layer_of(name)
        if layer is not None and layer >= self._n_trunk:
            if layer >= self.block_count:
                raise ValueError(f"{name}: MTP layer {layer - self._n_trunk} but config.json has "
                                 f"num_nextn_predict_layers={self._n_nextn}")
            suffix = NEXTN_TENSORS.get(name.split(".", 3)[3])
            if suffix is not None:
                # the pinned gguf-py lists no nextn tensors for these archs: name them directly
                yield f"blk.{layer}.{suffix}", data_torch
                return
        yield from super().modify_tensors(data_torch, name, bid)


_HIDDEN = "the trunk's last hidden state AFTER its final norm (model.norm)"


def _dense(hf: str, gguf_arch: str) -> AppendedNextNArch:
    return AppendedNextNArch(
        hf_architectures=(hf,),
        gguf_arch=gguf_arch,
        mtp_prefixes=("model.layers.N.",),  # N = num_hidden_layers; see AppendedNextNArch
        mtp_layers_key="num_nextn_predict_layers",
        hidden_source=_HIDDEN,
        converter_mixin=DenseMTPConverter,
        stock_mtp=False,        # patch 0004
    )


LLAMA_MTP = _dense("LlamaForCausalLM", "llama")
QWEN2_MTP = _dense("Qwen2ForCausalLM", "qwen2")
QWEN3_MTP = _dense("Qwen3ForCausalLM", "qwen3")
GEMMA3_MTP = AppendedNextNArch(
    hf_architectures=("Gemma3ForCausalLM",),
    gguf_arch="gemma3",
    mtp_prefixes=("model.layers.N.",),
    mtp_layers_key="num_nextn_predict_layers",
    hidden_source=_HIDDEN,
    converter_mixin=DenseMTPConverter,
    stock_mtp=False,            # patch 0008
)
