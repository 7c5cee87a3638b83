"""Dense llama-family trunks (patch 0004) beyond the generic fixture tests of
test_archs.py:

1. a dense GGUF WITHOUT nextn layers (convert --no-mtp) loads, has no MTP,
   writes no nextn key or extra block, matches transformers' trunk and
   generates exactly what the trunk of the MTP GGUF generates;
2. load_mtp=False on a GGUF with MTP layers skips them and decodes the same;
3. two appended MTP layers (each with its own fusion and head norm) run as
   chained heads: layer k selected by the MTP layer offset matches the
   PyTorch reference of layer k.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_mtp.gguf.inspect import read_summary
from gguf_mtp.heads.fused import mtp_inputs
from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.testing.fixtures import load_reference, make_checkpoint

RTOL = 1e-4
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13]
PROMPT = "def fibonacci(n):\n"
EXACT = RuntimeOptions(n_ctx=256, n_threads=2, kv_type="f32", flash_attn=False)


def _close(got, ref, what):
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} > {RTOL} x {scale:.3g}"


def _convert(ckpt, out, **kw):
    from gguf_mtp.convert.core import ConvertOptions, convert

    return convert(ckpt, out, ConvertOptions(outtype="f32", progress=False, **kw))


@pytest.mark.parametrize("name", ["llama_mtp", "qwen2_mtp", "qwen3_mtp", "mimo"])
def test_dense_gguf_without_mtp_loads_and_generates(tmp_path, name):
    ckpt = make_checkpoint(name, tmp_path / "ckpt")
    trunk_only = _convert(ckpt, tmp_path / "trunk.gguf", mtp=False)
    with_mtp = _convert(ckpt, tmp_path / "mtp.gguf")
    summary = read_summary(trunk_only.path)
    arch = summary.arch
    assert trunk_only.n_mtp_layers == 0 and not summary.heads
    assert summary.metadata[f"{arch}.nextn_predict_layers"] == 0
    assert summary.metadata[f"{arch}.block_count"] == read_summary(with_mtp.path).metadata[f"{arch}.block_count"] - 1

    ref_logits, _ = load_reference(name, ckpt).trunk_forward(torch.tensor([TOKENS]))
    with Engine(trunk_only.path, EXACT) as eng:
        assert not eng.has_mtp and eng.n_nextn == 0
        eng.target_decode(TOKENS, 0, [True] * len(TOKENS))
        logits = np.stack([eng.target_logits(i).copy() for i in range(len(TOKENS))])
        _close(logits, ref_logits[0].numpy(), f"{name}: trunk-only logits")
    with Engine(trunk_only.path, RuntimeOptions(n_threads=2)) as eng:
        plain = generate(eng, PROMPT, 16, drafter="none").tokens
        assert len(plain) == 16
    with Engine(with_mtp.path, RuntimeOptions(n_threads=2)) as eng:
        assert eng.has_mtp
        assert generate(eng, PROMPT, 16, drafter="mtp", draft=2).tokens == plain


def test_load_mtp_false_skips_the_heads(tmp_path):
    ckpt = make_checkpoint("qwen2_mtp", tmp_path / "ckpt")
    gguf = _convert(ckpt, tmp_path / "mtp.gguf").path
    with Engine(gguf, RuntimeOptions(n_threads=2, load_mtp=False)) as eng:
        assert not eng.has_mtp
        skipped = generate(eng, PROMPT, 16, drafter="none").tokens
    with Engine(gguf, RuntimeOptions(n_threads=2)) as eng:
        assert generate(eng, PROMPT, 16, drafter="none").tokens == skipped


@pytest.mark.parametrize("name", ["llama_mtp", "mimo"])
def test_two_mtp_layers_run_as_chained_heads(tmp_path, name):
    ckpt = make_checkpoint(name, tmp_path / "ckpt", mtp_layers=2)
    out = _convert(ckpt, tmp_path / "mtp.gguf")
    assert out.n_mtp_layers == 2
    ref = load_reference(name, ckpt)
    n = len(TOKENS)
    with Engine(out.path, EXACT) as eng:
        assert eng.n_nextn == 2
        eng.target_decode(TOKENS, 0, [True] * n)
        hidden = eng.target_hidden(n)
        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        for layer in (0, 1):
            eng.mtp_truncate(0)
            eng.mtp_set_head(layer)
            eng.mtp_decode(TOKENS, shifted, 0, [True] * n)
            got = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
            with torch.no_grad():
                want, _ = ref.mtp(*mtp_inputs(torch.tensor([TOKENS]), torch.from_numpy(hidden)[None]), layer=layer)
            _close(got, want[0].numpy(), f"{name}: MTP layer {layer} logits")
        eng.mtp_set_head(0)
        plain = generate(eng, PROMPT, 16, drafter="none").tokens
        assert generate(eng, PROMPT, 16, drafter="mtp", draft=3).tokens == plain
