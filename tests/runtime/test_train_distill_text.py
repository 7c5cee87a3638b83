"""gguf-mtp distill-data text: the target reads local text in one pass per
window; the shards hold what it computes there, training learns the target's
winner at each position (not the text's next token), and a run resumes."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.train.corpus import TEXT_MIX, Source
from gguf_mtp.train.distill import load_sequences, read_manifest
from gguf_mtp.train.distill_text import SOURCE, TextDistillConfig, distill_text, plan_windows

DOCS = [
    Source("stdlib", [("a.py", "def add(a, b):\n    return a + b\n\n\nclass Point:\n    x: int\n    y: int\n" * 6),
                      ("b.py", "import os\n\nfor name in os.listdir('.'):\n    print(name)\n" * 5),
                      ("__init__.py", ""), ("stub.py", "pass\n")]),
    Source("man-pages", [("man2/x", "The read() system call reads up to count bytes from the file descriptor "
                                    "fd into the buffer starting at buf.\n" * 8)]),
]


def _cfg(target, out, **kw):
    return TextDistillConfig(**{"target": str(target), "out": str(out), "n_windows": 5, "window": 40,
                                "topk_logits": 8, "shard_size": 2, "hidden_dtype": "f32", "n_threads": 2,
                                "progress": False, **kw})


def test_plan_follows_the_mix_and_the_seed():
    plan = plan_windows(DOCS, {"stdlib": 0.5, "man-pages": 0.5}, 10, seed=1, window=40)
    assert len(plan) == 10 and sum(p.startswith("man2") for p, _ in plan) == 5
    assert {p for p, _ in plan} == {"a.py", "b.py", "man2/x"}          # not the empty and the stub file
    assert plan == plan_windows(DOCS, {"stdlib": 0.5, "man-pages": 0.5}, 10, seed=1, window=40)
    assert plan != plan_windows(DOCS, {"stdlib": 0.5, "man-pages": 0.5}, 10, seed=2, window=40)
    with pytest.raises(ValueError, match="no local text"):
        plan_windows([Source("stdlib")], {"stdlib": 1.0}, 3, seed=0, window=40)


def test_text_windows_hold_the_targets_own_computation(default_gguf, tmp_path):
    from gguf_mtp.runtime import Engine, RuntimeOptions

    target = default_gguf("f32")
    r = distill_text(_cfg(target, tmp_path / "t"), sources=DOCS)
    m = read_manifest(tmp_path / "t")
    assert m["source"] == SOURCE and m["complete"] and r.n_sequences == 5 and len(r.shards) == 3
    plan = plan_windows(DOCS, TEXT_MIX, 5, 0, 40)
    with Engine(target, RuntimeOptions(n_ctx=512, n_threads=2)) as eng:
        bos = eng.tokenize("", add_special=True)
        for s in load_sequences(tmp_path / "t"):
            toks = (bos + eng.tokenize(plan[s["prompt_index"]][1], add_special=False))[:40]
            assert s["tokens"].tolist() == toks and s["n_prompt"] == 0 and len(toks) == 40
            eng.clear()
            eng.target_decode(toks, 0, [True] * len(toks), prefill=True)
            hid = eng.target_hidden(len(toks))
            np.testing.assert_allclose(s["hidden"], hid, rtol=0, atol=1e-5 * float(np.abs(hid).max()))
            logits = np.stack([eng.target_logits(i).copy() for i in range(len(toks))])
            assert np.array_equal(eng.target_logits_rows(0, len(toks)), logits)   # what distill reads
            assert (s["topk_indices"][:, 0] == logits.argmax(-1)).all()
            np.testing.assert_allclose(s["topk_values"], np.sort(logits, -1)[:, ::-1][:, :8], rtol=1e-6, atol=1e-5)


def test_text_distill_resumes_and_refuses_other_settings(default_gguf, tmp_path):
    target = default_gguf("q8_0")
    cfg = _cfg(target, tmp_path / "t", hidden_dtype="f16")
    distill_text(cfg, sources=DOCS)
    d = tmp_path / "t"
    stamp = (d / "shard-00000.safetensors").stat().st_mtime_ns
    (d / "shard-00002.safetensors").unlink()
    again = distill_text(cfg, sources=DOCS)
    assert again.shards == ["shard-00002.safetensors"] and again.skipped_shards == 2 and again.n_sequences == 5
    assert (d / "shard-00000.safetensors").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="different settings"):
        distill_text(_cfg(target, d, hidden_dtype="f16", window=48), sources=DOCS)


def test_training_learns_the_targets_winner_on_text_and_the_token_on_answers(default_gguf, tmp_path):
    """A text window's label at p is the target's winner at p - 1; a generated
    answer's is its next token (the same thing there); the two train together."""
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import FinetuneConfig, WindowDataset, finetune
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR
    from gguf_mtp.train.vocab import token_counts

    target = default_gguf("q8_0")
    distill_text(_cfg(target, tmp_path / "t", hidden_dtype="f16"), sources=DOCS)
    distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(tmp_path / "g"),
                          max_tokens=16, max_prompts=2, n_threads=2, progress=False))
    ds = WindowDataset([tmp_path / "g", tmp_path / "t"], 32, min_len=5)
    texts = [ds[i] for i in range(len(ds)) if ds.text[ds.windows[i][0]]]
    answers = [ds[i] for i in range(len(ds)) if not ds.text[ds.windows[i][0]]]
    assert texts and answers
    for w in texts:
        assert (w["labels"][1:] == w["topk_indices"][:-1, 0]).all()
    assert any((w["labels"][1:] != w["tokens"][1:]).any() for w in texts)     # the text is not the target's
    for w in answers:
        assert (w["labels"] == w["tokens"]).all()
    n_vocab = read_manifest(tmp_path / "t")["n_vocab"]
    counts = token_counts(tmp_path / "t", n_vocab)
    winners = np.concatenate([s["topk_indices"][:, 0] for s in load_sequences(tmp_path / "t")])
    assert (counts == np.bincount(winners, minlength=n_vocab)).all()

    r = CliRunner().invoke(main, ["finetune", str(tmp_path / "g"), str(target), "--data", str(tmp_path / "t"),
                                  "--out", str(tmp_path / "h"), "--steps", "2", "--seq-len", "32",
                                  "--batch-size", "2", "--cpu", "-q"])
    assert r.exit_code == 0, r.output
    res = finetune(FinetuneConfig(data=[str(tmp_path / "g"), str(tmp_path / "t")], target=str(target),
                                  out=str(tmp_path / "h"), steps=3, seq_len=32, batch_size=2, cpu=True,
                                  progress=False))
    assert res.resumed_from == 2 and res.last["step"] == 3 and np.isfinite(res.last["loss"])


def test_cli_reads_this_machines_text(default_gguf, tmp_path):
    target = default_gguf("q8_0")
    out = tmp_path / "t"
    r = CliRunner().invoke(main, ["distill-data", "text", str(target), "--out", str(out), "--windows", "3",
                                  "--window", "32", "-t", "2", "-q"])
    assert r.exit_code == 0, r.output
    assert "3 windows" in r.output
    m = read_manifest(out)
    assert m["source"] == SOURCE and m["n_sequences"] == 3 and m["corpus"]["sources"]
    help_ = CliRunner().invoke(main, ["distill-data", "text", "--help"])
    assert "teacher-forced" in help_.output.lower() or "Teacher-forced" in help_.output
