"""Prompt-lookup drafters: n-gram chains (llama-cpp-python's) and n-gram trees."""

from __future__ import annotations

import numpy as np

from ..tree import DraftTree
from .base import Drafter, Proposal


class NgramDrafter(Drafter):
    """Prompt-lookup n-gram drafting with llama-cpp-python's rule
    (``LlamaPromptLookupDecoding``): for the longest suffix n-gram (n = 3, 2, 1)
    that occurred earlier, propose what followed its FIRST occurrence. A baseline
    that needs no head; deterministic (q is one-hot).

    The rule runs on an index updated as tokens arrive (each n-gram's first
    position), so a proposal costs O(n) instead of a scan of the whole context
    per pass: on the default model the scan was 8 points of host overhead per
    pass at 128 tokens and grows with the context."""

    name = "ngram"
    summary = "prompt-lookup n-grams (no head needed)"

    def __init__(self, max_ngram_size: int = 3):
        self.max_ngram_size = max_ngram_size
        self._reset()

    def _reset(self):
        self.first: list[dict] = [{} for _ in range(self.max_ngram_size + 1)]   # n -> {ngram: first start}
        self.seen = 0                          # tokens of the context indexed so far
        self.ids: list[int] = []
        self.order = 0                         # the n of the last proposal's match (0: none)

    def begin(self, eng, prompt, hidden):
        self._reset()

    def _index(self, context: list[int]) -> None:
        if len(context) < self.seen or context[:1] != self.ids[:1]:
            self._reset()                      # a new context (proposals outside decode())
        ids = self.ids
        ids.extend(context[len(ids):])
        for end in range(self.seen, len(ids)):  # n-grams ending at `end`
            for n in range(1, self.max_ngram_size + 1):
                start = end - n + 1
                if start < 0:
                    break
                self.first[n].setdefault(tuple(ids[start:end + 1]), start)
        self.seen = len(ids)

    def continuation(self, context: list[int], k: int) -> list[int]:
        """What followed the first occurrence of the longest matching suffix n-gram
        (``self.order`` is that n, 0 when nothing matched)."""
        self._index(context)
        ids, length = self.ids, len(self.ids)
        for n in range(min(self.max_ngram_size, length - 1), 0, -1):
            start = self.first[n].get(tuple(ids[length - n:]))
            if start is not None and start < length - n:
                self.order = n
                return ids[start + n:min(start + n + k, length)]
        self.order = 0
        return []

    def propose(self, eng, context, tok, pos, k, params, rng):
        return Proposal(self.continuation(context, k), None)


class NgramTreeDrafter(Drafter):
    """Prompt lookup with several continuations: every earlier occurrence of
    the longest matching suffix n-gram (most recent first, then shorter
    n-grams) contributes its continuation as a branch of a draft tree, verified
    in one target pass. Deterministic, so the tree is verified exactly under
    greedy decoding and sampling alike (:func:`gguf_mtp.runtime.tree.verify_tree`)."""

    name = "ngram-tree"
    summary = "several n-gram continuations verified as one tree"

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
