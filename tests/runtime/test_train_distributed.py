"""Head training on two CPU processes (gloo): the same global batch, seed and
data order give the one-process loss curve, the heads stitch and decode
exactly, and a killed 2-process run resumes. Small enough for a 2-core CI
machine.

The processes are started by torchrun, which accelerate's ``Accelerator``
reads as a multi-CPU run: accelerate 1.x's own ``accelerate launch --cpu
--num_processes 2`` starts ONE process unless MPI is set up (it only spreads
CPU processes through mpirun), which we found when this test first passed
the wrong way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

STEPS = 20


@pytest.fixture(scope="module")
def launcher():
    return [sys.executable, "-m", "torch.distributed.run"]


def _distill(target, out):
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(out),
                          max_tokens=40, max_prompts=8, shard_size=4, n_threads=2, progress=False))
    return out


@pytest.fixture(scope="module")
def data(default_gguf, tmp_path_factory):
    return _distill(default_gguf("q8_0"), tmp_path_factory.mktemp("distilled-2p"))


def _cmd(launcher, n_proc, data, target, out, batch, *extra):
    return [*launcher, "--nproc_per_node", str(n_proc), "--master_port", str(29500 + os.getpid() % 500),
            "-m", "gguf_mtp.train", str(data), str(target), "--out", str(out), "--steps", str(STEPS),
            "--batch-size", str(batch), "--seq-len", "24", "--warmup", "2", "--lr", "2e-3", "--cpu", "-q", *extra]


def _run(cmd):
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert p.returncode == 0, p.stderr[-4000:]
    return time.perf_counter() - t0


def _log(out):
    return [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]


def _curves_match(a, b, tol=1e-4):
    assert [e["step"] for e in a] == [e["step"] for e in b] == list(range(1, STEPS + 1))
    for x, y in zip(a, b):
        assert abs(x["loss"] - y["loss"]) <= tol * max(1.0, abs(x["loss"])), (x["step"], x["loss"], y["loss"])
        assert x["n"] == y["n"]


@pytest.mark.parametrize("model", ["default", "chained"])
def test_two_processes_follow_the_one_process_curve(launcher, data, default_gguf, factory, tmp_path, model):
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    if model == "default":
        target, train_data = default_gguf("q8_0"), data
    else:   # two chained MTP layers trained with K = 1: the second layer gets no gradient
        target = factory.gguf("f32", mtp_layers=2, init_std=0.1)
        train_data = _distill(target, tmp_path / "data")
    extra = ["--n-predict", "1"] if model == "chained" else []
    one, two = tmp_path / "one", tmp_path / "two"
    t1 = _run(_cmd(launcher, 1, train_data, target, one, 4, *extra))
    t2 = _run(_cmd(launcher, 2, train_data, target, two, 2, *extra))
    a, b = _log(one), _log(two)
    _curves_match(a, b)
    print(f"{model}: 1 process {t1:.1f} s, 2 processes {t2:.1f} s for {STEPS} steps; "
          f"max |loss difference| {max(abs(x['loss'] - y['loss']) for x, y in zip(a, b)):.2e}")
    assert a[-1]["loss"] < a[0]["loss"]                      # it trains
    out = stitch(target, two, tmp_path / "stitched.gguf", progress=False).path
    with Engine(out, RuntimeOptions(n_threads=2, n_ctx=512)) as eng:
        for p in ("def read_lines(path):\n", "class Stack:\n"):
            assert generate(eng, p, 32, drafter="mtp", draft=3).tokens == \
                generate(eng, p, 32, drafter="none").tokens


def test_a_killed_two_process_run_resumes(launcher, data, default_gguf, tmp_path):
    target = default_gguf("q8_0")
    ref, out = tmp_path / "ref", tmp_path / "resumed"
    _run(_cmd(launcher, 2, data, target, ref, 2, "--save-every", "5"))
    proc = subprocess.Popen(_cmd(launcher, 2, data, target, out, 2, "--save-every", "5"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 600
    while time.time() < deadline and not (out / "checkpoints" / "step-000010" / "trainer_state.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)                      # the launcher and both workers
    proc.wait()
    assert not (out / "heads.safetensors").exists()
    _run(_cmd(launcher, 2, data, target, out, 2, "--save-every", "5"))
    a, b = _log(ref), _log(out)
    _curves_match(a, b)
