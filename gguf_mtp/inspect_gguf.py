"""``gguf-mtp inspect``: the drafter heads a GGUF carries, with their tensors,
types and sizes, and the metadata a drafter needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

_BLK = re.compile(r"^blk\.(\d+)\.")


@dataclass
class TensorInfo:
    name: str
    type: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass
class HeadInfo:
    kind: str            # "mtp" (native NextN block)
    index: int           # head number (0-based)
    block: int           # GGUF block id
    tensors: list[TensorInfo] = field(default_factory=list)

    @property
    def n_bytes(self) -> int:
        return sum(t.n_bytes for t in self.tensors)

    @property
    def types(self) -> list[str]:
        return sorted({t.type for t in self.tensors})


@dataclass
class GGUFSummary:
    path: Path
    arch: str
    n_tensors: int
    n_bytes: int
    metadata: dict
    heads: list[HeadInfo]
    trunk_types: dict[str, int]


def _field(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    try:
        return f.contents()
    except Exception:  # pragma: no cover - exotic field types
        return None


def read_summary(path: str | Path) -> GGUFSummary:
    import gguf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable GGUF file ({e})") from e
    arch = _field(reader, "general.architecture") or "?"
    n_blocks = _field(reader, f"{arch}.block_count") or 0
    n_nextn = _field(reader, f"{arch}.nextn_predict_layers") or 0
    n_trunk = n_blocks - n_nextn
    meta = {
        "general.architecture": arch,
        f"{arch}.block_count": n_blocks,
        f"{arch}.nextn_predict_layers": n_nextn,
        f"{arch}.embedding_length": _field(reader, f"{arch}.embedding_length"),
        "vocab_size": len(reader.fields["tokenizer.ggml.tokens"].data) if "tokenizer.ggml.tokens" in reader.fields else None,
        "general.file_type": _field(reader, "general.file_type"),
    }
    heads = {b: HeadInfo("mtp", b - n_trunk, b) for b in range(n_trunk, n_blocks)}
    trunk_types: dict[str, int] = {}
    total = 0
    for t in reader.tensors:
        info = TensorInfo(t.name, t.tensor_type.name, tuple(int(x) for x in t.shape), int(t.n_bytes))
        total += info.n_bytes
        m = _BLK.match(t.name)
        if m and int(m.group(1)) in heads:
            heads[int(m.group(1))].tensors.append(info)
        else:
            trunk_types[info.type] = trunk_types.get(info.type, 0) + 1
    return GGUFSummary(path, arch, len(reader.tensors), total, meta,
                       [h for h in heads.values() if h.tensors], trunk_types)


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n} B"


def format_summary(s: GGUFSummary) -> str:
    lines = [f"{s.path}: {s.arch}, {s.n_tensors} tensors, {human_bytes(s.n_bytes)}"]
    lines.append("metadata:")
    for k, v in s.metadata.items():
        lines.append(f"  {k} = {v}")
    trunk = ", ".join(f"{k}×{v}" for k, v in sorted(s.trunk_types.items()))
    lines.append(f"trunk tensor types: {trunk}")
    if not s.heads:
        lines.append("drafter heads: none")
    for h in s.heads:
        lines.append(f"head {h.index}: {h.kind} (blk.{h.block}), {len(h.tensors)} tensors, "
                     f"{human_bytes(h.n_bytes)}, types {'/'.join(h.types)}")
        for t in h.tensors:
            shape = "×".join(str(x) for x in t.shape)
            lines.append(f"  {t.name:<40} {t.type:<6} {shape:<16} {human_bytes(t.n_bytes)}")
    return "\n".join(lines)
