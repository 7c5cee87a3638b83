"""PyTorch MTP heads loaded from (and written back to) a target GGUF.

The heads are read from the GGUF itself, not from the Hugging Face checkpoint:
whatever quantization the file carries is dequantized with gguf-py
(``gguf.quants.dequantize``) and the converter's transforms are inverted, so
training starts from exactly the heads llama.cpp runs. The token embedding and
the LM head are the trunk's (``token_embd`` / ``output``; tied when there is no
``output``), loaded frozen and shared.

Qwen3.5 (GGUF arch ``qwen35``): the module is :class:`gguf_mtp.reference.Qwen35MTP`,
whose logits equal llama.cpp's MTP graph (tests/test_train_heads.py). The
converter's transforms on the MTP block, and their inverses:

* every RMSNorm weight (enorm, hnorm, shared-head norm, input / post-attention
  norms, q / k norms) is stored as ``1 + w``: loading subtracts 1, writing adds 1;
* names: ``mtp.fc`` <-> ``blk.N.nextn.eh_proj``, ``mtp.pre_fc_norm_embedding``
  <-> ``nextn.enorm``, ``mtp.pre_fc_norm_hidden`` <-> ``nextn.hnorm``,
  ``mtp.norm`` <-> ``nextn.shared_head_norm`` (in block N, shared by a stack of
  layers), ``mtp.layers.i.*`` <-> ``blk.{N+i}.attn_*`` / ``ffn_*`` /
  ``post_attention_norm``; N = the trunk's layer count;
* nothing is split or reordered in the MTP block: the gated ``q_proj`` (query
  and output gate) stays one tensor, and the Gated-DeltaNet V-head reordering
  only touches trunk layers.

A heads directory (what ``gguf-mtp finetune`` writes and ``gguf-mtp stitch``
reads) holds ``heads.safetensors`` (the ``mtp.*`` tensors under checkpoint
names, float32) and ``heads.json`` (architecture, trunk depth, the GGUF it
came from, the training record).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

HEADS_FILE = "heads.safetensors"
HEADS_META = "heads.json"

#: per MTP layer i (block N + i): GGUF suffix -> checkpoint name after ``mtp.layers.{i}.``
_LAYER = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "attn_q_norm.weight": "self_attn.q_norm.weight",
    "attn_k_norm.weight": "self_attn.k_norm.weight",
    "post_attention_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
#: block N only (shared by a stack of MTP layers): GGUF suffix -> checkpoint name after ``mtp.``
_SHARED = {
    "nextn.enorm.weight": "pre_fc_norm_embedding.weight",
    "nextn.hnorm.weight": "pre_fc_norm_hidden.weight",
    "nextn.eh_proj.weight": "fc.weight",
    "nextn.shared_head_norm.weight": "norm.weight",
}
SUPPORTED_ARCHS = ("qwen35",)


class HeadsError(ValueError):
    pass


def is_norm(checkpoint_name: str) -> bool:
    """Qwen3.5 RMSNorm weights: stored in the GGUF as 1 + w."""
    module = checkpoint_name.removesuffix(".weight").rsplit(".", 1)[-1]
    return "norm" in module   # norm, *_layernorm, q_norm, k_norm, pre_fc_norm_{embedding,hidden}


def name_map(n_trunk: int, n_heads: int) -> dict[str, str]:
    """GGUF tensor name -> checkpoint name (``mtp.*``) for the MTP block."""
    out = {f"blk.{n_trunk}.{g}": f"mtp.{c}" for g, c in _SHARED.items()}
    for i in range(n_heads):
        out.update({f"blk.{n_trunk + i}.{g}": f"mtp.layers.{i}.{c}" for g, c in _LAYER.items()})
    return out


def from_gguf_tensor(checkpoint_name: str, array: np.ndarray) -> np.ndarray:
    """The converter's transform, inverted (GGUF values -> checkpoint values)."""
    a = np.asarray(array, dtype=np.float32)
    return a - np.float32(1.0) if is_norm(checkpoint_name) else a


def to_gguf_tensor(checkpoint_name: str, array: np.ndarray) -> np.ndarray:
    """The converter's transform (checkpoint values -> GGUF values)."""
    a = np.asarray(array, dtype=np.float32)
    return a + np.float32(1.0) if is_norm(checkpoint_name) else a


@dataclass
class GGUFLayout:
    arch: str
    n_trunk: int
    n_heads: int
    config: dict                      # Qwen3_5TextConfig kwargs
    tied: bool
    tensor_types: dict[str, str] = field(default_factory=dict)   # MTP GGUF tensor -> ggml type name


def _field(reader, key, default=None):
    f = reader.fields.get(key)
    if f is None:
        return default
    v = f.contents()
    return v


def read_layout(reader) -> GGUFLayout:
    """Architecture, depths and the Hugging Face text config of a target GGUF."""
    arch = _field(reader, "general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise HeadsError(f"GGUF architecture {arch!r}: PyTorch heads are implemented for "
                         f"{', '.join(SUPPORTED_ARCHS)}")
    n_heads = int(_field(reader, f"{arch}.nextn_predict_layers", 0) or 0)
    if n_heads == 0:
        raise HeadsError(f"the GGUF carries no MTP layers ({arch}.nextn_predict_layers is 0)")
    n_blocks = int(_field(reader, f"{arch}.block_count"))
    n_trunk = n_blocks - n_heads
    tensors = {t.name: t for t in reader.tensors}
    vocab, hidden = (int(x) for x in reversed(tensors["token_embd.weight"].shape.tolist()))
    key_len = int(_field(reader, f"{arch}.attention.key_length"))
    rope_dims = int(_field(reader, f"{arch}.rope.dimension_count", key_len))
    # the converter pads transformers' three M-RoPE sections (t, h, w) with a 0 to four
    sections = [int(x) for x in (_field(reader, f"{arch}.rope.dimension_sections") or [])][:3]
    recurrent = _field(reader, f"{arch}.attention.recurrent_layers") or [False] * n_blocks
    rope = {"rope_type": "default", "rope_theta": float(_field(reader, f"{arch}.rope.freq_base", 10000.0)),
            "partial_rotary_factor": rope_dims / key_len, "mrope_interleaved": True}
    if sections:
        rope["mrope_section"] = sections
    config = {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(_field(reader, f"{arch}.feed_forward_length")),
        "num_hidden_layers": n_trunk,
        "layer_types": ["linear_attention" if r else "full_attention" for r in list(recurrent)[:n_trunk]],
        "num_attention_heads": int(_field(reader, f"{arch}.attention.head_count")),
        "num_key_value_heads": int(_field(reader, f"{arch}.attention.head_count_kv")),
        "head_dim": key_len,
        "rms_norm_eps": float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon")),
        "rope_parameters": rope,
        "mtp_num_hidden_layers": n_heads,
        "tie_word_embeddings": "output.weight" not in tensors,
        "attention_bias": False,
    }
    names = name_map(n_trunk, n_heads)
    missing = [g for g in names if g not in tensors]
    if missing:
        raise HeadsError(f"the GGUF lacks MTP tensors {missing}")
    types = {g: tensors[g].tensor_type.name for g in names}
    return GGUFLayout(arch, n_trunk, n_heads, config, config["tie_word_embeddings"], types)


def _dequant(t) -> np.ndarray:
    from gguf.quants import dequantize

    a = dequantize(t.data, t.tensor_type)
    shape = tuple(int(x) for x in reversed(t.shape.tolist()))
    return np.array(a, dtype=np.float32).reshape(shape)  # a copy: the reader maps the file read-only


@dataclass
class LoadedHeads:
    """The PyTorch heads of a GGUF: ``module`` (embedding / LM head frozen)."""

    module: nn.Module
    layout: GGUFLayout
    source: Path

    def state(self) -> dict[str, torch.Tensor]:
        """The trainable MTP tensors under checkpoint names (``mtp.*``)."""
        return {f"mtp.{k}": v for k, v in self.module.mtp_state_dict().items()}


def load_heads(gguf_path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedHeads:
    """Build the PyTorch MTP module from a target GGUF (any tensor types gguf-py dequantizes)."""
    from gguf import GGUFReader

    from ..reference import Qwen35MTP

    path = Path(gguf_path)
    reader = GGUFReader(str(path))
    layout = read_layout(reader)
    tensors = {t.name: t for t in reader.tensors}
    state = {"model.embed_tokens.weight": torch.from_numpy(_dequant(tensors["token_embd.weight"]))}
    if not layout.tied:
        state["lm_head.weight"] = torch.from_numpy(_dequant(tensors["output.weight"]))
    for g, c in name_map(layout.n_trunk, layout.n_heads).items():
        state[c] = torch.from_numpy(from_gguf_tensor(c, _dequant(tensors[g])))
    module = Qwen35MTP.from_state_dict(layout.config, state, dtype=dtype)
    freeze_shared(module)
    return LoadedHeads(module, layout, path)


def freeze_shared(module: nn.Module) -> None:
    """The trunk's embedding and LM head are shared and never trained."""
    module.embed_tokens.weight.requires_grad_(False)
    module.lm_head.weight.requires_grad_(False)


def save_heads(out_dir: str | Path, state: dict[str, torch.Tensor], layout: GGUFLayout, source: str | Path,
               extra: dict | None = None) -> Path:
    """Write a heads directory: ``heads.safetensors`` + ``heads.json``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}
    expected = set(name_map(layout.n_trunk, layout.n_heads).values())
    if set(tensors) != expected:
        raise HeadsError(f"heads state mismatch: missing {sorted(expected - set(tensors))}, "
                         f"unexpected {sorted(set(tensors) - expected)}")
    save_file(tensors, str(out / HEADS_FILE))
    meta = {"arch": layout.arch, "n_trunk": layout.n_trunk, "n_heads": layout.n_heads,
            "config": layout.config, "source_gguf": str(source), "tensor_types": layout.tensor_types}
    meta.update(extra or {})
    (out / HEADS_META).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_heads_dir(heads_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    d = Path(heads_dir)
    if not (d / HEADS_FILE).is_file() or not (d / HEADS_META).is_file():
        raise HeadsError(f"{d}: not a heads directory (needs {HEADS_FILE} and {HEADS_META})")
    return load_file(str(d / HEADS_FILE)), json.loads((d / HEADS_META).read_text())


__all__ = ["GGUFLayout", "HeadsError", "LoadedHeads", "freeze_shared", "from_gguf_tensor", "load_heads",
           "name_map", "read_heads_dir", "read_layout", "save_heads", "to_gguf_tensor"]
