"""The bench's statistics, as pure functions of what was timed.

* **Spread.** Every speed and every ratio is a median over interleaved repeats
  with its interquartile range (:func:`quartiles`): one run on a shared 2-core
  box is noise (plain tok/s of one q8_0 file ranged 287-365 across the rows of
  one three-repeat run).
* **Honest best K.** Picking the best draft length as the maximum over noisy
  runs reports the luckiest one. The best K is chosen on one half of the
  prompts (:func:`halves`) and its speed reported on the other half.
* **A bound that bounds** (:func:`run_bound`). A speculative pass verifies n
  rows and drafts once; what it costs is c(n) target passes (the measured
  batch-cost curve) plus the drafter's own measured step, plus the host work
  every pass has. Pricing each pass at the rows it actually verified, with the
  drafter's own measured draft time and plain decoding's own per-pass host
  time, gives a speed that no run with at least plain's host work per pass can
  beat:

      bound = tau * t_plain / (mean_i c(n_i) * t1 + d + o)

  with tau tokens per pass, t_plain plain decoding's time per token, t1 its
  compute per token, o = t_plain - t1 its host time per token, d the
  drafter's time per pass. The old formula, tau / (c(1 + K*branches) + K*d),
  priced a tree at every node it could have had and a drafter at the MTP
  head's step, and was beaten by measurements (EAGLE-2 tree 0.45x against
  0.10).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def quartiles(xs) -> dict:
    """``{"median", "q1", "q3"}`` of ``xs`` (linear interpolation; one value: all three equal)."""
    a = np.asarray(list(xs), dtype=np.float64)
    if not len(a):
        return {"median": 0.0, "q1": 0.0, "q3": 0.0}
    q1, med, q3 = np.percentile(a, [25, 50, 75])
    return {"median": float(med), "q1": float(q1), "q3": float(q3)}


def spread(key: str, xs) -> dict:
    """``{key: median, key_q1: first quartile, key_q3: third quartile}`` of ``xs``."""
    q = quartiles(xs)
    return {key: q["median"], f"{key}_q1": q["q1"], f"{key}_q3": q["q3"]}


def halves(n: int) -> tuple[list[int], list[int]]:
    """(selection, report) prompt indices: even ones choose the best K, odd
    ones report it. One prompt: both halves are that prompt (said in the report)."""
    sel = list(range(0, n, 2))
    rep = list(range(1, n, 2))
    return (sel, rep) if rep else (sel, sel)


@dataclass
class Timing:
    """One generation: decode tokens (after the first) and seconds."""

    n: int
    s: float


def speed(timings: list[Timing], idx: list[int]) -> float:
    """Tokens/s over the prompts ``idx`` (total tokens over total time)."""
    n = sum(timings[i].n for i in idx)
    s = sum(timings[i].s for i in idx)
    return n / s if s > 0 else 0.0


def ratios(plain: list[list[Timing]], spec: list[list[Timing]], idx: list[int]) -> list[float]:
    """Per repeat: speculative speed over plain speed of the same repeat, on ``idx``."""
    out = []
    for p, s in zip(plain, spec):
        sp = speed(p, idx)
        out.append(speed(s, idx) / sp if sp > 0 else 0.0)
    return out


def run_bound(tau: float, rows_per_pass, draft_s_per_pass: float, c_at, plain_token_s: float,
              plain_compute_s: float) -> float:
    """The speed bound of a run relative to plain decoding (module docstring).

    ``rows_per_pass``: target rows verified in each pass; ``c_at(n)``: the
    batch-cost curve; ``plain_token_s``: plain decoding's seconds per token,
    ``plain_compute_s``: the part of it inside llama.cpp."""
    rows = list(rows_per_pass)
    if not rows or plain_token_s <= 0 or tau <= 0:
        return 0.0
    t1 = plain_compute_s if plain_compute_s > 0 else plain_token_s
    host = max(0.0, plain_token_s - t1)
    verify = float(np.mean([c_at(n) for n in rows])) * t1
    return tau * plain_token_s / (verify + draft_s_per_pass + host)
