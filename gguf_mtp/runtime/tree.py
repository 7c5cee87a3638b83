"""Verification of a draft TREE in one target pass, greedy or sampled.

A tree is rooted at the last sampled token ``t`` (position ``pos``, not yet in
the target cache); every node is a draft token whose parent is the token
before it. One ``llama_process`` call runs the root and every node, the
target's choices are walked down the tree, and afterwards the target cache
holds exactly the prompt, the root and the accepted nodes in sequence 0
(positions ``0 .. pos + n_accepted``, no other sequence left), so decoding
goes on exactly as plain decoding would. The target's NextN hidden states of
the root and the accepted nodes come back for the MTP catch-up.

    tree = DraftTree.from_topk(t, [[0], [1], [0, 0], [0, 1], [0, 0, 0]], candidates)
    res = verify_tree_greedy(eng, pos, tree)
    # res.tokens accepted, res.next_token is the bonus, next decode at pos + len(res.tokens) + 1

The walk (:func:`verify_tree`): at the current node (the root first), the
target picks ``x = choose(logits of that node, accepted draft tokens so far)``;
if ``x`` is a child of the node, descend to it, else ``x`` is the bonus token
and the walk ends. ``choose`` defaults to the argmax (greedy).

Sampling
--------

With ``choose`` = a draw from the target distribution ``p`` (temperature,
top-k/p, repeat penalty on the history plus the path), the walk is exactly
lossless for a DETERMINISTIC tree (its tokens do not depend on the random
draws of this pass): every emitted token is a draw from ``p`` at its
position, given the tokens emitted before it; the tree only computes the
target's logits in advance for the positions the walk might reach. A node is
accepted exactly when the target's own sample equals it. With one uniform per
draw, the random numbers are used once per emitted token in emission order,
so a seeded run reproduces plain sampling token for token (up to float
differences between batched and single-row logits).

This is not SpecInfer-style multi-draft rejection sampling (Miao et al.,
2023), which accepts children SAMPLED from a drafter distribution ``q`` with
probability ``min(1, p/q)`` against a residual and can accept more often when
``q`` is good. Our trees are deterministic (top-k / n-gram candidates, ``q``
one-hot at each child), where that rule gains nothing over the match rule;
the match rule is exact and simple and needs no ``q``.

What llama.cpp 0c1e57098 does with multi-sequence tokens
--------------------------------------------------------

* Batch checks (``llama_batch_allocr::init``): per sequence, the batch must
  continue its cache (first position = ``seq_pos_max + 1``) with consecutive,
  non-decreasing positions; sequences sharing a token ("coupled") must have
  the same cached range. So every branch sequence is first ``seq_cp``-ed from
  sequence 0.
* Every Qwen3.5 GGUF gets a ``llama_memory_hybrid`` (KV cache for attention
  layers + recurrent cache for Gated DeltaNet layers), even with every trunk
  layer full attention: the recurrent half then has no layers, but its
  bookkeeping still runs. The hybrid memory splits a batch with
  ``split_equal``: a micro-batch takes sequence SETS (the seq ids of a token)
  that do not overlap, the same number of tokens from each, keeping the last
  ``n_rs_seq + 1`` tokens of a set together. Coupled sets are only allowed
  with a unified KV cache (``kv_unified=True``). A pure KV cache would use
  one ``split_simple`` micro-batch instead.
* Recurrent cache (``llama_memory_recurrent``): one cell (state) per
  sequence set. ``seq_cp`` only shares the cell; ``find_slot`` copies it on
  write when a sequence of a shared cell advances alone, and the last owner
  advances in place. Rollback (``seq_rm(seq, p, -1)``) picks one of the
  ``n_rs_seq`` per-token snapshots written by the micro-batch that last
  advanced the cell (only the states AFTER its tokens: never the state before
  the micro-batch) and is pending per SEQUENCE (``rs_idx[seq]``), applied by
  the next graph to the cell whose lowest sequence id it is; ``seq_cp`` does
  not carry it over.

The two layouts
---------------

``shared`` (shared prefix: one row per node)
    Each node is ONE row at ``pos + depth`` carrying the sequence ids of all
    leaves below it (leaf ``j`` -> sequence ``1 + j``); the root row carries 0
    and every leaf sequence. In the unified KV buffer a cell then belongs to
    several sequences and the per-sequence causal mask (a query of sequence
    ``s`` sees the cells holding ``s`` at positions <= its own) is exactly
    tree attention. No token is computed twice. Keeping the branch is
    metadata only: ``seq_cp(leaf, 0)``, ``seq_keep(0)``, ``seq_rm`` of what is
    below the accepted node. BUT: with the hybrid memory the batch runs as
    about one micro-batch per branching level (8 micro-batches for an 11-node
    depth-4 tree; each one is a full pass over the weights), and it is WRONG
    with recurrent layers: when a set forks, the inner node's state is
    overwritten in place by its last owner, and the snapshots do not reach
    back into an earlier micro-batch, so a branch accepted up to an inner node
    cannot be restored (measured: generation diverges within a few steps).

``flat`` (flattened branches: one sequence per leaf)
    Leaf ``j`` gets sequence ``1 + j`` with its own copy of the root-to-leaf
    path, padded with filler tokens to the tree depth ``D``; the root row is
    shared by sequence 0 and all branch sequences::

        row 0         : t  @pos               seqs {0, 1..L}
        rows of leaf j: d1 @pos+1 .. dD @pos+D  seq {1+j}   (path, then filler)

    This is exactly two micro-batches: the coupled root alone, then the L
    branches as L equal-length sequences. Why each piece is there:

    * Running the root once in a cell whose lowest sequence is 0 applies a
      rollback still pending on sequence 0 (left by the previous verify);
      every branch then forks (copy on write) from the right state. Branches
      that each start with their own copy of the root instead fork from the
      un-rolled-back state, and the rollback stays pending on sequence 0
      (measured: generation diverges, or the final rollback is refused).
    * Sequence 0 is not in the second micro-batch, so the root state stays in
      its own cell: accepting nothing needs no rollback.
    * A branch accepted to depth ``a`` rolls back ``D - a`` tokens inside its
      own micro-batch, which the snapshots cover (``D <= n_rs_seq``).
      Equal lengths (the filler) put every branch in that one micro-batch;
      branches of unequal length would run in several micro-batches, and a
      later one may move an earlier branch's cell (keeping only its current
      state, not its snapshots).
    * Finally ``seq_cp(branch, 0)`` + ``seq_keep(0)`` make that branch
      sequence 0 and ``seq_rm(0, pos + a + 1, -1)`` rolls it back (the
      pending snapshot index now belongs to sequence 0, as the next verify
      expects).

    Correct for attention and recurrent layers alike; costs the duplicated
    prefix rows (1 + L*D rows, but only one output row per node).

``chain``
    A tree with a single leaf is the plain chain verify on sequence 0 (one
    micro-batch, rollback on sequence 0); ``auto`` uses it.

``auto`` picks ``chain`` for one leaf, else ``flat`` whenever the memory
splits by sequence (every Qwen3.5) or has recurrent layers, else ``shared``.

Measured (tiny 4-layer fixtures, hidden 64, 151k vocab, CPU, 1 thread, f32,
best of 30; chain verify of depth 1..5: 5.4-9.8 ms; "L chains" = one chain
verify per leaf, what checking every branch without a tree would cost):

    tree (leaves x depth)          hybrid: flat | L chains   attention-only: shared | flat | L chains
    binary depth 3 (8 x 3, 14 nodes)       21 ms | 60 ms                    31 ms | 21 ms | 56 ms
    top-4 + chain (4 leaves, D=4, 7 nodes) 15 ms | 28 ms                    19 ms | 16 ms | 25 ms
    Medusa-like (5 leaves, D=4, 11 nodes)  18 ms | 37 ms                    47 ms | 19 ms | 36 ms
    2 chains of 4 (8 nodes)                15 ms | 18 ms                    18 ms | 17 ms | 17 ms

One tree pass costs 2-3 single chain passes here (this model is so small that
the 151k-row output head per node dominates); on a real model, where a pass
is bound by reading the weights, the two micro-batches of ``flat`` cost about
two chain passes while ``shared`` costs one pass per branching level.

Requirements: ``RuntimeOptions(n_seq_max >= leaves + 1, kv_unified=True)``
(a chain needs neither); ``tree.depth <= draft_max + 1`` (the engine sizes the
rollback snapshots as ``n_rs_seq = draft_max + 1``); ``1 + leaves * depth <=
n_batch``. Memory: the recurrent cache holds ``n_seq_max * (1 + n_rs_seq)``
states, so keep ``draft_max`` near the tree depth on real models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..gguf.constants import Keys, arch_key
from .engine import Engine, RuntimeErrorLlama

ROOT = -1
METHODS = ("auto", "shared", "flat", "chain")


class DraftTree:
    """Draft tokens arranged as a tree below ``root`` (the last sampled token).

    Nodes are numbered in insertion order; a parent always has a smaller index
    than its children. ``tokens[i]``, ``parents[i]`` (``ROOT`` = -1 for the
    root's children) and ``depths[i]`` (1 for the root's children) describe
    node ``i``. Siblings never repeat a token (adding one returns the
    existing node).
    """

    def __init__(self, root: int):
        self.root = int(root)
        self.tokens: list[int] = []
        self.parents: list[int] = []
        self.depths: list[int] = []
        self._kids: dict[int, dict[int, int]] = {ROOT: {}}

    # -- building ------------------------------------------------------------

    def add(self, token: int, parent: int = ROOT) -> int:
        """Add ``token`` below ``parent`` (a node index or ROOT); returns its index."""
        parent = int(parent)
        if parent != ROOT and not 0 <= parent < len(self.tokens):
            raise IndexError(f"no node {parent} in a tree of {len(self.tokens)} nodes")
        token = int(token)
        kids = self._kids[parent]
        if token in kids:
            return kids[token]
        i = len(self.tokens)
        self.tokens.append(token)
        self.parents.append(parent)
        self.depths.append(1 if parent == ROOT else self.depths[parent] + 1)
        kids[token] = i
        self._kids[i] = {}
        return i

    def add_chain(self, tokens: Sequence[int], parent: int = ROOT) -> list[int]:
        """Add ``tokens`` as a path below ``parent``; returns the node indices."""
        out = []
        for t in tokens:
            parent = self.add(t, parent)
            out.append(parent)
        return out

    @classmethod
    def from_chains(cls, root: int, chains: Sequence[Sequence[int]]) -> "DraftTree":
        """A trie of draft chains (each a continuation of ``root``); common
        prefixes become shared nodes."""
        tree = cls(root)
        for chain in chains:
            tree.add_chain(chain)
        return tree

    @classmethod
    def from_topk(cls, root: int, paths: Sequence[Sequence[int]],
                  candidates: Sequence[Sequence[int]] | Callable[[tuple[int, ...]], Sequence[int]]) -> "DraftTree":
        """A Medusa-style static tree.

        ``paths`` are index paths such as ``[[0], [1], [0, 0], [0, 1], [1, 0]]``:
        ``[0, 1]`` is the 2nd-ranked candidate at depth 2 below the top
        candidate at depth 1 (missing prefixes are added). ``candidates`` is
        either per-depth ranked token lists (``candidates[d][k]``, as Medusa
        heads give) or a function from the draft tokens so far (a tuple) to
        the ranked candidates that follow them (as a tree-drafting MTP head
        gives).
        """
        tree = cls(root)
        for path in sorted((tuple(p) for p in paths), key=len):
            node, prefix = ROOT, ()
            for d, k in enumerate(path):
                ranked = candidates(prefix) if callable(candidates) else candidates[d]
                if not 0 <= k < len(ranked):
                    raise IndexError(f"path {list(path)}: only {len(ranked)} candidates at depth {d + 1}")
                node = tree.add(ranked[k], node)
                prefix = prefix + (int(ranked[k]),)
        return tree

    # -- queries -------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def depth(self) -> int:
        return max(self.depths, default=0)

    def children(self, node: int = ROOT) -> dict[int, int]:
        """token -> child index, below ``node`` (ROOT for the root)."""
        return dict(self._kids[node])

    def leaves(self) -> list[int]:
        return [i for i in range(len(self.tokens)) if not self._kids[i]]

    def path(self, node: int) -> list[int]:
        """Node indices from the root's child down to ``node`` (empty for ROOT)."""
        out = []
        while node != ROOT:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    def path_tokens(self, node: int) -> list[int]:
        return [self.tokens[i] for i in self.path(node)]

    def is_chain(self) -> bool:
        return len(self.leaves()) <= 1

    def __repr__(self) -> str:
        return f"DraftTree(root={self.root}, nodes={len(self)}, leaves={len(self.leaves())}, depth={self.depth})"


@dataclass
class TreeResult:
    """Outcome of one tree verify."""

    #: accepted node indices, root's child first
    accepted_path: list[int]
    #: their tokens (the accepted draft tokens)
    tokens: list[int]
    #: the target's token after the accepted path (the bonus token)
    next_token: int
    #: target NextN hidden states of the root and the accepted nodes,
    #: shape (1 + len(tokens), n_embd); None when the model has no MTP layers
    hidden: np.ndarray | None
    #: how the tree was batched: "shared", "flat" or "chain"
    method: str
    #: rows in the target batch, and sequences used (including 0)
    n_rows: int
    n_seqs: int
    #: batch rows of the root and of the accepted nodes (the last one's logits
    #: gave ``next_token``; a Medusa drafter reads its heads there)
    rows: list[int] = field(default_factory=list)
    #: whether the accepted tokens stay in the cache (False: the caller passes
    #: them as the next verify's ``pending``; see :func:`verify_tree`)
    kept: bool = True

    @property
    def n_accepted(self) -> int:
        return len(self.tokens)


# -- model facts -----------------------------------------------------------------

_ARCH_DEFAULT_INTERVAL = {"qwen35": 4, "qwen35moe": 4, "qwen3next": 4}


def has_recurrent_layers(eng: Engine) -> bool:
    """Whether the target trunk has recurrent (e.g. Gated DeltaNet) layers.

    Reads ``<arch>.attention.recurrent_layers`` (a per-layer flag array) or,
    for the Qwen3-Next/3.5 family, ``<arch>.full_attention_interval`` (layer
    ``i`` is recurrent unless ``(i + 1) % interval == 0``), like llama.cpp's
    loader. For other architectures, any hybrid or recurrent model counts as
    recurrent (the safe answer: ``flat`` is correct either way).
    """
    cached = getattr(eng, "_tree_has_recurrent", None)
    if cached is not None:
        return cached
    L = eng.L
    arch = eng.meta("general.architecture") or ""
    n_block = int(eng.meta(arch_key(Keys.LLM.BLOCK_COUNT, arch)) or 0)
    n_trunk = max(0, n_block - int(eng.n_nextn))
    flags = eng.meta(arch_key(Keys.LLM.RECURRENT_LAYERS, arch))
    if flags is not None:
        vals = [v.strip().lower() for v in flags.strip("[]").split(",") if v.strip()]
        res = any(v in ("true", "1") for v in vals[:n_trunk or None])
    elif arch in _ARCH_DEFAULT_INTERVAL:
        interval = int(eng.meta(arch_key(Keys.LLM.FULL_ATTENTION_INTERVAL, arch)) or _ARCH_DEFAULT_INTERVAL[arch])
        res = any((i + 1) % interval != 0 for i in range(n_trunk))
    else:
        res = bool(L.llama_model_is_recurrent(eng.model) or L.llama_model_is_hybrid(eng.model))
    eng._tree_has_recurrent = res
    return res


def splits_by_sequence(eng: Engine) -> bool:
    """Whether the target memory has a recurrent half (``llama_memory_hybrid``
    or recurrent): its batches are split with ``split_equal`` (one micro-batch
    per group of equal, non-overlapping sequence sets) instead of one
    ``split_simple`` micro-batch. True for every Qwen3.5 GGUF, even with all
    trunk layers full attention."""
    L = eng.L
    return bool(L.llama_model_is_recurrent(eng.model) or L.llama_model_is_hybrid(eng.model))


def choose_method(eng: Engine, tree: DraftTree) -> str:
    """``chain`` for a single chain; ``flat`` when the memory splits batches by
    sequence (hybrid/recurrent memory: two micro-batches instead of about one
    per branching level, and required with recurrent layers); else ``shared``."""
    if tree.is_chain():
        return "chain"
    return "flat" if splits_by_sequence(eng) or has_recurrent_layers(eng) else "shared"


# -- verification ------------------------------------------------------------------

def _layout(tree: DraftTree, pos: int, method: str, pad_token: int | None, pending=()):
    """Batch rows, the row of every node (root = ROOT key), and sequences used.
    ``pending`` tokens (positions ``pos - len(pending)`` ..) precede the root in
    every sequence, without outputs."""
    leaves = tree.leaves()
    lead = len(pending)
    if method == "chain":
        path = tree.path(leaves[0]) if leaves else []
        rows = [(t, pos - lead + j, (0,), False) for j, t in enumerate(pending)]
        rows.append((tree.root, pos, (0,), True))
        row_of = {ROOT: lead}
        for i in path:
            row_of[i] = len(rows)
            rows.append((tree.tokens[i], pos + tree.depths[i], (0,), True))
        return rows, row_of, {ROOT: 0}, 1

    seq_of_leaf = {leaf: 1 + j for j, leaf in enumerate(leaves)}
    n_seqs = 1 + len(leaves)
    # a sequence that contains each node: its first leaf
    first_seq = {ROOT: 0}
    below: dict[int, list[int]] = {i: [] for i in range(len(tree))}
    for leaf in leaves:
        for i in tree.path(leaf):
            below[i].append(seq_of_leaf[leaf])
    for i in range(len(tree)):
        first_seq[i] = below[i][0]

    rows = [(t, pos - lead + j, tuple(range(n_seqs)), False) for j, t in enumerate(pending)]
    rows.append((tree.root, pos, tuple(range(n_seqs)), True))
    row_of = {ROOT: lead}
    if method == "shared":
        for i in range(len(tree)):
            row_of[i] = len(rows)
            rows.append((tree.tokens[i], pos + tree.depths[i], tuple(below[i]), True))
    elif method == "flat":
        depth = tree.depth
        for leaf in leaves:
            s = seq_of_leaf[leaf]
            path = tree.path(leaf)
            for i in path:
                first = i not in row_of
                if first:
                    row_of[i] = len(rows)
                rows.append((tree.tokens[i], pos + tree.depths[i], (s,), first))
            filler = tree.tokens[leaf] if pad_token is None else pad_token
            for d in range(len(path) + 1, depth + 1):
                rows.append((filler, pos + d, (s,), False))
    else:
        raise ValueError(f"unknown tree method {method!r}; choose one of {', '.join(METHODS)}")
    return rows, row_of, first_seq, n_seqs


def _check(eng: Engine, method: str, tree: DraftTree, n_rows: int, n_seqs: int) -> None:
    L = eng.L
    n_seq_max = int(L.llama_n_seq_max(eng.ctx))
    if n_seqs > n_seq_max:
        raise ValueError(f"a {tree!r} needs n_seq_max >= {n_seqs} (one sequence per leaf + 1), "
                         f"the context has {n_seq_max}")
    if n_rows > eng.opts.n_batch:
        raise ValueError(f"a {tree!r} takes {n_rows} batch rows ({method}), n_batch={eng.opts.n_batch}")
    if n_seqs > 1 and not eng.opts.kv_unified:
        raise ValueError("tree verification needs RuntimeOptions(kv_unified=True): branches share "
                         "the root row, which llama.cpp only splits with a unified KV cache")
    if splits_by_sequence(eng):
        # the recurrent half rolls back through its snapshots even without recurrent layers
        n_rs = int(L.llama_n_rs_seq(eng.ctx))
        if tree.depth > n_rs:
            raise ValueError(f"tree depth {tree.depth} exceeds the recurrent rollback depth "
                             f"n_rs_seq={n_rs} (RuntimeOptions.draft_max + 1)")
    if method == "shared" and has_recurrent_layers(eng):
        raise ValueError("the shared-prefix layout cannot keep an inner node's recurrent state; "
                         "use method='flat' (or 'auto') for models with recurrent layers")


def _seq(eng: Engine, op: str, *args) -> bool:
    return getattr(eng.L, f"llama_memory_seq_{op}")(eng.mem, *args)


def _hidden_rows(eng: Engine, rows: list[int]) -> np.ndarray | None:
    return eng.target_hidden_rows(rows) if eng.has_mtp else None


def verify_tree(eng: Engine, pos: int, tree: DraftTree, *,
                choose: Callable[[np.ndarray, list[int]], int] | None = None, method: str = "auto",
                pad_token: int | None = None, want_hidden: bool = True, pending=(),
                keep_accepted: bool = True) -> TreeResult:
    """Verify ``tree`` (root = the token at ``pos``) in one target pass.

    Before: the target cache holds positions ``0 .. pos-1`` in sequence 0
    (other sequences may hold anything: they are overwritten). After: it holds
    ``0 .. pos + n_accepted`` of the accepted branch in sequence 0 and nothing
    else; the next plain decode is at ``pos + n_accepted + 1`` with
    ``result.next_token``.

    ``choose(logits_row, path_tokens)`` is the target's token at a node, given
    that node's target logits and the accepted draft tokens so far (root
    excluded); it is called once per node the walk visits (``n_accepted + 1``
    times), from the root down. Default: the argmax (greedy). A sampling
    ``choose`` keeps the output distributed as the target's (module docstring).

    ``method``: "auto" (see :func:`choose_method`), "shared", "flat" or
    "chain" (only for a tree with one leaf). ``pad_token`` fills short flat
    branches (default: the leaf's own token; its value does not matter).

    ``pending``: tokens at positions ``pos - len(pending)`` .. ``pos - 1``
    not yet in the cache (the accepted branch of the previous tree, when it
    was not kept); they run first, in every sequence, without outputs.
    ``keep_accepted=False`` (exact mode) keeps only the root in the cache
    and returns the accepted tokens for the caller to pass as the next
    ``pending``: a branch other than the first leaves its cells out of
    position order (holes where the other branches were), and attention
    kernels sum over cells in cell order, so the next tokens would not be
    computed as plain decoding computes them; recomputing the accepted
    tokens right after the root keeps the cache laid out as plain decoding
    lays it out (the recurrent state after the root stays in sequence 0's
    own cell in the flat layout).
    """
    if pos < 1:
        raise ValueError("the target cache must hold at least one token before a tree verify")
    if method == "auto":
        method = choose_method(eng, tree)
    if method == "chain" and not tree.is_chain():
        raise ValueError(f"method 'chain' needs a tree with one leaf, got {tree!r}")
    rows, row_of, first_seq, n_seqs = _layout(tree, pos, method, pad_token, pending)
    _check(eng, method, tree, len(rows), n_seqs)

    # every branch sequence starts as a copy of the trunk (metadata only)
    for s in range(1, n_seqs):
        _seq(eng, "rm", s, -1, -1)
        _seq(eng, "cp", 0, s, -1, -1)
    eng.target_decode_rows(rows)

    # walk the target's choices down the tree
    path: list[int] = []
    toks: list[int] = []
    node = ROOT
    while True:
        g = eng.target_argmax(row_of[node]) if choose is None else int(choose(eng.target_logits(row_of[node]),
                                                                                list(toks)))
        child = tree._kids[node].get(g)
        if child is None:
            break
        path.append(child)
        toks.append(g)
        node = child
    n_acc = len(path)
    hidden = _hidden_rows(eng, [row_of[ROOT]] + [row_of[i] for i in path]) if want_hidden else None

    # keep the accepted branch as sequence 0, positions 0 .. pos + n_acc
    # (or, keep_accepted=False, only up to the root)
    kept = keep_accepted or method == "chain"      # a chain's cells are in position order already
    end = pos + n_acc if kept else pos  # last kept position
    if method == "chain":
        if n_acc < len(rows) - 1 - len(pending) and not _seq(eng, "rm", 0, end + 1, -1):
            raise RuntimeErrorLlama(f"target cache cannot roll back to position {end + 1}")
    else:
        s = first_seq[node] if kept else 0
        if s != 0:
            _seq(eng, "cp", s, 0, -1, -1)
        _seq(eng, "keep", 0)
        last = int(_seq_pos_max(eng, 0))
        if last > end and not _seq(eng, "rm", 0, end + 1, -1):
            raise RuntimeErrorLlama(f"target cache cannot roll back the accepted branch to position {end + 1}")
    return TreeResult(accepted_path=path, tokens=toks, next_token=g,
                      hidden=hidden, method=method, n_rows=len(rows), n_seqs=n_seqs,
                      rows=[row_of[ROOT]] + [row_of[i] for i in path], kept=kept)


def verify_tree_greedy(eng: Engine, pos: int, tree: DraftTree, *, method: str = "auto",
                       pad_token: int | None = None, want_hidden: bool = True) -> TreeResult:
    """:func:`verify_tree` with the target's greedy (argmax) choices."""
    return verify_tree(eng, pos, tree, method=method, pad_token=pad_token, want_hidden=want_hidden)


def _seq_pos_max(eng: Engine, seq: int) -> int:
    """Highest position of ``seq`` in the target cache. (For the hybrid memory
    this is the min over its attention and recurrent halves: after the copy
    both hold the branch's last position.)"""
    return eng.L.llama_memory_seq_pos_max(eng.mem, seq)


__all__ = ["DraftTree", "TreeResult", "ROOT", "METHODS", "verify_tree", "verify_tree_greedy", "has_recurrent_layers",
           "splits_by_sequence", "choose_method"]
