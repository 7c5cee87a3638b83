"""Regenerate the generated parts of docs/: the architecture and tensor tables
in docs/architectures.md from `gguf-mtp archs --markdown [--tensors]`
(tests/unit/test_docs.py fails when they differ).

    .venv/bin/python tools/sync_docs.py
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from click.testing import CliRunner

from gguf_mtp.cli import main

DOC = Path(__file__).resolve().parents[1] / "docs" / "architectures.md"


def generated() -> dict[str, str]:
    table = CliRunner().invoke(main, ["archs", "--markdown"]).output.strip()
    full = CliRunner().invoke(main, ["archs", "--markdown", "--tensors"]).output.strip()
    return {"archs:table": table, "archs:tensors": full[len(table):].strip()}


def render(text: str) -> str:
    for name, body in generated().items():
        text = re.sub(rf"(<!-- {name} -->\n).*?(<!-- /{name} -->)", lambda m: m.group(1) + body + "\n" + m.group(2),
                      text, flags=re.S)
    return text


if __name__ == "__main__":
    DOC.write_text(render(DOC.read_text()))
    sys.exit(0)
