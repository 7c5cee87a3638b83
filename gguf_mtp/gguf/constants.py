"""Every GGUF metadata key and value type gguf-mtp reads or writes, in one
place (as gguf-py's ``constants.Keys``). Per-architecture keys are templates:
``Keys.LLM.BLOCK_COUNT.format(arch="qwen35")``."""

from __future__ import annotations

from enum import IntEnum


class ValueType(IntEnum):
    """GGUF key/value types (``gguf.GGUFValueType``)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


#: struct format of every scalar value type
SCALAR_FORMAT = {
    ValueType.UINT8: "<B", ValueType.INT8: "<b", ValueType.UINT16: "<H", ValueType.INT16: "<h",
    ValueType.UINT32: "<I", ValueType.INT32: "<i", ValueType.FLOAT32: "<f", ValueType.BOOL: "<?",
    ValueType.UINT64: "<Q", ValueType.INT64: "<q", ValueType.FLOAT64: "<d",
}

GGUF_MAGIC = b"GGUF"
GGUF_VERSION = 3
DEFAULT_ALIGNMENT = 32


class Keys:
    class General:
        ARCHITECTURE = "general.architecture"
        ALIGNMENT = "general.alignment"
        FILE_TYPE = "general.file_type"

    class LLM:
        """llama.cpp's per-architecture keys (templates: ``.format(arch=...)``)."""

        BLOCK_COUNT = "{arch}.block_count"
        EMBEDDING_LENGTH = "{arch}.embedding_length"
        #: MTP (NextN) layers appended after the trunk's blocks
        NEXTN_PREDICT_LAYERS = "{arch}.nextn_predict_layers"
        RECURRENT_LAYERS = "{arch}.attention.recurrent_layers"
        FULL_ATTENTION_INTERVAL = "{arch}.full_attention_interval"

    class Drafter:
        """gguf-mtp's own keys shared by the drafter families."""

        #: "eagle" when the MTP block is trained as an EAGLE drafter (absent: native MTP)
        KIND = "gguf_mtp.drafter"
        #: int32 token ids of a compressed draft vocabulary, most frequent first
        DRAFT_VOCAB = "gguf_mtp.draft_vocab"

    class Medusa:
        PREFIX = "gguf_mtp.medusa."
        HEAD_COUNT = "gguf_mtp.medusa.head_count"
        LAYER_COUNT = "gguf_mtp.medusa.layer_count"
        #: "shared" | "own" | "draft"
        PROJECTION = "gguf_mtp.medusa.projection"
        #: "recycled" | "scratch" | "trained"
        INIT = "gguf_mtp.medusa.init"

    class Eagle:
        #: which trunk state the drafter reads ("post_norm_hidden")
        FEATURE = "gguf_mtp.eagle.feature"
        INIT = "gguf_mtp.eagle.init"


def arch_key(template: str, arch: str) -> str:
    """``arch_key(Keys.LLM.BLOCK_COUNT, "qwen35")`` -> ``"qwen35.block_count"``."""
    return template.format(arch=arch)
