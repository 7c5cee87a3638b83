"""DeepSeek-V3's FP8 checkpoints: what the converter writes for a
``float8_e4m3fn`` weight is exactly ``fp8 x weight_scale_inv`` tile by tile
(128x128 tiles, partial at the edges), in the trunk and in the MTP layer; the
dequantization stays lazy (per tensor, at write time); and a checkpoint whose
FP8 weight lacks its scales, or whose config.json does not declare FP8, is
refused with a message that names the tensor, before anything is written.

The parity and lossless checks of the same fixture are in test_archs.py.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gguf_mtp.convert.core import ConvertOptions, convert
from gguf_mtp.testing.fixtures.builders import checkpoint_files
from gguf_mtp.testing.fixtures.deepseek_v3 import make_checkpoint

BLOCK = 128
N_TRUNK = 3                     # the fixture's num_hidden_layers; layer 3 is the MTP layer

#: checkpoint projection -> GGUF tensor (kv_b_proj is split, see _expected)
_ATTN = {"q_a_proj": "attn_q_a", "q_b_proj": "attn_q_b", "kv_a_proj_with_mqa": "attn_kv_a_mqa",
         "o_proj": "attn_output"}
_NAME = re.compile(r"^model\.layers\.(\d+)\.(self_attn|mlp)\.(?:(experts)\.(\d+)\.|(shared_experts)\.)?(\w+)\.weight$")


def _dequantize(fp8: torch.Tensor, scale: torch.Tensor) -> np.ndarray:
    """fp8 x scale, one tile at a time (independent of the project's helpers)."""
    out = fp8.float().clone()
    for i in range(scale.shape[0]):
        for j in range(scale.shape[1]):
            out[i * BLOCK:(i + 1) * BLOCK, j * BLOCK:(j + 1) * BLOCK] *= scale[i, j]
    return out.numpy()


def _gguf_tensors(path) -> dict[str, np.ndarray]:
    from gguf_mtp.upstream import converter_modules

    converter_modules()  # puts the pinned gguf-py on the path
    import gguf

    return {t.name: np.asarray(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    root = tmp_path_factory.mktemp("deepseek_fp8")
    ckpt = make_checkpoint(root / "ckpt", shards=3)
    out = root / "model-f32.gguf"
    convert(ckpt, out, ConvertOptions(outtype="f32", progress=False))
    raw: dict[str, torch.Tensor] = {}
    for f in checkpoint_files(ckpt):
        raw.update(load_file(str(f)))
    return ckpt, raw, _gguf_tensors(out)


def test_fixture_is_fp8_with_partial_tiles(converted):
    _, raw, _ = converted
    fp8 = {n: t for n, t in raw.items() if t.dtype == torch.float8_e4m3fn}
    assert fp8, "no FP8 weights in the fixture"
    for name, t in fp8.items():
        assert raw[name + "_scale_inv"].dtype == torch.float32
    # what the released checkpoints keep unquantized stays so, MTP layer included
    for name in ("model.embed_tokens.weight", "lm_head.weight", "model.layers.1.mlp.gate.weight",
                 f"model.layers.{N_TRUNK}.eh_proj.weight", f"model.layers.{N_TRUNK}.embed_tokens.weight",
                 f"model.layers.{N_TRUNK}.shared_head.head.weight", f"model.layers.{N_TRUNK}.mlp.gate.weight"):
        assert raw[name].dtype == torch.bfloat16, name
    assert raw[f"model.layers.{N_TRUNK}.mlp.gate.e_score_correction_bias"].dtype == torch.float32
    shapes = [t.shape for t in fp8.values()]
    assert any(max(s) > BLOCK for s in shapes), "no weight spans several tiles"
    assert any(d % BLOCK for s in shapes for d in s), "no partial edge tile"
    assert any(n.startswith(f"model.layers.{N_TRUNK}.self_attn.") for n in fp8), "MTP attention is not FP8"
    assert any(n.startswith(f"model.layers.{N_TRUNK}.mlp.experts.") for n in fp8), "MTP experts are not FP8"


def _expected(name: str, value: np.ndarray, n_heads: int, nope: int) -> list[tuple[str, tuple, np.ndarray]]:
    """(GGUF tensor, index into it, expected value) for one dequantized weight."""
    m = _NAME.match(name)
    assert m, name
    bid, part, experts, expert, shared, proj = m.groups()
    if part == "self_attn":
        if proj == "kv_b_proj":
            kv_b = value.reshape(n_heads, -1, value.shape[-1])
            return [(f"blk.{bid}.attn_k_b.weight", (), kv_b[:, :nope].transpose(0, 2, 1)),
                    (f"blk.{bid}.attn_v_b.weight", (), kv_b[:, nope:])]
        return [(f"blk.{bid}.{_ATTN[proj]}.weight", (), value)]
    kind = proj.removesuffix("_proj")
    if experts:
        return [(f"blk.{bid}.ffn_{kind}_exps.weight", (int(expert),), value)]
    if shared:
        return [(f"blk.{bid}.ffn_{kind}_shexp.weight", (), value)]
    return [(f"blk.{bid}.ffn_{kind}.weight", (), value)]


def test_gguf_weights_are_fp8_times_scale(converted):
    ckpt, raw, tensors = converted
    config = json.loads((ckpt / "config.json").read_text())
    n_heads, nope = config["num_attention_heads"], config["qk_nope_head_dim"]
    checked = set()
    for name, t in raw.items():
        if t.dtype != torch.float8_e4m3fn:
            continue
        value = _dequantize(t, raw[name + "_scale_inv"])
        for gname, index, want in _expected(name, value, n_heads, nope):
            got = tensors[gname][index]
            assert got.dtype == np.float32 and got.shape == want.shape, gname
            np.testing.assert_array_equal(got, want, err_msg=f"{name} -> {gname}{list(index)}")
            checked.add(int(gname.split(".")[1]))
    assert checked == {0, 1, 2, N_TRUNK}, f"blocks checked: {sorted(checked)}"
    # and a bf16 tensor of the MTP layer passes through unchanged
    np.testing.assert_array_equal(tensors[f"blk.{N_TRUNK}.nextn.eh_proj.weight"],
                                  raw[f"model.layers.{N_TRUNK}.eh_proj.weight"].float().numpy())


def test_dequantization_stays_lazy(converted):
    """After the converter's dequant_model every FP8 weight is still a lazy
    tensor (nothing read yet): each one is materialised only when the writer
    reaches it, from the mmapped shard that holds it."""
    from conversion.base import (
        LazyTorchTensor,  # the pinned converter (on the path since `converted`)
    )

    from gguf_mtp.convert.archs import arch_for
    from gguf_mtp.convert.core import _converter_class, check_input

    ckpt, raw, _ = converted
    opts = ConvertOptions(outtype="f32", progress=False)
    ck, arch, _ = check_input(ckpt, opts)
    cls, ftype = _converter_class(ck, arch, opts, arch.n_trunk_layers(ck.config))
    model = cls(ckpt, ftype, ckpt / "unused.gguf", use_temp_file=False, eager=False)
    assert model.lazy
    model.dequant_model()
    assert not any(n.endswith("_scale_inv") for n in model.model_tensors)
    fp8 = [n for n, t in raw.items() if t.dtype == torch.float8_e4m3fn]
    for name in fp8:
        lazy = model.model_tensors[name]()
        assert isinstance(lazy, LazyTorchTensor) and lazy.dtype == torch.float32, name
    name = f"model.layers.{N_TRUNK}.self_attn.q_a_proj.weight"
    eager = LazyTorchTensor.to_eager(model.model_tensors[name]())
    np.testing.assert_array_equal(eager.numpy(), _dequantize(raw[name], raw[name + "_scale_inv"]))
    assert arch_for("DeepseekV3ForCausalLM") is arch


def test_missing_scale_is_refused(tmp_path):
    from gguf_mtp.convert.archs.fp8 import FP8Error

    victim = f"model.layers.{N_TRUNK}.self_attn.q_b_proj.weight"
    ckpt = make_checkpoint(tmp_path / "ckpt", shards=2, drop_scales=(victim,))
    out = tmp_path / "out.gguf"
    with pytest.raises(FP8Error, match=re.escape(victim) + r".*no .*weight_scale_inv"):
        convert(ckpt, out, ConvertOptions(outtype="f32", progress=False))
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_fp8_without_quantization_config_is_refused(tmp_path):
    from gguf_mtp.convert.archs.fp8 import FP8Error

    ckpt = make_checkpoint(tmp_path / "ckpt")
    config = json.loads((ckpt / "config.json").read_text())
    del config["quantization_config"]
    (ckpt / "config.json").write_text(json.dumps(config))
    with pytest.raises(FP8Error, match="quantization_config"):
        convert(ckpt, tmp_path / "out.gguf", ConvertOptions(outtype="f32", progress=False))
