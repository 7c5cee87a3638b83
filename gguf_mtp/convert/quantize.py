"""``gguf-mtp quantize``: llama.cpp's quantizer, with the drafter heads kept at
the type the user asks for.

Upstream's ``llama_model_quantize`` treats the MTP block like any other layer
and gives it the file type's default (a Q4_K_M trunk gets Q4_K heads). Here
the heads' blocks get a tensor-type override (``--head-type``), so a small
trunk can be quantized hard while the drafter keeps its precision, or the other
way round. Written to a temporary file and renamed at the end.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..gguf.inspect import read_checked_header, read_summary

#: trunk file types (llama_ftype values, as in llama.h)
FTYPES = {
    "f16": 1, "bf16": 32,
    "q4_0": 2, "q4_1": 3, "q8_0": 7, "q5_0": 8, "q5_1": 9, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12,
    "q3_k_l": 13, "q4_k_s": 14, "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18,
}
#: head tensor types -> ggml_type names in llama_cpp
HEAD_TYPES = {"f32": "GGML_TYPE_F32", "f16": "GGML_TYPE_F16", "bf16": "GGML_TYPE_BF16", "q8_0": "GGML_TYPE_Q8_0",
              "q6_k": "GGML_TYPE_Q6_K", "q5_k": "GGML_TYPE_Q5_K", "q4_k": "GGML_TYPE_Q4_K", "q4_0": "GGML_TYPE_Q4_0"}


class QuantizeError(ValueError):
    pass


@dataclass
class QuantizeResult:
    path: Path
    ftype: str
    head_type: str | None
    head_blocks: list[int]
    size_bytes: int


def quantize(src: str | os.PathLike, dst: str | os.PathLike, ftype: str, head_type: str | None = None,
             nthread: int | None = None) -> QuantizeResult:
    """Quantize ``src`` to ``dst`` with file type ``ftype``; the drafter heads'
    tensors get ``head_type`` (None: the file type's default, as upstream)."""
    from ..runtime import native

    ftype = ftype.lower()
    if ftype not in FTYPES:
        raise QuantizeError(f"type {ftype!r}: choose one of {', '.join(FTYPES)}")
    if head_type is not None and head_type not in HEAD_TYPES:
        raise QuantizeError(f"--head-type {head_type!r}: choose one of {', '.join(HEAD_TYPES)}")
    src, dst = Path(src), Path(dst)
    read_checked_header(src)        # llama.cpp's quantizer trusts the header: a bad one crashes the process
    summary = read_summary(src)
    blocks = [h.block for h in summary.heads if h.block is not None]
    medusa = any(h.kind.startswith("medusa") for h in summary.heads)
    if head_type is not None and not blocks and not medusa:
        raise QuantizeError(f"{src}: has no drafter heads for --head-type to apply to")

    L, _ = native.load()
    native.set_quiet(True)
    params = L.llama_model_quantize_default_params()
    params.ftype = FTYPES[ftype]
    params.nthread = nthread or os.cpu_count() or 1
    keep = []
    if head_type is not None:
        alternatives = ([r"blk\.(" + "|".join(str(b) for b in blocks) + r")\."] if blocks else []) \
            + ([r"medusa\."] if medusa else [])
        pattern = "^(" + "|".join(alternatives) + ")"
        overrides = (L.llama_model_tensor_override * 2)()
        overrides[0].pattern = pattern.encode()
        overrides[0].type = getattr(L, HEAD_TYPES[head_type])
        overrides[1].pattern = None
        params.tt_overrides = ctypes.cast(overrides, ctypes.POINTER(L.llama_model_tensor_override))
        keep.append(overrides)

    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        rc = L.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise QuantizeError(f"llama.cpp could not quantize {src} to {ftype} (rc={rc})")
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return QuantizeResult(dst, ftype, head_type, blocks, dst.stat().st_size)
