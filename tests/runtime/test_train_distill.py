"""gguf-mtp distill-data: the target GGUF answers prompts itself; the shards
hold what the target computes (tokens, post-norm hidden rows, top-k logits),
and an interrupted run resumes without redoing finished shards."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.train.distill import DistillConfig, distill, load_sequences, read_manifest
from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts


def test_load_prompts(tmp_path):
    (tmp_path / "a.jsonl").write_text(json.dumps("def f(x):\n    ") + "\n" + json.dumps({"prompt": "x = 1"}) + "\n")
    (tmp_path / "b.txt").write_text("one line\n\nanother line\n")
    assert load_prompts(tmp_path) == ["def f(x):\n    ", "x = 1", "one line", "another line"]
    shipped = load_prompts(DEFAULT_PROMPTS_DIR)
    assert len(shipped) >= 400 and all(isinstance(p, str) and p for p in shipped)
    (tmp_path / "bad.jsonl").write_text("3\n")
    with pytest.raises(ValueError):
        load_prompts(tmp_path / "bad.jsonl")


def test_distill_records_the_targets_own_computation(default_gguf, tmp_path):
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    target = default_gguf("f32")
    out = tmp_path / "data"
    r = CliRunner().invoke(main, ["distill-data", str(target), "--out", str(out), "--max-prompts", "3",
                                  "--shard-size", "2", "-n", "12", "-k", "8", "--hidden-dtype", "f32",
                                  "-t", "2", "-q"])
    assert r.exit_code == 0, r.output
    m = read_manifest(out)
    assert m["complete"] and [s["file"] for s in m["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]
    seqs = list(load_sequences(out))
    assert [s["prompt_index"] for s in seqs] == [0, 1, 2] and m["n_sequences"] == 3
    prompts = load_prompts(DEFAULT_PROMPTS_DIR)
    with Engine(target, RuntimeOptions(n_ctx=512, n_threads=2)) as eng:
        for s in seqs:
            ptoks = eng.tokenize(prompts[s["prompt_index"]])
            g = generate(eng, ptoks, 12, drafter="none", draft=0)
            assert s["n_prompt"] == len(ptoks)
            assert s["tokens"].tolist() == ptoks + g.tokens          # greedy response of the target itself
            toks = s["tokens"].tolist()
            eng.clear()
            eng.target_decode(toks, 0, [True] * len(toks))
            hid = eng.target_hidden(len(toks))
            np.testing.assert_allclose(s["hidden"], hid, rtol=0, atol=1e-5 * float(np.abs(hid).max()))
            logits = np.stack([eng.target_logits(i).copy() for i in range(len(toks))])
            top = np.sort(logits, axis=-1)[:, ::-1][:, :8]
            np.testing.assert_allclose(s["topk_values"], top, rtol=1e-6, atol=1e-5)
            assert (np.take_along_axis(logits, s["topk_indices"].astype(np.int64), -1) == s["topk_values"]).all()
            # greedy: the target's best token at p is the recorded token p + 1 in the response
            n = s["n_prompt"]
            assert (s["topk_indices"][n - 1:-1, 0] == s["tokens"][n:]).all()


def test_distill_resumes_after_an_interrupt(default_gguf, tmp_path):
    target = default_gguf("q8_0")
    cfg = DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(tmp_path / "d"),
                        max_tokens=8, max_prompts=5, shard_size=2, n_threads=2, progress=False)
    first = distill(cfg)
    assert first.shards == ["shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    d = tmp_path / "d"
    before = {p.name: p.read_bytes() for p in d.glob("shard-*")}
    stamp = (d / "shard-00000.safetensors").stat().st_mtime_ns
    (d / "shard-00002.safetensors").unlink()             # interrupted before the last shard was written
    again = distill(cfg)
    assert again.shards == ["shard-00002.safetensors"] and again.skipped_shards == 2
    assert (d / "shard-00000.safetensors").stat().st_mtime_ns == stamp
    assert {p.name: p.read_bytes() for p in d.glob("shard-*")} == before
    # more prompts: the short last shard is redone, a new one added
    more = distill(DistillConfig(**{**cfg.__dict__, "max_prompts": 6}))
    assert more.shards == ["shard-00002.safetensors"] and more.n_sequences == 6
    with pytest.raises(ValueError, match="different settings"):
        distill(DistillConfig(**{**cfg.__dict__, "max_tokens": 9}))
    # another prompt file or another context size must not extend this data
    other = tmp_path / "other.txt"
    other.write_text("def f(x):\nclass A:\nimport os\nwhile True:\nfor i in x:\n")
    with pytest.raises(ValueError, match="prompts_sha256"):
        distill(DistillConfig(**{**cfg.__dict__, "prompts": str(other)}))
    with pytest.raises(ValueError, match="n_ctx: 2048 then, 1024 now"):
        distill(DistillConfig(**{**cfg.__dict__, "n_ctx": 1024}))


def test_distill_refuses_a_target_without_mtp_before_writing(smollm2_gguf, tmp_path):
    out = tmp_path / "d"
    r = CliRunner().invoke(main, ["distill-data", str(smollm2_gguf), "--out", str(out), "--max-prompts", "2", "-q"])
    assert r.exit_code == 1 and "has no MTP layers" in r.output, r.output
    assert "Traceback" not in r.output and not out.exists()


def test_finetune_refuses_data_of_another_model(default_gguf, tmp_path):
    from pathlib import Path

    cfg = DistillConfig(target=str(default_gguf("q8_0")), prompts=str(DEFAULT_PROMPTS_DIR), out=str(tmp_path / "d"),
                        max_tokens=8, max_prompts=2, shard_size=2, n_threads=2, progress=False)
    distill(cfg)
    smol_heads = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"
    out = tmp_path / "heads"
    r = CliRunner().invoke(main, ["finetune", str(tmp_path / "d"), str(smol_heads), "--out", str(out),
                                  "--steps", "1", "--cpu", "-q"])
    assert r.exit_code == 1 and "was distilled from" in r.output and "n_vocab" in r.output, r.output
    assert not out.exists()
    # the same model at another quant level is fine
    from gguf_mtp.train.distill import check_data_for

    assert check_data_for(tmp_path / "d", default_gguf("q4_0"))["model"]["n_vocab"] > 0


def test_sharded_distill_merges_to_the_single_run(default_gguf, tmp_path):
    """--shard i/n on separate processes (here: separate runs sharing only the
    target file), then merge: shard for shard the single-process data."""
    from safetensors.numpy import load_file

    target = default_gguf("q8_0")
    prompts = tmp_path / "p.txt"
    prompts.write_text("".join(f"def helper_{i}(x):\n" for i in range(7)))
    kw = dict(target=str(target), prompts=str(prompts), max_tokens=6, shard_size=2, n_threads=2, progress=False)
    single = distill(DistillConfig(out=str(tmp_path / "single"), **kw))
    parts = []
    for i in range(3):
        r = CliRunner().invoke(main, ["distill-data", str(target), "--prompts", str(prompts), "--out",
                                      str(tmp_path / f"part{i}"), "-n", "6", "--shard-size", "2", "-t", "2",
                                      "--shard", f"{i}/3", "-q"])
        assert r.exit_code == 0, r.output
        parts.append(str(tmp_path / f"part{i}"))
        assert not read_manifest(parts[-1])["complete"]
    # a part missing is reported, not papered over
    r = CliRunner().invoke(main, ["distill-data", "merge", str(tmp_path / "partial"), *parts[:2]])
    assert r.exit_code == 1 and "missing" in r.output
    r = CliRunner().invoke(main, ["distill-data", "merge", str(tmp_path / "merged"), *parts])
    assert r.exit_code == 0, r.output
    a, b = read_manifest(single.out), read_manifest(tmp_path / "merged")
    assert b["complete"] and [e for e in a["shards"]] == [e for e in b["shards"]]
    for e in a["shards"]:
        x, y = load_file(str(single.out / e["file"])), load_file(str(tmp_path / "merged" / e["file"]))
        assert x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)
    # parts of another run (other settings) do not merge
    other = distill(DistillConfig(out=str(tmp_path / "other"), **{**kw, "max_tokens": 5}, part=(0, 3)))
    r = CliRunner().invoke(main, ["distill-data", "merge", str(tmp_path / "bad"), str(other.out), parts[1]])
    assert r.exit_code != 0 and "settings" in r.output
