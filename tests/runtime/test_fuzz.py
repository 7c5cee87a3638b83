"""The fuzz slice: seeded hostile variants of valid inputs through the commands
that read them (`gguf_mtp.testing.fuzz`): inspect, graft, stitch, finetune,
compress-vocab and convert in process; generate, quantize and distill-data (they
hand the file to llama.cpp) in child processes. Every case ends either in
success (a harmless mutation) or in exit code 1 with one line ``Error: ...``
naming the problem (graft and stitch add every reason on indented lines), never
a traceback, never an output file left behind, and with memory bounded by the
inputs' size plus a constant.

    GGUF_MTP_FUZZ_SEED=7 GGUF_MTP_FUZZ_RANDOM=200 python -m pytest -q tests/runtime/test_fuzz.py -s   # a longer run
"""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path

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


def _input_bytes(args) -> int:
    size = 0
    for a in args:
        p = Path(str(a))
        if p.is_file():
            size += p.stat().st_size
        elif p.is_dir():
            size += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return size


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


#: the constant of the memory bound, where a command's own working set is larger: finetune
#: loads torch, the target's heads and an optimizer on its first case that gets that far
#: (358 MiB measured)
SLACK = {"finetune": 768 << 20}


def _run(cmd: str, args, out, case: str) -> None:
    """One in-process case. Its peak memory (the process's resident high-water
    mark, reset before the case through /proc/self/clear_refs) may grow by at
    most 3 × the inputs' size + 64 MiB (SLACK): a header claiming a huge count or
    length is refused before anything that size is allocated."""
    with open("/proc/self/clear_refs", "w") as f:      # resets VmHWM to the current resident size
        f.write("5")
    before = _rss_kib("VmRSS:")
    r = CliRunner().invoke(main, [cmd, *map(str, args)])
    grew = (_rss_kib("VmHWM:") - before) << 10
    bound = 3 * _input_bytes(args) + SLACK.get(cmd, 64 << 20)
    assert grew <= bound, f"{cmd} {case}: peak memory grew by {grew >> 20} MiB, bound {bound >> 20} MiB"
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
    for name, text in json_mutants(manifest, rng, keys=("format", "shards", "model")):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / "manifest.json").write_text(text, errors="surrogateescape")
        _run("finetune", [d, target, "--out", out, "--steps", "1", "--cpu", "-q"], out, f"manifest {name}")
    shard = good / manifest["shards"][0]["file"]
    for name, data in bytes_mutants(shard.read_bytes(), rng, 4):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / shard.name).write_bytes(data)
        _run("finetune", [d, target, "--out", out, "--steps", "1", "--cpu", "-q"], out, f"shard {name}")
    assert COUNTS["finetune", "refused"] >= 20


def _child(args, case: str, *, out=None, timeout: float = 180) -> tuple[int, str, int]:
    """Run ``gguf-mtp ARGS`` in a child process (a crash inside llama.cpp must not
    take pytest down); returns (exit code, stderr, peak RSS in bytes). The peak is
    the child's own (wait4), so each case is measured alone."""
    import subprocess
    import sys
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen([sys.executable, "-m", "gguf_mtp.cli", *map(str, args)], stdout=subprocess.DEVNULL,
                             stderr=err, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        t0 = time.monotonic()
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - t0 > timeout:
                p.kill()
                raise AssertionError(f"{args[0]} {case}: no answer in {timeout} s")
            time.sleep(0.05)
        p.returncode = rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read()
    assert rc in (0, 1), f"{args[0]} {case}: exit {rc}\n{text[-1500:]}"
    assert "Traceback" not in text, f"{args[0]} {case}: {text[-1500:]}"
    if rc == 1:
        assert text.strip().splitlines()[-1].startswith("Error: "), f"{args[0]} {case}: {text[-800:]}"
        if out is not None:
            assert not Path(out).exists(), f"{args[0]} {case}: left {out}"
    COUNTS[args[0], "ran" if rc == 0 else "refused"] += 1
    if out is not None:
        assert not list(Path(out).parent.glob(f".{Path(out).name}.*")), f"{args[0]} {case}: left a partial file"
        if Path(out).is_dir():
            shutil.rmtree(out)
        else:
            Path(out).unlink(missing_ok=True)
    return rc, text, usage.ru_maxrss * 1024


def _memory_bound(baseline: int, file_size: int) -> int:
    """What a hostile variant of a file may cost: what the valid file cost, plus
    the file's size twice (a header that claims more is refused before it is
    allocated), plus 64 MiB."""
    return baseline + 2 * file_size + (64 << 20)


def test_fuzz_llama_cpp_commands(default_gguf, tmp_path):
    """The commands that hand a file to llama.cpp — `generate` (loads it),
    `quantize` (its quantizer) and `distill-data` (loads the target to decode) —
    on structural mutants, in child processes (a crash there would take pytest
    down): exit 0 or 1 with one line, never a signal or a traceback, no partial
    output, and peak memory within the valid run's plus twice the file size."""
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    rng = np.random.default_rng(SEED + 1)
    bad = tmp_path / "bad.gguf"
    # (source, argv, output, random cuts, every how many-th cut runs: they all end in our reader)
    jobs = {
        "generate": (default_gguf("q8_0"), lambda out: ["generate", bad, "-p", "def f(x):", "-n", "4", "--drafter",
                                                        "ngram", "-t", "1"], None, 3, 3),
        "quantize": (default_gguf("f16"), lambda out: ["quantize", bad, out, "q8_0", "-t", "1"], tmp_path / "q.gguf",
                     2, 4),
        "distill-data": (default_gguf("q8_0"),
                         lambda out: ["distill-data", "run", bad, "--out", out, "--prompts", DEFAULT_PROMPTS_DIR,
                                      "--max-prompts", "1", "-n", "2", "-t", "1", "-q"], tmp_path / "distilled", 2, 4),
    }
    for cmd, (src, argv, out, n_random, every) in jobs.items():
        data = src.read_bytes()
        bad.write_bytes(data)
        rc, text, baseline = _child(argv(out), "valid", out=out)
        assert rc == 0, f"{cmd} on the valid file: {text[-800:]}"
        n = 0
        for name, mutant in gguf_mutants(data, rng, n_random=n_random, per_kind=1):
            if name.startswith("cut@") and n % every:
                n += 1
                continue
            bad.write_bytes(mutant)
            rc, text, peak = _child(argv(out), name, out=out)
            assert peak <= _memory_bound(baseline, len(data)), \
                f"{cmd} {name}: peak {peak >> 20} MiB, valid file {baseline >> 20} MiB"
            n += 1
        assert COUNTS[cmd, "refused"] >= 12, COUNTS


def test_fuzz_compress_vocab(default_gguf, tmp_path):
    """`compress-vocab` on mutants of its TARGET and of the distilled data's manifest."""
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    target = default_gguf("q8_0")
    data_dir = tmp_path / "data"
    distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(data_dir), max_tokens=8,
                          max_prompts=2, shard_size=2, n_threads=2, progress=False))
    rng = np.random.default_rng(SEED + 2)
    bad = tmp_path / "bad.gguf"
    out = tmp_path / "out.gguf"
    raw = target.read_bytes()
    for name, data in gguf_mutants(raw, rng, n_random=6, per_kind=2):
        bad.write_bytes(data)
        _run("compress-vocab", [bad, data_dir, out, "-N", "64", "-q"], out, f"target {name}")
    manifest = json.loads((data_dir / "manifest.json").read_text())
    d = tmp_path / "d"
    for name, text in json_mutants(manifest, rng, keys=("format", "shards", "model")):
        shutil.copytree(data_dir, d, dirs_exist_ok=True)
        (d / "manifest.json").write_text(text, errors="surrogateescape")
        _run("compress-vocab", [target, d, out, "-N", "64", "-q"], out, f"manifest {name}")
    shard = data_dir / manifest["shards"][0]["file"]
    for name, data in bytes_mutants(shard.read_bytes(), rng, 4):
        shutil.copytree(data_dir, d, dirs_exist_ok=True)
        (d / shard.name).write_bytes(data)
        _run("compress-vocab", [target, d, out, "-N", "64", "-q"], out, f"shard {name}")
    assert COUNTS["compress-vocab", "refused"] >= 60, COUNTS


#: the config keys every conversion reads (a hostile value of any other key is either ignored or also refused)
CONFIG_KEYS = ("architectures", "hidden_size", "num_hidden_layers", "mtp_num_hidden_layers", "vocab_size",
               "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size", "rms_norm_eps",
               "full_attention_interval", "layer_types", "tie_word_embeddings")


def test_fuzz_convert_checkpoints(factory, tmp_path):
    """`convert` on a checkpoint whose config.json or safetensors file is hostile:
    every case converts or ends in one line naming the problem, with no OUT left."""
    good = factory.checkpoint()
    rng = np.random.default_rng(SEED + 3)
    d = tmp_path / "ckpt"
    out = tmp_path / "out.gguf"
    config = json.loads((good / "config.json").read_text())
    for name, text in json_mutants(config, rng, keys=CONFIG_KEYS):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / "config.json").write_text(text, errors="surrogateescape")
        _run("convert", [d, out, "-q", "--outtype", "f32"], out, f"config {name}")
    raw = (good / "model.safetensors").read_bytes()
    for name, data in bytes_mutants(raw, rng, 12):
        shutil.copytree(good, d, dirs_exist_ok=True)
        (d / "model.safetensors").write_bytes(data)
        _run("convert", [d, out, "-q", "--outtype", "f32"], out, f"safetensors {name}")
    assert COUNTS["convert", "refused"] >= 40, COUNTS


def test_fuzz_slice_size():
    """The CI slice runs at least 300 cases (the counts go in the closing note)."""
    total = sum(COUNTS.values())
    print("fuzz cases:", dict(COUNTS), "total", total)
    assert total >= 300
