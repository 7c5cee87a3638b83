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

from . import upstream

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
    return Path(__file__).resolve().parent.parent / "patches"


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
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
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
        lines = log_path.read_text(errors="replace").splitlines(keepends=True)
        # the compiler's own errors first: pip's closing lines alone say "No available output"
        errors = [ln for ln in lines if ": error:" in ln or "CMake Error" in ln]
        tail = "".join(errors[:20]) + "...\n" + "".join(lines[-15:])
        raise BuildError(f"building the runtime failed (full log: {log_path}):\n{tail}")


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


def build_runtime(cmake_args: str | None = None, *, force: bool = False, install: bool = True,
                  jobs: int | None = None, log=print, show_progress: bool = True) -> BuildResult:
    """Build (or reuse) the patched runtime for ``cmake_args`` and install it."""
    p = plan(cmake_args)
    cache = upstream.cache_dir()
    wheel_dir = cache / "wheels" / p.key
    wheels = sorted(wheel_dir.glob("*.whl")) if wheel_dir.exists() else []
    built = False
    if force or len(wheels) != 2:
        log(f"building runtime {p.key}: llama-cpp-python {upstream.LLAMA_CPP_PYTHON_VERSION} "
            f"+ {len(p.patches)} patches, CMAKE_ARGS={' '.join(p.cmake_args)}")
        sdist = upstream.ensure_sdist(log=log)
        work = cache / "tmp"
        work.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            root = upstream.extract_sdist(sdist, Path(tmp))
            apply_series(root / "vendor" / "llama.cpp", p.patches, log=log)
            bundle_assets(root, p.describe())
            src = cache / "src" / p.args_key
            n = sync_tree(root, src)
            log(f"  source tree {src} ({n} files changed)")
        build_dir = cache / "build" / p.args_key
        tmp_wheels = cache / "tmp" / f"wheels-{p.key}"
        shutil.rmtree(tmp_wheels, ignore_errors=True)
        env = dict(os.environ, CMAKE_ARGS=" ".join(p.cmake_args),
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
        wheels = sorted(wheel_dir.glob("*.whl"))
        built = True
    else:
        log(f"runtime {p.key} is cached ({wheel_dir})")
    installed = False
    if install and (built or force or installed_key() != p.key):
        _pip("install", "--no-deps", "--force-reinstall", *map(str, wheels))
        installed = True
        log(f"installed runtime {p.key} into {sys.prefix}")
    elif install:
        log(f"runtime {p.key} is already installed")
    return BuildResult(p.key, wheels, built, installed)
