"""The bench's statistics on synthetic timings: spreads, halves, and a bound
that bounds (no runtime needed)."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_mtp.bench.stats import Timing, halves, quartiles, ratios, run_bound, speed, spread


def test_quartiles_and_spread():
    q = quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert q == {"median": 3.0, "q1": 2.0, "q3": 4.0}
    assert spread("x", [7.0]) == {"x": 7.0, "x_q1": 7.0, "x_q3": 7.0}


def test_halves_split_prompts_for_choosing_and_reporting():
    assert halves(9) == ([0, 2, 4, 6, 8], [1, 3, 5, 7])
    assert halves(1) == ([0], [0])                     # one prompt: said in the report, not hidden


def test_ratios_pair_each_repeat_with_its_own_plain_run():
    plain = [[Timing(10, 1.0), Timing(10, 1.0)], [Timing(10, 2.0), Timing(10, 2.0)]]   # the box slowed down
    spec = [[Timing(10, 0.5), Timing(10, 0.5)], [Timing(10, 1.0), Timing(10, 1.0)]]
    assert ratios(plain, spec, [0, 1]) == [2.0, 2.0]  # drift cancels within a repeat
    assert speed(plain[0], [0]) == 10.0


C = [1.0, 1.5, 1.7, 1.9, 2.2, 2.4, 2.7, 2.9, 3.2]   # a CPU-like batch-cost curve


def _c_at(n):
    return C[n - 1] if n <= len(C) else C[-1] + 0.3 * (n - len(C))


def _simulate(rng, *, k, branches, accept, t1, host_plain, host_spec, draft_s, noise, n_tokens=4000):
    """Decode ``n_tokens`` with a drafter whose position-i draft is accepted with
    probability accept[i] (given the previous ones); a pass verifies 1 + k*branches
    rows, or fewer when a tree is pruned. Returns (measured ratio, bound)."""
    # plain: one row per token
    jitter = lambda: 1.0 + noise * rng.uniform(-1, 1)  # noqa: E731
    t_plain = sum(t1 * jitter() + host_plain for _ in range(n_tokens))
    plain_token_s = t_plain / n_tokens
    produced, t_spec, rows_seen = 0, 0.0, []
    while produced < n_tokens:
        rows = 1 + k * int(rng.integers(1, branches + 1))   # a dynamic tree: 1..branches rows per depth
        acc = 0
        while acc < k and rng.random() < accept[acc]:
            acc += 1
        produced += acc + 1
        rows_seen.append(rows)
        t_spec += _c_at(rows) * t1 * jitter() + draft_s + host_spec
    passes = len(rows_seen)
    measured = (produced / t_spec) / (n_tokens / t_plain)
    bound = run_bound(produced / passes, rows_seen, draft_s, _c_at, plain_token_s, t1)
    return measured, bound, produced / passes, rows_seen


@pytest.mark.parametrize("k,branches", [(1, 1), (3, 1), (3, 4), (6, 2)])
def test_measured_speed_never_beats_the_bound(k, branches):
    rng = np.random.default_rng(k * 10 + branches)
    acc = [0.9, 0.7, 0.6, 0.5, 0.4, 0.3]
    # no noise, spec host work = plain's: the bound is met exactly
    m, b, _, _ = _simulate(rng, k=k, branches=branches, accept=acc, t1=1e-3, host_plain=5e-5, host_spec=5e-5,
                           draft_s=3e-4, noise=0.0)
    assert m == pytest.approx(b, rel=1e-9)
    # more host work per pass than plain, 3% jitter per pass: measured stays under bound + noise
    for host_spec in (5e-5, 2e-4):
        m, b, _, _ = _simulate(rng, k=k, branches=branches, accept=acc, t1=1e-3, host_plain=5e-5,
                               host_spec=host_spec, draft_s=3e-4, noise=0.03)
        assert m <= b * 1.03


def test_old_tree_formula_was_beaten_by_pruned_trees():
    """tau / (c(1 + K*branches) + K*d) priced every node a tree could have had:
    a tree that verifies fewer rows measured above it (EAGLE-2: 0.45x vs 0.10)."""
    rng = np.random.default_rng(0)
    k, branches, d = 3, 8, 0.2
    m, b, tau, rows = _simulate(rng, k=k, branches=branches, accept=[0.8, 0.6, 0.5], t1=1e-3, host_plain=0.0,
                                host_spec=0.0, draft_s=k * d * 1e-3, noise=0.0)
    old = tau / (_c_at(1 + k * branches) + k * d)
    assert m > old * 1.2 and m == pytest.approx(b, rel=1e-9)
    assert np.mean(rows) < 1 + k * branches


def test_best_k_is_chosen_on_one_half_and_reported_on_the_other():
    from gguf_mtp.bench import report
    from gguf_mtp.bench.config import BenchConfig

    def row(k, sel, rep):
        return {"quant": "q8_0", "head_type": "q8_0", "drafter": "mtp", "draft": k, "tokens_per_s": 100 * sel,
                "plain_tokens_per_s": 100.0, "speedup": (sel + rep) / 2, "speedup_q1": 1.0, "speedup_q3": 1.5,
                "speedup_select": sel, "speedup_report": rep, "speedup_report_q1": rep - 0.05,
                "speedup_report_q3": rep + 0.05, "tau": 1.5, "bound": 2.0, "lossless": True}

    res = {"config": BenchConfig().as_dict(), "rows": [row(1, 1.10, 1.30), row(2, 1.25, 1.05)],
           "baselines": {"q8_0": {"plain_tokens_per_s": 100.0, "plain_tokens_per_s_q1": 95.0,
                                  "plain_tokens_per_s_q3": 104.0}}}
    best = report.best_rows(res)
    assert [r["draft"] for r in best] == [2]          # K=1's luckier report half does not pick it
    table = report.headline(res)
    assert "1.05× [1.00–1.10] (K=2, τ 1.50)" in table, table
    assert "| plain decoding, tok/s | 100 [95–104] |" in table
