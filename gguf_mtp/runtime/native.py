"""ctypes access to the patched runtime.

llama-cpp-python's low-level bindings (``llama_cpp.llama_cpp``) cover the public
C API; the symbols that the project's patch series adds are declared here, in
one table, and checked when the library is first loaded.
"""

from __future__ import annotations

import ctypes
import functools

from ..upstream import RuntimeMissing, installed_runtime
from . import ggml_lib

_c_ctx = ctypes.c_void_p
_c_model = ctypes.c_void_p

#: symbol -> (argtypes, restype) for every C function our patches add
PATCH_SYMBOLS = {
    "llama_mtp_set_embeddings_nextn": ([_c_ctx, ctypes.c_bool, ctypes.c_bool], None),
    "llama_mtp_get_embeddings_nextn_ith": ([_c_ctx, ctypes.c_int32], ctypes.POINTER(ctypes.c_float)),
    "llama_mtp_set_nextn_layer_offset": ([_c_ctx, ctypes.c_int32], None),
    "llama_medusa_n_heads": ([_c_model], ctypes.c_int32),
    "llama_medusa_n_cols": ([_c_model], ctypes.c_int32),
    "llama_medusa_set_enabled": ([_c_ctx, ctypes.c_bool], None),
    "llama_medusa_get_logits_ith": ([_c_ctx, ctypes.c_int32], ctypes.POINTER(ctypes.c_float)),
    "llama_set_batch_invariant": ([_c_ctx, ctypes.c_int32], None),
    "llama_batch_ext_add_tokens": ([ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                    ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p], ctypes.c_int32),
    "llama_get_logits_argmax_ith": ([_c_ctx, ctypes.c_int32, ctypes.c_int32], ctypes.c_int32),
    "llama_mtp_copy_embeddings_nextn": ([_c_ctx, ctypes.c_void_p, ctypes.c_int32, ctypes.c_void_p], ctypes.c_bool),
    "llama_set_greedy_argmax": ([_c_ctx, ctypes.c_bool], None),
    "llama_get_argmax_rows": ([_c_ctx, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p], ctypes.c_bool),
    "llama_decode_step": ([_c_ctx, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p,
                           ctypes.c_int32, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_void_p],
                          ctypes.c_int32),
}


class _Patched:
    """The patch series' C functions, bound to the loaded libllama."""

    def __init__(self, lib: ctypes.CDLL):
        for name, (argtypes, restype) in PATCH_SYMBOLS.items():
            try:
                fn = getattr(lib, name)
            except AttributeError as e:
                raise RuntimeMissing(
                    f"the loaded libllama lacks {name}: the installed runtime does not match "
                    "this checkout's patch series; run `gguf-mtp runtime build`"
                ) from e
            fn.argtypes = argtypes
            fn.restype = restype
            setattr(self, name, fn)


@functools.lru_cache(maxsize=1)
def load():
    """Return ``(llama_cpp.llama_cpp, patched)`` after checking the build marker
    and that the runtime runs on this CPU (:func:`gguf_mtp.runtime.smoke.ensure_usable`)."""
    installed_runtime()  # raises RuntimeMissing with a clear message
    from .smoke import ensure_usable

    ensure_usable()      # raises RuntimeUnusable: a clear error instead of a fault later
    import llama_cpp.llama_cpp as L

    L.llama_backend_init()
    return L, _Patched(L._lib)


def set_quiet(quiet: bool = True) -> None:
    """Silence (or restore) llama.cpp's own logging on stderr.

    llama-cpp-python installs its log callback when it is imported; we only
    move its logger's level. (Replacing the callback itself — with a Python one
    or with llama.cpp's default — made model loading crash inside libstdc++
    code in the CUDA build, in ``llama_model::print_info``.)"""
    load()
    from llama_cpp._logger import set_verbose

    set_verbose(not quiet)


def extra_buffer_types() -> list[str]:
    """The CPU device's extra weight buffer types llama.cpp will use (e.g.
    ``AMX``, ``CPU_REPACK``): only those whose kernels initialised on this
    machine are listed (ggml registers AMX after asking the OS for tile data)."""
    load()
    return ggml_lib.loaded_extra_buffer_types()


def compiled_cpu_features(system_info_text: str) -> list[str]:
    """CPU features the loaded ggml was compiled for, from llama_print_system_info
    (``CPU : SSE3 = 1 | AVX = 1 | ...``)."""
    feats = []
    for part in system_info_text.replace("\n", "|").split("|"):
        name, _, val = part.rpartition("=")
        name = name.split(":")[-1].strip()
        if name and val.strip() == "1":
            feats.append(name)
    return feats


def system_info() -> dict:
    """Backends compiled into the loaded runtime, the CPU features it was
    compiled for and the extra weight buffer types active on this machine."""
    L, _ = load()
    backends = []
    try:
        ggml = ggml_lib.ggml()
        count = ggml.ggml_backend_reg_count
        count.restype = ctypes.c_size_t
        get = ggml.ggml_backend_reg_get
        get.argtypes = [ctypes.c_size_t]
        get.restype = ctypes.c_void_p
        name = ggml.ggml_backend_reg_name
        name.argtypes = [ctypes.c_void_p]
        name.restype = ctypes.c_char_p
        backends = [name(get(i)).decode() for i in range(count())]
    except (AttributeError, StopIteration, OSError):
        backends = []
    try:
        extra = extra_buffer_types()
    except (AttributeError, StopIteration, OSError):
        extra = []
    text = L.llama_print_system_info().decode(errors="replace").strip()
    return {
        "backends": backends,
        "gpu_offload": bool(L.llama_supports_gpu_offload()),
        "system_info": text,
        "compiled_cpu_features": compiled_cpu_features(text),
        "extra_buffer_types": extra,
    }
