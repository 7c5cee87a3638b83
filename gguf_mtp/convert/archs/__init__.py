"""The architecture table: one module per supported checkpoint family, each
describing how its MTP layers are stored and where they land in the GGUF."""

from __future__ import annotations

from .spec import MTPArch
from .deepseek_v3 import DEEPSEEK_V3
from .dense import GEMMA3_MTP, LLAMA_MTP, QWEN2_MTP, QWEN3_MTP
from .glm4_moe import GLM4_MOE
from .mimo import MIMO
from .qwen3_next import QWEN3_NEXT
from .qwen35 import QWEN35
from .qwen35_moe import QWEN35_MOE

#: every supported architecture, keyed by the Hugging Face class name
ARCHITECTURES: dict[str, MTPArch] = {name: arch for arch in (QWEN35, QWEN35_MOE, QWEN3_NEXT) for name in arch.hf_architectures}
ARCHITECTURES.update({name: arch for arch in (DEEPSEEK_V3, GLM4_MOE) for name in arch.hf_architectures})
ARCHITECTURES.update({name: arch for arch in (LLAMA_MTP, QWEN2_MTP, QWEN3_MTP, GEMMA3_MTP, MIMO) for name in arch.hf_architectures})


class UnsupportedArchitecture(ValueError):
    pass


def arch_for(hf_architecture: str) -> MTPArch:
    try:
        return ARCHITECTURES[hf_architecture]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise UnsupportedArchitecture(
            f"architecture {hf_architecture or '(none in config.json)'!r} is not supported; "
            f"supported: {supported}") from None


__all__ = ["ARCHITECTURES", "MTPArch", "UnsupportedArchitecture", "arch_for"]
