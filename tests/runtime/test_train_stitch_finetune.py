"""gguf-mtp finetune (FastMTP, MTP-D) and gguf-mtp stitch: the step weights,
a few CPU steps with a per-position log and resume, untouched heads stitched
back byte for byte, and a fine-tuned stitched GGUF stays lossless."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from gguf_mtp.cli import main
from gguf_mtp.train.losses import step_weights


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def distilled(default_gguf, tmp_path_factory):
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    out = tmp_path_factory.mktemp("distilled")
    distill(DistillConfig(target=str(default_gguf("q8_0")), prompts=str(DEFAULT_PROMPTS_DIR), out=str(out),
                          max_tokens=24, max_prompts=4, shard_size=2, n_threads=2, progress=False))
    return out


def test_step_weights():
    assert [round(a, 2) for a in step_weights(3, 0.6)] == [0.51, 0.31, 0.18]
    assert step_weights(1, 0.6) == [1.0]


def _finetune(data, target, out, *extra):
    return CliRunner().invoke(main, ["finetune", str(data), str(target), "--out", str(out), "--batch-size", "2",
                                     "--seq-len", "24", "--warmup", "1", "--lr", "1e-3", "--cpu", "-q", *extra])


@pytest.mark.parametrize("method", ["fastmtp", "mtp-d"])
def test_finetune_logs_per_position_and_resumes(method, distilled, default_gguf, tmp_path):
    target = default_gguf("q8_0")
    out = tmp_path / "heads"
    r = _finetune(distilled, target, out, "--method", method, "--steps", "2", "--save-every", "1")
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert all(len(e["acc"]) == 3 and all(0 <= a <= 1 for a in e["acc"]) for e in log)
    if method == "mtp-d":
        assert all(len(e["kl"]) == 3 and min(e["kl"]) >= 0 for e in log)
    meta = json.loads((out / "heads.json").read_text())
    from gguf_mtp.gguf.inspect import read_header

    n_trunk = int(read_header(target).kv["qwen35.block_count"]) - 1          # the default model's trunk layers
    assert meta["training"]["method"] == method and meta["n_trunk"] == n_trunk
    r = _finetune(distilled, target, out, "--method", method, "--steps", "3", "--save-every", "1")
    assert r.exit_code == 0, r.output
    assert "resumed at 2" in r.output
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2, 3]
    r = _finetune(distilled, target, out, "--method", "mtp-d" if method == "fastmtp" else "fastmtp", "--steps", "4")
    assert r.exit_code != 0 and "different settings" in r.output


@pytest.mark.parametrize("outtype", ["f32", "q8_0"])
def test_stitch_untouched_heads_is_byte_identical(outtype, default_gguf, tmp_path):
    from gguf_mtp.heads.mtp import load_heads, save_heads

    target = default_gguf(outtype)
    heads = load_heads(target)
    save_heads(tmp_path / "h", heads.state(), heads.layout, target)
    out = tmp_path / "stitched.gguf"
    r = CliRunner().invoke(main, ["stitch", str(target), str(tmp_path / "h"), str(out), "-q"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes() == target.read_bytes()


def test_stitched_finetuned_heads_are_lossless(distilled, default_gguf, tmp_path):
    from gguf_mtp.heads.mtp import load_heads
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    target = default_gguf("q8_0")
    heads = tmp_path / "heads"
    assert _finetune(distilled, target, heads, "--steps", "2", "--lr", "3e-3").exit_code == 0
    out = tmp_path / "stitched.gguf"
    r = CliRunner().invoke(main, ["stitch", str(target), str(heads), str(out), "--head-type", "q8_0", "--json", "-q"])
    assert r.exit_code == 0, r.output
    assert set(json.loads(r.output)["types"].values()) == {"F32", "Q8_0"}
    # the stitched file carries the trained heads (what stitch wrote is what load_heads reads back) ...
    from safetensors.torch import load_file

    trained = load_file(str(heads / "heads.safetensors"))
    back = load_heads(out).state()
    assert max(float((back[k] - trained[k]).abs().max()) for k in trained) > 0  # changed from the original...
    for k in trained:  # ...and equal to the trained weights up to q8_0 rounding
        torch.testing.assert_close(back[k], trained[k], rtol=0, atol=0.02 * float(trained[k].abs().max()) + 1e-6)
    orig = load_heads(target).state()
    assert any(not torch.equal(orig[k], back[k]) for k in orig)
    # ... and speculative decoding with it is still token-for-token plain greedy decoding
    with Engine(out, RuntimeOptions(n_ctx=512, n_threads=2)) as eng:
        for prompt in ("def read_config(path):\n", "import os\nimport sys\n\n"):
            plain = generate(eng, prompt, 24, drafter="none", draft=0).tokens
            for k in (1, 3):
                g = generate(eng, prompt, 24, drafter="mtp", draft=k)
                assert g.tokens == plain
                assert sum(g.stats.drafted) > 0


def test_stitch_refuses_heads_of_another_layout(default_gguf, factory, tmp_path):
    from gguf_mtp.heads.mtp import load_heads, save_heads

    h = load_heads(default_gguf("f32"))
    save_heads(tmp_path / "h", h.state(), h.layout, "x")
    meta = json.loads((tmp_path / "h" / "heads.json").read_text())
    meta["n_trunk"] = 7
    (tmp_path / "h" / "heads.json").write_text(json.dumps(meta))
    r = CliRunner().invoke(main, ["stitch", str(default_gguf("f32")), str(tmp_path / "h"), str(tmp_path / "o.gguf")])
    assert r.exit_code != 0 and "do not belong" in r.output
    assert not (tmp_path / "o.gguf").exists()


def test_the_same_command_runs_under_accelerate_launch(distilled, default_gguf, tmp_path):
    """The multi-GPU command of the README, here with one CPU process: the
    training loop is accelerate's, not a launcher of ours."""
    import os
    import shutil
    import subprocess
    import sys

    launcher = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    if launcher is None:
        pytest.skip("accelerate's launcher is not installed")
    out = tmp_path / "heads"
    proc = subprocess.run(
        [launcher, "launch", "--cpu", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "gguf_mtp.train", str(distilled), str(default_gguf("q8_0")),
         "--out", str(out), "--steps", "2", "--batch-size", "2", "--seq-len", "24", "--warmup", "1", "-q"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [1, 2]
    assert (out / "heads.safetensors").exists()


@pytest.mark.parametrize("damage", ["json", "truncated", "swapped", "other-model", "bad-target"])
def test_stitch_on_damaged_inputs_is_one_clear_line(default_gguf, tmp_path, damage):
    """Corrupt heads.json, a cut or swapped heads.safetensors, heads of another
    model, a target that is not a GGUF: one line naming the file, no traceback, no output."""
    from gguf_mtp.heads.mtp import load_heads, save_heads

    target = default_gguf("f32")
    h = load_heads(target)
    d = save_heads(tmp_path / "h", h.state(), h.layout, target)
    meta = json.loads((d / "heads.json").read_text())
    assert meta["target"]["n_vocab"] > 0 and len(meta["heads_sha256"]) == 64
    if damage == "json":
        (d / "heads.json").write_text("{not json")
        want = "not valid JSON"
    elif damage == "truncated":
        raw = (d / "heads.safetensors").read_bytes()
        (d / "heads.safetensors").write_bytes(raw[: len(raw) // 2])
        want = "is not the file heads.json was written with"
    elif damage == "swapped":                      # killed between the two renames of a later save
        meta["heads_sha256"] = "0" * 64
        (d / "heads.json").write_text(json.dumps(meta))
        want = "is not the file heads.json was written with"
    elif damage == "other-model":
        meta["target"]["vocab_sha256"] = "f" * 64
        (d / "heads.json").write_text(json.dumps(meta))
        want = "trained for another model"
    else:
        bad = tmp_path / "bad.gguf"
        bad.write_bytes(b"GGUX" + target.read_bytes()[4:4096])
        target, want = bad, "bad magic"
    out = tmp_path / "o.gguf"
    r = CliRunner().invoke(main, ["stitch", str(target), str(d), str(out), "-q"])
    assert r.exit_code == 1 and want in r.output, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".o.gguf*"))
