"""The ``gguf-mtp`` command line: thin wrappers over the Python API."""

from __future__ import annotations

import json
import sys

import click

from .. import __version__
from ..convert.quantize import FTYPES as QUANT_FTYPES
from ..convert.quantize import HEAD_TYPES as QUANT_HEAD_TYPES
from ..runtime.drafters import DRAFTERS


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gguf-mtp")
def main():
    """Turn the Multi-Token-Prediction (MTP) layers of LLM checkpoints into
    speculative drafters for llama.cpp: convert, inspect, generate, demo."""


@main.group()
def runtime():
    """Build and check the patched llama.cpp runtime (llama-cpp-python)."""


@runtime.command("build")
@click.option("--cmake-args", default=None, metavar="ARGS",
              help="CMake flags (default: the CMAKE_ARGS environment variable), "
                   "e.g. '-DGGML_CUDA=on' for CUDA or '-DGGML_METAL=on' for Metal.")
@click.option("--force", is_flag=True, help="Rebuild even if a cached wheel matches.")
@click.option("--no-install", is_flag=True, help="Build (or find) the wheels only.")
@click.option("-j", "--jobs", type=int, default=None, help="Parallel compile jobs (default: all cores).")
def runtime_build(cmake_args, force, no_install, jobs):
    """Build llama-cpp-python 0.3.36 from its source distribution with patches/
    applied, cache the wheel by (version, series, CMAKE_ARGS) and install it.

    Every build is smoke-tested in a child process on this CPU (load a tiny
    GGUF, decode, compare the kernels' logits). If the child dies or computes
    garbage, the build is redone without the failing feature: first without
    AMX, then with a portable instruction set (-DGGML_NATIVE=OFF); the choice
    is remembered for this machine. A cached wheel built on another CPU is
    smoke-tested before use. A second run with nothing changed takes seconds."""
    from ..runtime.build import BuildError, build_runtime

    try:
        res = build_runtime(cmake_args, force=force, install=not no_install, jobs=jobs,
                            log=lambda m: click.echo(m, err=True))
    except BuildError as e:
        raise click.ClickException(str(e))
    for fb in res.fallbacks:
        click.echo(f"note: built {fb['name']} because {fb['reason']}", err=True)
    for w in res.wheels:
        click.echo(str(w))


@runtime.command("info")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def runtime_info(as_json):
    """Show the llama.cpp commit, the applied patches and the compiled backends;
    fails if the installed llama-cpp-python is not gguf-mtp's patched build."""
    from ..runtime import info as runtime_info_api
    from ..upstream import RuntimeMissing

    try:
        info = runtime_info_api()
    except RuntimeMissing as e:
        raise click.ClickException(str(e))
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"llama-cpp-python {info['llama_cpp_python']}  (llama.cpp {info['llama_cpp_commit'][:9]})")
    click.echo(f"build key        {info['key']}")
    click.echo(f"CMAKE_ARGS       {' '.join(info['cmake_args'])}")
    click.echo("patches:")
    for p in info["patches"]:
        click.echo(f"  {p['name']}  {p['sha256'][:12]}")
    click.echo(f"backends         {', '.join(info['backends'])}")
    click.echo(f"GPU offload      {'yes' if info['gpu_offload'] else 'no'}")
    click.echo(f"compiled for     {' '.join(info['compiled_cpu_features']) or '?'}")
    click.echo(f"extra buffers    {', '.join(info['extra_buffer_types']) or 'none'}  "
               "(weights in these buffer types use AMX / repacked kernels)")
    built_on = info.get("built_on")
    here = info["this_cpu"]
    if built_on:
        same = "same CPU" if built_on.get("fingerprint") == here["fingerprint"] else "ANOTHER CPU"
        click.echo(f"built on         {built_on.get('cpu')} ({same})")
    click.echo(f"this CPU         {here['cpu']}  [{' '.join(here['isa'])}]")
    click.echo(f"smoke test       {'passed on this CPU' if info['verified_here'] else 'not run on this CPU'}")


def _fail(e: Exception):
    raise click.ClickException(str(e))


@main.command()
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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.option("-v", "--verbose", is_flag=True, help="Show the converter's log.")
def convert(model_dir, out, outtype, head_type, no_mtp, mtp_only, heads, medusa_heads, medusa_layers,
            init, quiet, verbose):
    """Convert a Hugging Face checkpoint directory MODEL_DIR to ONE GGUF file OUT
    holding the trunk and its MTP layers (blk.N.nextn.*).

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
    from ..gguf.inspect import human_bytes
    from ..upstream import RuntimeMissing

    opts = ConvertOptions(outtype=outtype, head_type=head_type, mtp=not no_mtp, mtp_only=mtp_only,
                          verbose=verbose, progress=not quiet, heads=heads, medusa_heads=medusa_heads,
                          medusa_layers=medusa_layers, init=init)
    try:
        res = convert_api(model_dir, out, opts)
    except (CheckpointError, ConversionError, UnsupportedArchitecture, RuntimeMissing) as e:
        _fail(e)
    extra = {"medusa": f", {medusa_heads} Medusa heads ({init})", "eagle": f", EAGLE drafter ({init})"}.get(heads, "")
    click.echo(f"wrote {res.path} ({res.arch}, {res.n_tensors} tensors, {human_bytes(res.size_bytes)}; "
               f"{res.n_mtp_layers} MTP layer(s), {len(res.head_tensors)} head tensors{extra})")


@main.command("archs")
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


@main.command()
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
        _fail(e)
    note = f"; replaced {res.replaced} head tensors BASE had" if res.replaced else ""
    click.echo(f"wrote {res.path} ({res.arch}: {res.n_trunk}-layer trunk from BASE + {res.n_heads} MTP "
               f"layer(s), {len(res.head_tensors)} head tensors, "
               f"{human_bytes(res.path.stat().st_size)}{note})")


@main.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_cmd(file, as_json):
    """List the drafter heads in a GGUF FILE: their tensors, types, sizes, and the
    metadata a drafter needs."""
    import dataclasses

    from ..gguf.inspect import format_summary, read_summary

    try:
        s = read_summary(file)
    except ValueError as e:
        _fail(e)
    if as_json:
        d = dataclasses.asdict(s)
        d["path"] = str(s.path)
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(format_summary(s))


def print_stats(st) -> None:
    d = st.as_dict()
    click.echo(f"--- drafter={d['drafter']} draft={d['draft']}  prompt={d['n_prompt']} tok, "
               f"generated={d['n_generated']} tok", err=True)
    click.echo(f"decode {d['tokens_per_s']:.1f} tok/s   tau {d['tau']:.2f} tok/pass   "
               f"target passes {d['target_passes']}   mean draft {d['mean_draft']:.2f}", err=True)
    if d["acceptance_per_position"]:
        acc = " ".join(f"{a:.2f}" for a in d["acceptance_per_position"])
        click.echo(f"acceptance per draft position: {acc}   (overall {d['acceptance_rate']:.2f})", err=True)
    click.echo(f"time: prompt {d['prompt_s']*1e3:.0f} ms, decode {d['decode_s']*1e3:.0f} ms "
               f"(target {d['target_s']*1e3:.0f}, draft {d['draft_s']*1e3:.0f}, other {d['other_s']*1e3:.0f})",
               err=True)


class _DraftLength(click.ParamType):
    name = "K|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-p", "--prompt", required=True, help="Prompt text.")
@click.option("-n", "--n-predict", "n_predict", type=int, default=64, show_default=True,
              help="Tokens to generate.")
@click.option("--drafter", type=click.Choice(list(DRAFTERS)), default="mtp", show_default=True,
              help="; ".join(f"{name}: {cls.summary}" for name, cls in DRAFTERS.items()) + ".")
@click.option("--tree", default="default", show_default=True,
              help="Medusa tree: 'default' (8 nodes, 4 branches, depth 3), 'chain' (top candidate of each "
                   "head), or index paths like '0;1;0,0;0,1' ([0, 1] = head 0's top candidate, then head "
                   "1's second). Depth is cut at --draft.")
@click.option("--draft", type=_DraftLength(), default="3", show_default=True,
              help="Draft length K, or 'auto' to pick the K (0 included) that pays on this machine.")
@click.option("--temp", type=float, default=0.0, show_default=True,
              help="Temperature; 0 = greedy. Sampling stays exact: sampled MTP drafts pass the rejection "
                   "rule, deterministic drafts and trees the match rule.")
@click.option("--top-k", type=int, default=0, show_default=True, help="Top-k (0 = off).")
@click.option("--top-p", type=float, default=1.0, show_default=True, help="Top-p (1 = off).")
@click.option("--min-p", type=float, default=0.0, show_default=True, help="Min-p (0 = off).")
@click.option("--repeat-penalty", type=float, default=1.0, show_default=True, help="Repeat penalty (1 = off).")
@click.option("--seed", type=int, default=None, help="Sampling seed.")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None,
              help="Layers to offload to a GPU (default: $GGUF_MTP_N_GPU_LAYERS or 0).")
@click.option("--json", "as_json", is_flag=True, help="Print text and statistics as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's log.")
def generate(file, prompt, n_predict, drafter, tree, draft, temp, top_k, top_p, min_p, repeat_penalty, seed,
             threads, n_gpu_layers, as_json, verbose):
    """Generate from FILE and print the text and the statistics (tokens/s,
    tau = tokens per target pass, acceptance per draft position, time split).

    Greedy speculative output is token for token the output of --drafter none;
    with --temp > 0 it has the target's distribution."""
    from ..runtime import (
        Engine,
        RuntimeErrorLlama,
        RuntimeOptions,
        SamplingParams,
        make_drafter,
    )
    from ..runtime import generate as gen_api
    from ..upstream import RuntimeMissing

    try:
        dr = make_drafter(drafter, tree=tree)
        params = SamplingParams(temperature=temp, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, seed=seed)
        opts = RuntimeOptions(n_threads=threads, verbose=verbose,
                              draft_max=max(8, draft if isinstance(draft, int) else 0))
        if n_gpu_layers is not None:
            opts.n_gpu_layers = n_gpu_layers
        with Engine(file, dr.configure(opts)) as eng:
            g = gen_api(eng, prompt, n_predict, drafter=dr, draft=draft, params=params)
    except (RuntimeMissing, RuntimeErrorLlama, ValueError) as e:
        _fail(e)
    if as_json:
        click.echo(json.dumps({"text": g.text, "tokens": g.tokens, "stats": g.stats.as_dict()}, indent=2))
        return
    click.echo(prompt + g.text)
    print_stats(g.stats)

@main.command()
@click.option("--outtype", type=click.Choice(["f32", "f16", "q8_0"]), default="q8_0", show_default=True,
              help="Tensor type of the converted default model (trunk and head).")
@click.option("-n", "--n-predict", "n_predict", type=int, default=64, show_default=True,
              help="Tokens to generate per prompt.")
@click.option("--drafts", default="1,2,3", show_default=True, help="Draft lengths to compare, comma-separated.")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None,
              help="Layers to offload to a GPU (default: $GGUF_MTP_N_GPU_LAYERS or 0).")
def demo(outtype, n_predict, drafts, threads, n_gpu_layers):
    """Convert the embedded default Qwen3.5+MTP model to GGUF and compare plain
    decoding with native-MTP speculative decoding on a few prompts.

    Prints tokens/s, the speedup, tau (tokens per target pass), the acceptance
    per draft position, and whether each speculative output equals the plain one."""
    from ..gguf.inspect import human_bytes
    from ..models.default import DEFAULT_PROMPTS, default_gguf
    from ..models.demo import format_table, run_demo

    ks = tuple(int(k) for k in drafts.split(",") if k.strip())
    click.echo("==> default model: materialize + convert (cached after the first run)", err=True)
    path = default_gguf(outtype=outtype)
    click.echo(f"    {path} ({human_bytes(path.stat().st_size)})", err=True)
    click.echo(f"==> greedy, {len(DEFAULT_PROMPTS)} prompts x {n_predict} tokens, drafters: none, mtp K={ks}",
               err=True)
    rows = run_demo(path, DEFAULT_PROMPTS, n_predict=n_predict, drafts=ks, n_threads=threads,
                    n_gpu_layers=n_gpu_layers)
    click.echo(format_table(rows))
    if not all(r.lossless for r in rows):
        raise click.ClickException("a speculative output differs from plain decoding (lossless invariant broken)")


@main.command("quantize")
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
        _fail(e)
    heads = f"heads {res.head_type}" if res.head_type else "heads at the file type's default"
    click.echo(f"wrote {res.path} ({res.ftype}, {heads}, {human_bytes(res.size_bytes)})")


def _csv(kind):
    def parse(ctx, param, value):
        if value is None:
            return None
        items = tuple(v.strip() for v in value.split(",") if v.strip())
        try:
            return tuple(kind(v) for v in items)
        except ValueError:
            raise click.BadParameter(f"{value!r}: a comma-separated list") from None
    return parse


@main.command("bench")
@click.argument("target", required=False, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-o", "--out", default="bench-results", show_default=True,
              help="Directory for results.json, results.md and the plots.")
@click.option("--quick", is_flag=True,
              help="CI mode: every stage on a tiny setting (one quant, short generations, 2 training steps).")
@click.option("--quants", callback=_csv(str), default=None, metavar="LIST",
              help="Trunk quant levels [default: f16,q8_0,q4_k_m,q4_0].")
@click.option("--drafters", callback=_csv(str), default=None, metavar="LIST",
              help="Drafters [default: all: none,lcp-ngram,ngram,upstream,mtp,mtp-cv,fastmtp,eagle,"
                   "eagle-tree,medusa].")
@click.option("--drafts", callback=_csv(int), default=None, metavar="LIST",
              help="Draft lengths for the chain drafters [default: 1,2,3,4].")
@click.option("--head-types", callback=_csv(str), default=None, metavar="LIST",
              help="Head types swept for the MTP head (draft-vocabulary file) at draft 3 [default: f16,q8_0,q4_0].")
@click.option("--head-type", default=None, help="The heads' type in every other run [default: q8_0].")
@click.option("-n", "--n-tokens", type=int, default=None, help="Tokens generated per prompt [default: 64].")
@click.option("--repeats", type=int, default=None, help="Repeats; speeds are medians [default: 3].")
@click.option("--prompts-per-set", type=int, default=None, help="Prompts from each of code/prose/chat [default: 3].")
@click.option("--train-steps", type=int, default=None,
              help="Training steps of FastMTP, EAGLE and Medusa heads [default: 200].")
@click.option("--draft-vocab", type=int, default=None,
              help="Compressed draft vocabulary of the trained and mtp-cv files, 0 = off [default: 4096].")
@click.option("--work", default=None, help="Work directory for the built files [default: in the gguf-mtp cache].")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None, help="Layers offloaded to a GPU.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def bench_cmd(target, out, quick, quants, drafters, drafts, head_types, head_type, n_tokens, repeats,
              prompts_per_set, train_steps, draft_vocab, work, threads, n_gpu_layers, quiet):
    """Tokens/s of every drafter across quant levels, draft lengths and head types.

    TARGET is a high-precision GGUF with an MTP layer (default: the embedded
    default model at f32). The bench quantizes it to every level, trains the
    FastMTP, EAGLE and Medusa heads by self-distillation (once, kept in
    --work), then times plain decoding and each drafter back to back in one
    process, greedy, median of --repeats, every speculative output checked
    against plain decoding. Besides gguf-mtp's drafters it times
    llama-cpp-python's prompt-lookup decoding and llama.cpp's own draft-mtp
    (when its tool is built: python -m gguf_mtp.bench.upstream_mtp build).
    Writes results.json, results.md (tables, batch-cost curve c(n) and the speed
    bound per drafter) and three plots to --out.
    """
    import shlex

    from ..bench import BenchConfig, run_bench

    given = {"quants": quants, "drafters": drafters, "drafts": drafts, "head_types": head_types,
             "head_type": head_type, "n_tokens": n_tokens, "repeats": repeats, "prompts_per_set": prompts_per_set,
             "train_steps": train_steps, "draft_vocab": draft_vocab}
    given = {k: v for k, v in given.items() if v is not None}
    common = dict(target=target, out=out, work=work, threads=threads, n_gpu_layers=n_gpu_layers,
                  progress=not quiet)
    cfg = BenchConfig.quick_config(**common, **given) if quick else BenchConfig(**common, **given)
    command = "gguf-mtp " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    try:
        res = run_bench(cfg, command=command)
    except (ValueError, FileNotFoundError) as e:
        _fail(e)
    from ..bench.report import headline

    click.echo(headline(res))
    click.echo(f"wrote {cfg.out_dir() / 'results.json'}, results.md and {len(res['plots'])} plots "
               f"({res['seconds']:.0f} s)")
    bad = [f"{r['drafter']}@{r['draft']} {r['quant']}" for r in res["rows"] if not r.get("lossless", True)]
    if bad:
        raise click.ClickException("output differs from plain decoding: " + ", ".join(bad))


def _add_training_commands():
    from .train import COMMANDS

    for cmd in COMMANDS:
        main.add_command(cmd)


_add_training_commands()


if __name__ == "__main__":
    sys.exit(main())
