"""Several MTP layers (a Qwen3-Next-style stack; patch 0003): each draft step
runs layer i mod H. Parity per layer against PyTorch, and a stack made of two
copies of the default model's trained layer must draft exactly like the single
shared head — through the chained machinery — while staying lossless."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from gguf_mtp.convert.core import ConvertOptions, convert
from gguf_mtp.heads.qwen35_torch import mtp_inputs
from gguf_mtp.runtime import Engine, RuntimeOptions, generate
from gguf_mtp.testing.tiny_qwen35 import load_qwen35_mtp

TOKENS = [785, 4937, 13876, 38835, 34208, 916, 279, 15678, 5562, 13, 1096, 374]
PROMPTS = ["def read_lines(path):\n", "import os\nimport sys\n\n\ndef main(argv=None):\n",
           "class Stack:\n    def __init__(self):\n"]


def test_each_mtp_layer_matches_pytorch(factory):
    kw = dict(mtp_layers=2, init_std=0.1)
    ckpt, path = factory.checkpoint(**kw), factory.gguf("f32", **kw)
    ref = load_qwen35_mtp(ckpt)
    opts = RuntimeOptions(n_ctx=256, n_threads=2, kv_type="f32", flash_attn=False)
    with Engine(path, opts) as eng:
        assert eng.n_nextn == 2
        n = len(TOKENS)
        eng.target_decode(TOKENS, 0, [True] * n)
        hidden = eng.target_hidden(n)
        ids, hid, pos = mtp_inputs(torch.tensor([TOKENS]), torch.from_numpy(hidden)[None])
        outs = []
        for layer in (0, 1):
            eng.mtp_truncate(0)
            eng.mtp_set_head(layer)
            eng.mtp_decode(TOKENS, hid[0].numpy(), 0, [True] * n)
            got = np.stack([eng.mtp_logits(i).copy() for i in range(n)])
            with torch.no_grad():
                want = ref(ids, hid, pos, layer=layer)[0][0].numpy()
            assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"layer {layer}"
            outs.append(got)
        assert np.abs(outs[0] - outs[1]).max() > 1e-2  # the two layers really differ
        with pytest.raises(ValueError, match="out of range"):
            eng.mtp_set_head(2)


@pytest.fixture(scope="module")
def twin_stack(tmp_path_factory):
    """The default model with its trained MTP layer duplicated as layer 1."""
    from gguf_mtp.models.default import default_checkpoint

    d = tmp_path_factory.mktemp("twin") / "ckpt"
    shutil.copytree(default_checkpoint(), d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["mtp_num_hidden_layers"] = 2
    (d / "config.json").write_text(json.dumps(cfg, indent=2))
    state = load_file(d / "model.safetensors")
    for k in [k for k in state if k.startswith("mtp.layers.0.")]:
        state[k.replace("mtp.layers.0.", "mtp.layers.1.")] = state[k].clone()
    save_file(state, d / "model.safetensors", metadata={"format": "pt"})
    out = d.parent / "twin.gguf"
    convert(d, out, ConvertOptions(outtype="f32"))
    return out


def test_chained_twin_heads_draft_like_the_shared_head(twin_stack, default_gguf):
    """Identical layers must draft like the shared head. At K = 1 that is exact
    (only layer 0 runs); for K >= 2 the chained path re-runs the drafted prefix
    as one batch under each layer, whose batched kernels round differently from
    the shared head's one-row steps, so a near-tie draft may flip: the accepted
    totals must agree within 10% (a stale or wrong layer would lose far more)."""
    single = {}
    with Engine(default_gguf("f32"), RuntimeOptions(n_threads=2)) as eng:
        for p in PROMPTS:
            single[p] = {k: generate(eng, p, 48, drafter="mtp", draft=k).stats for k in (1, 3)}
    with Engine(twin_stack, RuntimeOptions(n_threads=2)) as eng:
        assert eng.n_nextn == 2
        total_single = total_twin = 0
        for p in PROMPTS:
            plain = generate(eng, p, 48, drafter="none")
            for k in (1, 2, 3, 4):
                chained = generate(eng, p, 48, drafter="mtp", draft=k)
                assert chained.tokens == plain.tokens, (p, k)
                if k == 1:
                    assert chained.stats.accepted == single[p][1].accepted
                if k == 3:
                    total_twin += sum(chained.stats.accepted)
                    total_single += sum(single[p][3].accepted)
        assert total_twin > 0
        assert abs(total_twin - total_single) <= 0.1 * total_single, (total_twin, total_single)
