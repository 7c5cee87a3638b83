"""The projection's models of real shapes (gguf_mtp.bench.projection), at a
tiny shape: the inflated checkpoint has the requested depth with its MTP
layer, converts and quantizes, loads with its MTP head, and is measured; the
projection arithmetic is the bound auto uses."""

from __future__ import annotations

import pytest

from gguf_mtp.bench import projection
from gguf_mtp.gguf.inspect import read_header

TINY = projection.Shape("tiny", hidden=128, layers=8, ffn=256, heads=2, kv_heads=1)


@pytest.mark.parametrize("arch", projection.ARCHS)
def test_real_shape_model_builds_and_measures(arch, tmp_path):
    files = projection.build(arch, TINY, ("q8_0",), tmp_path, log=lambda *a: None)
    path = files["q8_0"]
    h = read_header(path)
    gguf_arch = h.kv["general.architecture"]
    assert int(h.kv[f"{gguf_arch}.block_count"]) == TINY.layers + 1          # the trunk + one MTP layer
    assert int(h.kv[f"{gguf_arch}.nextn_predict_layers"]) == 1
    assert int(h.kv[f"{gguf_arch}.embedding_length"]) == TINY.hidden
    names = {t[0] for t in h.tensors}
    assert all(any(n.startswith(f"blk.{i}.") for n in names) for i in range(TINY.layers + 1))
    assert not list(tmp_path.glob("*-ckpt")) and not list(tmp_path.glob("*-f16.gguf"))   # intermediates removed
    m = projection.measure(path, threads=2, n_max=3, repeats=2)
    assert m["c"][0] == 1.0 and len(m["c"]) == 3 and all(c > 0 for c in m["c"])
    assert m["mtp_step"] > 0 and 0 < m["head_share"] < 1
    assert projection.build(arch, TINY, ("q8_0",), tmp_path, log=lambda *a: None) == files   # cached


def test_projection_is_the_bound():
    m = {"c": [1.0, 1.2, 1.5, 1.9], "mtp_step": 0.1}
    # K = 1: 1.8 / (1.2 + 0.1) = 1.385; K = 2: 2.4 / (1.5 + 0.2) = 1.412; K = 3: 2.7 / (1.9 + 0.3) = 1.227
    assert projection.project(m, [1.8, 2.4, 2.7]) == {"k": 2, "speedup": 1.412}
    assert projection.project(m, [1.1]) == {"k": 0, "speedup": 1.0}          # nothing pays: plain
    p = projection.projections(m, {"x": {"tau": [1.8], "tau_hi": [1.9], "source": ""}})
    assert p["x"] == {"k": 1, "speedup": [1.385, 1.462]}
    doc = projection.to_json([projection.Row("llama", "0.6b", "q8_0", {**m, "plain_tok_s": 10.0, "head_share": 0.3},
                                              p)], {"x": {"tau": [1.8], "tau_hi": [1.9], "source": "s"}}, {})
    md = projection.markdown(doc)
    assert "1.39–1.46× (K=1)" in md and "| llama | 0.6b | q8_0 |" in md
    # new heads: the measured costs stay, the price follows the new tau
    again = projection.reproject(doc, {"x": {"tau": [1.8, 2.4], "source": "s2"}})
    assert again["rows"][0]["measured"] == doc["rows"][0]["measured"] and again["meta"] == doc["meta"]
    assert again["rows"][0]["projected"]["x"] == {"k": 2, "speedup": 1.412}
