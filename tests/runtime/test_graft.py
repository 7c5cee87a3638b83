"""`convert --mtp-only` + `graft`: MTP heads put into a GGUF made without them
(a --no-mtp conversion quantized to Q4_K_M stands in for "a Q4_K_M made
elsewhere"), byte for byte, still lossless; mismatched files are refused."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.convert.core import ConvertOptions, convert
from gguf_mtp.convert.graft import GraftError, graft
from gguf_mtp.convert.quantize import quantize
from gguf_mtp.gguf.inspect import read_header, read_summary, tensor_data
from gguf_mtp.gguf.writer import SourceFile
from gguf_mtp.runtime import Engine, RuntimeOptions, generate


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    from gguf_mtp.models.default import default_checkpoint

    root = tmp_path_factory.mktemp("graft")
    ckpt = default_checkpoint(cache=root / "cache")
    full = convert(ckpt, root / "full.gguf", ConvertOptions(outtype="f32", progress=False)).path
    trunk = convert(ckpt, root / "trunk.gguf", ConvertOptions(outtype="f32", mtp=False, progress=False)).path
    heads = convert(ckpt, root / "heads.gguf", ConvertOptions(outtype="f32", mtp_only=True, progress=False)).path
    return dict(ckpt=ckpt, full=full, trunk=trunk, heads=heads, root=root)


def _tensors(path):
    h = read_header(path)
    return {name: tensor_data(path, h, name) for name, *_ in h.tensors}


def test_mtp_only_holds_just_the_heads(parts):
    s = read_summary(parts["heads"])
    full = read_summary(parts["full"])
    names = {n for n, *_ in read_header(parts["heads"]).tensors}
    assert names == {t.name for h in full.heads for t in h.tensors}
    assert s.metadata["vocab_size"] == full.metadata["vocab_size"]
    assert parts["heads"].stat().st_size < parts["full"].stat().st_size / 4


def test_graft_onto_trunk_equals_full_conversion(parts, tmp_path):
    res = graft(parts["trunk"], parts["heads"], tmp_path / "grafted.gguf", progress=False)
    assert res.n_heads == 1 and res.replaced == 0
    assert _tensors(res.path) == _tensors(parts["full"])
    got, want = read_header(res.path).kv, read_header(parts["full"]).kv
    arch = want["general.architecture"]
    for key in (f"{arch}.block_count", f"{arch}.nextn_predict_layers", f"{arch}.embedding_length"):
        assert got[key] == want[key], key


def test_graft_onto_q4_k_m_runs_lossless(parts, tmp_path):
    base = quantize(parts["trunk"], tmp_path / "trunk-q4_k_m.gguf", "q4_k_m").path
    heads = convert(parts["ckpt"], tmp_path / "heads-q8.gguf",
                    ConvertOptions(outtype="q8_0", mtp_only=True, progress=False)).path
    out = tmp_path / "q4_k_m-mtp.gguf"
    r = CliRunner().invoke(main, ["graft", str(base), str(heads), str(out), "-q"])
    assert r.exit_code == 0, r.output
    s = read_summary(out)
    assert {t.type for h in s.heads for t in h.tensors if len(t.shape) > 1} == {"Q8_0"}
    # the trunk is BASE's, types and all (this tiny model's rows are too short
    # for k-quants, so llama.cpp fell back to Q5_0/Q8_0 for most of them)
    assert s.trunk_types == read_summary(base).trunk_types and "Q5_0" in s.trunk_types
    src_heads = SourceFile.open(heads)
    outh = read_header(out)
    for name in (t.name for h in s.heads for t in h.tensors):
        assert tensor_data(out, outh, name) == tensor_data(heads, src_heads.header, name)
    accepted = 0
    with Engine(out, RuntimeOptions(n_threads=2)) as eng:
        assert eng.has_mtp
        for prompt in ("def fibonacci(n):\n", "class Stack:\n    def __init__(self):\n"):
            plain = generate(eng, prompt, 40, drafter="none")
            spec = generate(eng, prompt, 40, drafter="mtp", draft=3)
            assert spec.tokens == plain.tokens
            accepted += sum(spec.stats.accepted)
    assert accepted > 0


def test_graft_replaces_existing_heads(parts, tmp_path):
    res = graft(parts["full"], parts["heads"], tmp_path / "again.gguf", progress=False)
    assert res.replaced == len(res.head_tensors)
    assert _tensors(res.path) == _tensors(parts["full"])


def test_graft_refuses_what_does_not_fit(parts, factory, tmp_path):
    with pytest.raises(GraftError, match="carries no MTP layers"):
        graft(parts["full"], parts["trunk"], tmp_path / "x.gguf", progress=False)
    other = factory.gguf("f32", hidden_size=32, num_layers=2, full_attention_interval=2)
    with pytest.raises(GraftError) as e:
        graft(parts["trunk"], other, tmp_path / "x.gguf", progress=False)
    assert "trunk depth" in str(e.value) and "hidden size" in str(e.value)
    with pytest.raises(GraftError, match="new file"):
        graft(parts["trunk"], parts["heads"], parts["trunk"], progress=False)
    assert not (tmp_path / "x.gguf").exists()
    r = CliRunner().invoke(main, ["graft", str(parts["trunk"]), str(other), str(tmp_path / "x.gguf")])
    assert r.exit_code != 0 and "do not belong" in r.output


def test_mtp_only_and_no_mtp_exclude_each_other(parts, tmp_path):
    r = CliRunner().invoke(main, ["convert", str(parts["ckpt"]), str(tmp_path / "y.gguf"),
                                  "--mtp-only", "--no-mtp"])
    assert r.exit_code != 0 and "exclude each other" in r.output
