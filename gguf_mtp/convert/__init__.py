"""Conversion: a Hugging Face checkpoint (trunk + MTP layers) to one GGUF,
quantization with the heads kept at their own type, and grafting heads into a
GGUF made elsewhere.

    from gguf_mtp.convert import convert, ConvertOptions
    convert("Qwen3.5-tiny/", "model.gguf", ConvertOptions(outtype="q8_0", head_type="f16"))

Modules: :mod:`.core` (``convert()``), :mod:`.hf_checkpoint` (reading and
validating the checkpoint), :mod:`.archs` (one module per checkpoint family),
:mod:`.quantize`, :mod:`.graft`.
"""

from .core import OUTTYPES, ConversionError, ConvertOptions, ConvertResult, convert

__all__ = ["OUTTYPES", "ConversionError", "ConvertOptions", "ConvertResult", "convert"]
