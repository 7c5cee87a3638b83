"""EAGLE drafters recycled from the MTP layer: storage and metadata,
recycled/scratch initialisation, convert --heads eagle, finetune --method
eagle (feature regression over unrolled steps), stitching, lossless drafting."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.gguf.constants import Keys
from gguf_mtp.heads.common import GGUFView
from gguf_mtp.heads.eagle import FEATURE, EagleError, make_eagle, read_kind
from gguf_mtp.runtime import Engine, RuntimeOptions, generate

PROMPT = "def read_lines(path):\n    with open(path) as f:\n"


def _lossless(path, drafter="mtp", n=32):
    with Engine(path, RuntimeOptions(n_threads=2)) as eng:
        plain = generate(eng, PROMPT, n, drafter="none")
        spec = generate(eng, PROMPT, n, drafter=drafter, draft=3)
    assert spec.tokens == plain.tokens
    return spec.stats


def test_recycled_and_scratch_init(default_gguf, tmp_path):
    src = default_gguf("q8_0")
    rec, scr = tmp_path / "rec.gguf", tmp_path / "scr.gguf"
    make_eagle(src, rec, "recycled")
    make_eagle(src, scr, "scratch", seed=1)
    assert read_kind(rec) == {Keys.Drafter.KIND: "eagle", Keys.Eagle.FEATURE: FEATURE, Keys.Eagle.INIT: "recycled"}
    assert read_kind(scr)[Keys.Eagle.INIT] == "scratch"
    a, b, s = GGUFView.open(src), GGUFView.open(rec), GGUFView.open(scr)
    m = int(a.fields["qwen35.block_count"]) - 1                             # the MTP block
    for name in (f"blk.{m}.nextn.eh_proj.weight", f"blk.{m}.attn_q.weight", f"blk.{m}.ffn_down.weight"):
        np.testing.assert_array_equal(a.array(name), b.array(name))        # recycled: the MTP weights
        assert not np.allclose(a.array(name), s.array(name))              # scratch: re-drawn
        assert abs(float(s.array(name).std()) - 0.02) < 0.005
    np.testing.assert_array_equal(a.array(f"blk.{m}.nextn.hnorm.weight"), s.array(f"blk.{m}.nextn.hnorm.weight"))
    np.testing.assert_array_equal(a.array("blk.0.attn_norm.weight"), s.array("blk.0.attn_norm.weight"))
    assert _lossless(rec).tau > 1.5          # the co-trained MTP head, now tagged as EAGLE
    _lossless(scr)
    with pytest.raises(EagleError, match="new file"):
        make_eagle(src, src)


def test_finetune_eagle_regresses_features_and_stitches(default_gguf, tmp_path):
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    target = tmp_path / "eagle.gguf"
    make_eagle(default_gguf("q8_0"), target, "recycled")
    data = tmp_path / "data"
    distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(data), max_tokens=40,
                          max_prompts=6, shard_size=8, n_threads=2, progress=False))
    heads = tmp_path / "heads"
    r = CliRunner().invoke(main, ["finetune", str(data), str(target), "--out", str(heads), "--method", "eagle",
                                  "--steps", "20", "--batch-size", "4", "--seq-len", "32", "--lr", "1e-3",
                                  "--warmup", "1", "--cpu", "-q"])
    assert r.exit_code == 0, r.output
    log = [json.loads(x) for x in (heads / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 20 and len(log[0]["feat"]) == 3 and len(log[0]["kl"]) == 3
    out = tmp_path / "trained.gguf"
    r = CliRunner().invoke(main, ["stitch", str(target), str(heads), str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert read_kind(out)[Keys.Eagle.INIT] == "trained"
    _lossless(out)

    # on a fixed batch of the data: the feature term is the smooth-L1 distance of the predicted
    # features to the target's, and training moved the predicted features towards them
    import torch

    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.train.finetune import FinetuneConfig, WindowDataset, collate
    from gguf_mtp.train.losses import mtp_losses

    ds = WindowDataset(data, 32, min_len=5)
    batch = collate([ds[i] for i in range(min(8, len(ds)))])
    cfg = FinetuneConfig(data=str(data), target=str(target), out=str(heads), method="eagle", kl_weight=0.0)
    with torch.no_grad():
        before = mtp_losses(load_heads(target).module.eval(), batch, cfg)[1]["feat"]
        after = mtp_losses(load_heads(out).module.eval(), batch, cfg)[1]["feat"]
        m = load_heads(target).module.eval()
        x, h = batch["tokens"], batch["hidden"]
        n = x.shape[1] - 2
        _, f1 = m(x[:, 1:1 + n], h[:, :n], torch.arange(1, 1 + n).expand(x.shape[0], n))
        d = torch.nn.functional.smooth_l1_loss(f1, h[:, 1:1 + n], reduction="none").mean(-1)
        mask = batch["valid"][:, 2:2 + n]
        np.testing.assert_allclose(before[0], float((d * mask).sum() / mask.sum()), rtol=1e-4)
    assert np.mean(after) < np.mean(before)


def test_convert_heads_eagle_cli(tmp_path):
    from gguf_mtp.models.default import materialize

    ckpt = materialize(tmp_path / "ckpt")
    out = tmp_path / "e.gguf"
    r = CliRunner().invoke(main, ["convert", str(ckpt), str(out), "--outtype", "q8_0", "--heads", "eagle",
                                  "--init", "scratch", "-q"])
    assert r.exit_code == 0, r.output
    assert "EAGLE drafter (scratch)" in r.output
    assert read_kind(out)[Keys.Eagle.INIT] == "scratch"
    r = CliRunner().invoke(main, ["convert", str(ckpt), str(tmp_path / "x.gguf"), "--heads", "eagle", "--no-mtp"])
    assert r.exit_code != 0 and "drop --no-mtp" in r.output
