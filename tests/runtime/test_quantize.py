"""`gguf-mtp quantize`: llama.cpp's quantizer with the drafter heads kept at
--head-type, and the quantized file still lossless under speculation."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.convert.quantize import QuantizeError, quantize
from gguf_mtp.gguf.inspect import read_summary
from gguf_mtp.runtime import Engine, RuntimeOptions, generate


def _head_types(path) -> set[str]:
    return {t.type for h in read_summary(path).heads for t in h.tensors if len(t.shape) > 1}


def test_heads_keep_their_type(default_gguf, tmp_path):
    src = default_gguf("f32")
    upstream_like = quantize(src, tmp_path / "q4.gguf", "q4_0")
    assert _head_types(upstream_like.path) == {"Q4_0"}        # what upstream does to the heads
    kept = quantize(src, tmp_path / "q4-f16heads.gguf", "q4_0", head_type="f16")
    assert _head_types(kept.path) == {"F16"}
    assert read_summary(kept.path).trunk_types.get("Q4_0", 0) > 0
    with Engine(kept.path, RuntimeOptions(n_threads=2)) as eng:
        for prompt in ("def read_lines(path):\n", "class Stack:\n    def __init__(self):\n"):
            plain = generate(eng, prompt, 40, drafter="none")
            spec = generate(eng, prompt, 40, drafter="mtp", draft=3)
            assert spec.tokens == plain.tokens
            assert sum(spec.stats.accepted) > 0


def test_cli_and_errors(default_gguf, tmp_path):
    out = tmp_path / "m.gguf"
    r = CliRunner().invoke(main, ["quantize", str(default_gguf("f32")), str(out), "q8_0", "--head-type", "f32"])
    assert r.exit_code == 0, r.output
    assert _head_types(out) == {"F32"}
    with pytest.raises(QuantizeError, match="choose one of"):
        quantize(default_gguf("f32"), tmp_path / "x.gguf", "q9_9")
    assert not (tmp_path / "x.gguf").exists()
