"""PyTorch heads loaded from the GGUF (dequantized, converter transforms
inverted) compute what llama.cpp's MTP graph computes on the same inputs, and
equal the checkpoint's own mtp.* weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_mtp.heads.mtp import load_heads
from gguf_mtp.heads.qwen35_torch import mtp_inputs
from gguf_mtp.runtime import Engine, RuntimeOptions
from gguf_mtp.testing.tiny_qwen35 import load_qwen35_mtp

RTOL = 1e-4
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 1096, 374, 264, 1273, 315, 279]


def _close(got, ref, what):
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} > {RTOL} x {scale:.3g}"


def _llama_mtp(path, tokens):
    with Engine(path, RuntimeOptions(n_ctx=256, n_threads=2, kv_type="f32", flash_attn=False)) as eng:
        n = len(tokens)
        eng.target_decode(tokens, 0, [True] * n)
        hidden = eng.target_hidden(n)
        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        eng.mtp_decode(tokens, shifted, 0, [True] * n)
        return hidden, np.stack([eng.mtp_logits(i).copy() for i in range(n)]), \
            np.stack([eng.mtp_hidden(i) for i in range(n)])


@pytest.mark.parametrize("which", ["default", "random"])
def test_heads_from_gguf_match_llama_cpp(which, default_gguf, factory):
    if which == "default":
        from gguf_mtp.models.default import default_checkpoint

        path = default_gguf("f32")
        ckpt = default_checkpoint(path.parent.parent)
        tokens = [750, 1349, 5332, 6353, 982, 262, 4210, 4457, 264, 6546, 1034, 323, 470, 264, 6451, 13]
    else:
        path, ckpt, tokens = factory.gguf("f32", init_std=0.1), factory.checkpoint(init_std=0.1), TOKENS
    heads = load_heads(path)
    assert heads.layout.n_heads == 1 and heads.layout.arch == "qwen35"
    # the inverse transforms give back the checkpoint's own weights
    ref = load_qwen35_mtp(ckpt).mtp_state_dict()
    got = heads.module.mtp_state_dict()
    assert set(ref) == set(got)
    for k in ref:
        torch.testing.assert_close(got[k], ref[k], rtol=0, atol=1e-6, msg=k)
    assert not heads.module.embed_tokens.weight.requires_grad and not heads.module.lm_head.weight.requires_grad

    hidden, mtp_logits, mtp_hidden = _llama_mtp(path, tokens)
    ids, hid, pos = mtp_inputs(torch.tensor([tokens]), torch.from_numpy(hidden)[None])
    with torch.no_grad():
        logits, h_next = heads.module(ids, hid, pos)
    _close(mtp_logits, logits[0].numpy(), "MTP logits")
    _close(mtp_hidden, h_next[0].numpy(), "MTP output hidden state")
