"""One GGUF, loaded once: the target context and, when the file carries MTP
layers, the MTP context that drafts from the target's hidden states.

This module owns the llama.cpp calls (contexts, batches, KV-cache edits);
the decoding loop lives in :mod:`gguf_mtp.runtime.loop`, the drafters in :mod:`gguf_mtp.runtime.drafters`.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import native


class RuntimeErrorLlama(RuntimeError):
    """llama.cpp refused a model, context or batch."""


@dataclass
class RuntimeOptions:
    n_ctx: int = 4096
    n_batch: int = 512
    n_threads: int | None = None
    #: layers offloaded to a GPU (default: $GGUF_MTP_N_GPU_LAYERS or 0)
    n_gpu_layers: int = field(default_factory=lambda: int(os.environ.get("GGUF_MTP_N_GPU_LAYERS", "0")))
    #: longest draft the contexts are sized for (recurrent rollback depth)
    draft_max: int = 16
    load_mtp: bool = True
    #: KV-cache type: "f16" (llama.cpp's default) or "f32" (exact parity checks)
    kv_type: str = "f16"
    #: flash attention: None = llama.cpp's auto choice; the CPU kernel rounds Q to f16
    flash_attn: bool | None = None
    #: sequences in the target context (>1 for draft trees: one per branch)
    n_seq_max: int = 1
    #: one KV buffer shared by all sequences (needed for trees whose branches share a prefix)
    kv_unified: bool = False
    #: llama.cpp's extra weight buffer types (AMX, CPU repacking): faster
    #: kernels; False loads every weight into the plain CPU buffer
    extra_bufts: bool = True
    #: exact speculative decoding: verification passes run batch-invariant CPU
    #: kernels (patch 0010), so each verified row equals one-token decoding bit
    #: for bit; prefill and one-token passes run the normal kernels
    exact: bool = True
    #: batch invariance level for exact mode: 1 keeps the multi-row kernels that
    #: compute each row as the one-row kernel does, 2 takes the one-row kernel
    #: everywhere; None: what the runtime's smoke test verified on this CPU
    exact_level: int | None = None
    verbose: bool = False


#: batch row indices 0..63 for the verify loop's hidden-row copies (their address: no index array per pass)
_ROWS = np.arange(64, dtype=np.int32)
_ROWS_P = _ROWS.ctypes.data
_F32 = np.dtype(np.float32)

#: output flags with only the last of n rows an output, n < 33
_LAST_ONLY = [[False] * (n - 1) + [True] if n else [] for n in range(33)]

#: rows in the verify loop's ring of NextN hidden states (:meth:`Engine.target_hidden_ring`);
#: a drafter keeps a pass's rows for at most ``MTPDrafter.FLUSH_ROWS`` + ``draft_max`` + 1 rows
HIDDEN_RING_ROWS = 1024


class _Batch:
    """A reusable ``llama_batch_ext``: tokens with positions, optional per-token
    hidden-state rows (MTP inputs) and output flags."""

    def __init__(self, L, ctx, P=None, n_max: int = 512):
        self.L, self.P = L, P
        self.ptr = L.llama_batch_ext_init(ctx)
        if not self.ptr:
            raise RuntimeErrorLlama("llama_batch_ext_init failed")
        self._pos = (L.llama_pos * 4)()
        self._keep: list = []
        # reused buffers for fill(): their addresses are passed once per call
        self._toks = np.zeros(n_max, dtype=np.int32)
        self._outs = np.zeros(n_max, dtype=np.int8)
        self._toks_p, self._outs_p = self._toks.ctypes.data, self._outs.ctypes.data

    def fill(self, tokens, pos0: int, outputs, hidden: np.ndarray | None = None) -> None:
        """Consecutive tokens of sequence 0 from position ``pos0``: one call
        (patch 0011's ``llama_batch_ext_add_tokens``)."""
        self.L.llama_batch_ext_clear(self.ptr)
        rc = self.P.llama_batch_ext_add_tokens(self.ptr, 0, *self.args(tokens, pos0, outputs, hidden))
        if rc < 0:
            raise RuntimeErrorLlama(f"llama_batch_ext_add_tokens failed ({rc}: batch full or hidden size mismatch?)")

    def args(self, tokens, pos0: int, outputs, hidden: np.ndarray | None = None) -> tuple:
        """The arguments of ``llama_batch_ext_add_tokens`` after the batch and sequence id
        (tokens, n, pos0, hidden rows, their width, output flags), from reused buffers."""
        n = len(tokens)
        self._toks[:n] = tokens
        self._outs[:n] = outputs
        embd_p = width = 0
        if hidden is not None:
            if not (type(hidden) is np.ndarray and hidden.dtype == _F32 and hidden.ndim == 2 and len(hidden) == n):
                hidden = np.ascontiguousarray(hidden, dtype=np.float32).reshape(n, -1)
            try:
                # the rows' address through the buffer protocol: right after a pass this took
                # 3 us against 10 us for ``.ctypes.data`` (default model, q4_0, K = 1)
                buf = ctypes.c_char.from_buffer(hidden)
            except (TypeError, ValueError, BufferError):     # a read-only or strided array
                hidden = np.array(hidden, dtype=np.float32, order="C")
                buf = ctypes.c_char.from_buffer(hidden)
            self._keep = [hidden, buf]     # llama.cpp reads the rows when the batch is processed
            embd_p, width = ctypes.addressof(buf), hidden.shape[1]
        return self._toks_p, n, pos0, embd_p or None, width, self._outs_p

    def fill_rows(self, rows, hidden: np.ndarray | None = None) -> None:
        """General form: ``rows`` of (token, pos, seq_ids, output) — a token may
        belong to several sequences (draft trees); ``hidden[i]`` is row i's
        hidden-state input (MTP contexts)."""
        L = self.L
        L.llama_batch_ext_clear(self.ptr)
        self._keep = []
        for i, (tok, pos, seq_ids, output) in enumerate(rows):
            idx = L.llama_batch_ext_add_token(self.ptr, int(seq_ids[0]), int(tok))
            if idx != i:
                raise RuntimeErrorLlama(f"llama_batch_ext_add_token returned {idx} for row {i}")
            for s in seq_ids[1:]:
                if not L.llama_batch_ext_add_seq(self.ptr, idx, int(s)):
                    raise RuntimeErrorLlama(f"llama_batch_ext_add_seq failed for row {i}, seq {s}")
            self._pos[0] = pos
            L.llama_batch_ext_set_pos(self.ptr, idx, self._pos)
            if hidden is not None:
                row = np.ascontiguousarray(hidden[i], dtype=np.float32)
                self._keep.append(row)
                embd = L.llama_embd(row.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), 1, row.shape[0])
                if not L.llama_batch_ext_set_embd_token(self.ptr, idx, embd):
                    raise RuntimeErrorLlama("llama_batch_ext_set_embd_token failed (hidden size mismatch?)")
            if output:
                L.llama_batch_ext_set_output_logits(self.ptr, idx, True)

    def free(self):
        if self.ptr:
            self.L.llama_batch_ext_free(self.ptr)
            self.ptr = None


class Engine:
    """The loaded model with its target context and (optionally) MTP context."""

    def __init__(self, path: str | os.PathLike, options: RuntimeOptions | None = None):
        self.path = Path(path)
        self.opts = opts = options or RuntimeOptions()
        if not self.path.exists():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        from ..gguf.inspect import read_checked_header

        # our own reader first: a truncated or corrupt file is a clear error here
        # instead of whatever llama.cpp's loader makes of it (the header is kept for
        # the arrays read below)
        header = read_checked_header(self.path)
        L, P = native.load()
        self.L, self.P = L, P
        native.set_quiet(not opts.verbose)

        mparams = L.llama_model_default_params()
        mparams.n_gpu_layers = opts.n_gpu_layers
        mparams.load_mtp = opts.load_mtp
        mparams.use_extra_bufts = opts.extra_bufts
        self.model = L.llama_model_load_from_file(str(self.path).encode(), mparams)
        if not self.model:
            raise RuntimeErrorLlama(f"{self.path}: llama.cpp could not load this GGUF "
                                    "(run with verbose=True to see its log)")
        self.vocab = L.llama_model_get_vocab(self.model)
        self.n_vocab = L.llama_vocab_n_tokens(self.vocab)
        self.n_embd = L.llama_model_n_embd(self.model)
        self.n_nextn = L.llama_model_n_layer_nextn(self.model)
        # raw addresses of logits rows (c_void_p: no ctypes pointer objects) and cached buffer views
        self._logits_ith = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)(
            ("llama_get_logits_ith", L._lib))
        self._logits_base = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(("llama_get_logits", L._lib))
        self._views: dict = {}
        #: whether a token ends generation, asked of llama.cpp once per token id (the loop checks every token)
        self._eog: dict[int, bool] = {}
        #: compressed draft vocabulary (token ids) the MTP head drafts over, or None
        self.draft_vocab = None
        if self.n_nextn and opts.load_mtp:
            from ..gguf.constants import Keys
            from ..gguf.inspect import read_int_array

            self.draft_vocab = read_int_array(self.path, Keys.Drafter.DRAFT_VOCAB, header)
        #: Medusa heads in the file (0 = none) and the columns of each head's logits
        self.n_medusa = int(P.llama_medusa_n_heads(self.model))
        self.medusa_cols = int(P.llama_medusa_n_cols(self.model))
        self.medusa_vocab = None
        if self.n_medusa and self.medusa_cols < self.n_vocab:
            from ..gguf.constants import Keys
            from ..gguf.inspect import read_int_array

            self.medusa_vocab = read_int_array(self.path, Keys.Drafter.DRAFT_VOCAB, header)
            if self.medusa_vocab is None or len(self.medusa_vocab) != self.medusa_cols:
                raise RuntimeErrorLlama(f"{self.path}: medusa.draft_head has {self.medusa_cols} rows but "
                                        f"{Keys.Drafter.DRAFT_VOCAB} does not list as many token ids")
        self._medusa_on = False
        threads = opts.n_threads or os.cpu_count() or 1

        cparams = self._context_params(threads)
        cparams.n_rs_seq = opts.draft_max + 1  # recurrent layers roll back rejected drafts
        self.ctx = L.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            raise RuntimeErrorLlama(f"{self.path}: could not create the target context")
        self.mem = L.llama_get_memory(self.ctx)
        self.batch = _Batch(L, self.ctx, P, opts.n_batch)
        #: greedy passes (patch 0012): the graph ends with each output row's argmax and the
        #: logits stay on the backend; the decode loop sets these for greedy generations (the
        #: MTP one when the drafter reads only the head's winners), every other caller gets logits.
        #: Measured on the default model at q4_0: the host argmax of a K = 1 verify pass's two
        #: 151,936-logit rows took 45 us right after the pass; see docs/runtime.md
        self.greedy_target = False
        self.greedy_mtp = False
        #: per context: whether its last pass ran greedy (its logits are then not on the host)
        self._greedy: dict = {}
        self._amax = np.zeros(opts.n_batch, dtype=np.int32)
        self._amax_p = self._amax.ctypes.data
        self._ring = np.empty((HIDDEN_RING_ROWS, self.n_embd), dtype=np.float32)
        self._ring_p, self._ring_at = self._ring.ctypes.data, 0
        self._invariant = 0
        #: seconds spent inside llama.cpp's decode (target and MTP contexts): the
        #: rest of a generation's time is the host-side loop's overhead
        self.compute_s = 0.0
        #: target rows decoded after prefill (the verify batches' rows: the bench's
        #: bound prices each pass at c(rows it actually verified))
        self.target_rows = 0
        if opts.exact_level is None:
            from .smoke import exact_level

            self.exact_level = exact_level()
        else:
            self.exact_level = int(opts.exact_level)

        #: the last prompt decode(reuse=True) prefilled (see loop.PromptCache); any
        #: other use of the cache starts with clear(), which drops it
        self.prompt_cache = None

        self.mtp_ctx = None
        self.mtp_batch = None
        if opts.load_mtp and self.n_nextn > 0:
            P.llama_mtp_set_embeddings_nextn(self.ctx, True, False)
            mp = self._context_params(threads)
            mp.ctx_type = L.LLAMA_CONTEXT_TYPE_MTP
            mp.ctx_other = self.ctx
            mp.n_rs_seq = 0
            self.mtp_ctx = L.llama_init_from_model(self.model, mp)
            if not self.mtp_ctx:
                raise RuntimeErrorLlama(f"{self.path}: could not create the MTP context")
            P.llama_mtp_set_embeddings_nextn(self.mtp_ctx, True, True)
            self.mtp_mem = L.llama_get_memory(self.mtp_ctx)
            self.mtp_batch = _Batch(L, self.mtp_ctx, P, opts.n_batch)

    def _context_params(self, threads: int):
        L, o = self.L, self.opts
        c = L.llama_context_default_params()
        c.n_ctx = o.n_ctx
        c.n_batch = o.n_batch
        c.n_ubatch = o.n_batch
        c.n_seq_max = o.n_seq_max
        c.kv_unified = o.kv_unified
        c.n_threads = threads
        c.n_threads_batch = threads
        c.no_perf = True
        kv = {"f32": L.GGML_TYPE_F32, "f16": L.GGML_TYPE_F16}.get(o.kv_type)
        if kv is None:
            raise ValueError(f"kv_type must be 'f32' or 'f16', got {o.kv_type!r}")
        c.type_k = c.type_v = kv
        if o.flash_attn is not None:
            c.flash_attn_type = L.LLAMA_FLASH_ATTN_TYPE_ENABLED if o.flash_attn else L.LLAMA_FLASH_ATTN_TYPE_DISABLED
        return c

    # -- model facts ---------------------------------------------------------

    @property
    def has_mtp(self) -> bool:
        return self.mtp_ctx is not None

    def meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(4096)
        n = self.L.llama_model_meta_val_str(self.model, key.encode(), buf, len(buf))
        return buf.value.decode(errors="replace") if n >= 0 else None

    def is_eog(self, token: int) -> bool:
        r = self._eog.get(token)
        if r is None:
            r = self._eog[token] = bool(self.L.llama_vocab_is_eog(self.vocab, token))
        return r

    # -- text ----------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        data = text.encode()
        n_max = len(data) + 16
        buf = (self.L.llama_token * n_max)()
        n = self.L.llama_tokenize(self.vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            buf = (self.L.llama_token * -n)()
            n = self.L.llama_tokenize(self.vocab, data, len(data), buf, -n, add_special, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(256)
        n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = self.L.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def detokenize(self, tokens) -> str:
        return b"".join(self.token_bytes(t) for t in tokens).decode(errors="replace")

    # -- shared plumbing -----------------------------------------------------

    def clear(self) -> None:
        self.prompt_cache = None
        self.L.llama_memory_clear(self.mem, True)
        self.mtp_clear()

    def mtp_clear(self) -> None:
        if self.mtp_ctx is not None:
            self.L.llama_memory_clear(self.mtp_mem, True)

    def keep_prefix(self, n: int) -> bool:
        """Drop every target cache cell at position >= ``n`` (all sequences: a draft
        tree's branches too). False when the cache cannot (recurrent layers roll
        back only the last few positions)."""
        return bool(self.L.llama_memory_seq_rm(self.mem, -1, n, -1))

    def save_state(self) -> bytes:
        """Sequence 0 of the target cache (KV cells and recurrent state) as bytes."""
        n = self.L.llama_state_seq_get_size(self.ctx, 0)
        buf = (ctypes.c_uint8 * n)()
        got = self.L.llama_state_seq_get_data(self.ctx, buf, n, 0)
        if got != n:
            raise RuntimeErrorLlama(f"saving the target cache wrote {got} of {n} bytes")
        return bytes(buf)

    def load_state(self, data: bytes) -> bool:
        """Put back a :meth:`save_state` snapshot into an empty target cache."""
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        return self.L.llama_state_seq_set_data(self.ctx, buf, len(data), 0) == len(data)

    @contextlib.contextmanager
    def greedy_passes(self, target: bool = True, mtp: bool = True):
        """Run the target's (and the MTP context's) passes inside the block as greedy
        passes (:attr:`greedy_target`, :attr:`greedy_mtp`); the previous modes come back after."""
        before = self.greedy_target, self.greedy_mtp
        self.greedy_target, self.greedy_mtp = target, mtp
        try:
            yield self
        finally:
            self.greedy_target, self.greedy_mtp = before

    def _run(self, ctx, batch: _Batch, what: str, greedy: bool = False) -> None:
        if not batch.ptr:
            raise RuntimeErrorLlama("engine is closed")
        self._set_greedy(ctx, greedy)
        t0 = time.perf_counter()
        rc = self.L.llama_process(ctx, self.L.LLAMA_PROCESS_TYPE_DECODE, batch.ptr)
        self.compute_s += time.perf_counter() - t0
        if rc != 0:
            raise RuntimeErrorLlama(f"{what} decode failed (rc={rc})")

    def _set_greedy(self, ctx, greedy: bool) -> None:
        """Greedy or logits passes for ``ctx`` from its next pass on."""
        if greedy != self._greedy.get(ctx, False):
            # (a switch rebuilds the graph: the loop keeps one mode for a whole generation)
            self.P.llama_set_greedy_argmax(ctx, greedy)
            self._greedy[ctx] = greedy

    def _step(self, ctx, batch: _Batch, args: tuple, first: int, n: int, what: str) -> np.ndarray:
        """Fill ``batch`` (:meth:`_Batch.args`), run it as a greedy pass and read the winners of
        batch rows ``first..first+n-1``, in one call (patch 0017's ``llama_decode_step``): each
        ctypes call right after a pass cost 15-25 us with the caches cold (default model, q4_0,
        2-core EPYC), and a greedy step made three of them. Returns a view of a reused buffer."""
        if not batch.ptr:
            raise RuntimeErrorLlama("engine is closed")
        self._set_greedy(ctx, True)
        t0 = time.perf_counter()
        rc = self.P.llama_decode_step(ctx, batch.ptr, *args, first, n, self._amax_p)
        self.compute_s += time.perf_counter() - t0
        if rc != 0:
            raise RuntimeErrorLlama(f"{what} decode failed (rc={rc})" if rc > -100 else
                                    f"{what} batch: llama_batch_ext_add_tokens failed ({rc + 100})" if rc > -200
                                    else f"no {what} argmax for batch rows {first}..{first + n - 1}")
        return self._amax[:n]

    def _check_batch(self, n: int) -> None:
        if n > self.opts.n_batch:
            raise ValueError(f"batch of {n} tokens exceeds n_batch={self.opts.n_batch}")

    def _logits(self, ctx, i: int, what: str) -> np.ndarray:
        self._check_logits(ctx, what)
        return self._row_view(ctx, i, what)

    def _check_logits(self, ctx, what: str) -> None:
        if self._greedy.get(ctx, False):
            raise RuntimeErrorLlama(f"the last {what} pass was a greedy pass: its logits stay on the backend "
                                    f"(set Engine.greedy_{'target' if ctx is self.ctx else 'mtp'} = False "
                                    "before the pass to read them)")

    def _argmax_rows(self, ctx, first: int, n: int, what: str) -> np.ndarray:
        """The winners of batch rows ``first..first+n-1`` of a greedy pass (one call; a view of
        a reused buffer: copy to keep)."""
        if not self.P.llama_get_argmax_rows(ctx, first, n, self._amax_p):
            raise RuntimeErrorLlama(f"no {what} argmax for batch rows {first}..{first + n - 1}")
        return self._amax[:n]

    def _truncate(self, mem, pos: int, what: str) -> None:
        if not self.L.llama_memory_seq_rm(mem, 0, pos, -1):
            raise RuntimeErrorLlama(f"{what} cache cannot roll back to position {pos}")

    # -- target --------------------------------------------------------------

    def _set_invariant(self, on: bool) -> None:
        """Batch-invariant kernels for the next target passes (patch 0010)."""
        level = self.exact_level if on else 0
        if level != self._invariant:
            self.P.llama_set_batch_invariant(self.ctx, level)
            self._invariant = level

    def target_decode(self, tokens, pos0: int, outputs, *, prefill: bool = False) -> None:
        """Run the target over ``tokens`` at positions ``pos0...`` (one batch).
        ``prefill``: the prompt (normal kernels even in exact mode: plain and
        speculative decoding prefill alike)."""
        self._check_batch(len(tokens))
        self._set_invariant(self.opts.exact and not prefill)
        self.batch.fill(tokens, pos0, outputs)
        self._run(self.ctx, self.batch, "target", self.greedy_target)
        if not prefill:
            self.target_rows += len(tokens)

    def target_decode_argmax(self, tokens, pos0: int, outputs, first: int, n: int) -> list[int]:
        """:meth:`target_decode` as a greedy pass, then the winners of batch rows
        ``first..first+n-1`` (:meth:`target_argmax_rows`), in one call."""
        self._check_batch(len(tokens))
        self._set_invariant(self.opts.exact)
        best = self._step(self.ctx, self.batch, self.batch.args(tokens, pos0, outputs), first, n, "target")
        self.target_rows += len(tokens)
        return best.tolist()

    def target_decode_rows(self, rows) -> None:
        """Run the target over general rows (token, pos, seq_ids, output) in one batch."""
        self._check_batch(len(rows))
        self._set_invariant(self.opts.exact)
        self.batch.fill_rows(rows)
        self._run(self.ctx, self.batch, "target", self.greedy_target)
        self.target_rows += len(rows)

    def target_logits(self, i: int) -> np.ndarray:
        """Logits of batch row ``i`` of the last target decode (a view; copy to keep); not
        after a greedy pass (:attr:`greedy_target`)."""
        return self._logits(self.ctx, i, "target")

    def target_hidden(self, n: int) -> np.ndarray:
        """The NextN hidden states (MTP inputs) of rows 0..n-1 of the last target decode."""
        return self.target_hidden_rows(range(n))

    def target_hidden_rows(self, rows) -> np.ndarray:
        """The NextN hidden states of the given batch rows of the last target decode (a copy, one call)."""
        return self._hidden_rows(self.ctx, rows, "target")

    def _hidden_rows(self, ctx, rows, what: str) -> np.ndarray:
        idx = np.asarray(list(rows), dtype=np.int32)
        out = np.empty((len(idx), self.n_embd), dtype=np.float32)
        if len(idx) and not self.P.llama_mtp_copy_embeddings_nextn(ctx, idx.ctypes.data, len(idx), out.ctypes.data):
            raise RuntimeErrorLlama(f"no {what} hidden state for batch rows {idx.tolist()}")
        return out

    def target_hidden_ring(self, first: int, n: int) -> np.ndarray:
        """:meth:`target_hidden_rows` of batch rows ``first..first+n-1``, copied into a ring of
        reused rows: the returned view stays valid until :data:`HIDDEN_RING_ROWS` more rows
        have been copied. Right after a pass, a new array and the ctypes address lookups
        took 16 of the 24 us this copy cost per pass (default model, q4_0, K = 1)."""
        return self._hidden_ring(self.ctx, first, n, "target")

    def _hidden_ring(self, ctx, first: int, n: int, what: str) -> np.ndarray:
        if first + n > len(_ROWS):
            return self._hidden_rows(ctx, range(first, first + n), what)
        at = self._ring_at if self._ring_at + n <= HIDDEN_RING_ROWS else 0
        if not self.P.llama_mtp_copy_embeddings_nextn(ctx, _ROWS_P + 4 * first, n,
                                                      self._ring_p + 4 * self.n_embd * at):
            raise RuntimeErrorLlama(f"no {what} hidden state for batch rows {first}..{first + n - 1}")
        self._ring_at = at + n
        return self._ring[at:at + n]

    def target_argmax(self, i: int) -> int:
        """The target's most likely token at batch row ``i``: computed in the pass's
        graph after a greedy pass, else numpy's argmax on a view of llama.cpp's logits
        buffer (no copy, no new array per call)."""
        if self._greedy.get(self.ctx, False):
            return int(self._argmax_rows(self.ctx, i, 1, "target")[0])
        return int(self._row_view(self.ctx, i, "target").argmax())

    def target_argmax_rows(self, first: int, n: int) -> list[int]:
        """:meth:`target_argmax` of batch rows ``first .. first+n-1`` in one numpy call: the
        output rows of a batch are consecutive in llama.cpp's logits buffer (checked; row by
        row otherwise). Right after a pass each separate call cost ~24 us against 8 us in a warm
        loop (the greedy verify pass reads them with the pass: :meth:`target_decode_argmax`)."""
        if self._greedy.get(self.ctx, False):
            return self._argmax_rows(self.ctx, first, n, "target").tolist()
        rows = self._rows_view(self.ctx, first, n, "target")
        if rows is None:
            return [self.target_argmax(first + j) for j in range(n)]
        return rows.argmax(axis=1).tolist()

    def target_logits_rows(self, first: int, n: int) -> np.ndarray:
        """Logits of batch rows ``first .. first+n-1`` as one (n, n_vocab) array: a view of
        llama.cpp's buffer when the rows are consecutive in it (copy to keep), else a copy
        stacked row by row."""
        self._check_logits(self.ctx, "target")
        rows = self._rows_view(self.ctx, first, n, "target")
        if rows is None:
            return np.stack([self.target_logits(first + j) for j in range(n)])
        return rows

    def _rows_view(self, ctx, first: int, n: int, what: str) -> np.ndarray | None:
        """Rows ``first .. first+n-1`` as one slice of the cached buffer view, or None when
        llama.cpp did not lay them out consecutively."""
        view, r0 = self._row_index(ctx, first, what)
        base = self._views[ctx][0]
        stride = 4 * self.n_vocab
        if r0 + n > len(view) or self._logits_ith(ctx, first + n - 1) != base + (r0 + n - 1) * stride:
            return None
        return view[r0:r0 + n]

    def _row_index(self, ctx, i: int, what: str) -> tuple[np.ndarray, int]:
        """A cached view over the context's whole logits buffer (rebuilt when llama.cpp
        reallocates it) and the index in it of batch row ``i``'s logits."""
        addr = self._logits_ith(ctx, i)
        if not addr:
            raise RuntimeErrorLlama(f"no {what} logits for batch row {i}")
        base, view = self._views.get(ctx, (None, None))
        off = None if base is None else addr - base
        if off is None or off < 0 or off % (4 * self.n_vocab) or off // (4 * self.n_vocab) >= len(view):
            base = self._logits_base(ctx)
            view = np.ctypeslib.as_array(ctypes.cast(base, ctypes.POINTER(ctypes.c_float)),
                                         shape=(self.opts.n_batch, self.n_vocab))
            self._views[ctx] = (base, view)
            off = addr - base
        return view, off // (4 * self.n_vocab)

    def _row_view(self, ctx, i: int, what: str, n: int | None = None) -> np.ndarray:
        """Row ``i``'s logits as a slice of the cached buffer view. Measured: 2 us
        against 20 us for a fresh ``np.ctypeslib.as_array`` per row."""
        view, r = self._row_index(ctx, i, what)
        return view[r] if n is None else view[r, :n]

    def target_truncate(self, pos: int) -> None:
        """Drop target KV (and recurrent state) from position ``pos`` on."""
        self._truncate(self.mem, pos, "target")

    # -- MTP -----------------------------------------------------------------

    def mtp_decode(self, tokens, hidden: np.ndarray, pos0: int, outputs) -> None:
        """Run the MTP head over (token, hidden) pairs at positions ``pos0...``;
        ``outputs[i]`` asks for the logits and hidden state of row i."""
        self._check_batch(len(tokens))
        self.mtp_batch.fill(tokens, pos0, outputs, hidden)
        self._run(self.mtp_ctx, self.mtp_batch, "MTP", self.greedy_mtp)

    def mtp_decode_argmax(self, tokens, hidden: np.ndarray, pos0: int) -> int:
        """:meth:`mtp_decode` with only the last row an output, as a greedy pass, and that row's
        winner (:meth:`mtp_argmax`), in one call."""
        n = len(tokens)
        self._check_batch(n)
        outputs = _LAST_ONLY[n] if n < len(_LAST_ONLY) else [False] * (n - 1) + [True]
        return self._draft_id(int(self._step(self.mtp_ctx, self.mtp_batch,
                                             self.mtp_batch.args(tokens, pos0, outputs, hidden), n - 1, 1, "MTP")[0]))

    def _draft_id(self, j: int) -> int:
        """The token id of the MTP head's logit ``j`` (its draft vocabulary's j-th token if compressed)."""
        return j if self.draft_vocab is None else int(self.draft_vocab[j])

    def mtp_decode_rows(self, rows, hidden: np.ndarray) -> None:
        """Run the MTP head over general rows (token, pos, seq_ids, output), with
        ``hidden[i]`` the feature of row i, in one batch (tree drafting)."""
        self._check_batch(len(rows))
        self.mtp_batch.fill_rows(rows, hidden)
        self._run(self.mtp_ctx, self.mtp_batch, "MTP", self.greedy_mtp)

    def mtp_set_head(self, head: int) -> None:
        """Select which MTP layer (0 .. n_nextn-1) the MTP context runs."""
        if not 0 <= head < max(1, self.n_nextn):
            raise ValueError(f"MTP head {head} out of range: the model has {self.n_nextn}")
        self.P.llama_mtp_set_nextn_layer_offset(self.mtp_ctx, head)

    def mtp_logits(self, i: int) -> np.ndarray:
        """The MTP head's logits over the full vocabulary. With a compressed draft
        vocabulary the graph computes only its N logits (first in the row); the
        other tokens get -inf, so they are never drafted."""
        row = self._logits(self.mtp_ctx, i, "MTP")
        if self.draft_vocab is None:
            return row
        full = np.full(self.n_vocab, -np.inf, dtype=np.float32)
        full[self.draft_vocab] = row[:len(self.draft_vocab)]
        return full

    def mtp_argmax(self, i: int) -> int:
        """The MTP head's most likely token (over the draft vocabulary if compressed)."""
        if self._greedy.get(self.mtp_ctx, False):
            return self._draft_id(int(self._argmax_rows(self.mtp_ctx, i, 1, "MTP")[0]))
        n = None if self.draft_vocab is None else len(self.draft_vocab)
        return self._draft_id(int(self._row_view(self.mtp_ctx, i, "MTP", n).argmax()))

    def mtp_hidden(self, i: int) -> np.ndarray:
        """The MTP head's output hidden state of batch row ``i`` (a copy)."""
        return self._hidden_rows(self.mtp_ctx, (i,), "MTP")[0]

    def mtp_hidden_ring(self, i: int) -> np.ndarray:
        """:meth:`mtp_hidden` of batch row ``i`` as a (1, n_embd) view into the engine's ring of
        hidden rows (see :meth:`target_hidden_ring`): the chain's next draft step reads it
        at once, so no new array per step."""
        return self._hidden_ring(self.mtp_ctx, i, 1, "MTP")

    def mtp_truncate(self, pos: int) -> None:
        self._truncate(self.mtp_mem, pos, "MTP")

    # -- Medusa --------------------------------------------------------------

    def medusa_enable(self, on: bool = True) -> None:
        """Compute the Medusa heads for the output rows of the following target passes."""
        if on and not self.n_medusa:
            raise ValueError(f"{self.path} has no Medusa heads (convert with --heads medusa)")
        if on != self._medusa_on:
            self.P.llama_medusa_set_enabled(self.ctx, bool(on))
            self._medusa_on = bool(on)

    def _medusa_raw(self, i: int) -> np.ndarray:
        if not self._medusa_on:
            raise RuntimeErrorLlama("Medusa heads are not enabled: call medusa_enable() before the target pass")
        p = self.P.llama_medusa_get_logits_ith(self.ctx, i)
        if not p:
            raise RuntimeErrorLlama(f"no Medusa logits for output row {i}")
        return np.ctypeslib.as_array(p, shape=(self.n_medusa, self.medusa_cols))

    def medusa_logits(self, i: int) -> np.ndarray:
        """(n_heads, n_vocab) logits of the heads at target output row ``i`` (a copy);
        with a compressed draft vocabulary the other tokens get -inf."""
        raw = self._medusa_raw(i)
        if self.medusa_vocab is None:
            return raw.copy()
        full = np.full((self.n_medusa, self.n_vocab), -np.inf, dtype=np.float32)
        full[:, self.medusa_vocab] = raw
        return full

    def medusa_topk(self, i: int, k: int) -> np.ndarray:
        """(n_heads, k) token ids, most likely first, of each head at output row ``i``."""
        from .sampling import topk_indices

        raw = self._medusa_raw(i)
        order = np.stack([topk_indices(row, k) for row in raw])
        return order if self.medusa_vocab is None else self.medusa_vocab[order]

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        L = getattr(self, "L", None)
        if L is None:
            return
        for b in (getattr(self, "batch", None), getattr(self, "mtp_batch", None)):
            if b is not None:
                b.free()
        for name in ("mtp_ctx", "ctx"):
            c = getattr(self, name, None)
            if c:
                L.llama_free(c)
                setattr(self, name, None)
        if getattr(self, "model", None):
            L.llama_model_free(self.model)
            self.model = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
