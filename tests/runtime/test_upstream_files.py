"""MTP GGUFs written by others: files made by the pinned upstream converter
itself (not ours) from the tiny Qwen3.5 fixture decode exactly with every
drafter that applies, show their heads in ``inspect``, and are accepted by
``graft`` and ``stitch``; the upstream MTP-only companion file grafts back."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.convert.graft import graft
from gguf_mtp.gguf.inspect import read_header, tensor_data
from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter
from gguf_mtp.runtime.api import SpeculativeLlama
from gguf_mtp.upstream import installed_runtime

PROMPTS = ["def fib(n):", "The history of the printing press"]


def _upstream_convert(ckpt, out, *flags):
    conv = installed_runtime().converter_dir
    env = {**os.environ, "PYTHONPATH": str(conv)}
    r = subprocess.run([sys.executable, str(conv / "convert_hf_to_gguf.py"), str(ckpt), "--outfile", str(out),
                        "--outtype", "f32", *flags], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def upstream_files(factory, tmp_path_factory):
    ck = factory.checkpoint()
    d = tmp_path_factory.mktemp("upstream-files")
    return {"full": _upstream_convert(ck, d / "full.gguf"),
            "trunk": _upstream_convert(ck, d / "trunk.gguf", "--no-mtp"),
            "mtp_only": _upstream_convert(ck, d / "mtp-only.gguf", "--mtp")}


@pytest.mark.parametrize("drafter,draft", [("mtp", 1), ("mtp", 3), ("eagle", 3), ("ngram", 3), ("ngram-tree", 3),
                                           ("auto", "auto")])
def test_upstream_file_decodes_exactly(upstream_files, drafter, draft):
    dr = make_drafter(drafter)
    with Engine(upstream_files["full"], dr.configure(RuntimeOptions(n_threads=2, n_ctx=512))) as eng:
        assert eng.n_nextn == 1
        for p in PROMPTS:
            plain = generate(eng, p, 32, drafter="none")
            spec = generate(eng, p, 32, drafter=dr, draft=draft)
            assert spec.tokens == plain.tokens, (drafter, draft, p)


def test_inspect_shows_the_upstream_heads(upstream_files):
    r = CliRunner().invoke(main, ["inspect", str(upstream_files["full"])])
    assert r.exit_code == 0, r.output
    assert "nextn" in r.output and "stock llama.cpp: loads this file" in r.output


def test_graft_takes_upstream_files_and_the_companion(upstream_files, tmp_path):
    full, trunk, mtp_only = upstream_files["full"], upstream_files["trunk"], upstream_files["mtp_only"]
    for heads in (full, mtp_only):
        out = graft(trunk, heads, tmp_path / f"grafted-{heads.stem}.gguf", progress=False).path
        a, b = read_header(full), read_header(out)
        assert sorted(t[0] for t in a.tensors) == sorted(t[0] for t in b.tensors)
        for name, *_ in a.tensors:
            assert tensor_data(full, a, name) == tensor_data(out, b, name), name
        with Engine(out, RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
            assert generate(eng, PROMPTS[0], 24, drafter="mtp", draft=3).tokens == \
                generate(eng, PROMPTS[0], 24, drafter="none").tokens


def test_stitch_round_trips_an_upstream_file(upstream_files, tmp_path):
    """The heads of an upstream file load into PyTorch (what finetune trains) and
    stitch back tensor for tensor."""
    from gguf_mtp.heads.mtp import load_heads, save_heads
    from gguf_mtp.heads.stitch import stitch

    full = upstream_files["full"]
    heads = load_heads(full)
    save_heads(tmp_path / "heads", heads.state(), heads.layout, full)
    out = stitch(full, tmp_path / "heads", tmp_path / "stitched.gguf", progress=False).path
    a, b = read_header(full), read_header(out)
    for name, *_ in a.tensors:
        assert tensor_data(full, a, name) == tensor_data(out, b, name), name


def test_speculative_llama_serves_an_upstream_file(upstream_files):
    with SpeculativeLlama(str(upstream_files["full"]), n_ctx=512, n_threads=2, drafter="mtp") as llm:
        with Engine(upstream_files["full"], RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
            want = generate(eng, PROMPTS[0], 24, drafter="none").text
        r = llm.create_completion(PROMPTS[0], max_tokens=24, temperature=0, draft=3)
        assert r["choices"][0]["text"] == want and r["timings"]["draft_n"] > 0


def test_check_and_bench_take_an_upstream_file(upstream_files, tmp_path):
    """The commands users point at a file: `check` proves exactness and `bench`
    measures every drafter that applies, on a file gguf-mtp did not write."""
    import json

    full = str(upstream_files["full"])
    r = CliRunner().invoke(main, ["check", full, "--n-prompts", "2", "-n", "16", "--drafts", "1,3",
                                  "--drafters", "mtp,eagle,ngram", "--no-upstream", "--json",
                                  str(tmp_path / "check.json")])
    assert r.exit_code == 0, r.output
    report = json.loads((tmp_path / "check.json").read_text())
    assert "mtp" in json.dumps(report) and "eagle" in json.dumps(report)
    r = CliRunner().invoke(main, ["bench", full, "--quants", "source", "--drafters", "none,auto,mtp,ngram",
                                  "--drafts", "1", "--repeats", "1", "--prompts-per-set", "1", "-n", "8",
                                  "-o", str(tmp_path / "bench"), "-t", "2", "-q"])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "bench" / "results.json").read_text())["rows"]
    assert {row["drafter"] for row in rows} >= {"auto", "mtp", "ngram"}
    assert all(row["lossless"] for row in rows if row["lossless"] is not None)
