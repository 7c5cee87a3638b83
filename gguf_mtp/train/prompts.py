"""Prompt sets for self-distillation.

``load_prompts(FILE_OR_DIR)`` reads prompts from

* ``*.jsonl``: one prompt per line, a JSON string or an object with a
  ``"prompt"`` (or ``"text"``) field; prompts may span several lines;
* ``*.txt``: one prompt per line (blank lines skipped);
* a directory: every ``*.jsonl`` and ``*.txt`` in it, in sorted name order.

:func:`build_prompt_set` writes the set that ships with gguf-mtp
(``gguf_mtp/data/prompts/``) from local text only, the Python standard
library's sources: code prompts (a ``def`` or ``class`` line with its
docstring's first line, the model continues the body) and short English lines
(the first sentence of module, class and function docstrings). Deterministic
for a given Python installation; ``python -m gguf_mtp.train.prompts OUT_DIR``
rebuilds it.
"""

from __future__ import annotations

import ast
import json
import random
import sys
import sysconfig
from pathlib import Path

#: the prompt set shipped with the package
DEFAULT_PROMPTS_DIR = Path(__file__).resolve().parent.parent / "data" / "prompts"

_SKIP_DIRS = {"test", "tests", "idlelib", "lib2to3", "encodings", "site-packages", "turtledemo",
              "__pycache__", "pydoc_data", "ensurepip", "venv", "tkinter"}


def load_prompts(path: str | Path) -> list[str]:
    """Prompts from a ``.jsonl`` / ``.txt`` file or a directory of them."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".txt") and p.is_file())
        if not files:
            raise ValueError(f"{path}: no *.jsonl or *.txt prompt files")
        return [p for f in files for p in load_prompts(f)]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt file or directory")
    out: list[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if path.suffix == ".jsonl":
                item = json.loads(line)
                if isinstance(item, dict):
                    item = item.get("prompt", item.get("text"))
                if not isinstance(item, str):
                    raise ValueError(f"{path}:{n}: expected a JSON string or an object with a 'prompt' field")
                out.append(item)
            else:
                out.append(line.rstrip("\n"))
    return out


def _stdlib_files(root: Path) -> list[Path]:
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part in _SKIP_DIRS or part.startswith("test") for part in rel[:-1]):
            continue
        if rel[-1].startswith("test"):
            continue
        files.append(p)
    return files


def _first_sentence(doc: str) -> str | None:
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    line = " ".join(line.split())
    end = line.find(". ")
    if end > 0:
        line = line[:end + 1]
    if not (20 <= len(line) <= 120) or not line[0].isupper() or not line.isascii():
        return None
    if any(c in line for c in "`>{}[]|=*\\"):
        return None
    return line


def _code_prompt(node, lines: list[str]) -> str | None:
    doc = ast.get_docstring(node, clean=False)
    if not doc or node.body[0].end_lineno is None:
        return None
    head = lines[node.lineno - 1:node.body[0].lineno - 1]  # decorators excluded: from def/class on
    first = _first_sentence(doc)
    if not head or first is None or len(head) > 3:
        return None
    indent = " " * (len(head[0]) - len(head[0].lstrip()))
    body_indent = indent + "    "
    text = "\n".join(h[len(indent):] for h in head)
    return f'{text}\n{body_indent[len(indent):]}"""{first}"""\n{body_indent[len(indent):]}'


def build_prompt_set(out_dir: str | Path, n_code: int = 256, n_prose: int = 256, seed: int = 0,
                     stdlib: str | Path | None = None) -> dict:
    """Write ``code.jsonl`` and ``prose.txt`` to ``out_dir``; returns counts."""
    root = Path(stdlib or sysconfig.get_paths()["stdlib"])
    code, prose = [], []
    for path in _stdlib_files(root):
        try:
            src = path.read_text(encoding="utf-8")
            tree = ast.parse(src)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        lines = src.splitlines()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node)
                if doc and (s := _first_sentence(doc)):
                    prose.append(s)
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                p = _code_prompt(node, lines)
                if p:
                    code.append(p)
    rng = random.Random(seed)
    code = sorted(set(code))
    prose = sorted(set(prose))
    rng.shuffle(code)
    rng.shuffle(prose)
    code, prose = code[:n_code], prose[:n_prose]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "code.jsonl", "w", encoding="utf-8") as f:
        for p in code:
            f.write(json.dumps(p) + "\n")
    (out / "prose.txt").write_text("".join(p + "\n" for p in prose), encoding="utf-8")
    return {"code": len(code), "prose": len(prose), "stdlib": str(root),
            "python": ".".join(map(str, sys.version_info[:3]))}


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_PROMPTS_DIR
    print(json.dumps(build_prompt_set(target), indent=2))
