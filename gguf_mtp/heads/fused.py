"""The DeepSeek-V3-style MTP module in PyTorch, for every architecture whose
MTP layer is "fuse, one decoder layer of the trunk's kind, shared head":

    e      = enorm(embed(x_p))                 # token embedding of x_p
    hn     = hnorm(h_{p-1})                    # trunk (or previous step) hidden state
    x      = eh_proj(concat[e, hn])            # embedding FIRST (DeepSeek, GLM, Qwen)
             eh_proj(concat[hn, e])            # hidden FIRST (MiMo: ``hidden_first``)
    x      = decoder_layer(x)                  # causal over the MTP's own sequence
    h_next = head_norm(x)                      # shared_head.norm / final_layernorm
    logits = lm_head(h_next)                   # shared_head.head or the trunk's

This is what llama.cpp's ``graph_mtp`` of each architecture computes. The
decoder layer, its attention/MoE and the norms are transformers' own classes
for the architecture, so only the MTP wiring lives here; each architecture
module builds one of these from a checkpoint's tensors.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def causal_mask(length: int, dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive causal mask ``[1, 1, T, T]``: 0 on and below the diagonal."""
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    mask = torch.zeros(length, length, dtype=dtype, device=device)
    return mask.masked_fill(blocked, torch.finfo(dtype).min)[None, None]


def chain_mask(lengths: list[int], dtype: torch.dtype, device=None) -> torch.Tensor:
    """Additive mask ``[1, 1, S, S]`` over the blocks of a recursive draft
    chain laid end to end (block m holds draft step m's rows, ``lengths[m-1]``
    of them, row i at position m + i; S = their sum). Block 1 is causal. Row i
    of block m >= 2 sees block 1's rows <= i and row i of blocks 2..m: what the
    runtime's MTP cache holds when draft step m runs there (the entries the
    catch-up rows wrote from the target's true hidden states, then this
    chain's own earlier steps), not the step-m entries of earlier positions
    that a plain causal mask over step m's rows would show it."""
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    total, n1 = starts[-1], lengths[0]
    allowed = torch.zeros(total, total, dtype=torch.bool, device=device)
    first = torch.arange(n1, device=device)
    allowed[:n1, :n1] = first[:, None] >= first[None]
    for m in range(1, len(lengths)):
        rows = torch.arange(lengths[m], device=device)
        allowed[starts[m] + rows, :n1] = rows[:, None] >= first[None]
        for mm in range(1, m + 1):
            allowed[starts[m] + rows, starts[mm] + rows] = True
    mask = torch.zeros(total, total, dtype=dtype, device=device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)[None, None]


def eager_config(config, **overrides):
    """A copy of a transformers config with eager attention (explicit float32
    softmax and an explicit mask) and ``overrides`` applied."""
    c = copy.deepcopy(config)
    for k, v in overrides.items():
        setattr(c, k, v)
    c._attn_implementation = "eager"
    return c


class FusedMTP(nn.Module):
    """One MTP module (or a stack sharing the fuse and head, picked by ``layer``)."""

    def __init__(self, *, enorm: nn.Module, hnorm: nn.Module, eh_proj: nn.Linear,
                 layers: nn.ModuleList, head_norm: nn.Module, embed: nn.Embedding,
                 lm_head: nn.Linear, rotary_emb: nn.Module, hidden_first: bool = False):
        super().__init__()
        self.enorm, self.hnorm, self.eh_proj = enorm, hnorm, eh_proj
        self.layers, self.head_norm = layers, head_norm
        self.embed, self.lm_head, self.rotary_emb = embed, lm_head, rotary_emb
        self.hidden_first = hidden_first

    def forward(self, input_ids: torch.Tensor, hidden: torch.Tensor,
                position_ids: torch.Tensor | None = None, layer: int = 0,
                chain: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Row ``p`` pairs token ``x_p`` with hidden ``h_{p-1}``.

        ``input_ids`` ``[B, T]``, ``hidden`` ``[B, T, H]``, ``position_ids``
        ``[B, T]`` (default ``0..T-1``). Returns ``(logits, h_next)``.
        ``chain``: the rows are the blocks of a recursive draft chain laid end
        to end, of these lengths (:func:`chain_mask`); only the last block's
        rows are returned.
        """
        batch, length = input_ids.shape
        if position_ids is None:
            position_ids = torch.arange(length, device=input_ids.device).expand(batch, length)
        e = self.enorm(self.embed(input_ids))
        hn = self.hnorm(hidden.to(e.dtype))
        x = self.eh_proj(torch.cat([hn, e] if self.hidden_first else [e, hn], dim=-1))
        out = self.layers[layer](
            x,
            position_embeddings=self.rotary_emb(x, position_ids),
            attention_mask=causal_mask(length, x.dtype, x.device) if chain is None
            else chain_mask(chain, x.dtype, x.device),
            position_ids=position_ids,
        )
        x = out[0] if isinstance(out, tuple) else out
        if chain is not None:
            x = x[:, length - chain[-1]:]
        h_next = self.head_norm(x)
        return self.lm_head(h_next), h_next


def linear_from(weight: torch.Tensor) -> nn.Linear:
    lin = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        lin.weight.copy_(weight)
    return lin


def embedding_from(weight: torch.Tensor) -> nn.Embedding:
    emb = nn.Embedding(*weight.shape)
    with torch.no_grad():
        emb.weight.copy_(weight)
    return emb


def norm_from(norm_cls, weight: torch.Tensor, eps: float) -> nn.Module:
    norm = norm_cls(weight.shape[0], eps=eps)
    with torch.no_grad():
        norm.weight.copy_(weight)
    return norm


def load_exact(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` that names every missing or unexpected tensor."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise ValueError(f"{what}: missing {missing}, unexpected {unexpected}")
    module.load_state_dict(state)


def sub_state(state: dict[str, torch.Tensor], prefix: str, drop: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    """Tensors under ``prefix`` with it stripped, minus names starting with ``drop``."""
    return {k[len(prefix):]: v for k, v in state.items()
            if k.startswith(prefix) and not k[len(prefix):].startswith(drop)}


def mtp_inputs(input_ids: torch.Tensor, trunk_hidden: torch.Tensor,
               first_hidden: torch.Tensor | None = None):
    """MTP inputs for a whole sequence: row ``p`` gets ``x_p`` and ``h_{p-1}``
    (row 0 gets ``first_hidden``, default zeros, as the runtime does)."""
    batch, length = input_ids.shape
    if first_hidden is None:
        first_hidden = trunk_hidden.new_zeros(batch, 1, trunk_hidden.shape[-1])
    hidden = torch.cat([first_hidden.reshape(batch, 1, -1), trunk_hidden[:, :-1]], dim=1)
    positions = torch.arange(length, device=input_ids.device).expand(batch, length)
    return input_ids, hidden, positions
