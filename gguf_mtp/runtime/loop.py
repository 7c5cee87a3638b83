"""The decoding loop every drafter plugs into.

Prefill the prompt, then repeat: choose a draft length (fixed or auto),
let the drafter propose, verify ``[t, d_1..d_K]`` in one target pass, keep the
accepted prefix plus the target's own next token, roll the target cache back
past the first rejection, and tell the drafter. Deterministic drafts (chains
without ``q``, and draft trees) are verified by the match rule: the target
chooses its own token at each position (argmax, or a draw from its sampling
distribution) and a draft is kept when it equals that choice, so a seeded
sampled run reproduces plain sampling token for token. Drafts sampled from a
drafter distribution ``q`` go through the speculative-sampling rejection rule;
either way the output is distributed exactly as the target's.

:func:`decode` is a generator of the tokens each pass produced, so callers can
stream and stop early (stop strings); :class:`GenerationStats` is filled as it
goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from .autodraft import AutoDraft, cost_model
from .drafters import Drafter, Proposal, make_drafter
from .engine import Engine
from .sampling import Sampler, SamplingParams, verify_chain
from .tree import has_recurrent_layers, verify_tree


def acceptance_per_position(drafted: list[int], accepted: list[int], k_max: int | None = None) -> list[float]:
    """For draft position i (1-based), the share of passes that drafted at
    least i tokens in which the i-th draft token was accepted."""
    out = []
    for i in range(1, (max(drafted, default=0) if k_max is None else k_max) + 1):
        n = sum(1 for d in drafted if d >= i)
        a = sum(1 for d, acc in zip(drafted, accepted) if d >= i and acc >= i)
        out.append(a / n if n else 0.0)
    return out


@dataclass
class GenerationStats:
    drafter: str
    draft: int | str
    n_prompt: int = 0
    n_reused: int = 0            # prompt tokens whose cache came from the previous prompt (decode(reuse=True))
    n_generated: int = 0
    prompt_s: float = 0.0        # prefill (target + drafter catch-up)
    decode_s: float = 0.0        # everything after the first generated token
    target_s: float = 0.0        # target passes after prefill
    draft_s: float = 0.0         # drafter calls
    compute_s: float = 0.0       # inside llama.cpp's decode calls (target + MTP) after prefill
    target_passes: int = 0       # target passes after prefill
    tree_nodes: int = 0          # draft-tree nodes verified (tree drafters)
    accepted: list[int] = field(default_factory=list)   # per pass: accepted draft tokens
    drafted: list[int] = field(default_factory=list)    # per pass: drafted tokens
    rows: list[int] = field(default_factory=list)       # per pass: target rows verified

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first one, per second of decoding."""
        n = self.n_generated - 1
        return n / self.decode_s if self.decode_s > 0 and n > 0 else 0.0

    @property
    def overhead_s(self) -> float:
        """Decode time outside llama.cpp's compute: Python, ctypes, batch filling,
        logit reads, the drafters' host-side work."""
        return max(0.0, self.decode_s - self.compute_s)

    @property
    def overhead_share(self) -> float:
        return self.overhead_s / self.decode_s if self.decode_s > 0 else 0.0

    @property
    def tau(self) -> float:
        """Mean tokens produced per target pass (accepted drafts + the target's own token)."""
        return (self.n_generated - 1) / self.target_passes if self.target_passes else 0.0

    @property
    def acceptance_per_position(self) -> list[float]:
        return acceptance_per_position(self.drafted, self.accepted)

    @property
    def acceptance_rate(self) -> float:
        d = sum(self.drafted)
        return sum(self.accepted) / d if d else 0.0

    def as_dict(self) -> dict:
        return {
            "drafter": self.drafter, "draft": self.draft, "n_prompt": self.n_prompt, "n_reused": self.n_reused,
            "n_generated": self.n_generated, "tokens_per_s": self.tokens_per_s, "tau": self.tau,
            "acceptance_rate": self.acceptance_rate, "acceptance_per_position": self.acceptance_per_position,
            "target_passes": self.target_passes, "prompt_s": self.prompt_s, "decode_s": self.decode_s,
            "target_s": self.target_s, "draft_s": self.draft_s,
            "other_s": max(0.0, self.decode_s - self.target_s - self.draft_s),
            "compute_s": self.compute_s,
            "overhead_s": self.overhead_s,
            "overhead_share": self.overhead_share,
            "mean_draft": (sum(self.drafted) / len(self.drafted)) if self.drafted else 0.0,
        }


#: prompts are prefilled in chunks that start at multiples of this many positions,
#: so a prompt that reuses a cached prefix cut at such a boundary runs exactly the
#: batches a fresh prefill runs after it: reuse is bit-exact. (Cut anywhere else,
#: the default model at q8_0 changed its greedy answer on a chat's 5th turn: the
#: kernels, and the recurrent layers' chunked scan, round differently for other
#: batch splits.) 128 rows keep llama.cpp's CPU matrix kernels at full speed.
PREFILL_CHUNK = 128


@dataclass
class PromptCache:
    """What ``decode(reuse=True)`` keeps of its prompt for the next call (``Engine.prompt_cache``):
    the next prompt prefills only what follows the longest common prefix."""
    tokens: list[int]                 # the prompt; the target cache starts with its cells
    #: NextN hidden rows (the drafters rebuild their state from them) of the prompt's first
    #: ``len(hidden)`` tokens: all of them after a drafter that used them, the part reused
    #: from such a call after one that did not (plain decoding computes none), else None
    hidden: np.ndarray | None
    #: recurrent models: sequence 0 saved at position ``state_at`` (a chunk boundary)
    state: bytes | None = None
    state_at: int = 0


def _chunk_size(eng: Engine) -> int:
    return min(eng.opts.n_batch, PREFILL_CHUNK)


def _reusable(eng: Engine, prompt: list[int], want_hidden: bool) -> tuple[int, np.ndarray | None]:
    """Make the target cache hold the longest usable prefix of ``prompt`` that the
    previous prompt shares, cut at a prefill chunk boundary; returns its length
    (0: nothing reused, cache cleared) and that prefix's hidden rows where the
    cache has them (a call that wants them reuses no further). Attention
    caches are cut there; recurrent state cannot go back further than a draft,
    so those models restore the snapshot taken at the previous prompt's last
    chunk boundary. The MTP cache is always rebuilt (one layer over the prompt)."""
    pc = eng.prompt_cache
    n = 0
    if pc is not None:
        limit = min(len(pc.tokens), len(prompt) - 1)      # at least one token to prefill: its logits
        if want_hidden:
            limit = min(limit, 0 if pc.hidden is None else len(pc.hidden))
        while n < limit and pc.tokens[n] == prompt[n]:
            n += 1
        if pc.state is not None:
            n = pc.state_at if n >= pc.state_at else 0
            if n:
                eng.clear()
                n = n if eng.load_state(pc.state) else 0
        else:
            n -= n % _chunk_size(eng)
            if n and not eng.keep_prefix(n):
                n = 0
    if n == 0:
        eng.clear()
        return 0, None
    eng.prompt_cache = None
    eng.mtp_clear()
    return n, (pc.hidden[:n] if pc.hidden is not None and len(pc.hidden) >= n else None)


def _prefill(eng: Engine, prompt: list[int], want_hidden: bool, first: int = 0, snapshot: bool = False,
             ) -> tuple[np.ndarray, np.ndarray | None, tuple[bytes, int] | None]:
    """Target over ``prompt[first:]`` (the cache holds the rest) in chunks that
    start at multiples of :data:`PREFILL_CHUNK`; returns the last logits (copy; None
    after greedy passes: read the winner), if asked the NextN hidden states of those positions, and with ``snapshot``
    the target state saved at the last chunk boundary (recurrent models)."""
    n_batch = _chunk_size(eng)
    hidden = [] if want_hidden else None
    logits = None
    saved = None
    snap_at = len(prompt) - len(prompt) % n_batch if snapshot else -1
    for start in range(first, len(prompt), n_batch):
        if start == snap_at and start:
            saved = (eng.save_state(), start)
        chunk = prompt[start:start + n_batch]
        last = start + len(chunk) == len(prompt)
        eng.target_decode(chunk, start, [False] * (len(chunk) - 1) + [last], prefill=True)
        if want_hidden:
            hidden.append(eng.target_hidden(len(chunk)))
        if last and not eng.greedy_target:       # (a greedy pass leaves its logits on the backend)
            logits = eng.target_logits(len(chunk) - 1).copy()
    if snap_at == len(prompt) and snap_at:
        saved = (eng.save_state(), snap_at)
    return logits, (np.concatenate(hidden) if want_hidden else None), saved


def _choose(sampler: Sampler, logits: np.ndarray, history: list[int]) -> int:
    p = sampler.params
    if p.greedy and p.repeat_penalty == 1.0:
        return int(np.argmax(logits))
    return sampler.next_token(logits, history)


def _choose_row(eng: Engine, sampler: Sampler, row: int, history: list[int]) -> int:
    """:func:`_choose` on the target's logits of batch row ``row``; greedy
    decoding takes the argmax in C without reading the logits into Python."""
    p = sampler.params
    if p.greedy and p.repeat_penalty == 1.0:
        return eng.target_argmax(row)
    return sampler.next_token(eng.target_logits(row), history)


def decode(eng: Engine, prompt: list[int], max_tokens: int, *, drafter: str | Drafter = "mtp",
           draft: int | str = 3, params: SamplingParams | None = None,
           stats: GenerationStats | None = None, reuse: bool = False) -> Iterator[list[int]]:
    """Yield the tokens produced by each pass (the first yield is the prompt's
    next token). ``draft`` is a fixed draft length or ``"auto"``. ``reuse``: keep
    the target cache of the previous ``reuse=True`` call's prompt for the prefix
    this prompt shares with it (a chat's next turn prefills only the new part)."""
    if not prompt:
        raise ValueError("empty prompt")
    params = params or SamplingParams()
    sampler = Sampler(params)
    dr = make_drafter(drafter)
    if dr.max_branches > 1 and (eng.opts.n_seq_max <= dr.max_branches or not eng.opts.kv_unified):
        raise ValueError(f"drafter {dr.name!r} verifies trees of up to {dr.max_branches} branches: make the "
                         f"Engine with drafter.configure(RuntimeOptions(...)) (n_seq_max > {dr.max_branches}, "
                         "kv_unified=True)")
    auto = None
    if dr.chooses_length:
        # the drafter prices every length itself; an integer draft caps it
        draft_cap = eng.opts.draft_max if draft == "auto" else int(draft)
    elif draft == "auto":
        k_max = eng.opts.draft_max if dr.name != "none" else 0
        if k_max:
            cm = cost_model(eng, n_max=k_max + 1)
            auto = AutoDraft(cm.for_drafter(dr.step_cost(cm.draft), dr.max_branches), k_max)
    elif not isinstance(draft, int) or draft < 0 or draft > eng.opts.draft_max:
        raise ValueError(f"draft must be 'auto' or in 0..{eng.opts.draft_max}, got {draft!r}")
    k_fixed = 0 if dr.name == "none" or auto else (draft_cap if dr.chooses_length else int(draft))
    st = stats if stats is not None else GenerationStats(dr.name, draft)
    st.n_prompt = len(prompt)

    dr.prepare(eng)
    # greedy generations run greedy passes: the graph picks each row's winner, the logits stay
    # on the backend (patch 0012); the engine is back to logits passes when the generation ends
    greedy = params.greedy and params.repeat_penalty == 1.0
    with eng.greedy_passes(greedy, greedy and dr.argmax_drafts):
        yield from _decode(eng, prompt, max_tokens, dr, auto, k_fixed, params, sampler, st, reuse)


def _decode(eng: Engine, prompt: list[int], max_tokens: int, dr: Drafter, auto: AutoDraft | None, k_fixed: int,
            params: SamplingParams, sampler: Sampler, st: GenerationStats, reuse: bool) -> Iterator[list[int]]:
    t0 = time.perf_counter()
    n_reused, old_hidden = _reusable(eng, prompt, dr.needs_hidden) if reuse else (0, None)
    if not reuse:
        eng.clear()
    st.n_reused = n_reused
    if eng.n_medusa:
        eng.medusa_enable(dr.needs_medusa)       # the heads cost a projection per output row: only when used
    elif dr.needs_medusa:
        raise ValueError(f"{eng.path} has no Medusa heads: convert with --heads medusa")
    snapshot = reuse and has_recurrent_layers(eng)
    logits, hidden, saved = _prefill(eng, prompt, dr.needs_hidden, n_reused, snapshot)
    if n_reused and hidden is not None:
        hidden = np.concatenate([old_hidden, hidden])
    if reuse and (saved or not snapshot):
        # a call without hidden rows passes on those of the prefix it reused, so that plain
        # and MTP runs taking turns on one long prefix (the bench's --depth) all reuse it
        eng.prompt_cache = PromptCache(list(prompt), hidden if dr.needs_hidden else old_hidden,
                                       *(saved or (None, 0)))
    if logits is None:                           # greedy: the last prompt row's winner
        tok = eng.target_argmax((len(prompt) - 1 - n_reused) % _chunk_size(eng))
    else:
        tok = _choose(sampler, logits, prompt)
    #: every token so far, the newest (``tok``, not yet in the target cache) last
    context = list(prompt) + [tok]
    d0 = time.perf_counter()
    dr.begin(eng, prompt, hidden)
    st.draft_s += time.perf_counter() - d0
    t1 = time.perf_counter()
    c1 = eng.compute_s
    st.prompt_s = t1 - t0
    st.n_generated = 1
    yield [tok]
    pos = len(prompt)
    #: accepted tokens not yet in the target cache (exact mode drops a tree's
    #: accepted branch and recomputes it in the next pass; see tree.verify_tree)
    pending: list[int] = []
    try:
        clock = time.perf_counter
        stateless = type(dr) is Drafter          # plain decoding: no propose / accept to call
        empty = Proposal()
        while st.n_generated < max_tokens and not eng.is_eog(tok):
            k = auto.choose() if auto else k_fixed
            k = min(k, max_tokens - st.n_generated - 1)
            ctx = context
            if k > 0:
                a = clock()
                proposal = dr.propose(eng, ctx, tok, pos, k, params, sampler.rng)
                st.draft_s += clock() - a
            else:
                proposal = empty if stateless else Proposal()
            drafts = proposal.tokens

            b = clock()
            r0 = eng.target_rows
            tree = proposal.tree
            if tree is not None:
                # one target choice per visited node, in emission order (see tree.py: lossless)
                greedy = params.greedy and params.repeat_penalty == 1.0
                res = verify_tree(eng, pos, tree, want_hidden=dr.needs_hidden, pending=pending,
                                  keep_accepted=not eng.opts.exact,
                                  choose=None if greedy else
                                  (lambda logits, path, ctx=ctx: _choose(sampler, logits, ctx + path)))
                proposal.tokens = drafts = res.tokens        # the accepted branch
                pending = [] if res.kept else list(res.tokens)
                n_acc, nxt, hidden, n_drafted = len(drafts), res.next_token, res.hidden, tree.depth
                proposal.rows = res.rows
                st.tree_nodes += len(tree)
            else:
                n_acc, nxt, hidden = _verify_chain(eng, sampler, params, context, tok, pos, proposal, dr, pending)
                n_drafted = len(drafts)
                proposal.rows = list(range(len(pending), len(pending) + n_acc + 1))
                pending = []
            st.target_s += clock() - b
            st.target_passes += 1
            st.rows.append(eng.target_rows - r0)
            st.drafted.append(n_drafted)
            st.accepted.append(n_acc)
            if auto:
                auto.update(st.drafted[-1], n_acc)

            if not stateless:
                d0 = clock()
                dr.accept(eng, tok, pos, proposal, n_acc, hidden)
                st.draft_s += clock() - d0

            if n_acc:
                new = drafts[:n_acc] + [nxt]
                out = []
                for t in new:
                    out.append(t)
                    if eng.is_eog(t) or st.n_generated + len(out) >= max_tokens:
                        break
                context += drafts[:n_acc]
            else:
                new = out = [nxt]
            context.append(nxt)
            pos += n_acc + 1
            tok = nxt
            st.n_generated += len(out)
            st.decode_s = clock() - t1
            st.compute_s = eng.compute_s - c1
            yield out
            if len(out) < len(new):
                break
    finally:
        st.decode_s = time.perf_counter() - t1
        st.compute_s = eng.compute_s - c1


_ALL_OUT = [[True] * n for n in range(33)]


def _verify_chain(eng: Engine, sampler: Sampler, params: SamplingParams, context: list[int], tok: int,
                  pos: int, proposal, dr: Drafter, pending=()):
    """One target pass over [tok, d_1..d_K] (after the ``pending`` tokens of
    an exact-mode tree, which need no logits); returns (n_accepted, next token,
    NextN hidden rows or None) and rolls the target back past a rejection."""
    drafts = proposal.tokens
    verify = [tok] + drafts
    lead = len(pending)
    if lead:
        rows, p0, outputs = list(pending) + verify, pos - lead, [False] * lead + [True] * len(verify)
    else:
        rows, p0 = verify, pos
        outputs = _ALL_OUT[len(verify)] if len(verify) < len(_ALL_OUT) else [True] * len(verify)
    ctx = context
    if params.greedy and params.repeat_penalty == 1.0:
        # match rule, greedy: the target's argmax at each position until the first mismatch.
        # The pass and every row's winner in one call (the graph computed them all; reading a
        # row past the first mismatch costs nothing next to a call per row after the pass)
        best = eng.target_decode_argmax(rows, p0, outputs, lead, len(verify))
        n_acc = 0
        while n_acc < len(drafts) and best[n_acc] == drafts[n_acc]:
            n_acc += 1
        nxt = best[n_acc]
    elif params.greedy or proposal.q is None:
        eng.target_decode(rows, p0, outputs)
        # match rule (deterministic drafts): the target's own choice at each
        # position until the first mismatch; one sampler draw per emitted token
        n_acc = 0
        while True:
            nxt = _choose_row(eng, sampler, lead + n_acc, ctx + drafts[:n_acc])
            if n_acc == len(drafts) or nxt != drafts[n_acc]:
                break
            n_acc += 1
    else:
        eng.target_decode(rows, p0, outputs)
        ps = [sampler.distribution(eng.target_logits(lead + j), ctx + drafts[:j]) for j in range(len(verify))]
        n_acc, nxt = verify_chain(ps, proposal.q, drafts, sampler.rng)
    hidden = eng.target_hidden_ring(lead, len(verify)) if dr.needs_hidden else None
    if n_acc < len(drafts):
        eng.target_truncate(pos + n_acc + 1)
    return n_acc, nxt, hidden
