"""What this machine's CPU is and what it can really run.

Two facts decide whether a runtime build runs here:

* the instruction-set features the CPU reports (``/proc/cpuinfo`` flags on
  Linux, ``sysctl`` on macOS): a build compiled with ``-march=native`` on one
  machine may use instructions another lacks. :func:`fingerprint` hashes them,
  so a wheel built elsewhere is smoke-tested before first use.
* whether AMX tiles work. GCC 12's ``_tile_loadconfig`` (amxtileintrin.h)
  gives its asm an 8-byte memory operand for the 64-byte tile configuration,
  so GCC drops the stores that fill the configuration as dead and
  ``ldtilecfg`` loads stack garbage: ggml's AMX kernels then die with SIGSEGV
  (#GP on ``ldtilecfg``) or SIGILL (#UD on a tile left unconfigured), on CPUs
  whose AMX is fine. :func:`amx_probe` compiles ggml's pattern with the
  compiler the build will use, and the same configuration loaded through a
  full 64-byte operand, and runs both in a child process. Patch 0009 fixes
  the patched runtime; the pristine upstream tool built for the bench
  (unpatched by definition) is built without AMX when the probe faults.
"""

from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

#: flags that change which code a ggml CPU build can run (x86 and Arm names)
ISA_FLAGS = (
    "sse3", "ssse3", "sse4_1", "sse4_2", "avx", "avx2", "fma", "f16c", "bmi2",
    "avx_vnni", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd", "avx512_vnni", "avx512vbmi",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16", "fphp", "asimdhp",
)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """Instruction-set flags the CPU reports (lower case)."""
    if sys.platform.startswith("linux"):
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return frozenset()
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key.strip() in ("flags", "Features"):
                return frozenset(val.split())
        return frozenset()
    if sys.platform == "darwin":
        out = []
        for key in ("machdep.cpu.features", "machdep.cpu.leaf7_features", "hw.optional"):
            try:
                out.append(subprocess.run(["sysctl", key], capture_output=True, text=True, timeout=5).stdout)
            except (OSError, subprocess.SubprocessError):
                pass
        return frozenset(w.strip(":").lower() for w in " ".join(out).split())
    return frozenset()


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
                key, _, val = line.partition(":")
                if key.strip() in ("model name", "CPU part", "Hardware"):
                    return val.strip()
        except OSError:
            pass
    return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
    """The build-relevant subset of :func:`cpu_flags`, in a fixed order."""
    have = cpu_flags()
    return [f for f in ISA_FLAGS if f in have]


def fingerprint() -> str:
    """Short hash of (machine, CPU model, build-relevant ISA flags): equal
    fingerprints run the same instructions."""
    ident = "|".join([platform.machine(), cpu_model(), ",".join(isa_flags())])
    return hashlib.sha256(ident.encode()).hexdigest()[:12]


def describe() -> dict:
    return {"machine": platform.machine(), "cpu": cpu_model(), "isa": isa_flags(), "fingerprint": fingerprint()}


# ---------------------------------------------------------------------------- AMX

_AMX_PROBE = r"""
#include <immintrin.h>
#include <cstdint>
#include <cstring>
#include <unistd.h>
#include <sys/syscall.h>
// ggml-cpu/amx/mmq.cpp's tile configuration, byte for byte
struct tile_config_t {
    uint8_t palette_id = 0; uint8_t start_row = 0; uint8_t reserved_0[14] = {0};
    uint16_t colsb[16] = {0}; uint8_t rows[16] = {0};
};
static void fill(tile_config_t & tc) {
    tc.palette_id = 1;
    tc.rows[0] = 8;  tc.colsb[0] = 64; tc.rows[1] = 8;  tc.colsb[1] = 64;
    tc.rows[2] = 16; tc.colsb[2] = 32; tc.rows[3] = 16; tc.colsb[3] = 32;
    for (int i = 4; i < 8; ++i) { tc.rows[i] = 16; tc.colsb[i] = 64; }
}
__attribute__((noinline)) static void load_intrinsic() {   // what ggml compiles
    alignas(64) tile_config_t tc = {};
    fill(tc);
    _tile_loadconfig(&tc);
}
__attribute__((noinline)) static void load_full_operand() { // patch 0009
    alignas(64) tile_config_t tc = {};
    fill(tc);
    __asm__ volatile("ldtilecfg %0" :: "m"(tc));
}
int main(int argc, char ** argv) {
    if (syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */)) return 3;
    if (argc > 1 && argv[1][0] == 'i') load_intrinsic(); else load_full_operand();
    alignas(64) static int8_t a[16 * 64], b[16 * 64];
    alignas(64) static int32_t c[16 * 16];
    std::memset(a, 1, sizeof a); std::memset(b, 2, sizeof b);
    _tile_zero(4);
    _tile_loadd(2, a, 32);
    _tile_loadd(0, b, 64);
    _tile_dpbssd(4, 2, 0);
    _tile_stored(4, c, 64);
    _tile_release();
    return c[0] == 32 * 2 ? 0 : 4;   // 32 int8 products of 1*2 per element
}
"""


@dataclass(frozen=True)
class AmxProbe:
    """Whether ggml's AMX code runs here, built by the compiler at hand."""

    compiled: bool          # -march=native enables AMX-INT8 (ggml compiles its AMX kernels)
    machine_ok: bool        # tiles work when configured correctly (patch 0009's path)
    compiler_ok: bool       # tiles work when configured through the compiler's intrinsic (pristine ggml)
    detail: str = ""

    @property
    def as_dict(self) -> dict:
        return {"compiled": self.compiled, "machine_ok": self.machine_ok, "compiler_ok": self.compiler_ok,
                "detail": self.detail}


def _describe_rc(rc: int) -> str:
    if rc < 0:
        try:
            return f"killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return {3: "the kernel refused AMX tile data (arch_prctl)", 4: "wrong tile result"}.get(rc, f"exit {rc}")


def native_defines(cxx: str | None = None) -> set[str]:
    """The ISA macros ``-march=native`` defines for the C++ compiler (e.g. ``__AMX_INT8__``)."""
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"
    try:
        out = subprocess.run([cxx, "-march=native", "-dM", "-E", "-x", "c++", os.devnull],
                             capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return set()
    return {line.split()[1] for line in out.splitlines() if line.startswith("#define __") and len(line.split()) > 1}


@functools.lru_cache(maxsize=4)
def amx_probe(cxx: str | None = None) -> AmxProbe:
    """Compile and run the AMX probe (x86-64 Linux with a compiler whose
    ``-march=native`` enables AMX; otherwise reports ``compiled=False``).
    ``GGUF_MTP_FAKE_AMX_FAULT=compiler|machine`` makes that probe report a
    fault, to exercise the fallbacks on any machine."""
    fake = os.environ.get("GGUF_MTP_FAKE_AMX_FAULT", "")
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        return AmxProbe(False, False, False, "not x86-64 Linux")
    cxx = cxx or os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return AmxProbe(False, False, False, "no C++ compiler")
    if "__AMX_INT8__" not in native_defines(cxx) and not fake:
        return AmxProbe(False, False, False, "-march=native does not enable AMX here")
    with tempfile.TemporaryDirectory(prefix="gguf-mtp-amx-") as tmp:
        src, exe = Path(tmp) / "probe.cpp", Path(tmp) / "probe"
        src.write_text(_AMX_PROBE)
        proc = subprocess.run([cxx, "-O3", "-march=native", "-mamx-tile", "-mamx-int8", "-o", str(exe), str(src)],
                              capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            return AmxProbe(True, False, False, "the AMX probe does not compile: " + proc.stderr.strip()[-300:])
        res = {}
        for mode in ("full", "intrinsic"):
            try:
                res[mode] = subprocess.run([str(exe), mode], capture_output=True, timeout=60).returncode
            except subprocess.TimeoutExpired:
                res[mode] = 5
    machine_ok = res["full"] == 0 and fake != "machine"
    compiler_ok = machine_ok and res["intrinsic"] == 0 and fake != "compiler"
    detail = (f"correct tile config: {'ok' if res['full'] == 0 else _describe_rc(res['full'])}; "
              f"compiler's _tile_loadconfig: {'ok' if res['intrinsic'] == 0 else _describe_rc(res['intrinsic'])}")
    if fake:
        detail += f" (GGUF_MTP_FAKE_AMX_FAULT={fake})"
    return AmxProbe(True, machine_ok, compiler_ok, detail)


#: compiler flags that keep AMX out of a -march=native build (explicit -mno-*
#: win over -march whatever their order on the command line)
NO_AMX_FLAGS = ("-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16")


def with_c_flags(cmake_args: list[str], flags: tuple[str, ...]) -> list[str]:
    """``cmake_args`` with ``flags`` appended to CMAKE_C_FLAGS and CMAKE_CXX_FLAGS
    (merged into the user's own values when given)."""
    out = list(cmake_args)
    for var in ("CMAKE_C_FLAGS", "CMAKE_CXX_FLAGS"):
        prefix = f"-D{var}="
        idx = [i for i, a in enumerate(out) if a.startswith(prefix)]
        if idx:
            i = idx[-1]
            cur = out[i][len(prefix):].strip("'\"")
            out[i] = prefix + " ".join([cur, *[f for f in flags if f not in cur.split()]]).strip()
        else:
            out.append(prefix + " ".join(flags))
    return out
