"""Prompt-lookup drafters: n-gram chains (llama-cpp-python's) and n-gram trees."""

from __future__ import annotations

import numpy as np

from ..tree import DraftTree
from .base import Drafter, Proposal


class NgramDrafter(Drafter):
    """Prompt-lookup n-gram drafting, llama-cpp-python's ``LlamaPromptLookupDecoding``:
    find the longest recent n-gram earlier in the text and propose what followed.
    A baseline that needs no head; deterministic (q is one-hot)."""

    name = "ngram"
    summary = "prompt-lookup n-grams (no head needed)"

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
