"""Vocabulary compression: the MTP head drafts over the N most frequent tokens
of self-distilled data. In llama.cpp (patch 0006) the compressed head's logits
are exactly the full head's logits at those tokens; greedy speculative output
stays equal to plain decoding; the file carries the set; bad requests fail."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.gguf.inspect import read_summary
from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.train.distill import DistillConfig, distill
from gguf_mtp.train.vocab import (
    VocabError,
    compress_vocab,
    read_draft_vocab,
    select_draft_vocab,
)

PROMPTS = ["def fibonacci(n):\n", "class Stack:\n    def __init__(self):\n", "The quick brown fox"]


@pytest.fixture(scope="module")
def data(default_gguf, tmp_path_factory):
    out = tmp_path_factory.mktemp("distill")
    distill(DistillConfig(target=str(default_gguf("f32")), prompts="gguf_mtp/data/prompts", out=str(out),
                          max_tokens=32, max_prompts=16, shard_size=8, n_threads=2, progress=False))
    return out


def test_select_keeps_the_most_frequent_and_the_forced():
    counts = np.array([5, 0, 9, 9, 1, 0, 3])
    assert select_draft_vocab(counts, 3).tolist() == [2, 3, 0]
    assert select_draft_vocab(counts, 3, always=[5]).tolist() == [2, 3, 5]
    with pytest.raises(VocabError, match="between 1 and 7"):
        select_draft_vocab(counts, 0)


def test_compressed_head_logits_are_the_full_heads_at_the_kept_tokens(default_gguf, data, tmp_path):
    src = default_gguf("f32")
    res = compress_vocab(src, data, tmp_path / "c.gguf", 512, progress=False)
    ids = read_draft_vocab(res.path)
    assert len(ids) == 512 == res.size and 0.5 < res.coverage <= 1.0
    assert read_summary(res.path).metadata["draft_vocab_size"] == 512
    toks = [785, 4937, 13876, 38835, 34208, 916, 279, 15678]
    opts = RuntimeOptions(n_ctx=128, n_threads=2, kv_type="f32", flash_attn=False)
    rows = {}
    for name, path in (("full", src), ("compressed", res.path)):
        with Engine(path, opts) as eng:
            n = len(toks)
            eng.target_decode(toks, 0, [True] * n)
            hidden = eng.target_hidden(n)
            shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
            eng.mtp_decode(toks, shifted, 0, [True] * n)
            rows[name] = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
            if name == "compressed":
                assert eng.draft_vocab is not None and (eng.draft_vocab == ids).all()
    full, comp = rows["full"], rows["compressed"]
    np.testing.assert_allclose(comp[:, ids], full[:, ids], rtol=1e-5, atol=1e-5)
    outside = np.setdiff1d(np.arange(full.shape[1]), ids)
    assert np.isneginf(comp[:, outside]).all()


def test_compressed_drafting_is_lossless(default_gguf, data, tmp_path):
    out = tmp_path / "c.gguf"
    r = CliRunner().invoke(main, ["compress-vocab", str(default_gguf("f32")), str(data), str(out), "-N", "2048", "-q"])
    assert r.exit_code == 0, r.output
    assert "draft vocabulary of 2048 tokens" in r.output
    accepted = 0
    with Engine(out, RuntimeOptions(n_threads=2)) as eng:
        for prompt in PROMPTS:
            plain = generate(eng, prompt, 40, drafter="none")
            for k in (1, 3):
                spec = generate(eng, prompt, 40, drafter="mtp", draft=k)
                assert spec.tokens == plain.tokens, (k, prompt)
                accepted += sum(spec.stats.accepted)
    assert accepted > 0
    # sampling with drafts from the compressed vocabulary keeps the target's distribution
    # (the draft distribution is zero outside the kept tokens; rejection sampling corrects it)
    from gguf_mtp.testing.sampling_check import second_token_chi2

    r = second_token_chi2(out, "import os\nimport ")
    assert r["n"] > 300 and r["in_support"] and r["pvalue"] > 1e-3, r
    assert r["accepted"] > 0


def test_refusals(default_gguf, data, factory, tmp_path):
    with pytest.raises(VocabError, match="new file"):
        compress_vocab(default_gguf("f32"), data, default_gguf("f32"), 64, progress=False)
    from gguf_mtp.convert.core import ConvertOptions, convert

    trunk_only = convert(factory.checkpoint(with_mtp=False), tmp_path / "trunk.gguf",
                         ConvertOptions(outtype="f32", mtp=False, progress=False)).path
    with pytest.raises(VocabError, match="no MTP layers"):
        compress_vocab(trunk_only, data, tmp_path / "x.gguf", 64, progress=False)
    with pytest.raises(VocabError, match="between 1 and"):
        compress_vocab(default_gguf("f32"), data, tmp_path / "x.gguf", 10**7, progress=False)
    assert not (tmp_path / "x.gguf").exists()


def test_convert_draft_vocab_from_bpe_rank(factory, tmp_path):
    """`convert --draft-vocab N` (no distilled data): the N lowest-ranked normal
    BPE tokens (+ end-of-generation ids) become the draft vocabulary; drafting
    over them is lossless; the full intermediate file is gone; a non-BPE
    vocabulary is refused without leaving OUT."""
    from gguf_mtp.gguf.inspect import read_array, read_header
    from gguf_mtp.train.vocab import bpe_rank_counts

    out = tmp_path / "cv.gguf"
    r = CliRunner().invoke(main, ["convert", str(factory.checkpoint()), str(out), "--outtype", "f32",
                                  "--draft-vocab", "512", "-q"])
    assert r.exit_code == 0, r.output
    assert "draft vocabulary of 512 tokens" in r.output
    assert not list(tmp_path.glob(".cv.gguf*"))
    ids = read_draft_vocab(out)
    h = read_header(out)
    types = np.asarray(read_array(out, "tokenizer.ggml.token_type", h))
    normal = np.flatnonzero(types == 1)
    eog = {int(h.kv[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                  "tokenizer.ggml.eom_token_id") if k in h.kv}
    rest = [int(i) for i in normal if i not in eog][:512 - len(eog)]
    assert len(ids) == 512 and set(ids.tolist()) == eog | set(rest)
    assert (bpe_rank_counts(out) > 0).sum() == len(normal)
    with Engine(out, RuntimeOptions(n_threads=2)) as eng:
        for prompt in ("def fibonacci(n):\n", "The quick brown fox"):
            plain = generate(eng, prompt, 24, drafter="none").tokens
            assert generate(eng, prompt, 24, drafter="mtp", draft=3).tokens == plain


def test_bpe_rank_counts_refuses_sentencepiece(tmp_path):
    from gguf_mtp.testing.small_gguf import write_small_gguf
    from gguf_mtp.train.vocab import bpe_rank_counts

    spm = write_small_gguf(tmp_path / "spm.gguf", extra_kv={"tokenizer.ggml.model": "llama"})
    assert bpe_rank_counts(spm) is None
