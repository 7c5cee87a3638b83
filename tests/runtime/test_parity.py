"""Parity: on tiny f32 checkpoints, llama.cpp's main-head logits, the hidden
state it hands to the MTP head, and the MTP head's logits match PyTorch
(transformers for the trunk, gguf_mtp.heads.qwen35_torch for the MTP module).

Tolerance: f32 weights, an f32 KV cache and no flash attention (its CPU kernel
rounds Q to f16, ~1e-3 relative), so the differences are summation order only
(~1e-6 relative observed); we require max |diff| <= 1e-4 * max |reference|."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gguf_mtp.heads.qwen35_torch import mtp_inputs
from gguf_mtp.runtime import Engine, RuntimeOptions
from gguf_mtp.testing.tiny_qwen35 import load_qwen35_mtp, trunk_forward

RTOL = 1e-4
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 1096, 374, 264, 1273, 315, 279]


def _close(got: np.ndarray, ref: np.ndarray, what: str) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert err <= RTOL * scale, f"{what}: max |diff| {err:.3g} > {RTOL} x {scale:.3g}"


def _llama(path, tokens):
    with Engine(path, RuntimeOptions(n_ctx=256, n_threads=2, kv_type="f32", flash_attn=False)) as eng:
        n = len(tokens)
        eng.target_decode(tokens, 0, [True] * n)
        logits = np.stack([eng.target_logits(i).copy() for i in range(n)])
        hidden = eng.target_hidden(n)
        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        eng.mtp_decode(tokens, shifted, 0, [True] * n)
        mtp_logits = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
        mtp_hidden = np.stack([eng.mtp_hidden(i) for i in range(n)])
    return logits, hidden, mtp_logits, mtp_hidden


@pytest.mark.parametrize("variant", [dict(), dict(all_full_attention=True)], ids=["hybrid", "full-attention"])
def test_trunk_and_mtp_logits_match_pytorch(factory, variant):
    kw = dict(init_std=0.1, **variant)
    ckpt = factory.checkpoint(**kw)
    logits, hidden, mtp_logits, mtp_hidden = _llama(factory.gguf("f32", **kw), TOKENS)

    ids = torch.tensor([TOKENS])
    ref_logits, ref_hidden = trunk_forward(ckpt, ids)
    _close(logits, ref_logits[0].numpy(), "trunk logits")
    _close(hidden, ref_hidden[0].numpy(), "trunk hidden state fed to the MTP (post final norm)")

    mtp = load_qwen35_mtp(ckpt)
    # feed the reference the same hidden states llama.cpp produced: this isolates the MTP head
    ids_, hid_, pos_ = mtp_inputs(ids, torch.from_numpy(hidden)[None])
    with torch.no_grad():
        ref_mtp_logits, ref_mtp_hidden = mtp(ids_, hid_, pos_)
    _close(mtp_logits, ref_mtp_logits[0].numpy(), "MTP logits")
    _close(mtp_hidden, ref_mtp_hidden[0].numpy(), "MTP output hidden state")
    # and the argmax agrees where the reference is not a near-tie
    top2 = torch.topk(ref_mtp_logits[0], 2).values
    clear = (top2[:, 0] - top2[:, 1]) > 1e-3 * top2[:, 0].abs().clamp(min=1)
    assert (mtp_logits.argmax(-1)[clear.numpy()] == ref_mtp_logits[0].argmax(-1)[clear].numpy()).all()
