"""Reading a Hugging Face checkpoint directory safely: config.json, the
safetensors files (single or sharded with model.safetensors.index.json) and
their headers, checked up front so that bad input fails early and names the
file and the tensor at fault.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

#: bytes per element of the safetensors dtypes
_DTYPE_SIZE = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1,
}


class CheckpointError(ValueError):
    """The checkpoint directory is unusable; the message names the file (and tensor)."""


@dataclass(frozen=True)
class TensorEntry:
    name: str
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offsets: tuple[int, int]

    @property
    def nbytes(self) -> int:
        return self.offsets[1] - self.offsets[0]


@dataclass
class Checkpoint:
    directory: Path
    config: dict
    tensors: dict[str, TensorEntry] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or []
        return archs[0] if archs else ""

    @property
    def files(self) -> list[Path]:
        return sorted({t.file for t in self.tensors.values()})


def read_safetensors_header(path: Path) -> dict:
    """Parse and validate one safetensors header against the file's real size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file (no header)")
        (n,) = struct.unpack("<Q", raw)
        if n > size - 8:
            raise CheckpointError(f"{path}: truncated safetensors file (header of {n} bytes, file of {size})")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{path}: corrupt safetensors header ({e})") from e
    data_size = size - 8 - n
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = meta["data_offsets"]
            dtype, shape = meta["dtype"], meta["shape"]
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: tensor {name}: malformed header entry") from e
        if end > data_size:
            raise CheckpointError(
                f"{path}: truncated safetensors file: tensor {name} needs bytes {begin}..{end} "
                f"but the data section has only {data_size}")
        n_elem = 1
        for d in shape:
            n_elem *= d
        if dtype in _DTYPE_SIZE and end - begin != n_elem * _DTYPE_SIZE[dtype]:
            raise CheckpointError(f"{path}: tensor {name}: {dtype}{shape} does not fill bytes {begin}..{end}")
    return header


#: config keys whose JSON type conversion relies on, wherever they appear (the top level or a
#: nested ``text_config``): a wrong type is refused here, in one line, rather than as a TypeError
#: from deep inside the converter. Positive integers / positive numbers / booleans / lists of strings.
_POSITIVE_INTS = ("hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads", "num_key_value_heads",
                  "head_dim", "intermediate_size", "full_attention_interval", "max_position_embeddings",
                  "moe_intermediate_size", "num_experts", "n_routed_experts", "num_experts_per_tok")
_REQUIRED = ("hidden_size", "num_hidden_layers", "vocab_size", "architectures")
_NON_NEGATIVE_INTS = ("mtp_num_hidden_layers", "num_nextn_predict_layers", "first_k_dense_replace",
                      "n_shared_experts", "linear_conv_kernel_dim", "linear_key_head_dim", "linear_value_head_dim",
                      "linear_num_key_heads", "linear_num_value_heads")
_POSITIVE_NUMBERS = ("rms_norm_eps",)
_BOOLS = ("tie_word_embeddings",)
_STRING_LISTS = ("architectures", "layer_types")


def check_config_types(config: dict, path: Path) -> None:
    """Refuse a config.json whose structural keys have the wrong JSON type or range."""
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    for scope, cfg in (("", config), ("text_config.", config.get("text_config"))):
        if cfg is None:
            continue
        if not isinstance(cfg, dict):
            raise CheckpointError(f"{path}: text_config must be an object, got {type(cfg).__name__}")
        for key, v in cfg.items():
            bad = None
            if v is None and key not in _REQUIRED:       # real configs write null for "not used" (head_dim)
                continue
            if key in _POSITIVE_INTS and not (is_int(v) and v > 0):
                bad = "a positive integer"
            elif key in _NON_NEGATIVE_INTS and not (is_int(v) and v >= 0):
                bad = "a non-negative integer"
            elif key in _POSITIVE_NUMBERS and not (isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0):
                bad = "a positive number"
            elif key in _BOOLS and not isinstance(v, bool):
                bad = "true or false"
            elif key in _STRING_LISTS and not (isinstance(v, list) and all(isinstance(x, str) for x in v)):
                bad = "a list of strings"
            if bad:
                raise CheckpointError(f"{path}: {scope}{key} must be {bad}, got {repr(v)[:60]}")


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Read config.json and every safetensors header of a checkpoint directory."""
    d = Path(directory)
    if not d.is_dir():
        raise CheckpointError(f"{d}: not a directory")
    cfg_path = d / "config.json"
    if not cfg_path.exists():
        raise CheckpointError(f"{d}: config.json is missing (not a Hugging Face checkpoint directory)")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{cfg_path}: invalid JSON ({e})") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{cfg_path}: not a JSON object (a {type(config).__name__})")
    check_config_types(config, cfg_path)

    index = d / "model.safetensors.index.json"
    if index.exists():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise CheckpointError(f"{index}: not a valid safetensors index ({e})") from e
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (d / f).exists()]
        if missing:
            raise CheckpointError(f"{index}: names shard(s) that do not exist: {', '.join(missing)}")
        paths = [d / f for f in files]
    else:
        paths = sorted(d.glob("*.safetensors"))
        weight_map = None
    if not paths:
        raise CheckpointError(f"{d}: no *.safetensors weights found")

    ck = Checkpoint(d, config)
    for p in paths:
        for name, meta in read_safetensors_header(p).items():
            if name == "__metadata__":
                continue
            ck.tensors[name] = TensorEntry(name, p, meta["dtype"], tuple(meta["shape"]),
                                           tuple(meta["data_offsets"]))
    if weight_map is not None:
        absent = [n for n in weight_map if n not in ck.tensors]
        if absent:
            raise CheckpointError(f"{index}: tensor {absent[0]} is listed in the index but absent "
                                  f"from {weight_map[absent[0]]}" + (f" (and {len(absent) - 1} more)" if len(absent) > 1 else ""))
    return ck


#: Pre-tokenizer regex of the original Qwen3.5 ``tokenizer.json`` (llama.cpp
#: quotes it in a comment for ``LLAMA_VOCAB_PRE_TYPE_QWEN35``). Compared with
#: Qwen2's it adds ``\p{M}`` to letter runs, so combining marks stay attached.
QWEN35_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+"
    r"|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+"
    r"|\s+(?!\S)"
    r"|\s+"
)


def declared_pretokenizer(model_dir: Path) -> str | None:
    """``"qwen35"`` when ``model_dir/tokenizer.json`` splits with Qwen3.5's regex, else None.

    The converter names the pre-tokenizer from a hash of token ids, and with
    the 151,936-token vocabulary of ``ggml-vocab-qwen35.gguf`` the Qwen3.5 and
    Qwen2 regexes tokenize its probe text identically, so the hash says
    ``qwen2``. This reads what the tokenizer actually declares instead.
    """
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        return None
    pre = json.loads(path.read_text(encoding="utf-8")).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre])
    for step in steps:
        if step.get("type") == "Split" and step.get("pattern", {}).get("Regex") == QWEN35_PRETOKENIZE_REGEX:
            return "qwen35"
    return None
