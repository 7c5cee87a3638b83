"""EAGLE-2 dynamic trees from the MTP head (gguf_mtp.runtime.drafters.eagle_tree): the
batched multi-sequence expansion equals running each branch alone, the MTP
cache is left clean, and generation is lossless under greedy decoding and
sampling."""

from __future__ import annotations

import numpy as np
import pytest

from gguf_mtp.models.default import DEFAULT_PROMPTS
from gguf_mtp.runtime import (
    EagleTreeDrafter,
    Engine,
    RuntimeOptions,
    SamplingParams,
    generate,
    make_drafter,
)
from gguf_mtp.runtime.loop import _prefill
from gguf_mtp.runtime.sampling import topk_indices
from gguf_mtp.runtime.tree import ROOT, verify_tree

PROMPTS = ("def read_lines(path):\n    with open(path) as f:\n", "class Queue:\n    def __init__(self):\n")


def _engine(path, dr, **kw):
    return Engine(path, dr.configure(RuntimeOptions(n_threads=2, **kw)))


def test_registry_and_options():
    dr = make_drafter("eagle")
    assert isinstance(dr, EagleTreeDrafter) and dr.name == "eagle"
    assert (dr.topk, dr.beam, dr.max_nodes, dr.max_branches) == (4, 4, 12, 12)
    opts = dr.configure(RuntimeOptions())
    assert opts.kv_unified and opts.n_seq_max >= max(dr.max_branches + 1, 2 * dr.beam + 1)
    assert EagleTreeDrafter(beam=8, max_nodes=4).configure(RuntimeOptions()).n_seq_max == 17
    with pytest.raises(ValueError, match="topk"):
        EagleTreeDrafter(topk=0)


def test_topk_indices_is_a_stable_descending_sort():
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = 151936 if trial % 4 == 0 else int(rng.integers(1, 3000))
        x = rng.normal(size=n).astype(np.float32)
        if trial % 2:
            x[rng.random(n) < 0.9] = 0.0            # many exact ties, as unused embedding rows give
        if trial % 3 == 0:
            x = np.round(x)
        if trial % 5 == 0:
            x[rng.random(n) < 0.5] = -np.inf
        k = int(rng.integers(1, 10))
        assert topk_indices(x, k).tolist() == np.argsort(-x, kind="stable")[:k].tolist()


@pytest.mark.parametrize("draft", [2, 4])
def test_greedy_eagle_trees_equal_plain_decoding(default_gguf, draft):
    dr = EagleTreeDrafter()
    with _engine(default_gguf("q8_0"), dr) as eng:
        for prompt in PROMPTS:
            plain = generate(eng, prompt, 44, drafter="none")
            spec = generate(eng, prompt, 44, drafter=dr, draft=draft)
            assert spec.tokens == plain.tokens
            assert spec.stats.tree_nodes > 0 and spec.stats.tau > 1.0


def test_sampled_eagle_trees_reproduce_plain_sampling(default_gguf):
    # q4_0: exact mode computes every verified row as one-row decoding does, so
    # even a draw within ~1e-3 of a CDF boundary lands where plain sampling's does
    dr = EagleTreeDrafter()
    with _engine(default_gguf("q4_0"), dr) as eng:
        for seed, prompt in zip((3, 11), PROMPTS):
            params = SamplingParams(temperature=0.8, top_k=20, seed=seed)
            plain = generate(eng, prompt, 40, drafter="none", params=params)
            spec = generate(eng, prompt, 40, drafter=dr, draft=3, params=params)
            assert spec.tokens == plain.tokens
            assert spec.stats.tree_nodes > 0


def _sequential_logprobs(eng, dr, tok, pos, path):
    """Log-softmax of the MTP head after running the root and ``path`` one row
    at a time in sequence 0 (a plain chain), then the cache rolled back."""
    eng.mtp_truncate(pos)
    eng.mtp_decode([tok], dr.pending[None, :], pos, [True])
    feat = eng.mtp_hidden(0)
    for d, t in enumerate(path, start=1):
        eng.mtp_decode([t], feat[None, :], pos + d, [True])
        feat = eng.mtp_hidden(0)
    x = eng.mtp_logits(0).astype(np.float64)
    m = x[np.isfinite(x)].max()
    out = x - (m + np.log(np.exp(x - m).sum()))
    eng.mtp_truncate(pos + 1)
    return out


def test_batched_expansion_equals_each_branch_alone_and_cleans_the_cache(default_gguf):
    dr = EagleTreeDrafter()
    with _engine(default_gguf("f32"), dr, kv_type="f32") as eng:
        prompt = eng.tokenize(DEFAULT_PROMPTS[0])
        eng.clear()
        logits, hidden, _ = _prefill(eng, prompt, True)
        dr.begin(eng, prompt, hidden)
        tok, pos = int(np.argmax(logits)), len(prompt)
        prop = dr.propose(eng, prompt + [tok], tok, pos, 3, SamplingParams(), np.random.default_rng(0))
        c = dr.last
        tree = prop.tree
        assert tree is not None and len(tree) == dr.max_nodes and tree.depth <= 3
        assert [len(e) for e in c.expanded] == [dr.beam, dr.beam]
        assert all(c.parents[i] == ROOT or c.parents[i] in c.kept for i in c.kept)

        # the MTP cache: sequence 0 up to the root row at pos, no other sequence
        L, mem = eng.L, eng.mtp_mem
        assert L.llama_memory_seq_pos_max(mem, 0) == pos
        assert L.llama_memory_seq_pos_min(mem, 0) == 0
        assert all(L.llama_memory_seq_pos_max(mem, s) == -1 for s in range(1, dr.n_seqs))

        # every expanded node's children: log-probs as a lone chain computes them
        parents = [ROOT] + [i for e in c.expanded for i in e]
        for p in parents:
            base = 0.0 if p == ROOT else c.scores[p]
            ref = _sequential_logprobs(eng, dr, tok, pos, [] if p == ROOT else c.path_tokens(p))
            kids = [i for i in range(len(c.tokens)) if c.parents[i] == p]
            assert len(kids) == dr.topk
            assert [c.tokens[i] for i in kids] == np.argsort(-ref, kind="stable")[:dr.topk].tolist()
            np.testing.assert_allclose([c.scores[i] - base for i in kids], ref[[c.tokens[i] for i in kids]],
                                       atol=1e-4)
        assert L.llama_memory_seq_pos_max(mem, 0) == pos

        # a tree verify that accepts nothing is still a drafting pass: no stale catch-up rows
        miss = next(t for t in range(eng.n_vocab) if t not in tree.children())
        res = verify_tree(eng, pos, tree, choose=lambda logits, path: miss)
        assert res.n_accepted == 0
        prop.tokens, prop.rows = res.tokens, res.rows          # what the loop does
        dr.accept(eng, tok, pos, prop, 0, res.hidden)
        assert dr.catch_tokens == [] and L.llama_memory_seq_pos_max(mem, 0) == pos
        dr.propose(eng, prompt + [tok, miss], miss, pos + 1, 3, SamplingParams(), np.random.default_rng(0))
        assert L.llama_memory_seq_pos_max(mem, 0) == pos + 1
        assert all(L.llama_memory_seq_pos_max(mem, s) == -1 for s in range(1, dr.n_seqs))


def test_draft_one_is_the_root_top_k(default_gguf):
    dr = EagleTreeDrafter(topk=3)
    with _engine(default_gguf("q8_0"), dr) as eng:
        plain = generate(eng, PROMPTS[0], 24, drafter="none")
        spec = generate(eng, PROMPTS[0], 24, drafter=dr, draft=1)
        assert spec.tokens == plain.tokens
        assert max(spec.stats.drafted) == 1


def test_refuses_several_mtp_layers_and_unconfigured_engines(factory, default_gguf):
    dr = EagleTreeDrafter()
    with _engine(factory.gguf("f32", mtp_layers=2), dr) as eng:
        assert eng.n_nextn == 2
        with pytest.raises(ValueError, match="one MTP layer"):
            generate(eng, PROMPTS[0], 4, drafter=dr, draft=2)
    with Engine(default_gguf("q8_0"), RuntimeOptions(n_threads=2)) as eng, \
            pytest.raises(ValueError, match="configure"):
        generate(eng, PROMPTS[0], 4, drafter=dr, draft=2)


def test_eagle_trees_accept_more_than_the_mtp_chain(default_gguf):
    # q4_0, a level users run: in exact mode tree and chain both equal plain decoding
    dr = EagleTreeDrafter()
    with _engine(default_gguf("q4_0"), dr) as eng:
        for prompt in DEFAULT_PROMPTS:
            chain = generate(eng, prompt, 48, drafter="mtp", draft=3)
            tree = generate(eng, prompt, 48, drafter=dr, draft=3)
            assert tree.tokens == chain.tokens
            assert tree.stats.tau >= chain.stats.tau
