"""The patched runtime: the series applies in order to the pinned source, a
broken patch fails with its name, the cache key follows what was built, the
installed build reports itself, and the all-full-attention qwen35 regression
(patch 0002) stays fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_mtp import upstream
from gguf_mtp.cli import main
from gguf_mtp.runtime import build as rb


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


# -- the runtime runs where it was built (smoke test, fallbacks, clear errors) ----------------------

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


def test_smoke_test_passes_on_this_machine():
    from gguf_mtp.runtime import smoke

    res = smoke.run()
    assert res.ok, res.detail
    assert res.runs["tokens_extra"] == res.runs["tokens_plain"]


@pytest.mark.parametrize("fault,outcome", [("extra", "fault in extra buffer types"), ("all", "fault")])
def test_smoke_test_diagnoses_a_faulting_kernel(monkeypatch, fault, outcome):
    from gguf_mtp.runtime import smoke

    monkeypatch.setenv("GGUF_MTP_SMOKE_FAULT", fault)
    res = smoke.run()
    assert not res.ok and res.outcome == outcome and res.signal == "SIGILL"


def test_loading_a_model_on_a_cpu_the_runtime_faults_on_is_a_clear_error(tmp_path):
    from gguf_mtp.runtime import smoke

    model = smoke.smoke_gguf()
    env = dict(os.environ, GGUF_MTP_CACHE=str(tmp_path / "cache"), GGUF_MTP_SMOKE_FAULT="extra")
    proc = subprocess.run([sys.executable, "-m", "gguf_mtp.cli", "generate", str(model), "-p", "hi", "-n", "4",
                           "--drafter", "none"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "does not run correctly on this CPU" in proc.stderr and "extra_bufts=False" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the same from the Python API: an exception, not a dead interpreter
    code = ("from gguf_mtp.runtime import Engine\nfrom gguf_mtp.runtime.smoke import RuntimeUnusable\n"
            f"try:\n    Engine({str(model)!r})\nexcept RuntimeUnusable as e:\n    print('unusable')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.stdout.strip() == "unusable", proc.stderr[-2000:]


def test_runtime_info_lists_cpu_features_and_extra_buffer_types():
    r = CliRunner().invoke(main, ["runtime", "info", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["compiled_cpu_features"], info["system_info"]
    assert isinstance(info["extra_buffer_types"], list)
    assert info["this_cpu"]["fingerprint"]
    r = CliRunner().invoke(main, ["runtime", "info"])
    assert "compiled for" in r.output and "extra buffers" in r.output


def test_amx_probe_and_flags():
    from gguf_mtp.runtime import cpu

    probe = cpu.amx_probe()
    assert probe.compiler_ok <= probe.machine_ok <= probe.compiled or not probe.compiled
    args = cpu.with_c_flags(["-DGGML_CUDA=on", "-DCMAKE_CXX_FLAGS=-O2"], cpu.NO_AMX_FLAGS)
    assert "-DCMAKE_CXX_FLAGS=-O2 -mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in args
    assert "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" in args
