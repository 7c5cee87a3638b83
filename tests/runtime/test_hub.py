"""Hub model ids as conversion input, through huggingface_hub's real code path,
against a local hub cache built here (HF_HUB_OFFLINE=1: nothing reaches a hub)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from gguf_mtp.convert.hub import ALLOW_PATTERNS, is_hub_id, split_id
from gguf_mtp.gguf.inspect import read_header, tensor_data

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _hub_cache(root, repo, checkpoint, extra_file=True):
    """``checkpoint`` laid out as huggingface_hub stores a downloaded snapshot:
    blobs, a snapshot of symlinks, refs/main."""
    base = root / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / COMMIT
    (base / "blobs").mkdir(parents=True)
    snap.mkdir(parents=True)
    for i, f in enumerate(sorted(checkpoint.iterdir())):
        blob = base / "blobs" / f"{i:040x}"
        shutil.copyfile(f, blob)
        os.symlink(os.path.relpath(blob, snap), snap / f.name)
    if extra_file:                       # a file conversion does not need stays out of the way
        (snap / "README.md").write_text("# tiny\n")
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(COMMIT)
    return root


def _convert(args, cache, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    return subprocess.run([sys.executable, "-m", "gguf_mtp.cli", "convert", *args, "-q"], env=env,
                          capture_output=True, text=True)


def test_hub_id_parsing(tmp_path, monkeypatch):
    assert is_hub_id("Qwen/Qwen3.5-0.8B") and is_hub_id("org/name@v1.0")
    assert split_id("org/name@rev") == ("org/name", "rev")
    assert split_id("org/name") == ("org/name", None)
    local = tmp_path / "org" / "name"
    local.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("org/name")              # a local directory wins
    assert not is_hub_id("justaname")
    assert "config.json" in ALLOW_PATTERNS and "*.safetensors" in ALLOW_PATTERNS


def test_convert_resolves_a_hub_id_from_the_offline_cache(factory, tmp_path):
    ck = factory.checkpoint()
    cache = _hub_cache(tmp_path / "hub", "tiny-org/tiny-qwen35", ck)
    out = tmp_path / "from-hub.gguf"
    r = _convert(["tiny-org/tiny-qwen35", str(out), "--outtype", "f32", "--draft-vocab", "0"], cache, tmp_path)
    assert r.returncode == 0, r.stderr
    ref = factory.gguf("f32")
    a, b = read_header(out), read_header(ref)
    assert [t[:3] for t in a.tensors] == [t[:3] for t in b.tensors]
    for name, *_ in a.tensors:
        assert tensor_data(out, a, name) == tensor_data(ref, b, name), name
    # a revision that is cached resolves too
    r = _convert([f"tiny-org/tiny-qwen35@{COMMIT}", str(tmp_path / "rev.gguf"), "--outtype", "f32"], cache,
                 tmp_path)
    assert r.returncode == 0, r.stderr


def test_an_uncached_id_offline_is_a_clear_error(tmp_path):
    (tmp_path / "hub").mkdir()
    r = _convert(["someone/not-cached", str(tmp_path / "x.gguf")], tmp_path / "hub", tmp_path)
    assert r.returncode != 0
    assert "not in the hub cache" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x.gguf").exists()
