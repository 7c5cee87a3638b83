"""llama.cpp's own ``draft-mtp`` speculative decoding, as a benchmark baseline.

The baseline is built from the *same* pinned llama.cpp that the runtime is
built from (the tree vendored in the llama-cpp-python source distribution that
:mod:`gguf_mtp.upstream` pins), but **unpatched**: it is what a user of stock
llama.cpp at that commit gets.

:func:`build_tool` extracts the pristine sdist into the cache, configures CMake
on ``vendor/llama.cpp`` with the examples on (Release, CPU unless CMAKE_ARGS
says otherwise, no HTTPS/network support), builds only the
``llama-speculative-simple`` target, and caches the binary under
``cache_dir()/upstream-tools/<key>`` where the key hashes (sdist sha256, CMake
arguments, target, machine). A second call with the same arguments takes
milliseconds.

:func:`run_draft_mtp` runs it greedily with ``--spec-type draft-mtp`` on a
GGUF that carries its own MTP layer (qwen35, qwen35moe, ... upstream creates an
MTP draft context against the target model itself) and parses what it prints.

Notes from the pinned ``examples/speculative-simple/speculative-simple.cpp``
and ``common/speculative.cpp`` that shape this module:

* The tool has no plain (non-speculative) mode: ``--spec-type none`` makes
  ``common_speculative_init`` return null and the tool exits with "failed to
  initialize speculative decoding". Plain speed therefore comes from gguf-mtp's
  own runtime (same ggml, same file); ``draft_max=0`` is refused here.
* Its loop stops once it has *more* than ``-n`` tokens, and at the very end
  the draft is not truncated to the remaining budget (``dp.n_max == 0`` skips
  the truncation), so it overshoots by 1..K+1 tokens. We pass ``-n N-1`` and
  read the tokens one by one (``--log-jsonl`` makes every printed token its own
  JSON line), so :attr:`UpstreamRun.text` is exactly the first ``N`` generated
  tokens, comparable with plain greedy decoding of ``N`` tokens;
  :attr:`UpstreamRun.full_text` is everything it generated and
  :attr:`UpstreamRun.n_predict` counts it (speed is measured on that count).
* The decode timer starts after the prompt minus its last token has been
  evaluated; the last prompt token is evaluated inside the decode loop, as the
  first target pass. ``n_predict`` counts an end-of-generation token, which is
  not printed.
* For draft-mtp the target context gets ``n_rs_seq = K`` (recurrent-state
  rollback for hybrid models such as qwen35), so the tool does not use its
  checkpoint/re-evaluate path and its ``n_drafted`` / ``n_accept`` counters are
  exact. With ``-lv 4`` it also prints its own per-implementation statistics:
  ``#calls(b,g,a)`` (the accept calls are target verification passes),
  ``#mean acc len`` (tau: tokens per verification pass) and
  ``#acc rate/pos``.
* MTP drafting samples top-k 10 and takes the first candidate (greedy); the
  draft-confidence cutoff ``--spec-draft-p-min`` defaults to 0, so every draft
  has exactly ``min(K, tokens left)`` tokens, as in gguf-mtp's fixed-length
  drafters.
* JSON lines escape invalid UTF-8 per printed token (U+FFFD), so a character
  whose bytes are split over two tokens shows as replacement characters in
  :attr:`UpstreamRun.text`; :attr:`UpstreamRun.lossy_utf8` says when that
  happened (prompt sets in English never hit it).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .. import upstream

#: the one upstream program built
TARGET = "llama-speculative-simple"

#: bump when the recipe below changes (invalidates cached tools)
RECIPE_VERSION = 1

#: always passed to CMake; the user's CMAKE_ARGS come after and win.
#: A static, self-contained binary (no shared libs to keep beside it), only
#: the common library and the examples, no HTTPS client (no network at build
#: or run time; LLAMA_CURL is the older name of that switch, kept harmlessly).
DEFAULT_CMAKE_ARGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DGGML_BACKEND_DL=OFF",
    "-DLLAMA_BUILD_COMMON=ON",
    "-DLLAMA_BUILD_EXAMPLES=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_TOOLS=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DLLAMA_BUILD_APP=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_LLGUIDANCE=OFF",
)


class UpstreamBuildError(RuntimeError):
    pass


class UpstreamRunError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- build

def tools_dir() -> Path:
    return upstream.cache_dir() / "upstream-tools"


def _cmake_args(cmake_args: str | None) -> list[str]:
    user = shlex.split(cmake_args if cmake_args is not None else os.environ.get("CMAKE_ARGS", ""))
    return [*DEFAULT_CMAKE_ARGS, *user]


def tool_key(cmake_args: str | None = None, target: str = TARGET) -> str:
    """Cache key of the tool for ``cmake_args`` (default: $CMAKE_ARGS)."""
    ident = {
        "recipe": RECIPE_VERSION,
        "sdist": upstream.SDIST_SHA256,
        "cmake_args": _cmake_args(cmake_args),
        "target": target,
        "machine": platform.machine(),
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def _exe(name: str) -> str:
    return name + (".exe" if sys.platform == "win32" else "")


def tool_path(cmake_args: str | None = None) -> Path | None:
    """The cached ``llama-speculative-simple`` if it has been built; never builds.

    Looks for the tool built with ``cmake_args`` (default: $CMAKE_ARGS). When
    no arguments were given and that one is missing, the most recently built
    tool of this sdist is returned (e.g. a CUDA build made with CMAKE_ARGS set
    in another shell)."""
    path = tools_dir() / tool_key(cmake_args) / _exe(TARGET)
    if path.is_file():
        return path
    if cmake_args is None and tools_dir().is_dir():
        found = []
        for info in tools_dir().glob("*/build.json"):
            try:
                meta = json.loads(info.read_text())
            except (OSError, ValueError):
                continue
            exe = info.parent / _exe(TARGET)
            if meta.get("sdist_sha256") == upstream.SDIST_SHA256 and meta.get("target") == TARGET and exe.is_file():
                found.append((info.stat().st_mtime, exe))
        if found:
            return max(found)[1]
    return None


def _pristine_source(log=print) -> Path:
    """The sdist's ``vendor/llama.cpp``, extracted once, untouched."""
    root = tools_dir() / f"src-{upstream.SDIST_SHA256[:12]}"
    tree = root / "vendor" / "llama.cpp"
    if (root / ".complete").exists():
        return tree
    sdist = upstream.ensure_sdist(log=log)
    tools_dir().mkdir(parents=True, exist_ok=True)
    log(f"extracting {sdist.name} (pristine, unpatched) ...")
    with tempfile.TemporaryDirectory(dir=tools_dir()) as tmp:
        got = upstream.extract_sdist(sdist, Path(tmp))
        shutil.rmtree(root, ignore_errors=True)
        shutil.move(str(got), root)
    (root / ".complete").write_text(upstream.SDIST_SHA256 + "\n")
    return tree


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")
_MAKE_STEP = re.compile(r"^\[\s*(\d+)%\]")


def _run_logged(cmd: list[str], log_file, progress: bool, desc: str) -> int:
    bar = None
    log_file.write("$ " + shlex.join(cmd) + "\n")
    log_file.flush()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
    assert proc.stdout is not None
    for line in proc.stdout:
        log_file.write(line)
        if not progress:
            continue
        s = line.strip()
        m = _NINJA_STEP.match(s)
        done, total = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        if m is None and (m2 := _MAKE_STEP.match(s)):
            done, total = int(m2.group(1)), 100
        if done is not None:
            if bar is None:
                from tqdm import tqdm

                bar = tqdm(total=total, desc=desc, unit="step")
            bar.total = total
            bar.n = done
            bar.refresh()
    rc = proc.wait()
    if bar is not None:
        bar.close()
    log_file.flush()
    return rc


def _resolve_args(args: list[str], log=print) -> tuple[list[str], str | None]:
    """``args`` plus what this machine needs: the pristine tree has no patch
    0009, so where the compiler's ``_tile_loadconfig`` faults (GCC 12) a
    native build leaves AMX out. Returns (args, reason or None)."""
    from ..runtime import cpu

    native = not any(a.upper().startswith("-DGGML_NATIVE=") and a.split("=", 1)[1].upper() in ("OFF", "0")
                     for a in args)
    if native:
        probe = cpu.amx_probe()
        if probe.compiled and not probe.compiler_ok:
            log(f"AMX probe: {probe.detail}; the pristine build leaves AMX out")
            return cpu.with_c_flags(args, cpu.NO_AMX_FLAGS), f"AMX probe: {probe.detail}"
    return args, None


def smoke_tool(exe: Path, timeout: float = 120) -> tuple[bool, str]:
    """Run the built tool on the smoke model (a tiny llama, n-gram drafting):
    (True, "") when it decodes, else (False, why)."""
    from ..runtime.smoke import smoke_gguf

    return stock_decodes(exe, smoke_gguf(), timeout=timeout)


def stock_decodes(exe: Path, gguf: str | Path, n_predict: int = 8, timeout: float = 120) -> tuple[bool, str]:
    """Whether the pristine tool loads ``gguf`` and decodes a few tokens with it
    (n-gram drafting, which every model takes): (True, "") or (False, why).
    What stock llama.cpp of the pinned version makes of a file."""
    cmd = [str(exe), "-m", str(gguf), "-p", "hello hello hello", "-n", str(n_predict), "-c", "256",
           "-t", "2", "--spec-type", "ngram-simple", "--temp", "0", "--log-colors", "off"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, "timed out"
    if proc.returncode == 0:
        return True, ""
    why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}")
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    errors = [x for x in lines if "error" in x.lower()]
    return False, f"{why}\n" + "\n".join((errors or lines)[-8:])


def build_tool(jobs: int | None = None, cmake_args: str | None = None, progress=True, *,
               force: bool = False, log=print, _extra_flags: tuple[str, ...] = ()) -> Path:
    """Build (or reuse) upstream ``llama-speculative-simple``; returns its path.

    ``cmake_args`` (default: $CMAKE_ARGS) are passed to CMake after the
    defaults, e.g. ``-DGGML_CUDA=on``. Where the compiler miscompiles ggml's
    AMX tile configuration (:func:`gguf_mtp.runtime.cpu.amx_probe`) the build
    leaves AMX out. The built tool is smoke-tested on a tiny model; if it dies
    there, it is rebuilt without AMX, else the build fails naming the cause.
    On failure the full log is at ``cache_dir()/upstream-tools/build-<key>.log``
    and the error shows the compiler's error lines."""
    from ..runtime import cpu
    from ..runtime.build import build_error_excerpt

    key = tool_key(cmake_args)
    out_dir = tools_dir() / key
    exe = out_dir / _exe(TARGET)
    if exe.is_file() and not force:
        return exe
    args, reason = _resolve_args(_cmake_args(cmake_args), log)
    if _extra_flags:
        args = cpu.with_c_flags(args, _extra_flags)
        reason = reason or "the first build died in its smoke test"
    tree = _pristine_source(log=log)
    build_dir = tools_dir() / f"build-{key}-{hashlib.sha256(json.dumps(args).encode()).hexdigest()[:8]}"
    log_path = tools_dir() / f"build-{key}.log"
    jobs = jobs or os.cpu_count() or 2
    gen = ["-G", "Ninja"] if shutil.which("ninja") and not any(a.startswith("-G") for a in args) else []
    log(f"building upstream {TARGET} {key} (llama.cpp {upstream.LLAMA_CPP_COMMIT[:9]}, unpatched, "
        f"-j{jobs}) CMake args: {' '.join(args)}")
    t0 = time.perf_counter()
    with open(log_path, "w") as lf:
        rc = _run_logged(["cmake", "-S", str(tree), "-B", str(build_dir), *gen, *args], lf, False, "")
        if rc == 0:
            rc = _run_logged(["cmake", "--build", str(build_dir), "--config", "Release", "--target", TARGET,
                              "-j", str(jobs)], lf, progress, f"compiling {TARGET}")
    if rc != 0:
        raise UpstreamBuildError(f"building upstream {TARGET} failed (full log: {log_path}):\n"
                                 + build_error_excerpt(log_path.read_text(errors="replace")))
    built = [p for p in (build_dir / "bin" / _exe(TARGET), build_dir / "bin" / "Release" / _exe(TARGET))
             if p.is_file()]
    if not built:
        raise UpstreamBuildError(f"the build succeeded but {TARGET} is not in {build_dir / 'bin'} (log: {log_path})")
    ok, why = smoke_tool(built[0])
    if not ok:
        if not _extra_flags and "-mno-amx-int8" not in " ".join(args) and cpu.amx_probe().compiled:
            log(f"the built {TARGET} died in its smoke test ({why.splitlines()[0]}): rebuilding without AMX")
            return build_tool(jobs, cmake_args, progress, force=True, log=log, _extra_flags=cpu.NO_AMX_FLAGS)
        raise UpstreamBuildError(
            f"the built {TARGET} does not run on this machine ({why}). Build it for a portable instruction set "
            f"with CMAKE_ARGS='-DGGML_NATIVE=OFF' (log: {log_path})")
    tmp_dir = tools_dir() / f".{key}.tmp"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    shutil.copy2(built[0], tmp_dir / exe.name)
    (tmp_dir / "build.json").write_text(json.dumps({
        "key": key, "target": TARGET, "llama_cpp_python": upstream.LLAMA_CPP_PYTHON_VERSION,
        "llama_cpp_commit": upstream.LLAMA_CPP_COMMIT, "sdist_sha256": upstream.SDIST_SHA256,
        "patched": False, "cmake_args": args, "machine": platform.machine(), "built_on": cpu.describe(),
        "flags_reason": reason, "build_seconds": round(time.perf_counter() - t0, 1),
    }, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp_dir.rename(out_dir)
    # the binary is static and self-contained: the build tree is only kept
    # while a build fails (to resume from); a finished one frees its space
    shutil.rmtree(build_dir, ignore_errors=True)
    log(f"built {exe} in {time.perf_counter() - t0:.0f} s")
    return exe


# ---------------------------------------------------------------------------- run

@dataclass
class UpstreamRun:
    """One ``llama-speculative-simple --spec-type draft-mtp`` generation."""

    text: str                    # the first n_requested generated tokens (comparable to plain decoding)
    n_predict: int               # tokens the tool generated (>= n_requested unless it stopped at EOG)
    n_drafted: int
    n_accept: int
    decode_tokens_per_s: float   # n_predict / decode time, as the tool reports it
    encode_tokens_per_s: float
    tau: float | None = None     # tokens per target verification pass (the tool's "mean acc len")
    n_requested: int = 0
    draft_max: int = 0
    n_prompt: int = 0
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    n_verify: int | None = None  # target verification passes
    acceptance_per_position: list[float] = field(default_factory=list)
    full_text: str = ""          # everything generated
    tokens: list[str] = field(default_factory=list)  # generated token pieces (EOG not printed)
    lossy_utf8: bool = False
    stderr_tail: str = ""        # the tool's log lines (last ~60), for diagnosis
    command: list[str] = field(default_factory=list)

    @property
    def acceptance_rate(self) -> float:
        return self.n_accept / self.n_drafted if self.n_drafted else 0.0


_ENC = re.compile(r"encoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.a-z]+) t/s")
_DEC = re.compile(r"decoded\s+(\d+) tokens in\s+([\d.]+) seconds, speed:\s+([\d.a-z]+) t/s")
_KV = re.compile(r"^(n_draft|n_predict|n_drafted|n_accept)\s*=\s*(-?\d+)\s*$")
_STATS = re.compile(r"statistics\s+draft-mtp: #calls\(b,g,a\) = \s*(\d+)\s+(\d+)\s+(\d+), #gen drafts = \s*(\d+), "
                    r"#acc drafts = \s*(\d+), #gen tokens = \s*(\d+), #acc tokens = \s*(\d+)")
_TAU = re.compile(r"#mean acc len = ([\d.]+), #acc rate/pos = \(([^)]*)\)")


def _float(s: str) -> float:
    try:
        return float(s)
    except ValueError:
        return 0.0


def parse_output(stdout: str, n_requested: int | None = None) -> dict:
    """Parse ``llama-speculative-simple --log-jsonl`` output (all of it is on
    stdout, one JSON object a line; a non-JSON line, e.g. a direct fprintf to
    the same stream, is kept as a log line).

    The tool prints "\\n\\n", then the prompt's tokens one entry each, then
    every generated token one entry each, then "\\n\\n" and its statistics
    (level "info"), the first of them ``encoded N tokens`` (which tells how
    many prompt entries to skip). Generated tokens may themselves be "\\n\\n",
    so the text is cut by position in the stream, never by content: it ends
    with the one "\\n\\n" entry just before the ``encoded`` line.
    """
    stream: list[tuple[bool, str]] = []   # (is text output, msg) in order; output = level "none", one per LOG call
    for line in stdout.splitlines():
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("msg"), str):
            stream.append((False, line.rstrip()))
        else:
            stream.append((obj.get("level") == "none", obj["msg"] if obj.get("level") == "none"
                           else obj["msg"].rstrip("\n")))
    info = [msg for is_out, msg in stream if not is_out]
    res: dict = {"log": info}
    i_enc = None
    for i, (is_out, msg) in enumerate(stream):
        if is_out:
            continue
        s = msg.strip()
        if m := _ENC.search(s):
            res["n_prompt"], res["encode_seconds"], res["encode_tokens_per_s"] = int(m[1]), float(m[2]), _float(m[3])
            i_enc = i if i_enc is None else i_enc
        elif m := _DEC.search(s):
            res["n_decoded"], res["decode_seconds"], res["decode_tokens_per_s"] = int(m[1]), float(m[2]), _float(m[3])
        elif m := _KV.match(s):
            res[m[1]] = int(m[2])
        elif m := _STATS.search(s):
            res["n_verify"] = int(m[3])
            res["n_gen_tokens"], res["n_acc_tokens"] = int(m[6]), int(m[7])
            if t := _TAU.search(s):
                res["tau"] = float(t[1])
                res["acceptance_per_position"] = [float(x) for x in t[2].split(",") if x.strip()]
    if i_enc is None:
        raise UpstreamRunError("no 'encoded N tokens' line in the tool's output")
    outputs = [msg for is_out, msg in stream[:i_enc] if is_out]
    try:
        start = outputs.index("\n\n")
    except ValueError:
        raise UpstreamRunError("unexpected output: no blank line before the prompt") from None
    if len(outputs) < start + 2 or outputs[-1] != "\n\n":
        raise UpstreamRunError("unexpected output: no blank line after the generated text")
    body = outputs[start + 1:-1]
    n_prompt = res["n_prompt"]
    if len(body) < n_prompt:
        raise UpstreamRunError(f"the tool printed {len(body)} token pieces for a {n_prompt}-token prompt")
    res["prompt_pieces"] = body[:n_prompt]
    gen = body[n_prompt:]
    res["tokens"] = gen
    res["full_text"] = "".join(gen)
    res["text"] = "".join(gen[:n_requested] if n_requested is not None else gen)
    res["lossy_utf8"] = "\ufffd" in res["full_text"]
    return res


def run_draft_mtp(tool, gguf, prompt: str, n_predict: int, draft_max: int, threads: int | None = None,
                  n_ctx: int = 1024, *, n_gpu_layers: int | None = None, extra_args: list[str] | None = None,
                  timeout: float | None = None) -> UpstreamRun:
    """Greedy ``draft-mtp`` generation of ``n_predict`` tokens with drafts of
    up to ``draft_max`` tokens; see the module docstring for what is measured.

    ``draft_max`` must be >= 1: the tool has no plain mode (plain speed comes
    from gguf-mtp's runtime on the same file)."""
    if draft_max < 1:
        raise ValueError("llama-speculative-simple has no plain mode (--spec-type none fails to "
                         "initialize); measure plain decoding with gguf-mtp's runtime instead")
    if n_predict < 1:
        raise ValueError("n_predict must be >= 1")
    threads = threads or os.cpu_count() or 1
    cmd = [str(tool), "-m", str(gguf), "-p", prompt,
           # the tool stops once it has MORE than -n tokens
           "-n", str(n_predict - 1),
           "-c", str(n_ctx), "-t", str(threads), "-tb", str(threads),
           "--spec-type", "draft-mtp", "--spec-draft-n-max", str(draft_max),
           "--temp", "0", "--top-k", "1", "--seed", "0",
           "--log-jsonl", "--log-colors", "off", "-lv", "4"]
    if n_gpu_layers is not None:
        cmd += ["-ngl", str(n_gpu_layers), "-ngld", str(n_gpu_layers)]
    cmd += list(extra_args or [])
    proc = subprocess.run(cmd, capture_output=True, text=True, errors="replace", timeout=timeout,
                          stdin=subprocess.DEVNULL)
    tail_src = proc.stderr
    if proc.returncode != 0:
        log_lines = []
        for line in proc.stdout.splitlines():
            try:
                log_lines.append(json.loads(line).get("msg", "").rstrip("\n"))
            except (ValueError, AttributeError):
                log_lines.append(line)
        tail = "\n".join((log_lines + proc.stderr.splitlines())[-40:])
        raise UpstreamRunError(f"{Path(str(tool)).name} exited with {proc.returncode} on {gguf}:\n{tail}")
    res = parse_output(proc.stdout, n_predict)
    tail = "\n".join((res["log"] + tail_src.splitlines())[-60:])
    n_gen = res.get("n_predict", res.get("n_decoded", len(res["tokens"])))
    return UpstreamRun(
        text=res["text"], n_predict=n_gen, n_drafted=res.get("n_drafted", 0), n_accept=res.get("n_accept", 0),
        decode_tokens_per_s=res.get("decode_tokens_per_s", 0.0),
        encode_tokens_per_s=res.get("encode_tokens_per_s", 0.0),
        tau=res.get("tau"), n_requested=n_predict, draft_max=draft_max, n_prompt=res["n_prompt"],
        decode_seconds=res.get("decode_seconds", 0.0), encode_seconds=res.get("encode_seconds", 0.0),
        n_verify=res.get("n_verify"), acceptance_per_position=res.get("acceptance_per_position", []),
        full_text=res["full_text"], tokens=res["tokens"], lossy_utf8=res["lossy_utf8"],
        stderr_tail=tail, command=cmd,
    )


# ---------------------------------------------------------------------------- manual use

def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m gguf_mtp.bench.upstream_mtp",
                                 description="upstream llama.cpp draft-mtp (pinned commit, unpatched)")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build (or reuse) llama-speculative-simple")
    b.add_argument("-j", "--jobs", type=int, default=None)
    b.add_argument("--cmake-args", default=None, help="default: $CMAKE_ARGS")
    b.add_argument("--force", action="store_true")
    sub.add_parser("path", help="print the cached tool's path (exit 1 if not built)")
    r = sub.add_parser("run", help="greedy draft-mtp generation with the cached tool")
    r.add_argument("gguf")
    r.add_argument("-p", "--prompt", required=True)
    r.add_argument("-n", "--n-predict", type=int, default=64)
    r.add_argument("-k", "--draft", type=int, nargs="+", default=[3], help="draft length(s)")
    r.add_argument("-t", "--threads", type=int, default=None)
    r.add_argument("-c", "--n-ctx", type=int, default=1024)
    r.add_argument("-ngl", "--n-gpu-layers", type=int, default=None)
    r.add_argument("--json", action="store_true", help="print the runs as JSON")
    a = ap.parse_args(argv)
    if a.cmd == "build":
        print(build_tool(a.jobs, a.cmake_args, force=a.force))
        return 0
    tool = tool_path()
    if a.cmd == "path":
        print(tool or "not built")
        return 0 if tool else 1
    if tool is None:
        print("the tool is not built: python -m gguf_mtp.bench.upstream_mtp build", file=sys.stderr)
        return 1
    runs = []
    for k in a.draft:
        run = run_draft_mtp(tool, a.gguf, a.prompt, a.n_predict, k, a.threads, a.n_ctx, n_gpu_layers=a.n_gpu_layers)
        runs.append(run)
        if not a.json:
            tau = f"{run.tau:.2f}" if run.tau is not None else "?"
            print(f"K={k}: {run.decode_tokens_per_s:.2f} tok/s decode ({run.n_predict} tokens), "
                  f"drafted {run.n_drafted}, accepted {run.n_accept} ({100 * run.acceptance_rate:.1f}%), "
                  f"tau {tau}, verify passes {run.n_verify}, per position {run.acceptance_per_position}")
            print(f"  text: {run.text!r}")
    if a.json:
        from dataclasses import asdict

        print(json.dumps([{k: v for k, v in asdict(r).items() if k != "stderr_tail"} for r in runs], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
