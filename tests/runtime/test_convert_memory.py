"""Conversion streams: a sharded checkpoint ten times larger costs no more
memory than about one shard plus one tensor. Peak anonymous memory of the
conversion (gguf_mtp.testing.memwatch, sampled every millisecond in a child process)
is measured on two sharded fixtures that share their largest shard and
largest tensor but differ ~10x in total size. The difference of the two
peaks must stay within one shard plus one tensor; holding the checkpoint
would cost the whole difference in size (~200 MB here).

(The absolute peak also holds a fixed cost that does not grow with the
model: the converter loads the 152k-token vocabulary through transformers,
~270 MB.)"""

from __future__ import annotations

import sys

import pytest
import torch

from gguf_mtp.convert.hf_checkpoint import load_checkpoint
from gguf_mtp.testing.memwatch import measure
from gguf_mtp.testing.tiny_qwen35 import make_qwen35_checkpoint

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")


def _convert_peak(ckpt, out) -> dict:
    return measure(
        "from gguf_mtp.convert import convert, ConvertOptions\n"
        "from gguf_mtp.upstream import converter_modules\n"
        "converter_modules()\n",
        f"convert({str(ckpt)!r}, {str(out)!r}, ConvertOptions(outtype='bf16', progress=False))\n")


def test_peak_memory_does_not_grow_with_the_checkpoint(tmp_path):
    sizes = {}
    for name, layers in (("small", 2), ("large", 28)):
        d = make_qwen35_checkpoint(tmp_path / name, hidden_size=64, num_layers=layers, all_full_attention=True,
                                   intermediate_size=16384, shards=layers, dtype=torch.bfloat16)
        ck = load_checkpoint(d)
        sizes[name] = dict(
            total=sum(f.stat().st_size for f in ck.files),
            shard=max(f.stat().st_size for f in ck.files),
            tensor=max(t.nbytes for t in ck.tensors.values()),
            peak=_convert_peak(d, tmp_path / f"{name}.gguf"),
        )
    small, large = sizes["small"], sizes["large"]
    assert large["total"] - small["total"] > 120e6           # the large one really is larger
    extra = large["peak"]["peak_anon"] - small["peak"]["peak_anon"]
    bound = large["shard"] + large["tensor"]
    print(f"\nsmall: {small['total'] / 1e6:.0f} MB in {2} shards, peak +{small['peak']['growth_anon'] / 1e6:.0f} MB; "
          f"large: {large['total'] / 1e6:.0f} MB in 28 shards (largest {large['shard'] / 1e6:.0f} MB, "
          f"largest tensor {large['tensor'] / 1e6:.0f} MB), peak +{large['peak']['growth_anon'] / 1e6:.0f} MB; "
          f"difference {extra / 1e6:.1f} MB (bound {bound / 1e6:.0f} MB)")
    assert extra <= bound, f"{extra / 1e6:.0f} MB more for a larger checkpoint (bound {bound / 1e6:.0f} MB)"
