"""PyTorch MTP heads loaded from (and written back to) a target GGUF.

The heads are read from the GGUF itself, not from the Hugging Face checkpoint:
whatever quantization the file carries is dequantized with gguf-py
(``gguf.quants.dequantize``) and the converter's transforms are inverted, so
training starts from exactly the heads llama.cpp runs. The token embedding and
the LM head are the trunk's (``token_embd`` / ``output``; tied when there is no
``output``), loaded frozen and shared; so are an MTP layer's own
``nextn.embed_tokens`` / ``nextn.shared_head_head`` where the GGUF has them.

Every supported GGUF architecture is covered, one family module each
(:data:`FAMILIES`): the family reads the transformers config of the MTP
decoder layers from the GGUF's key/values, lists the trainable tensors as
:class:`~gguf_mtp.heads.common.TensorRule` (GGUF tensor(s) <-> heads
tensor, with the converter's transform and its inverse) and builds the module
around transformers' own decoder layer, whose logits and output hidden state
equal llama.cpp's MTP graph (tests/test_train_heads*.py):

* ``qwen35`` (here): :class:`gguf_mtp.heads.qwen35_torch.Qwen35MTP`;
* ``qwen35moe``, ``qwen3next``: :mod:`gguf_mtp.heads.mtp_qwen_moe`;
* ``deepseek2``, ``glm4moe``: :mod:`gguf_mtp.heads.mtp_nextn`;
* ``llama``, ``qwen2`` (MiMo included), ``qwen3``, ``gemma3``: :mod:`gguf_mtp.heads.mtp_dense`.

Which GGUF tensor holds which heads tensor, and the converter's transform
between them (Qwen3.5: every RMSNorm stored as ``1 + w``; nothing split or
reordered in the MTP block), is the architecture's rows of
:mod:`gguf_mtp.heads.tensor_map`, the one table the converter, these loaders,
stitching and ``gguf-mtp archs --tensors`` read.

A heads directory (what ``gguf-mtp finetune`` writes and ``gguf-mtp stitch``
reads) holds ``heads.safetensors`` (the trainable tensors as ``mtp.<state
name>``, float32: the checkpoint's ``mtp.*`` names for the Qwen families,
``mtp.layers.i.*`` for appended layers ``model.layers.{N+i}.*``, experts in
transformers' fused form) and ``heads.json`` (architecture, trunk depth, the
GGUF it came from, the training record).
"""

from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import tensor_map
from .common import (
    GGUFLayout,
    GGUFView,
    HeadsError,
    HeadsFamily,
    MTPHeads,
    TensorRule,
    table_rules,
)

HEADS_FILE = "heads.safetensors"
HEADS_META = "heads.json"

#: GGUF architecture -> "module:FAMILY" (imported on first use)
FAMILIES: dict[str, str] = {
    "qwen35": "gguf_mtp.heads.mtp:QWEN35",
    "qwen35moe": "gguf_mtp.heads.mtp_qwen_moe:QWEN_MOE",
    "qwen3next": "gguf_mtp.heads.mtp_qwen_moe:QWEN_MOE",
    "deepseek2": "gguf_mtp.heads.mtp_nextn:NEXTN",
    "glm4moe": "gguf_mtp.heads.mtp_nextn:NEXTN",
    "llama": "gguf_mtp.heads.mtp_dense:DENSE",
    "qwen2": "gguf_mtp.heads.mtp_dense:DENSE",
    "qwen3": "gguf_mtp.heads.mtp_dense:DENSE",
    "gemma3": "gguf_mtp.heads.mtp_dense:DENSE",
}
SUPPORTED_ARCHS = tuple(FAMILIES)


def family_for(arch: str) -> HeadsFamily:
    try:
        module, attr = FAMILIES[arch].split(":")
    except KeyError:
        raise HeadsError(f"GGUF architecture {arch!r}: PyTorch heads are implemented for "
                         f"{', '.join(SUPPORTED_ARCHS)}") from None
    return getattr(importlib.import_module(module), attr)


# -- Qwen3.5 ----------------------------------------------------------------------

def _qwen35_config(view: GGUFView, n_trunk: int, n_heads: int) -> dict:
    """``Qwen3_5TextConfig`` kwargs."""
    n_blocks = n_trunk + n_heads
    vocab, hidden = view.shape("token_embd.weight")
    key_len = int(view.need("attention.key_length"))
    rope_dims = int(view.kv("rope.dimension_count", key_len))
    # the converter pads transformers' three M-RoPE sections (t, h, w) with a 0 to four
    sections = [int(x) for x in (view.kv("rope.dimension_sections") or [])][:3]
    recurrent = view.kv("attention.recurrent_layers") or [False] * n_blocks
    rope = {"rope_type": "default", "rope_theta": float(view.kv("rope.freq_base", 10000.0)),
            "partial_rotary_factor": rope_dims / key_len, "mrope_interleaved": True}
    if sections:
        rope["mrope_section"] = sections
    return {
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": int(view.need("feed_forward_length")),
        "num_hidden_layers": n_trunk,
        "layer_types": ["linear_attention" if r else "full_attention" for r in list(recurrent)[:n_trunk]],
        "num_attention_heads": int(view.need("attention.head_count")),
        "num_key_value_heads": int(view.need("attention.head_count_kv")),
        "head_dim": key_len,
        "rms_norm_eps": float(view.need("attention.layer_norm_rms_epsilon")),
        "rope_parameters": rope,
        "mtp_num_hidden_layers": n_heads,
        "tie_word_embeddings": "output.weight" not in view.tensors,
        "attention_bias": False,
    }


def _qwen35_rules(layout: GGUFLayout) -> list[TensorRule]:
    return table_rules(tensor_map.QWEN35, layout)


def _qwen35_build(layout: GGUFLayout, view: GGUFView, state: dict) -> nn.Module:
    from .qwen35_torch import Qwen35MTP

    full = {f"mtp.{k}": v for k, v in state.items()}
    full["model.embed_tokens.weight"] = torch.from_numpy(view.array("token_embd.weight"))
    if not layout.tied:
        full["lm_head.weight"] = torch.from_numpy(view.array("output.weight"))
    module = Qwen35MTP.from_state_dict(layout.config, full)
    freeze_shared(module)
    return module


QWEN35 = HeadsFamily(archs=("qwen35",), config=_qwen35_config, rules=_qwen35_rules, build=_qwen35_build)


# -- any architecture ---------------------------------------------------------------

def _block_of(name: str) -> int | None:
    parts = name.split(".", 2)
    return int(parts[1]) if parts[0] == "blk" and len(parts) > 2 and parts[1].isdecimal() else None


def read_layout(gguf: str | Path | GGUFView) -> GGUFLayout:
    """Architecture, depths and the transformers config of a target GGUF's MTP block."""
    view = gguf if isinstance(gguf, GGUFView) else GGUFView.open(gguf)
    family = family_for(view.arch)
    n_heads = int(view.kv("nextn_predict_layers", 0) or 0)
    if n_heads == 0:
        raise HeadsError(f"the GGUF carries no MTP layers ({view.arch}.nextn_predict_layers is 0)")
    n_trunk = int(view.need("block_count")) - n_heads
    config = family.config(view, n_trunk, n_heads)
    types = {name: t.type_name for name, t in view.tensors.items()
             if _block_of(name) is not None and _block_of(name) >= n_trunk}
    layout = GGUFLayout(view.arch, n_trunk, n_heads, config, bool(config["tie_word_embeddings"]), types)
    missing = sorted({g for r in family.rules(layout) for g in r.gguf if g not in view.tensors})
    if missing:
        raise HeadsError(f"the GGUF lacks MTP tensors {missing}")
    return layout


def rules(layout: GGUFLayout) -> list[TensorRule]:
    """The trainable tensors of ``layout``'s MTP block and how each is stored."""
    return family_for(layout.arch).rules(layout)


def state_names(layout: GGUFLayout) -> set[str]:
    """Names of a heads directory's tensors (``mtp.<state name>``)."""
    return {f"mtp.{r.state}" for r in rules(layout)}


@dataclass
class LoadedHeads:
    """The PyTorch heads of a GGUF: ``module`` (embedding / LM head frozen)."""

    module: nn.Module
    layout: GGUFLayout
    source: Path

    def state(self) -> dict[str, torch.Tensor]:
        """The trainable MTP tensors under heads-directory names (``mtp.*``)."""
        return {f"mtp.{k}": v for k, v in self.module.mtp_state_dict().items()}


def load_heads(gguf_path: str | Path, dtype: torch.dtype = torch.float32) -> LoadedHeads:
    """Build the PyTorch MTP module from a target GGUF (any tensor types gguf-py dequantizes)."""
    path = Path(gguf_path)
    view = GGUFView.open(path)
    layout = read_layout(view)
    module = family_for(layout.arch).build(layout, view, _block_state(view, layout)).to(dtype)
    return LoadedHeads(module, layout, path)


def _block_state(view: GGUFView, layout: GGUFLayout) -> dict[str, torch.Tensor]:
    """``layout``'s trainable MTP tensors in VIEW, float32, under state names."""
    state = {}
    for r in rules(layout):
        a = r.load([view.array(g) for g in r.gguf])
        state[r.state] = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    return state


def read_state(gguf_path: str | Path, layout: GGUFLayout) -> dict[str, torch.Tensor]:
    """``layout``'s trainable MTP tensors (state names, what ``load_mtp_state``
    takes) as GGUF_PATH stores them: a full file, or a heads file (the MTP
    block alone, what ``graft`` takes as HEADS). Its block must sit where
    ``layout``'s does; the module checks the shapes when it loads them."""
    view = GGUFView.open(gguf_path)
    if view.arch != layout.arch:
        raise HeadsError(f"{gguf_path}: a {view.arch} block, not {layout.arch}")
    n_heads = int(view.kv("nextn_predict_layers", 0) or 0)
    n_trunk = int(view.kv("block_count", 0) or 0) - n_heads
    if (n_trunk, n_heads) != (layout.n_trunk, layout.n_heads):
        raise HeadsError(f"{gguf_path}: {n_heads} MTP layer(s) after {n_trunk} trunk blocks, the target has "
                         f"{layout.n_heads} after {layout.n_trunk}")
    missing = sorted({g for r in rules(layout) for g in r.gguf if g not in view.tensors})
    if missing:
        raise HeadsError(f"{gguf_path}: no MTP tensors {missing}")
    return _block_state(view, layout)


def to_gguf_arrays(layout: GGUFLayout, state: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """A heads directory's tensors (``mtp.*``) as the GGUF tensors they are
    stored as (the converter's transforms applied), float32."""
    out = {}
    for r in rules(layout):
        name = f"mtp.{r.state}"
        if name not in state:
            raise HeadsError(f"the heads have no tensor {name} (for {', '.join(r.gguf)})")
        arrays = r.store(np.ascontiguousarray(state[name].detach().float().cpu().numpy()))
        out.update({g: np.asarray(a, dtype=np.float32) for g, a in zip(r.gguf, arrays)})
    return out


def freeze_shared(module: nn.Module) -> None:
    """The trunk's embedding and LM head are shared and never trained."""
    module.embed_tokens.weight.requires_grad_(False)
    module.lm_head.weight.requires_grad_(False)


def save_heads(out_dir: str | Path, state: dict[str, torch.Tensor], layout: GGUFLayout, source: str | Path,
               extra: dict | None = None) -> Path:
    """Write a heads directory: ``heads.safetensors`` + ``heads.json``."""
    tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}
    expected = state_names(layout)
    if set(tensors) != expected:
        raise HeadsError(f"heads state mismatch: missing {sorted(expected - set(tensors))}, "
                         f"unexpected {sorted(set(tensors) - expected)}")
    meta = {"arch": layout.arch, "n_trunk": layout.n_trunk, "n_heads": layout.n_heads,
            "config": layout.config, "source_gguf": str(source), "tensor_types": layout.tensor_types}
    meta.update(extra or {})
    return write_heads_dir(out_dir, tensors, meta, source)


def write_heads_dir(out_dir: str | Path, tensors: dict[str, torch.Tensor], meta: dict, source: str | Path) -> Path:
    """Write ``heads.safetensors`` then ``heads.json``, each to a temporary name
    renamed into place (a killed write never leaves a half file under the real
    name). ``heads.json`` records the SHA-256 of the tensors file, so a pair from
    two different saves (killed between the renames) is refused on reading, and
    the fingerprint of the model they were made for (``source``)."""
    import hashlib
    import os

    from safetensors.torch import save

    from ..gguf.inspect import model_fingerprint

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = save(tensors)                      # serialized once: written and hashed from memory
    tmp = out / f".{HEADS_FILE}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    os.replace(tmp, out / HEADS_FILE)
    meta = {**meta, "heads_sha256": digest}
    if Path(source).is_file():
        meta["target"] = model_fingerprint(source)
    tmp = out / f".{HEADS_META}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, out / HEADS_META)
    return out


#: heads.json: key -> (type, required for MTP heads, required for Medusa heads)
_META_SCHEMA = {
    "arch": (str, True, False), "n_trunk": (int, True, False), "n_heads": (int, True, True),
    "config": (dict, False, False), "source_gguf": (str, False, False), "tensor_types": (dict, False, False),
    "heads_sha256": (str, False, False), "target": (dict, False, False), "kind": (str, False, True),
    "n_layers": (int, False, True), "n_embd": (int, False, True), "init": (str, False, False),
    "training": (dict, False, False),
}


def _check_meta(path: Path, meta: dict) -> None:
    medusa = meta.get("kind") == "medusa"
    for key, (typ, need_mtp, need_medusa) in _META_SCHEMA.items():
        if key not in meta:
            if need_medusa if medusa else need_mtp:
                raise HeadsError(f"{path}: {key!r} is missing")
            continue
        v = meta[key]
        if not isinstance(v, typ) or isinstance(v, bool) or (typ is int and v < (1 if key == "n_heads" else 0)):
            raise HeadsError(f"{path}: {key!r} is {v!r}, expected {'a positive' if key == 'n_heads' else 'a'} "
                             f"{typ.__name__}")
    if "kind" in meta and meta["kind"] != "medusa":
        raise HeadsError(f"{path}: unknown heads kind {meta['kind']!r}")


def read_heads_dir(heads_dir: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and metadata of a heads directory, checked: a corrupt or
    mismatched pair gives a HeadsError naming the file, never a traceback."""
    import hashlib

    from safetensors import SafetensorError
    from safetensors.torch import load

    d = Path(heads_dir)
    if not (d / HEADS_FILE).is_file() or not (d / HEADS_META).is_file():
        raise HeadsError(f"{d}: not a heads directory (needs {HEADS_FILE} and {HEADS_META})")
    try:
        meta = json.loads((d / HEADS_META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise HeadsError(f"{d / HEADS_META}: not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise HeadsError(f"{d / HEADS_META}: not a JSON object")
    _check_meta(d / HEADS_META, meta)
    raw = (d / HEADS_FILE).read_bytes()
    want = meta.get("heads_sha256")
    if want is not None and hashlib.sha256(raw).hexdigest() != want:
        raise HeadsError(f"{d}: {HEADS_FILE} is not the file {HEADS_META} was written with (an interrupted "
                         "save or a corrupt file): rerun the command that made it")
    try:
        state = load(raw)
    except (SafetensorError, ValueError, OSError) as e:
        raise HeadsError(f"{d / HEADS_FILE}: not a readable safetensors file ({e})") from None
    return state, meta


__all__ = [
    "FAMILIES",
    "SUPPORTED_ARCHS",
    "GGUFLayout",
    "HeadsError",
    "LoadedHeads",
    "MTPHeads",
    "family_for",
    "freeze_shared",
    "load_heads",
    "read_heads_dir",
    "read_layout",
    "read_state",
    "rules",
    "save_heads",
    "write_heads_dir",
    "state_names",
    "to_gguf_arrays",
]
