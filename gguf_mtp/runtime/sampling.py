"""Token sampling and the speculative-sampling acceptance rule (pure numpy).

The target distribution
-----------------------
:func:`target_distribution` turns one row of raw logits into the probability
vector the target model samples from. It follows llama.cpp's samplers in the
order llama-cpp-python chains them by default (``Llama._init_sampler``)::

    repeat penalty -> top-k -> top-p -> min-p -> temperature -> sample

* **repeat penalty** (raw logits): every distinct token among the last
  ``repeat_last_n`` tokens of ``history`` (the whole context, prompt
  included; ``-1`` = all of it, ``0`` = none) has a positive logit divided by
  ``repeat_penalty`` and a non-positive one multiplied by it.
* **top-k**: keep the ``top_k`` largest logits (``0`` = off).
* **top-p** (nucleus): softmax over the surviving tokens at temperature 1,
  sort them by probability, keep the smallest prefix whose cumulative
  probability is ``>= top_p`` (always at least one token; ``1.0`` = off).
* **min-p**: keep tokens with ``p >= min_p * p_max`` over the survivors,
  again at temperature 1 (``0.0`` = off).
* **temperature**: softmax of ``logits / temperature`` over what is left.

``temperature == 0`` is greedy decoding: the argmax of the penalised logits
(as in llama-cpp-python, where the greedy sampler follows the penalties and
the truncation samplers are not used; none of them could remove the argmax).

Ties are broken towards the lower token id everywhere (the argmax, and the
order used by top-k / top-p), so the result is a pure function of its inputs.
All arithmetic is float64.

Speculative sampling
--------------------
:func:`accept_or_resample` is the rule of Leviathan et al. (2023) and Chen et
al. (2023): a draft token ``x ~ q`` is accepted with probability
``min(1, p[x] / q[x])``, otherwise a replacement is drawn from the normalised
residual ``max(0, p - q)``. The emitted token is then distributed exactly as
``p``. :func:`verify_chain` applies it along a chain of drafts and
:func:`verify_chain_greedy` is the temperature-0 counterpart.

Statistics
----------
:func:`chi2_sf` (the chi-square survival function, via the regularised upper
incomplete gamma function) and :func:`chi2_gof` (a goodness-of-fit test) let
the test-suite check such distributional claims without scipy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = [
    "SamplingParams", "Sampler", "target_distribution", "sample_from",
    "accept_or_resample", "verify_chain", "verify_chain_greedy",
    "chi2_sf", "chi2_gof", "topk_indices",
]


# --------------------------------------------------------------------------- params

@dataclass(frozen=True)
class SamplingParams:
    """Sampler settings, with llama.cpp's meaning (see the module docstring).

    ``temperature=0`` means greedy; ``top_k=0``, ``top_p=1``, ``min_p=0`` and
    ``repeat_penalty=1`` switch the respective sampler off. ``seed=None``
    seeds the random generator from the OS.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    #: drafters propose their most likely tokens, verified by the match rule, so that
    #: a seeded run is plain sampling's text token for token with any drafter
    #: (False: sampled drafts and the rejection rule, which accepts more)
    match_drafts: bool = False

    def __post_init__(self):
        if not self.temperature >= 0.0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0.0 <= self.top_p <= 1.0:
            raise ValueError(f"top_p must be in [0, 1], got {self.top_p}")
        if not 0.0 <= self.min_p <= 1.0:
            raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
        if not self.repeat_penalty > 0.0:
            raise ValueError(f"repeat_penalty must be > 0, got {self.repeat_penalty}")
        if self.repeat_last_n < -1:
            raise ValueError(f"repeat_last_n must be >= -1 (-1 = whole history), got {self.repeat_last_n}")

    @property
    def greedy(self) -> bool:
        """True when decoding is deterministic (temperature 0)."""
        return self.temperature == 0.0


# --------------------------------------------------------------------------- target distribution

def _top_indices(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``x``, ordered by value
    (descending) and then by index: exactly the first ``k`` entries of a stable
    descending sort, found with ``argpartition`` instead of a full sort."""
    n = x.shape[0]
    if k >= n:
        return np.argsort(-x, kind="stable")
    part = np.argpartition(-x, k - 1)[:k]
    kth = x[part].min()                       # the k-th largest value
    above = np.flatnonzero(x > kth)
    ties = np.flatnonzero(x == kth)[: k - above.size]
    sel = np.concatenate([above, ties])
    sel.sort()                                # index order, so the stable sort breaks ties by id
    return sel[np.argsort(-x[sel], kind="stable")]


def _penalized(logits: np.ndarray, history: Sequence[int], params: SamplingParams) -> np.ndarray:
    """float64 copy of ``logits`` with the repeat penalty applied."""
    x = np.array(logits, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"logits must be a non-empty 1-D array, got shape {np.shape(logits)}")
    n = params.repeat_last_n
    if params.repeat_penalty != 1.0 and n != 0 and len(history):
        recent = history if n == -1 else history[-n:]
        ids = np.unique(np.asarray(recent, dtype=np.int64))
        if ids.size and (ids[0] < 0 or ids[-1] >= x.size):
            raise ValueError(f"history holds token ids outside [0, {x.size})")
        v = x[ids]
        x[ids] = np.where(v > 0, v / params.repeat_penalty, v * params.repeat_penalty)
    return x


def target_distribution(logits: np.ndarray, history: Sequence[int], params: SamplingParams) -> np.ndarray:
    """The probability vector (float64, length V) the target samples from.

    ``logits`` is one row of raw logits (any float dtype), ``history`` the
    context so far (for the repeat penalty). Tokens removed by a filter get
    probability exactly 0. Greedy params give a one-hot vector at the argmax.
    Only the candidate set is ever sorted: top-k uses ``argpartition``, and
    top-p without top-k grows a partial selection until it holds the nucleus.
    """
    x = _penalized(logits, history, params)
    V = x.size
    out = np.zeros(V, dtype=np.float64)
    if params.greedy:
        out[int(np.argmax(x))] = 1.0
        return out
    if not np.isfinite(x.max()):
        raise ValueError("logits have no finite maximum (NaN, +inf or all -inf)")

    cand = None                                # None = every token, in id order
    if 0 < params.top_k < V:
        cand = _top_indices(x, params.top_k)   # sorted by logit, descending

    if params.top_p < 1.0:
        if cand is None:
            # Nucleus over the full vocabulary: select the top m tokens for a
            # growing m until their mass reaches top_p, then cut inside them.
            # The top m are the first m of the full stable sort, so the cut is
            # the one a full sort would give.
            w = np.exp(x - x.max())
            total = w.sum()
            m = min(V, 256)
            while True:
                cand = _top_indices(x, m)
                cum = np.cumsum(w[cand]) / total
                if cum[-1] >= params.top_p or m == V:
                    break
                m = V if m * 8 >= V // 4 else m * 8    # near the full size: just sort it all
        else:
            w = np.exp(x[cand] - x[cand[0]])
            cum = np.cumsum(w) / w.sum()
        keep = int(np.searchsorted(cum, params.top_p, side="left")) + 1
        cand = cand[:keep]

    if params.min_p > 0.0:
        vals = x if cand is None else x[cand]
        ok = np.exp(vals - vals.max()) >= params.min_p       # p / p_max >= min_p
        cand = np.flatnonzero(ok) if cand is None else cand[ok]

    vals = x if cand is None else x[cand]
    w = np.exp((vals - vals.max()) / params.temperature)
    w /= w.sum()
    if cand is None:
        return w
    out[cand] = w
    return out


# --------------------------------------------------------------------------- sampling

def sample_from(probs: np.ndarray, rng: np.random.Generator) -> int:
    """Draw one token id from ``probs`` (non-negative, need not be normalised)
    by inverse CDF with one uniform from ``rng``; zero-probability ids are
    never returned."""
    p = np.asarray(probs, dtype=np.float64)
    support = np.flatnonzero(p > 0)
    if support.size == 0:
        raise ValueError("cannot sample from an all-zero distribution")
    cdf = np.cumsum(p[support])
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return int(support[min(i, support.size - 1)])


class Sampler:
    """Samples tokens for given :class:`SamplingParams`, with its own
    ``np.random.Generator`` seeded from ``params.seed`` (reproducible when the
    seed is set)."""

    def __init__(self, params: SamplingParams | None = None):
        self.params = params or SamplingParams()
        self.rng = np.random.default_rng(self.params.seed)

    def distribution(self, logits: np.ndarray, history: Sequence[int] = ()) -> np.ndarray:
        """:func:`target_distribution` with this sampler's params."""
        return target_distribution(logits, history, self.params)

    def sample(self, probs: np.ndarray) -> int:
        """One token drawn from ``probs`` with this sampler's generator."""
        return sample_from(probs, self.rng)

    @staticmethod
    def greedy(logits: np.ndarray) -> int:
        """The argmax of ``logits`` (lowest id on ties), no penalty applied."""
        return int(np.argmax(logits))

    def next_token(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """The next token under the full pipeline: the penalised argmax when
        greedy (no randomness consumed), otherwise a draw from the target
        distribution."""
        p = self.distribution(logits, history)
        return int(np.argmax(p)) if self.params.greedy else self.sample(p)


# --------------------------------------------------------------------------- speculative rule

def accept_or_resample(p: np.ndarray, q: np.ndarray, x: int, rng: np.random.Generator) -> tuple[bool, int]:
    """One step of speculative sampling.

    ``p`` is the target distribution, ``q`` the draft distribution that ``x``
    was drawn from. Accept ``x`` with probability ``min(1, p[x] / q[x])`` and
    return ``(True, x)``; otherwise return ``(False, y)`` with ``y`` drawn
    from ``max(0, p - q)`` normalised (or from ``p`` when that residual has no
    mass, i.e. ``p == q`` up to rounding). Either way the returned token is
    distributed as ``p``. Both inputs are normalised here, so float32 rows
    whose sums are off by rounding are fine.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"p and q differ in shape: {p.shape} vs {q.shape}")
    ps, qs = p.sum(), q.sum()
    if not (ps > 0 and qs > 0):
        raise ValueError("p and q must each have positive mass")
    px, qx = p[x] / ps, q[x] / qs
    if qx <= 0:
        raise ValueError(f"draft token {x} has zero probability under q; it cannot have been drawn from q")
    if rng.random() * qx < px:                 # u < p[x]/q[x], without dividing
        return True, int(x)
    residual = np.maximum(p / ps - q / qs, 0.0)
    if residual.sum() <= 1e-12:
        return False, sample_from(p, rng)
    return False, sample_from(residual, rng)


def verify_chain(ps: Sequence[np.ndarray], qs: Sequence[np.ndarray], drafts: Sequence[int],
                 rng: np.random.Generator) -> tuple[int, int]:
    """Verify ``K = len(drafts)`` chained draft tokens; return ``(n_accepted, next_token)``.

    ``qs[i]`` is the draft distribution ``drafts[i]`` was drawn from and
    ``ps[i]`` the target distribution at the same position (after the prefix
    ``drafts[:i]``), so ``ps`` has ``K + 1`` entries. On the first rejection
    ``next_token`` is the resampled replacement; if all ``K`` are accepted it is
    a fresh draw from ``ps[K]``. The emitted tokens ``drafts[:n] + [next]`` are
    distributed exactly as sampling from the target one token at a time.
    """
    K = len(drafts)
    if len(ps) != K + 1 or len(qs) < K:
        raise ValueError(f"need K+1 target and K draft distributions for K={K} drafts, "
                         f"got {len(ps)} and {len(qs)}")
    for i, x in enumerate(drafts):
        accepted, tok = accept_or_resample(ps[i], qs[i], x, rng)
        if not accepted:
            return i, tok
    return K, sample_from(ps[K], rng)


def verify_chain_greedy(target_argmax: Sequence[int], drafts: Sequence[int]) -> tuple[int, int]:
    """Greedy verification: accept the longest prefix of ``drafts`` that
    matches the target's argmax tokens (``K + 1`` of them, one per position);
    return ``(n_accepted, target_argmax[n_accepted])``."""
    K = len(drafts)
    if len(target_argmax) != K + 1:
        raise ValueError(f"need K+1={K + 1} target tokens, got {len(target_argmax)}")
    n = 0
    while n < K and int(drafts[n]) == int(target_argmax[n]):
        n += 1
    return n, int(target_argmax[n])


# --------------------------------------------------------------------------- statistics

def _gamma_q(a: float, x: float) -> float:
    """Regularised upper incomplete gamma ``Q(a, x) = Γ(a, x) / Γ(a)``.

    With ``f = exp(-x + a ln x - ln Γ(a))``:

    * for ``x < a + 1`` the power series
      ``P(a, x) = f/a * Σ_{n≥0} x^n / ((a+1)(a+2)…(a+n))`` converges fast and
      ``Q = 1 - P`` (``Q`` is not small there, so no cancellation issue);
    * otherwise the continued fraction
      ``Q(a, x) = f / (x+1-a - 1(1-a)/(x+3-a - 2(2-a)/(x+5-a - …)))``,
      i.e. ``b_0 = x+1-a``, ``a_n = -n(n-a)``, ``b_n = x+2n+1-a``, evaluated
      with the modified Lentz method.
    """
    if x <= 0.0:
        return 1.0
    log_f = -x + a * math.log(x) - math.lgamma(a)
    eps, tiny = 1e-15, 1e-300
    if x < a + 1.0:
        term = total = 1.0 / a
        n = 0
        while abs(term) > eps * abs(total) and n < 10_000:
            n += 1
            term *= x / (a + n)
            total += term
        return max(0.0, 1.0 - total * math.exp(log_f))
    # modified Lentz for 1 / (b0 + a1/(b1 + a2/(b2 + ...)))
    b = x + 1.0 - a
    c = 1.0 / tiny
    d = 1.0 / b
    h = d
    for n in range(1, 10_000):
        an = -n * (n - a)
        b += 2.0
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return math.exp(log_f) * h


def chi2_sf(x: float, dof: float) -> float:
    """Survival function ``P[X > x]`` of the chi-square distribution with
    ``dof`` degrees of freedom: ``Q(dof / 2, x / 2)``."""
    if dof <= 0:
        raise ValueError(f"dof must be > 0, got {dof}")
    return _gamma_q(dof / 2.0, x / 2.0)


def chi2_gof(counts: Sequence[int], probs: Sequence[float], min_expected: float = 5.0) -> tuple[float, int, float]:
    """Pearson chi-square goodness-of-fit of observed ``counts`` against
    category probabilities ``probs``; returns ``(statistic, dof, p_value)``.

    Categories whose expected count is below ``min_expected`` are pooled into
    one (the chi-square approximation needs moderate expected counts). An
    observation in a zero-probability category is an outright failure
    (p-value 0).
    """
    obs = np.asarray(counts, dtype=np.float64).ravel()
    p = np.asarray(probs, dtype=np.float64).ravel()
    if obs.shape != p.shape:
        raise ValueError("counts and probs differ in length")
    if np.any(obs[p <= 0] > 0):
        return math.inf, 0, 0.0
    n = obs.sum()
    exp_ = n * p / p.sum()
    small = (exp_ < min_expected) & (p > 0)
    big = ~small & (p > 0)
    o, e = list(obs[big]), list(exp_[big])
    if small.any():
        o.append(obs[small].sum())
        e.append(exp_[small].sum())
    o, e = np.array(o), np.array(e)
    dof = o.size - 1
    if dof < 1:
        return 0.0, 0, 1.0
    stat = float(((o - e) ** 2 / e).sum())
    return stat, dof, chi2_sf(stat, dof)


def topk_indices(x: np.ndarray, k: int, block: int = 128) -> np.ndarray:
    """Indices of the ``k`` largest entries of ``x``, largest first, ties to
    the lowest index (``np.argsort(-x, kind="stable")[:k]``).

    Two stages: the ``k`` blocks with the largest maxima hold the answer, then
    only their entries are sorted. ``np.argpartition`` over a whole row is
    ~20x slower here: a model whose unused embedding rows are zero has
    ~150k logits exactly equal, which its introselect handles badly."""
    n = x.shape[0]
    k = min(k, n)
    if n <= 4 * block:
        return np.argsort(-x, kind="stable")[:k]
    nb = -(-n // block)
    padded = np.full(nb * block, -np.inf, dtype=x.dtype)
    padded[:n] = x
    maxima = padded.reshape(nb, block).max(axis=1)
    blocks = np.lexsort((np.arange(nb), -maxima))[:k]
    cand = (np.sort(blocks)[:, None] * block + np.arange(block)).ravel()
    cand = cand[cand < n]
    return cand[np.lexsort((cand, -x[cand]))[:k]]
