"""``gguf-mtp retrofit TARGET.gguf OUT.gguf``: MTP heads for a dense model
that has none (llama / qwen2 / qwen3 / gemma3: SmolLM2, Llama, Qwen2.5, Qwen3,
Gemma 3 text).

Four stages, each kept in a work directory so a rerun reuses the finished
ones:

1. **init** (``WORK/init.gguf``): TARGET plus one DeepSeek-style MTP block
   ``blk.N`` (gguf-mtp's dense layout, :mod:`gguf_mtp.convert.archs.dense`), written
   through :mod:`gguf_mtp.gguf.writer`: the trunk's tensors and key/values
   are copied byte for byte, ``<arch>.block_count`` grows by one and
   ``<arch>.nextn_predict_layers`` becomes 1. See :func:`initial_block`.
2. **distill** (``WORK/data``): :func:`gguf_mtp.train.distill.distill` on
   ``init.gguf``. The trunk is untouched, so this is TARGET as it runs, at its
   own quantization; the MTP block is there only because the runtime exports
   the trunk's hidden rows while an MTP context is attached.
3. **finetune** (``WORK/heads``): FastMTP (:mod:`gguf_mtp.train.finetune`)
   on that data, starting from the initial block; checkpoints let an
   interrupted run resume.
4. **stitch**: the trained block into ``init.gguf``, written as OUT (each MTP
   matrix at the type the init stage gave it).

The initial block
-----------------
The block starts as the identity on the hidden state plus a trunk layer whose
residual branches are switched off, so that it is "one more trunk layer on
the hidden state" in its weights but predicts, at step 0, exactly what the
trunk predicts (the distribution of token t+1, the best guess for t+2 before
training):

* the decoder layer (attention, FFN, their norms, qwen2's biases, qwen3's q/k
  norms) is a copy of the trunk's LAST layer, dequantized and re-encoded at
  ``head_type`` (q8_0 by default; F16 for a matrix whose rows do not split
  into the type's blocks; norms and biases F32), EXCEPT its two output
  projections ``attn_output`` and ``ffn_down``, which start at zero: each
  residual branch then adds nothing, and the first steps grow them from a
  layer whose q / k / v / gate / up projections already read the trunk's
  residual space (the zero-initialised residual branches of GPT-2 / ReZero);
* ``eh_proj = [0 | I]`` on the ``[enorm(embedding); hnorm(hidden)]`` input:
  the block starts from the hidden state alone; the zero embedding half still
  gets gradients (the output depends on it linearly), so training learns how
  much of token t+1's embedding to mix in;
* ``hnorm = 1 / output_norm`` (1 where ``|output_norm| < 1e-3``): the hidden
  state the runtime exports is ``output_norm(x)``, the trunk's residual ``x``
  normalised and scaled per channel by ``output_norm``'s weight; dividing it
  out again hands the layer the direction of ``x`` itself;
* ``enorm = 1``; ``shared_head_norm = output_norm``: the block's output reaches
  the (shared) LM head normalised as the trunk's own last state is, and is in
  the space of the hidden state it gets in the next recursive step.

Together, at step 0 the block's output state equals its input hidden state
``output_norm(x)`` (up to the head type's rounding).

Gemma 3 (``gemma3``, patch 0008): the copied layer is a Gemma 3 layer, whose
residual branches end in a norm (``post_attention_norm``, ``post_ffw_norm``:
the sandwich norms). A zero output projection does not switch such a branch
off smoothly: RMSNorm rescales whatever the projection writes to the norm's
gain, so the first update of a zero ``attn_output`` would add a full-size
branch in a random direction (the gradient at zero is amplified by
``1/sqrt(eps)``). The branches are switched off by the norms' gains instead:
``post_attention_norm`` and ``post_ffw_norm`` start at 0 (the GGUF stores
``1 + w``, so in transformers' terms ``w = -1``), and the output projections
keep the trunk's values, so a branch grows in proportion to its gain from the
direction the trunk's own layer writes (:func:`zero_init`). The GGUF's norm
weights are already ``1 + w`` (the converter's shift), which is what
``hnorm = 1 / output_norm`` and ``shared_head_norm = output_norm`` need: the
runtime multiplies by the stored value. The fusion norms are plain RMSNorms.
``eh_proj`` stays F16 whatever the head type: Gemma's residual stream has
channels 50x larger than others, and ``output_norm``'s gains (7 to 283 in
Gemma 3 270M) make ``hnorm = 1 / output_norm`` scale channels very unevenly;
a Q8_0 ``eh_proj`` has llama.cpp quantize its input in blocks of 32 with one
scale each, which rounds the small channels of a block to zero (measured on
the 270M model: up to 7% of the hidden state's range lost at step 0; F16:
none).

A 262,144-token vocabulary (Gemma 3) makes the LM head most of a training
step: ``train_vocab`` N trains over the N most frequent tokens of the
distilled data (:func:`gguf_mtp.train.losses.restrict_lm_heads`), the draft
vocabulary ``gguf-mtp compress-vocab`` gives the runtime. Measured on SmolLM2-135M
(30 steps of FastMTP on a few distilled sequences, ``benchmarks/README.md``),
this trained much faster than keeping the copied layer's output projections
(first loss 34 vs 10.6, loss after 30 steps 3.5 vs 1.6): the copied layer run
on a state it was never trained on makes confident wrong predictions.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..gguf.constants import Keys, arch_key

#: GGUF architectures the dense MTP layout (and its PyTorch heads) covers
SUPPORTED_ARCHS = ("llama", "qwen2", "qwen3", "gemma3")
STATE = "retrofit.json"
#: the copied layer's residual-branch output projections, zero at the start
ZERO_INIT = ("attn_output.weight", "ffn_down.weight")
#: per architecture, the tensors that switch the copied layer's residual branches off
#: (gemma3: the gains of the post-attention / post-FFW norms; see the module docstring)
ZERO_INIT_BY_ARCH = {"gemma3": ("post_attention_norm.weight", "post_ffw_norm.weight")}
#: per architecture, MTP tensors kept at a float type whatever the head type (see the module docstring)
FLOAT_TYPES_BY_ARCH = {"gemma3": {"nextn.eh_proj.weight": "F16"}}


def zero_init(arch: str) -> tuple[str, ...]:
    """The tensors (suffix after ``blk.N.``) that start at zero in ``arch``'s initial block."""
    return ZERO_INIT_BY_ARCH.get(arch, ZERO_INIT)


class RetrofitError(ValueError):
    pass


@dataclass
class InitResult:
    path: Path
    arch: str
    n_trunk: int
    types: dict[str, str]            # MTP tensor -> ggml type name


@dataclass
class RetrofitConfig:
    target: str                       # a dense llama / qwen2 / qwen3 / gemma3 GGUF without MTP layers
    out: str                          # the retrofitted GGUF
    work: str | None = None           # stage directory (None: a temporary one, removed at the end)
    prompts: str | None = None        # prompt file / directory (None: the set shipped with gguf-mtp)
    max_prompts: int | None = 256
    max_tokens: int = 128
    steps: int = 300
    lr: float = 3e-4
    batch_size: int = 8
    seq_len: int = 128
    warmup_steps: int = 20
    n_predict: int = 3
    #: the training loss (gguf_mtp.train.finetune): "fastmtp" (CE) or "mtp-d" (CE + KL to the target's top-k)
    method: str = "fastmtp"
    #: draft step k attends to what the runtime's MTP cache holds then (FinetuneConfig.chain_attention)
    chain_attention: bool = False
    train_vocab: int = 0              # FastMTP's softmax over the N most frequent data tokens (0: all)
    #: windows of local text the target reads (distill-data text, stage WORK/text), trained on
    #: together with its answers to the prompts; 0: the answers only
    text_windows: int = 0
    text_window: int = 256
    #: record ``text_windows`` windows this many times, round r with seed ``seed + r`` (WORK/text, then
    #: WORK/text-1, ...): more text keeps what is recorded (a larger ``text_windows`` re-records all)
    text_rounds: int = 1
    #: the answers' windows are sampled this many times per epoch against the text's once: the answers
    #: are the target's own greedy output, what a draft meets at run time, and a small share of the
    #: tokens once text is added (SmolLM2: 14 % against 3,000 windows)
    answers_weight: int = 1
    #: train from this GGUF's MTP block (a heads file, or a retrofitted file) instead of the initial block
    init_heads: str | None = None
    #: the output drafts over the N most frequent distilled tokens (compress-vocab; 0: the full head).
    #: A draft step is then N logits, not the whole vocabulary: on SmolLM2 (49,152) tau was the same
    #: with 8,192 and the step 25% cheaper; the full-head file stays in WORK as retrofit-full.gguf
    draft_vocab: int = 8192
    head_type: str = "q8_0"
    save_every: int = 50
    seed: int = 0
    n_threads: int | None = None
    progress: bool = True


@dataclass
class RetrofitResult:
    path: Path
    work: Path | None
    n_sequences: int
    n_tokens: int
    steps: int
    reused: list[str] = field(default_factory=list)   # stages found finished in WORK
    last: dict = field(default_factory=dict)           # the last training step's log line


# -- stage 1: the initial block ------------------------------------------------------

def _check_target(src) -> tuple[str, int]:
    kv = src.header.kv
    arch = kv.get("general.architecture")
    if arch not in SUPPORTED_ARCHS:
        raise RetrofitError(f"{src.path}: architecture {arch!r}; retrofit adds MTP heads to dense "
                            f"{', '.join(SUPPORTED_ARCHS)} models only")
    n_nextn = int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch), 0) or 0)
    if n_nextn:
        raise RetrofitError(f"{src.path}: already has {n_nextn} MTP layer(s); train them further with "
                            "'gguf-mtp distill-data' + 'gguf-mtp finetune' + 'gguf-mtp stitch' instead")
    if arch_key(Keys.LLM.BLOCK_COUNT, arch) not in kv:
        raise RetrofitError(f"{src.path}: no {arch}.block_count; is it a model GGUF?")
    return arch, int(kv[arch_key(Keys.LLM.BLOCK_COUNT, arch)])


def _extend_per_layer(raw: bytes, key: str) -> bytes:
    """A per-layer array entry with its last element repeated once (the new block)."""
    from ..gguf.writer import ARRAY, STRING

    head = 8 + len(key.encode()) + 4
    etype, n = struct.unpack_from("<IQ", raw, head)
    if struct.unpack_from("<I", raw, head - 4)[0] != ARRAY or etype == STRING or n == 0:
        raise RetrofitError(f"{key}: cannot extend this per-layer value")
    body = raw[head + 12:]
    size = len(body) // n
    return raw[:head] + struct.pack("<IQ", etype, n + 1) + body + body[-size:]


def _type_for(shape_ne0: int, ndim: int, head_type: str) -> str:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    from ..gguf.writer import ENCODABLE_TYPES as HEAD_TYPES

    if ndim == 1:
        return "F32"
    name = HEAD_TYPES[head_type]
    block = GGML_QUANT_SIZES[GGMLQuantizationType[name]][0]
    return name if shape_ne0 % block == 0 else "F16"


def initial_block(target: str | Path, out: str | Path, *, head_type: str = "q8_0",
                  progress: bool = True) -> InitResult:
    """Write TARGET with one initial MTP block appended as OUT (see the module docstring)."""
    from ..gguf.writer import ENCODABLE_TYPES as HEAD_TYPES
    from ..gguf.writer import (
        UINT32,
        SourceFile,
        Tensor,
        encode_kv,
        encode_tensor,
        write_gguf,
    )
    from ..heads.common import GGUFView

    if head_type not in HEAD_TYPES:
        raise RetrofitError(f"head type {head_type!r}: choose one of {', '.join(HEAD_TYPES)}")
    src = SourceFile.open(target)
    arch, n_trunk = _check_target(src)
    out = Path(out)
    if out.resolve() == src.path.resolve():
        raise RetrofitError(f"{out}: write to a new file, not over the target")
    view = GGUFView.open(src.path)
    kv = src.header.kv
    last, new = f"blk.{n_trunk - 1}.", f"blk.{n_trunk}."
    layer = [t for t in src.tensors() if t.name.startswith(last)]
    if not layer:
        raise RetrofitError(f"{src.path}: no tensors of the trunk's last layer ({last}*)")
    if "output_norm.weight" not in view.tensors:
        raise RetrofitError(f"{src.path}: no output_norm.weight")
    if f"{new}attn_norm.weight" in view.tensors:
        raise RetrofitError(f"{src.path}: already has tensors {new}* beyond its {n_trunk} layers")

    arrays: dict[str, np.ndarray] = {}
    zeros = zero_init(arch)
    for t in layer:
        suffix = t.name[len(last):]
        a = view.array(t.name)
        arrays[new + suffix] = np.zeros_like(a) if suffix in zeros else a
    hidden = int(view.shape("token_embd.weight")[1])
    g = view.array("output_norm.weight").astype(np.float32)
    safe = np.abs(g) >= 1e-3
    arrays[new + "nextn.enorm.weight"] = np.ones(hidden, np.float32)
    arrays[new + "nextn.hnorm.weight"] = np.where(safe, 1.0 / np.where(safe, g, 1.0), 1.0).astype(np.float32)
    eh = np.zeros((hidden, 2 * hidden), np.float32)
    eh[:, hidden:] = np.eye(hidden, dtype=np.float32)
    arrays[new + "nextn.eh_proj.weight"] = eh
    arrays[new + "nextn.shared_head_norm.weight"] = g

    new_tensors, types = [], {}
    floats = FLOAT_TYPES_BY_ARCH.get(arch, {})
    for name, a in arrays.items():
        tname = floats.get(name[len(new):]) or _type_for(a.shape[-1], a.ndim, head_type)
        if tname == "F16" and HEAD_TYPES[head_type] == "F32":
            tname = "F32"
        raw, gtype, shape = encode_tensor(a, tname)
        new_tensors.append(Tensor(name, shape, gtype, data=raw))
        types[name] = tname

    bc, nk = arch_key(Keys.LLM.BLOCK_COUNT, arch), arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, arch)
    entries = []
    for k in kv:
        if k == bc:
            entries.append(encode_kv(bc, src.header.kv_spans[k][0], n_trunk + 1))
        elif k == nk:
            entries.append(encode_kv(nk, UINT32, 1))
        elif k.startswith(f"{arch}.") and isinstance(kv[k], list) and len(kv[k]) == n_trunk:
            entries.append(_extend_per_layer(src.raw_kv(k), k))   # per-layer hyper-parameters
        else:
            entries.append(src.raw_kv(k))
    if nk not in kv:
        entries.append(encode_kv(nk, UINT32, 1))
    align = int(kv.get("general.alignment", 32))
    write_gguf(out, entries, src.tensors() + new_tensors, alignment=align, progress=progress,
               desc="Initial MTP block")
    return InitResult(out, arch, n_trunk, types)


# -- the pipeline ---------------------------------------------------------------------

def _identity(cfg: RetrofitConfig) -> dict:
    """What a work directory's finished stages depend on."""
    import hashlib

    from .distill import file_fingerprint
    from .prompts import DEFAULT_PROMPTS_DIR, load_prompts

    prompts = load_prompts(cfg.prompts or DEFAULT_PROMPTS_DIR)[:cfg.max_prompts]
    digest = hashlib.sha256(json.dumps(prompts).encode()).hexdigest()[:32]
    train = {"steps": cfg.steps, "lr": cfg.lr, "batch_size": cfg.batch_size, "seq_len": cfg.seq_len,
             "warmup_steps": cfg.warmup_steps, "n_predict": cfg.n_predict, "seed": cfg.seed, "method": cfg.method}
    if cfg.chain_attention:
        train["chain_attention"] = True
    if cfg.train_vocab:
        train["train_vocab"] = cfg.train_vocab
    if cfg.init_heads:
        train["init_heads"] = str(cfg.init_heads)
    ident = {"target": file_fingerprint(cfg.target), "head_type": cfg.head_type,
             "data": {"prompts": digest, "max_prompts": cfg.max_prompts, "max_tokens": cfg.max_tokens},
             "train": train}
    if cfg.init_heads:
        ident["init_heads"] = file_fingerprint(cfg.init_heads)      # its contents, not only its path
    if cfg.answers_weight != 1:
        ident["answers_weight"] = cfg.answers_weight                # shapes the data list, not FinetuneConfig
    if cfg.text_windows:
        ident["text"] = {"windows": cfg.text_windows, "window": cfg.text_window, "seed": cfg.seed}
        if cfg.text_rounds > 1:
            ident["text"]["rounds"] = cfg.text_rounds
    return ident


def _heads_done(heads: Path, want: dict) -> dict | None:
    """heads.json of a finished training with ``want``'s settings, or None. The
    pair is verified (heads.json records the tensors' SHA-256): a run killed
    between the two writes, or a damaged file, trains again."""
    from ..heads.mtp import HeadsError, read_heads_dir

    try:
        _, meta = read_heads_dir(heads)
    except HeadsError:
        return None
    t = meta.get("training", {})
    done = isinstance(t, dict) and t.get("steps_done") == want["steps"] and all(t.get(k) == v for k, v in want.items())
    return meta if done else None


def _read_json(path: Path) -> dict | None:
    """A JSON object written by an earlier run, or None when absent or damaged."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _valid_gguf(path: Path) -> bool:
    from ..gguf.inspect import GGUFError, read_checked_header

    try:
        read_checked_header(path)
    except (GGUFError, OSError):
        return False
    return True


def retrofit(cfg: RetrofitConfig) -> RetrofitResult:
    from ..gguf.writer import SourceFile
    from ..heads.mtp import HeadsError, read_layout
    from ..heads.stitch import stitch
    from .distill import DistillConfig, distill
    from .finetune import FinetuneConfig, finetune
    from .prompts import DEFAULT_PROMPTS_DIR

    src = SourceFile.open(cfg.target)
    _check_target(src)
    if cfg.text_rounds < 1:
        raise RetrofitError(f"text_rounds: {cfg.text_rounds}, give 1 or more")
    if cfg.answers_weight < 1:
        raise RetrofitError(f"answers_weight: {cfg.answers_weight}, give 1 or more")
    out = Path(cfg.out)
    if out.resolve() == src.path.resolve():
        raise RetrofitError(f"{out}: write to a new file, not over the target")
    temp = cfg.work is None
    work = Path(tempfile.mkdtemp(prefix="gguf-mtp-retrofit-", dir=out.parent if out.parent.exists() else None)) \
        if temp else Path(cfg.work)
    work.mkdir(parents=True, exist_ok=True)
    reused: list[str] = []
    try:
        ident = _identity(cfg)
        state_path = work / STATE
        old = _read_json(state_path)
        if old is not None:
            if old.get("target") != ident["target"] or old.get("head_type") != ident["head_type"]:
                raise RetrofitError(f"{work}: holds stages of a different target or head type — use another "
                                    "--work directory")
            if old.get("data") != ident["data"]:
                # other data: the data and everything trained on it are stale
                shutil.rmtree(work / "data", ignore_errors=True)
                shutil.rmtree(work / "heads", ignore_errors=True)
            if old.get("text") != ident.get("text"):
                # the text stage checks its own settings (below); the heads trained without it are stale
                shutil.rmtree(work / "heads", ignore_errors=True)
            elif any(old.get(k) != ident.get(k) for k in ("train", "init_heads", "answers_weight")):
                shutil.rmtree(work / "heads", ignore_errors=True)
        tmp = state_path.with_name(state_path.name + ".partial")
        tmp.write_text(json.dumps(ident, indent=2) + "\n")
        os.replace(tmp, state_path)

        init = work / "init.gguf"
        if init.is_file() and _valid_gguf(init):
            reused.append("init")
        else:
            initial_block(cfg.target, init, head_type=cfg.head_type, progress=cfg.progress)
        try:
            read_layout(init)          # the PyTorch heads can be built (e.g. no RoPE scaling)
        except HeadsError as e:
            raise RetrofitError(f"{cfg.target}: {e}") from None

        data = work / "data"
        manifest = data / "manifest.json"
        if (_read_json(manifest) or {}).get("complete"):
            reused.append("distill")
        d = distill(DistillConfig(target=str(init), prompts=cfg.prompts or str(DEFAULT_PROMPTS_DIR), out=str(data),
                                  max_tokens=cfg.max_tokens, max_prompts=cfg.max_prompts, seed=cfg.seed,
                                  n_threads=cfg.n_threads, progress=cfg.progress))

        dirs = [str(data)] * cfg.answers_weight      # WindowDataset indexes a listed directory each time
        for r in range(cfg.text_rounds if cfg.text_windows else 0):
            from .distill_text import TextDistillConfig, distill_text

            text = work / ("text" if r == 0 else f"text-{r}")
            tcfg = TextDistillConfig(target=str(init), out=str(text), n_windows=cfg.text_windows,
                                     window=cfg.text_window, seed=cfg.seed + r, n_threads=cfg.n_threads,
                                     progress=cfg.progress)
            try:
                t = distill_text(tcfg)
            except ValueError as e:
                if "holds data made with" not in str(e):
                    raise
                shutil.rmtree(text)          # recorded with other settings (or from another init.gguf)
                t = distill_text(tcfg)
            if not t.shards:
                reused.append("text" if r == 0 else f"text-{r}")
            dirs.append(str(text))

        heads = work / "heads"
        train = ident["train"]
        done = _heads_done(heads, train)
        if done is not None:
            reused.append("finetune")
            last = done.get("last_step", {})
        else:
            r = finetune(FinetuneConfig(data=dirs, target=str(init), out=str(heads),
                                        save_every=cfg.save_every, cpu=True, progress=cfg.progress, **train))
            last = r.last

        if cfg.draft_vocab:
            from .vocab import compress_vocab

            full = work / "retrofit-full.gguf"
            stitch(init, heads, full, head_type=None, progress=cfg.progress)
            compress_vocab(full, data, out, cfg.draft_vocab, progress=cfg.progress)
        else:
            stitch(init, heads, out, head_type=None, progress=cfg.progress)
    finally:
        if temp:
            shutil.rmtree(work, ignore_errors=True)
    return RetrofitResult(out, None if temp else work, d.n_sequences, d.n_tokens, cfg.steps, reused, last)


__all__ = ["SUPPORTED_ARCHS", "InitResult", "RetrofitConfig", "RetrofitError", "RetrofitResult",
           "initial_block", "retrofit"]
