"""Medusa heads in PyTorch: loaded from a GGUF, trained, written back.

The module mirrors :class:`gguf_mtp.heads.medusa.MedusaHeads` (and patch 0007's
graph): head k maps the trunk's post-norm hidden state h_t through L residual
blocks ``x + SiLU(W x + b)`` and projects with the trunk's LM head (frozen;
or its own projection, trained) to predict token t+k+2.

Per-head loss (self-distillation: the recorded sequences are the target's own
output): ``CE(x_{t+k+2}) + kl_weight * KL(target || head)`` on the target's
recorded top-k distribution for that token, weighted across heads by
``beta^k`` normalised (:func:`gguf_mtp.train.losses.step_weights`; the loss is :func:`gguf_mtp.train.losses.medusa_losses`).
A heads directory holds ``heads.safetensors`` (``medusa.w`` [K, L, n, n],
``medusa.b`` [K, L, n], optionally ``medusa.output`` [K, V, n]) and
``heads.json`` with ``"kind": "medusa"``; ``gguf-mtp stitch`` writes it back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .common import GGUFView, HeadsError
from .medusa import MedusaHeads, read_heads

KIND = "medusa"


def lm_head_of(view: GGUFView) -> np.ndarray:
    """The trunk's LM head [n_vocab, n_embd] (the tied embedding when there is no output.weight)."""
    name = "output.weight" if "output.weight" in view.tensors else "token_embd.weight"
    return view.array(name)


class MedusaModule(nn.Module):
    def __init__(self, heads: MedusaHeads, lm_head: np.ndarray):
        super().__init__()
        self.w = nn.Parameter(torch.from_numpy(np.array(heads.w, dtype=np.float32)))
        self.b = nn.Parameter(torch.from_numpy(np.array(heads.b, dtype=np.float32)))
        self.output = (nn.Parameter(torch.from_numpy(np.array(heads.output, dtype=np.float32)))
                       if heads.output is not None else None)
        # LM-head rows that are exactly zero (tokens a small model never trained) all give logit 0:
        # keep the others plus one column log(#zero rows) holding their total mass, an exact
        # full-vocabulary softmax at a fraction of the cost
        lm_head = np.ascontiguousarray(lm_head, dtype=np.float32)
        nonzero = np.flatnonzero(np.abs(lm_head).max(axis=1) > 0)
        self.n_zero = len(lm_head) - len(nonzero)
        self.compact = heads.output is None and self.n_zero > len(lm_head) // 2
        if self.compact:
            index = np.full(len(lm_head), -1, dtype=np.int64)
            index[nonzero] = np.arange(len(nonzero))
            self.register_buffer("index", torch.from_numpy(index), persistent=False)
            self.register_buffer("keep", torch.from_numpy(nonzero), persistent=False)
            lm_head = lm_head[nonzero]
        self.register_buffer("lm_head", torch.from_numpy(lm_head), persistent=False)
        self.init = heads.init

    @property
    def n_heads(self) -> int:
        return self.w.shape[0]

    def features(self, h: torch.Tensor, k: int) -> torch.Tensor:
        x = h
        for l in range(self.w.shape[1]):
            x = x + F.silu(x @ self.w[k, l].T + self.b[k, l])
        return x

    def forward(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Head k's log-probabilities for hidden rows ``h`` (..., n_embd), over the
        vocabulary (or, compacted, over the non-zero rows plus the zero rows' mass)."""
        proj = self.output[k] if self.output is not None else self.lm_head
        logits = self.features(h, k) @ proj.T
        if self.compact:
            const = logits.new_full((*logits.shape[:-1], 1), float(np.log(self.n_zero)))
            logits = torch.cat([logits, const], dim=-1)
        return F.log_softmax(logits.float(), dim=-1)

    def token_logp(self, logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """log p of token ``ids`` (same leading shape as ``logp``, any last dim)."""
        if not self.compact:
            return logp.gather(-1, ids)
        j = self.index[ids]
        lp = logp.gather(-1, j.clamp(min=0))
        zero = logp[..., -1:].expand_as(lp) - float(np.log(self.n_zero))
        return torch.where(j >= 0, lp, zero)

    def predict(self, logp: torch.Tensor) -> torch.Tensor:
        """The most likely token id (-1 if it is one of the zero rows)."""
        a = logp.argmax(-1)
        if not self.compact:
            return a
        return torch.where(a < len(self.keep), self.keep[a.clamp(max=len(self.keep) - 1)], -1)

    def to_heads(self, init: str = "trained") -> MedusaHeads:
        out = self.output.detach().cpu().numpy() if self.output is not None else None
        return MedusaHeads(self.w.detach().cpu().numpy().astype(np.float32),
                           self.b.detach().cpu().numpy().astype(np.float32), out, init=init)


def load_medusa(target: str | Path) -> MedusaModule:
    view = GGUFView.open(target)
    heads = read_heads(view)
    if heads is None:
        raise HeadsError(f"{target}: no Medusa heads to train; add them with "
                         "'gguf-mtp convert --heads medusa' (or gguf_mtp.heads.medusa.write_heads)")
    return MedusaModule(heads, lm_head_of(view))


def save_medusa(out_dir: str | Path, module: MedusaModule, source: str | Path, extra: dict | None = None) -> Path:
    from .mtp import write_heads_dir

    tensors = {"medusa.w": module.w.detach().float().cpu().contiguous(),
               "medusa.b": module.b.detach().float().cpu().contiguous()}
    if module.output is not None:
        tensors["medusa.output"] = module.output.detach().float().cpu().contiguous()
    meta = {"kind": KIND, "n_heads": module.n_heads, "n_layers": int(module.w.shape[1]),
            "n_embd": int(module.w.shape[-1]), "init": module.init, "source_gguf": str(source)}
    meta.update(extra or {})
    return write_heads_dir(out_dir, tensors, meta, source)


def medusa_from_dir(state: dict[str, torch.Tensor], meta: dict) -> MedusaHeads:
    missing = {"medusa.w", "medusa.b"} - set(state)
    if missing:
        raise HeadsError(f"Medusa heads directory without {sorted(missing)}")
    out = state.get("medusa.output")
    return MedusaHeads(state["medusa.w"].numpy(), state["medusa.b"].numpy(),
                       out.numpy() if out is not None else None, init="trained",
                       meta={"trained_from": meta.get("init")})


__all__ = [
    "KIND",
    "MedusaModule",
    "lm_head_of",
    "load_medusa",
    "medusa_from_dir",
    "save_medusa",
]
