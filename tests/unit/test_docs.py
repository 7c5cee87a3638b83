"""The generated tables in docs/ equal what the code prints (tools/sync_docs.py
regenerates them), and the README keeps its promises about itself."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _sync():
    spec = importlib.util.spec_from_file_location("sync_docs", ROOT / "tools" / "sync_docs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_architecture_tables_equal_gguf_mtp_archs_markdown():
    sync = _sync()
    text = sync.DOC.read_text()
    assert sync.render(text) == text, "docs/architectures.md is stale: run tools/sync_docs.py"
    for name in sync.generated():
        assert f"<!-- {name} -->" in text


def test_readme_names_the_two_commands_and_stays_short():
    readme = (ROOT / "README.md").read_text()
    assert "tools/setup.sh" in readme and "tools/test.sh" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("exec tools/test.sh")
    arch = readme.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    assert len(arch.strip().splitlines()) <= 40
