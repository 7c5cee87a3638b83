"""EAGLE drafters recycled from the MTP layer: what they are and how they are stored.

An EAGLE-1/2 drafter is ``fc([emb(x_{t+1}); f_t])`` -> one decoder layer ->
predicted feature ``f_{t+1}``, logits from the shared LM head. A DeepSeek-style
MTP block has exactly that skeleton: ``eh_proj`` over ``[enorm(emb); hnorm(h)]``
is the fc, then one decoder layer of the trunk's kind, then the shared head
norm and LM head. So the EAGLE drafter lives in the model GGUF as the MTP
block itself (``blk.N.nextn.*`` plus the decoder layer's ``blk.N.*``; the
architecture tables in the README list them), and the patched llama.cpp runs
it through the MTP graph on every backend, with its own KV cache in the MTP
context, reading the target's features from each verification pass.

The feature
-----------
``f_t`` is the trunk's hidden state **after its final norm** at position t
(the row the LM head reads, and the state the MTP block already consumes).
The drafter's predicted feature ``f^_{t+1}`` is the block's output **after
its shared-head norm**: the same space, the vector its LM head reads. At the
next draft step the drafter is fed ``(x_{t+2}, f^_{t+1})``; once the target
has verified those positions, the cached rows are rewritten with the target's
own ``f_{t+1}`` (:class:`gguf_mtp.runtime.drafters.MTPDrafter`'s catch-up).

Training (``finetune --method eagle``) unrolls the recursion over K steps
(step k feeds step k-1's predicted feature, so the drafter learns on its own
outputs) with, per step, ``CE + kl_weight * KL(target || drafter) +
feature_weight * SmoothL1(f^_{t+k}, f_{t+k})``.

Metadata
--------
``gguf_mtp.drafter`` = ``"eagle"`` (absent: the native MTP layer),
``gguf_mtp.eagle.feature`` = ``"post_norm_hidden"``,
``gguf_mtp.eagle.init`` = ``"recycled"`` (the MTP weights as they are) |
``"scratch"`` (the block's matrices re-drawn, norms kept: EAGLE's fresh
layer) | ``"trained"`` (after ``stitch``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from ..gguf.constants import Keys, arch_key

FEATURE = "post_norm_hidden"
INITS = ("recycled", "scratch")


class EagleError(ValueError):
    pass


def scratch_state(state: dict, seed: int = 0, std: float = 0.02) -> dict:
    """The MTP block's tensors with every matrix re-drawn from N(0, std) (the
    usual transformer init) and 1-D tensors (norm gains) kept."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, t in state.items():
        if t.ndim >= 2:
            out[name] = torch.randn(t.shape, generator=g, dtype=torch.float32) * std
        else:
            out[name] = t.detach().clone().float()
    return out


def set_metadata(src: str | Path, out: str | Path, init: str, progress: bool = False) -> Path:
    """Copy ``src`` to ``out`` with the EAGLE metadata keys set."""
    from ..gguf.writer import STRING, SourceFile, encode_kv, write_gguf

    s = SourceFile.open(src)
    entries = [s.raw_kv(k) for k in s.header.kv if k not in (Keys.Drafter.KIND, Keys.Eagle.FEATURE, Keys.Eagle.INIT)]
    entries += [encode_kv(Keys.Drafter.KIND, STRING, "eagle"), encode_kv(Keys.Eagle.FEATURE, STRING, FEATURE),
                encode_kv(Keys.Eagle.INIT, STRING, init)]
    align = int(s.header.kv.get("general.alignment", 32))
    return write_gguf(out, entries, s.tensors(), alignment=align, progress=progress, desc="Writing")


def make_eagle(target: str | Path, out: str | Path, init: str = "recycled", *, seed: int = 0,
               head_type: str | None = None, progress: bool = False) -> Path:
    """OUT: TARGET with its MTP block turned into an EAGLE drafter (``init``)."""
    if init not in INITS:
        raise EagleError(f"init {init!r}: choose one of {', '.join(INITS)}")
    from ..gguf.inspect import read_header

    kv = read_header(target).kv
    arch = kv.get("general.architecture")
    if int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0) or 0) != 1:
        raise EagleError(f"{target}: an EAGLE drafter is recycled from exactly one MTP layer; this file has "
                         f"{kv.get(f'{arch}.nextn_predict_layers', 0)}")
    if Path(out).resolve() == Path(target).resolve():
        raise EagleError(f"{out}: write to a new file, not over TARGET")
    if init == "recycled":
        return set_metadata(target, out, init, progress)
    from .mtp import load_heads, save_heads
    from .stitch import stitch

    heads = load_heads(target)
    state = scratch_state(heads.state(), seed)
    with tempfile.TemporaryDirectory(prefix="gguf-mtp-eagle-") as tmp:
        save_heads(Path(tmp) / "heads", state, heads.layout, target)
        stitch(target, Path(tmp) / "heads", Path(tmp) / "stitched.gguf", head_type=head_type, progress=False)
        return set_metadata(Path(tmp) / "stitched.gguf", out, init, progress)


def read_kind(path: str | Path) -> dict:
    from ..gguf.inspect import read_header

    kv = read_header(path).kv
    return {k: kv[k] for k in (Keys.Drafter.KIND, Keys.Eagle.FEATURE, Keys.Eagle.INIT) if k in kv}


__all__ = ["EagleError", "make_eagle", "scratch_state", "set_metadata", "read_kind", "FEATURE", "INITS"]
