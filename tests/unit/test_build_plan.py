"""The runtime build's plan: the patch series, the cache key, error excerpts and
the fallback ladder (compile, install and smoke test replaced by fakes; no
runtime needed)."""

from __future__ import annotations

import textwrap

import pytest

from gguf_mtp import upstream
from gguf_mtp.runtime import build as rb

def test_series_lists_existing_patches_in_order():
    series = rb.read_series()
    names = [p.name for p in series]
    assert names == sorted(names), "patches are numbered in application order"
    assert names[:2] == ["0001-mtp-c-api.patch", "0002-hybrid-memory-without-recurrent-layers.patch"]


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


def test_build_error_excerpt_shows_the_compiler_errors():
    log = "\n".join([
        "Processing /cache/src/abc", "  Building wheel for llama-cpp-python (pyproject.toml): started",
        "[12/140] Building CXX object vendor/llama.cpp/src/CMakeFiles/llama.dir/llama-model.cpp.o",
        "FAILED: vendor/llama.cpp/src/CMakeFiles/llama.dir/llama-model.cpp.o",
        "/cache/src/abc/vendor/llama.cpp/src/llama-model.cpp:123:5: error: 'foo' was not declared in this scope",
        "  123 |     foo();", "      |     ^~~", "ninja: build stopped: subcommand failed.",
        *["pip noise"] * 40, "  error: subprocess-exited-with-error", "  No available output.",
    ])
    out = rb.build_error_excerpt(log)
    assert "llama-model.cpp:123:5: error: 'foo' was not declared" in out
    assert "FAILED:" in out and "foo();" in out
    assert out.count("pip noise") < 5


def _fake_build(monkeypatch, tmp_path, smoke_outcome):
    """build_runtime with compile/install/smoke replaced: records what was built;
    ``smoke_outcome(plan)`` gives the smoke test's outcome for that plan."""
    from gguf_mtp.runtime import cpu, smoke

    monkeypatch.setenv("GGUF_MTP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu, "amx_probe", lambda cxx=None: cpu.AmxProbe(True, True, False, "fake probe"))
    built, smoked = [], []
    state = {}

    def compile_(p, jobs, log, show):
        d = upstream.cache_dir() / "wheels" / p.key
        d.mkdir(parents=True, exist_ok=True)
        for n in ("a.whl", "b.whl"):
            (d / n).write_text(p.key)
        built.append(p.cmake_args)
        return sorted(d.glob("*.whl"))

    def install(wheels):
        state["installed"] = wheels[0].read_text()

    def fake_smoke():
        key = state["installed"]
        p = next(pl for pl in state["plans"] if pl.key == key)
        smoked.append(p.cmake_args)
        outcome = smoke_outcome(p)
        return smoke.SmokeResult(outcome == "ok", outcome, "fake", "SIGILL" if outcome != "ok" else None)

    orig_apply = rb._apply

    def apply_(base, fbs):
        p = orig_apply(base, fbs)
        state.setdefault("plans", []).extend([base, p])
        return p

    monkeypatch.setattr(rb, "_compile", compile_)
    monkeypatch.setattr(rb, "_install", install)
    monkeypatch.setattr(rb, "_smoke", fake_smoke)
    monkeypatch.setattr(rb, "_apply", apply_)
    monkeypatch.setattr(rb, "installed_key", lambda: state.get("installed"))
    return built, smoked


def test_a_build_that_faults_in_amx_is_rebuilt_without_amx(monkeypatch, tmp_path):
    amx_faults = lambda p: "ok" if "-mno-amx-int8" in " ".join(p.cmake_args) else "fault in extra buffer types"
    built, smoked = _fake_build(monkeypatch, tmp_path, amx_faults)
    res = rb.build_runtime("", log=lambda m: None, show_progress=False)
    assert [fb["name"] for fb in res.fallbacks] == ["no-amx"]
    assert len(built) == 2 and "-mno-amx-int8" in " ".join(built[1])
    assert "-mno-amx-int8" not in " ".join(built[0])
    assert res.smoke["ok"]
    # the choice is remembered for this machine: the next call goes straight to it
    built.clear(), smoked.clear()
    res2 = rb.build_runtime("", log=lambda m: None, show_progress=False)
    assert res2.key == res.key and built == [] and smoked == []


def test_a_build_that_always_faults_fails_naming_the_cause_and_the_flag(monkeypatch, tmp_path):
    built, smoked = _fake_build(monkeypatch, tmp_path, lambda p: "fault")
    with pytest.raises(rb.BuildError) as e:
        rb.build_runtime("", log=lambda m: None, show_progress=False)
    msg = str(e.value)
    assert "does not run on this machine" in msg and "-DGGML_NATIVE=OFF" in msg and "fault" in msg
    assert len(built) == 2 and "-DGGML_NATIVE=OFF" in built[1]   # portable was tried before giving up


def test_a_cached_build_from_another_cpu_is_smoke_tested(monkeypatch, tmp_path):
    from gguf_mtp.runtime import cpu

    built, smoked = _fake_build(monkeypatch, tmp_path, lambda p: "ok")
    rb.build_runtime("", log=lambda m: None, show_progress=False)
    assert len(smoked) == 1
    rb.build_runtime("", log=lambda m: None, show_progress=False)
    assert len(smoked) == 1                       # same CPU: the marker answers
    monkeypatch.setattr(cpu, "fingerprint", lambda: "another-cpu")
    rb.build_runtime("", log=lambda m: None, show_progress=False)
    assert len(smoked) == 2 and len(built) == 1   # tested again, not rebuilt
