"""Every registered architecture fixture (gguf_mtp.testing.fixtures.FIXTURES), end to end:

1. its tiny checkpoint (exact HF layout, sharded) converts to ONE GGUF with the
   MTP layers in it;
2. parity: llama.cpp's trunk logits, the hidden state it hands to the MTP
   module, and the MTP module's logits and output hidden state match the
   PyTorch reference (transformers' own layers + gguf_mtp's MTP wiring);
3. lossless: greedy speculative decoding with the MTP drafter gives exactly
   the tokens of plain greedy decoding, with a head fine-tuned to accept (the
   random fixtures' own heads only reject), so drafts are accepted too.

Tolerance as in test_parity: f32 weights, f32 KV cache, no flash attention;
max |diff| <= 1e-4 x max |reference|.
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
PROMPTS = ["def fibonacci(n):\n", "The quick brown fox"]


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

    def get(name: str):
        if name not in cache:
            from gguf_mtp.convert.core import ConvertOptions, convert

            root = tmp_path_factory.mktemp(name)
            ckpt = make_checkpoint(name, root / "ckpt", shards=3)
            out = root / f"{name}-f32.gguf"
            convert(ckpt, out, ConvertOptions(outtype="f32", progress=False))
            cache[name] = ckpt, out
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_mtp_parity_with_pytorch(built, name):
    ckpt, gguf = built(name)
    ref = load_reference(name, ckpt)
    ids = torch.tensor([TOKENS])
    n = len(TOKENS)
    with Engine(gguf, RuntimeOptions(n_ctx=256, n_threads=2, kv_type="f32", flash_attn=False)) as eng:
        assert eng.has_mtp, "the converted GGUF has no MTP layers"
        eng.target_decode(TOKENS, 0, [True] * n)
        logits = np.stack([eng.target_logits(i).copy() for i in range(n)])
        hidden = eng.target_hidden(n)
        ref_logits, ref_hidden = ref.trunk_forward(ids)
        _close(logits, ref_logits[0].numpy(), f"{name}: trunk logits", _rtol(name))
        _close(hidden, ref_hidden[0].numpy(), f"{name}: trunk hidden state fed to the MTP", _rtol(name))

        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        eng.mtp_decode(TOKENS, shifted, 0, [True] * n)
        mtp_logits = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
        mtp_hidden = np.stack([eng.mtp_hidden(i) for i in range(n)])
    # feed the reference llama.cpp's own hidden states: this isolates the MTP module
    ids_, hid_, pos_ = mtp_inputs(ids, torch.from_numpy(hidden)[None])
    with torch.no_grad():
        ref_mtp_logits, ref_mtp_hidden = ref.mtp(ids_, hid_, pos_)
    _close(mtp_logits, ref_mtp_logits[0].numpy(), f"{name}: MTP logits", _rtol(name))
    _close(mtp_hidden, ref_mtp_hidden[0].numpy(), f"{name}: MTP output hidden state", _rtol(name))


@pytest.fixture(scope="module")
def accepting(built, tmp_path_factory):
    """The fixture's GGUF with an MTP head that accepts: the random-weight
    fixtures' own heads only ever reject, so the head is fine-tuned (FastMTP, 80
    steps) on the fixture's own greedy continuations of PROMPTS and stitched
    back. The lossless test then runs the accept path (partial and full
    acceptance, cache rollback after a partial accept) on every architecture."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            from gguf_mtp.heads.stitch import stitch
            from gguf_mtp.train.distill import DistillConfig, distill
            from gguf_mtp.train.finetune import FinetuneConfig, finetune

            _, gguf = built(name)
            root = tmp_path_factory.mktemp(f"{name}-accepting")
            (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
            distill(DistillConfig(target=str(gguf), prompts=str(root / "prompts.jsonl"), out=str(root / "data"),
                                  max_tokens=32, shard_size=2, n_threads=2, progress=False))
            torch.manual_seed(0)
            finetune(FinetuneConfig(data=str(root / "data"), target=str(gguf), out=str(root / "heads"), steps=80,
                                    batch_size=2, seq_len=32, warmup_steps=4, lr=1e-2, save_every=0, cpu=True,
                                    progress=False))
            cache[name] = stitch(gguf, root / "heads", root / f"{name}-trained.gguf", progress=False).path
        return cache[name]

    return get


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_mtp_greedy_speculative_equals_plain(accepting, name):
    gguf = accepting(name)
    accepted = 0
    with Engine(gguf, RuntimeOptions(n_threads=2)) as eng:
        for prompt in PROMPTS:
            plain = generate(eng, prompt, 24, drafter="none")
            for k in (1, 3):
                spec = generate(eng, prompt, 24, drafter="mtp", draft=k)
                assert spec.tokens == plain.tokens, f"{name}: draft={k} prompt={prompt!r}"
                assert sum(spec.stats.drafted) > 0
                accepted += sum(spec.stats.accepted)
    assert accepted > 0, f"{name}: the trained head never accepted a draft (the accept path went untested)"


@pytest.mark.parametrize("name", ["llama_mtp", "qwen3_mtp"])
def test_tree_drafters_are_lossless_on_pure_attention_trunks(built, name):
    """Dense trunks have a plain KV cache (no hybrid memory): tree verification
    takes the shared-prefix layout there. n-gram trees and EAGLE-2 trees from
    the MTP head equal plain greedy decoding (f32)."""
    from gguf_mtp.runtime import NgramTreeDrafter
    from gguf_mtp.runtime.drafters.eagle_tree import EagleTreeDrafter

    _, gguf = built(name)
    prompts = ["def fibonacci(n):\n", "The quick brown fox jumps over the lazy dog. The quick brown"]
    for dr in (NgramTreeDrafter(branches=4), EagleTreeDrafter()):
        with Engine(gguf, dr.configure(RuntimeOptions(n_threads=2))) as eng:
            for prompt in prompts:
                plain = generate(eng, prompt, 48, drafter="none")
                spec = generate(eng, prompt, 48, drafter=dr, draft=3)
                assert spec.tokens == plain.tokens, f"{name} {dr.name} {prompt!r}"
                assert spec.stats.tree_nodes > 0
