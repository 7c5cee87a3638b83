"""The patched runtime: the series applies in order to the pinned source, a
broken patch fails with its name, the cache key follows what was built, the
installed build reports itself, and the all-full-attention qwen35 regression
(patch 0002) stays fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gguf_mtp import upstream
from gguf_mtp.cli import main
from gguf_mtp.runtime import build as rb


def test_series_applies_to_the_pinned_source(tmp_path):
    sdist = upstream.ensure_sdist(log=lambda m: None)  # cached by the runtime build
    root = upstream.extract_sdist(sdist, tmp_path)
    tree = root / "vendor" / "llama.cpp"
    applied = []
    rb.apply_series(tree, rb.read_series(), log=applied.append)
    assert len(applied) == len(rb.read_series())
    assert "llama_mtp_get_embeddings_nextn_ith" in (tree / "include" / "llama.h").read_text()
    assert "s_copy(i) still" in (tree / "src" / "llama-graph.cpp").read_text()


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
