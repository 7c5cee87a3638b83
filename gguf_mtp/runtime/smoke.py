"""Does the installed runtime run on this machine? A smoke test in a child process.

A runtime compiled for one CPU can die on another (an instruction the CPU
lacks), and a kernel can fault or compute garbage on a CPU that has the
instructions (the AMX case in :mod:`gguf_mtp.runtime.cpu`). A fault kills the
whole interpreter, so the test runs in a child: it writes a tiny GGUF (a
2-layer llama with Q4_0/Q5_0/Q8_0 weights, shaped so that ggml's AMX and repacked
kernels take it), prefills a few tokens (the multi-row kernels) and decodes
greedily one token at a time (the one-row kernels), once with llama.cpp's
extra weight buffer types (AMX, CPU repacking) and once without, and checks
that the logits are finite and agree.

Outcomes (:class:`SmokeResult`):

* ``ok`` — the runtime runs here; a marker records it for this runtime build
  and this CPU (:func:`ensure_usable` then costs a stat);
* ``fault in extra buffer types`` — the child died (or disagreed) with the
  extra buffer types and passed without them: a kernel of AMX or repacking
  is at fault; the build drops AMX and tries again;
* ``fault`` — the child died without them too: the instruction set the
  runtime was compiled for does not run here; the build falls back to a
  portable instruction set.

``GGUF_MTP_SMOKE_FAULT=extra|all|amx`` makes the child kill itself with
SIGILL (with the extra buffer types, always, or when the AMX buffer type is
active), so every fallback can be tested on any machine. ``GGUF_MTP_SMOKE=off`` skips the check at model-load time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import upstream
from . import cpu

#: bump when the smoke model or the checks change (re-verifies every machine)
SMOKE_VERSION = 3

#: shapes: 256-wide rows (AMX: K a multiple of 256 for its Q4_0 kernels;
#: repack: rows a multiple of 8), a vocabulary of 512 byte-level tokens
N_EMBD, N_FF, N_HEAD, N_LAYER, N_VOCAB, N_CTX = 256, 512, 4, 2, 512, 128
PROMPT = [1, 300, 301, 302, 303, 40, 41, 42, 43, 44, 45, 46]
N_DECODE = 8
#: the two kernel paths quantize activations alike; 5% of the logit range
#: separates rounding from garbage by orders of magnitude
TOLERANCE = 0.05


class RuntimeUnusable(upstream.RuntimeMissing):
    """The installed runtime does not run correctly on this machine."""


@dataclass
class SmokeResult:
    ok: bool
    outcome: str                     # "ok" | "fault in extra buffer types" | "fault"
    detail: str = ""
    signal: str | None = None        # the signal that killed the child, if any
    buffers: list[str] = field(default_factory=list)   # weight buffer types the model used
    runs: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- the tiny GGUF

def _byte_tokens() -> list[str]:
    """GPT-2's byte-to-unicode table: 256 printable symbols, one per byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]


def write_smoke_gguf(path: Path, float_weights: bool = False) -> Path:
    """A deterministic 2-layer llama (random weights, fixed seed) in the bundled
    gguf-py: Q4_0 matrices and a Q8_0 embedding, or all F32 (``float_weights``,
    for llama.cpp's quantizer to turn into a K-quant mix)."""
    import gguf

    rng = np.random.default_rng(1234)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    w = gguf.GGUFWriter(str(tmp), "llama")
    w.add_name("gguf-mtp smoke test")
    w.add_context_length(N_CTX)
    w.add_embedding_length(N_EMBD)
    w.add_block_count(N_LAYER)
    w.add_feed_forward_length(N_FF)
    w.add_head_count(N_HEAD)
    w.add_head_count_kv(N_HEAD)
    w.add_rope_dimension_count(N_EMBD // N_HEAD)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(N_VOCAB)
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if float_weights else gguf.LlamaFileType.MOSTLY_Q4_0)
    toks = _byte_tokens() + [f"<extra_{i}>" for i in range(N_VOCAB - 256)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(toks)
    w.add_token_types([gguf.TokenType.NORMAL] * N_VOCAB)
    w.add_token_merges([f"{toks[i]} {toks[j]}" for i, j in ((72, 69), (76, 76))])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)

    def mat(name, rows, cols, qtype, scale):
        a = (rng.standard_normal((rows, cols)) * scale).astype(np.float32)
        if float_weights:
            w.add_tensor(name, a)
        else:
            w.add_tensor(name, gguf.quants.quantize(a, qtype), raw_dtype=qtype)

    def vec(name, n):
        w.add_tensor(name, (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32))

    Q4, Q8 = gguf.GGMLQuantizationType.Q4_0, gguf.GGMLQuantizationType.Q8_0  # noqa: F841 (Q4 per layer below)
    mat("token_embd.weight", N_VOCAB, N_EMBD, Q8, 1.0)
    Q5 = gguf.GGMLQuantizationType.Q5_0
    for i in range(N_LAYER):
        Q4 = (gguf.GGMLQuantizationType.Q4_0, Q5)[i % 2]   # layer 1 in Q5_0: its multi-row kernel is checked too
        vec(f"blk.{i}.attn_norm.weight", N_EMBD)
        for t in ("attn_q", "attn_k", "attn_v", "attn_output"):
            mat(f"blk.{i}.{t}.weight", N_EMBD, N_EMBD, Q4, N_EMBD ** -0.5)
        vec(f"blk.{i}.ffn_norm.weight", N_EMBD)
        mat(f"blk.{i}.ffn_gate.weight", N_FF, N_EMBD, Q4, N_EMBD ** -0.5)
        mat(f"blk.{i}.ffn_up.weight", N_FF, N_EMBD, Q4, N_EMBD ** -0.5)
        mat(f"blk.{i}.ffn_down.weight", N_EMBD, N_FF, Q4, N_FF ** -0.5)
    vec("output_norm.weight", N_EMBD)
    mat("output.weight", N_VOCAB, N_EMBD, Q4, N_EMBD ** -0.5)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)
    return path


def smoke_gguf(float_weights: bool = False) -> Path:
    """The smoke model, written once into the cache."""
    path = upstream.cache_dir() / "smoke" / f"smoke-v{SMOKE_VERSION}{'-f32' if float_weights else ''}.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_smoke_gguf(path, float_weights)
    return path


# ---------------------------------------------------------------------------- the child

def _child(model: str, extra_bufts: bool) -> dict:
    fault = os.environ.get("GGUF_MTP_SMOKE_FAULT", "")
    if fault == "all" or (fault == "extra" and extra_bufts):
        os.kill(os.getpid(), signal.SIGILL)   # what a faulting kernel does
    import llama_cpp.llama_cpp as L

    L.llama_backend_init()
    if fault == "amx" and extra_bufts:
        from .ggml_lib import loaded_extra_buffer_types

        if "AMX" in loaded_extra_buffer_types():
            os.kill(os.getpid(), signal.SIGILL)   # the AMX fault of GCC 12 builds without patch 0009
    mp = L.llama_model_default_params()
    mp.use_extra_bufts = extra_bufts
    model_p = L.llama_model_load_from_file(model.encode(), mp)
    if not model_p:
        raise SystemExit("llama.cpp could not load the smoke model")
    cp = L.llama_context_default_params()
    cp.n_ctx = N_CTX
    cp.n_batch = cp.n_ubatch = 64
    cp.n_threads = cp.n_threads_batch = 2
    ctx = L.llama_init_from_model(model_p, cp)
    n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model_p))
    logits_rows, tokens = [], []
    toks = (L.llama_token * len(PROMPT))(*PROMPT)
    if L.llama_decode(ctx, L.llama_batch_get_one(toks, len(PROMPT))) != 0:
        raise SystemExit("prefill failed")
    for _ in range(N_DECODE):
        row = np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, -1), shape=(n_vocab,)).copy()
        logits_rows.append(row.tolist())
        tok = int(np.argmax(row))
        tokens.append(tok)
        one = (L.llama_token * 1)(tok)
        if L.llama_decode(ctx, L.llama_batch_get_one(one, 1)) != 0:
            raise SystemExit("decode failed")
    L.llama_free(ctx)
    L.llama_model_free(model_p)
    return {"tokens": tokens, "logits": logits_rows}


def _invariance_child(models: list[str]) -> dict:
    """For each model: are the rows of an 8-row batch bit-identical to one-row
    decoding, at batch-invariance level 1 (patch 0010)?"""
    import ctypes

    import llama_cpp.llama_cpp as L

    L.llama_backend_init()
    setter = L._lib.llama_set_batch_invariant
    setter.argtypes = [ctypes.c_void_p, ctypes.c_int32]
    setter.restype = None
    out = {}
    for model in models:
        mp = L.llama_model_default_params()
        model_p = L.llama_model_load_from_file(model.encode(), mp)
        cp = L.llama_context_default_params()
        cp.n_ctx = N_CTX
        cp.n_batch = cp.n_ubatch = 64
        cp.n_threads = cp.n_threads_batch = 2
        ctx = L.llama_init_from_model(model_p, cp)
        n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model_p))
        mem = L.llama_get_memory(ctx)

        def decode(tokens, pos0):
            b = L.llama_batch_init(len(tokens), 0, 1)
            for i, t in enumerate(tokens):
                b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = t, pos0 + i, 1, True
                b.seq_id[i][0] = 0
            b.n_tokens = len(tokens)
            rc = L.llama_decode(ctx, b)
            L.llama_batch_free(b)
            if rc != 0:
                raise SystemExit(f"decode failed ({rc})")

        def rows(n):
            return [np.ctypeslib.as_array(L.llama_get_logits_ith(ctx, i), shape=(n_vocab,)).copy() for i in range(n)]

        decode(PROMPT, 0)
        tok = int(np.argmax(rows(len(PROMPT))[-1]))
        seq, one = [], []
        for i in range(N_DECODE):
            seq.append(tok)
            decode([tok], len(PROMPT) + i)
            r = rows(1)[0]
            one.append(r)
            tok = int(np.argmax(r))
        L.llama_memory_clear(mem, True)
        decode(PROMPT, 0)
        setter(ctx, 1)
        decode(seq, len(PROMPT))
        batched = rows(N_DECODE)
        out[Path(model).name] = float(max(np.abs(a - b).max() for a, b in zip(batched, one)))
        L.llama_free(ctx)
        L.llama_model_free(model_p)
    return out


def _kquant_smoke() -> Path:
    """The smoke model quantized to Q4_K_M by llama.cpp (Q4_K and Q6_K weights)."""
    path = upstream.cache_dir() / "smoke" / f"smoke-v{SMOKE_VERSION}-q4_k_m.gguf"
    if not path.is_file():
        import subprocess as sp

        code = ("import sys, llama_cpp.llama_cpp as L\n"
                "L.llama_backend_init(); p = L.llama_model_quantize_default_params(); p.ftype = 15\n"
                "sys.exit(L.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))\n")
        tmp = path.with_name(path.name + ".partial")
        proc = sp.run([sys.executable, "-c", code, str(smoke_gguf(float_weights=True)), str(tmp)],
                      capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"quantizing the smoke model failed: {proc.stderr[-500:]}")
        os.replace(tmp, path)
    return path


def exact_invariance(timeout: float = 300.0) -> dict:
    """Level-1 batch invariance on this CPU (Q4_0/Q8_0 and Q4_K/Q6_K weights):
    {"level": 1 or 2, "max_diff": {...}}; level 2 (one-row kernels everywhere)
    whenever a kept multi-row kernel differs here, or the check cannot run."""
    try:
        models = [str(smoke_gguf()), str(_kquant_smoke())]
        proc = subprocess.run([sys.executable, "-m", "gguf_mtp.runtime.smoke", "--invariance", *models],
                              capture_output=True, text=True, timeout=timeout, errors="replace")
        diffs = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
    except (OSError, ValueError, IndexError, RuntimeError, subprocess.TimeoutExpired):
        diffs = None
    if diffs is None:
        return {"level": 2, "max_diff": None, "detail": "the level-1 check did not run"}
    return {"level": 1 if all(d == 0.0 for d in diffs.values()) else 2, "max_diff": diffs}


def _run_child(model: Path, extra_bufts: bool, timeout: float) -> tuple[int, dict | None, str]:
    cmd = [sys.executable, "-m", "gguf_mtp.runtime.smoke", "--child", str(model),
           "--extra-bufts" if extra_bufts else "--no-extra-bufts"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, errors="replace")
    except subprocess.TimeoutExpired:
        return -1000, None, "timed out"
    data = None
    if proc.returncode == 0:
        try:
            data = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            pass
    return proc.returncode, data, proc.stderr


def _signal_name(rc: int) -> str | None:
    if rc >= 0 or rc == -1000:
        return None
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def _buffers(log: str) -> list[str]:
    return sorted(set(re.findall(r"(\S+) model buffer size", log)))


def _why(rc: int, log: str) -> str:
    sig = _signal_name(rc)
    if sig:
        return f"killed by {sig}"
    if rc == -1000:
        return "timed out"
    lines = [ln for ln in log.strip().splitlines() if ln.strip()]
    return f"exit {rc}: " + (lines[-1][-300:] if lines else "no output")


def run(timeout: float = 300.0) -> SmokeResult:
    """Run the smoke test against the installed runtime (two child processes)."""
    model = smoke_gguf()
    rc, with_extra, log = _run_child(model, True, timeout)
    buffers = _buffers(log)
    if rc == 0 and with_extra is not None:
        rc2, without, log2 = _run_child(model, False, timeout)
        if rc2 != 0 or without is None:
            return SmokeResult(False, "fault", f"without extra buffer types: {_why(rc2, log2)}",
                               _signal_name(rc2), buffers)
        a, b = np.asarray(with_extra["logits"]), np.asarray(without["logits"])
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            return SmokeResult(False, "fault", "non-finite logits", None, buffers)
        # compare the first step's logits (same inputs on both paths) and, while
        # the greedy paths agree, every later step
        same = 1
        while same < N_DECODE and with_extra["tokens"][same - 1] == without["tokens"][same - 1]:
            same += 1
        err = float(np.abs(a[:same] - b[:same]).max() / max(1e-6, np.abs(b[:same]).max()))
        runs = {"tokens_extra": with_extra["tokens"], "tokens_plain": without["tokens"], "rel_err": err}
        if err > TOLERANCE:
            return SmokeResult(False, "fault in extra buffer types",
                               f"logits with extra buffer types ({', '.join(buffers)}) differ from the plain CPU "
                               f"kernels by {err:.3f} of their range", None, buffers, runs)
        runs["exact"] = exact_invariance(timeout)
        return SmokeResult(True, "ok", f"{', '.join(buffers)} kernels agree with the plain CPU kernels "
                                       f"(relative error {err:.1e}); exact mode level {runs['exact']['level']}",
                           None, buffers, runs)
    rc2, _, log2 = _run_child(model, False, timeout)
    if rc2 == 0:
        return SmokeResult(False, "fault in extra buffer types",
                           f"with llama.cpp's extra weight buffer types: {_why(rc, log)}; without them: ok",
                           _signal_name(rc), buffers)
    return SmokeResult(False, "fault", f"{_why(rc, log)}, also without the extra buffer types",
                       _signal_name(rc), buffers)


# ---------------------------------------------------------------------------- markers

def _marker(key: str) -> Path:
    return upstream.cache_dir() / "verified" / f"{key}-{cpu.fingerprint()}-v{SMOKE_VERSION}.json"


def record(key: str, result: SmokeResult) -> None:
    path = _marker(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "cpu": cpu.describe(), "result": result.as_dict()}, indent=2) + "\n")
    os.replace(tmp, path)


def exact_level(key: str | None = None) -> int:
    """The batch-invariance level exact mode uses here: 1 where the smoke test
    found level 1 bit-exact on this CPU, else 2 (the one-row kernels everywhere)."""
    try:
        key = key or upstream.installed_runtime().build.get("key", "")
    except upstream.RuntimeMissing:
        return 2
    v = verified(key)
    try:
        return int(v["result"]["runs"]["exact"]["level"]) if v else 2
    except (KeyError, TypeError, ValueError):
        return 2


def verified(key: str) -> dict | None:
    path = _marker(key)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if data.get("result", {}).get("ok") else None


def unusable_message(result: SmokeResult, key: str) -> str:
    hint = ("rebuild it on this machine with `gguf-mtp runtime build --force`; it tests each build and "
            "falls back to an instruction set that runs here")
    if result.outcome == "fault in extra buffer types":
        hint += (" (or, with a runtime you cannot rebuild, pass RuntimeOptions(extra_bufts=False), which "
                 "turns AMX and weight repacking off)")
    return (f"the installed llama.cpp runtime {key} does not run correctly on this CPU "
            f"({cpu.cpu_model()}): {result.outcome}: {result.detail}. {hint}.")


def ensure_usable() -> None:
    """Raise :class:`RuntimeUnusable` (a clear error, not a dead interpreter)
    unless the installed runtime passed the smoke test on this CPU. The test
    runs once per runtime build and CPU fingerprint (about 2 s)."""
    if os.environ.get("GGUF_MTP_SMOKE", "").lower() in ("off", "0", "no"):
        return
    key = upstream.installed_runtime().build.get("key", "unknown")
    if verified(key):
        return
    result = run()
    if not result.ok:
        raise RuntimeUnusable(unusable_message(result, key))
    record(key, result)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--invariance"]:
        print(json.dumps(_invariance_child(argv[1:])))
        return 0
    if argv[:1] == ["--child"]:
        out = _child(argv[1], argv[2] == "--extra-bufts")
        print(json.dumps(out))
        return 0
    res = run()
    print(json.dumps(res.as_dict(), indent=2))
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
