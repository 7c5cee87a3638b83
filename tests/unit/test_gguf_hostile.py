"""The GGUF reader on hostile files: every truncation and every corrupt length
gives a one-line GGUFError naming the file, never a traceback of another kind,
a huge allocation, or a file reported as fine."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from click.testing import CliRunner

from gguf_mtp.gguf.inspect import GGUFError, read_header, read_summary


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory):
    from gguf_mtp.testing.small_gguf import write_small_gguf

    # 100 tokens: an array past keep_array (skipped, not parsed); a short one that is parsed
    return write_small_gguf(tmp_path_factory.mktemp("gguf") / "small.gguf", n_blocks=3, n_vocab=100,
                            extra_kv={"test.small": [1, 2, 3], "general.name": "hostile"}, block_tensor="w")


def _boundaries(path) -> list[int]:
    """Byte offsets where the header's structures start and end."""
    h = read_header(path)
    cuts = {4, 8, 16, 24, h.data_offset}
    for _, start, end in h.kv_spans.values():
        cuts |= {start, start + 8, end}
    return sorted(c for c in cuts if c < path.stat().st_size)


def test_truncation_anywhere_is_a_clear_error(small_gguf, tmp_path):
    data = small_gguf.read_bytes()
    size = len(data)
    rng = np.random.default_rng(1)
    cuts = _boundaries(small_gguf) + [int(x) for x in rng.integers(1, size, 40)] + [size - 1]
    bad = tmp_path / "cut.gguf"
    for cut in cuts:
        bad.write_bytes(data[:cut])
        with pytest.raises(GGUFError, match="cut.gguf"):
            read_summary(bad)
    read_summary(small_gguf)                                   # the whole file is fine


def test_tensor_data_past_the_end_is_reported(small_gguf, tmp_path):
    data = small_gguf.read_bytes()
    bad = tmp_path / "short.gguf"
    bad.write_bytes(data[:-100])                               # header intact, last tensor cut
    read_header(bad)
    with pytest.raises(GGUFError, match=r"tensor 'blk.2.w.weight' needs bytes up to"):
        read_summary(bad)


@pytest.mark.parametrize("where", ["n_kv", "n_tensors", "key_len", "string_len", "array_len"])
def test_huge_lengths_fail_before_allocating(small_gguf, tmp_path, where):
    data = bytearray(small_gguf.read_bytes())
    h = read_header(small_gguf)
    huge = struct.pack("<Q", 2**62)
    if where == "n_kv":
        data[16:24] = huge
    elif where == "n_tensors":
        data[8:16] = huge
    else:
        key = {"key_len": "general.architecture", "string_len": "general.name", "array_len": "test.small"}[where]
        _, start, _ = h.kv_spans[key]
        at = start if where == "key_len" else start + 8 + len(key) + 4 + (4 if where == "array_len" else 0)
        data[at:at + 8] = huge
    bad = tmp_path / f"{where}.gguf"
    bad.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match=f"{where}.gguf"):
        read_summary(bad)


def test_bad_magic_dims_type_and_alignment(small_gguf, tmp_path):
    data = bytearray(small_gguf.read_bytes())
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUX" + bytes(data[4:]))
    with pytest.raises(GGUFError, match="bad magic"):
        read_summary(bad)
    h = read_header(small_gguf)
    # the first tensor record follows the key/values: name length, name, n_dims
    end_kv = max(e for _, _, e in h.kv_spans.values())
    n_name = struct.unpack_from("<Q", data, end_kv)[0]
    dims_at = end_kv + 8 + n_name
    d = bytearray(data)
    d[dims_at:dims_at + 4] = struct.pack("<I", 9)
    bad.write_bytes(bytes(d))
    with pytest.raises(GGUFError, match="9 dimensions"):
        read_summary(bad)
    d = bytearray(data)
    type_at = dims_at + 4 + 8 * 2
    d[type_at:type_at + 4] = struct.pack("<I", 250)
    bad.write_bytes(bytes(d))
    with pytest.raises(GGUFError, match="unknown ggml type 250"):
        read_summary(bad)


def test_inspect_cli_gives_one_line(small_gguf, tmp_path):
    from gguf_mtp.cli import main

    bad = tmp_path / "cut.gguf"
    bad.write_bytes(small_gguf.read_bytes()[:200])
    r = CliRunner().invoke(main, ["inspect", str(bad)])
    assert r.exit_code != 0 and r.exception is None or isinstance(r.exception, SystemExit)
    assert "cut.gguf" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1
