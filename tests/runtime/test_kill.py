"""Interrupted runs: SIGKILL `convert`, `stitch` and `distill-data` at seeded
random moments (21 kills), then rerun the same command. The rerun must succeed
and give what an uninterrupted run gives (byte-identical files for convert and
stitch, the same tensors for distill), and no partial file may sit under a
finished file's name in between."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

KILLS_PER_COMMAND = 7


def _cmd(args, kill_after: float | None = None) -> int | None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "gguf_mtp.cli", *map(str, args)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is None:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err.decode()[-2000:]
        return p.returncode
    try:
        p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None                          # killed
    return p.returncode                      # finished before the kill


def _kill_then_rerun(args, read, rng, clean, partial_ok) -> int:
    """Time one full run (its output is the reference), then KILLS_PER_COMMAND
    times: ``clean()``, start the command and SIGKILL it at a random moment,
    check what it left with ``partial_ok``, rerun it to the end and compare."""
    clean(0)
    t0 = time.perf_counter()
    _cmd(args)
    full = time.perf_counter() - t0
    reference = read()
    killed = 0
    for i in range(KILLS_PER_COMMAND):
        clean(i)
        killed += _cmd(args, kill_after=float(rng.uniform(0.3, full))) is None
        assert partial_ok(read(), reference)
        _cmd(args)
        assert read() == reference
    return killed


def _file_reader(out):
    return lambda: out.read_bytes() if out.exists() else None


def _whole_or_absent(got, ref) -> bool:
    return got is None or got == ref


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(2026)


def test_convert_killed_then_rerun_is_byte_identical(factory, tmp_path, rng):
    out = tmp_path / "m.gguf"
    args = ["convert", factory.checkpoint(), out, "--outtype", "q8_0", "-q"]
    killed = _kill_then_rerun(args, _file_reader(out), rng, lambda i: out.unlink(missing_ok=True), _whole_or_absent)
    assert killed >= 4                                   # most kills land mid-run
    assert not list(tmp_path.glob(".m.gguf.*.partial"))  # a finished rerun clears what kills left


def test_stitch_killed_then_rerun_is_byte_identical(default_gguf, tmp_path, rng):
    from gguf_mtp.heads.mtp import load_heads, save_heads

    target = default_gguf("q8_0")
    h = load_heads(target)
    save_heads(tmp_path / "h", h.state(), h.layout, target)
    out = tmp_path / "s.gguf"
    args = ["stitch", target, tmp_path / "h", out, "--head-type", "q4_0", "-q"]
    killed = _kill_then_rerun(args, _file_reader(out), rng, lambda i: out.unlink(missing_ok=True), _whole_or_absent)
    assert killed >= 4
    assert not list(tmp_path.glob(".s.gguf.*.partial"))


def test_distill_killed_then_rerun_gives_the_same_data(default_gguf, tmp_path, rng):
    import json
    import shutil

    from safetensors.numpy import load_file

    out = tmp_path / "d"
    args = ["distill-data", default_gguf("q8_0"), "--out", out, "--max-prompts", "12", "--shard-size", "2",
            "--max-tokens", "12", "-t", "1", "-q"]

    def read():
        m = out / "manifest.json"
        if not m.exists():
            return None
        man = json.loads(m.read_text())
        return man.get("complete", False), {e["file"]: {k: v.tolist() for k, v in load_file(str(out / e["file"])).items()}
                                            for e in man["shards"]}

    def partial_ok(got, ref):
        # every shard the manifest lists is whole and what an uninterrupted run writes
        return got is None or all(ref[1].get(f) == s for f, s in got[1].items())

    def clean(i):                                        # even kills start fresh, odd ones resume
        if i % 2 == 0:
            shutil.rmtree(out, ignore_errors=True)

    killed = _kill_then_rerun(args, read, rng, clean, partial_ok)
    assert killed >= 4
