"""Local text for training: Python sources, C headers and English prose already on the machine.

No download: the standard library of the running Python, a fixed list of
pure-Python packages from its site-packages (all installed by gguf-mtp's own
dependencies), the Linux man-pages project's pages (Debian's ``manpages``
and ``manpages-dev``) rendered to plain text by :func:`man_to_text`, and the
system C headers under ``/usr/include`` (there wherever gcc is).

Every listing is sorted, so the same machine gives the same corpus;
:func:`describe` records what was found (file counts, package versions, a
content hash) for a model card.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import importlib.util
import re
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

#: stdlib directories left out: test suites, the IDLE GUI, lib2to3's fixers,
#: third-party packages, and ``encodings`` (mostly generated charmap tables that
#: would teach the model hex literals instead of Python)
STDLIB_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "idlelib", "lib2to3", "site-packages",
                                  "__pycache__", "encodings"})

#: site-packages taken (import name -> distribution name): pure Python, written
#: by people (docstrings, comments), pulled in by gguf-mtp's own dependencies
SITE_PACKAGES: dict[str, str] = {
    "pip": "pip",
    "click": "click",
    "jinja2": "Jinja2",
    "packaging": "packaging",
    "networkx": "networkx",
    "tqdm": "tqdm",
    "markdown_it": "markdown-it-py",
    "filelock": "filelock",
}

#: larger source files are generated tables, not code
MAX_SOURCE_BYTES = 200_000

#: man sections of the Linux man-pages project (system calls, library functions,
#: special files, file formats, overviews)
MAN_SECTIONS = ("2", "3", "4", "5", "7")
MAN_ROOT = Path("/usr/share/man")
MAN_PROJECT = "Linux man-pages"


@dataclass
class Source:
    """One kind of text: its name and documents (path, text), in a fixed order."""

    name: str
    docs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_chars(self) -> int:
        return sum(len(t) for _, t in self.docs)


def _skip_part(part: str) -> bool:
    return part in STDLIB_EXCLUDED_DIRS or part.startswith("test_") or part.startswith("_test")


def python_files(root: Path) -> list[Path]:
    """``*.py`` under ``root`` without test suites or generated tables, sorted by relative path."""
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(_skip_part(p) for p in parts[:-1]) or parts[-1].startswith("test_"):
            continue
        if path.stat().st_size > MAX_SOURCE_BYTES:
            continue
        files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def stdlib_source() -> Source:
    """The running Python's standard library."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return Source("stdlib", [(f"stdlib/{p.relative_to(root).as_posix()}", _read(p)) for p in python_files(root)])


def site_packages_source(packages: dict[str, str] = SITE_PACKAGES) -> tuple[Source, dict[str, str]]:
    """The listed packages of the running environment and their versions.

    A package that is not installed is left out (and absent from the versions).
    """
    src, versions = Source("site-packages"), {}
    for module, dist in packages.items():
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        versions[dist] = importlib.metadata.version(dist)
        src.docs += [(f"{module}/{p.relative_to(root).as_posix()}", _read(p)) for p in python_files(root)]
    return src, versions


def man_pages_source(root: Path = MAN_ROOT, sections=MAN_SECTIONS) -> Source:
    """The Linux man-pages project's pages in ``sections`` as plain text.

    Pages are recognised by their ``.TH`` line (``"Linux man-pages ..."``);
    pages that only include another (``.so``) are skipped.
    """
    src = Source("man-pages")
    for sec in sections:
        d = root / f"man{sec}"
        if not d.is_dir():
            continue
        for path in sorted(d.glob(f"*.{sec}.gz")):
            raw = gzip.decompress(path.read_bytes()).decode("utf-8", errors="replace")
            th = next((ln for ln in raw.splitlines() if ln.startswith(".TH")), "")
            if MAN_PROJECT not in th:
                continue
            text = man_to_text(raw)
            if len(text) > 200:
                src.docs.append((f"man{sec}/{path.name[:-3]}", text))
    return src


#: system C headers: C declarations, macros and their comments (libc, Linux UAPI, ...)
C_HEADERS_ROOT = Path("/usr/include")


def c_headers_source(root: Path = C_HEADERS_ROOT) -> Source:
    """``*.h`` under ``root`` (the C library's and the kernel's headers every
    machine with gcc has), sorted by relative path; generated tables left out."""
    if not root.is_dir():
        return Source("c-headers")
    files = sorted((p for p in root.rglob("*.h") if p.is_file() and p.stat().st_size <= MAX_SOURCE_BYTES),
                   key=lambda p: p.relative_to(root).as_posix())
    return Source("c-headers", [(f"include/{p.relative_to(root).as_posix()}", _read(p)) for p in files])


#: the teacher-forced distillation mix (:mod:`gguf_mtp.train.distill_text`): the share
#: of windows each source gives, whatever its size (C headers alone are 100 MB)
TEXT_MIX: dict[str, float] = {"stdlib": 0.35, "site-packages": 0.15, "man-pages": 0.30, "c-headers": 0.20}


def text_mix_sources() -> tuple[list[Source], dict[str, str]]:
    """The sources of :data:`TEXT_MIX` found on this machine (empty ones dropped)
    and the site-packages versions."""
    site, versions = site_packages_source()
    sources = [stdlib_source(), site, man_pages_source(), c_headers_source()]
    return [s for s in sources if s.docs], versions


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


# ---------------------------------------------------------------------------- troff

_ESCAPES = {
    r"\-": "-", r"\(em": "\u2014", r"\(en": "\u2013", r"\(aq": "'", r"\(dq": '"', r"\(lq": '"',
    r"\(rq": '"', r"\(oq": "'", r"\(cq": "'", r"\(bu": "*", r"\(mu": "x", r"\(ti": "~",
    r"\(ha": "^", r"\(rs": "\\", r"\(co": "(c)", r"\(<=": "<=", r"\(>=": ">=", r"\(!=": "!=",
    r"\(->": "->", r"\e": "\\", r"\&": "", r"\~": " ", r"\ ": " ", r"\|": "", r"\^": "", r"\:": "",
    r"\%": "", r"\0": " ", r"\c": "",
}
_ESCAPE_RE = re.compile("|".join(re.escape(k) for k in sorted(_ESCAPES, key=len, reverse=True)))
_FONT_RE = re.compile(r"\\f(\[[^\]]*\]|\(..|.)")
_SIZE_RE = re.compile(r"\\s[+-]?\d")
_OTHER_RE = re.compile(r"\\\*(\(..|\[[^\]]*\]|.)|\\\((..)|\\\[[^\]]*\]")
#: macros whose arguments are text, joined without spaces (alternating fonts)
_ALTERNATING = {".BR", ".RB", ".IR", ".RI", ".BI", ".IB"}
#: macros whose arguments are text, joined with spaces
_TEXT = {".B", ".I", ".SM", ".SB"}
_HEADINGS = {".SH", ".SS"}


def _args(rest: str) -> list[str]:
    """troff macro arguments: blank-separated, ``"quoted strings"`` kept whole."""
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"|\S+', rest)]


def _inline(text: str) -> str:
    text = _FONT_RE.sub("", text)
    text = _SIZE_RE.sub("", text)
    text = _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)
    text = _OTHER_RE.sub("", text)
    return text


def man_to_text(raw: str) -> str:
    """Plain text of a man page written with the ``man`` macros.

    A small, deterministic subset of what ``groff -man -Tutf8`` does: headings,
    fonts, filled paragraphs (text lines joined; ``.nf``/``.EX`` blocks kept
    line by line), ``.TP``/``.IP`` tags on a line of their own, the usual
    escapes; tables (``.TS``/``.TE``) keep their cells; comments and other
    requests go.
    """
    out: list[str] = []
    fill, join, in_table, tag_next = True, False, False, False

    def emit(text: str) -> None:
        nonlocal join, tag_next
        if fill and join and out and out[-1]:
            out[-1] += ("" if out[-1].endswith(("(", "[")) else " ") + text
        else:
            out.append(text)
        join = fill and not tag_next
        tag_next = False

    def brk(blank: bool) -> None:
        nonlocal join
        if blank and out and out[-1]:
            out.append("")
        join = False

    for line in raw.splitlines():
        if line.startswith((".\\\"", "'\\\"")) or line.strip() in {".", "'"}:
            continue
        if line.startswith(".TS"):
            in_table = True
            brk(True)
            continue
        if line.startswith(".TE"):
            in_table = False
            brk(True)
            continue
        if in_table:
            if line.rstrip().endswith(".") and "\t" not in line and " " not in line.strip():
                continue  # the table's format line (e.g. "l l.")
            out.append(_inline(line.replace("T{", "").replace("T}", "")).replace("\t", "  "))
            continue
        if line.startswith((".", "'")):
            macro, _, rest = line.partition(" ")
            if macro in _HEADINGS:
                heading = " ".join(_args(_inline(rest)))
                brk(True)
                out.append(heading.title() if macro == ".SH" and heading.isupper() else heading)
                brk(False)
            elif macro in _ALTERNATING:
                emit("".join(_args(_inline(rest))))
            elif macro in _TEXT:
                emit(" ".join(_args(_inline(rest))))
            elif macro in (".TP", ".TQ"):
                brk(macro == ".TP")
                tag_next = True
            elif macro == ".IP":
                brk(True)
                tag = _args(_inline(rest))
                if tag and tag[0] not in ("*", "-"):
                    out.append(tag[0])
                elif tag:
                    out.append(tag[0] + " ")
                    join = True
            elif macro in (".PP", ".LP", ".P", ".sp", ".HP"):
                brk(True)
            elif macro in (".nf", ".EX"):
                brk(macro == ".EX")
                fill = False
            elif macro in (".fi", ".EE"):
                fill = True
                brk(macro == ".EE")
            elif macro in (".br", ".RS", ".RE", ".in"):
                brk(False)
            elif macro in (".UR", ".MT"):
                emit(rest.strip())
            # everything else (.TH, .so, .ad, .ft, ...): no text
            continue
        text = _inline(line)
        if not text.strip() and fill:
            brk(True)
            continue
        emit(text)
    text = "\n".join(ln.rstrip() for ln in out)
    text = re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"
    return text


# ---------------------------------------------------------------------------- record

def describe(sources: list[Source], versions: dict[str, str]) -> dict:
    """What the corpus is: per source the document count and characters, the
    site-packages versions and a SHA-256 over all (path, text) pairs."""
    h = hashlib.sha256()
    for s in sources:
        for path, text in s.docs:
            h.update(path.encode())
            h.update(b"\0")
            h.update(text.encode("utf-8", errors="replace"))
            h.update(b"\0")
    return {
        "sources": {s.name: {"docs": len(s.docs), "chars": s.n_chars} for s in sources},
        "site_packages": versions,
        "sha256": h.hexdigest(),
    }
