"""A statistical check that speculative sampling keeps the target's distribution."""

from __future__ import annotations

import collections


def second_token_chi2(path, prompt: str, *, n_seeds: int = 1500, temperature: float = 1.0, top_k: int = 8,
                      drafter: str = "mtp") -> dict:
    """Chi-square of the second generated token (the first one decided by a
    speculative pass), given the modal first token, against the target's own
    distribution there. Returns pvalue, the number of samples, whether every
    sample lies in the support, and the accepted drafts (the accept path ran)."""
    import numpy as np

    from ..runtime import Engine, RuntimeOptions, SamplingParams, generate
    from ..runtime.sampling import chi2_gof, target_distribution

    params = dict(temperature=temperature, top_k=top_k)
    with Engine(path, RuntimeOptions(n_threads=2)) as eng:
        ptoks = eng.tokenize(prompt)
        eng.clear()
        eng.target_decode(ptoks, 0, [False] * (len(ptoks) - 1) + [True])
        p0 = target_distribution(eng.target_logits(len(ptoks) - 1), ptoks, SamplingParams(**params))
        first = int(np.argmax(p0))
        eng.clear()
        ctx = ptoks + [first]
        eng.target_decode(ctx, 0, [False] * (len(ctx) - 1) + [True])
        p1 = target_distribution(eng.target_logits(len(ctx) - 1), ctx, SamplingParams(**params))
        support = np.flatnonzero(p1)
        counts: collections.Counter = collections.Counter()
        accepted = 0
        for seed in range(n_seeds):
            # 3 tokens: the prompt pass decides the first; the first speculative
            # pass drafts and verifies the second
            g = generate(eng, ptoks, 3, drafter=drafter, draft=1, params=SamplingParams(seed=seed, **params))
            if g.tokens[0] == first:
                counts[g.tokens[1]] += 1
                accepted += g.stats.accepted[0] if g.stats.accepted else 0
    stat, dof, pvalue = chi2_gof([counts[t] for t in support], p1[support])
    return {"pvalue": pvalue, "stat": stat, "dof": dof, "n": sum(counts.values()),
            "in_support": set(counts) <= set(support.tolist()), "accepted": accepted, "counts": dict(counts)}
