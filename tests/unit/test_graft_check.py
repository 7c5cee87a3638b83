"""graft's compatibility check on models with 64+ layers: per-layer arrays are
compared element by element, not by their length (the header keeps only the
length of an array past 64 entries)."""

from __future__ import annotations

import pytest

from gguf_mtp.convert.graft import GraftError, check_compatible
from gguf_mtp.gguf.writer import SourceFile


def _file(path, n_blocks, n_nextn, kv_heads):
    from gguf_mtp.testing.small_gguf import write_small_gguf

    return SourceFile.open(write_small_gguf(path, n_blocks=n_blocks, n_nextn=n_nextn, n_vocab=80, kv_heads=kv_heads,
                                            block_tensor=None))


def test_70_layer_trunk_with_matching_per_layer_values(tmp_path):
    kv = [8 if i % 2 else 4 for i in range(70)]
    base = _file(tmp_path / "base.gguf", 70, 0, kv)
    heads = _file(tmp_path / "heads.gguf", 71, 1, kv + [4])
    b, h, per_layer = check_compatible(base, heads)
    assert (b.n_trunk, h.n_nextn) == (70, 1) and per_layer == {"llama.attention.head_count_kv"}


def test_70_layer_trunk_with_a_differing_layer_is_refused(tmp_path):
    kv = [8] * 70
    other = list(kv)
    other[66] = 2                                            # past the 64 entries the header keeps
    base = _file(tmp_path / "base.gguf", 70, 0, kv)
    heads = _file(tmp_path / "heads.gguf", 71, 1, other + [8])
    with pytest.raises(GraftError, match="head_count_kv: the trunk layers' values differ"):
        check_compatible(base, heads)
