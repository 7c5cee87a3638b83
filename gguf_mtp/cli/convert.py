"""``gguf-mtp convert | archs | graft | inspect | quantize``: making and reading GGUFs."""

from __future__ import annotations

import json

import click

from ..convert.quantize import FTYPES as QUANT_FTYPES
from ..convert.quantize import HEAD_TYPES as QUANT_HEAD_TYPES
from .common import fail

#: the draft vocabulary ``convert`` gives a file by default (``--draft-vocab auto``): the 16,384
#: lowest-ranked BPE tokens cover 98.1% of the default model's greedy output, and a draft step
#: computes ~1/9 of a 151,936-token vocabulary's logits (on the default model's bench the
#: full-vocabulary MTP head ran 0.77-0.90x plain, a 4,096-token draft vocabulary 1.15-1.37x)
AUTO_DRAFT_VOCAB = 16384


def _draft_vocab_arg(ctx, param, value):
    if value in (None, "auto"):
        return "auto"
    try:
        n = int(value)
    except ValueError:
        n = -1
    if n < 0:
        raise click.BadParameter(f"{value!r}: a token count >= 0, or 'auto'")
    return n


@click.command()
@click.argument("model_dir", type=click.Path(file_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--outtype", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), default="f16", show_default=True,
              help="Tensor type of the trunk.")
@click.option("--head-type", type=click.Choice(["f32", "f16", "bf16", "q8_0"]), default=None,
              help="Tensor type of the MTP head tensors (default: same as --outtype), "
                   "e.g. a q8_0 trunk with f16 heads.")
@click.option("--no-mtp", is_flag=True, help="Convert the trunk alone, without MTP layers.")
@click.option("--mtp-only", is_flag=True,
              help="Write the MTP heads alone (blk.N+ tensors plus the metadata and vocabulary), "
                   "to put into a GGUF made elsewhere with 'gguf-mtp graft'.")
@click.option("--heads", type=click.Choice(["mtp", "medusa", "eagle"]), default="mtp", show_default=True,
              help="Drafter heads to write: the native MTP layers; or also Medusa heads (medusa.K.blk.L.*; "
                   "the MTP layers stay in the file unless --no-mtp); or the MTP layer as an EAGLE drafter "
                   "(gguf_mtp.drafter = eagle; train it with finetune --method eagle).")
@click.option("--medusa-heads", type=click.IntRange(1, 16), default=3, show_default=True,
              help="Number of Medusa heads K (head k, from 0, predicts the token k+2 places after the "
                   "position whose hidden state it reads).")
@click.option("--medusa-layers", type=click.IntRange(1, 8), default=1, show_default=True,
              help="Residual blocks x + SiLU(Wx + b) per Medusa head.")
@click.option("--init", "init", type=click.Choice(["recycled", "scratch"]), default="recycled",
              show_default=True,
              help="Medusa/EAGLE initialisation. Medusa: 'recycled' maps the MTP layer's input fusion "
                   "into the first block (see the README), 'scratch' is the Medusa paper's zero blocks "
                   "(every head starts as the LM head). EAGLE: 'recycled' keeps the MTP weights, 'scratch' "
                   "re-draws the block's matrices.")
@click.option("--draft-vocab", default="auto", show_default=True, metavar="N|auto", callback=_draft_vocab_arg,
              help="Let the MTP head draft over the N lowest-ranked tokens of a byte-level BPE vocabulary "
                   "(its merge order is its frequency order; 16384 covers ~98% of a Qwen model's output). "
                   "Each draft step then computes N logits instead of the whole vocabulary; output is "
                   "unchanged. 'auto': 16384 where the vocabulary is byte-level BPE with more than twice "
                   "as many tokens and the file keeps its native MTP head, else the full head. 0 keeps the "
                   "full head, which stock llama.cpp also loads ('gguf-mtp strip' makes a stock copy of a "
                   "compressed file). With distilled data, 'gguf-mtp compress-vocab' picks the tokens better.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Show the converter's log.")
def convert(model_dir, out, outtype, head_type, no_mtp, mtp_only, heads, medusa_heads, medusa_layers,
            draft_vocab, init, quiet, verbose):
    """Convert a Hugging Face checkpoint directory MODEL_DIR to ONE GGUF file OUT
    holding the trunk and its MTP layers (blk.N.nextn.*).

    MODEL_DIR may also be a hub id, owner/name or owner/name@revision: only the
    config, safetensors and tokenizer files are fetched, into the hub cache
    (resumable; HF_TOKEN and HF_HUB_OFFLINE are honoured).

    Sharded checkpoints (model.safetensors.index.json) are read tensor by tensor
    as they are written, so memory stays around one tensor plus what the
    operating system caches. FP8 checkpoints (weight_scale_inv block scales) are
    dequantized on the way. The file is written under a temporary name and
    renamed at the end: a failed or interrupted conversion leaves no OUT behind.

    The supported architectures are listed by 'gguf-mtp archs'."""
    from ..convert.archs import UnsupportedArchitecture
    from ..convert.core import ConversionError, ConvertOptions
    from ..convert.core import convert as convert_api
    from ..convert.hf_checkpoint import CheckpointError
    from ..convert.hub import HubError
    from ..gguf.inspect import human_bytes
    from ..upstream import RuntimeMissing

    opts = ConvertOptions(outtype=outtype, head_type=head_type, mtp=not no_mtp, mtp_only=mtp_only,
                          verbose=verbose, progress=not quiet, heads=heads, medusa_heads=medusa_heads,
                          medusa_layers=medusa_layers, init=init)
    auto_vocab = draft_vocab == "auto"
    if auto_vocab:
        draft_vocab = 0 if no_mtp or mtp_only or heads != "mtp" else AUTO_DRAFT_VOCAB
    if draft_vocab and (no_mtp or heads != "mtp"):
        fail(ValueError("--draft-vocab compresses the native MTP head: drop --no-mtp / --heads"))
    from pathlib import Path

    # with --draft-vocab the full conversion goes to a hidden name first: OUT only ever
    # appears complete (compress_vocab writes it atomically)
    full = Path(out).with_name(f".{Path(out).name}.full") if draft_vocab else Path(out)
    try:
        res = convert_api(model_dir, full, opts)
    except (CheckpointError, ConversionError, UnsupportedArchitecture, RuntimeMissing, HubError) as e:
        fail(e)
    extra = {"medusa": f", {medusa_heads} Medusa heads ({init})", "eagle": f", EAGLE drafter ({init})"}.get(heads, "")
    if draft_vocab:
        extra += _draft_vocab(full, Path(out), draft_vocab, quiet, auto=auto_vocab)
        res.path, res.size_bytes = Path(out), Path(out).stat().st_size
    click.echo(f"wrote {res.path} ({res.arch}, {res.n_tensors} tensors, {human_bytes(res.size_bytes)}; "
               f"{res.n_mtp_layers} MTP layer(s), {len(res.head_tensors)} head tensors{extra})")


def _draft_vocab(full, out, size: int, quiet: bool, auto: bool = False) -> str:
    """Write ``out``: the converted file ``full`` with its MTP head drafting over
    the ``size`` lowest-ranked BPE tokens; ``full`` is removed either way. ``auto``:
    a vocabulary that is not byte-level BPE, or not more than twice ``size``, keeps
    the full head instead of failing."""
    from ..train.vocab import bpe_rank_counts, compress_vocab

    try:
        counts = bpe_rank_counts(full)
        if auto and (counts is None or len(counts) <= 2 * size):
            full.replace(out)
            why = "not byte-level BPE" if counts is None else f"{len(counts)} tokens"
            return f", full MTP head (vocabulary {why})"
        if counts is None:
            raise ValueError(f"{out}: not a byte-level BPE vocabulary, so its token ids carry no frequency "
                             "order; use 'gguf-mtp distill-data' + 'compress-vocab' instead")
        r = compress_vocab(full, None, out, size, counts=counts, progress=not quiet)
    except (ValueError, OSError) as e:
        fail(e)
    finally:
        full.unlink(missing_ok=True)
    return f", draft vocabulary of {r.size} tokens"


@click.command("archs")
@click.option("--tensors", is_flag=True, help="Also show which checkpoint tensor becomes which GGUF tensor.")
@click.option("--markdown", is_flag=True, help="Print the tables as Markdown (as in docs/architectures.md).")
def archs_cmd(tensors, markdown):
    """List the checkpoint architectures 'convert' supports, the GGUF
    architecture each becomes, and which hidden state feeds its MTP module.

    The tensor tables come from gguf_mtp.heads.tensor_map, the one table that
    drives the converter, the PyTorch heads and stitching."""
    from ..convert.archs import ARCHITECTURES
    from ..heads.tensor_map import display

    seen = []
    for arch in ARCHITECTURES.values():
        if arch not in seen:
            seen.append(arch)
    if markdown:
        click.echo(archs_markdown(seen, tensors, display))
        return
    for arch in seen:
        click.echo(f"{', '.join(arch.hf_architectures)} -> {arch.gguf_arch}")
        click.echo(f"    MTP input: {arch.hidden_source}")
        if tensors:
            for src, dst, note in display(arch.tensors):
                click.echo(f"    {src:<55} -> {dst}" + (f"  ({note})" if note else ""))
            for n in arch.notes:
                click.echo(f"    note: {n}")


def archs_markdown(archs, tensors: bool, display) -> str:
    """The architecture tables as Markdown (docs/architectures.md embeds this output)."""
    lines = ["| HF class | GGUF arch | hidden state fed to the MTP module |", "|---|---|---|"]
    for arch in archs:
        lines.append(f"| {', '.join(f'`{a}`' for a in arch.hf_architectures)} | `{arch.gguf_arch}` "
                     f"| {arch.hidden_source} |")
    if tensors:
        for arch in archs:
            lines += ["", f"**{', '.join(arch.hf_architectures)}** → `{arch.gguf_arch}`", "",
                      "| checkpoint tensor | GGUF tensor | transform / note |", "|---|---|---|"]
            lines += [f"| `{src}` | `{dst}` | {note} |" for src, dst, note in display(arch.tensors)]
            lines += [f"\n{n}" for n in arch.notes]
    return "\n".join(lines)


@click.command()
@click.argument("base", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("heads", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def graft(base, heads, out, quiet):
    """Put the MTP heads of HEADS into BASE, writing OUT, without re-converting
    the trunk: e.g. BASE is a Q4_K_M made by another tool (or a --no-mtp
    conversion) and HEADS comes from 'gguf-mtp convert --mtp-only'.

    The heads' tensors are copied byte for byte at their own type; BASE keeps
    its trunk, vocabulary and metadata. Refuses, listing every reason, when
    the two are not the same model: architecture, hidden size, trunk depth,
    vocabulary (token for token) or any shared hyper-parameter differ."""
    from ..convert.graft import GraftError
    from ..convert.graft import graft as graft_api
    from ..gguf.inspect import human_bytes

    try:
        res = graft_api(base, heads, out, progress=not quiet)
    except (GraftError, FileNotFoundError, ValueError) as e:
        fail(e)
    note = f"; replaced {res.replaced} head tensors BASE had" if res.replaced else ""
    click.echo(f"wrote {res.path} ({res.arch}: {res.n_trunk}-layer trunk from BASE + {res.n_heads} MTP "
               f"layer(s), {len(res.head_tensors)} head tensors, "
               f"{human_bytes(res.path.stat().st_size)}{note})")


@click.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_cmd(file, as_json):
    """List the drafter heads in a GGUF FILE: their tensors, types, sizes, the
    metadata a drafter needs, and whether stock llama.cpp (the pinned version,
    unpatched: what llama-server, LM Studio or ollama of that version run)
    loads the file."""
    import dataclasses

    from ..convert.strip import StripError, stock_refusals
    from ..gguf.inspect import format_summary, read_summary

    try:
        s = read_summary(file)
        refusals = stock_refusals(file)
    except (ValueError, StripError) as e:
        fail(e)
    if as_json:
        d = dataclasses.asdict(s)
        d["path"] = str(s.path)
        d["stock_llama_cpp"] = {"loads": not refusals, "refusals": refusals}
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(format_summary(s))
        if refusals:
            click.echo("stock llama.cpp: does NOT load this file (" + "; ".join(refusals) + "); "
                       "'gguf-mtp strip FILE OUT' writes a copy it loads")
        else:
            click.echo("stock llama.cpp: loads this file")


@click.command("strip")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--keep", type=click.Choice(["none", "mtp"]), default="none", show_default=True,
              help="'mtp': keep the native MTP layers (stock llama.cpp drafts with them on qwen35, "
                   "qwen35moe, qwen3next, glm4moe, ...); 'none': the trunk alone.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def strip_cmd(src, out, keep, quiet):
    """Write OUT: SRC without what stock llama.cpp cannot load (Medusa heads,
    compressed draft vocabulary, MTP layers of architectures only gguf-mtp
    runs, and the MTP layers altogether unless --keep mtp). Every kept tensor
    is copied byte for byte; the block count and per-layer metadata follow."""
    from ..convert.strip import StripError, strip
    from ..gguf.inspect import human_bytes

    try:
        res = strip(src, out, keep_mtp=keep == "mtp", progress=not quiet)
    except (StripError, FileNotFoundError, ValueError) as e:
        fail(e)
    click.echo(f"wrote {res.path} ({res.kept} tensors kept, {len(res.dropped)} dropped"
               f"{', MTP layers kept' if res.kept_mtp else ''}; {human_bytes(res.path.stat().st_size)})")


@click.command("quantize")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("dst", type=click.Path(dir_okay=False, path_type=str))
@click.argument("type", metavar="TYPE", type=click.Choice(sorted(QUANT_FTYPES), case_sensitive=False))
@click.option("--head-type", type=click.Choice(list(QUANT_HEAD_TYPES)), default=None, help="Tensor type of the drafter heads (default: TYPE's own choice, as upstream).")
@click.option("-t", "--threads", type=int, default=None, help="Threads (default: all cores).")
def quantize_cmd(src, dst, type, head_type, threads):
    """Quantize SRC (an f32/f16/bf16 GGUF) to DST with llama.cpp's quantizer,
    keeping the drafter heads at --head-type (e.g. a q4_k_m trunk with q8_0 heads)."""
    from ..convert.quantize import QuantizeError, quantize
    from ..gguf.inspect import human_bytes
    from ..upstream import RuntimeMissing

    try:
        res = quantize(src, dst, type, head_type, threads)
    except (QuantizeError, RuntimeMissing, ValueError) as e:
        fail(e)
    heads = f"heads {res.head_type}" if res.head_type else "heads at the file type's default"
    click.echo(f"wrote {res.path} ({res.ftype}, {heads}, {human_bytes(res.size_bytes)})")
