"""The fuzz slice: seeded hostile variants of valid inputs through the commands
that read them (`gguf_mtp.testing.fuzz`). Every case ends either in success (a
harmless mutation) or in exit code 1 with one line ``Error: ...`` naming the
problem (graft and stitch add every reason on indented lines), never a
traceback, and never an output file left behind.

    GGUF_MTP_FUZZ_SEED=7 GGUF_MTP_FUZZ_RANDOM=200 python -m pytest -q tests/runtime/test_fuzz.py -s   # a longer run
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import numpy as np
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.testing.fuzz import bytes_mutants, gguf_mutants, json_mutants

SEED = int(os.environ.get("GGUF_MTP_FUZZ_SEED", "0"))
N_RANDOM = int(os.environ.get("GGUF_MTP_FUZZ_RANDOM", "20"))
COUNTS: Counter = Counter()


def _small_pair(d):
    """A 2-layer llama BASE and HEADS with one MTP layer for it (tiny, valid)."""
    from gguf_mtp.testing.small_gguf import write_small_gguf

    common = dict(kv_heads=None, extra_kv={"general.name": "fuzz"})
    return (write_small_gguf(d / "base.gguf", n_blocks=2, **common),
            write_small_gguf(d / "heads.gguf", n_blocks=3, n_nextn=1, **common))


def _run(cmd: str, args, out, case: str) -> None:
    r = CliRunner().invoke(main, [cmd, *map(str, args)])
    assert r.exception is None or isinstance(r.exception, SystemExit), \
        f"{cmd} {case}: {type(r.exception).__name__}: {r.exception}"
    if r.exit_code == 0:
        COUNTS[cmd, "ran"] += 1
    else:
        # one "Error: ..." line (graft and stitch list every reason on indented lines after it)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and lines[0].startswith("Error: ") and all(x.startswith("  ") for x in lines[1:]), \
            f"{cmd} {case}: {r.output!r}"
        assert "Traceback" not in r.output
        if out is not None:
            assert not out.exists(), f"{cmd} {case}: left {out}"
        COUNTS[cmd, "refused"] += 1
    if out is not None:
        assert not list(out.parent.glob(f".{out.name}.*")), f"{cmd} {case}: left a partial file"
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink(missing_ok=True)


def test_fuzz_inspect_and_graft(tmp_path):
    base, heads = _small_pair(tmp_path)
    rng = np.random.default_rng(SEED)
    bad = tmp_path / "bad.gguf"
    out = tmp_path / "out.gguf"
    for name, data in gguf_mutants(base.read_bytes(), rng, N_RANDOM):
        bad.write_bytes(data)
        _run("inspect", [bad], None, name)
        _run("graft", [bad, heads, out], out, f"base {name}")
    for name, data in gguf_mutants(heads.read_bytes(), rng, N_RANDOM):
        bad.write_bytes(data)
        _run("graft", [base, bad, out], out, f"heads {name}")
    assert COUNTS["inspect", "refused"] >= 100 and COUNTS["graft", "refused"] >= 150


def test_fuzz_stitch_heads_directories(default_gguf, tmp_path):
    from gguf_mtp.heads.mtp import load_heads, save_heads

    target = default_gguf("q8_0")
    h = load_heads(target)
    good = save_heads(tmp_path / "good", h.state(), h.layout, target)
    rng = np.random.default_rng(SEED)
    meta = json.loads((good / "heads.json").read_text())
    d = tmp_path / "h"
    out = tmp_path / "out.gguf"
    for name, text in json_mutants(meta, rng):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / "heads.json").write_text(text, errors="surrogateescape")
        _run("stitch", [target, d, out, "-q"], out, f"heads.json {name}")
    raw = (good / "heads.safetensors").read_bytes()
    for name, data in bytes_mutants(raw, rng, N_RANDOM):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / "heads.safetensors").write_bytes(data)
        _run("stitch", [target, d, out, "-q"], out, f"heads.safetensors {name}")
    assert COUNTS["stitch", "refused"] >= 40


def test_fuzz_finetune_data(default_gguf, tmp_path):
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    target = default_gguf("q8_0")
    good = tmp_path / "good"
    distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(good), max_tokens=8,
                          max_prompts=2, shard_size=2, n_threads=2, progress=False))
    manifest = json.loads((good / "manifest.json").read_text())
    rng = np.random.default_rng(SEED)
    d = tmp_path / "d"
    out = tmp_path / "heads"
    # the keys finetune reads; a harmless mutation would train (slow), so only these
    keep = {k: manifest[k] for k in ("format", "shards", "model")}
    for name, text in json_mutants(keep, rng):
        shutil.copytree(good, d, dirs_exist_ok=True)
        doc = text if name in ("cut", "list", "null", "binary") else json.dumps({**manifest, **json.loads(text)}) \
            if not name.startswith("-") else json.dumps({k: v for k, v in manifest.items() if k != name[1:]})
        (d / "manifest.json").write_text(doc, errors="surrogateescape")
        _run("finetune", [d, target, "--out", out, "--steps", "1", "--cpu", "-q"], out, f"manifest {name}")
    shard = good / manifest["shards"][0]["file"]
    for name, data in bytes_mutants(shard.read_bytes(), rng, 4):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / shard.name).write_bytes(data)
        _run("finetune", [d, target, "--out", out, "--steps", "1", "--cpu", "-q"], out, f"shard {name}")
    assert COUNTS["finetune", "refused"] >= 20


def test_fuzz_generate_in_a_subprocess(default_gguf, tmp_path):
    """Files handed to llama.cpp: structural mutants of the default model through
    `gguf-mtp generate` in a child process (a crash there would take pytest
    down): exit 0 or 1 with one line, never a signal or a traceback."""
    import subprocess
    import sys

    data = default_gguf("q8_0").read_bytes()
    rng = np.random.default_rng(SEED)
    bad = tmp_path / "bad.gguf"
    n = 0
    for name, mutant in gguf_mutants(data, rng, n_random=3, per_kind=1):
        if name.startswith("cut@") and n % 3:          # a third of the cuts: they all end in our reader
            n += 1
            continue
        bad.write_bytes(mutant)
        p = subprocess.run([sys.executable, "-m", "gguf_mtp.cli", "generate", str(bad), "-p", "def f(x):",
                            "-n", "4", "--drafter", "ngram", "-t", "1"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert p.returncode in (0, 1), f"generate {name}: exit {p.returncode}\n{p.stderr[-1500:]}"
        assert "Traceback" not in p.stderr, f"generate {name}: {p.stderr[-1500:]}"
        if p.returncode == 1:
            assert p.stderr.strip().splitlines()[-1].startswith("Error: "), f"generate {name}: {p.stderr[-800:]}"
        COUNTS["generate", "ran" if p.returncode == 0 else "refused"] += 1
        n += 1
    assert COUNTS["generate", "refused"] >= 20


def test_fuzz_slice_size():
    """The CI slice runs at least 300 cases (the counts go in the closing note)."""
    total = sum(COUNTS.values())
    print("fuzz cases:", dict(COUNTS), "total", total)
    assert total >= 300
