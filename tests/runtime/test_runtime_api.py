"""The runtime as users drive it: drafters behind one interface, sampling that
keeps the target's distribution, draft='auto', and SpeculativeLlama with
llama-cpp-python's completion shapes, streaming, stop strings and chat."""

from __future__ import annotations


import pytest

from gguf_mtp.runtime import (
    Engine,
    RuntimeOptions,
    SamplingParams,
    generate,
    make_drafter,
)
from gguf_mtp.runtime import loop as decode_mod
from gguf_mtp.runtime.api import SpeculativeLlama
from gguf_mtp.runtime.autodraft import AutoDraft, CostModel, measure_cost_model

CODE = "def read_lines(path):\n    with open(path) as f:\n        return f.read().splitlines()\n\n\ndef read_lines("


@pytest.mark.parametrize("drafter,draft", [("ngram", 4), ("ngram", 8), ("mtp", "auto"), ("ngram", "auto"),
                                           ("ngram-tree", 4)])
def test_every_drafter_is_lossless_under_greedy(default_gguf, drafter, draft):
    dr = make_drafter(drafter)
    with Engine(default_gguf("f32"), dr.configure(RuntimeOptions(n_threads=2))) as eng:
        for prompt in (CODE, "class Queue:\n    def __init__(self):\n"):
            plain = generate(eng, prompt, 40, drafter="none")
            spec = generate(eng, prompt, 40, drafter=dr, draft=draft)
            assert spec.tokens == plain.tokens


def test_ngram_tree_verifies_several_branches_in_one_pass(default_gguf):
    from gguf_mtp.runtime import NgramTreeDrafter

    dr = NgramTreeDrafter(branches=4)
    prompt = CODE + "path):\n    with open(path) as f:\n        return f.read().split()\n\n\ndef read_"
    with Engine(default_gguf("f32"), dr.configure(RuntimeOptions(n_threads=2))) as eng:
        plain = generate(eng, prompt, 32, drafter="none")
        tree = generate(eng, prompt, 32, drafter=dr, draft=4)
        sampled = generate(eng, prompt, 16, drafter=dr, draft=4, params=SamplingParams(temperature=0.7, seed=1))
    assert tree.tokens == plain.tokens
    assert tree.stats.tree_nodes > 0       # passes with several branches went through the tree verify
    assert len(sampled.tokens) == 16


QUEUE = ("class Queue:\n    def __init__(self):\n        self.items = []\n\n    def push(self, x):\n"
         "        self.items.append(x)\n\n    def pop(self):\n        return self.items.pop()\n\n\n"
         "class Stack:\n    def __init__(self):\n")


@pytest.mark.parametrize("kw", [dict(temperature=0.8, min_p=0.01, seed=3),
                                dict(temperature=0.8, top_k=40, top_p=0.95, repeat_penalty=1.1, seed=5)])
def test_sampled_tree_decoding_reproduces_plain_sampling(default_gguf, kw):
    """Deterministic draft trees under sampling: the target draws its own token
    at each node (one uniform per emitted token, in order), so with the same
    seed the output is plain sampling token for token.

    (Batched verify logits differ from single-token ones by up to ~1e-4, which moves
    the inverse-CDF boundaries slightly; over the full vocabulary this
    tiny model's flat tail then occasionally gives a neighbouring tail id,
    hence min_p/top_k here. The distribution is exact either way.)"""
    params = SamplingParams(**kw)
    dr = make_drafter("ngram-tree")
    nodes = accepted = 0
    with Engine(default_gguf("f32"), dr.configure(RuntimeOptions(n_threads=2))) as eng:
        for prompt in (CODE, CODE + "path):\n    with open(path) as f:\n        return f.read().split()\n", QUEUE):
            plain = generate(eng, prompt, 48, drafter="none", params=params)
            spec = generate(eng, prompt, 48, drafter=dr, draft=4, params=params)
            assert spec.tokens == plain.tokens, prompt
            nodes += spec.stats.tree_nodes
            accepted += sum(spec.stats.accepted)
    assert nodes > 0 and accepted > 0


def test_ngram_drafts_from_repeated_text(default_gguf):
    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2)) as eng:
        g = generate(eng, CODE, 24, drafter="ngram", draft=4)
    assert sum(g.stats.drafted) > 0 and sum(g.stats.accepted) > 0


def test_sampling_keeps_the_target_distribution(default_gguf):
    """Chi-square: the second generated token (the first one decided by a
    speculative pass), given the first, follows the target's own distribution."""
    from gguf_mtp.testing.sampling_check import second_token_chi2

    r = second_token_chi2(default_gguf("f32"), "import os\nimport ")
    assert r["n"] > 300, f"too few samples with the modal first token ({r['n']})"
    assert r["in_support"] and r["pvalue"] > 1e-3, r
    assert r["accepted"] > 0  # the speculative path (accepted drafts) really ran


def test_auto_draft_chooses_zero_when_verification_is_expensive(default_gguf, monkeypatch):
    expensive = CostModel(c=[float(n) for n in range(1, 10)], t1_s=0.01, draft=1.0)
    chooser = AutoDraft(expensive, k_max=8)
    assert chooser.choose() == 0
    monkeypatch.setattr(decode_mod, "cost_model", lambda eng, n_max: expensive)
    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2, draft_max=8)) as eng:
        plain = generate(eng, CODE, 48, drafter="none")
        auto = generate(eng, CODE, 48, drafter="mtp", draft="auto")
    assert auto.tokens == plain.tokens
    # no drafting except the periodic probe
    assert sum(1 for d in auto.stats.drafted if d) <= 2


def test_auto_draft_drafts_when_it_pays():
    cheap = CostModel(c=[1.0 + 0.05 * n for n in range(9)], t1_s=0.01, draft=0.05)
    chooser = AutoDraft(cheap, k_max=8)
    for _ in range(50):
        chooser.update(4, 4)   # everything accepted
    assert chooser.choose() >= 4
    for _ in range(200):
        chooser.update(1, 0)   # nothing accepted
    assert chooser.choose() == 0


def test_carry_over_keeps_the_estimate_with_a_small_weight():
    cm = CostModel(c=[1.0, 1.1, 1.2], t1_s=0.01, draft=0.0)
    chooser, twin = AutoDraft(cm, k_max=2), AutoDraft(cm, k_max=2)
    for _ in range(100):                # earlier generations: the first draft token always right
        chooser.update(2, 1)
        twin.update(2, 1)
    before = chooser.alphas().copy()
    chooser.carry_over(4.0)
    assert max(chooser.tried) <= 4.0 + 1e-9
    assert chooser.alphas() == pytest.approx(before)
    for _ in range(3):                  # this generation: wrong three times
        chooser.update(2, 0)
        twin.update(2, 0)
    assert chooser.alphas()[0] < 0.6 < 0.85 < twin.alphas()[0]


def test_auto_drafter_lets_go_of_what_cannot_pay(default_gguf, monkeypatch):
    """With verification priced out of reach, auto stops following the MTP head after
    its first tries (no hidden rows, no catch-up passes), answers passes where nothing
    can win without pricing them, and its output is plain decoding's."""
    from gguf_mtp.runtime.drafters import auto as auto_mod

    # c(n) = n^2: even the realized-speed correction (at most 2x) leaves every draft below plain
    expensive = CostModel(c=[float(n * n) for n in range(1, 34)], t1_s=0.01, draft=1.0)
    monkeypatch.setattr(auto_mod, "cost_model", lambda eng, n_max: expensive)
    dr = auto_mod.AutoDrafter()
    with Engine(default_gguf("q8_0"), RuntimeOptions(n_threads=2, draft_max=8)) as eng:
        plain = generate(eng, CODE, 64, drafter="none")
        for _ in range(3):
            g = generate(eng, CODE, 64, drafter=dr)
            assert g.tokens == plain.tokens
    assert sum(1 for c in dr.choices if c[0] != "none") <= 1      # at most a probe
    assert [c for c in dr.choices if c[0] == "mtp"] == []
    assert not dr.needs_hidden and not any(a.active for a in dr.arms if a.drafter.name == "mtp")
    assert dr.n_priced < len(dr.choices) / 2, (len(dr.choices), dr.n_priced)


def test_auto_ngram_slow_start():
    from gguf_mtp.runtime.drafters.auto import NGRAM_START, AutoDrafter

    dr = AutoDrafter()
    dr.k_max_eff, dr.ngram_len = 8, NGRAM_START
    dr._ngram_outcome(2, 2)
    dr._ngram_outcome(4, 4)
    assert dr.ngram_len == min(8, 4 * NGRAM_START)
    dr._ngram_outcome(8, 3)             # partly right: kept
    assert dr.ngram_len == min(8, 4 * NGRAM_START)
    dr._ngram_outcome(8, 0)             # wrong from the first token: back to the start
    assert dr.ngram_len == NGRAM_START


def test_cost_model_is_measured_and_increasing(default_gguf, tmp_path, monkeypatch):
    from gguf_mtp.runtime import autodraft

    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2)) as eng:
        cm = measure_cost_model(eng, n_max=4, repeats=3)
        # the values are timings (benchmarks report them); what holds on any machine: c is
        # relative to the 1-token pass, and 4 tokens (the 151,936-wide output head 4 times,
        # measured 1.8x here) cost clearly more than 1
        assert cm.c[0] == 1.0 and len(cm.c) == 4 and cm.c[3] > 1.05
        assert cm.t1_s > 0 and cm.draft > 0
        assert cm.pass_cost(3) == pytest.approx(cm.c[3] + 3 * cm.draft)
        assert cm.c_at(6) == pytest.approx(cm.c[3] + 2 * (cm.c[3] - cm.c[2]))     # linear past the end
        # cached per file and machine settings: the second call reads, not measures
        monkeypatch.setattr(autodraft, "cache_dir", lambda: tmp_path)
        first = autodraft.cost_model(eng, n_max=4)
        monkeypatch.setattr(autodraft, "measure_cost_model", lambda *a, **k: pytest.fail("measured again"))
        assert autodraft.cost_model(eng, n_max=4) == first


def test_cost_model_past_a_context_deeper_than_one_batch(default_gguf):
    """The bench's --depth measures c(n) after depth + 64 tokens: a context longer
    than n_batch is prefilled in chunks (one batch of 576 tokens used to be refused);
    and c(n) for more rows than the hybrid's recurrent state rolls back (draft_max + 1)
    starts again from the prefix (the bench measures up to 32 rows, what trees verify)."""
    with Engine(default_gguf("q8_0"), RuntimeOptions(n_threads=2, n_batch=64, n_ctx=512, draft_max=4)) as eng:
        cm = measure_cost_model(eng, n_max=12, repeats=1, context=150)
        assert cm.c[0] == 1.0 and len(cm.c) == 12 and all(c > 0 for c in cm.c)


@pytest.fixture(scope="module")
def llm(default_gguf):
    with SpeculativeLlama(str(default_gguf("f32")), n_threads=2, drafter="mtp", draft=3, seed=0) as m:
        yield m


def _plain(llm, prompt, n):
    return llm(prompt, max_tokens=n, temperature=0, drafter="none")["choices"][0]["text"]


def test_completion_shape_and_stats(llm):
    out = llm.create_completion("def add(a, b):\n", max_tokens=12, temperature=0)
    assert out["object"] == "text_completion"
    assert out["choices"][0]["finish_reason"] in ("length", "stop")
    assert out["usage"]["completion_tokens"] <= 12
    assert out["gguf_mtp"]["drafter"] == "mtp"
    assert llm.last_stats.target_passes > 0
    plain = llm("def add(a, b):\n", max_tokens=12, temperature=0, drafter="none")
    assert plain["choices"][0]["text"] == out["choices"][0]["text"]


def test_streaming_concatenates_to_the_full_text(llm):
    full = _plain(llm, "class Point:\n", 24)
    assert llm("class Point:\n", max_tokens=24, temperature=0)["choices"][0]["text"] == full
    chunks = list(llm("class Point:\n", max_tokens=24, temperature=0, stream=True))
    assert all(c["object"] == "text_completion" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] is not None
    assert "".join(c["choices"][0]["text"] for c in chunks) == full


def test_stop_strings(llm):
    full = _plain(llm, "def add(a, b):\n", 32)
    stop = full[5:9]
    assert stop
    for stream in (False, True):
        res = llm("def add(a, b):\n", max_tokens=32, temperature=0, stop=[stop], stream=stream)
        chunks = list(res) if stream else [res]
        text = "".join(c["choices"][0]["text"] for c in chunks)
        assert text == full[: full.find(stop)]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_chat_completion_uses_the_gguf_template(llm):
    res = llm.create_chat_completion([{"role": "user", "content": "Write a function."}], max_tokens=8,
                                     temperature=0)
    assert res["object"] == "chat.completion"
    assert res["choices"][0]["message"]["role"] == "assistant"
    chunks = list(llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4, stream=True))
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"}


def test_seeded_sampling_is_reproducible(llm):
    a = llm("import ", max_tokens=16, temperature=0.9, seed=7)["choices"][0]["text"]
    b = llm("import ", max_tokens=16, temperature=0.9, seed=7)["choices"][0]["text"]
    assert a == b


def test_overhead_benchmark_reports_both_runs(default_gguf):
    """benchmarks/overhead.py (the loop's host share, interleaved repeats) on the default
    model: both runs reported, shares in (0, 1), the speculative run really drafting."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[2] / "benchmarks" / "overhead.py"
    out = subprocess.run([sys.executable, str(script), "--gguf", str(default_gguf("q8_0")), "-n", "24",
                          "--repeats", "2", "--json"], capture_output=True, text=True, check=True, timeout=300)
    res = json.loads(out.stdout)
    for name in ("plain", "spec"):
        med = res["runs"][name]["median"]
        assert 0 < med["overhead_share"] < 1 and med["tokens_per_s"] > 0
    assert res["runs"]["spec"]["median"]["tau"] > 1.0
