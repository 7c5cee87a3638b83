"""EAGLE-2 dynamic draft trees from the model's MTP (NextN) head.

The MTP head is structurally an EAGLE drafter: at position p it reads the
token x_p and the feature f_{p-1} and predicts x_{p+1} together with its own
feature f'_p, which stands in for the target's at the next step. EAGLE-2
(Li et al., 2024, "EAGLE-2: Faster Inference of Language Models with Dynamic
Draft Trees") grows a tree from it instead of a chain, guided by the
drafter's own confidence:

1. Catch-up (as :class:`~gguf_mtp.runtime.drafters.MTPDrafter`): the verified
   rows are written into the MTP cache (sequence 0) with the target's
   features; the root row (the newest token ``tok`` at ``pos`` with the
   target's feature of ``pos - 1``) gives the depth-1 distribution.
2. Expansion: every candidate node carries the cumulative log-probability of
   its path (the drafter's estimate of the path's acceptance). Depth 1 gets
   the ``topk`` best tokens of the root. For depth d = 1 .. k-1 the ``beam``
   best-scoring nodes of depth d are run through the MTP context as ONE
   batch: node i gets its own sequence in the MTP cache, a copy of its
   parent's (``llama_memory_seq_cp``: metadata in the unified KV cache, so it
   sees the root path's rows), and its row (token, parent's predicted
   feature) at ``pos + d``; each row's ``topk`` children join the candidates.
   Sequence ids alternate between two banks by depth parity, so a parent's
   sequence lives while its children copy it.
3. Rerank: the ``max_nodes`` best-scoring candidates overall (a child never
   outscores its parent, so the set is closed under ancestors) become the
   :class:`~gguf_mtp.runtime.tree.DraftTree` verified in one target pass.
4. The branch sequences are removed; sequence 0 holds the verified rows and
   the root row, as :meth:`MTPDrafter.accept` expects.

The tree is a deterministic function of the context (top-k, no sampling), so
the loop's match-rule verification is exactly lossless under greedy decoding
and sampling alike (``q`` is None).

llama.cpp facts this relies on (checked by tests/runtime/test_eagle_tree.py): the MTP
context of a Qwen3.5/Qwen3-Next model gets a plain KV cache (not the hybrid
memory of the target), so a batch whose rows each continue their own copied
sequence is one micro-batch and the per-sequence causal mask keeps the
branches apart; the MTP context gets the target's ``n_seq_max`` and
``kv_unified``, which :meth:`EagleTreeDrafter.configure` sets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..engine import RuntimeOptions
from ..sampling import topk_indices
from ..tree import ROOT, DraftTree
from .base import Proposal
from .mtp_chain import MTPDrafter


@dataclass
class EagleCandidates:
    """Every node the last expansion produced (for inspection and tests)."""

    root: int
    pos: int
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)     # ROOT (-1) for depth 1
    depths: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)    # cumulative log-probabilities
    expanded: list[list[int]] = field(default_factory=list)   # per depth: the nodes run through the MTP
    kept: list[int] = field(default_factory=list)        # nodes that went into the tree

    def path_tokens(self, i: int) -> list[int]:
        out = []
        while i != ROOT:
            out.append(self.tokens[i])
            i = self.parents[i]
        return out[::-1]


class EagleTreeDrafter(MTPDrafter):
    """EAGLE-2 dynamic trees from the model's single MTP layer (module docstring).

    ``topk`` children per expanded node, ``beam`` nodes expanded per depth,
    ``max_nodes`` nodes kept in the verified tree; the draft length k is the
    tree's maximum depth. Per draft: one MTP pass for the catch-up and the
    root, then one batched pass of up to ``beam`` rows per further depth
    (k passes, like the chain)."""

    name = "eagle"
    argmax_drafts = False        # the tree ranks each node's top candidates from the head's logits
    summary = "the same head drafting an EAGLE-2 dynamic tree"

    def __init__(self, topk: int = 4, beam: int = 4, max_nodes: int = 12):
        for n, v in (("topk", topk), ("beam", beam), ("max_nodes", max_nodes)):
            if int(v) < 1:
                raise ValueError(f"eagle drafter: {n} must be >= 1, got {v!r}")
        self.topk, self.beam, self.max_nodes = int(topk), int(beam), int(max_nodes)
        #: a tree of max_nodes nodes has at most that many leaves
        self.max_branches = self.max_nodes
        self.last: EagleCandidates | None = None

    @property
    def n_seqs(self) -> int:
        """MTP sequences used: 0 (the verified path) plus two banks of ``beam``."""
        return 1 + 2 * self.beam

    def configure(self, opts: RuntimeOptions) -> RuntimeOptions:
        opts = super().configure(opts)        # target: n_seq_max > leaves, unified KV
        opts.n_seq_max = max(opts.n_seq_max, self.n_seqs)   # the MTP context gets the same options
        opts.kv_unified = True
        return opts

    def begin(self, eng, prompt, hidden):
        if eng.has_mtp and eng.n_nextn > 1:
            raise ValueError(f"eagle tree drafting needs one MTP layer; {eng.path} has {eng.n_nextn} "
                             "(use drafter 'mtp')")
        super().begin(eng, prompt, hidden)
        n_seq = int(eng.L.llama_n_seq_max(eng.mtp_ctx))
        if n_seq < self.n_seqs or not eng.opts.kv_unified:
            raise ValueError(f"eagle drafter (beam {self.beam}) needs the MTP context to hold {self.n_seqs} "
                             f"sequences in a unified KV cache (it has {n_seq}, kv_unified="
                             f"{eng.opts.kv_unified}): make the Engine with drafter.configure(RuntimeOptions(...))")

    # -- helpers ---------------------------------------------------------------

    def _top(self, eng, row: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``topk`` most likely tokens of MTP output row ``row`` (best first)
        and their log-probabilities (over the draft vocabulary if compressed:
        the other tokens have probability 0)."""
        raw = eng._logits(eng.mtp_ctx, row, "MTP")
        vocab = eng.draft_vocab
        x = raw[:len(vocab)] if vocab is not None else raw
        part = topk_indices(x, self.topk)
        m = float(x[part[0]])
        lse = m + float(np.log(np.exp(x - m).sum(dtype=np.float64)))
        ids = vocab[part] if vocab is not None else part
        return ids.astype(np.int64), x[part].astype(np.float64) - lse

    # -- drafting ----------------------------------------------------------------

    def propose(self, eng, context, tok, pos, k, params, rng):
        # 1. catch-up + root row (tok at pos with the target's pending feature), sequence 0
        p0 = pos - len(self.catch_tokens)
        toks = self.catch_tokens + [tok]
        self._write(eng, toks, self._rows(), p0, output_last=True)
        root_row = len(toks) - 1

        c = EagleCandidates(tok, pos)
        feat = {ROOT: eng.mtp_hidden(root_row)}      # node -> the feature its row predicted

        def add(row: int, parent: int, base: float, depth: int) -> None:
            ids, lp = self._top(eng, row)
            for t, l in zip(ids.tolist(), lp.tolist()):
                c.tokens.append(int(t))
                c.parents.append(parent)
                c.depths.append(depth)
                c.scores.append(base + l)

        add(root_row, ROOT, 0.0, 1)

        # 2. expansion: the beam best nodes of each depth, one batched MTP pass per depth
        L, mem = eng.L, eng.mtp_mem
        seq_of = {ROOT: 0}
        try:
            for d in range(1, k):
                at_d = [i for i in range(len(c.tokens)) if c.depths[i] == d]
                chosen = sorted(at_d, key=lambda i: (-c.scores[i], i))[:self.beam]
                bank = 1 + (d % 2) * self.beam
                rows = []
                for j, i in enumerate(chosen):
                    s = bank + j
                    L.llama_memory_seq_rm(mem, s, -1, -1)
                    L.llama_memory_seq_cp(mem, seq_of[c.parents[i]], s, -1, -1)
                    seq_of[i] = s
                    rows.append((c.tokens[i], pos + d, (s,), True))
                eng.mtp_decode_rows(rows, np.stack([feat[c.parents[i]] for i in chosen]))
                c.expanded.append(chosen)
                for j, i in enumerate(chosen):
                    if d + 1 < k:
                        feat[i] = eng.mtp_hidden(j)
                    add(j, i, c.scores[i], d + 1)
        finally:
            # 4. only sequence 0 stays: verified rows + the root row at pos
            for s in range(1, self.n_seqs):
                L.llama_memory_seq_rm(mem, s, -1, -1)
            eng.mtp_truncate(pos + 1)

        # 3. rerank: the max_nodes best candidates (parents first on ties), closed under ancestors
        best = sorted(range(len(c.tokens)), key=lambda i: (-c.scores[i], i))[:self.max_nodes]
        tree = DraftTree(tok)
        node_of = {ROOT: ROOT}
        for i in sorted(best):                      # parents have smaller indices
            if c.parents[i] in node_of:
                node_of[i] = tree.add(c.tokens[i], node_of[c.parents[i]])
                c.kept.append(i)
        self.last = c

        # the first branch: the best-scoring child at every level
        first: list[int] = []
        node = ROOT
        while True:
            kids = [i for i in c.kept if c.parents[i] == node]
            if not kids:
                break
            node = max(kids, key=lambda i: (c.scores[i], -i))
            first.append(c.tokens[node])
        if tree.is_chain():
            return Proposal(first, None)
        return Proposal(first, None, tree)


__all__ = ["EagleCandidates", "EagleTreeDrafter"]
