"""Files other llama.cpp tools can load: ``inspect`` says whether stock llama.cpp
loads a file, ``strip`` writes a copy it does, checked with the pristine
(unpatched) build of the pinned llama.cpp."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gguf_mtp.bench.upstream_mtp import run_draft_mtp, stock_decodes
from gguf_mtp.cli import main
from gguf_mtp.convert.core import ConvertOptions, convert
from gguf_mtp.convert.strip import StripError, stock_refusals, strip
from gguf_mtp.gguf.inspect import read_header, tensor_data
from gguf_mtp.runtime import Engine, RuntimeOptions, generate


def _same_kept_tensors(src, out):
    a, b = read_header(src), read_header(out)
    kept = {t[0] for t in b.tensors}
    assert kept <= {t[0] for t in a.tensors}
    for name in kept:
        assert tensor_data(src, a, name) == tensor_data(out, b, name), name
    return a, b


def _plain(path, prompt="def fib(n):", n=24):
    with Engine(path, RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        return generate(eng, prompt, n, drafter="none").tokens


def test_medusa_file_is_refused_by_stock_and_strip_fixes_it(trained_medusa_gguf, stock_tool, tmp_path):
    src = trained_medusa_gguf("q8_0")
    refusals = stock_refusals(src)
    assert any("Medusa" in r for r in refusals)
    ok, why = stock_decodes(stock_tool, src)
    assert not ok and "wrong number of tensors" in why          # what stock llama.cpp says today
    r = CliRunner().invoke(main, ["inspect", str(src)])
    assert "does NOT load" in r.output
    out = tmp_path / "stock.gguf"
    res = strip(src, out, keep_mtp=True, progress=False)
    assert res.kept_mtp and all(n.startswith("medusa.") for n in res.dropped)
    _same_kept_tensors(src, out)
    assert stock_refusals(out) == []
    assert stock_decodes(stock_tool, out) == (True, "")
    # the stripped file's MTP layer still drafts in stock llama.cpp, and in ours
    assert run_draft_mtp(stock_tool, out, "def fib(n):", 16, 2, threads=2).n_drafted > 0
    assert _plain(out) == _plain(src)


def test_draft_vocabulary_and_trunk_only(default_gguf, stock_tool, tmp_path):
    src = default_gguf("q4_0", draft_vocab=True)
    assert any("draft vocabulary" in r for r in stock_refusals(src))
    assert not stock_decodes(stock_tool, src)[0]
    keep = strip(src, tmp_path / "mtp.gguf", keep_mtp=True, progress=False)
    assert keep.dropped == ["blk.6.nextn.draft_head.weight"]
    _, h = _same_kept_tensors(src, keep.path)
    assert "gguf_mtp.draft_vocab" not in h.kv
    assert stock_decodes(stock_tool, keep.path) == (True, "")
    trunk = CliRunner().invoke(main, ["strip", str(src), str(tmp_path / "trunk.gguf"), "-q"])
    assert trunk.exit_code == 0, trunk.output
    _, t = _same_kept_tensors(src, tmp_path / "trunk.gguf")
    assert t.kv["qwen35.block_count"] == 6 and t.kv["qwen35.nextn_predict_layers"] == 0
    assert not any(name.startswith("blk.6.") for name, *_ in t.tensors)
    assert stock_decodes(stock_tool, tmp_path / "trunk.gguf") == (True, "")
    assert _plain(tmp_path / "trunk.gguf") == _plain(src)


def test_dense_mtp_heads_need_gguf_mtp(smollm2_gguf, stock_tool, tmp_path):
    """Retrofitted heads on a dense model (SmolLM2 + the shipped heads): stock
    llama.cpp has no MTP graph there, so --keep mtp is refused and strip gives
    back the trunk."""
    from pathlib import Path

    from gguf_mtp.convert.graft import graft

    heads = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"
    src = graft(smollm2_gguf, heads, tmp_path / "with-heads.gguf", progress=False).path
    assert any("MTP layers on llama" in r for r in stock_refusals(src))
    assert not stock_decodes(stock_tool, src)[0]
    with pytest.raises(StripError, match="no MTP graph for llama"):
        strip(src, tmp_path / "x.gguf", keep_mtp=True, progress=False)
    out = strip(src, tmp_path / "trunk.gguf", progress=False).path
    _same_kept_tensors(src, out)
    a, b = read_header(smollm2_gguf), read_header(out)
    assert [t[:3] for t in a.tensors] == [t[:3] for t in b.tensors]     # the original trunk, tensor for tensor
    assert b.kv["llama.block_count"] == a.kv["llama.block_count"]
    assert stock_decodes(stock_tool, out) == (True, "")


def test_eagle_file_loads_in_stock(factory, stock_tool, tmp_path):
    """An EAGLE drafter is the MTP layer with other weights: stock llama.cpp loads
    it where it loads that architecture's MTP layers (qwen35 here)."""
    src = convert(factory.checkpoint(), tmp_path / "eagle.gguf",
                  ConvertOptions(outtype="f32", heads="eagle", progress=False)).path
    assert stock_refusals(src) == []
    assert stock_decodes(stock_tool, src) == (True, "")
