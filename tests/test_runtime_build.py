"""The patched runtime: the series applies in order to the pinned source, a
broken patch fails with its name, the cache key follows what was built, the
installed build reports itself, and the all-full-attention qwen35 regression
(patch 0002) stays fixed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_mtp import runtime_build as rb
from gguf_mtp import upstream
from gguf_mtp.cli import main


def test_series_lists_existing_patches_in_order():
    series = rb.read_series()
    names = [p.name for p in series]
    assert names == sorted(names), "patches are numbered in application order"
    assert names[:2] == ["0001-mtp-c-api.patch", "0002-hybrid-memory-without-recurrent-layers.patch"]


def test_series_applies_to_the_pinned_source(tmp_path):
    sdist = upstream.ensure_sdist(log=lambda m: None)  # cached by the runtime build
    root = upstream.extract_sdist(sdist, tmp_path)
    tree = root / "vendor" / "llama.cpp"
    applied = []
    rb.apply_series(tree, rb.read_series(), log=applied.append)
    assert len(applied) == len(rb.read_series())
    assert "llama_mtp_get_embeddings_nextn_ith" in (tree / "include" / "llama.h").read_text()
    assert "s_copy(i) still" in (tree / "src" / "llama-graph.cpp").read_text()


def test_a_patch_that_does_not_apply_fails_with_its_name(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.txt").write_text("one\ntwo\n")
    pdir = tmp_path / "patches"
    pdir.mkdir()
    (pdir / "0001-good.patch").write_text(textwrap.dedent("""\
        --- a/a.txt
        +++ b/a.txt
        @@ -1,2 +1,2 @@
         one
        -two
        +zwei
        """))
    (pdir / "0002-stale.patch").write_text(textwrap.dedent("""\
        --- a/a.txt
        +++ b/a.txt
        @@ -1,2 +1,2 @@
         one
        -three
        +drei
        """))
    (pdir / "series").write_text("0001-good.patch\n# comment\n0002-stale.patch\n")
    with pytest.raises(rb.BuildError, match="0002-stale.patch does not apply"):
        rb.apply_series(tree, rb.read_series(pdir), log=lambda m: None)
    assert (tree / "a.txt").read_text() == "one\nzwei\n"


def test_missing_patch_in_series_is_an_error(tmp_path):
    (tmp_path / "series").write_text("0001-absent.patch\n")
    with pytest.raises(rb.BuildError, match="0001-absent.patch"):
        rb.read_series(tmp_path)


def test_cache_key_follows_cmake_args_and_series(tmp_path, monkeypatch):
    base = rb.plan("")
    assert rb.plan("").key == base.key
    assert rb.plan("-DGGML_CUDA=on").key != base.key
    pdir = tmp_path / "p"
    pdir.mkdir()
    for p in rb.read_series():
        (pdir / p.name).write_bytes(p.path.read_bytes())
    (pdir / "series").write_text("\n".join(p.name for p in rb.read_series()) + "\n")
    monkeypatch.setenv("GGUF_MTP_PATCHES", str(pdir))
    assert rb.plan("").key == base.key
    first = sorted(pdir.glob("*.patch"))[0]
    first.write_text(first.read_text() + "\n")
    assert rb.plan("").key != base.key


def test_runtime_info_reports_the_patched_build():
    r = CliRunner().invoke(main, ["runtime", "info", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["llama_cpp_commit"] == upstream.LLAMA_CPP_COMMIT
    assert [p["name"] for p in info["patches"]] == [p.name for p in rb.read_series()]
    assert "CPU" in info["backends"]


def test_runtime_info_fails_without_the_patched_build(monkeypatch):
    def missing():
        raise upstream.RuntimeMissing("not gguf-mtp's patched build")

    monkeypatch.setattr(upstream, "installed_runtime", missing)
    import gguf_mtp.runtime as rt

    monkeypatch.setattr(rt, "installed_runtime", missing)
    r = CliRunner().invoke(main, ["runtime", "info"])
    assert r.exit_code != 0
    assert "not gguf-mtp's patched build" in r.output


def _generate(path: Path, drafter: str) -> dict:
    # a subprocess: before patch 0002 this aborted the process (GGML_ASSERT(buffer))
    proc = subprocess.run([sys.executable, "-m", "gguf_mtp.cli", "generate", str(path), "-p", "def f(x):",
                           "-n", "24", "--drafter", drafter, "--draft", "3", "--json", "-t", "2"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


def test_all_full_attention_qwen35_decodes_and_rolls_back(factory):
    path = factory.gguf("f32", all_full_attention=True)
    plain = _generate(path, "none")
    spec = _generate(path, "mtp")
    assert len(plain["tokens"]) == 24
    assert spec["tokens"] == plain["tokens"]
    # a random head is rejected at every pass: every pass rolled the target back
    assert spec["stats"]["target_passes"] > 0
