"""The bench plan and report, on synthetic results (no runtime needed)."""

from __future__ import annotations


import pytest

from gguf_mtp.bench.config import BenchConfig
from gguf_mtp.bench.run import plan, skipped

def _fake_results():
    rows = []
    for q, plain in (("q8_0", 100.0), ("q4_0", 120.0)):
        for d, k, tps, tau in (("mtp", 1, 110, 1.8), ("mtp", 2, 120, 2.4), ("ngram", 2, 105, 1.3)):
            rows.append({"quant": q, "head_type": "q8_0", "drafter": d, "draft": k, "tokens_per_s": tps * plain / 100,
                         "plain_tokens_per_s": plain, "speedup": tps / 100, "tau": tau, "bound": tau / 2,
                         "acceptance_per_position": [0.8] * k, "lossless": True})
        rows.append({"quant": q, "head_type": "q8_0", "drafter": "lcp-ngram", "draft": 2, "tokens_per_s": 90.0,
                     "plain_tokens_per_s": 95.0, "speedup": 90 / 95, "lossless": True})
    return {"config": BenchConfig().as_dict(), "command": "gguf-mtp bench", "target": "/x/model.gguf",
            "machine": {"cpu": "test cpu", "cores": 2}, "prompts": [{"set": "code", "prompt": "x"}],
            "rows": rows, "baselines": {"q8_0": {"plain_tokens_per_s": 100.0}, "q4_0": {"plain_tokens_per_s": 120.0}},
            "cost": {"q8_0": {"c": [1.0, 1.3, 1.6], "t1_ms": 4.0, "mtp_step": 0.5}}}


def test_plan_covers_every_quant_drafter_and_head_type():
    cfg = BenchConfig()
    items = plan(cfg)
    seen = {(it["quant"], it["head_type"], r.key, r.draft) for it in items for r in it["runs"]}
    for q in cfg.quants:
        for d in ("mtp", "ngram", "mtp-cv", "fastmtp", "eagle"):
            for k in cfg.drafts:
                assert (q, "q8_0", d, k) in seen
        assert (q, "q8_0", "eagle-tree", 3) in seen and (q, "q8_0", "medusa", 3) in seen
        assert (q, "q8_0", "mtp-tree", 3) in seen and (q, "q8_0", "auto", 0) in seen
        for k in cfg.drafts:
            assert (q, "q8_0", "ngram-tree", k) in seen
        for h in ("f16", "q4_0"):                          # the head-type sweep
            assert (q, h, "mtp-cv", 3) in seen
    families = {(it["quant"], it["family"]) for it in items}
    assert all((q, "base") in families for q in cfg.quants)  # plain, lcp-ngram and upstream run on base


def test_config_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown drafter"):
        BenchConfig(drafters=("mtp", "magic")).validate()
    with pytest.raises(ValueError, match="unknown quant"):
        BenchConfig(quants=("q9_9",)).validate()


def test_report_tables_and_plots(tmp_path):
    from gguf_mtp.bench import report

    res = _fake_results()
    md = report.markdown(res)
    assert "| native MTP | 1.20× (K=2, τ 2.40) | 1.20× (K=2, τ 2.40) |" in md   # best K per quant
    assert "| plain decoding, tok/s | 100 | 120 |" in md
    assert "c(3)" in md and "| q8_0 | 4.00 | 0.50 | 1.00 | 1.30 | 1.60 |" in md
    paths = report.plots(res, tmp_path)
    assert [p.name for p in paths] == ["tokens_per_s.png", "tau_vs_draft.png", "speedup_vs_bound.png"]
    assert all(p.stat().st_size > 5000 for p in paths)


def test_plan_for_a_quantized_file_as_it_is():
    """--quants source: drafters that train heads need a high-precision target;
    they are listed with the reason, every other drafter runs on the file."""
    cfg = BenchConfig(quants=("source",))
    keys = {r.key for it in plan(cfg) for r in it["runs"]}
    assert keys == {"auto", "ngram", "ngram-tree", "mtp", "mtp-cv", "mtp-tree"}
    assert set(skipped(cfg)) == {"fastmtp", "eagle", "eagle-tree", "medusa"}


def test_plan_for_a_target_without_mtp():
    cfg = BenchConfig(quants=("source",))
    keys = {r.key for it in plan(cfg, n_nextn=0) for r in it["runs"]}
    assert keys == {"auto", "ngram", "ngram-tree"}
    why = skipped(cfg, n_nextn=0)
    assert why["mtp"] == why["upstream"] == "the target has no MTP layer"
    assert "chains 2" in skipped(BenchConfig(), n_nextn=2)["mtp-tree"]


def test_work_directory_is_per_target_contents(tmp_path):
    """--work DIR: files built from one target are never served for another, nor for the
    same file name with other contents (heads grafted anew)."""
    from gguf_mtp.bench.variants import Workspace

    cfg = BenchConfig(work=str(tmp_path / "work"))
    a = tmp_path / "a" / "model.gguf"
    b = tmp_path / "b" / "model.gguf"
    for p, body in ((a, b"one" * 1000), (b, b"two" * 1000)):
        p.parent.mkdir()
        p.write_bytes(body)
    ra, rb = Workspace.for_target(cfg, a).root, Workspace.for_target(cfg, b).root
    assert ra != rb and ra.parent == rb.parent == tmp_path / "work" and ra.name.startswith("model-")
    assert Workspace.for_target(cfg, a).root == ra                   # the same contents: the same directory
    a.write_bytes(b"three" * 1000)
    assert Workspace.for_target(cfg, a).root != ra
