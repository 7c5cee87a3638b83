"""What the per-family head loaders share (:mod:`gguf_mtp.heads.mtp`).

A family describes its MTP block as a list of :class:`TensorRule`: one
trainable tensor of the PyTorch heads (its *state name*, what a heads
directory stores under ``mtp.<state name>``) made from one or more GGUF
tensors by ``load`` (the converter's transform inverted), and written back
by ``store`` (the converter's transform). ``store(load(x)) == x`` bit for bit
for every transform used here (reordering, splitting, stacking, and the
``1 + w`` of Qwen-family norms, exact for the norm magnitudes in use), so
stitching untouched heads reproduces the target GGUF byte for byte.

The PyTorch module is :class:`MTPHeads`: one :class:`gguf_mtp.heads.fused.FusedMTP`
per fusion (one shared by a stack of layers in the Qwen families, one per
layer in DeepSeek-style appended layers) around transformers' own decoder
layer, with the trunk's embedding / LM head (and an MTP layer's own
``embed_tokens`` / ``shared_head_head``) frozen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


class HeadsError(ValueError):
    pass


def _one(arrays):
    (a,) = arrays
    return a


def _same(array):
    return (array,)


@dataclass(frozen=True)
class TensorRule:
    """One trainable heads tensor and the GGUF tensor(s) it is stored as."""

    state: str                                   # heads-state name (without the "mtp." prefix)
    gguf: tuple[str, ...]                        # full GGUF tensor names
    load: Callable = _one                        # [GGUF arrays] -> state array (inverse transform)
    store: Callable = _same                      # state array -> (GGUF arrays) (forward transform)
    what: str = ""                               # the transform, in words (documentation)


def plain(state: str, gguf: str) -> TensorRule:
    return TensorRule(state, (gguf,))


def plus_one_norm(state: str, gguf: str) -> TensorRule:
    """Zero-centred RMSNorm weight ``w``: the GGUF stores ``1 + w``."""
    one = np.float32(1.0)
    return TensorRule(state, (gguf,), lambda a: a[0] - one, lambda w: (w + one,), "GGUF = 1 + w")


def stacked_gate_up(state: str, gate: str, up: str) -> TensorRule:
    """transformers' fused ``experts.gate_up_proj`` ``[E, 2I, H]`` (gate rows
    first) <-> the GGUF's ``ffn_gate_exps`` and ``ffn_up_exps`` ``[E, I, H]``."""

    def load(arrays):
        return np.concatenate(arrays, axis=1)

    def store(w):
        half = w.shape[1] // 2
        return np.ascontiguousarray(w[:, :half]), np.ascontiguousarray(w[:, half:])

    return TensorRule(state, (gate, up), load, store, "concatenated along the row axis")


def rope_permuted(state: str, gguf: str, n_head: int) -> TensorRule:
    """llama's q/k rows, which the converter permutes per head from the
    half-split RoPE layout to llama.cpp's interleaved one."""

    def permute(w, forward):
        rows = w.shape[0]
        if forward:   # [n, 2, d/2] -> [n, d/2, 2]
            return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
        return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return TensorRule(state, (gguf,), lambda a: np.ascontiguousarray(permute(a[0], False)),
                      lambda w: (np.ascontiguousarray(permute(w, True)),), f"RoPE rows permuted ({n_head} heads)")


def kv_b_split(state: str, k_b: str, v_b: str, n_head: int, nope: int) -> TensorRule:
    """``kv_b_proj`` ``[H*(nope+v), r]`` <-> ``k_b`` ``[H, r, nope]`` and ``v_b`` ``[H, v, r]``."""

    def load(arrays):
        kb, vb = arrays
        return np.concatenate([kb.transpose(0, 2, 1), vb], axis=1).reshape(-1, kb.shape[1])

    def store(w):
        kv = w.reshape(n_head, -1, w.shape[-1])
        return np.ascontiguousarray(kv[:, :nope].transpose(0, 2, 1)), np.ascontiguousarray(kv[:, nope:])

    return TensorRule(state, (k_b, v_b), load, store, "split per head, k_b transposed")


def table_rules(rows, layout: "GGUFLayout", features=lambda i: frozenset()) -> list[TensorRule]:
    """The :class:`TensorRule` list of ``layout``'s MTP block from its rows of
    :mod:`gguf_mtp.heads.tensor_map`: one rule per trained row and MTP layer
    (shared rows once, in block N), where the row's ``when`` is among
    ``features(i)``; the row's transform picks the rule's load / store."""
    from . import tensor_map as tm

    cfg = layout.config
    out: list[TensorRule] = []
    for i in range(layout.n_heads):
        have = features(i)
        b = layout.blk(i)
        for r in rows:
            if r.state is None or (r.shared and i > 0) or (r.when and r.when not in have):
                continue
            state = r.state.format(i=i)
            gguf = tuple(f"{layout.blk(0) if r.shared else b}{g}" for g in r.gguf)
            if r.transform in (tm.NONE, tm.STACKED):
                out.append(TensorRule(state, gguf))
            elif r.transform == tm.PLUS_ONE:
                out.append(plus_one_norm(state, gguf[0]))
            elif r.transform in (tm.ROPE_Q, tm.ROPE_K):
                n = cfg["num_attention_heads"] if r.transform == tm.ROPE_Q else cfg["num_key_value_heads"]
                out.append(rope_permuted(state, gguf[0], n))
            elif r.transform == tm.GATE_UP:
                out.append(stacked_gate_up(state, *gguf))
            elif r.transform == tm.KV_B:
                out.append(kv_b_split(state, *gguf, cfg["num_attention_heads"], cfg["qk_nope_head_dim"]))
            else:
                raise HeadsError(f"{layout.arch}: no heads rule for the transform {r.transform!r} of {r.hf}")
    return out


@dataclass
class GGUFLayout:
    """What a target GGUF's MTP block looks like: architecture, depths, the
    transformers config of the MTP decoder layers (JSON-able kwargs), and the
    ggml type of every tensor in the MTP blocks."""

    arch: str
    n_trunk: int
    n_heads: int
    config: dict
    tied: bool
    tensor_types: dict[str, str] = field(default_factory=dict)

    def has(self, name: str) -> bool:
        return name in self.tensor_types

    def blk(self, i: int) -> str:
        """GGUF prefix of MTP layer ``i``."""
        return f"blk.{self.n_trunk + i}."


@dataclass(frozen=True)
class HeadsFamily:
    """One family of GGUF architectures whose MTP block loads the same way.

    ``config(view, n_trunk, n_heads)`` -> transformers config kwargs (JSON-able);
    ``rules(layout)`` -> the trainable tensors (:class:`TensorRule`);
    ``build(layout, view, state)`` -> :class:`MTPHeads` holding ``state``.
    """

    archs: tuple[str, ...]
    config: Callable
    rules: Callable
    build: Callable


# -- reading a GGUF -------------------------------------------------------------

@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor of a GGUF is: shape in PyTorch's axis order, ggml type, byte offset."""

    name: str
    shape: tuple[int, ...]
    qtype: object                  # gguf.GGMLQuantizationType
    path: Path
    offset: int                    # absolute, in the file

    @property
    def type_name(self) -> str:
        return self.qtype.name


def dequant(t: TensorInfo) -> np.ndarray:
    """A GGUF tensor as float32 in PyTorch's axis order (a copy; any type
    gguf-py dequantizes, ``gguf.quants.dequantize``)."""
    from gguf import GGML_QUANT_SIZES
    from gguf.quants import dequantize

    block, size = GGML_QUANT_SIZES[t.qtype]
    row_bytes = t.shape[-1] // block * size
    n_rows = int(np.prod(t.shape[:-1], dtype=np.int64)) if len(t.shape) > 1 else 1
    raw = np.memmap(t.path, dtype=np.uint8, mode="r", offset=t.offset, shape=(n_rows * row_bytes,))
    a = dequantize(np.asarray(raw).reshape(*t.shape[:-1], row_bytes), t.qtype)
    return np.array(a, dtype=np.float32).reshape(t.shape)


@dataclass
class GGUFView:
    """Key/values and tensor table of a target GGUF, read without decoding the
    vocabulary (:func:`gguf_mtp.gguf.inspect.read_header`); tensor data is
    memory-mapped on demand."""

    path: Path
    arch: str
    fields: dict
    tensors: dict[str, TensorInfo]

    @classmethod
    def open(cls, path) -> GGUFView:
        from gguf import GGMLQuantizationType

        from ..gguf.inspect import read_header

        path = Path(path)
        h = read_header(path, keep_array=1 << 16)
        tensors = {n: TensorInfo(n, tuple(int(x) for x in reversed(shape)), GGMLQuantizationType(gtype), path,
                                 h.data_offset + off) for n, shape, gtype, off in h.tensors}
        return cls(path, str(h.kv.get("general.architecture", "")), h.kv, tensors)

    def kv(self, key: str, default=None):
        """``<arch>.key`` (or a full ``general.*`` key)."""
        v = self.fields.get(key if key.startswith("general.") else f"{self.arch}.{key}")
        return default if v is None else v

    def need(self, key: str):
        v = self.kv(key)
        if v is None:
            raise HeadsError(f"the GGUF lacks {self.arch}.{key}")
        return v

    def shape(self, name: str) -> tuple[int, ...]:
        """PyTorch-order shape of a tensor."""
        return self.tensors[name].shape

    def array(self, name: str) -> np.ndarray:
        return dequant(self.tensors[name])


# -- the module -------------------------------------------------------------------

class MTPHeads(nn.Module):
    """MTP heads around one or more :class:`FusedMTP` modules.

    ``route[k]`` = (fusion index, decoder index) of MTP layer ``k`` (the
    ``layer`` argument: draft step k runs layer k mod H). ``names`` maps the
    module's own parameter / buffer names to heads-state names; everything
    else (embeddings, LM heads) is frozen and shared.
    """

    def __init__(self, mtps: list[nn.Module], route: list[tuple[int, int]], names: dict[str, str],
                 embed_tokens: nn.Embedding, lm_head: nn.Linear):
        super().__init__()
        self.mtps = nn.ModuleList(mtps)
        self.embed_tokens, self.lm_head = embed_tokens, lm_head
        self.route = list(route)
        self.names = dict(names)
        own = self.state_dict()
        missing = sorted(k for k in self.names if k not in own)
        if missing:
            raise HeadsError(f"heads module lacks {missing}")
        for name, p in self.named_parameters(remove_duplicate=False):
            if name not in self.names:
                p.requires_grad_(False)

    @property
    def layers(self) -> list[nn.Module]:
        """The decoder layers in draft-step order (finetune cycles through them)."""
        return [self.mtps[f].layers[j] for f, j in self.route]

    def forward(self, input_ids: torch.Tensor, hidden: torch.Tensor, position_ids: torch.Tensor | None = None,
                layer: int = 0, **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """``kw``: FusedMTP's ``chain``."""
        f, j = self.route[layer]
        return self.mtps[f](input_ids, hidden, position_ids, layer=j, **kw)

    def mtp_state_dict(self) -> dict[str, torch.Tensor]:
        """The trainable MTP tensors under heads-state names."""
        own = self.state_dict(keep_vars=False)
        return {s: own[k] for k, s in self.names.items()}

    def load_mtp_state(self, state: dict[str, torch.Tensor]) -> None:
        by_state = {s: k for k, s in self.names.items()}
        missing = sorted(set(by_state) - set(state))
        unexpected = sorted(set(state) - set(by_state))
        if missing or unexpected:
            raise HeadsError(f"heads state mismatch: missing {missing}, unexpected {unexpected}")
        own = self.state_dict(keep_vars=True)
        with torch.no_grad():
            for s, t in state.items():
                dst = own[by_state[s]]
                if tuple(dst.shape) != tuple(t.shape):
                    raise HeadsError(f"{s}: shape {tuple(t.shape)}, the module expects {tuple(dst.shape)}")
                dst.copy_(t)


def module_names(prefix: str, module: nn.Module, state_prefix: str, rename: dict[str, str] | None = None,
                 skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{prefix + name: state_prefix + rename.get(name, name)}`` over ``module``'s
    parameters and persistent buffers, minus names starting with ``skip``."""
    rename = rename or {}
    return {f"{prefix}{k}": f"{state_prefix}{rename.get(k, k)}" for k in module.state_dict()
            if not k.startswith(skip)}


def shared_embed_and_head(view: GGUFView, tied: bool) -> tuple[nn.Embedding, nn.Linear]:
    """The trunk's ``token_embd`` and ``output`` (tied: the embedding)."""
    from .fused import embedding_from, linear_from

    embed = embedding_from(torch.from_numpy(view.array("token_embd.weight")))
    if tied:
        head = nn.Linear(embed.weight.shape[1], embed.weight.shape[0], bias=False)
        head.weight = embed.weight
    else:
        head = linear_from(torch.from_numpy(view.array("output.weight")))
    return embed, head


#: FusedMTP's module names -> the appended layout's (``model.layers.{N+i}.*`` in a checkpoint)
APPENDED_FUSION_NAMES = {"enorm.weight": "enorm.weight", "hnorm.weight": "hnorm.weight",
                         "eh_proj.weight": "eh_proj.weight", "head_norm.weight": "shared_head.norm.weight"}


class ScaledEmbedding(nn.Embedding):
    """An embedding whose rows are multiplied by ``scale`` (Gemma's ``sqrt(hidden)``,
    transformers' ``Gemma3TextScaledWordEmbedding``); the weight is the shared
    (frozen) embedding's own parameter."""

    def __init__(self, embed: nn.Embedding, scale: float):
        super().__init__(embed.num_embeddings, embed.embedding_dim, _weight=embed.weight.detach())
        self.weight = embed.weight
        self.scale = float(scale)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids) * self.scale


def build_appended(layout: GGUFLayout, view: GGUFView, state: dict, cfg, layer_cls, norm_cls,
                   rotary_cls, embed_scale: float | None = None) -> MTPHeads:
    """DeepSeek-style appended MTP layers: each its own fusion, decoder layer
    (built with ``layer_idx = N + i``) and shared-head norm; its own
    ``nextn.embed_tokens`` / ``nextn.shared_head_head`` where the GGUF has
    them (frozen), otherwise the trunk's. ``embed_scale``: the MTP's token
    embedding is multiplied by it before ``enorm`` (Gemma)."""
    from .fused import FusedMTP, embedding_from, linear_from

    hidden, eps = cfg.hidden_size, cfg.rms_norm_eps
    embed, lm_head = shared_embed_and_head(view, layout.tied)
    rotary = rotary_cls(cfg)
    mtps, names = [], {}
    for i in range(layout.n_heads):
        b = layout.blk(i)
        own_embed = view.tensors.get(b + "nextn.embed_tokens.weight")
        own_head = view.tensors.get(b + "nextn.shared_head_head.weight")
        mtp_embed = embed if own_embed is None else embedding_from(torch.from_numpy(dequant(own_embed)))
        fused = FusedMTP(
            enorm=norm_cls(hidden, eps=eps), hnorm=norm_cls(hidden, eps=eps),
            eh_proj=nn.Linear(2 * hidden, hidden, bias=False),
            layers=nn.ModuleList([layer_cls(cfg, layout.n_trunk + i)]),
            head_norm=norm_cls(hidden, eps=eps),
            embed=mtp_embed if embed_scale is None else ScaledEmbedding(mtp_embed, embed_scale),
            lm_head=lm_head if own_head is None else linear_from(torch.from_numpy(dequant(own_head))),
            rotary_emb=rotary)
        rename = dict(APPENDED_FUSION_NAMES)
        rename.update({k: k.removeprefix("layers.0.") for k in fused.state_dict() if k.startswith("layers.0.")})
        names.update(module_names(f"mtps.{i}.", fused, f"layers.{i}.", rename,
                                  skip=("embed.", "lm_head.", "rotary_emb.")))
        mtps.append(fused)
    heads = MTPHeads(mtps, [(i, 0) for i in range(layout.n_heads)], names, embed, lm_head)
    heads.load_mtp_state(state)
    return heads.float().eval()


__all__ = [
    "APPENDED_FUSION_NAMES",
    "GGUFLayout",
    "GGUFView",
    "HeadsError",
    "HeadsFamily",
    "MTPHeads",
    "ScaledEmbedding",
    "TensorInfo",
    "TensorRule",
    "kv_b_split",
    "table_rules",
    "build_appended",
    "dequant",
    "module_names",
    "plain",
    "plus_one_norm",
    "rope_permuted",
    "shared_embed_and_head",
    "stacked_gate_up",
]
