"""The pinned llama.cpp: which release, where its source distribution lives, and
how to reach the pieces of it that gguf-mtp uses from Python (the converter and
gguf-py) once `gguf-mtp runtime build` has installed the patched runtime.

Everything pinned lives here, so one place says which llama.cpp we run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
SDIST_NAME = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

#: where, inside the installed ``llama_cpp`` package, the build puts what gguf-mtp
#: needs beside the shared libraries: build.json, the converter, vocab files.
BUNDLE_DIR = "_gguf_mtp"

#: vocabulary files of the pinned tree that the project uses (tokenizer fixtures).
BUNDLED_VOCABS = ("ggml-vocab-qwen35.gguf",)


class RuntimeMissing(RuntimeError):
    """The patched runtime is not installed in this environment."""


def cache_dir() -> Path:
    """Root of gguf-mtp's cache (sdist, patched sources, build trees, wheels)."""
    root = os.environ.get("GGUF_MTP_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "gguf-mtp"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def ensure_sdist(log=print) -> Path:
    """Download the pinned llama-cpp-python source distribution (once) with pip."""
    dest = cache_dir() / "sdist"
    path = dest / SDIST_NAME
    if path.exists() and sha256_file(path) == SDIST_SHA256:
        return path
    dest.mkdir(parents=True, exist_ok=True)
    log(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION} source distribution with pip ...")
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        # source only for this one package; its build backend comes from this
        # environment (gguf-mtp depends on scikit-build-core), so pip never
        # compiles build tools from source just to read the metadata
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "llama-cpp-python",
               "--no-build-isolation", "--disable-pip-version-check", "-d", tmp,
               f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = Path(tmp) / SDIST_NAME
        if proc.returncode != 0 or not got.exists():
            raise RuntimeError(f"pip could not download {SDIST_NAME}:\n{proc.stdout}\n{proc.stderr}")
        digest = sha256_file(got)
        if digest != SDIST_SHA256:
            raise RuntimeError(f"{SDIST_NAME} has sha256 {digest}, expected {SDIST_SHA256}")
        shutil.move(str(got), path)
    return path


def extract_sdist(sdist: Path, into: Path) -> Path:
    """Extract the source distribution below ``into``; returns its root.

    The sdist carries git metadata of its own (and the llama.cpp submodule's
    pointer to it); those are dropped so that patching never talks to git state.
    """
    with tarfile.open(sdist) as tar:
        tar.extractall(into, filter="data")
    root = into / SDIST_NAME[: -len(".tar.gz")]
    for git in (root / ".git", root / "vendor" / "llama.cpp" / ".git"):
        if git.is_dir():
            shutil.rmtree(git)
        elif git.exists():
            git.unlink()
    return root


@dataclass(frozen=True)
class InstalledRuntime:
    """The patched llama-cpp-python installed in this environment."""

    package_dir: Path
    build: dict

    @property
    def bundle(self) -> Path:
        return self.package_dir / BUNDLE_DIR

    @property
    def converter_dir(self) -> Path:
        return self.bundle / "converter"

    def vocab(self, name: str) -> Path:
        path = self.bundle / "vocab" / name
        if not path.exists():
            raise RuntimeMissing(f"{name} is not in the installed runtime bundle ({path})")
        return path


def installed_runtime() -> InstalledRuntime:
    """Locate the installed patched runtime without loading its shared libraries."""
    import importlib.util

    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeMissing("llama-cpp-python is not installed: run `gguf-mtp runtime build`")
    package_dir = Path(list(spec.submodule_search_locations)[0])
    marker = package_dir / BUNDLE_DIR / "build.json"
    if not marker.exists():
        raise RuntimeMissing(
            f"the llama-cpp-python in {package_dir} is not gguf-mtp's patched build "
            "(no build marker): run `gguf-mtp runtime build`"
        )
    return InstalledRuntime(package_dir, json.loads(marker.read_text()))


def converter_modules():
    """Import the pinned converter (``convert_hf_to_gguf`` + ``conversion``).

    Returns the ``conversion`` package. The converter is bundled with the
    installed runtime, so the trunk is written by exactly the code that the
    runtime it is loaded into was built from.
    """
    rt = installed_runtime()
    path = str(rt.converter_dir)
    if path not in sys.path:
        sys.path.insert(0, path)
    import conversion  # noqa: E402  (the pinned tree's package)

    return conversion
