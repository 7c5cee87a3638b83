"""`gguf-mtp convert` on tiny Qwen3.5 checkpoints: names, shapes, types,
metadata, independent head type, and failures that leave nothing behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.convert.core import ConversionError, ConvertOptions, convert
from gguf_mtp.convert.hf_checkpoint import CheckpointError
from gguf_mtp.gguf.inspect import read_header, read_summary, tensor_data

HIDDEN, FF, N_HEAD, N_KV, HEAD_DIM, N_LAYERS = 64, 128, 4, 2, 16, 4

#: the MTP block of a qwen35 GGUF: tensor -> shape (GGUF order: ne0 first)
MTP_BLOCK = {
    "nextn.eh_proj.weight": (2 * HIDDEN, HIDDEN),
    "nextn.enorm.weight": (HIDDEN,),
    "nextn.hnorm.weight": (HIDDEN,),
    "nextn.shared_head_norm.weight": (HIDDEN,),
    "attn_norm.weight": (HIDDEN,),
    "attn_q.weight": (HIDDEN, 2 * N_HEAD * HEAD_DIM),
    "attn_k.weight": (HIDDEN, N_KV * HEAD_DIM),
    "attn_v.weight": (HIDDEN, N_KV * HEAD_DIM),
    "attn_output.weight": (N_HEAD * HEAD_DIM, HIDDEN),
    "attn_q_norm.weight": (HEAD_DIM,),
    "attn_k_norm.weight": (HEAD_DIM,),
    "post_attention_norm.weight": (HIDDEN,),
    "ffn_gate.weight": (HIDDEN, FF),
    "ffn_up.weight": (HIDDEN, FF),
    "ffn_down.weight": (FF, HIDDEN),
}


def _types(path: Path) -> dict[str, str]:
    import gguf

    return {name: gguf.GGMLQuantizationType(t).name for name, _, t, _ in read_header(path).tensors}


def test_mtp_block_names_shapes_metadata(factory):
    s = read_summary(factory.gguf("f32"))
    assert s.arch == "qwen35"
    assert s.metadata["qwen35.nextn_predict_layers"] == 1
    assert s.metadata["qwen35.block_count"] == N_LAYERS + 1
    assert s.metadata["qwen35.embedding_length"] == HIDDEN
    assert len(s.heads) == 1
    head = s.heads[0]
    assert head.block == N_LAYERS and head.kind == "mtp"
    got = {t.name.split(".", 2)[2]: t.shape for t in head.tensors}
    assert got == MTP_BLOCK
    assert {t.type for t in head.tensors} == {"F32"}


def test_head_type_is_independent_of_trunk(factory):
    t = _types(factory.gguf("q8_0", head_type="f16"))
    assert t["blk.0.ffn_up.weight"] == "Q8_0"
    assert t[f"blk.{N_LAYERS}.ffn_up.weight"] == "F16"
    assert t[f"blk.{N_LAYERS}.nextn.eh_proj.weight"] == "F16"
    assert t[f"blk.{N_LAYERS}.nextn.enorm.weight"] == "F32"  # norms stay f32

    t = _types(factory.gguf("f16", head_type="q8_0"))
    assert t["blk.0.ffn_up.weight"] == "F16"
    assert t[f"blk.{N_LAYERS}.attn_q.weight"] == "Q8_0"


def test_sharded_checkpoint_gives_identical_tensors(factory):
    a, b = factory.gguf("f32"), factory.gguf("f32", shards=3)
    sharded_dir = factory.checkpoint(shards=3)
    assert (sharded_dir / "model.safetensors.index.json").exists()
    assert len(list(sharded_dir.glob("model-*-of-00003.safetensors"))) == 3
    ha, hb = read_header(a), read_header(b)
    assert sorted(t[0] for t in ha.tensors) == sorted(t[0] for t in hb.tensors)
    for name, *_ in ha.tensors:
        assert tensor_data(a, ha, name) == tensor_data(b, hb, name), name


def test_no_mtp_layers_is_a_clear_error(factory, tmp_path):
    src = factory.checkpoint(with_mtp=False)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConversionError, match="no MTP layers.*--no-mtp"):
        convert(src, out)
    assert not out.exists()
    res = convert(src, out, ConvertOptions(outtype="f32", mtp=False))
    assert res.n_mtp_layers == 0
    s = read_summary(out)
    assert s.heads == [] and s.metadata["qwen35.nextn_predict_layers"] == 0


def test_no_mtp_flag_drops_the_heads(factory, tmp_path):
    out = tmp_path / "trunk.gguf"
    convert(factory.checkpoint(), out, ConvertOptions(outtype="f32", mtp=False))
    assert read_summary(out).heads == []


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors_names_file_and_tensor(factory, tmp_path):
    d = _copy(factory.checkpoint(), tmp_path / "ck")
    f = d / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[: len(data) - 1000])
    out = tmp_path / "out.gguf"
    with pytest.raises(CheckpointError, match=r"model\.safetensors: truncated.*tensor \S+"):
        convert(d, out)
    assert not out.exists()


def test_missing_config_json(factory, tmp_path):
    d = _copy(factory.checkpoint(), tmp_path / "ck")
    (d / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json is missing"):
        convert(d, tmp_path / "out.gguf")


@pytest.mark.parametrize("edit,want", [
    (lambda c: c.pop("num_hidden_layers"), "num_hidden_layers must be a positive integer, got None"),
    (lambda c: c.update(hidden_size="wide"), "hidden_size must be a positive integer, got 'wide'"),
    (lambda c: c.update(mtp_num_hidden_layers=3), "mtp_num_hidden_layers = 3, but the weights hold 1 MTP layer"),
    (lambda c: c.update(mtp_num_hidden_layers=-1), "mtp_num_hidden_layers must be a non-negative integer"),
])
def test_config_that_disagrees_with_itself_or_the_weights(factory, tmp_path, edit, want):
    d = _copy(factory.checkpoint(), tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    edit(cfg.get("text_config", cfg))
    (d / "config.json").write_text(json.dumps(cfg))
    # a wrong JSON type is refused on reading the checkpoint (CheckpointError), a count that
    # disagrees with the weights when the two are compared (ConversionError): one line either way
    with pytest.raises((ConversionError, CheckpointError), match=want.replace("(", r"\(")):
        convert(d, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


def test_unsupported_architecture_lists_supported(factory, tmp_path):
    from gguf_mtp.convert.archs import UnsupportedArchitecture

    d = _copy(factory.checkpoint(), tmp_path / "ck")
    cfg = json.loads((d / "config.json").read_text())
    cfg["architectures"] = ["FooForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UnsupportedArchitecture, match="Qwen3_5ForCausalLM"):
        convert(d, tmp_path / "out.gguf")


def test_failure_while_writing_leaves_no_file(factory, tmp_path, monkeypatch):
    import gguf

    def boom(self, *a, **k):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    out = tmp_path / "out.gguf"
    # the converter's error comes back as one ConversionError line naming it (and chained)
    with pytest.raises(ConversionError, match="RuntimeError: disk full [(]simulated[)]"):
        convert(factory.checkpoint(), out, ConvertOptions(outtype="f32"))
    assert list(tmp_path.iterdir()) == []  # neither OUT nor a temporary file


def test_cli_convert_and_inspect(factory, tmp_path):
    runner = CliRunner()
    out = tmp_path / "m.gguf"
    # by default the MTP head drafts over a compressed vocabulary (a byte-level BPE one, larger
    # than twice 16,384 tokens: the fixture's Qwen3.5 tokenizer); --draft-vocab 0 keeps the full head
    r = runner.invoke(main, ["convert", str(factory.checkpoint()), str(tmp_path / "cv.gguf"), "--outtype", "f16"])
    assert r.exit_code == 0, r.output
    assert "draft vocabulary of 16384 tokens" in r.output
    r = runner.invoke(main, ["inspect", str(tmp_path / "cv.gguf")])
    assert "nextn.draft_head" in r.output, r.output
    r = runner.invoke(main, ["convert", str(factory.checkpoint()), str(out), "--outtype", "f16",
                             "--head-type", "f32", "--draft-vocab", "0"])
    assert r.exit_code == 0, r.output
    assert "1 MTP layer(s)" in r.output and "draft vocabulary" not in r.output
    r = runner.invoke(main, ["inspect", str(out)])
    assert r.exit_code == 0, r.output
    assert "head 0: mtp (blk.4), 15 tensors" in r.output
    assert "nextn.eh_proj.weight" in r.output
    r = runner.invoke(main, ["inspect", "--json", str(out)])
    assert json.loads(r.output)["heads"][0]["block"] == 4


def test_cli_convert_errors_are_clean(factory, tmp_path):
    runner = CliRunner()
    r = runner.invoke(main, ["convert", str(factory.checkpoint(with_mtp=False)), str(tmp_path / "o.gguf")])
    assert r.exit_code != 0
    assert "Error:" in r.output and "no MTP layers" in r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("damage", ["tokenizer-json", "no-tokenizer"])
def test_upstream_converter_errors_are_one_clear_line(factory, tmp_path, damage):
    """A checkpoint that passes our checks but that the pinned converter cannot
    read (a broken or missing tokenizer) is one line naming the checkpoint, no
    traceback, no output file."""
    ck = tmp_path / "ck"
    shutil.copytree(factory.checkpoint(), ck)
    if damage == "tokenizer-json":
        (ck / "tokenizer.json").write_text("{not json")
    else:
        for f in ("tokenizer.json", "tokenizer_config.json"):
            (ck / f).unlink()
    out = tmp_path / "o.gguf"
    r = CliRunner().invoke(main, ["convert", str(ck), str(out), "-q"])
    assert r.exit_code != 0
    assert "Traceback" not in r.output and str(ck) in r.output, r.output
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
