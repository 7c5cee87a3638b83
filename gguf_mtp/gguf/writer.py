"""Rewriting a GGUF without re-converting its trunk.

``graft`` (MTP heads into a GGUF made elsewhere) and ``stitch`` (trained heads
back into the target) both keep one file's key/values and tensors, replace a
few key/values, and drop, replace or add tensors. This module is the one
place that does it: unchanged key/values are copied byte for byte (a 150k-token
vocabulary is never decoded), tensor data is streamed from its source file in
chunks, and the output is written to a temporary file renamed at the end.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .constants import DEFAULT_ALIGNMENT, GGUF_VERSION, SCALAR_FORMAT, ValueType
from .inspect import GGUFHeader, read_checked_header, tensor_nbytes

_CHUNK = 16 << 20

#: the value types writers pass to :func:`encode_kv`
UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64 = (ValueType.UINT32, ValueType.INT32, ValueType.FLOAT32,
                                                       ValueType.BOOL, ValueType.STRING, ValueType.ARRAY,
                                                       ValueType.UINT64)
_FMT = SCALAR_FORMAT


def _string(s: str) -> bytes:
    b = s.encode("utf-8")
    return struct.pack("<Q", len(b)) + b


def encode_kv(key: str, vtype: int, value, etype: int | None = None) -> bytes:
    """One key/value entry as it sits in a GGUF header (arrays need ``etype``)."""
    out = _string(key) + struct.pack("<I", vtype)
    if vtype == STRING:
        return out + _string(value)
    if vtype == ARRAY:
        out += struct.pack("<IQ", etype, len(value))
        if etype == STRING:
            return out + b"".join(_string(v) for v in value)
        return out + b"".join(struct.pack(_FMT[etype], v) for v in value)
    return out + struct.pack(_FMT[vtype], value)


@dataclass
class SourceFile:
    """A GGUF read once: its header and where its bytes are."""

    path: Path
    header: GGUFHeader

    @classmethod
    def open(cls, path: str | Path) -> "SourceFile":
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        return cls(path, read_checked_header(path))     # checked before anything is written from it

    def raw_kv(self, key: str) -> bytes:
        _, start, end = self.header.kv_spans[key]
        with open(self.path, "rb") as f:
            f.seek(start)
            return f.read(end - start)

    def tensor(self, name: str) -> "Tensor":
        for tname, shape, gtype, offset in self.header.tensors:
            if tname == name:
                return Tensor(tname, shape, gtype, self.path, self.header.data_offset + offset)
        raise KeyError(f"{self.path}: no tensor {name}")

    def tensors(self) -> list["Tensor"]:
        return [Tensor(n, s, t, self.path, self.header.data_offset + o) for n, s, t, o in self.header.tensors]


@dataclass
class Tensor:
    """A tensor to write: raw bytes at ``offset`` of ``path``, or ``data``."""

    name: str
    shape: tuple[int, ...]          # ne0 first, as GGUF stores it
    gtype: int                      # ggml type
    path: Path | None = None
    offset: int = 0
    data: bytes | None = None

    @property
    def nbytes(self) -> int:
        return tensor_nbytes(self.shape, self.gtype)


def write_gguf(out: str | Path, kv_entries: list[bytes], tensors: list[Tensor], *,
               alignment: int = DEFAULT_ALIGNMENT, progress: bool = True, desc: str = "Writing") -> Path:
    """Write a GGUF from encoded key/value entries and tensors; atomic rename."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate tensor names: {dup}")

    infos, offset = [], 0
    for t in tensors:
        infos.append(_string(t.name) + struct.pack("<I", len(t.shape))
                     + b"".join(struct.pack("<Q", d) for d in t.shape)
                     + struct.pack("<IQ", t.gtype, offset))
        offset += -(-t.nbytes // alignment) * alignment

    fd, tmp = partial_file(out)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(b"GGUF" + struct.pack("<IQQ", GGUF_VERSION, len(tensors), len(kv_entries)))
            for entry in kv_entries:
                f.write(entry)
            for info in infos:
                f.write(info)
            f.write(b"\0" * (-f.tell() % alignment))
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=sum(t.nbytes for t in tensors), unit="B", unit_scale=True, desc=desc)
            for t in tensors:
                _copy_tensor(t, f, bar)
                f.write(b"\0" * (-f.tell() % alignment))
            if bar is not None:
                bar.close()
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def _copy_tensor(t: Tensor, f, bar) -> None:
    n = t.nbytes
    if t.data is not None:
        if len(t.data) != n:
            raise ValueError(f"{t.name}: {len(t.data)} bytes of data, its shape and type need {n}")
        f.write(t.data)
        if bar is not None:
            bar.update(n)
        return
    with open(t.path, "rb") as src:
        src.seek(t.offset)
        left = n
        while left:
            chunk = src.read(min(_CHUNK, left))
            if not chunk:
                raise ValueError(f"{t.path}: truncated data for tensor {t.name}")
            f.write(chunk)
            left -= len(chunk)
            if bar is not None:
                bar.update(len(chunk))


#: tensor types gguf-py can encode (stitch, retrofit, Medusa heads): CLI name -> ggml type name
ENCODABLE_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0", "q5_0": "Q5_0", "q5_1": "Q5_1",
              "q4_0": "Q4_0", "q4_1": "Q4_1"}


def partial_file(out: Path) -> tuple[int, Path]:
    """An open temporary file beside ``out`` (``.OUT.PID.xxxx.partial``),
    renamed over ``out`` when complete. Partial files of ``out`` left by a
    process that no longer runs (a killed run) are removed first; the name
    never passes for the finished file."""
    for stale in out.parent.glob(f".{out.name}.*.partial"):
        pid = stale.name[len(out.name) + 2:].split(".", 1)[0]
        if pid.isdecimal() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.{os.getpid()}.", suffix=".partial", dir=out.parent)
    return fd, Path(name)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:          # another user's process
        return True
    return True


class GGUFWriteError(ValueError):
    """A tensor or value cannot be written as asked."""


def encode_tensor(array: np.ndarray, type_name: str) -> tuple[bytes, int, tuple[int, ...]]:
    """(raw bytes, ggml type, GGUF shape ne0-first) of ``array`` at ``type_name``."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    qtype = GGMLQuantizationType[type_name]
    a = np.ascontiguousarray(array, dtype=np.float32)
    try:
        raw = quantize(a, qtype)
    except NotImplementedError as e:
        raise GGUFWriteError(f"gguf-py cannot quantize to {type_name}; pick --head-type from "
                          f"{', '.join(ENCODABLE_TYPES)}") from e
    return np.ascontiguousarray(raw).tobytes(), int(qtype), tuple(reversed(a.shape))
