"""Medusa heads: the GGUF schema, a numpy reference, initialisation, writing.

A Medusa-1 head ``k`` (0-based) reads the trunk's final hidden state ``h_t``
(after the output norm, the row the LM head reads) and predicts the token
``k + 2`` places ahead (``x_{t+k+2}``; the LM head itself predicts
``x_{t+1}``)::

    x = h_t
    for l in range(L):  x = x + SiLU(W_kl x + b_kl)       # residual blocks
    logits_k = P_k x                                     # vocabulary projection

In the model GGUF (every architecture; patch 0007 computes all K heads in the
target pass, for every output row, when the context enables them):

===============================  ================  ========================================
tensor                           GGUF shape        meaning
===============================  ================  ========================================
``medusa.{k}.blk.{l}.weight``    {n_embd, n_embd}  ``W_kl`` (PyTorch ``Linear`` [out, in])
``medusa.{k}.blk.{l}.bias``      {n_embd}          ``b_kl`` (always F32)
``medusa.{k}.output.weight``     {n_embd, n_vocab} optional: head k's own projection
``medusa.draft_head.weight``     {n_embd, N}       optional: a projection onto N draft tokens
                                                   shared by all heads (ids in
                                                   ``gguf_mtp.draft_vocab``)
===============================  ================  ========================================

Without either optional tensor a head projects with the trunk's LM head
(``output.weight``, or the tied ``token_embd.weight``). Metadata
(informational: the runtime finds the heads by tensor name):
``gguf_mtp.medusa.head_count``, ``gguf_mtp.medusa.layer_count``,
``gguf_mtp.medusa.projection`` (``shared`` | ``own`` | ``draft``) and
``gguf_mtp.medusa.init`` (``recycled`` | ``scratch`` | ``trained``).

Initialisation
--------------
``scratch`` is the Medusa paper's: every ``W``, ``b`` zero, so each head
starts as the LM head (it predicts ``x_{t+1}`` for ``x_{t+k+2}``) and
learns only the residual.

``recycled`` starts from the checkpoint's MTP block (DeepSeek-V3 layout:
``u = eh_proj [enorm(emb(x_{t+1})); hnorm(h_t)]``, a decoder layer, the
shared head). The MTP's first step is the only part of it a Medusa block can
express without knowing ``x_{t+1}``: its linear fusion. With ``eh_proj = [E_e | E_h]``
(embedding half first), RMS-norm gains ``g_e``, ``g_h`` and the trunk's
output-norm gain ``g_o`` (the trunk's hidden state is ``g_o * n`` with
``rms(n) = 1``, so ``hnorm(h) ~ g_h * h / rms(g_o)``)::

    W_k0 = E_h diag(g_h) / rms(g_o)
    b_k0 = E_e mean_v enorm(emb(v))      # x_{t+1} marginalised: the mean normalised embedding
    W_kl, b_kl = 0 for l >= 1

so the first block adds ``SiLU(u~)``, the MTP's fused input with the next
token averaged out, to the trunk's state. Every head gets the same start
(head ``k`` reads MTP block ``min(k, n_mtp - 1)`` when there are several).
Whether this beats ``scratch`` is an empirical question:
``benchmarks/medusa_recycling.py`` trains both for the same steps on the
same data and measures tau in the runtime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gguf.constants import Keys, arch_key

DRAFT_HEAD = "medusa.draft_head.weight"
INITS = ("recycled", "scratch")
PROJECTIONS = ("shared", "own", "draft")


class MedusaError(ValueError):
    pass


def block_name(k: int, l: int, part: str) -> str:
    return f"medusa.{k}.blk.{l}.{part}"


def output_name(k: int) -> str:
    return f"medusa.{k}.output.weight"


def is_medusa_tensor(name: str) -> bool:
    return name.startswith("medusa.")


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


@dataclass
class MedusaHeads:
    """K heads of L blocks, PyTorch axis order (``w[k, l]`` is [out, in])."""

    w: np.ndarray                       # (K, L, n_embd, n_embd)
    b: np.ndarray                       # (K, L, n_embd)
    output: np.ndarray | None = None    # (K, n_vocab, n_embd): own projections
    init: str = "scratch"
    meta: dict = field(default_factory=dict)

    @property
    def n_heads(self) -> int:
        return self.w.shape[0]

    @property
    def n_layers(self) -> int:
        return self.w.shape[1]

    @property
    def n_embd(self) -> int:
        return self.w.shape[-1]

    def features(self, h: np.ndarray) -> np.ndarray:
        """(K, n, n_embd): each head's state after its blocks, for hidden rows ``h`` (n, n_embd)."""
        out = []
        for k in range(self.n_heads):
            x = np.asarray(h, dtype=np.float64)
            for l in range(self.n_layers):
                x = x + silu(x @ self.w[k, l].T.astype(np.float64) + self.b[k, l])
            out.append(x)
        return np.stack(out)

    def logits(self, h: np.ndarray, lm_head: np.ndarray) -> np.ndarray:
        """(K, n, n_cols) reference logits; ``lm_head`` is the shared [n_cols, n_embd] projection."""
        x = self.features(h)
        if self.output is not None:
            return np.stack([x[k] @ self.output[k].T.astype(np.float64) for k in range(self.n_heads)])
        return x @ np.asarray(lm_head, dtype=np.float64).T


def init_scratch(n_embd: int, n_heads: int, n_layers: int = 1) -> MedusaHeads:
    """The Medusa paper's start: zero blocks, so every head is the LM head."""
    _check_shape(n_heads, n_layers)
    return MedusaHeads(np.zeros((n_heads, n_layers, n_embd, n_embd), np.float32),
                       np.zeros((n_heads, n_layers, n_embd), np.float32), init="scratch")


def _check_shape(n_heads: int, n_layers: int) -> None:
    if n_heads < 1 or n_layers < 1:
        raise MedusaError(f"need at least one head and one block per head (got {n_heads} heads, {n_layers} blocks)")


def recycled_block(view, block: int) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of the first Medusa block recycled from MTP block ``block``
    of a GGUF (:class:`gguf_mtp.heads.common.GGUFView`); see the module docs."""
    p = f"blk.{block}.nextn."
    need = [p + "eh_proj.weight", p + "enorm.weight", p + "hnorm.weight", "output_norm.weight", "token_embd.weight"]
    missing = [n for n in need if n not in view.tensors]
    if missing:
        raise MedusaError(f"{view.path}: cannot recycle MTP block {block}: missing {', '.join(missing)}")
    eh = view.array(need[0]).astype(np.float64)          # [n, 2n], embedding half first
    n = eh.shape[0]
    g_e, g_h, g_o = (view.array(x).astype(np.float64) for x in need[1:4])
    emb_name = p + "embed_tokens.weight" if p + "embed_tokens.weight" in view.tensors else "token_embd.weight"
    emb = view.array(emb_name).astype(np.float64)
    norms = np.sqrt(np.mean(emb * emb, axis=1))
    used = norms > 0                                      # rows never trained may be exactly zero
    eps = float(view.kv("attention.layer_norm_rms_epsilon", 1e-6))
    e_bar = (g_e * (emb[used] / np.sqrt(norms[used, None] ** 2 + eps))).mean(axis=0)
    w = eh[:, n:] * g_h[None, :] / max(rms(g_o), 1e-6)
    b = eh[:, :n] @ e_bar
    return w.astype(np.float32), b.astype(np.float32)


def init_recycled(gguf: str | Path, n_heads: int, n_layers: int = 1) -> MedusaHeads:
    """Heads whose first block is recycled from the GGUF's MTP block(s)."""
    from .common import GGUFView

    _check_shape(n_heads, n_layers)
    view = GGUFView.open(gguf)
    n_block = int(view.need("block_count"))
    n_nextn = int(view.kv("nextn_predict_layers", 0) or 0)
    if n_nextn == 0:
        raise MedusaError(f"{gguf}: no MTP layers to recycle; use --init scratch")
    heads = init_scratch(int(view.need("embedding_length")), n_heads, n_layers)
    for k in range(n_heads):
        heads.w[k, 0], heads.b[k, 0] = recycled_block(view, n_block - n_nextn + min(k, n_nextn - 1))
    heads.init = "recycled"
    return heads


def read_heads(gguf: str | Path) -> MedusaHeads | None:
    """The Medusa heads a GGUF carries (dequantized), or None."""
    from .common import GGUFView

    view = gguf if hasattr(gguf, "tensors") else GGUFView.open(gguf)
    K = 0
    while block_name(K, 0, "weight") in view.tensors:
        K += 1
    if K == 0:
        return None
    L = 0
    while block_name(0, L, "weight") in view.tensors:
        L += 1
    w = np.stack([np.stack([view.array(block_name(k, l, "weight")) for l in range(L)]) for k in range(K)])
    b = np.stack([np.stack([view.array(block_name(k, l, "bias")) for l in range(L)]) for k in range(K)])
    own = output_name(0) in view.tensors
    output = np.stack([view.array(output_name(k)) for k in range(K)]) if own else None
    meta = {key: view.fields[key] for key in view.fields if key.startswith(Keys.Medusa.PREFIX)}
    return MedusaHeads(w, b, output, init=str(meta.get(Keys.Medusa.INIT, "trained")), meta=meta)


def write_heads(target: str | Path, heads: MedusaHeads, out: str | Path, *, head_type: str = "f16",
                init: str | None = None, progress: bool = True) -> Path:
    """Copy TARGET to OUT with ``heads`` as its Medusa heads (existing ones replaced).

    Block weights (and own projections) are stored at ``head_type``; biases as F32."""
    from ..gguf.writer import ENCODABLE_TYPES as HEAD_TYPES
    from ..gguf.writer import (
        STRING,
        UINT32,
        SourceFile,
        Tensor,
        encode_kv,
        encode_tensor,
        write_gguf,
    )

    if head_type not in HEAD_TYPES:
        raise MedusaError(f"head type {head_type!r}: choose one of {', '.join(HEAD_TYPES)}")
    src = SourceFile.open(target)
    if Path(out).resolve() == src.path.resolve():
        raise MedusaError(f"{out}: write to a new file, not over TARGET")
    kv = src.header.kv
    arch = kv.get("general.architecture")
    n_embd = int(kv[arch_key(Keys.LLM.EMBEDDING_LENGTH, arch)])
    if heads.n_embd != n_embd:
        raise MedusaError(f"heads of width {heads.n_embd} do not fit {target} (n_embd {n_embd})")
    names = {t[0] for t in src.header.tensors}
    projection = "own" if heads.output is not None else ("draft" if DRAFT_HEAD in names else "shared")

    entries = [src.raw_kv(k) for k in src.header.kv if not k.startswith(Keys.Medusa.PREFIX)]
    entries += [encode_kv(Keys.Medusa.HEAD_COUNT, UINT32, heads.n_heads), encode_kv(Keys.Medusa.LAYER_COUNT, UINT32, heads.n_layers),
                encode_kv(Keys.Medusa.PROJECTION, STRING, projection), encode_kv(Keys.Medusa.INIT, STRING, init or heads.init)]
    kept = [t for t in src.tensors() if not is_medusa_tensor(t.name) or t.name == DRAFT_HEAD]
    new = []
    qtype = HEAD_TYPES[head_type]
    for k in range(heads.n_heads):
        for l in range(heads.n_layers):
            data, gtype, shape = encode_tensor(heads.w[k, l], qtype)
            new.append(Tensor(block_name(k, l, "weight"), shape, gtype, data=data))
            data, gtype, shape = encode_tensor(heads.b[k, l], "F32")
            new.append(Tensor(block_name(k, l, "bias"), shape, gtype, data=data))
        if heads.output is not None:
            data, gtype, shape = encode_tensor(heads.output[k], qtype)
            new.append(Tensor(output_name(k), shape, gtype, data=data))
    align = int(kv.get("general.alignment", 32))
    return write_gguf(out, entries, kept + new, alignment=align, progress=progress, desc="Writing heads")


__all__ = [
    "DRAFT_HEAD",
    "INITS",
    "PROJECTIONS",
    "MedusaError",
    "MedusaHeads",
    "block_name",
    "init_recycled",
    "init_scratch",
    "output_name",
    "read_heads",
    "recycled_block",
    "write_heads",
]
