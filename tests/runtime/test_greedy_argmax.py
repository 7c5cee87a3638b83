"""Greedy passes (patch 0012): the graph ends with the argmax of each output row
and the logits stay on the backend. The winners must be numpy's argmax of the
logits a normal pass returns, for the target and for the MTP head (with and
without a compressed draft vocabulary), and greedy decoding through them must
reproduce greedy decoding through the host logits token for token."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from gguf_mtp.runtime import Engine, RuntimeErrorLlama, RuntimeOptions, generate

PROMPT = 'def read_config(path):\n    """Read a configuration file and return a dict."""\n'


# -- the CPU kernel, through ggml's own C API ---------------------------------

class _InitParams(ctypes.Structure):
    _fields_ = [("mem_size", ctypes.c_size_t), ("mem_buffer", ctypes.c_void_p), ("no_alloc", ctypes.c_bool)]


def _ggml_argmax(rows: np.ndarray, n_threads: int) -> np.ndarray:
    """ggml_argmax of each row of ``rows``, computed by the CPU backend with ``n_threads``."""
    from gguf_mtp.runtime import native
    from gguf_mtp.upstream import installed_runtime

    native.load()
    lib = installed_runtime().package_dir / "lib"
    base = ctypes.CDLL(str(next(lib.glob("libggml-base.so*"))))
    cpu = ctypes.CDLL(str(next(lib.glob("libggml-cpu.so*"))))
    vp = ctypes.c_void_p
    base.ggml_init.argtypes, base.ggml_init.restype = [_InitParams], vp
    base.ggml_new_tensor_2d.argtypes, base.ggml_new_tensor_2d.restype = [vp, ctypes.c_int, ctypes.c_int64,
                                                                         ctypes.c_int64], vp
    base.ggml_argmax.argtypes, base.ggml_argmax.restype = [vp, vp], vp
    base.ggml_new_graph.argtypes, base.ggml_new_graph.restype = [vp], vp
    base.ggml_build_forward_expand.argtypes, base.ggml_build_forward_expand.restype = [vp, vp], None
    base.ggml_get_data.argtypes, base.ggml_get_data.restype = [vp], vp
    base.ggml_free.argtypes, base.ggml_free.restype = [vp], None
    cpu.ggml_graph_compute_with_ctx.argtypes = [vp, vp, ctypes.c_int]
    cpu.ggml_graph_compute_with_ctx.restype = ctypes.c_int
    n_rows, n = rows.shape
    ctx = base.ggml_init(_InitParams(rows.nbytes + (16 << 20), None, False))
    try:
        t = base.ggml_new_tensor_2d(ctx, 0, n, n_rows)          # GGML_TYPE_F32
        ctypes.memmove(base.ggml_get_data(t), np.ascontiguousarray(rows, dtype=np.float32).ctypes.data, rows.nbytes)
        best = base.ggml_argmax(ctx, t)
        gf = base.ggml_new_graph(ctx)
        base.ggml_build_forward_expand(gf, best)
        assert cpu.ggml_graph_compute_with_ctx(ctx, gf, n_threads) == 0
        out = (ctypes.c_int32 * n_rows).from_address(base.ggml_get_data(best))
        return np.array(out[:], dtype=np.int64)
    finally:
        base.ggml_free(ctx)


def test_cpu_argmax_kernel_matches_numpy_on_ties_tails_and_nans():
    rng = np.random.default_rng(0)
    n = 20011                                   # not a multiple of any vector width or slice count
    rows = rng.standard_normal((9, n)).astype(np.float32)
    rows[1, [5, 15000]] = 9.0                   # equal maxima in different threads' slices: the first wins
    rows[2, [64, 65, 79]] = 7.0                 # equal maxima inside one vector block
    rows[3, n - 1] = 11.0                       # the winner in the scalar tail
    rows[4, :3] = np.nan                        # NaNs are never picked
    rows[5, :] = np.nan
    rows[5, 12345] = -3.0                       # ... even when they are all but one
    rows[6, :] = -np.inf                        # nothing above -inf: the first index
    rows[7, :] = np.nan                         # nothing at all: 0
    rows[8, 4096 * 3] = 5.0                     # at a slice boundary
    want = [0 if np.isnan(r).all() else int(np.nanargmax(r)) for r in rows]
    for threads in (1, 2, 3, 4):
        np.testing.assert_array_equal(_ggml_argmax(rows, threads), want, err_msg=f"{threads} threads")
    short = rng.standard_normal((3, 7)).astype(np.float32)
    short[0, [2, 6]] = 4.0
    np.testing.assert_array_equal(_ggml_argmax(short, 4), short.argmax(axis=1))


# -- the engine ---------------------------------------------------------------

def _rows_both_ways(eng: Engine, toks: list[int]) -> tuple[list[int], list[int], list[int], list[int]]:
    """(target numpy, target greedy, MTP numpy, MTP greedy) winners of every row of ``toks``."""
    n = len(toks)
    out = []
    for greedy in (False, True):
        eng.clear()
        eng.greedy_target = greedy
        eng.target_decode(toks, 0, [True] * n)
        out.append(eng.target_argmax_rows(0, n) if greedy else
                   [int(eng.target_logits(i).argmax()) for i in range(n)])
    hid = eng.target_hidden(n)
    prev = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hid[:-1]])
    for greedy in (False, True):
        eng.mtp_clear()
        eng.greedy_mtp = greedy
        eng.mtp_decode(toks, prev, 0, [True] * n)
        out.append([eng.mtp_argmax(i) for i in range(n)])
    eng.greedy_target = eng.greedy_mtp = False
    return tuple(out)


@pytest.mark.parametrize("draft_vocab", [False, True], ids=["full-vocab", "draft-vocab"])
def test_greedy_pass_winners_are_numpys_argmax(default_gguf, draft_vocab):
    with Engine(default_gguf("q4_0", draft_vocab=draft_vocab), RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        toks = eng.tokenize(PROMPT)
        t_ref, t_got, m_ref, m_got = _rows_both_ways(eng, toks)
        assert t_got == t_ref
        assert m_got == m_ref
        if draft_vocab:
            assert set(m_got) <= set(int(t) for t in eng.draft_vocab)


def test_logits_of_a_greedy_pass_are_not_read(default_gguf):
    with Engine(default_gguf("q4_0"), RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        toks = eng.tokenize(PROMPT)
        eng.greedy_target = True
        eng.target_decode(toks, 0, [False] * (len(toks) - 1) + [True])
        with pytest.raises(RuntimeErrorLlama, match="greedy pass"):
            eng.target_logits(len(toks) - 1)
        best = eng.target_argmax(len(toks) - 1)
        eng.greedy_target = False                    # a normal pass: logits on the host again
        eng.clear()
        eng.target_decode(toks, 0, [False] * (len(toks) - 1) + [True])
        assert int(eng.target_logits(len(toks) - 1).argmax()) == best


def test_greedy_decoding_equals_decoding_from_host_logits(default_gguf):
    """generate() runs greedy passes; a loop that reads every token's logits on the
    host must give the same tokens (and generate() leaves the engine in logits mode)."""
    with Engine(default_gguf("q4_0", draft_vocab=True), RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        toks = eng.tokenize(PROMPT)
        ref = []
        eng.clear()
        eng.target_decode(toks, 0, [False] * (len(toks) - 1) + [True])
        tok = int(eng.target_logits(len(toks) - 1).argmax())
        for pos in range(len(toks), len(toks) + 48):
            ref.append(tok)
            eng.target_decode([tok], pos, [True])
            tok = int(eng.target_logits(0).argmax())
        for drafter, k in (("none", 0), ("mtp", 1), ("mtp", 3), ("auto", "auto")):
            g = generate(eng, toks, 48, drafter=drafter, draft=k)
            assert g.tokens == ref, f"{drafter} K={k}"
        assert not eng.greedy_target and not eng.greedy_mtp


@pytest.mark.parametrize("draft_vocab", [False, True], ids=["full-vocab", "draft-vocab"])
def test_one_call_decode_step_equals_the_separate_calls(default_gguf, draft_vocab):
    """Patch 0017's ``llama_decode_step`` (fill, greedy pass and winners in one call) gives the
    winners of a fill + pass + ``llama_get_argmax_rows``, for target rows after non-output rows
    and for the MTP head's last row, and the cache holds the same rows afterwards."""
    with Engine(default_gguf("q4_0", draft_vocab=draft_vocab), RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        toks = eng.tokenize(PROMPT)
        n, lead = len(toks), 3
        outs = [False] * lead + [True] * (n - lead)
        with eng.greedy_passes():
            eng.clear()
            eng.target_decode(toks, 0, outs)
            want = eng.target_argmax_rows(lead, n - lead)
            hid = eng.target_hidden(n)
            eng.target_decode([want[-1]], n, [True])
            want_next = eng.target_argmax_rows(0, 1)
            eng.clear()
            assert eng.target_decode_argmax(toks, 0, outs, lead, n - lead) == want
            assert eng.target_decode_argmax([want[-1]], n, [True], 0, 1) == want_next   # the cache as before

            prev = np.concatenate([np.zeros((1, eng.n_embd), np.float32), hid[:-1]])
            eng.mtp_clear()
            eng.mtp_decode(toks, prev, 0, [False] * (n - 1) + [True])
            m_want = eng.mtp_argmax(n - 1)
            eng.mtp_clear()
            assert eng.mtp_decode_argmax(toks, prev, 0) == m_want
            if draft_vocab:
                assert m_want in set(int(t) for t in eng.draft_vocab)
            with pytest.raises(RuntimeErrorLlama, match="no target argmax"):
                eng.target_decode_argmax([want[-1]], n + 1, [False], 0, 1)     # not an output row
