"""Hugging Face tokenizer files for Qwen3.5, rebuilt from a llama.cpp vocab GGUF.

Tiny test checkpoints need a real tokenizer: the pinned converter identifies
the pre-tokenizer by hashing the token ids of a fixed probe text
(``get_vocab_base_pre``), so only the genuine Qwen3.5 vocabulary, merges and
pre-tokenizer produce the ``qwen35`` answer. llama.cpp ships that vocabulary as
``models/ggml-vocab-qwen35.gguf`` (no weights, just the ``tokenizer.ggml.*``
metadata); this module turns it back into ``tokenizer.json`` and
``tokenizer_config.json``.

Generated files are cached under ``<cache>/tokenizers/<sha256 of the GGUF>`` so
that every checkpoint after the first gets them by a plain copy.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..convert.hf_checkpoint import QWEN35_PRETOKENIZE_REGEX
from ..upstream import cache_dir, sha256_file

#: Used only when the vocab GGUF carries no ``tokenizer.chat_template``.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

#: Bump when the generated files change, so stale cache entries are not reused.
_FORMAT_VERSION = 1

#: The files that ``write_qwen35_tokenizer`` puts into a model directory.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")

#: Cached beside them: token count and special ids, so callers need not parse
#: the GGUF (which takes seconds) to learn them.
VOCAB_INFO_FILE = "vocab-info.json"

# gguf.TokenType values (kept local so reading them needs no gguf import).
_NORMAL, _CONTROL, _USER_DEFINED = 1, 3, 4

#: Placeholder names that the converter invents for ids missing from a vocab.
_PLACEHOLDER = re.compile(r"\[PAD\d+\]")

_VOCAB_TEST_SEPARATOR = "\n__ggml_vocab_test__\n"


@dataclass(frozen=True)
class GgufVocab:
    """The ``tokenizer.ggml.*`` metadata of a GGUF file."""

    model: str
    pre: str | None
    tokens: list[str]
    token_types: list[int]
    merges: list[str]
    bos_id: int | None
    eos_id: int | None
    pad_id: int | None
    chat_template: str | None

    def token(self, token_id: int | None) -> str | None:
        return None if token_id is None else self.tokens[token_id]


def default_vocab_gguf() -> Path:
    """The Qwen3.5 vocab bundled with the installed patched runtime."""
    from ..upstream import installed_runtime

    return installed_runtime().vocab("ggml-vocab-qwen35.gguf")


def read_gguf_vocab(path: Path) -> GgufVocab:
    """Read the tokenizer metadata of a GGUF file with gguf-py's reader."""
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields

    def get(key: str, default=None):
        field = fields.get(key)
        return default if field is None else field.contents()

    return GgufVocab(
        model=get("tokenizer.ggml.model"),
        pre=get("tokenizer.ggml.pre"),
        tokens=list(get("tokenizer.ggml.tokens")),
        token_types=[int(t) for t in get("tokenizer.ggml.token_type")],
        merges=list(get("tokenizer.ggml.merges", [])),
        bos_id=get("tokenizer.ggml.bos_token_id"),
        eos_id=get("tokenizer.ggml.eos_token_id"),
        pad_id=get("tokenizer.ggml.padding_token_id"),
        chat_template=get("tokenizer.chat_template"),
    )


def _split_vocab(vocab: GgufVocab) -> tuple[dict[str, int], list[dict]]:
    """BPE vocabulary (normal tokens) and ``added_tokens`` entries (the rest).

    CONTROL tokens become special added tokens, USER_DEFINED ones plain added
    tokens. ``[PAD<id>]`` placeholders and UNUSED ids are left out, as in the
    original tokenizer: they pad the embedding matrix, not the vocabulary.
    """
    bpe: dict[str, int] = {}
    added: list[dict] = []
    for token_id, (text, kind) in enumerate(zip(vocab.tokens, vocab.token_types)):
        if kind == _NORMAL:
            bpe[text] = token_id
        elif kind == _CONTROL or (kind == _USER_DEFINED and not _PLACEHOLDER.fullmatch(text)):
            added.append({
                "id": token_id,
                "content": text,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": kind == _CONTROL,
            })
    return bpe, added


def build_tokenizer_json(vocab: GgufVocab) -> dict:
    """The ``tokenizer.json`` document: byte-level BPE with the Qwen3.5 pre-tokenizer."""
    if vocab.model != "gpt2":
        raise ValueError(f"expected a byte-level BPE ('gpt2') vocab, got {vocab.model!r}")
    bpe, added = _split_vocab(vocab)
    byte_level = {"add_prefix_space": False, "trim_offsets": False, "use_regex": False}
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": QWEN35_PRETOKENIZE_REGEX},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {"type": "ByteLevel", **byte_level},
            ],
        },
        "post_processor": {"type": "ByteLevel", **byte_level},
        "decoder": {"type": "ByteLevel", **byte_level},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": bpe,
            "merges": [merge.split(" ") for merge in vocab.merges],
        },
    }


def build_tokenizer_config(vocab: GgufVocab, added_tokens: list[dict]) -> dict:
    """The ``tokenizer_config.json`` document.

    ``tokenizer_class`` is the generic fast tokenizer, so transformers loads
    ``tokenizer.json`` as written instead of rebuilding a model-specific
    tokenizer with its own copy of the regex. Qwen adds no BOS token.
    """
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": {
            str(t["id"]): {k: v for k, v in t.items() if k != "id"} for t in added_tokens
        },
        "bos_token": None,
        "chat_template": vocab.chat_template or CHATML_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": vocab.token(vocab.eos_id),
        "errors": "replace",
        "model_max_length": 262144,
        "pad_token": vocab.token(vocab.pad_id if vocab.pad_id is not None else vocab.eos_id),
        "split_special_tokens": False,
        "tokenizer_class": "TokenizersBackend",
        "unk_token": None,
    }


def _write_json(path: Path, doc: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=1)
        f.write("\n")


def generate_tokenizer_files(vocab_gguf: Path, out_dir: Path) -> None:
    """Write the tokenizer files (and the vocab info) for ``vocab_gguf`` into ``out_dir``."""
    vocab = read_gguf_vocab(vocab_gguf)
    tokenizer_json = build_tokenizer_json(vocab)
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(out_dir / "tokenizer.json", tokenizer_json)
    _write_json(out_dir / "tokenizer_config.json",
                build_tokenizer_config(vocab, tokenizer_json["added_tokens"]))
    _write_json(out_dir / VOCAB_INFO_FILE, {
        "n_tokens": len(vocab.tokens),
        "bos_id": vocab.bos_id,
        "eos_id": vocab.eos_id,
        "pad_id": vocab.pad_id,
        "pre": vocab.pre,
    })


def _is_complete(entry: Path) -> bool:
    return all((entry / name).is_file() for name in (*TOKENIZER_FILES, VOCAB_INFO_FILE))


def cached_tokenizer_dir(vocab_gguf: Path) -> Path:
    """Directory holding the generated files for ``vocab_gguf``, creating it once.

    The entry is built in a temporary sibling and renamed into place, so a
    concurrent or interrupted run never leaves a half-written entry behind.
    """
    key = f"{sha256_file(vocab_gguf)[:32]}-v{_FORMAT_VERSION}"
    root = cache_dir() / "tokenizers"
    entry = root / key
    if _is_complete(entry):
        return entry
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".tmp-") as tmp:
        staged = Path(tmp) / "files"
        generate_tokenizer_files(vocab_gguf, staged)
        if entry.exists():  # incomplete leftovers
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.replace(staged, entry)
        except OSError:
            if not _is_complete(entry):  # losing a race is fine once the winner is done
                raise
    return entry


def write_qwen35_tokenizer(out_dir: Path, vocab_gguf: Path | None = None) -> None:
    """Write Qwen3.5's ``tokenizer.json`` and ``tokenizer_config.json`` into ``out_dir``.

    ``vocab_gguf`` defaults to the ``ggml-vocab-qwen35.gguf`` bundled with the
    installed runtime (available after ``gguf-mtp runtime build``).
    """
    vocab_gguf = Path(vocab_gguf) if vocab_gguf is not None else default_vocab_gguf()
    source = cached_tokenizer_dir(vocab_gguf)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copyfile(source / name, out_dir / name)


def qwen35_vocab_info(vocab_gguf: Path | None = None) -> dict:
    """Token count and special ids of ``vocab_gguf``: ``n_tokens``, ``bos_id``,
    ``eos_id``, ``pad_id`` (and the GGUF's ``pre`` name); read from the cache."""
    vocab_gguf = Path(vocab_gguf) if vocab_gguf is not None else default_vocab_gguf()
    return json.loads((cached_tokenizer_dir(vocab_gguf) / VOCAB_INFO_FILE).read_text())


def vocab_test_cases(vocab_gguf: Path) -> list[tuple[str, list[int]]]:
    """The (text, expected ids) pairs of llama.cpp's ``<vocab>.gguf.inp/.out`` files.

    Inputs are separated by ``\\n__ggml_vocab_test__\\n`` (the file ends with
    one); the ``.out`` file has one line of space-separated ids per input. The
    ids are those of tokenizing without special-token handling.
    """
    vocab_gguf = Path(vocab_gguf)
    raw = Path(f"{vocab_gguf}.inp").read_bytes().decode("utf-8")
    texts = raw.split(_VOCAB_TEST_SEPARATOR)
    if texts and texts[-1] == "":
        texts.pop()
    lines = Path(f"{vocab_gguf}.out").read_text(encoding="utf-8").splitlines()
    if len(texts) != len(lines):
        raise ValueError(f"{len(texts)} inputs but {len(lines)} expected outputs for {vocab_gguf}")
    return [(text, [int(t) for t in line.split()]) for text, line in zip(texts, lines)]


