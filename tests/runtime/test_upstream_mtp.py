"""Upstream llama.cpp draft-mtp baseline (``gguf_mtp.bench.upstream_mtp``) end
to end: the tool's greedy output equals plain decoding. The tool is built (and
cached) by the ``stock_tool`` fixture; tools/test.sh builds it up front."""

from __future__ import annotations

import pytest

from gguf_mtp.bench import upstream_mtp as um

PROMPTS = ("def fibonacci(n):", "The history of the printing press")
N_TOKENS = 24


@pytest.fixture(scope="module")
def plain_texts(default_gguf):
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    path = default_gguf("q8_0")
    with Engine(path, RuntimeOptions(n_ctx=1024, n_threads=2)) as eng:
        return path, {p: generate(eng, p, N_TOKENS, drafter="none").text for p in PROMPTS}


@pytest.mark.parametrize("k", [1, 2, 3])
def test_upstream_draft_mtp_matches_plain_greedy(plain_texts, stock_tool, k):
    path, ref = plain_texts
    tool = stock_tool
    for p in PROMPTS:
        r = um.run_draft_mtp(tool, path, p, N_TOKENS, k, threads=2)
        assert r.text == ref[p], (p, k, r.stderr_tail)
        assert r.n_predict >= N_TOKENS and r.full_text.startswith(r.text)
        assert r.decode_tokens_per_s > 0 and r.encode_tokens_per_s > 0
        assert 0 <= r.n_accept <= r.n_drafted <= k * r.n_verify
        # every pass but the last ones drafts the full K (p-min is 0)
        assert r.tau is not None and 1.0 <= r.tau <= k + 1
        assert len(r.acceptance_per_position) <= k
        assert r.n_predict == r.n_verify + r.n_accept  # one target token per pass plus the accepted drafts
