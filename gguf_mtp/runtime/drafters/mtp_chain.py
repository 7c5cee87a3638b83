"""Native MTP drafting: the model's NextN head applied recursively, as a chain."""

from __future__ import annotations

import numpy as np

from ..sampling import sample_from, target_distribution
from .base import Drafter, Proposal


_LAST_OUT = [True]


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
    summary = "the file's MTP head drafting a chain"
    needs_mtp = True
    needs_hidden = True
    argmax_drafts = True
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
        pending = np.zeros((1, eng.n_embd), dtype=np.float32)
        n_batch = eng.opts.n_batch
        for start in range(0, len(prompt), n_batch):
            chunk = prompt[start:start + n_batch]
            h = hidden[start:start + len(chunk)]
            self._write(eng, chunk, np.concatenate([pending, h[:-1]], axis=0), start)
            pending = h[-1:].copy()
        #: the last position the pending chain wrote into the MTP cache (None: unknown, roll back)
        self.top: int | None = None
        #: tokens whose MTP rows are still to be written (positions before the newest token's)
        self.catch_tokens: list[int] = []
        #: their hidden-state inputs then the newest token's (the pending row), as blocks of
        #: consecutive rows: after a draft, one block of the verify pass's rows
        self.rows: list[np.ndarray] = [pending]

    @property
    def pending(self) -> np.ndarray:
        """The newest token's hidden-state input (the target's row of the token before it)."""
        return self.rows[-1][-1]

    def _rows(self) -> np.ndarray:
        """The catch-up rows then the pending row, as one array: no copy in the usual case
        (after a draft they are consecutive rows of the verify pass). Stacking them per pass
        cost ~17 us right after the target pass (default model, q4_0, K = 1): 1% of decode."""
        return self.rows[0] if len(self.rows) == 1 else np.concatenate(self.rows)

    @staticmethod
    def deterministic(params) -> bool:
        """Draft the head's most likely token (verified by the match rule) rather
        than a draw from its distribution (rejection rule): greedy decoding, and
        sampling with ``match_drafts`` (SpeculativeLlama and the server set it for
        seeded requests), so that a seed gives plain sampling's text whatever
        drafter or draft length runs (drawn drafts consume the seed's random
        numbers). Otherwise the rejection rule's higher acceptance."""
        return params.greedy or params.match_drafts

    def _draft_token(self, eng, row, context, drafts, params, rng, qs) -> int:
        if qs is None:
            return eng.mtp_argmax(row)
        q = target_distribution(eng.mtp_logits(row), context + drafts, params)
        qs.append(q)
        return sample_from(q, rng)

    def propose(self, eng, context, tok, pos, k, params, rng):
        drafts: list[int] = []
        qs: list[np.ndarray] | None = None if self.deterministic(params) else []
        p0 = pos - len(self.catch_tokens)
        toks = self.catch_tokens + [tok]
        hid = self._rows()
        heads = max(1, eng.n_nextn)
        self.top = pos + k - 1          # the last position this chain writes into the MTP cache
        if heads == 1 and qs is None and eng.greedy_mtp:
            # greedy passes of one head: each step's rows and its winner in one call
            d = eng.mtp_decode_argmax(toks, hid, p0)
            drafts.append(d)
            for i in range(1, k):
                h = eng.mtp_hidden_ring(len(toks) - 1 if i == 1 else 0)
                d = eng.mtp_decode_argmax([d], h, pos + i)
                drafts.append(d)
            return Proposal(drafts, None)
        self._write(eng, toks, hid, p0, output_last=True)
        row = len(toks) - 1
        for i in range(k):
            if i and heads > 1:
                # step i under layer i mod H: re-add the drafted prefix under that layer
                eng.mtp_truncate(p0)
                eng.mtp_set_head(i % heads)
                eng.mtp_decode(toks, hid, p0, [False] * (len(toks) - 1) + [True])
                row = len(toks) - 1
            d = self._draft_token(eng, row, context, drafts, params, rng, qs)
            drafts.append(d)
            if i + 1 < k:
                h = eng.mtp_hidden_ring(row)              # (1, n_embd), read by the next step at once
                if heads > 1:
                    toks, hid = toks + [d], np.concatenate([hid, h])
                else:
                    eng.mtp_decode([d], h, pos + 1 + i, _LAST_OUT)
                    row = 0
        if heads > 1:
            eng.mtp_set_head(0)
        return Proposal(drafts, qs)

    def accept(self, eng, tok, pos, proposal, n_accepted, hidden):
        # a drafting pass: a chain, or a tree (whose tokens the loop has replaced by the
        # accepted branch, empty when nothing was accepted)
        if proposal.tokens or proposal.tree is not None:
            # (tok, pending) at `pos` is right; later rows were built on the head's own states
            # (a chain of one draft wrote none: no roll-back, 14 us a pass on the default model)
            if proposal.tree is not None or self.top is None or self.top > pos:
                eng.mtp_truncate(pos + 1)
            self.top = None
            # (rows of the verify batch's hidden states, kept as a view: the loop's copy lives in
            # the engine's ring, valid for HIDDEN_RING_ROWS more rows)
            self.catch_tokens = proposal.tokens[:n_accepted]
            self.rows = [hidden[:n_accepted + 1]]
        else:
            self.follow(eng, tok, pos, [], hidden)

    def follow(self, eng, tok, pos, tokens, hidden):
        """A pass this head did not draft (plain, or another drafter's chain):
        ``tok`` and the accepted ``tokens`` join the catch-up rows, written
        before the next draft (or now, once there are ``FLUSH_ROWS``)."""
        self.catch_tokens = self.catch_tokens + [tok] + list(tokens)
        self.rows = self.rows + [hidden[:len(tokens) + 1]]
        if len(self.catch_tokens) >= self.FLUSH_ROWS:
            n = len(self.catch_tokens)
            rows = self._rows()
            self._write(eng, self.catch_tokens, rows[:-1], pos + 1 + len(tokens) - n)
            self.catch_tokens, self.rows = [], [rows[-1:].copy()]
