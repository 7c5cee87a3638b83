"""Greedy decoding loops: plain, and speculative with the native MTP head.

MTP drafting (DeepSeek-V3 / Qwen3.5 style, one shared head applied recursively):
the MTP module at position p reads the token x_p and the target's hidden state
h_{p-1}; its logits predict x_{p+1} and its own output hidden state stands in
for the target's at the next draft step. A draft of K tokens is verified by one
target pass over [t, d_1..d_K]; the longest prefix that matches the target's
greedy choices is kept, plus the target's own next token (the bonus).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .engine import Engine


@dataclass
class GenerationStats:
    drafter: str
    draft: int
    n_prompt: int = 0
    n_generated: int = 0
    prompt_s: float = 0.0        # prefill (target + MTP catch-up)
    decode_s: float = 0.0        # everything after the first generated token
    target_s: float = 0.0        # time in target passes after prefill
    draft_s: float = 0.0         # time in MTP passes after prefill
    target_passes: int = 0       # target passes after prefill
    accepted: list[int] = field(default_factory=list)   # per pass: accepted draft tokens
    drafted: list[int] = field(default_factory=list)    # per pass: drafted tokens

    @property
    def tokens_per_s(self) -> float:
        """Decode speed: tokens after the first one, per second of decoding."""
        n = self.n_generated - 1
        return n / self.decode_s if self.decode_s > 0 and n > 0 else 0.0

    @property
    def tau(self) -> float:
        """Mean tokens produced per target pass (accepted drafts + the bonus token)."""
        if not self.target_passes:
            return 0.0
        return (self.n_generated - 1) / self.target_passes

    @property
    def acceptance_per_position(self) -> list[float]:
        """For draft position i (1-based), the share of passes that drafted at
        least i tokens in which the i-th draft token was accepted."""
        out = []
        k_max = max(self.drafted, default=0)
        for i in range(1, k_max + 1):
            n = sum(1 for d in self.drafted if d >= i)
            a = sum(1 for d, acc in zip(self.drafted, self.accepted) if d >= i and acc >= i)
            out.append(a / n if n else 0.0)
        return out

    @property
    def acceptance_rate(self) -> float:
        d = sum(self.drafted)
        return sum(self.accepted) / d if d else 0.0

    def as_dict(self) -> dict:
        return {
            "drafter": self.drafter,
            "draft": self.draft,
            "n_prompt": self.n_prompt,
            "n_generated": self.n_generated,
            "tokens_per_s": self.tokens_per_s,
            "tau": self.tau,
            "acceptance_rate": self.acceptance_rate,
            "acceptance_per_position": self.acceptance_per_position,
            "target_passes": self.target_passes,
            "prompt_s": self.prompt_s,
            "decode_s": self.decode_s,
            "target_s": self.target_s,
            "draft_s": self.draft_s,
            "other_s": max(0.0, self.decode_s - self.target_s - self.draft_s),
        }


@dataclass
class Generation:
    tokens: list[int]
    text: str
    stats: GenerationStats


def _argmax(logits: np.ndarray) -> int:
    return int(np.argmax(logits))


def _prefill(eng: Engine, prompt: list[int], with_mtp: bool) -> tuple[int, np.ndarray | None]:
    """Target over the prompt (in n_batch chunks), then the MTP catch-up over the
    same positions. Returns the first generated token and the target hidden state
    at the last prompt position."""
    n_batch = eng.opts.n_batch
    pending = np.zeros(eng.n_embd, dtype=np.float32) if with_mtp else None
    first = -1
    for start in range(0, len(prompt), n_batch):
        chunk = prompt[start:start + n_batch]
        outputs = [False] * len(chunk)
        last = start + len(chunk) == len(prompt)
        outputs[-1] = last
        eng.target_decode(chunk, start, outputs)
        if last:
            first = _argmax(eng.target_logits(len(chunk) - 1))
        if with_mtp:
            h = eng.target_hidden(len(chunk))
            # the MTP at position p pairs x_p with h_{p-1}
            shifted = np.concatenate([pending[None, :], h[:-1]], axis=0)
            eng.mtp_decode(chunk, shifted, start, [False] * len(chunk))
            pending = h[-1].copy()
    return first, pending


def generate_plain(eng: Engine, prompt: list[int], n_predict: int) -> tuple[list[int], GenerationStats]:
    """Greedy decoding with the target alone, one token per pass."""
    st = GenerationStats(drafter="none", draft=0, n_prompt=len(prompt))
    eng.clear()
    t0 = time.perf_counter()
    tok, _ = _prefill(eng, prompt, with_mtp=False)
    t1 = time.perf_counter()
    st.prompt_s = t1 - t0
    out = [tok]
    pos = len(prompt)
    while len(out) < n_predict and not eng.is_eog(tok):
        a = time.perf_counter()
        eng.target_decode([tok], pos, [True])
        tok = _argmax(eng.target_logits(0))
        st.target_s += time.perf_counter() - a
        st.target_passes += 1
        pos += 1
        out.append(tok)
    st.decode_s = time.perf_counter() - t1
    st.n_generated = len(out)
    return out, st


def generate_mtp(eng: Engine, prompt: list[int], n_predict: int, draft: int) -> tuple[list[int], GenerationStats]:
    """Greedy speculative decoding with the native MTP head drafting ``draft`` tokens."""
    if not eng.has_mtp:
        raise ValueError(f"{eng.path} has no MTP layers loaded: use drafter 'none'")
    if draft < 0 or draft > eng.opts.draft_max:
        raise ValueError(f"draft must be in 0..{eng.opts.draft_max}, got {draft}")
    if draft == 0:
        return generate_plain(eng, prompt, n_predict)
    st = GenerationStats(drafter="mtp", draft=draft, n_prompt=len(prompt))
    eng.clear()
    t0 = time.perf_counter()
    tok, pending = _prefill(eng, prompt, with_mtp=True)
    t1 = time.perf_counter()
    st.prompt_s = t1 - t0
    out = [tok]
    pos = len(prompt)          # position of `tok`, the newest token not yet in the target cache
    # rows the MTP cache still needs before `tok`: (token, target hidden) pairs
    catch_tokens: list[int] = []
    catch_hidden: list[np.ndarray] = []

    while len(out) < n_predict and not eng.is_eog(tok):
        k = min(draft, n_predict - len(out) - 1)
        drafts: list[int] = []
        a = time.perf_counter()
        if k > 0:
            # draft step 0 also writes the catch-up rows into the MTP cache
            toks = catch_tokens + [tok]
            hid = np.stack(catch_hidden + [pending])
            p0 = pos - len(catch_tokens)
            eng.mtp_decode(toks, hid, p0, [False] * (len(toks) - 1) + [True])
            row = len(toks) - 1
            for i in range(k):
                d = _argmax(eng.mtp_logits(row if i == 0 else 0))
                drafts.append(d)
                if i + 1 < k:
                    h = eng.mtp_hidden(row if i == 0 else 0)
                    eng.mtp_decode([d], h[None, :], pos + 1 + i, [True])
        st.draft_s += time.perf_counter() - a

        b = time.perf_counter()
        verify = [tok] + drafts
        eng.target_decode(verify, pos, [True] * len(verify))
        greedy = [_argmax(eng.target_logits(j)) for j in range(len(verify))]
        n_acc = 0
        while n_acc < len(drafts) and drafts[n_acc] == greedy[n_acc]:
            n_acc += 1
        hidden = eng.target_hidden(len(verify))
        if n_acc < len(drafts):
            eng.target_truncate(pos + n_acc + 1)
        st.target_s += time.perf_counter() - b
        st.target_passes += 1
        st.drafted.append(len(drafts))
        st.accepted.append(n_acc)

        # the MTP cache holds (tok, pending) at `pos` (right) and rows written by
        # drafting after it (built on the head's own hidden states): replace them
        # with the accepted tokens paired with the target's hidden states
        if k > 0:
            eng.mtp_truncate(pos + 1)
            catch_tokens = drafts[:n_acc]
            catch_hidden = [hidden[j] for j in range(n_acc)]
        else:
            catch_tokens = catch_tokens + [tok]
            catch_hidden = catch_hidden + [pending]
        pending = hidden[n_acc].copy()

        new = drafts[:n_acc] + [greedy[n_acc]]
        stop = False
        for t in new:
            out.append(t)
            if eng.is_eog(t) or len(out) >= n_predict:
                stop = True
                break
        pos += n_acc + 1
        tok = greedy[n_acc]
        if stop:
            break
    st.decode_s = time.perf_counter() - t1
    st.n_generated = len(out)
    return out, st
