"""Tiny llama-arch GGUFs written with gguf-py's writer, for tests of the file
handling (reader, graft, fuzzing): valid structure, meaningless weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_small_gguf(path: str | Path, *, n_blocks: int = 2, n_nextn: int = 0, n_vocab: int = 40, n_embd: int = 32,
                     kv_heads=None, extra_kv: dict | None = None, block_tensor: str | None = "ffn_up") -> Path:
    """A llama GGUF: ``n_blocks`` layers (the last ``n_nextn`` declared MTP),
    a token list of ``n_vocab`` strings, ``head_count_kv`` per layer when
    ``kv_heads`` is given, the token embedding and one small tensor per block."""
    import gguf

    path = Path(path)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(n_blocks)
    if n_nextn:
        w.add_uint32("llama.nextn_predict_layers", n_nextn)
    w.add_embedding_length(n_embd)
    if kv_heads is not None:
        w.add_head_count_kv(list(kv_heads))
    w.add_token_list([f"t{i}" for i in range(n_vocab)])
    for k, v in (extra_kv or {}).items():
        w.add_array(k, v) if isinstance(v, list) else w.add_string(k, v)
    rng = np.random.default_rng(0)
    w.add_tensor("token_embd.weight", rng.standard_normal((n_vocab, n_embd)).astype(np.float32))
    if block_tensor:
        for b in range(n_blocks):
            w.add_tensor(f"blk.{b}.{block_tensor}.weight", rng.standard_normal((8, n_embd)).astype(np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
