"""``gguf-mtp convert``: one GGUF with the trunk and its MTP layers.

The trunk is written by the pinned upstream converter (bundled with the
installed runtime); gguf-mtp owns the checks before it runs, the MTP path and
its options (``head_type`` independent of the trunk's ``outtype``), and the
write discipline: output goes to a temporary file renamed at the end, so a
failed or interrupted conversion never leaves OUT.gguf behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..gguf.writer import partial_file
from .archs import MTPArch, arch_for
from .hf_checkpoint import Checkpoint, load_checkpoint

#: trunk output types -> the converter's file types (names of gguf.LlamaFileType)
OUTTYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "bf16": "MOSTLY_BF16", "q8_0": "MOSTLY_Q8_0"}
#: head tensor types -> gguf.GGMLQuantizationType names
HEAD_TYPES = {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0"}


class ConversionError(ValueError):
    pass


@dataclass
class ConvertOptions:
    outtype: str = "f16"
    head_type: str | None = None     # None: same as outtype
    mtp: bool = True                 # False: trunk only (--no-mtp)
    mtp_only: bool = False           # True: the heads alone (--mtp-only), for graft
    verbose: bool = False
    progress: bool = True
    heads: str = "mtp"               # "mtp": native MTP layers; "medusa": also Medusa heads; "eagle":
                                     # the MTP layer as an EAGLE drafter
    medusa_heads: int = 3            # --medusa-heads K
    medusa_layers: int = 1           # residual blocks per head
    init: str = "recycled"           # medusa/eagle: "recycled" from the MTP layer, or "scratch"


@dataclass
class ConvertResult:
    path: Path
    arch: str
    n_tensors: int
    n_mtp_layers: int
    head_tensors: list[str]
    size_bytes: int


def check_input(model_dir: str | Path, opts: ConvertOptions) -> tuple[Checkpoint, MTPArch, int]:
    """Everything that can be checked before the converter runs."""
    if opts.outtype not in OUTTYPES:
        raise ConversionError(f"--outtype {opts.outtype!r}: choose one of {', '.join(OUTTYPES)}")
    if opts.mtp_only and not opts.mtp:
        raise ConversionError("--mtp-only and --no-mtp exclude each other")
    if opts.heads not in HEADS:
        raise ConversionError(f"--heads {opts.heads!r}: choose one of {', '.join(HEADS)}")
    if opts.heads != "mtp":
        from ..heads import eagle, medusa

        inits = {"medusa": medusa.INITS, "eagle": eagle.INITS}[opts.heads]
        if opts.init not in inits:
            raise ConversionError(f"--init {opts.init!r}: choose one of {', '.join(inits)}")
    if opts.heads == "medusa":
        if opts.mtp_only:
            raise ConversionError("--heads medusa writes a whole model; --mtp-only is for native MTP layers")
        if opts.init == "recycled" and not opts.mtp:
            raise ConversionError("--init recycled reads the MTP layer: drop --no-mtp, or use --init scratch")
        if opts.medusa_heads < 1 or opts.medusa_layers < 1:
            raise ConversionError("--medusa-heads and --medusa-layers must be at least 1")
    if opts.heads == "eagle" and (opts.mtp_only or not opts.mtp):
        raise ConversionError("--heads eagle turns the MTP layer into the drafter: drop --no-mtp/--mtp-only")
    if opts.head_type is not None and opts.head_type not in HEAD_TYPES:
        raise ConversionError(f"--head-type {opts.head_type!r}: choose one of {', '.join(HEAD_TYPES)}")
    ck = load_checkpoint(model_dir)
    arch = arch_for(ck.architecture)
    cfg_file = ck.directory / "config.json"
    text = arch.text_config(ck.config)
    for key in ("num_hidden_layers", "hidden_size"):
        v = text.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConversionError(f"{cfg_file}: {key} must be a positive integer, got {v!r}")
    # the converter loops over every declared layer and pads the vocabulary to vocab_size: counts
    # beyond what the weights hold would run for ever (found by the fuzz slice), so they are refused
    indices = [int(p[i + 1]) for p in (n.split(".") for n in ck.tensors) for i in range(len(p) - 1)
               if p[i] == "layers" and p[i + 1].isdecimal()]
    if indices and text["num_hidden_layers"] > max(indices) + 1:
        raise ConversionError(f"{cfg_file}: num_hidden_layers = {text['num_hidden_layers']}, but the weights hold "
                              f"layers 0..{max(indices)} only")
    rows = max((t.shape[0] for t in ck.tensors.values() if len(t.shape) == 2), default=0)
    vocab = text.get("vocab_size", ck.config.get("vocab_size"))
    if isinstance(vocab, int) and rows and vocab > rows:
        raise ConversionError(f"{cfg_file}: vocab_size = {vocab}, more than any weight matrix has rows ({rows})")
    declared = text.get(arch.mtp_layers_key)
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool) or declared < 0):
        raise ConversionError(f"{cfg_file}: {arch.mtp_layers_key} must be a non-negative integer, got {declared!r}")
    n_mtp = arch.n_mtp_layers(ck.config, ck.tensors)
    found = arch.mtp_layer_indices(ck.tensors)
    if opts.mtp and declared and found and len(found) != declared:
        raise ConversionError(f"{cfg_file}: {arch.mtp_layers_key} = {declared}, but the weights hold "
                              f"{len(found)} MTP layer(s) (layers {sorted(found)})")
    has_tensors = any(arch.is_mtp_tensor(n) for n in ck.tensors)
    if opts.mtp and not has_tensors:
        raise ConversionError(
            f"{ck.directory}: this checkpoint has no MTP layers (no {'/'.join(arch.mtp_prefixes)}* tensors, "
            f"{arch.mtp_layers_key}={arch.text_config(ck.config).get(arch.mtp_layers_key, 0)}); "
            "pass --no-mtp to convert the trunk alone")
    if opts.heads == "eagle" and n_mtp != 1:
        raise ConversionError(f"{ck.directory}: an EAGLE drafter is recycled from one MTP layer; the "
                              f"checkpoint has {n_mtp}")
    return ck, arch, (n_mtp if opts.mtp else 0)


def _converter_class(ck: Checkpoint, arch: MTPArch, opts: ConvertOptions, n_trunk: int):
    """The pinned converter's class for this checkpoint, specialised with our
    MTP options: whether to keep the MTP layers and the head tensors' type."""
    import gguf  # the pinned gguf-py, installed with the runtime

    from ..upstream import converter_modules
    from .hf_checkpoint import declared_pretokenizer

    conversion = converter_modules()
    base = conversion.get_model_class(arch.converter_base or ck.architecture)
    bases = (arch.converter_mixin, base) if arch.converter_mixin else (base,)
    head_qtype = getattr(gguf.GGMLQuantizationType, HEAD_TYPES[opts.head_type]) if opts.head_type else None

    class _WithHeads(*bases):
        model_arch = base.model_arch
        no_mtp = not opts.mtp
        mtp_only = False

        def get_vocab_base_pre(self, tokenizer):
            res = super().get_vocab_base_pre(tokenizer)
            # the converter names the pre-tokenizer by a hash of the ids of a probe
            # text; where the vocabulary makes the Qwen2 and Qwen3.5 regexes agree
            # on it, trust the regex the tokenizer declares
            if res == "qwen2" and declared_pretokenizer(self.dir_model) == "qwen35":
                return "qwen35"
            return res

        def tensor_force_quant(self, name, new_name, bid, n_dims):
            if head_qtype is not None and bid is not None and bid >= n_trunk and n_dims >= 2:
                return head_qtype
            return super().tensor_force_quant(name, new_name, bid, n_dims)

        def write(self):
            # upstream's write(), with our progress switch and, for --mtp-only,
            # every trunk tensor dropped before it is ever materialised
            if opts.mtp_only:
                writer_add = self.gguf_writer.add_tensor

                def add_heads_only(name, *args, **kwargs):
                    if is_head_tensor(name, n_trunk):
                        writer_add(name, *args, **kwargs)

                self.gguf_writer.add_tensor = add_heads_only
            self.prepare_tensors()
            self.prepare_metadata(vocab_only=False)
            self.gguf_writer.write_header_to_file(path=self.fname_out)
            self.gguf_writer.write_kv_data_to_file()
            self.gguf_writer.write_tensors_to_file(progress=opts.progress)
            self.gguf_writer.close()

    _WithHeads.__name__ = f"{base.__name__}WithHeads"
    return _WithHeads, getattr(gguf.LlamaFileType, OUTTYPES[opts.outtype])


def is_head_tensor(name: str, n_trunk: int) -> bool:
    """A tensor of an MTP block (``blk.N+`` with N = trunk depth)."""
    parts = name.split(".")
    return len(parts) > 2 and parts[0] == "blk" and parts[1].isdecimal() and int(parts[1]) >= n_trunk


@contextlib.contextmanager
def _converter_logging(verbose: bool):
    log = logging.getLogger("hf-to-gguf")
    gw = logging.getLogger("gguf.gguf_writer")
    saved = log.level, gw.level
    level = logging.INFO if verbose else logging.WARNING
    log.setLevel(level)
    gw.setLevel(level)
    try:
        yield
    finally:
        log.setLevel(saved[0])
        gw.setLevel(saved[1])


#: what --heads can add to the trunk
HEADS = ("mtp", "medusa", "eagle")


def _n_embd(gguf: Path) -> int:
    from ..gguf.inspect import read_header

    kv = read_header(gguf).kv
    return int(kv[f"{kv['general.architecture']}.embedding_length"])


def _medusa_type(opts: ConvertOptions) -> str:
    """Medusa block type: --head-type, else the trunk's --outtype."""
    return opts.head_type or opts.outtype


def convert(model_dir: str | Path, out_path: str | Path, options: ConvertOptions | None = None) -> ConvertResult:
    """Convert a checkpoint directory, or a hub id ``owner/name[@revision]``
    (:mod:`gguf_mtp.convert.hub`), to ONE GGUF (trunk + MTP layers)."""
    import torch

    from ..heads.eagle import make_eagle
    from ..heads.medusa import init_recycled, init_scratch, write_heads
    from .hub import resolve_model_dir

    opts = options or ConvertOptions()
    model_dir = resolve_model_dir(model_dir, progress=opts.progress)
    ck, arch, n_mtp = check_input(model_dir, opts)
    out = Path(out_path)
    if out.is_dir():
        raise ConversionError(f"{out}: is a directory; give the output file name")
    out.parent.mkdir(parents=True, exist_ok=True)
    n_trunk = arch.n_trunk_layers(ck.config)
    cls, ftype = _converter_class(ck, arch, opts, n_trunk)

    if opts.progress:
        import sys

        from ..gguf.inspect import human_bytes

        what = "MTP heads only" if opts.mtp_only else f"trunk + {n_mtp} MTP layer(s)" if n_mtp else "trunk only"
        print(f"{ck.architecture} -> {arch.gguf_arch}, {what}: reading {len(ck.files)} safetensors "
              f"file(s), {human_bytes(sum(t.nbytes for t in ck.tensors.values()))}, tensor by tensor",
              file=sys.stderr)
    fd, tmp = partial_file(out)
    os.close(fd)
    try:
        with _converter_logging(opts.verbose), torch.inference_mode():
            try:
                model = cls(ck.directory, ftype, tmp, use_temp_file=False, eager=False)
                model.write()
            except Exception as e:      # noqa: BLE001 -- whatever the converter and the libraries under it raise
                # (tokenizers raises a bare Exception on a broken tokenizer.json): one clear line
                # naming the checkpoint, not a traceback from deep inside convert_hf_to_gguf.
                # Our own mixins' errors (FP8Error, ...) are clear already and keep their type.
                if type(e).__module__.startswith("gguf_mtp"):
                    raise
                what = type(e).__name__
                raise ConversionError(f"{ck.directory}: the pinned llama.cpp converter failed on this checkpoint "
                                      f"({what}: {str(e)[:400] or 'no message'}); run with -v for its log") from e
        if opts.heads == "medusa":
            if opts.init == "scratch":
                heads = init_scratch(_n_embd(tmp), opts.medusa_heads, opts.medusa_layers)
            else:               # check_input made sure the checkpoint has MTP layers
                heads = init_recycled(tmp, opts.medusa_heads, opts.medusa_layers)
            write_heads(tmp, heads, out, head_type=_medusa_type(opts), progress=opts.progress)
            tmp.unlink()
        elif opts.heads == "eagle":
            make_eagle(tmp, out, opts.init)
            tmp.unlink()
        else:
            os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    from ..gguf.inspect import read_summary

    summary = read_summary(out)
    return ConvertResult(out, summary.arch, summary.n_tensors, n_mtp,
                         [t.name for h in summary.heads for t in h.tensors], out.stat().st_size)
