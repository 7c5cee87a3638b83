"""The runtime tier: tests that load models into the patched runtime. Shared
fixtures: tiny Qwen3.5 checkpoints in the real HF layout (generated in seconds,
no hub) and their GGUF conversions, built once per test session, and the
embedded default model."""

from __future__ import annotations

from pathlib import Path

import pytest

from gguf_mtp.upstream import RuntimeMissing, installed_runtime


@pytest.fixture(scope="session", autouse=True)
def _runtime_installed():
    """Every test here needs the patched runtime: a clear failure when it is missing."""
    try:
        installed_runtime()
    except RuntimeMissing as e:
        pytest.fail(f"{e}\n(tools/test.sh builds it before running the tests; `pytest tests/unit` needs none)",
                    pytrace=False)


class _Factory:
    """Builds checkpoints / GGUFs on first use and caches them for the session."""

    def __init__(self, root: Path):
        self.root = root
        self._ckpt: dict = {}
        self._gguf: dict = {}

    def checkpoint(self, **kw) -> Path:
        from gguf_mtp.testing.tiny_qwen35 import make_qwen35_checkpoint

        key = tuple(sorted(kw.items()))
        if key not in self._ckpt:
            d = self.root / f"ckpt{len(self._ckpt)}"
            make_qwen35_checkpoint(d, **kw)
            self._ckpt[key] = d
        return self._ckpt[key]

    def gguf(self, outtype: str = "f32", head_type: str | None = None, **kw) -> Path:
        from gguf_mtp.convert.core import ConvertOptions, convert

        key = (outtype, head_type, tuple(sorted(kw.items())))
        if key not in self._gguf:
            out = self.root / f"model{len(self._gguf)}-{outtype}.gguf"
            convert(self.checkpoint(**kw), out, ConvertOptions(outtype=outtype, head_type=head_type, progress=False))
            self._gguf[key] = out
        return self._gguf[key]


@pytest.fixture(scope="session")
def factory(session_tmp) -> _Factory:
    root = session_tmp / "models"
    root.mkdir()
    return _Factory(root)


@pytest.fixture(scope="session")
def default_gguf(session_tmp):
    """The embedded default model (trained, its MTP head accepts), converted."""
    from gguf_mtp.models.default import default_gguf as build

    def get(outtype: str = "f32", **kw) -> Path:
        return build(outtype=outtype, cache=session_tmp / "default", **kw)

    return get


def _real_model(name: str) -> Path:
    from gguf_mtp.models.fetch import MODELS

    m = MODELS[name]
    if not m.available():
        pytest.fail(f"{m.filename} is not in the cache: tools/test.sh fetches it (or run `gguf-mtp models fetch "
                    f"{name}`); real-model tests never skip", pytrace=False)
    return m.path()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct Q4_1 from its PyPI package (llama arch, no MTP)."""
    return _real_model("smollm2")


@pytest.fixture(scope="session")
def gemma3_gguf() -> Path:
    """Gemma 3 270M Q4_K_M from its PyPI packages (262k vocabulary, no MTP)."""
    return _real_model("gemma3")


#: Medusa heads trained for the default model (tools/train_medusa_default.py)
MEDUSA_HEADS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "default_medusa_heads"


@pytest.fixture(scope="session")
def trained_medusa_gguf(default_gguf, session_tmp):
    """The default model at ``outtype`` with its shipped trained Medusa heads
    (3 heads of one block, q8_0) stitched in: heads that accept, so the tests
    run the accept path."""
    from gguf_mtp.heads.medusa import init_recycled, write_heads
    from gguf_mtp.heads.stitch import stitch

    root = session_tmp / "medusa-trained"
    root.mkdir()
    made: dict[str, Path] = {}

    def get(outtype: str = "q8_0") -> Path:
        if outtype not in made:
            base = root / f"recycled-{outtype}.gguf"
            write_heads(default_gguf(outtype), init_recycled(default_gguf("f32"), 3, 1), base, head_type="q8_0",
                        progress=False)
            made[outtype] = stitch(base, MEDUSA_HEADS, root / f"medusa-{outtype}.gguf", head_type="q8_0",
                                   progress=False).path
        return made[outtype]

    return get


@pytest.fixture(scope="session")
def stock_tool() -> Path:
    """The pristine (unpatched) pinned llama.cpp's llama-speculative-simple: what
    a user of stock llama.cpp runs. Built once and cached (minutes cold, tools/test.sh
    builds it up front); never skipped."""
    from gguf_mtp.bench.upstream_mtp import build_tool

    return build_tool(progress=False, log=lambda *a: None)
