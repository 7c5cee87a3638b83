"""Build and install the patched runtime: llama-cpp-python 0.3.36 from its
source distribution with the project's patch series applied.

Stages (each one cached, so a second run with nothing changed takes seconds):

1. fetch   the pinned sdist with pip (checked against its sha256);
2. patch   extract it, apply ``patches/series`` in order (a patch that does not
           apply fails the build with its name), bundle the pinned converter,
           gguf-py and vocab files, and sync the result into a stable source
           tree so that a changed patch rebuilds incrementally;
3. build   ``pip wheel`` the package (CMAKE_ARGS pass through: CUDA, Metal ...)
           and gguf-py; wheels are cached by the hash of (version, sdist,
           series, CMAKE_ARGS, machine);
4. install both wheels into the active environment.
"""

from __future__ import annotations

import filecmp
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
from dataclasses import dataclass, field
from pathlib import Path

from .. import upstream

#: bump when the build recipe itself changes (invalidates cached wheels)
RECIPE_VERSION = 1

#: always passed to CMake; the user's CMAKE_ARGS come after and win.
DEFAULT_CMAKE_ARGS = ("-DLLAVA_BUILD=OFF",)


class BuildError(RuntimeError):
    pass


def patches_dir() -> Path:
    env = os.environ.get("GGUF_MTP_PATCHES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "patches"


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def read_series(directory: Path | None = None) -> list[Patch]:
    """The ordered patch series (``series`` file: one patch name a line, # comments)."""
    directory = directory or patches_dir()
    series = directory / "series"
    if not series.exists():
        raise BuildError(f"no patch series at {series}")
    out = []
    for line in series.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        path = directory / name
        if not path.exists():
            raise BuildError(f"patch {name} is named in {series} but does not exist")
        out.append(Patch(name, path))
    return out


@dataclass
class BuildPlan:
    patches: list[Patch]
    cmake_args: list[str]
    key: str = field(init=False)

    def __post_init__(self):
        ident = {
            "recipe": RECIPE_VERSION,
            "llama_cpp_python": upstream.LLAMA_CPP_PYTHON_VERSION,
            "sdist": upstream.SDIST_SHA256,
            "series": [(p.name, p.sha256) for p in self.patches],
            "cmake_args": self.cmake_args,
            "machine": platform.machine(),
            "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        }
        self.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def args_key(self) -> str:
        return hashlib.sha256(json.dumps([self.cmake_args, platform.machine()]).encode()).hexdigest()[:12]

    def describe(self) -> dict:
        return {
            "key": self.key,
            "llama_cpp_python": upstream.LLAMA_CPP_PYTHON_VERSION,
            "llama_cpp_commit": upstream.LLAMA_CPP_COMMIT,
            "patches": [{"name": p.name, "sha256": p.sha256} for p in self.patches],
            "cmake_args": self.cmake_args,
            "machine": platform.machine(),
        }


def plan(cmake_args: str | None = None) -> BuildPlan:
    user = shlex.split(cmake_args if cmake_args is not None else os.environ.get("CMAKE_ARGS", ""))
    return BuildPlan(read_series(), [*DEFAULT_CMAKE_ARGS, *user])


def apply_series(tree: Path, patches: list[Patch], log=print) -> None:
    """Apply the series to the llama.cpp tree (``vendor/llama.cpp``) in order."""
    env = dict(os.environ, GIT_CEILING_DIRECTORIES=str(tree.parent))
    for p in patches:
        proc = subprocess.run(["git", "apply", "--whitespace=nowarn", str(p.path)],
                              cwd=tree, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BuildError(f"patch {p.name} does not apply:\n{proc.stderr.strip()}")
        log(f"  applied {p.name}")


def bundle_assets(root: Path, info: dict) -> None:
    """Put what gguf-mtp needs from the pinned tree inside the llama_cpp package."""
    tree = root / "vendor" / "llama.cpp"
    bundle = root / "llama_cpp" / upstream.BUNDLE_DIR
    bundle.mkdir(parents=True, exist_ok=True)
    conv = bundle / "converter"
    conv.mkdir(exist_ok=True)
    shutil.copy2(tree / "convert_hf_to_gguf.py", conv / "convert_hf_to_gguf.py")
    shutil.copytree(tree / "conversion", conv / "conversion", dirs_exist_ok=True)
    vocab = bundle / "vocab"
    vocab.mkdir(exist_ok=True)
    for name in upstream.BUNDLED_VOCABS:
        for suffix in ("", ".inp", ".out"):
            src = tree / "models" / (name + suffix)
            if src.exists():
                shutil.copy2(src, vocab / src.name)
    (bundle / "build.json").write_text(json.dumps(info, indent=2) + "\n")


def sync_tree(src: Path, dst: Path) -> int:
    """Make ``dst`` equal to ``src``, touching only files whose bytes differ
    (so CMake rebuilds incrementally). Returns the number of files written."""
    written = 0
    dst.mkdir(parents=True, exist_ok=True)
    seen = set()
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for d in dirnames:
            seen.add(rel / d)
        for f in filenames:
            r = rel / f
            seen.add(r)
            a, b = src / r, dst / r
            if a.is_symlink() or b.is_symlink() or not b.exists() or not filecmp.cmp(a, b, shallow=False):
                if b.exists() or b.is_symlink():
                    b.unlink()
                if a.is_symlink():
                    os.symlink(os.readlink(a), b)
                else:
                    shutil.copyfile(a, b)  # a fresh mtime: the build sees the change
                written += 1
    for dirpath, dirnames, filenames in os.walk(dst, topdown=False):
        rel = Path(dirpath).relative_to(dst)
        for f in filenames:
            if rel / f not in seen:
                (dst / rel / f).unlink()
        for d in dirnames:
            if rel / d not in seen and not (dst / rel / d).is_symlink():
                shutil.rmtree(dst / rel / d, ignore_errors=True)
    return written


_NINJA_STEP = re.compile(r"^\[(\d+)/(\d+)\]")


def _run_build(cmd: list[str], env: dict, log_path: Path, show_progress: bool) -> None:
    from tqdm import tqdm

    bar = None
    with open(log_path, "w") as log_file:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            log_file.write(line)
            m = _NINJA_STEP.match(line.strip())
            if m and show_progress:
                done, total = int(m.group(1)), int(m.group(2))
                if bar is None:
                    bar = tqdm(total=total, desc="compiling llama.cpp", unit="step")
                bar.total = total
                bar.n = done
                bar.refresh()
        rc = proc.wait()
    if bar is not None:
        bar.close()
    if rc != 0:
        raise BuildError(f"building the runtime failed (full log: {log_path}):\n"
                         + build_error_excerpt(log_path.read_text(errors="replace")))


#: lines of a build log that say what went wrong (compiler, linker, CMake, ninja)
_ERROR_LINE = re.compile(r"(error:|error [A-Z]+\d+:|fatal error|undefined reference|CMake Error|FAILED:|"
                         r"ninja: build stopped|collect2:|No such file or directory)", re.IGNORECASE)


def build_error_excerpt(log: str, *, context: int = 3, max_lines: int = 60) -> str:
    """The compiler's own error lines (with a few lines of context each) from a
    build log; pip's closing lines alone only say "No available output"."""
    lines = log.splitlines()
    keep: list[int] = []
    for i, line in enumerate(lines):
        if _ERROR_LINE.search(line):
            keep.extend(range(max(0, i - 1), min(len(lines), i + context + 1)))
    if not keep:
        return "\n".join(lines[-25:])
    out, last = [], -2
    for i in sorted(set(keep)):
        if i != last + 1:
            out.append("...")
        out.append(lines[i])
        last = i
        if len(out) >= max_lines:
            out.append("... (more in the log)")
            break
    return "\n".join(out)


def _pip(*args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError(f"pip {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


def installed_key() -> str | None:
    try:
        return upstream.installed_runtime().build.get("key")
    except upstream.RuntimeMissing:
        return None


@dataclass
class BuildResult:
    key: str
    wheels: list[Path]
    built: bool       # compiled in this call
    installed: bool   # (re)installed in this call
    #: the smoke test's verdict on this machine (None when not run: install=False or smoke=False)
    smoke: dict | None = None
    #: fallbacks taken from the requested flags, each with its reason
    fallbacks: list[dict] = field(default_factory=list)


def _fallback_record(base: BuildPlan) -> Path:
    from . import cpu

    return upstream.cache_dir() / "fallbacks" / f"{base.key}-{cpu.fingerprint()}.json"


def _load_fallbacks(base: BuildPlan) -> list[dict]:
    try:
        return json.loads(_fallback_record(base).read_text())["fallbacks"]
    except (OSError, ValueError, KeyError):
        return []


def _save_fallbacks(base: BuildPlan, fallbacks: list[dict]) -> None:
    path = _fallback_record(base)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"base": base.describe(), "fallbacks": fallbacks}, indent=2) + "\n")
    os.replace(tmp, path)


def _apply(base: BuildPlan, fallbacks: list[dict]) -> BuildPlan:
    args = list(base.cmake_args)
    for fb in fallbacks:
        args = [*args, *fb["add_cmake_args"]] if fb.get("add_cmake_args") else args
        if fb.get("add_c_flags"):
            from . import cpu

            args = cpu.with_c_flags(args, tuple(fb["add_c_flags"]))
    return BuildPlan(base.patches, args)


def _native(p: BuildPlan) -> bool:
    return not any(a.upper().startswith("-DGGML_NATIVE=") and a.split("=", 1)[1].upper() in ("OFF", "0", "FALSE")
                   for a in p.cmake_args)


def _has_amx(p: BuildPlan) -> bool:
    """Whether the build compiles ggml's AMX kernels (a native build where
    -march=native enables AMX-INT8, not taken out by -mno-amx-int8)."""
    from . import cpu

    return _native(p) and "-mno-amx-int8" not in " ".join(p.cmake_args) and cpu.amx_probe().compiled


#: the fallbacks, in the order they are tried; each takes one feature out
NO_AMX = {"name": "no-amx", "add_c_flags": ["-mno-amx-tile", "-mno-amx-int8", "-mno-amx-bf16"]}
PORTABLE = {"name": "portable", "add_cmake_args": ["-DGGML_NATIVE=OFF"]}


def next_fallback(p: BuildPlan, outcome: str) -> dict | None:
    """The fallback to try after a smoke test ended with ``outcome`` on plan ``p``
    (None: nothing left to take out)."""
    if outcome == "fault in extra buffer types" and _has_amx(p):
        return NO_AMX
    if outcome in ("fault", "fault in extra buffer types") and _native(p):
        return PORTABLE
    return None


def failure_message(p: BuildPlan, result) -> str:
    """What failed, and the flag that avoids it."""
    if result.outcome == "fault in extra buffer types":
        fix = ("llama.cpp's extra weight buffer types (AMX or CPU weight repacking) fault here even in a "
               "portable build; load models with RuntimeOptions(extra_bufts=False), or build with "
               "CMAKE_ARGS='-DGGML_CPU_REPACK=OFF'")
    else:
        fix = ("even the portable build (-DGGML_NATIVE=OFF) faults; pick the instruction sets by hand, e.g. "
               "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF'")
    return (f"the runtime built with CMAKE_ARGS={' '.join(p.cmake_args)} does not run on this machine: "
            f"{result.outcome}: {result.detail}. {fix}")


def _compile(p: BuildPlan, jobs: int | None, log, show_progress: bool) -> list[Path]:
    """Compile the wheels of plan ``p`` into the cache; returns their paths."""
    cache = upstream.cache_dir()
    wheel_dir = cache / "wheels" / p.key
    log(f"building runtime {p.key}: llama-cpp-python {upstream.LLAMA_CPP_PYTHON_VERSION} "
        f"+ {len(p.patches)} patches, CMAKE_ARGS={' '.join(p.cmake_args)}")
    sdist = upstream.ensure_sdist(log=log)
    work = cache / "tmp"
    work.mkdir(parents=True, exist_ok=True)
    info = p.describe()
    from . import cpu

    info["built_on"] = cpu.describe()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        root = upstream.extract_sdist(sdist, Path(tmp))
        apply_series(root / "vendor" / "llama.cpp", p.patches, log=log)
        bundle_assets(root, info)
        src = cache / "src" / p.args_key
        n = sync_tree(root, src)
        log(f"  source tree {src} ({n} files changed)")
    build_dir = cache / "build" / p.args_key
    tmp_wheels = cache / "tmp" / f"wheels-{p.key}"
    shutil.rmtree(tmp_wheels, ignore_errors=True)
    env = dict(os.environ, CMAKE_ARGS=" ".join(shlex.quote(a) for a in p.cmake_args),
               CMAKE_BUILD_PARALLEL_LEVEL=str(jobs or os.cpu_count() or 2))
    log_path = cache / f"build-{p.key}.log"
    _run_build([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
                "--disable-pip-version-check", "-C", f"build-dir={build_dir}",
                "-w", str(tmp_wheels), str(src)], env, log_path, show_progress)
    _run_build([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                "-w", str(tmp_wheels), str(src / "vendor" / "llama.cpp" / "gguf-py")],
               env, cache / f"build-{p.key}-gguf.log", False)
    shutil.rmtree(wheel_dir, ignore_errors=True)
    wheel_dir.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(tmp_wheels), wheel_dir)
    return sorted(wheel_dir.glob("*.whl"))


def _install(wheels: list[Path]) -> None:
    _pip("install", "--no-deps", "--force-reinstall", *map(str, wheels))


def _smoke():
    from . import smoke

    return smoke.run()


def build_runtime(cmake_args: str | None = None, *, force: bool = False, install: bool = True,
                  jobs: int | None = None, log=print, show_progress: bool = True,
                  smoke: bool = True) -> BuildResult:
    """Build (or reuse) the patched runtime for ``cmake_args`` and install it.

    After installing, the runtime is smoke-tested in a child process
    (:mod:`gguf_mtp.runtime.smoke`) whenever it was just built or installed, or
    has not yet passed on this CPU (a cached wheel built on another machine).
    If the child dies or computes garbage, the build falls back: first without
    AMX (when the build has it), then to a portable instruction set
    (``-DGGML_NATIVE=OFF``); the fallback is remembered for this machine, so
    later calls go straight to it. When nothing is left to take out it fails
    with a message that names the cause and the flag that avoids it.
    Before compiling, the AMX probe (:func:`gguf_mtp.runtime.cpu.amx_probe`)
    sends a machine whose tiles fault straight to the no-AMX build.
    """
    from . import cpu

    base = plan(cmake_args)
    fallbacks = _load_fallbacks(base)
    p = _apply(base, fallbacks)
    if not fallbacks and _has_amx(base):
        probe = cpu.amx_probe()
        if not probe.machine_ok:
            fallbacks = [dict(NO_AMX, reason=f"AMX probe: {probe.detail}")]
            log(f"AMX tiles do not work on this machine ({probe.detail}): building without AMX")
            _save_fallbacks(base, fallbacks)
            p = _apply(base, fallbacks)
    built_any = installed_any = False
    while True:
        wheel_dir = upstream.cache_dir() / "wheels" / p.key
        wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.exists() else []
        built = False
        if force or len(wheels) != 2:
            wheels = _compile(p, jobs, log, show_progress)
            built = built_any = True
        else:
            log(f"runtime {p.key} is cached ({wheel_dir})")
        if not install:
            return BuildResult(p.key, wheels, built_any, False, None, fallbacks)
        installed = False
        if built or force or installed_key() != p.key:
            _install(wheels)
            installed = installed_any = True
            log(f"installed runtime {p.key} into {sys.prefix}")
        else:
            log(f"runtime {p.key} is already installed")
        if not smoke:
            return BuildResult(p.key, wheels, built_any, installed_any, None, fallbacks)
        from . import smoke as smoke_mod

        if not (built or installed) and smoke_mod.verified(p.key):
            return BuildResult(p.key, wheels, built_any, installed_any, smoke_mod.verified(p.key)["result"],
                               fallbacks)
        log(f"smoke test of runtime {p.key} on this CPU ({cpu.cpu_model()}) ...")
        res = _smoke()
        if res.ok:
            smoke_mod.record(p.key, res)
            log(f"  ok: {res.detail}")
            return BuildResult(p.key, wheels, built_any, installed_any, res.as_dict(), fallbacks)
        log(f"  FAILED: {res.outcome}: {res.detail}")
        fb = next_fallback(p, res.outcome)
        if fb is None or any(f["name"] == fb["name"] for f in fallbacks):
            raise BuildError(failure_message(p, res))
        fallbacks = [*fallbacks, dict(fb, reason=f"{res.outcome}: {res.detail}")]
        _save_fallbacks(base, fallbacks)
        p = _apply(base, fallbacks)
        log(f"  falling back to a build {fb['name']}: CMAKE_ARGS={' '.join(p.cmake_args)}")
        force = False
