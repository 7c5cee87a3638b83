"""Vocabulary compression for drafting (FR-Spec style, as FastMTP uses it).

Most of a drafting step's cost in a small model is the LM head: a 151,936-row
projection for a 128-wide hidden state. The draft rarely needs most of those
rows: the N most frequent tokens of the target's own output cover nearly all
of what it writes. ``compress_vocab`` counts token frequencies in
self-distilled data (``gguf-mtp distill-data``), keeps the N most frequent
(end-of-generation tokens always included) and writes, for every MTP block,
``blk.i.nextn.draft_head``: those N rows of the block's LM head, copied byte
for byte at their stored type, in frequency order. The token ids go into the
key ``gguf_mtp.draft_vocab`` (int32 array, same order). A GGUF with Medusa
heads also gets ``medusa.draft_head``: the same rows of the trunk's LM head,
one projection shared by every Medusa head (patch 0007), so the target pass
computes K x N head logits instead of K x n_vocab.

The patched MTP graph (patch 0006) then computes only N logits per draft step
(zero-padded to the vocabulary size, so the runtime's buffers keep their
layout) and the runtime maps them back to token ids; tokens outside the set
can never be drafted. Verification stays over the full vocabulary in the
target pass, so output is unchanged: greedy speculative output equals plain
decoding, and sampling stays exact (the draft distribution is simply zero
outside the set).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..gguf.constants import Keys, arch_key
from ..gguf.inspect import read_int_array, tensor_nbytes
from ..gguf.writer import (
    ARRAY,
    INT32,
    STRING,
    SourceFile,
    Tensor,
    encode_kv,
    write_gguf,
)

#: GGUF architectures whose MTP graph reads blk.i.nextn.draft_head (patch 0006; gemma3: 0008)
SUPPORTED_ARCHS = ("qwen35", "llama", "qwen2", "qwen3", "gemma3")


class VocabError(ValueError):
    pass


@dataclass
class CompressResult:
    path: Path
    size: int
    coverage: float            # share of the counted tokens inside the draft vocabulary
    blocks: list[int]


def token_counts(data_dir: str | Path, n_vocab: int, responses_only: bool = False) -> np.ndarray:
    """How often each token id occurs in self-distilled data; in teacher-forced
    text (``distill-data text``) how often the target picks it, not the text."""
    from .distill import load_sequences, read_manifest
    from .distill_text import SOURCE as TEXT

    text = (read_manifest(data_dir) or {}).get("source") == TEXT
    counts = np.zeros(n_vocab, dtype=np.int64)
    for seq in load_sequences(data_dir):
        if text:
            toks = seq["topk_indices"][:, 0]
        else:
            toks = seq["tokens"][seq["n_prompt"]:] if responses_only else seq["tokens"]
        counts += np.bincount(np.asarray(toks, dtype=np.int64), minlength=n_vocab)[:n_vocab]
    return counts


def bpe_rank_counts(path: str | Path) -> np.ndarray | None:
    """Pseudo-frequencies from a byte-level BPE vocabulary's merge order, for a
    draft vocabulary without distilled data: a BPE tokenizer numbers its tokens
    in the order their merges were learnt, most frequent first, so the lowest
    ids are the most used. Measured on greedy output: the 16,384 lowest ids
    cover 98.1% of the default model's (Qwen BPE) tokens and the 8,192 lowest
    88.3% of SmolLM2's. SentencePiece vocabularies have no such order (Gemma 3:
    the 16,384 best-scored cover 59%), so None unless the tokenizer is BPE.
    Control and unused tokens count 0 (end-of-generation ids are added anyway)."""
    from ..gguf.inspect import read_array, read_header

    h = read_header(path)
    if h.kv.get("tokenizer.ggml.model") != "gpt2":
        return None
    tokens = h.kv.get("tokenizer.ggml.tokens")
    n = len(tokens) if isinstance(tokens, list) else int(tokens)
    counts = np.arange(n, 0, -1, dtype=np.int64)
    try:
        types = np.asarray(read_array(path, "tokenizer.ggml.token_type", h))
        counts[types != 1] = 0                  # 1: a normal token
    except (KeyError, ValueError):
        pass
    return counts


def select_draft_vocab(counts: np.ndarray, size: int, always: list[int] = ()) -> np.ndarray:
    """The ``size`` most frequent ids (ties by id), ``always`` included; most frequent first."""
    n_vocab = len(counts)
    if not 1 <= size <= n_vocab:
        raise VocabError(f"draft vocabulary size must be between 1 and {n_vocab}, got {size}")
    order = np.lexsort((np.arange(n_vocab), -counts))        # by count desc, then id
    forced = [t for t in dict.fromkeys(always) if 0 <= t < n_vocab]
    chosen = forced + [int(t) for t in order if t not in set(forced)][:max(0, size - len(forced))]
    chosen = chosen[:size]
    return np.asarray(sorted(chosen, key=lambda t: (-counts[t], t)), dtype=np.int32)


def _eog_ids(src: SourceFile) -> list[int]:
    kv = src.header.kv
    return [int(kv[k]) for k in ("tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                                  "tokenizer.ggml.eom_token_id") if k in kv]


def read_draft_vocab(path: str | Path) -> np.ndarray | None:
    """The draft vocabulary a GGUF carries, or None."""
    return read_int_array(path, Keys.Drafter.DRAFT_VOCAB)


def _head_rows(src: SourceFile, block: int, ids: np.ndarray) -> Tensor:
    """Rows ``ids`` of the LM head MTP block ``block`` uses, raw bytes at their type."""
    names = {t[0] for t in src.header.tensors}
    for name in (f"blk.{block}.nextn.shared_head_head.weight", "output.weight", "token_embd.weight"):
        if name in names:
            head = src.tensor(name)
            break
    else:
        raise VocabError(f"{src.path}: no LM head tensor for MTP block {block}")
    n_embd, n_rows = head.shape
    row_bytes = tensor_nbytes((n_embd, 1), head.gtype)
    if ids.max() >= n_rows:
        raise VocabError(f"{src.path}: token id {int(ids.max())} beyond the head's {n_rows} rows")
    data = bytearray()
    with open(head.path, "rb") as f:
        for t in ids:
            f.seek(head.offset + int(t) * row_bytes)
            data += f.read(row_bytes)
    return Tensor(f"blk.{block}.nextn.draft_head.weight", (n_embd, len(ids)), head.gtype, data=bytes(data))


def compress_vocab(target: str | Path, data_dir: str | Path | Sequence[str | Path] | None, out: str | Path,
                   size: int, *, responses_only: bool = False, progress: bool = True,
                   counts: np.ndarray | None = None) -> CompressResult:
    """Write TARGET with a draft vocabulary of ``size`` tokens as OUT: the most
    frequent tokens of the distilled data in ``data_dir`` (one directory, or
    several counted together: answers and recorded text), or of ``counts``, a
    frequency per token id."""
    from ..heads.medusa import DRAFT_HEAD, block_name

    src = SourceFile.open(target)
    kv = src.header.kv
    arch = kv.get("general.architecture")
    n_blocks = int(kv[arch_key(Keys.LLM.BLOCK_COUNT, arch)])
    n_nextn = int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0))
    has_medusa = block_name(0, 0, "weight") in {t[0] for t in src.header.tensors}
    if n_nextn and arch not in SUPPORTED_ARCHS and not has_medusa:
        raise VocabError(f"{target}: vocabulary compression runs in the MTP graphs of "
                         f"{', '.join(SUPPORTED_ARCHS)} (and in Medusa heads of any arch); this file is {arch!r}")
    if arch not in SUPPORTED_ARCHS:
        n_nextn = 0          # Medusa heads only
    if n_nextn == 0 and not has_medusa:
        raise VocabError(f"{target}: no MTP layers or Medusa heads to draft with")
    if "output.bias" in {t[0] for t in src.header.tensors}:
        raise VocabError(f"{target}: an LM head with a bias is not supported by the draft head")
    tokens = kv.get("tokenizer.ggml.tokens")
    n_vocab = len(tokens) if isinstance(tokens, list) else int(tokens)
    if Path(out).resolve() == src.path.resolve():
        raise VocabError(f"{out}: write to a new file, not over TARGET")

    if counts is None:
        from .distill import check_data_for

        dirs = [data_dir] if isinstance(data_dir, (str, Path)) else list(data_dir)
        counts = np.zeros(n_vocab, dtype=np.int64)
        for d in dirs:
            check_data_for(d, target)      # data distilled from another model would pick the wrong ids
            counts += token_counts(d, n_vocab, responses_only)
    if counts.sum() == 0:
        raise VocabError(f"{data_dir or 'counts'}: no tokens recorded")
    ids = select_draft_vocab(counts, size, _eog_ids(src))
    coverage = float(counts[ids].sum() / counts.sum())

    blocks = list(range(n_blocks - n_nextn, n_blocks))
    drafts = [_head_rows(src, b, ids) for b in blocks]
    if has_medusa:       # one compressed projection shared by the Medusa heads (same ids)
        rows = _head_rows(src, -1, ids)
        drafts.append(Tensor(DRAFT_HEAD, rows.shape, rows.gtype, data=rows.data))
    entries = [src.raw_kv(k) for k in src.header.kv
               if k != Keys.Drafter.DRAFT_VOCAB and not (has_medusa and k == Keys.Medusa.PROJECTION)]
    entries.append(encode_kv(Keys.Drafter.DRAFT_VOCAB, ARRAY, [int(t) for t in ids], etype=INT32))
    if has_medusa:
        entries.append(encode_kv(Keys.Medusa.PROJECTION, STRING, "draft"))
    kept = [t for t in src.tensors() if not t.name.endswith(".nextn.draft_head.weight") and t.name != DRAFT_HEAD]
    align = int(kv.get("general.alignment", 32))
    path = write_gguf(out, entries, kept + drafts, alignment=align, progress=progress, desc="Writing")
    return CompressResult(path, len(ids), coverage, blocks)


__all__ = ["CompressResult", "VocabError", "bpe_rank_counts", "compress_vocab", "read_draft_vocab",
           "select_draft_vocab", "token_counts"]
