"""``gguf-mtp strip IN OUT [--keep mtp]``: a file that stock llama.cpp loads.

The pinned llama.cpp's loader refuses any tensor it does not know ("wrong
number of tensors"), so a file with gguf-mtp's extra heads breaks the other
llama.cpp-based tools a user runs next to ours (llama-server, LM Studio,
ollama). What stock llama.cpp does not know, per head family:

* Medusa heads (``medusa.*`` tensors, patch 0007);
* a compressed draft vocabulary (``blk.N.nextn.draft_head``, patch 0006);
* MTP layers of the dense architectures (llama, qwen2, qwen3: patch 0004;
  gemma3: patch 0008), i.e. every retrofitted head;
* EAGLE drafters are the MTP layer with other weights and a
  ``gguf_mtp.drafter`` key: stock llama.cpp loads them where it loads that
  architecture's MTP layers (and would draft with them as MTP).

``strip`` drops those tensors, and the MTP layers too unless ``--keep mtp``
(possible only where stock llama.cpp loads them: qwen35, qwen35moe,
qwen3next, glm4moe, ...), fixes the block count and the per-layer arrays,
drops the gguf-mtp keys that describe what was dropped, and copies every kept
tensor byte for byte. :func:`stock_refusals` says, without writing anything,
why stock llama.cpp would refuse a file (``gguf-mtp inspect`` shows it).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path

from ..gguf.constants import SCALAR_FORMAT, Keys, ValueType, arch_key
from ..gguf.writer import UINT32, SourceFile, encode_kv, write_gguf

#: tensors of the patch series' heads (the pinned loader knows neither)
_PATCH_TENSORS = (("Medusa heads", re.compile(r"^medusa\.")),
                  ("compressed draft vocabulary", re.compile(r"\.nextn\.draft_head\.weight$")))
_BLK = re.compile(r"^blk\.(\d+)\.")


class StripError(ValueError):
    pass


@dataclass
class StripResult:
    path: Path
    kept: int
    dropped: list[str] = field(default_factory=list)
    kept_mtp: bool = False


def patch_only_mtp_archs() -> set[str]:
    """GGUF architectures whose MTP layers only the patched runtime loads (from the arch table)."""
    from .archs import ARCHITECTURES

    return {a.gguf_arch for a in ARCHITECTURES.values() if not a.stock_mtp}


def _layout(src: SourceFile) -> tuple[str, int, int]:
    kv = src.header.kv
    arch = kv.get(Keys.General.ARCHITECTURE)
    if not arch or arch_key(Keys.LLM.BLOCK_COUNT, arch) not in kv:
        raise StripError(f"{src.path}: no general.architecture / block_count; is it a model GGUF?")
    n_blocks = int(kv[arch_key(Keys.LLM.BLOCK_COUNT, arch)])
    n_nextn = int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0) or 0)
    return arch, n_blocks, n_nextn


def stock_refusals(path: str | Path, src: SourceFile | None = None) -> list[str]:
    """Why the pinned, unpatched llama.cpp would not load ``path`` (empty: it loads it)."""
    src = src or SourceFile.open(path)
    arch, n_blocks, n_nextn = _layout(src)
    names = [t[0] for t in src.header.tensors]
    out = []
    for what, pat in _PATCH_TENSORS:
        n = sum(1 for name in names if pat.search(name))
        if n:
            out.append(f"{what}: {n} tensor(s) only the gguf-mtp runtime knows")
    if n_nextn and arch in patch_only_mtp_archs():
        out.append(f"MTP layers on {arch}: only the gguf-mtp runtime has an MTP graph for this architecture")
    return out


def _cut_array(src: SourceFile, key: str, n: int) -> bytes | None:
    """The array entry ``key`` cut to its first ``n`` elements (None: not a scalar array)."""
    raw = src.raw_kv(key)
    klen = struct.unpack_from("<Q", raw)[0]
    p = 8 + klen
    vtype = struct.unpack_from("<I", raw, p)[0]
    if vtype != ValueType.ARRAY:
        return None
    etype, count = struct.unpack_from("<IQ", raw, p + 4)
    fmt = SCALAR_FORMAT.get(etype)
    if fmt is None or count <= n:
        return None
    size = struct.calcsize(fmt)
    head = raw[:p + 4] + struct.pack("<IQ", etype, n)
    return head + raw[p + 16:p + 16 + n * size]


def strip(in_path: str | Path, out_path: str | Path, *, keep_mtp: bool = False,
          progress: bool = True) -> StripResult:
    src = SourceFile.open(in_path)
    out = Path(out_path)
    if out.resolve() == src.path.resolve():
        raise StripError(f"{out}: write to a new file, not over the input")
    arch, n_blocks, n_nextn = _layout(src)
    if keep_mtp and n_nextn and arch in patch_only_mtp_archs():
        raise StripError(f"{src.path}: stock llama.cpp has no MTP graph for {arch} (the gguf-mtp patch series "
                         "adds it); strip without --keep mtp")
    drop_mtp = n_nextn > 0 and not keep_mtp
    n_trunk = n_blocks - n_nextn

    def dropped(name: str) -> bool:
        if any(p.search(name) for _, p in _PATCH_TENSORS):
            return True
        m = _BLK.match(name)
        return drop_mtp and m is not None and int(m.group(1)) >= n_trunk

    tensors = [t for t in src.tensors() if not dropped(t.name)]
    gone = [t.name for t in src.tensors() if dropped(t.name)]

    kv = src.header.kv
    block_key, nextn_key = arch_key(Keys.LLM.BLOCK_COUNT, arch), arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch)
    entries = []
    for key in kv:
        if key.startswith(Keys.Medusa.PREFIX) or key == Keys.Drafter.DRAFT_VOCAB:
            continue
        if drop_mtp and (key.startswith(("gguf_mtp.eagle.",)) or key == Keys.Drafter.KIND):
            continue
        if drop_mtp and key == block_key:
            entries.append(encode_kv(key, src.header.kv_spans[key][0], n_trunk))
        elif drop_mtp and key == nextn_key:
            entries.append(encode_kv(key, UINT32, 0))
        elif drop_mtp and key.startswith(f"{arch}."):
            entries.append(_cut_array(src, key, n_trunk) or src.raw_kv(key))
        else:
            entries.append(src.raw_kv(key))
    align = int(kv.get(Keys.General.ALIGNMENT, 32))
    write_gguf(out, entries, tensors, alignment=align, progress=progress, desc="Stripping")
    return StripResult(out, len(tensors), gone, kept_mtp=n_nextn > 0 and not drop_mtp)


__all__ = ["StripError", "StripResult", "patch_only_mtp_archs", "stock_refusals", "strip"]
