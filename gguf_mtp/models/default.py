"""The embedded default model: a small Qwen3.5 whose MTP head really drafts.

A randomly initialised MTP head accepts (almost) nothing, which makes a poor
demonstration and an empty test of the speculative runtime. This model's
trunk and MTP head were co-trained from scratch (DeepSeek-V3 style,
``L = L_next + 0.3 * L_MTP``) on local real text by
``tools/train_default_model.py``: Python code (the standard library and eight
pure-Python site-packages) and English prose (the Linux man-pages project's
pages, rendered to text by :mod:`gguf_mtp.train.corpus`).
``data/DEFAULT_MODEL.md`` is its card (data, losses, acceptance measured in
llama.cpp).

Shape (``Qwen3_5ForCausalLM``, the layout of the released checkpoints): hidden
192, 6 layers (Gated DeltaNet, Gated DeltaNet, full attention, twice), 6 query
/ 2 KV heads of dim 32 with output gate and partial M-RoPE, MLP 576, tied
embeddings, one MTP layer; 4.98 M trained parameters (0.54 M in the MTP
block). Data: 3,798 documents, 8,453,839 Qwen3.5 tokens (2.0 M stdlib, 2.8 M
site-packages, 3.6 M man-pages). Trained on 4,096,000 tokens (2,000 steps of
8 x 256, 0.49 epochs, 54 minutes on 2 CPU threads); validation loss 3.21
nats (next token) and 3.26 (MTP, the token after next) in the full
151,936-token vocabulary. Teacher-forced on held-out text the head's draft
equals the trunk's greedy token 66% of the time.

Only the 8,191 most frequent token ids of the data (94% of its tokens) have
embedding rows; all other rows are exactly zero and are not stored. With tied
embeddings a zero row has logit exactly 0, so training used the exact
full-vocabulary softmax (used logits plus one constant column
``log(#zero rows)``) and the expanded checkpoint computes exactly the trained
distribution.

The artifact (``data/default_model.npz``, float16) holds the compact weights,
the used-id list, the config and the training record. :func:`materialize`
expands it into a full Hugging Face checkpoint directory;
:func:`default_gguf` materializes and converts once per artifact and output
type, then answers from its cache.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / "data"
ARTIFACT = DATA_DIR / "default_model.npz"
CARD = DATA_DIR / "DEFAULT_MODEL.md"

#: bump when materialize() writes something different from the same artifact
_FORMAT_VERSION = 1

#: what ``gguf-mtp demo`` runs: code and the two kinds of prose the model read
#: (docstrings, and the Linux man-pages)
DEFAULT_PROMPTS: tuple[str, ...] = (
    'def read_config(path):\n    """Read a configuration file and return a dict."""\n',
    "class Stack:\n    \"\"\"A last-in, first-out stack.\"\"\"\n\n    def __init__(self):\n",
    "import os\nimport sys\n\n\ndef main(argv=None):\n",
    '"""Utilities for working with temporary files.\n\nThis module provides',
    "The open() system call opens the file specified by pathname. If the specified file does not exist,",
)

_USED_IDS = "__used_ids__"
_META = "__meta__"


@dataclass(frozen=True)
class Artifact:
    """The unpacked artifact."""

    used_ids: np.ndarray              # int32 [K]: full-vocabulary ids that have rows
    tensors: dict[str, np.ndarray]    # checkpoint names; embedding rows of used_ids only
    meta: dict                        # "config": qwen35_text_config kwargs, plus the training record

    @property
    def config_kwargs(self) -> dict:
        return dict(self.meta["config"])


def write_artifact(path: Path, used_ids: np.ndarray, tensors: dict[str, np.ndarray], meta: dict) -> None:
    """Write an ``.npz`` readable by ``np.load``, byte-for-byte reproducible.

    ``np.savez_compressed`` stamps entries with the current time; this writes
    the same format with a fixed timestamp, so identical weights give an
    identical file (and cache key).
    """
    entries = {_USED_IDS: np.asarray(used_ids, dtype=np.int32),
               _META: np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)}
    entries.update(tensors)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, array in entries.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(array), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    os.replace(tmp, path)


def load_artifact(path: Path | None = None) -> Artifact:
    path = Path(path) if path is not None else ARTIFACT
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the default model artifact is missing "
                                "(tools/train_default_model.py writes it)")
    with np.load(path, allow_pickle=False) as npz:
        tensors = {name: npz[name] for name in npz.files}
    used = tensors.pop(_USED_IDS)
    meta = json.loads(tensors.pop(_META).tobytes().decode())
    return Artifact(used, tensors, meta)


def full_state_dict(art: Artifact, n_vocab: int, dtype=None) -> dict:
    """Checkpoint tensors (torch) with the full ``n_vocab``-row embedding:
    trained rows at ``used_ids``, zeros elsewhere."""
    import torch

    dtype = dtype or torch.float32
    state = {}
    for name, array in art.tensors.items():
        t = torch.from_numpy(array.astype(np.float32))
        if name == "model.embed_tokens.weight":
            full = torch.zeros(n_vocab, t.shape[1])
            full[torch.from_numpy(art.used_ids.astype(np.int64))] = t
            t = full
        state[name] = t.to(dtype)
    return state


def materialize(out_dir: str | os.PathLike, *, artifact: Path | None = None, dtype: str = "f32") -> Path:
    """Expand the artifact into a Hugging Face checkpoint directory ``out_dir``.

    Writes ``config.json`` (``Qwen3_5ForCausalLM``, full vocabulary),
    ``model.safetensors`` (``dtype`` "f32" or "bf16"; trunk and ``mtp.*``),
    ``generation_config.json`` and the Qwen3.5 tokenizer files, exactly the
    layout of a released checkpoint. Deterministic. Returns ``out_dir``.
    """
    import torch

    from ..testing.qwen35_tokenizer import qwen35_vocab_info, write_qwen35_tokenizer
    from ..testing.tiny_qwen35 import qwen35_text_config, save_safetensors

    torch_dtype = {"f32": torch.float32, "bf16": torch.bfloat16}.get(dtype)
    if torch_dtype is None:
        raise ValueError(f"dtype {dtype!r}: choose f32 or bf16")
    art = load_artifact(artifact)
    vocab = qwen35_vocab_info()
    if vocab["n_tokens"] != art.meta.get("n_vocab", vocab["n_tokens"]):
        raise ValueError(f"the artifact was trained for {art.meta['n_vocab']} token ids, "
                         f"the installed Qwen3.5 vocabulary has {vocab['n_tokens']}")
    if int(art.used_ids.max()) >= vocab["n_tokens"]:
        raise ValueError("the artifact uses token ids beyond the installed vocabulary")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = qwen35_text_config(vocab_size=vocab["n_tokens"], dtype=torch_dtype, **art.config_kwargs)
    save_safetensors(full_state_dict(art, vocab["n_tokens"], torch_dtype), out)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": vocab["bos_id"],
        "eos_token_id": vocab["eos_id"],
        "pad_token_id": vocab["pad_id"],
        "do_sample": False,
    }, indent=2) + "\n")
    write_qwen35_tokenizer(out)
    return out


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_key(artifact: Path | None = None) -> str:
    """Cache key of an artifact: its sha256 (hashed once per process and file version)."""
    path = Path(artifact) if artifact is not None else ARTIFACT
    st = path.stat()
    return f"{_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)[:16]}-v{_FORMAT_VERSION}"


def _cache_root(cache: Path | None) -> Path:
    if cache is not None:
        return Path(cache)
    from ..upstream import cache_dir

    return cache_dir() / "default-model"


def default_checkpoint(cache: Path | None = None, *, artifact: Path | None = None) -> Path:
    """The materialized checkpoint directory, built once per artifact (atomically)."""
    entry = _cache_root(cache) / artifact_key(artifact)
    ckpt = entry / "checkpoint"
    if (ckpt / "config.json").is_file():
        return ckpt
    entry.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".checkpoint-", dir=entry))
    staged.chmod(0o755)  # mkdtemp's 0700 would outlive the rename
    try:
        materialize(staged, artifact=artifact)
        try:
            os.replace(staged, ckpt)
        except OSError:
            if not (ckpt / "config.json").is_file():  # a concurrent winner is fine
                raise
    finally:
        shutil.rmtree(staged, ignore_errors=True)
    return ckpt


def default_gguf(outtype: str = "f32", cache: Path | None = None, *, artifact: Path | None = None,
                 head_type: str = "q8_0", draft_vocab: bool = False) -> Path:
    """The default model as one GGUF (trunk + MTP layer) of type ``outtype``:
    a converter type (f32, f16, bf16, q8_0) or a llama.cpp quant level (q4_0,
    q4_k_m, ...: quantized from f32 with the MTP head at ``head_type``).

    Materialized and converted on first use, cached under
    ``<cache>/<artifact sha256>/`` (default cache:
    ``gguf_mtp.upstream.cache_dir() / "default-model"``); later calls only
    stat the file.

    ``draft_vocab``: the MTP head drafts over the model's used vocabulary (the
    8,191 token ids that have embedding rows; every other token's logit is 0 in
    the trunk and the head alike), an 18x smaller LM head for the draft step.
    """
    from ..convert.core import OUTTYPES
    from ..convert.quantize import FTYPES

    if draft_vocab:
        out = default_gguf(outtype, cache, artifact=artifact, head_type=head_type).with_suffix(".draft-vocab.gguf")
        if not out.is_file():
            from ..train.vocab import compress_vocab

            art = load_artifact(artifact)
            ids = np.asarray(art.used_ids, dtype=np.int64)
            counts = np.zeros(int(ids.max()) + 1, dtype=np.float64)
            counts[ids] = np.arange(len(ids), 0, -1)      # every used id in; ties broken by the stored order
            full = default_gguf(outtype, cache, artifact=artifact, head_type=head_type)
            from ..gguf.inspect import read_header

            n_vocab = read_header(full).kv["tokenizer.ggml.tokens"]
            c = np.zeros(int(n_vocab), dtype=np.float64)
            c[: len(counts)] = counts
            compress_vocab(full, None, out, len(ids), counts=c, progress=False)
        return out

    if outtype not in OUTTYPES and outtype not in FTYPES:
        raise ValueError(f"outtype {outtype!r}: choose one of {', '.join(sorted(set(OUTTYPES) | set(FTYPES)))}")
    suffix = outtype if outtype in OUTTYPES else f"{outtype}-heads-{head_type}"
    out = _cache_root(cache) / artifact_key(artifact) / f"default-{suffix}.gguf"
    if out.is_file():
        return out
    if outtype not in OUTTYPES:
        from ..convert.quantize import quantize

        quantize(default_gguf("f32", cache, artifact=artifact), out, outtype, head_type)  # writes atomically
        return out
    from ..convert.core import ConvertOptions, convert

    ckpt = default_checkpoint(cache, artifact=artifact)
    convert(ckpt, out, ConvertOptions(outtype=outtype, progress=False))  # writes atomically
    return out
