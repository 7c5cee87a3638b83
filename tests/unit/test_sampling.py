"""gguf_mtp.runtime.sampling: the sampler pipeline against hand-computed
examples, and a statistical proof that the speculative rule is lossless
(the emitted tokens follow the target distribution). Pure numpy, fast."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from gguf_mtp.runtime.sampling import (
    Sampler,
    SamplingParams,
    accept_or_resample,
    chi2_gof,
    chi2_sf,
    sample_from,
    target_distribution,
    verify_chain,
    verify_chain_greedy,
)

TRIALS = 20_000


def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max())
    return e / e.sum()


def dist(logits, history=(), **kw):
    return target_distribution(np.asarray(logits, dtype=np.float32), history, SamplingParams(**kw))


def on(ids, values, V):
    """A length-V vector with ``values`` at ``ids``."""
    out = np.zeros(V)
    out[list(ids)] = values
    return out


# --------------------------------------------------------------------------- params

def test_params_defaults_and_validation():
    p = SamplingParams()
    assert p.greedy and p.top_k == 0 and p.top_p == 1.0 and p.min_p == 0.0
    assert p.repeat_penalty == 1.0 and p.repeat_last_n == 64 and p.seed is None
    assert not SamplingParams(temperature=0.7).greedy
    for bad in (dict(temperature=-1), dict(top_k=-1), dict(top_p=1.5), dict(min_p=-0.1),
                dict(repeat_penalty=0), dict(repeat_last_n=-2)):
        with pytest.raises(ValueError):
            SamplingParams(**bad)


# --------------------------------------------------------------------------- filters

def test_temperature_one_is_plain_softmax():
    logits = [2.0, 1.0, 0.0, -1.0]
    np.testing.assert_allclose(dist(logits, temperature=1.0), softmax(logits), rtol=1e-6)


@pytest.mark.parametrize("T", [0.5, 2.0])
def test_temperature_scales_logits(T):
    logits = [2.0, 1.0, 0.0]
    np.testing.assert_allclose(dist(logits, temperature=T), softmax(np.array(logits) / T), rtol=1e-6)


def test_top_k_keeps_the_k_largest_ties_to_lower_id():
    logits = [1.0, 3.0, 2.0, 0.5, 3.0]
    np.testing.assert_allclose(dist(logits, temperature=1, top_k=2), [0, .5, 0, 0, .5])
    np.testing.assert_allclose(dist(logits, temperature=1, top_k=1), [0, 1, 0, 0, 0])
    e3, e2 = math.exp(3), math.exp(2)
    np.testing.assert_allclose(dist(logits, temperature=1, top_k=3),
                               on([1, 2, 4], [e3, e2, e3], 5) / (2 * e3 + e2), rtol=1e-6)
    # top_k >= V (and 0) is off
    np.testing.assert_allclose(dist(logits, temperature=1, top_k=5), softmax(logits), rtol=1e-6)
    np.testing.assert_allclose(dist(logits, temperature=1, top_k=0), softmax(logits), rtol=1e-6)


# probabilities 0.5 / 0.3 / 0.15 / 0.05, scrambled over the ids
P4 = np.array([0.15, 0.5, 0.05, 0.3])
L4 = np.log(P4)


@pytest.mark.parametrize("top_p, kept", [
    (0.0, [1]),            # at least one token
    (0.49, [1]),
    (0.51, [1, 3]),
    (0.79, [1, 3]),        # cumulative 0.8 >= 0.79: the smallest prefix
    (0.81, [1, 3, 0]),
    (0.96, [1, 3, 0, 2]),
    (1.0, [1, 3, 0, 2]),   # off
])
def test_top_p_boundaries(top_p, kept):
    got = dist(L4, temperature=1, top_p=top_p)
    want = on(kept, P4[kept], 4)
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-6)


@pytest.mark.parametrize("min_p, kept", [
    (0.0, [1, 3, 0, 2]),
    (0.09, [1, 3, 0, 2]),  # 0.05 / 0.5 = 0.1
    (0.11, [1, 3, 0]),
    (0.29, [1, 3, 0]),     # 0.15 / 0.5 = 0.3
    (0.31, [1, 3]),
    (0.59, [1, 3]),        # 0.3 / 0.5 = 0.6
    (0.61, [1]),
    (1.0, [1]),
])
def test_min_p_relative_to_the_top_probability(min_p, kept):
    got = dist(L4, temperature=1, min_p=min_p)
    want = on(kept, P4[kept], 4)
    np.testing.assert_allclose(got, want / want.sum(), rtol=1e-6)


def test_filter_order_top_k_then_top_p_then_temperature():
    p = np.array([0.4, 0.3, 0.2, 0.1])
    # top-p alone: 0.4 < 0.5 <= 0.7 keeps two tokens ...
    assert np.count_nonzero(dist(np.log(p), temperature=1, top_p=0.5)) == 2
    # ... but after top-k=2 the renormalised 4/7 already reaches 0.5: one token
    np.testing.assert_allclose(dist(np.log(p), temperature=1, top_k=2, top_p=0.5), [1, 0, 0, 0])
    # top-p uses temperature-1 probabilities: the sharp temperature does not
    # shrink the nucleus {0, 1}, it only reshapes the mass inside it
    got = dist(np.log(p), temperature=0.1, top_p=0.7)
    np.testing.assert_allclose(got, on([0, 1], softmax(np.log(p[:2]) / 0.1), 4), rtol=1e-6)
    # min-p on top of it, relative to p_max (0.2 / 0.4 = 0.5)
    assert np.count_nonzero(dist(np.log(p), temperature=1, top_p=0.95, min_p=0.49)) == 3
    assert np.count_nonzero(dist(np.log(p), temperature=1, top_p=0.95, min_p=0.51)) == 2


def test_repeat_penalty_divides_positive_and_multiplies_negative_logits():
    logits = np.array([2.0, -1.0, 0.5, 0.0, 3.0])
    history = [2, 0, 1, 3, 0]                  # 0 appears twice: penalised once
    want = softmax([1.0, -2.0, 0.25, 0.0, 3.0])
    np.testing.assert_allclose(dist(logits, history, temperature=1, repeat_penalty=2.0), want, rtol=1e-6)
    # the sign handling decides the argmax:
    assert np.argmax(dist([2.0, 1.9], [0], repeat_penalty=1.5)) == 1      # 2/1.5 < 1.9
    assert np.argmax(dist([-1.0, -1.2], [0], repeat_penalty=1.5)) == 1    # -1*1.5 < -1.2
    assert np.argmax(dist([-1.0, -1.2], [0], repeat_penalty=1.0)) == 0    # off


def test_repeat_penalty_window():
    logits = [1.0, 1.0, 1.0, 1.0]
    hist = [0, 1, 2]
    kw = dict(temperature=1, repeat_penalty=2.0)
    np.testing.assert_allclose(dist(logits, hist, repeat_last_n=2, **kw),
                               softmax([1.0, 0.5, 0.5, 1.0]), rtol=1e-6)
    np.testing.assert_allclose(dist(logits, hist, repeat_last_n=0, **kw), softmax(logits), rtol=1e-6)
    np.testing.assert_allclose(dist(logits, hist, repeat_last_n=-1, **kw),
                               softmax([0.5, 0.5, 0.5, 1.0]), rtol=1e-6)
    with pytest.raises(ValueError):
        dist(logits, [9], **kw)


def test_greedy_is_one_hot_argmax():
    logits = [0.1, 2.0, -3.0, 2.0]
    assert SamplingParams().greedy
    np.testing.assert_array_equal(dist(logits), [0, 1, 0, 0])          # tie -> lower id
    # the truncation filters cannot change the greedy choice
    np.testing.assert_array_equal(dist(logits, top_k=1, top_p=0.1, min_p=0.9), [0, 1, 0, 0])
    s = Sampler(SamplingParams(seed=0))
    state = s.rng.bit_generator.state
    assert s.greedy(np.array(logits)) == 1
    assert s.next_token(np.array(logits), [1]) == 1
    assert s.next_token(np.array(logits), [1, 3]) == 1                  # penalty off by default
    s2 = Sampler(SamplingParams(repeat_penalty=2.0))
    assert s2.next_token(np.array(logits), [1]) == 3                    # 2.0 -> 1.0 < 2.0
    assert s.rng.bit_generator.state == state                           # no randomness consumed


def test_output_is_a_float64_distribution_and_deterministic():
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal(1000) * 4).astype(np.float32)
    params = SamplingParams(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1)
    a = target_distribution(logits, [1, 2, 3], params)
    b = target_distribution(logits.copy(), [1, 2, 3], params)
    assert a.dtype == np.float64 and a.shape == (1000,)
    np.testing.assert_array_equal(a, b)
    assert abs(a.sum() - 1.0) < 1e-12 and a.min() >= 0
    # huge logits do not overflow
    big = np.array([1e30, 1e30 - 1e24, -1e30], dtype=np.float32)
    assert np.isfinite(target_distribution(big, [], SamplingParams(temperature=1))).all()


def reference_distribution(logits, history, prm: SamplingParams):
    """Straightforward full-sort implementation of the documented pipeline."""
    x = np.array(logits, dtype=np.float64)
    if prm.repeat_penalty != 1.0 and prm.repeat_last_n != 0:
        recent = history if prm.repeat_last_n == -1 else history[-prm.repeat_last_n:]
        for t in set(recent):
            x[t] = x[t] / prm.repeat_penalty if x[t] > 0 else x[t] * prm.repeat_penalty
    order = np.argsort(-x, kind="stable")
    if prm.top_k > 0:
        order = order[:prm.top_k]
    p = softmax(x[order])
    cut = next(i for i, c in enumerate(np.cumsum(p)) if c >= prm.top_p or i == len(p) - 1)
    order = order[:cut + 1]
    p = softmax(x[order])
    order = order[p >= prm.min_p * p.max()]
    out = np.zeros_like(x)
    out[order] = softmax(x[order] / prm.temperature)
    return out


@pytest.mark.parametrize("kw", [
    dict(temperature=0.8, top_k=40, top_p=0.95, min_p=0.05, repeat_penalty=1.1),
    dict(temperature=1.0, top_p=0.9),                          # nucleus over the full vocabulary
    dict(temperature=0.7, top_p=0.999, repeat_penalty=1.3),    # a nucleus of many thousands
    dict(temperature=1.0, min_p=0.01),
    dict(temperature=1.2, top_k=1000),
])
def test_large_vocab_matches_full_sort_reference(kw):
    V = 151936
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal(V) * 2.5).astype(np.float32)
    logits[rng.integers(0, V, 50)] = logits.max()            # ties at the top
    history = list(rng.integers(0, V, 200))
    prm = SamplingParams(**kw)
    t0 = time.perf_counter()
    got = target_distribution(logits, history, prm)
    elapsed = time.perf_counter() - t0
    want = reference_distribution(logits, history, prm)
    np.testing.assert_array_equal(got > 0, want > 0)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-15)
    assert elapsed < 2.0, f"target_distribution took {elapsed:.3f}s at V={V}"


# --------------------------------------------------------------------------- sampler

def test_seeded_sampler_is_reproducible():
    probs = softmax(np.arange(10.0) / 3)
    s1, s2 = Sampler(SamplingParams(temperature=1, seed=42)), Sampler(SamplingParams(temperature=1, seed=42))
    a = [s1.sample(probs) for _ in range(200)]
    assert a == [s2.sample(probs) for _ in range(200)]
    s3 = Sampler(SamplingParams(temperature=1, seed=43))
    assert a != [s3.sample(probs) for _ in range(200)]
    logits = np.log(probs)
    s4, s5 = Sampler(SamplingParams(temperature=0.9, top_k=5, seed=1)), Sampler(SamplingParams(temperature=0.9, top_k=5, seed=1))
    assert [s4.next_token(logits) for _ in range(50)] == [s5.next_token(logits) for _ in range(50)]


def test_sample_from_never_returns_zero_probability_ids():
    rng = np.random.default_rng(0)
    probs = np.array([0, 0.5, 0, 0, 0.5, 0])
    assert set(sample_from(probs, rng) for _ in range(500)) == {1, 4}
    assert sample_from(np.array([0, 0, 3.0]), rng) == 2                 # unnormalised is fine
    with pytest.raises(ValueError):
        sample_from(np.zeros(3), rng)


def test_sampler_matches_its_distribution():
    probs = np.array([0.05, 0.4, 0.0, 0.25, 0.3])
    s = Sampler(SamplingParams(temperature=1, seed=3))
    counts = np.bincount([s.sample(probs) for _ in range(TRIALS)], minlength=5)
    stat, dof, pval = chi2_gof(counts, probs)
    assert pval > 1e-3, (counts, stat, dof)


# --------------------------------------------------------------------------- chi-square

@pytest.mark.parametrize("x, dof, want", [
    (3.841, 1, 0.05), (6.635, 1, 0.01), (5.991, 2, 0.05), (18.307, 10, 0.05),
    (23.209, 10, 0.01), (124.342, 100, 0.05), (0.0, 4, 1.0),
])
def test_chi2_sf_table_values(x, dof, want):
    assert chi2_sf(x, dof) == pytest.approx(want, rel=2e-3, abs=1e-12)


def test_chi2_sf_closed_forms():
    for x in [1e-6, 0.01, 0.3, 1.0, 2.5, 7.0, 20.0, 80.0, 300.0]:
        assert chi2_sf(x, 2) == pytest.approx(math.exp(-x / 2), rel=1e-10)
        assert chi2_sf(x, 1) == pytest.approx(math.erfc(math.sqrt(x / 2)), rel=1e-9)
        three = math.erfc(math.sqrt(x / 2)) + math.sqrt(2 * x / math.pi) * math.exp(-x / 2)
        assert chi2_sf(x, 3) == pytest.approx(three, rel=1e-9)
    xs = np.linspace(0.1, 60, 50)
    assert all(a > b for a, b in zip([chi2_sf(x, 7) for x in xs], [chi2_sf(x, 7) for x in xs[1:]]))


def test_chi2_gof():
    probs = [0.1, 0.2, 0.3, 0.4]
    stat, dof, pval = chi2_gof([100, 200, 300, 400], probs)
    assert stat == 0 and dof == 3 and pval == pytest.approx(1.0)
    assert chi2_gof([150, 150, 300, 400], probs)[2] < 1e-3
    assert chi2_gof([1, 0, 0], [0.0, 0.5, 0.5])[2] == 0.0              # impossible category observed
    stat, dof, _ = chi2_gof([1000, 1, 0, 2], [0.997, 0.001, 0.001, 0.001])
    assert dof == 1                                                     # small cells pooled


# --------------------------------------------------------------------------- speculative rule

def rule_counts(p, q, seed, trials=TRIALS):
    """Emitted-token counts and the acceptance count of the rule with x ~ q."""
    rng = np.random.default_rng(seed)
    counts, accepted = np.zeros(len(p), dtype=np.int64), 0
    for _ in range(trials):
        x = sample_from(q, rng)
        ok, tok = accept_or_resample(p, q, x, rng)
        counts[tok] += 1
        accepted += ok
    return counts, accepted


def _cases():
    rng = np.random.default_rng(2024)
    dense_p, dense_q = rng.dirichlet(np.ones(8)), rng.dirichlet(np.ones(8))
    sparse_p = np.r_[np.zeros(3), rng.dirichlet(np.ones(5))]             # disjoint-ish supports
    sparse_q = np.r_[rng.dirichlet(np.ones(5)), np.zeros(3)]
    peaked_q = rng.dirichlet(np.full(8, 0.3))
    onehot = np.eye(8)[5]
    return {
        "dense": (dense_p, dense_q),
        "sparse-supports": (sparse_p, sparse_q),
        "peaked-draft": (dense_p, peaked_q),
        "p-equals-q": (dense_p, dense_p.copy()),
        "greedy-target": (onehot, dense_q),
        "greedy-draft": (dense_p, onehot),
        "float32": (dense_p.astype(np.float32), dense_q.astype(np.float32)),
    }


CASES = _cases()


@pytest.mark.parametrize("name", list(CASES))
def test_rule_output_is_distributed_as_p(name):
    p, q = CASES[name]
    counts, accepted = rule_counts(p, q, seed=11)
    stat, dof, pval = chi2_gof(counts, p)
    assert pval > 1e-3, (name, counts, stat, dof, pval)
    # the acceptance rate is sum(min(p, q)) (binomial, 5 sigma)
    p64, q64 = np.asarray(p, np.float64), np.asarray(q, np.float64)
    alpha = np.minimum(p64 / p64.sum(), q64 / q64.sum()).sum()
    sigma = math.sqrt(max(alpha * (1 - alpha), 1e-12) / TRIALS)
    assert abs(accepted / TRIALS - alpha) < 5 * sigma + 1e-9, (accepted / TRIALS, alpha)


def test_chi_square_check_has_power():
    """Control: emitting the draft unverified (distributed as q) is caught."""
    p, q = CASES["dense"]
    rng = np.random.default_rng(11)
    counts = np.bincount([sample_from(q, rng) for _ in range(TRIALS)], minlength=8)
    assert chi2_gof(counts, p)[2] < 1e-6


def test_rule_edge_cases():
    rng = np.random.default_rng(0)
    p = np.array([0.0, 1.0, 0.0])
    assert accept_or_resample(p, p, 1, rng) == (True, 1)
    assert accept_or_resample(p, np.array([0.5, 0.5, 0.0]), 0, rng) == (False, 1)
    with pytest.raises(ValueError):                  # x cannot have come from q
        accept_or_resample(p, np.array([1.0, 0, 0]), 2, rng)


# --------------------------------------------------------------------------- chains

def test_verify_chain_greedy():
    assert verify_chain_greedy([5, 6, 7, 8], [5, 6, 7]) == (3, 8)
    assert verify_chain_greedy([5, 6, 7, 8], [5, 9, 7]) == (1, 6)
    assert verify_chain_greedy([5, 6, 7, 8], [4, 6, 7]) == (0, 5)
    assert verify_chain_greedy([5], []) == (0, 5)
    with pytest.raises(ValueError):
        verify_chain_greedy([5, 6], [5, 6])


def test_verify_chain_one_hot_targets_equal_greedy():
    rng = np.random.default_rng(0)
    eye = np.eye(6)
    q = [np.full(6, 1 / 6)] * 3
    for argmax, drafts in [([1, 2, 3, 4], [1, 2, 3]), ([1, 2, 3, 4], [1, 5, 3]), ([0, 2, 3, 4], [1, 2, 3])]:
        got = verify_chain([eye[t] for t in argmax], q, drafts, rng)
        assert got == verify_chain_greedy(argmax, drafts)
    with pytest.raises(ValueError):
        verify_chain([eye[0]], q, [1, 2], rng)


@pytest.fixture(scope="module")
def chain_model():
    """Random V=8 target/draft models whose distributions depend on the prefix."""
    rng = np.random.default_rng(99)
    V = 8
    return dict(
        V=V,
        p0=rng.dirichlet(np.ones(V)), p1=rng.dirichlet(np.ones(V), size=V), p2=rng.dirichlet(np.ones(V), size=(V, V)),
        q0=rng.dirichlet(np.ones(V)), q1=rng.dirichlet(np.full(V, 0.5), size=V),
    )


def run_chain(m, K, seed, trials=TRIALS):
    """Draft K tokens from q, verify against p; returns rows (first, second,
    n_accepted). When the chain emits only one token, the second comes from
    the next (plain) step: a draw from the target after the first."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((trials, 3), dtype=np.int64)
    for i in range(trials):
        x0 = sample_from(m["q0"], rng)
        drafts, qs, ps = [x0], [m["q0"]], [m["p0"], m["p1"][x0]]
        if K == 2:
            x1 = sample_from(m["q1"][x0], rng)
            drafts.append(x1)
            qs.append(m["q1"][x0])
            ps.append(m["p2"][x0, x1])
        n, nxt = verify_chain(ps, qs, drafts, rng)
        out = drafts[:n] + [nxt]
        if len(out) < 2:
            out.append(sample_from(m["p1"][out[0]], rng))
        rows[i] = out[0], out[1], n
    return rows


@pytest.fixture(scope="module")
def chain2(chain_model):
    return run_chain(chain_model, K=2, seed=5)


def test_chain_first_token_marginal_is_p0(chain_model, chain2):
    counts = np.bincount(chain2[:, 0], minlength=chain_model["V"])
    assert chi2_gof(counts, chain_model["p0"])[2] > 1e-3


def test_chain_second_token_given_first_accepted(chain_model, chain2):
    """Given the first draft was accepted and equals t, the second emitted
    token (accepted draft, resample, or bonus) follows p1[t]: chi-square
    statistics summed over t."""
    V, acc = chain_model["V"], chain2[chain2[:, 2] >= 1]
    assert len(acc) > TRIALS // 4
    stat = dof = 0
    for t in range(V):
        sec = acc[acc[:, 0] == t, 1]
        if len(sec) >= 50:
            s, d, _ = chi2_gof(np.bincount(sec, minlength=V), chain_model["p1"][t])
            stat, dof = stat + s, dof + d
    assert dof >= 5 * (V - 1)
    assert chi2_sf(stat, dof) > 1e-3


@pytest.mark.parametrize("K", [1, 2])
def test_chain_joint_of_first_two_tokens(chain_model, chain2, K):
    """Joint of the first two emitted tokens is p0(a) * p1[a](b); K=1 covers
    the bonus token drawn from ps[K] after a full acceptance."""
    rows = chain2 if K == 2 else run_chain(chain_model, K=1, seed=6)
    V = chain_model["V"]
    counts = np.bincount(rows[:, 0] * V + rows[:, 1], minlength=V * V)
    joint = (chain_model["p0"][:, None] * chain_model["p1"]).ravel()
    assert chi2_gof(counts, joint)[2] > 1e-3
    assert set(np.unique(rows[:, 2])) == set(range(K + 1))
