"""The drafter interface and its implementations.

A drafter proposes tokens that follow the newest sampled token; the target
verifies them in one pass and tells the drafter how many it kept. The loop in
:mod:`gguf_mtp.runtime.loop` drives any drafter through these calls:

    begin(eng, prompt, hidden)           after the prompt's target pass
    propose(eng, context, tok, pos, k)   -> Proposal (chain), k >= 1; ``context``
                                         is every token so far, ``tok`` (the
                                         newest, at ``pos``) included
    accept(eng, tok, pos, proposal, n_accepted, hidden)
                                         after verification; ``hidden`` holds the
                                         target's NextN rows of the verify batch

``Proposal.q`` carries the drafter's distribution at each position (needed by
the rejection rule when sampling); ``None`` means a deterministic drafter
(q = one-hot at the proposed token).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .engine import Engine, RuntimeOptions
from .sampling import SamplingParams, sample_from, target_distribution
from .tree import DraftTree


@dataclass
class Proposal:
    tokens: list[int] = field(default_factory=list)   # a chain (for a tree: its first branch)
    q: list[np.ndarray] | None = None   # one distribution per proposed token, or None (one-hot)
    tree: DraftTree | None = None       # several branches, verified in one pass
    #: set by the loop after verification: the target batch rows of the root
    #: token and of each accepted draft token (the last one's logits gave the
    #: next token)
    rows: list[int] = field(default_factory=list)


class Drafter:
    """Base class: a drafter that proposes nothing (plain decoding)."""

    name = "none"
    #: the target must export its NextN hidden states for this drafter
    needs_hidden = False
    #: most branches of a proposed tree (1 = chains only); the target context
    #: needs n_seq_max > branches and a unified KV cache for more
    max_branches = 1
    #: the target pass must compute the model's Medusa heads for this drafter
    needs_medusa = False

    def step_cost(self, measured_mtp_step: float) -> float:
        """Cost of one drafted token in 1-token target passes (for draft='auto');
        host-side drafters cost next to nothing."""
        return 0.0

    def configure(self, opts: RuntimeOptions) -> RuntimeOptions:
        """Adjust engine options this drafter needs (before the Engine is made)."""
        if self.max_branches > 1:
            opts.n_seq_max = max(opts.n_seq_max, self.max_branches + 1)
            opts.kv_unified = True
        return opts

    def begin(self, eng: Engine, prompt: list[int], hidden: np.ndarray | None) -> None:
        pass

    def propose(self, eng: Engine, context: list[int], tok: int, pos: int, k: int,
                params: SamplingParams, rng: np.random.Generator) -> Proposal:
        return Proposal()

    def accept(self, eng: Engine, tok: int, pos: int, proposal: Proposal, n_accepted: int,
               hidden: np.ndarray | None) -> None:
        pass


class MTPDrafter(Drafter):
    """Native MTP: the model's NextN head applied recursively.

    The MTP at position p reads (x_p, h_{p-1}); its output hidden state stands in
    for the target's at the next draft step. The MTP cache keeps rows paired with
    the *target's* hidden states: rows written from the head's own states during
    drafting are replaced once the target has verified those positions (the
    replacement rows ride along with the next draft call).

    With one MTP layer (DeepSeek-V3, Qwen3.5) that head is shared by every draft
    step. With several (a Qwen3-Next-style stack, or chained heads) draft step i
    runs layer i mod H. KV is per layer, so every verified row is written into
    each layer, and each step re-adds the drafted prefix under its own layer
    (cells freed by a roll-back are reused in place, so the layers written
    before stay valid: the scheme llama.cpp's own draft-mtp driver uses)."""

    name = "mtp"
    needs_hidden = True
    FLUSH_ROWS = 32

    def step_cost(self, measured_mtp_step: float) -> float:
        return measured_mtp_step

    def _write(self, eng, toks, hid, p0: int, output_last: bool = False) -> None:
        """Write rows at positions p0.. into every MTP layer; layer 0 goes last so
        that its outputs are the current ones."""
        outputs = [False] * (len(toks) - 1) + [output_last]
        heads = max(1, eng.n_nextn)
        for head in reversed(range(heads)):
            if heads > 1:
                eng.mtp_truncate(p0)
                eng.mtp_set_head(head)
            eng.mtp_decode(toks, hid, p0, outputs)

    def begin(self, eng, prompt, hidden):
        if not eng.has_mtp:
            raise ValueError(f"{eng.path} has no MTP layers loaded: use drafter 'none'")
        self.pending = np.zeros(eng.n_embd, dtype=np.float32)
        n_batch = eng.opts.n_batch
        for start in range(0, len(prompt), n_batch):
            chunk = prompt[start:start + n_batch]
            h = hidden[start:start + len(chunk)]
            self._write(eng, chunk, np.concatenate([self.pending[None, :], h[:-1]], axis=0), start)
            self.pending = h[-1].copy()
        self.catch_tokens: list[int] = []
        self.catch_hidden: list[np.ndarray] = []

    def _draft_token(self, eng, row, context, drafts, params, rng, qs) -> int:
        if params.greedy:
            return eng.mtp_argmax(row)
        q = target_distribution(eng.mtp_logits(row), context + drafts, params)
        qs.append(q)
        return sample_from(q, rng)

    def propose(self, eng, context, tok, pos, k, params, rng):
        drafts: list[int] = []
        qs: list[np.ndarray] | None = None if params.greedy else []
        p0 = pos - len(self.catch_tokens)
        toks = self.catch_tokens + [tok]
        hid = self.catch_hidden + [self.pending]
        self._write(eng, toks, np.stack(hid), p0, output_last=True)
        heads = max(1, eng.n_nextn)
        row = len(toks) - 1
        for i in range(k):
            if i and heads > 1:
                # step i under layer i mod H: re-add the drafted prefix under that layer
                eng.mtp_truncate(p0)
                eng.mtp_set_head(i % heads)
                eng.mtp_decode(toks, np.stack(hid), p0, [False] * (len(toks) - 1) + [True])
                row = len(toks) - 1
            d = self._draft_token(eng, row, context, drafts, params, rng, qs)
            drafts.append(d)
            if i + 1 < k:
                h = eng.mtp_hidden(row)
                if heads > 1:
                    toks, hid = toks + [d], hid + [h]
                else:
                    eng.mtp_decode([d], h[None, :], pos + 1 + i, [True])
                    row = 0
        if heads > 1:
            eng.mtp_set_head(0)
        return Proposal(drafts, qs)

    def accept(self, eng, tok, pos, proposal, n_accepted, hidden):
        # a drafting pass: a chain, or a tree (whose tokens the loop has replaced by the
        # accepted branch, empty when nothing was accepted)
        if proposal.tokens or proposal.tree is not None:
            # (tok, pending) at `pos` is right; later rows were built on the head's own states
            eng.mtp_truncate(pos + 1)
            self.catch_tokens = proposal.tokens[:n_accepted]
            self.catch_hidden = [hidden[j] for j in range(n_accepted)]
        else:
            self.catch_tokens = self.catch_tokens + [tok]
            self.catch_hidden = self.catch_hidden + [self.pending]
            if len(self.catch_tokens) >= self.FLUSH_ROWS:
                # passes without drafting (draft length 0): write the rows now
                n = len(self.catch_tokens)
                self._write(eng, self.catch_tokens, np.stack(self.catch_hidden), pos + 1 - n)
                self.catch_tokens, self.catch_hidden = [], []
        self.pending = hidden[n_accepted].copy()


class NgramDrafter(Drafter):
    """Prompt-lookup n-gram drafting, llama-cpp-python's ``LlamaPromptLookupDecoding``:
    find the longest recent n-gram earlier in the text and propose what followed.
    A baseline that needs no head; deterministic (q is one-hot)."""

    name = "ngram"

    def __init__(self, max_ngram_size: int = 3):
        from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

        self.lookup = LlamaPromptLookupDecoding(max_ngram_size=max_ngram_size)

    def propose(self, eng, context, tok, pos, k, params, rng):
        self.lookup.num_pred_tokens = k
        ids = np.asarray(context, dtype=np.intc)
        return Proposal([int(t) for t in self.lookup(ids)][:k], None)


class NgramTreeDrafter(Drafter):
    """Prompt lookup with several continuations: every earlier occurrence of
    the longest matching suffix n-gram (most recent first, then shorter
    n-grams) contributes its continuation as a branch of a draft tree, verified
    in one target pass. Deterministic, so the tree is verified exactly under
    greedy decoding and sampling alike (:func:`gguf_mtp.runtime.tree.verify_tree`)."""

    name = "ngram-tree"

    def __init__(self, max_ngram_size: int = 3, branches: int = 4):
        self.max_ngram_size = max_ngram_size
        self.max_branches = branches

    def continuations(self, context: list[int], k: int) -> list[list[int]]:
        ids = np.asarray(context, dtype=np.int64)
        chains: list[list[int]] = []
        for n in range(min(self.max_ngram_size, len(ids) - 1), 0, -1):
            windows = np.lib.stride_tricks.sliding_window_view(ids[:-1], n)
            hits = np.flatnonzero((windows == ids[-n:]).all(axis=1))
            for start in hits[::-1] + n:      # most recent occurrence first
                chain = ids[start:start + k].tolist()
                if chain and chain not in chains and not any(c[:len(chain)] == chain for c in chains):
                    chains.append(chain)
                if len(chains) == self.max_branches:
                    return chains
        return chains

    def propose(self, eng, context, tok, pos, k, params, rng):
        chains = self.continuations(context, k)
        if not chains:
            return Proposal()
        tree = DraftTree.from_chains(tok, chains) if len(chains) > 1 else None
        return Proposal(chains[0], None, tree)


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


from .eagle import EagleTreeDrafter  # at the end: it subclasses MTPDrafter

#: drafter registry: name -> factory
DRAFTERS = {"none": Drafter, "mtp": MTPDrafter, "ngram": NgramDrafter, "ngram-tree": NgramTreeDrafter,
            "medusa": MedusaDrafter,
            "eagle": EagleTreeDrafter}


def make_drafter(name: str | Drafter) -> Drafter:
    if isinstance(name, Drafter):
        return name
    try:
        return DRAFTERS[name]()
    except KeyError:
        raise ValueError(f"unknown drafter {name!r}; choose one of {', '.join(DRAFTERS)}") from None
