"""PyTorch MTP heads loaded from the GGUF of every architecture fixture
(gguf_mtp.testing.fixtures.FIXTURES; qwen35 is tests/test_train_heads.py):

1. the heads' MTP logits and output hidden state equal llama.cpp's MTP context
   on the same inputs (f32 weights, f32 KV cache, no flash attention; max
   |diff| <= 1e-4 x max |reference|), and the inverse transforms give back
   the checkpoint's own weights (the fixture's PyTorch reference);
2. stitching the untouched heads back gives the target GGUF byte for byte
   (also at q8_0 for two MoE targets);
3. a few FastMTP steps on self-distilled data for a MoE and a dense target,
   stitched back: the file carries the trained heads, loads, and greedy
   speculative decoding with them equals plain greedy decoding.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from gguf_mtp.heads.fused import mtp_inputs
from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.testing.fixtures import FIXTURES, load_reference, make_checkpoint

RTOL = 1e-4
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 1096, 374, 264, 1273, 315, 279]
NAMES = sorted(n for n in FIXTURES if n != "qwen35")
EXACT = {"n_ctx": 256, "n_threads": 1, "kv_type": "f32", "flash_attn": False}
GGUF_ARCH = {"qwen35_moe": "qwen35moe", "qwen3_next": "qwen3next", "deepseek_v3": "deepseek2",
             "glm4_moe": "glm4moe", "llama_mtp": "llama", "qwen2_mtp": "qwen2", "qwen3_mtp": "qwen3", "mimo": "qwen2",
             "gemma3_mtp": "gemma3"}


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _close(got: np.ndarray, ref: np.ndarray, what: str, rtol: float = RTOL) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol} x {scale:.3g}"


def _rtol(name: str) -> float:
    """A fixture may state a looser parity tolerance with its reason (PARITY_RTOL; gemma3: ggml's fp16 GELU)."""
    from gguf_mtp.testing.fixtures import fixture

    return getattr(fixture(name), "PARITY_RTOL", RTOL)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    cache: dict = {}

    def get(name: str, outtype: str = "f32", **kw):
        key = (name, outtype, tuple(sorted(kw.items())))
        if key not in cache:
            from gguf_mtp.convert.core import ConvertOptions, convert

            root = tmp_path_factory.mktemp(name)
            ckpt = make_checkpoint(name, root / "ckpt", **kw)
            out = root / f"{name}-{outtype}.gguf"
            convert(ckpt, out, ConvertOptions(outtype=outtype, progress=False))
            cache[key] = ckpt, out
        return cache[key]

    return get


def _llama_mtp(path, tokens, layer: int = 0):
    with Engine(path, RuntimeOptions(**EXACT)) as eng:
        n = len(tokens)
        eng.target_decode(tokens, 0, [True] * n)
        hidden = eng.target_hidden(n)
        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        eng.mtp_set_head(layer)
        eng.mtp_decode(tokens, shifted, 0, [True] * n)
        return hidden, np.stack([eng.mtp_logits(i).copy() for i in range(n)]), \
            np.stack([eng.mtp_hidden(i) for i in range(n)])


def _reference_fusions(name, ref):
    """The reference's FusedMTP modules, one per fusion."""
    return list(ref.mtp.mtps) if hasattr(ref.mtp, "mtps") else [ref.mtp]


@pytest.mark.parametrize("name", NAMES)
def test_heads_from_gguf_match_llama_cpp(built, name):
    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.heads.mtp_dense import mimo_input_proj

    ckpt, gguf = built(name)
    heads = load_heads(gguf)
    assert heads.layout.arch == GGUF_ARCH[name] and heads.layout.n_heads == 1
    module = heads.module
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert trainable and not any(n.split(".")[-2] in ("embed", "embed_tokens", "lm_head") for n in trainable)
    assert not module.embed_tokens.weight.requires_grad and not module.lm_head.weight.requires_grad

    # the inverse transforms give back the checkpoint's own weights
    ref = load_reference(name, ckpt)
    for ours, theirs in zip(module.mtps, _reference_fusions(name, ref), strict=True):
        got, want = ours.state_dict(), theirs.state_dict()
        assert set(got) == set(want)
        for k in want:
            g = got[k]
            if name == "mimo" and k == "eh_proj.weight":
                g = torch.from_numpy(mimo_input_proj(g.numpy()))   # the GGUF is embedding-first
            torch.testing.assert_close(g, want[k].float(), rtol=0, atol=1e-6 * float(want[k].abs().max()) + 1e-7,
                                       msg=f"{name}: {k}")

    # and the module computes what llama.cpp's MTP graph computes
    hidden, mtp_logits, mtp_hidden = _llama_mtp(gguf, TOKENS)
    with torch.no_grad():
        logits, h_next = module(*mtp_inputs(torch.tensor([TOKENS]), torch.from_numpy(hidden)[None]))
    _close(mtp_logits, logits[0].numpy(), f"{name}: MTP logits", _rtol(name))
    _close(mtp_hidden, h_next[0].numpy(), f"{name}: MTP output hidden state", _rtol(name))


def test_chained_dense_heads_match_llama_cpp(built):
    """Two appended llama MTP layers, each its own fusion: layer k of the heads
    is llama.cpp's MTP head k."""
    from gguf_mtp.heads.mtp import load_heads

    _, gguf = built("llama_mtp", mtp_layers=2)
    heads = load_heads(gguf)
    assert heads.layout.n_heads == 2 and len(heads.module.layers) == 2
    for layer in (0, 1):
        hidden, mtp_logits, mtp_hidden = _llama_mtp(gguf, TOKENS, layer)
        with torch.no_grad():
            logits, h_next = heads.module(*mtp_inputs(torch.tensor([TOKENS]), torch.from_numpy(hidden)[None]),
                                          layer=layer)
        _close(mtp_logits, logits[0].numpy(), f"MTP layer {layer} logits")
        _close(mtp_hidden, h_next[0].numpy(), f"MTP layer {layer} output hidden state")


@pytest.mark.parametrize("name,outtype", [(n, "f32") for n in NAMES] + [("deepseek_v3", "q8_0"),
                                                                         ("qwen35_moe", "q8_0")])
def test_stitch_untouched_heads_is_byte_identical(built, name, outtype, tmp_path):
    """q8_0: dequantized and quantized again by gguf-py (stacked experts, F16
    fallbacks for rows gguf-py cannot quantize) gives the same bytes too."""
    from gguf_mtp.heads.mtp import load_heads, save_heads
    from gguf_mtp.heads.stitch import stitch

    _, gguf = built(name, outtype)
    heads = load_heads(gguf)
    save_heads(tmp_path / "h", heads.state(), heads.layout, gguf)
    r = stitch(gguf, tmp_path / "h", tmp_path / "stitched.gguf", progress=False)
    assert r.replaced and all(n.startswith(f"blk.{heads.layout.n_trunk}.") for n in r.replaced)
    assert (tmp_path / "stitched.gguf").read_bytes() == gguf.read_bytes()


@pytest.mark.parametrize("name", ["deepseek_v3", "llama_mtp"])
def test_finetuned_heads_stitch_back_lossless(built, name, tmp_path):
    from gguf_mtp.heads.mtp import load_heads, read_heads_dir
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import FinetuneConfig, finetune
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    _, gguf = built(name)
    data = tmp_path / "data"
    distill(DistillConfig(target=str(gguf), prompts=str(DEFAULT_PROMPTS_DIR), out=str(data), max_tokens=16,
                          max_prompts=2, shard_size=2, n_threads=1, progress=False))
    out = tmp_path / "heads"
    r = finetune(FinetuneConfig(data=str(data), target=str(gguf), out=str(out), steps=2, batch_size=2, seq_len=16,
                                warmup_steps=1, lr=3e-3, save_every=0, cpu=True, progress=False))
    assert r.steps == 2 and len(r.last["acc"]) == 3
    trained, meta = read_heads_dir(out)
    assert meta["arch"] == GGUF_ARCH[name]

    stitched = tmp_path / "stitched.gguf"
    stitch(gguf, out, stitched, progress=False)
    # the stitched file carries exactly the trained heads (f32 target: no rounding) ...
    back = load_heads(stitched).state()
    orig = load_heads(gguf).state()
    assert set(back) == set(trained) == set(orig)
    for k in trained:
        torch.testing.assert_close(back[k], trained[k], rtol=0, atol=0, msg=k)
    assert any(not torch.equal(orig[k], back[k]) for k in orig)
    # ... and speculative decoding with them is still plain greedy decoding
    with Engine(stitched, RuntimeOptions(n_ctx=512, n_threads=1)) as eng:
        assert eng.has_mtp
        for prompt in ("def fibonacci(n):\n", "The quick brown fox"):
            plain = generate(eng, prompt, 16, drafter="none", draft=0).tokens
            for k in (1, 3):
                g = generate(eng, prompt, 16, drafter="mtp", draft=k)
                assert g.tokens == plain, f"{name}: draft={k} prompt={prompt!r}"
                assert sum(g.stats.drafted) > 0
    assert json.loads((out / "heads.json").read_text())["training"]["steps_done"] == 2
