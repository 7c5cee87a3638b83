"""``gguf-mtp inspect``: the drafter heads a GGUF carries, with their tensors,
types and sizes, and the metadata a drafter needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .constants import SCALAR_FORMAT, Keys, ValueType, arch_key

_BLK = re.compile(r"^blk\.(\d+)\.")
_MEDUSA = re.compile(r"^medusa\.(\d+)\.")



@dataclass
class TensorInfo:
    name: str
    type: str
    shape: tuple[int, ...]
    n_bytes: int


@dataclass
class HeadInfo:
    kind: str            # "mtp" (native NextN block) or "medusa"
    index: int           # head number (0-based)
    block: int | None    # GGUF block id (None for Medusa heads)
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


_SCALARS = SCALAR_FORMAT
_STRING, _ARRAY = ValueType.STRING, ValueType.ARRAY


@dataclass
class GGUFHeader:
    """The key/values and tensor table of a GGUF file. Arrays longer than
    ``keep_array`` elements are summarised as their length (a vocabulary of
    150k strings is skipped, not parsed)."""

    kv: dict
    tensors: list[tuple[str, tuple[int, ...], int, int]]  # name, shape (ne0 first), ggml type, offset
    data_offset: int
    #: key -> (value type, byte span of the whole entry: key, type and value)
    kv_spans: dict = field(default_factory=dict)
    version: int = 3


class GGUFError(ValueError):
    """A file that is not the GGUF its header says it is (bad magic, a length or
    count that runs past the end of the file, a tensor outside the data section)."""


#: ggml's GGML_MAX_DIMS
MAX_DIMS = 4


def read_header(path: str | Path, keep_array: int = 64) -> GGUFHeader:
    """Parse the header of ``path``. Every length and count is checked against
    the bytes left in the file before it is used, so a corrupt header gives a
    :class:`GGUFError` naming the file and the offset, never a huge allocation."""
    import os
    import struct

    def unpack(f, fmt):
        size = struct.calcsize(fmt)
        raw = f.read(size)
        if len(raw) != size:
            raise GGUFError(f"{path}: truncated GGUF header (ends at byte {f.tell()})")
        return struct.unpack(fmt, raw)[0]

    def need(f, n: int, what: str) -> None:
        if n > file_size - f.tell():
            raise GGUFError(f"{path}: {what} needs {n} bytes at offset {f.tell()}, but the file ends at byte "
                            f"{file_size}: truncated or corrupt")

    def string(f, what="string"):
        n = unpack(f, "<Q")
        need(f, n, what)
        return f.read(n).decode("utf-8", errors="replace")

    def skip_strings(f, n: int) -> None:
        # a vocabulary of 150k strings: walk the lengths in 1 MiB blocks (f.read(8) + seek
        # per string took 0.19 s per file, paid by every Engine that opens it)
        base = f.tell()                     # file offset of buf[0]
        buf, i = f.read(1 << 20), 0
        for _ in range(n):
            if i + 8 > len(buf):
                base += i
                f.seek(base)
                buf, i = f.read(1 << 20), 0
                if len(buf) < 8:
                    raise GGUFError(f"{path}: truncated GGUF header (a string array runs past byte {file_size})")
            k = struct.unpack_from("<Q", buf, i)[0]
            i += 8
            if k > file_size - (base + i):
                raise GGUFError(f"{path}: a string of {k} bytes at offset {base + i} runs past the end of the "
                                f"file ({file_size} bytes): truncated or corrupt")
            i += k
        f.seek(base + i)

    def value(f, vtype):
        if vtype == _STRING:
            return string(f)
        if vtype == _ARRAY:
            etype, n = unpack(f, "<I"), unpack(f, "<Q")
            # the least every element takes: its scalar size, a string's 8-byte length, an array's 12 bytes
            least = struct.calcsize(_SCALARS[etype]) if etype in _SCALARS else 8 if etype == _STRING else 12 \
                if etype == _ARRAY else None
            if least is None:
                raise GGUFError(f"{path}: unknown GGUF array element type {etype} at offset {f.tell() - 12}")
            need(f, n * least, f"an array of {n} elements")
            if n <= keep_array:
                return [value(f, etype) for _ in range(n)]
            if etype == _STRING:
                skip_strings(f, n)
            elif etype in _SCALARS:
                f.seek(n * least, 1)
            else:
                for _ in range(n):
                    value(f, etype)
            return _ArrayLen(n)
        if vtype not in _SCALARS:
            raise GGUFError(f"{path}: unknown GGUF value type {vtype} at offset {f.tell() - 4}")
        return unpack(f, _SCALARS[vtype])

    with open(path, "rb") as f:
        file_size = os.fstat(f.fileno()).st_size
        if f.read(4) != b"GGUF":
            raise GGUFError(f"{path}: not a GGUF file (bad magic)")
        version = unpack(f, "<I")
        if version < 2 or version > 3:
            raise GGUFError(f"{path}: GGUF version {version} is not supported")
        n_tensors, n_kv = unpack(f, "<Q"), unpack(f, "<Q")
        need(f, n_kv * 12, f"a table of {n_kv} key/values")         # key length + value type, at least
        kv, spans = {}, {}
        for _ in range(n_kv):
            start = f.tell()
            key = string(f, "a key")
            vtype = unpack(f, "<I")
            kv[key] = value(f, vtype)
            spans[key] = (vtype, start, f.tell())
        need(f, n_tensors * 24, f"a table of {n_tensors} tensors")  # name length, dims, type, offset
        tensors = []
        for _ in range(n_tensors):
            name = string(f, "a tensor name")
            n_dims = unpack(f, "<I")
            if not 1 <= n_dims <= MAX_DIMS:
                raise GGUFError(f"{path}: tensor {name!r} has {n_dims} dimensions (ggml allows 1..{MAX_DIMS})")
            shape = tuple(unpack(f, "<Q") for _ in range(n_dims))
            tensors.append((name, shape, unpack(f, "<I"), unpack(f, "<Q")))
        align = kv.get("general.alignment", 32)
        if not isinstance(align, int) or align <= 0 or align & (align - 1):
            raise GGUFError(f"{path}: general.alignment {align!r} is not a power of two")
        data_offset = -(-f.tell() // align) * align
    return GGUFHeader(kv, tensors, data_offset, spans, version)


def read_checked_header(path: str | Path) -> GGUFHeader:
    """:func:`read_header`, then :func:`check_tensor_data`: the header of a file
    whose every tensor lies inside it (what anything that reads tensors needs)."""
    h = read_header(path)
    check_tensor_data(path, h)
    return h


def check_tensor_data(path: str | Path, header: GGUFHeader) -> None:
    """Every tensor has a known type and a non-empty shape whose data lies inside the file."""
    import os

    import gguf

    size = os.path.getsize(path)
    for name, shape, gtype, offset in header.tensors:
        if gtype not in gguf.GGML_QUANT_SIZES:
            raise GGUFError(f"{path}: tensor {name!r} has unknown ggml type {gtype}")
        if not all(shape):      # llama.cpp's quantizer divides by a row length: SIGFPE (found by the fuzz slice)
            raise GGUFError(f"{path}: tensor {name!r} has an empty dimension (shape {list(shape)})")
        block = gguf.GGML_QUANT_SIZES[gtype][0]
        if shape[0] % block:
            raise GGUFError(f"{path}: tensor {name!r} of type {gguf.GGMLQuantizationType(gtype).name} has "
                            f"{shape[0]} columns, not a multiple of its block size {block}")
        end = header.data_offset + offset + tensor_nbytes(shape, gtype)
        if end > size:
            raise GGUFError(f"{path}: tensor {name!r} needs bytes up to {end}, but the file ends at byte {size}: "
                            "truncated or corrupt")


class _ArrayLen(int):
    """Stands for an array that was skipped: its value is the array's length."""


def tensor_nbytes(shape, ggml_type: int) -> int:
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(ggml_type)]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def tensor_data(path: str | Path, header: GGUFHeader, name: str) -> bytes:
    """The raw bytes of one tensor (for comparisons in tests and tools)."""
    for tname, shape, gtype, offset in header.tensors:
        if tname == name:
            with open(path, "rb") as f:
                f.seek(header.data_offset + offset)
                return f.read(tensor_nbytes(shape, gtype))
    raise KeyError(f"{path}: no tensor {name}")


def read_array(path: str | Path, key: str, header: GGUFHeader | None = None):
    """A scalar array value of any length as a numpy array (None if absent or
    not a scalar array): what the header keeps only as a length past ``keep_array``."""
    import struct

    import numpy as np

    h = header or read_header(path)
    if key not in h.kv_spans:
        return None
    vtype, start, end = h.kv_spans[key]
    if vtype != _ARRAY:
        return None
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(end - start)
    at = 8 + len(key.encode()) + 4                   # past the key and the value type
    etype, n = struct.unpack_from("<IQ", raw, at)
    if etype not in _SCALARS:
        return None
    return np.frombuffer(raw, _SCALARS[etype], count=n, offset=at + 12)


def read_int_array(path: str | Path, key: str, header: GGUFHeader | None = None):
    """An integer array value (any length) as a numpy int64 array, or None if absent."""
    import numpy as np

    h = header or read_header(path)
    if key not in h.kv_spans:
        return None
    a = read_array(path, key, h)
    if a is None or a.dtype.kind not in "iu":
        raise ValueError(f"{path}: {key} is not an integer array")
    return a.astype(np.int64)


def model_fingerprint(path: str | Path, header: GGUFHeader | None = None) -> dict:
    """What heads and training data must share with the model they were made for:
    architecture, hidden size, vocabulary size and a SHA-256 of the token list."""
    import hashlib

    h = header or read_header(path)
    arch = h.kv.get("general.architecture", "?")
    out = {"arch": arch, "n_embd": h.kv.get(arch_key(Keys.LLM.EMBEDDING_LENGTH, arch))}
    tok = "tokenizer.ggml.tokens"
    if tok in h.kv_spans:
        _, start, end = h.kv_spans[tok]
        with open(path, "rb") as f:
            f.seek(start)
            raw = f.read(end - start)
        v = h.kv[tok]
        out["n_vocab"] = len(v) if isinstance(v, list) else int(v)
        out["vocab_sha256"] = hashlib.sha256(raw).hexdigest()
    return out


def fingerprint_mismatch(mine: dict, theirs: dict) -> list[str]:
    """The fields two fingerprints both have and disagree on."""
    return [f"{k}: {mine[k]!r} vs {theirs[k]!r}" for k in ("arch", "n_embd", "n_vocab", "vocab_sha256")
            if k in mine and k in theirs and mine[k] != theirs[k]]


def read_summary(path: str | Path) -> GGUFSummary:
    import gguf

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    h = read_checked_header(path)
    arch = h.kv.get("general.architecture", "?")
    n_blocks = int(h.kv.get(arch_key(Keys.LLM.BLOCK_COUNT, arch), 0))
    n_nextn = int(h.kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0))
    n_trunk = n_blocks - n_nextn
    tokens = h.kv.get("tokenizer.ggml.tokens")
    meta = {
        "general.architecture": arch,
        arch_key(Keys.LLM.BLOCK_COUNT, arch): n_blocks,
        arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch): n_nextn,
        arch_key(Keys.LLM.EMBEDDING_LENGTH, arch): h.kv.get(arch_key(Keys.LLM.EMBEDDING_LENGTH, arch)),
        "vocab_size": len(tokens) if isinstance(tokens, list) else (int(tokens) if tokens is not None else None),
        "general.file_type": h.kv.get("general.file_type"),
    }
    if Keys.Drafter.DRAFT_VOCAB in h.kv:
        meta["draft_vocab_size"] = int(h.kv[Keys.Drafter.DRAFT_VOCAB]) if not isinstance(h.kv[Keys.Drafter.DRAFT_VOCAB], list) \
            else len(h.kv[Keys.Drafter.DRAFT_VOCAB])
    meta.update({k: v for k, v in h.kv.items() if k.startswith(Keys.Medusa.PREFIX)})
    heads = {b: HeadInfo("mtp", b - n_trunk, b) for b in range(n_trunk, n_blocks)}
    medusa: dict[int, HeadInfo] = {}
    trunk_types: dict[str, int] = {}
    total = 0
    for name, shape, gtype, _ in h.tensors:
        info = TensorInfo(name, gguf.GGMLQuantizationType(gtype).name, shape, tensor_nbytes(shape, gtype))
        total += info.n_bytes
        m = _BLK.match(name)
        mm = _MEDUSA.match(name)
        if m and int(m.group(1)) in heads:
            heads[int(m.group(1))].tensors.append(info)
        elif mm:
            k = int(mm.group(1))
            medusa.setdefault(k, HeadInfo("medusa", k, None)).tensors.append(info)
        elif name.startswith("medusa."):       # the shared compressed projection
            medusa.setdefault(-1, HeadInfo("medusa projection", -1, None)).tensors.append(info)
        else:
            trunk_types[info.type] = trunk_types.get(info.type, 0) + 1
    return GGUFSummary(path, arch, len(h.tensors), total, meta,
                       [hd for hd in heads.values() if hd.tensors] + [medusa[k] for k in sorted(medusa, key=lambda
                                                                                              k: (k < 0, k))],
                       trunk_types)


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
        where = f"blk.{h.block}" if h.block is not None else "shared by the heads" if h.index < 0 else \
            f"medusa.{h.index}"
        label = f"head {h.index}: {h.kind}" if h.index >= 0 else h.kind
        lines.append(f"{label} ({where}), {len(h.tensors)} tensors, "
                     f"{human_bytes(h.n_bytes)}, types {'/'.join(h.types)}")
        for t in h.tensors:
            shape = "×".join(str(x) for x in t.shape)
            lines.append(f"  {t.name:<40} {t.type:<6} {shape:<16} {human_bytes(t.n_bytes)}")
    return "\n".join(lines)
