"""``gguf-mtp stitch TARGET.gguf HEADS_DIR OUT.gguf``: trained heads back into
the target GGUF, without re-converting the trunk.

Everything but the MTP block is copied from TARGET through
:mod:`gguf_mtp.gguf.writer` (key/values byte for byte, trunk tensors streamed);
the MTP tensors are replaced by the heads directory's, with the converter's
transforms re-applied (the architecture's :class:`~gguf_mtp.heads.common.TensorRule`
list: Qwen-family norms stored as 1 + w, experts split into gate / up stacks,
DeepSeek's kv_b split into k_b / v_b, llama's q / k RoPE permutation; see
:mod:`gguf_mtp.heads.mtp`) and quantized with gguf-py
(``gguf.quants.quantize``) to ``head_type``: by default the type each tensor
has in TARGET; 1-D tensors (norms) stay F32, as the converter writes them.
Tensors the heads do not train (the trunk, an MTP layer's own embedding and
shared head) are copied byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..gguf.constants import Keys, arch_key
from ..gguf.writer import ENCODABLE_TYPES as HEAD_TYPES  # noqa: F401 (re-exported)
from ..gguf.writer import GGUFWriteError, encode_tensor


class StitchError(GGUFWriteError):
    pass


@dataclass
class StitchResult:
    path: Path
    replaced: list[str]
    types: dict[str, str]


def stitch(target: str | Path, heads_dir: str | Path, out: str | Path, *, head_type: str | None = None,
           progress: bool = True) -> StitchResult:
    from gguf import GGMLQuantizationType

    from ..gguf.writer import SourceFile, Tensor, write_gguf
    from .mtp import read_heads_dir, read_layout, state_names, to_gguf_arrays

    if head_type is not None and head_type not in HEAD_TYPES:
        raise StitchError(f"--head-type {head_type!r}: choose one of {', '.join(HEAD_TYPES)}")
    src = SourceFile.open(target)
    out = Path(out)
    if out.resolve() == src.path.resolve():
        raise StitchError(f"{out}: write to a new file, not over the target")
    state, meta = read_heads_dir(heads_dir)
    from ..gguf.inspect import fingerprint_mismatch, model_fingerprint

    wrong = fingerprint_mismatch(model_fingerprint(src.path, src.header), meta.get("target", {}))
    if wrong:
        raise StitchError(f"the heads in {heads_dir} were trained for another model than TARGET {src.path} "
                          f"(TARGET vs heads: {'; '.join(wrong)})")
    if meta.get("kind") == "medusa":
        return _stitch_medusa(src, state, meta, out, head_type, progress)
    kv = src.header.kv
    arch = kv.get("general.architecture")
    n_heads = int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0) or 0)
    n_trunk = int(kv.get(arch_key(Keys.LLM.BLOCK_COUNT, arch), 0)) - n_heads
    problems = []
    if arch != meta.get("arch"):
        problems.append(f"architecture: TARGET {arch}, heads {meta.get('arch')}")
    if n_heads != meta.get("n_heads") or n_trunk != meta.get("n_trunk"):
        problems.append(f"layout: TARGET has {n_trunk} trunk layers + {n_heads} MTP layers, the heads were "
                        f"trained for {meta.get('n_trunk')} + {meta.get('n_heads')}")
    if problems:
        raise StitchError("the heads do not belong to TARGET:\n  " + "\n  ".join(problems))

    layout = read_layout(src.path)
    unexpected = sorted(set(state) - state_names(layout))
    if unexpected:
        raise StitchError(f"{heads_dir}: tensors TARGET's heads do not have: {unexpected}")
    try:
        arrays = to_gguf_arrays(layout, state)
    except ValueError as e:
        raise StitchError(f"{heads_dir}: {e}") from None
    names = set(arrays)
    by_name = {t.name: t for t in src.tensors()}

    tensors, types = [], {}
    for t in src.tensors():
        if t.name not in arrays:
            tensors.append(t)
            continue
        array = arrays[t.name]
        expected = tuple(reversed(t.shape))
        if tuple(array.shape) != expected:
            raise StitchError(f"{t.name}: the heads give shape {tuple(array.shape)}, TARGET's is {expected}")
        if array.ndim == 1:
            tname = "F32"
        elif head_type is not None:
            tname = HEAD_TYPES[head_type]
        else:
            tname = GGMLQuantizationType(t.gtype).name
        raw, gtype, shape = encode_tensor(array, tname)
        tensors.append(Tensor(t.name, shape, gtype, data=raw))
        types[t.name] = tname
    missing = set(names) - set(by_name)
    if missing:
        raise StitchError(f"TARGET lacks MTP tensors {sorted(missing)}")
    from ..gguf.writer import STRING, encode_kv

    entries = [src.raw_kv(k) for k in kv if k != Keys.Eagle.INIT]
    if Keys.Eagle.INIT in kv:            # an EAGLE drafter's block: now trained
        entries.append(encode_kv(Keys.Eagle.INIT, STRING, "trained"))
    align = int(kv.get("general.alignment", 32))
    write_gguf(out, entries, tensors, alignment=align, progress=progress, desc="Stitching")
    return StitchResult(out, sorted(names), types)


def _stitch_medusa(src, state, meta, out: Path, head_type: str | None, progress: bool) -> StitchResult:
    """Trained Medusa heads into TARGET (replacing its medusa.* blocks)."""
    from gguf import GGMLQuantizationType

    from .medusa import MedusaError, block_name, write_heads
    from .medusa_torch import medusa_from_dir

    heads = medusa_from_dir(state, meta)
    names = {t.name: t for t in src.tensors()}
    if head_type is None:
        first = names.get(block_name(0, 0, "weight"))
        if first is None:
            raise StitchError(f"{src.path}: has no Medusa heads and no --head-type was given")
        type_name = GGMLQuantizationType(first.gtype).name
        head_type = next((k for k, v in HEAD_TYPES.items() if v == type_name), None)
        if head_type is None:
            raise StitchError(f"TARGET's Medusa blocks are {type_name}; pick --head-type from "
                              f"{', '.join(HEAD_TYPES)}")
    try:
        path = write_heads(src.path, heads, out, head_type=head_type, init="trained", progress=progress)
    except MedusaError as e:
        raise StitchError(str(e)) from None
    replaced = sorted(block_name(k, l, p) for k in range(heads.n_heads) for l in range(heads.n_layers)
                      for p in ("weight", "bias"))
    return StitchResult(path, replaced, {n: HEAD_TYPES[head_type] for n in replaced if n.endswith("weight")})


__all__ = ["HEAD_TYPES", "StitchError", "StitchResult", "encode_tensor", "stitch"]
