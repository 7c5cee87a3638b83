"""``gguf-mtp bench``: the plan, the report, and the whole pipeline in quick mode."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from gguf_mtp.bench.config import BENCH_DRAFTERS



def test_bench_quick_mode_end_to_end(tmp_path):
    """The CI mode runs every stage on the default model: quantize, distill,
    train FastMTP and Medusa heads, compress the draft vocabulary, time every
    drafter against plain decoding, report. Every output is lossless."""
    from gguf_mtp.cli import main

    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", "--quick", "-o", str(out), "--work", str(tmp_path / "work"), "-t", "2",
                                  "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "native MTP" in r.output
    res = json.loads((out / "results.json").read_text())
    got = {(row["drafter"], row["head_type"]) for row in res["rows"]}
    for d in BENCH_DRAFTERS:                       # quick mode runs every drafter
        if d not in ("none", "lcp-ngram", "upstream"):
            assert (d, "q8_0") in got, d
    assert res["skipped"] == {}
    # the protocol: interleaved repeats give medians with quartiles; halves choose and report K
    for row in res["rows"]:
        if row["drafter"] not in ("upstream", "lcp-ngram"):
            for key in ("tokens_per_s", "speedup", "speedup_select", "speedup_report"):
                assert row[f"{key}_q1"] <= row[key] <= row[f"{key}_q3"], (row["drafter"], key)
            assert row["rows_per_pass"] >= 1.0
    # the depth sweep: every main-head-type row again after 48 tokens of real text
    assert {r["depth"] for r in res["depth_rows"]} == {48}
    assert {(r["drafter"], r["draft"]) for r in res["depth_rows"]} >= {
        (r["drafter"], r["draft"]) for r in res["rows"] if r["head_type"] == "q8_0" and r["drafter"] not in
        ("upstream", "lcp-ngram")}
    assert all(r["lossless"] for r in res["depth_rows"])
    assert "## Speedup against context depth" in (out / "results.md").read_text()
    # llama-cpp-python's prompt lookup cannot roll back the default model's recurrent
    # layers: the bench records why instead of a number
    assert ("lcp-ngram", "q8_0") in got or "lcp_error" in res["baselines"]["q8_0"]
    assert ("mtp-cv", "q4_0") in got                                   # the head-type sweep
    for row in res["rows"]:
        # other projects' drafters are reported, not held to our exactness (llama.cpp's
        # draft-mtp runs the pristine build, whose kernels differ from the patched runtime's)
        if row["drafter"] not in ("upstream", "lcp-ngram"):
            assert row["lossless"], row
        assert row["tokens_per_s"] > 0
        if row["drafter"] in ("mtp", "mtp-cv", "fastmtp"):
            assert row["tau"] >= 1.0 and row["bound"] > 0
    assert res["cost"]["q8_0"]["c"][0] == pytest.approx(1.0)
    assert (out / "results.md").read_text().startswith("# gguf-mtp bench")
    for name in ("tokens_per_s.png", "tau_vs_draft.png", "speedup_vs_bound.png", "speedup_vs_depth.png"):
        assert (out / name).stat().st_size > 5000
    # the ecosystem formats: every row as CSV with the machine, and compare
    from gguf_mtp.bench.report import as_csv, compare

    lines = as_csv(res).splitlines()
    assert lines[0].startswith("quant,head_type,drafter,draft,depth,") and "runtime_key" in lines[0]
    assert len(lines) == 1 + len(res["rows"]) + len(res["depth_rows"])
    cmp = CliRunner().invoke(main, ["bench", "compare", str(out / "results.json"), str(out / "results.json")])
    assert cmp.exit_code == 0, cmp.output
    assert "| q8_0 | - | plain | - | 0 |" in cmp.output and "| 1.00 |" in cmp.output


def test_bench_quick_on_a_real_quantized_target(smollm2_gguf, tmp_path):
    """`--quants source` measures a real quantized file as it is (SmolLM2-135M
    Q4_1 with the shipped retrofit heads): every drafter that applies runs and is
    lossless; the ones that train heads are listed with the reason."""
    from pathlib import Path

    from gguf_mtp.cli import main
    from gguf_mtp.convert.graft import graft

    heads = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"
    target = graft(smollm2_gguf, heads, tmp_path / "smollm2-mtp.gguf", progress=False).path
    out = tmp_path / "out"
    r = CliRunner().invoke(main, ["bench", str(target), "--quick", "--quants", "source", "-o", str(out), "--work",
                                  str(tmp_path / "work"), "-t", "2", "-q", "--output", "csv"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    import csv
    import io

    rows = list(csv.reader(io.StringIO(r.stdout)))      # stdout is the CSV alone
    assert rows[0][:3] == ["quant", "head_type", "drafter"] and all(len(x) == len(rows[0]) for x in rows)
    res = json.loads((out / "results.json").read_text())
    got = {row["drafter"] for row in res["rows"]}
    assert {"auto", "ngram", "ngram-tree", "mtp", "mtp-cv", "mtp-tree"} <= got
    assert set(res["skipped"]) == {"fastmtp", "eagle", "eagle-tree", "medusa"}
    # llama.cpp's pristine draft-mtp cannot run llama-arch MTP layers (ours, from patch 0004):
    # measured where it runs, its failure reported where it does not
    assert "upstream" in got or "upstream" in res["baselines"]["source"]
    assert all("high-precision target" in why for why in res["skipped"].values())
    for row in [*res["rows"], *res["depth_rows"]]:
        if row["drafter"] not in ("upstream", "lcp-ngram"):
            assert row["lossless"], row
