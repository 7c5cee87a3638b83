"""Block-scaled FP8 checkpoints (DeepSeek-V3/R1/V3.1, GLM-4.5-FP8, ...).

Such checkpoints store most linear weights as ``float8_e4m3fn`` with one
``float32`` scale per 128 x 128 tile in ``<name>.weight_scale_inv`` and say so
in ``config.json``::

    "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                            "activation_scheme": "dynamic",
                            "weight_block_size": [128, 128]}

The real weight is ``fp8[i, j] * scale_inv[i // 128, j // 128]`` (edge tiles
may be partial). The pinned converter's ``dequant_model`` already does this,
lazily and per tensor: each FP8 weight's loader is wrapped so that the
product is computed only when the writer reaches that tensor, from the
memory-mapped shard that holds it. What it does not do is refuse an FP8
tensor it cannot scale: the converter casts any dtype it does not write to
float32, so a missing scale (or a missing ``quantization_config``) would turn
into silently wrong weights. :func:`check_fp8_scales` makes that an error
before anything is written.
"""

from __future__ import annotations

import math
from pathlib import Path

FP8_DTYPES = ("F8_E4M3", "F8_E5M2")
SCALE_SUFFIX = "_scale_inv"


class FP8Error(ValueError):
    """An FP8 checkpoint that cannot be dequantized faithfully."""


def check_fp8_scales(model_dir: str | Path, config: dict) -> list[str]:
    """Check every FP8 tensor of a checkpoint against its block scales.

    Returns the names of the FP8 weights (empty for an unquantized
    checkpoint). Raises :class:`FP8Error` naming the first tensor at fault
    when FP8 tensors come without a ``quantization_config``, or, for
    ``quant_method`` ``fp8``, when a weight has no ``<name>_scale_inv`` or
    the scale grid does not match the weight's shape and
    ``weight_block_size``. Other quantization methods are left to the
    pinned converter.
    """
    from ..hf_checkpoint import load_checkpoint

    ck = load_checkpoint(model_dir)
    fp8 = [name for name, t in ck.tensors.items() if t.dtype in FP8_DTYPES]
    if not fp8:
        return []
    qc = config.get("quantization_config") or config.get("text_config", {}).get("quantization_config")
    if not isinstance(qc, dict) or not qc.get("quant_method"):
        raise FP8Error(
            f"{ck.directory}: {len(fp8)} tensors are FP8 (e.g. {fp8[0]}) but config.json has no "
            "quantization_config to say how to scale them")
    if qc["quant_method"] != "fp8":
        return fp8  # another scheme (compressed-tensors, ...): the pinned converter's own business
    block = qc.get("weight_block_size")
    for name in fp8:
        scale = ck.tensors.get(name + SCALE_SUFFIX)
        where = ck.tensors[name].file.name
        if scale is None:
            raise FP8Error(
                f"{where}: tensor {name} is FP8 ({ck.tensors[name].dtype}) but the checkpoint has no "
                f"{name}{SCALE_SUFFIX} (its block scales); the checkpoint is incomplete")
        shape = ck.tensors[name].shape
        if block and len(shape) == len(block):
            want = tuple(math.ceil(d / b) for d, b in zip(shape, block))
            if tuple(scale.shape) != want:
                raise FP8Error(
                    f"{scale.file.name}: {name}{SCALE_SUFFIX} has shape {list(scale.shape)}, but weight "
                    f"{list(shape)} in {block[0]}x{block[1]} blocks needs {list(want)}")
    return fp8


class FP8Checked:
    """Converter mixin: run :func:`check_fp8_scales` before the pinned
    converter dequantizes (and otherwise let it do so)."""

    def dequant_model(self):
        check_fp8_scales(self.dir_model, self.hparams)
        return super().dequant_model()
