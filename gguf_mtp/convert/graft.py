"""``gguf-mtp graft BASE.gguf HEADS.gguf OUT.gguf``: put MTP heads into an
existing GGUF (for example a Q4_K_M made by another tool, or one converted
with ``--no-mtp``) without re-converting its trunk.

HEADS is any GGUF that carries MTP blocks for the same model: a heads-only
file from ``gguf-mtp convert --mtp-only`` or a full conversion. Its blocks
``blk.N..`` (N = the trunk's layer count) are copied byte for byte, at
whatever type they have; BASE keeps its trunk, vocabulary and metadata. The
two must describe the same model: same architecture, hidden size, trunk
depth, the same vocabulary token for token, and no disagreeing
``<arch>.*`` hyper-parameter. Heads already in BASE are replaced.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..gguf.constants import Keys, ValueType, arch_key
from ..gguf.inspect import read_array
from ..gguf.writer import UINT32, SourceFile, Tensor, encode_kv, write_gguf

_BLK = re.compile(r"^blk\.(\d+)\.")


class GraftError(ValueError):
    pass


@dataclass
class GraftResult:
    path: Path
    arch: str
    n_trunk: int
    n_heads: int
    head_tensors: list[str]
    replaced: int          # head tensors BASE had that were dropped


@dataclass
class _Layout:
    arch: str
    n_blocks: int
    n_nextn: int

    @property
    def n_trunk(self) -> int:
        return self.n_blocks - self.n_nextn


def _layout(src: SourceFile, role: str) -> _Layout:
    kv = src.header.kv
    arch = kv.get("general.architecture")
    if not arch or arch_key(Keys.LLM.BLOCK_COUNT, arch) not in kv:
        raise GraftError(f"{role} {src.path}: no general.architecture / block_count; is it a model GGUF?")
    return _Layout(arch, int(kv[arch_key(Keys.LLM.BLOCK_COUNT, arch)]), int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0)))


def _block(name: str) -> int | None:
    m = _BLK.match(name)
    return int(m.group(1)) if m else None


def check_compatible(base: SourceFile, heads: SourceFile) -> tuple[_Layout, _Layout, set[str]]:
    """Refuse, with every reason at once, when HEADS does not fit BASE.
    Returns both layouts and the per-layer array keys HEADS must supply."""
    b, h = _layout(base, "BASE"), _layout(heads, "HEADS")
    if h.n_nextn == 0:
        raise GraftError(f"HEADS {heads.path}: carries no MTP layers ({h.arch}.nextn_predict_layers is 0)")
    if b.arch != h.arch:
        raise GraftError(f"architectures differ: BASE is {b.arch}, HEADS is {h.arch}")
    problems = []
    if b.n_trunk != h.n_trunk:
        problems.append(f"trunk depth: BASE has {b.n_trunk} layers, HEADS were made for {h.n_trunk}")
    bkv, hkv, arch = base.header.kv, heads.header.kv, b.arch
    emb = arch_key(Keys.LLM.EMBEDDING_LENGTH, arch)
    if bkv.get(emb) != hkv.get(emb):
        problems.append(f"hidden size ({emb}): BASE {bkv.get(emb)}, HEADS {hkv.get(emb)}")
    tok = "tokenizer.ggml.tokens"
    if tok not in bkv or tok not in hkv:
        problems.append("vocabulary: both files need tokenizer.ggml.tokens")
    elif int(len(bkv[tok]) if isinstance(bkv[tok], list) else bkv[tok]) != \
            int(len(hkv[tok]) if isinstance(hkv[tok], list) else hkv[tok]):
        problems.append(f"vocabulary size: BASE {_count(bkv[tok])} tokens, HEADS {_count(hkv[tok])}")
    elif _value_bytes(base, tok) != _value_bytes(heads, tok):
        problems.append("vocabulary: same size but different tokens")

    per_layer: set[str] = set()
    structural = {arch_key(Keys.LLM.BLOCK_COUNT, arch), arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch)}
    for key, hval in hkv.items():
        if not key.startswith(f"{arch}.") or key in structural or key not in bkv:
            continue
        bval = bkv[key]
        # arrays are compared element by element at any length (the header keeps
        # only the length of one past 64 entries: models with 64+ layers)
        ha = read_array(heads.path, key, heads.header)
        if ha is not None:
            ba = read_array(base.path, key, base.header)
            if len(ha) == h.n_blocks:
                per_layer.add(key)
                if ba is None or len(ba) < b.n_trunk or not np.array_equal(ba[:b.n_trunk], ha[:h.n_trunk]):
                    problems.append(f"{key}: the trunk layers' values differ")
            elif ba is None or not np.array_equal(ba, ha):
                problems.append(f"{key}: BASE and HEADS arrays differ")
            continue
        if ValueType.ARRAY in (_vtype(base, key), _vtype(heads, key)):       # arrays of strings or arrays
            if _value_bytes(base, key) != _value_bytes(heads, key):
                problems.append(f"{key}: BASE and HEADS differ")
            continue
        if bval != hval:
            problems.append(f"{key}: BASE {bval!r}, HEADS {hval!r}")
    if problems:
        raise GraftError("HEADS do not belong to BASE:\n  " + "\n  ".join(problems))
    return b, h, per_layer


def _count(v) -> int:
    return len(v) if isinstance(v, list) else int(v)


def _value_bytes(src: SourceFile, key: str) -> bytes:
    raw = src.raw_kv(key)
    return raw[8 + len(key.encode()):]  # skip the key itself


def graft(base_path: str | Path, heads_path: str | Path, out_path: str | Path, *,
          progress: bool = True) -> GraftResult:
    base, heads = SourceFile.open(base_path), SourceFile.open(heads_path)
    b, h, per_layer = check_compatible(base, heads)
    arch = b.arch
    out = Path(out_path)
    if out.resolve() in (base.path.resolve(), heads.path.resolve()):
        raise GraftError(f"{out}: write to a new file, not over an input")

    overrides = {
        arch_key(Keys.LLM.BLOCK_COUNT, arch): encode_kv(arch_key(Keys.LLM.BLOCK_COUNT, arch), _vtype(base, arch_key(Keys.LLM.BLOCK_COUNT, arch)), h.n_blocks),
        arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch): encode_kv(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), UINT32, h.n_nextn),
    }
    overrides.update({k: heads.raw_kv(k) for k in per_layer})
    entries = [overrides.pop(k) if k in overrides else base.raw_kv(k) for k in base.header.kv]
    entries += list(overrides.values())
    entries += [heads.raw_kv(k) for k in heads.header.kv
                if k.startswith(f"{arch}.") and k not in base.header.kv and k not in per_layer
                and k != arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch)]

    trunk = [t for t in base.tensors() if (_block(t.name) is None or _block(t.name) < b.n_trunk)]
    replaced = sum(1 for t in base.tensors() if (_block(t.name) or -1) >= b.n_trunk)
    head_tensors: list[Tensor] = [t for t in heads.tensors() if (_block(t.name) or -1) >= h.n_trunk]
    if not head_tensors:
        raise GraftError(f"HEADS {heads.path}: no blk.{h.n_trunk}+ tensors although it declares "
                         f"{h.n_nextn} MTP layer(s)")
    align = int(base.header.kv.get("general.alignment", 32))
    write_gguf(out, entries, trunk + head_tensors, alignment=align, progress=progress, desc="Grafting")
    return GraftResult(out, arch, b.n_trunk, h.n_nextn, [t.name for t in head_tensors], replaced)


def _vtype(src: SourceFile, key: str) -> int:
    return src.header.kv_spans[key][0]
