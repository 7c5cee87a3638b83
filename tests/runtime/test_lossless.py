"""The lossless invariant: greedy speculative decoding with the native MTP head
produces exactly the tokens of plain greedy decoding, for every draft length,
at f32 and q8_0, with a head that accepts a real share of its drafts (so both
the accept and the reject/rollback paths run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_mtp.runtime import Engine, RuntimeOptions, generate

PROMPTS = [
    "def fibonacci(n):\n",
    "import os\nimport sys\n\n\ndef main(argv):\n",
    "class Stack:\n    def __init__(self):\n",
    "    for i in range(len(items)):\n        if ",
    "The quick brown fox",
    '"""Return the number of lines in a file."""\n',
]
DRAFTS = [1, 2, 3, 5]


def _check(path, prompts, drafts, n=48, **opts):
    accepted = rejected = 0
    with Engine(path, RuntimeOptions(n_threads=2, **opts)) as eng:
        for prompt in prompts:
            plain = generate(eng, prompt, n, drafter="none")
            for k in drafts:
                spec = generate(eng, prompt, n, drafter="mtp", draft=k)
                assert spec.tokens == plain.tokens, f"draft={k} prompt={prompt!r}"
                assert spec.text == plain.text
                st = spec.stats
                assert st.n_generated == len(spec.tokens)
                assert st.tau == pytest.approx((st.n_generated - 1) / st.target_passes)
                accepted += sum(st.accepted)
                rejected += sum(d - a for d, a in zip(st.drafted, st.accepted))
    return accepted, rejected


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_default_model_greedy_speculative_equals_plain(default_gguf, outtype):
    accepted, rejected = _check(default_gguf(outtype), PROMPTS, DRAFTS)
    # a head that really drafts: both paths exercised, and a real share accepted
    assert accepted > 0 and rejected > 0
    assert accepted / (accepted + rejected) > 0.2


def test_random_head_hybrid_rolls_back_recurrent_state(factory):
    # every draft is rejected: each pass rolls back the Gated DeltaNet state
    accepted, rejected = _check(factory.gguf("f32"), PROMPTS[:3], [1, 3])
    assert rejected > 0


def test_prompt_longer_than_a_batch(default_gguf):
    prompt = "def f(x):\n    return x + 1\n\n" * 12   # > 64 tokens: chunked prefill + MTP catch-up
    _check(default_gguf("f32"), [prompt], [2, 3], n=32, n_batch=64)


def test_eos_and_length_limits(default_gguf):
    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2)) as eng:
        for n in (1, 2, 7):
            plain = generate(eng, PROMPTS[0], n, drafter="none")
            spec = generate(eng, PROMPTS[0], n, drafter="mtp", draft=3)
            assert len(plain.tokens) == len(spec.tokens) <= n
            assert plain.tokens == spec.tokens


def test_unknown_drafter_and_bad_draft(default_gguf):
    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2, draft_max=4)) as eng:
        with pytest.raises(ValueError, match="unknown drafter"):
            generate(eng, "x", 4, drafter="lookahead")
        with pytest.raises(ValueError, match="draft must be .auto. or in 0..4"):
            generate(eng, "x", 4, drafter="mtp", draft=9)


@pytest.mark.parametrize("model", ["attention", "hybrid"])
def test_plain_and_mtp_taking_turns_on_a_shared_prefix(smollm2_gguf, default_gguf, tmp_path, model):
    """``reuse=True`` (the bench's --depth, a chat): a plain call passes on the hidden
    rows of the prefix it reused, so the MTP call after it reuses that prefix too;
    every output is the fresh plain output."""
    if model == "attention":     # SmolLM2 Q4_1 with the shipped retrofit head, as the bench's depth sweep runs it
        from gguf_mtp.convert.graft import graft

        heads = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"
        path = graft(smollm2_gguf, heads, tmp_path / "smollm2-mtp.gguf", progress=False).path
    else:
        path = default_gguf("q8_0")
    prefix = "def f(x):\n    return x + 1\n\n" * 24
    prompts = [prefix + "class A:\n", prefix + "import os\n", prefix + "import os\nimport re\n"]
    with Engine(path, RuntimeOptions(n_threads=2, n_ctx=1024)) as eng:
        fresh = [generate(eng, p, 24, drafter="none").tokens for p in prompts]
        reused = []
        for i, p in enumerate(prompts):
            plain = generate(eng, p, 24, drafter="none", reuse=True)
            spec = generate(eng, p, 24, drafter="mtp", draft=2, reuse=True)
            assert plain.tokens == spec.tokens == fresh[i], f"prompt {i}"
            reused.append((plain.stats.n_reused, spec.stats.n_reused))
    # the first MTP call has no hidden rows to reuse (the plain call before it computed
    # none); from then on every call reuses the shared prefix's whole chunks (the hybrid
    # model from its state snapshot at the prompts' last chunk boundary, inside the prefix)
    assert reused[0] == (0, 0) and all(n >= 128 for pair in reused[1:] for n in pair), reused
