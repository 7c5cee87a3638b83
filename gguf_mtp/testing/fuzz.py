"""Hostile variants of valid input files, for the fuzz tests.

:func:`gguf_fields` walks a GGUF header and returns every structural field
(counts, lengths, value types, tensor dims, types and offsets) with its byte
offset; :func:`gguf_mutants` turns a valid file into seeded hostile variants:
truncations at every structural boundary and at random offsets, huge lengths
and counts, bit flips in the header, wrong value and tensor types, wrong
shapes. :func:`json_mutants` and :func:`bytes_mutants` do the same for the
JSON and safetensors files of heads directories and distilled data.

Every variant is named, so a failing case can be rebuilt from (seed, name).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np

from ..gguf.constants import SCALAR_FORMAT, ValueType


@dataclass(frozen=True)
class Field:
    offset: int
    size: int          # bytes: 4 or 8
    kind: str          # "n_tensors", "n_kv", "key_len", "vtype", "str_len", "arr_type", "arr_len",
    #                    "name_len", "n_dims", "dim", "ggml_type", "data_offset"


def gguf_fields(data: bytes) -> list[Field]:
    """The structural fields of a valid GGUF's header, in file order."""
    out = [Field(8, 8, "n_tensors"), Field(16, 8, "n_kv")]
    n_tensors, n_kv = struct.unpack_from("<QQ", data, 8)
    at = 24

    def value(at: int, vtype: int) -> int:
        if vtype == ValueType.STRING:
            out.append(Field(at, 8, "str_len"))
            return at + 8 + struct.unpack_from("<Q", data, at)[0]
        if vtype == ValueType.ARRAY:
            etype, n = struct.unpack_from("<IQ", data, at)
            out.append(Field(at, 4, "arr_type"))
            out.append(Field(at + 4, 8, "arr_len"))
            at += 12
            if etype in SCALAR_FORMAT:
                return at + n * struct.calcsize(SCALAR_FORMAT[etype])
            for _ in range(n):
                at = value(at, etype) if etype != ValueType.STRING or n <= 16 else \
                    at + 8 + struct.unpack_from("<Q", data, at)[0]
            return at
        return at + struct.calcsize(SCALAR_FORMAT[vtype])

    for _ in range(n_kv):
        out.append(Field(at, 8, "key_len"))
        at += 8 + struct.unpack_from("<Q", data, at)[0]
        vtype = struct.unpack_from("<I", data, at)[0]
        out.append(Field(at, 4, "vtype"))
        at = value(at + 4, vtype)
    for _ in range(n_tensors):
        out.append(Field(at, 8, "name_len"))
        at += 8 + struct.unpack_from("<Q", data, at)[0]
        n_dims = struct.unpack_from("<I", data, at)[0]
        out.append(Field(at, 4, "n_dims"))
        at += 4
        for _ in range(n_dims):
            out.append(Field(at, 8, "dim"))
            at += 8
        out.append(Field(at, 4, "ggml_type"))
        out.append(Field(at + 4, 8, "data_offset"))
        at += 12
    return out


#: values written into a field of each size: huge, zero, just past a 32-bit length, all ones
_HOSTILE = {8: (2**62, 0, 2**32 + 1, 2**64 - 1), 4: (2**31, 0, 99, 2**32 - 1)}


def gguf_mutants(data: bytes, rng: np.random.Generator, n_random: int = 20, per_kind: int = 4):
    """Named hostile variants of the GGUF ``data``, yielded one at a time: up to
    ``per_kind`` fields of each kind (the first, the last, random ones between)
    get each hostile value."""
    fields = gguf_fields(data)
    header_end = fields[-1].offset + fields[-1].size
    by_kind: dict[str, list[Field]] = {}
    for f in fields:
        by_kind.setdefault(f.kind, []).append(f)
    chosen = []
    for fs in by_kind.values():
        pick = {0, len(fs) - 1, *(int(i) for i in rng.integers(0, len(fs), max(0, per_kind - 2)))}
        chosen += [fs[i] for i in sorted(pick)]
    cuts = sorted({4, 8, 16, 24, header_end, *(f.offset for f in chosen), *(f.offset + f.size for f in chosen),
                   *(int(x) for x in rng.integers(1, len(data), n_random))})
    for c in cuts:
        if c < len(data):
            yield f"cut@{c}", data[:c]
    for f in chosen:
        for v in _HOSTILE[f.size]:
            b = bytearray(data)
            b[f.offset:f.offset + f.size] = v.to_bytes(f.size, "little")
            yield f"{f.kind}@{f.offset}={v}", bytes(b)
    for i in range(n_random):
        b = bytearray(data)
        at = int(rng.integers(0, header_end))
        b[at] ^= 1 << int(rng.integers(0, 8))
        yield f"flip#{i}@{at}", bytes(b)
    yield "magic", b"GGUX" + data[4:]
    yield "empty", b""


def bytes_mutants(data: bytes, rng: np.random.Generator, n_random: int = 10) -> list[tuple[str, bytes]]:
    """Truncations and bit flips of any file (safetensors shards, heads tensors)."""
    head = min(len(data), 8 + int.from_bytes(data[:8], "little")) if len(data) >= 8 else len(data)
    cuts = sorted({0, 4, 8, head // 2, head, (head + len(data)) // 2, len(data) - 1})
    out = [(f"cut@{c}", data[:c]) for c in cuts if 0 <= c < len(data)]
    b = bytearray(data)
    b[:8] = (2**62).to_bytes(8, "little")
    out.append(("header_len=huge", bytes(b)))
    for i in range(n_random):
        b = bytearray(data)
        at = int(rng.integers(0, max(1, head)))
        b[at] ^= 1 << int(rng.integers(0, 8))
        out.append((f"flip#{i}@{at}", bytes(b)))
    return out


def json_mutants(doc: dict, rng: np.random.Generator, keys=None) -> list[tuple[str, str]]:
    """Named hostile variants of a JSON object: cut text, non-objects, each key
    removed, each value replaced by a wrong type or an out-of-range number.
    ``keys``: mutate only these keys (the rest of ``doc`` stays as it is)."""
    text = json.dumps(doc)
    out = [("cut", text[: len(text) // 2]), ("list", "[]"), ("null", "null"), ("binary", "\udcff")]
    for k in (doc if keys is None else [k for k in keys if k in doc]):
        out.append((f"-{k}", json.dumps({x: v for x, v in doc.items() if x != k})))
        for name, v in (("str", "x"), ("neg", -1), ("huge", 2**62), ("list", [1, 2]), ("null", None)):
            out.append((f"{k}={name}", json.dumps({**doc, k: v})))
    return out
