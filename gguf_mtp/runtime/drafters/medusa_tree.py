"""Medusa drafting: the file's Medusa heads (computed inside the target pass)
proposing a static tree of index paths."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..engine import Engine
from ..tree import DraftTree
from .base import Drafter, Proposal

#: Medusa's static tree for 3 heads (index paths: [0, 1] = the top candidate of
#: head 0, then the second of head 1): 8 nodes, 4 leaves, depth 3
MEDUSA_TREE = ((0,), (1,), (0, 0), (0, 1), (1, 0), (0, 0, 0), (0, 0, 1), (0, 1, 0))
#: one candidate per head: a chain (no tree)
MEDUSA_CHAIN = ((0,), (0, 0), (0, 0, 0), (0, 0, 0, 0), (0, 0, 0, 0, 0))


def parse_tree(spec: str | Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    """Index paths from ``"0;1;0,0;0,1"`` (``;`` between paths, ``,`` inside),
    or ``"chain"`` / ``"default"``; every prefix of a path must be a path too."""
    if isinstance(spec, str):
        if spec in ("chain", "default"):
            return MEDUSA_CHAIN if spec == "chain" else MEDUSA_TREE
        try:
            paths = [tuple(int(x) for x in p.split(",")) for p in spec.replace(" ", "").split(";") if p]
        except ValueError:
            raise ValueError(f"tree {spec!r}: write index paths like '0;1;0,0;0,1'") from None
    else:
        paths = [tuple(int(x) for x in p) for p in spec]
    if not paths or any(not p or min(p) < 0 for p in paths):
        raise ValueError(f"tree {spec!r}: needs non-empty paths of ranks >= 0")
    have = set(paths)
    for p in paths:
        if len(p) > 1 and p[:-1] not in have:
            raise ValueError(f"tree {spec!r}: path {list(p)} lacks its prefix {list(p[:-1])}")
    return tuple(sorted(have, key=lambda p: (len(p), p)))


class MedusaDrafter(Drafter):
    """Medusa heads: head k at the last verified row ranks candidates for the
    token k + 1 places after the newest token; a static tree of index paths
    (:data:`MEDUSA_TREE`, configurable) picks which combinations to verify in
    one target pass. The heads run inside that same target pass (patch 0007),
    so drafting costs no extra model call: the candidates for the next tree
    are read from the row of the last accepted token.

    The tree is deterministic, so verification is exact under greedy decoding
    and sampling alike (:func:`gguf_mtp.runtime.tree.verify_tree`). Draft
    length k cuts the tree at depth min(k, heads)."""

    name = "medusa"
    summary = "the file's Medusa heads (convert --heads medusa) drafting a static tree"
    options = ("tree",)
    needs_medusa = True

    def __init__(self, tree: str | Sequence[Sequence[int]] = "default"):
        self.paths = parse_tree(tree)
        leaves = [p for p in self.paths if not any(len(q) == len(p) + 1 and q[:-1] == p for q in self.paths)]
        self.max_branches = max(1, len(leaves))
        self.top = max(max(p) for p in self.paths) + 1
        self.cand: np.ndarray | None = None

    def _read(self, eng: Engine, row: int) -> None:
        self.cand = eng.medusa_topk(row, self.top)

    def begin(self, eng, prompt, hidden):
        if not eng.n_medusa:
            raise ValueError(f"{eng.path} has no Medusa heads: convert with --heads medusa")
        self._read(eng, -1)       # the prompt's last row

    def propose(self, eng, context, tok, pos, k, params, rng):
        depth = min(k, eng.n_medusa)
        paths = [p for p in self.paths if len(p) <= depth]
        if not paths or self.cand is None:
            return Proposal()
        tree = DraftTree.from_topk(tok, paths, self.cand)
        first = tree.path_tokens(tree.leaves()[0])
        return Proposal(first, None, None if tree.is_chain() else tree)

    def accept(self, eng, tok, pos, proposal, n_accepted, hidden):
        self._read(eng, proposal.rows[-1])      # the row whose logits gave the next token
