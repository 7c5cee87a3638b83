"""ggml's own C API (libggml), for what llama.cpp's API does not say: the
registered backends and the CPU device's extra weight buffer types. Callers
have initialised llama.cpp (:func:`gguf_mtp.runtime.native.load`, or the smoke
test's child, which must not run the smoke test itself)."""

from __future__ import annotations

import ctypes

from ..upstream import installed_runtime


def ggml() -> ctypes.CDLL:
    lib_dir = installed_runtime().package_dir / "lib"
    return ctypes.CDLL(str(next(lib_dir.glob("libggml.*"))))  # already loaded by libllama


def loaded_extra_buffer_types() -> list[str]:
    """The CPU device's extra weight buffer types (e.g. ``AMX``, ``CPU_REPACK``):
    only those whose kernels initialised on this machine are listed."""
    g = ggml()
    g.ggml_backend_dev_by_type.argtypes = [ctypes.c_int]
    g.ggml_backend_dev_by_type.restype = ctypes.c_void_p
    g.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
    g.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
    g.ggml_backend_reg_get_proc_address.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    g.ggml_backend_reg_get_proc_address.restype = ctypes.c_void_p
    g.ggml_backend_buft_name.argtypes = [ctypes.c_void_p]
    g.ggml_backend_buft_name.restype = ctypes.c_char_p
    dev = g.ggml_backend_dev_by_type(0)  # GGML_BACKEND_DEVICE_TYPE_CPU
    if not dev:
        return []
    addr = g.ggml_backend_reg_get_proc_address(g.ggml_backend_dev_backend_reg(dev), b"ggml_backend_dev_get_extra_bufts")
    if not addr:
        return []
    fn = ctypes.CFUNCTYPE(ctypes.POINTER(ctypes.c_void_p), ctypes.c_void_p)(addr)
    arr = fn(dev)
    out = []
    i = 0
    while arr and arr[i]:
        out.append(g.ggml_backend_buft_name(arr[i]).decode())
        i += 1
    return out
