"""``gguf-mtp generate | demo``: decoding, plain and speculative."""

from __future__ import annotations

import json

import click

from ..runtime.drafters import DRAFTERS
from .common import fail

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
               f"(target {d['target_s']*1e3:.0f}, draft {d['draft_s']*1e3:.0f}, other {d['other_s']*1e3:.0f}); "
               f"host overhead {100 * d['overhead_share']:.1f}% of decode (outside llama.cpp's compute)", err=True)


class _DraftLength(click.ParamType):
    name = "K|auto"

    def convert(self, value, param, ctx):
        if isinstance(value, int) or value == "auto":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"{value!r} is neither an integer nor 'auto'", param, ctx)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-p", "--prompt", required=True, help="Prompt text.")
@click.option("-n", "--n-predict", "n_predict", type=int, default=64, show_default=True,
              help="Tokens to generate.")
@click.option("--drafter", type=click.Choice(list(DRAFTERS)), default="auto", show_default=True,
              help="; ".join(f"{name}: {cls.summary}" for name, cls in DRAFTERS.items()) + ".")
@click.option("--tree", default="default", show_default=True,
              help="Medusa tree: 'default' (8 nodes, 4 branches, depth 3), 'chain' (top candidate of each "
                   "head), or index paths like '0;1;0,0;0,1' ([0, 1] = head 0's top candidate, then head "
                   "1's second). Depth is cut at --draft.")
@click.option("--draft", type=_DraftLength(), default="auto", show_default=True,
              help="Draft length K, or 'auto' to pick the K (0 included) that pays on this machine "
                   "(with --drafter auto an integer caps it).")
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
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Exact mode: greedy output is plain decoding's token for token (docs/exactness.md); "
                   "--no-exact verifies with llama.cpp's multi-row kernels.")
@click.option("--json", "as_json", is_flag=True, help="Print text and statistics as JSON.")
@click.option("-v", "--verbose", is_flag=True, help="Show llama.cpp's log.")
def generate(file, prompt, n_predict, drafter, tree, draft, temp, top_k, top_p, min_p, repeat_penalty, seed,
             threads, n_gpu_layers, exact, as_json, verbose):
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
        opts = RuntimeOptions(n_threads=threads, verbose=verbose, exact=exact,
                              draft_max=max(8, draft if isinstance(draft, int) else 0))
        if n_gpu_layers is not None:
            opts.n_gpu_layers = n_gpu_layers
        with Engine(file, dr.configure(opts)) as eng:
            g = gen_api(eng, prompt, n_predict, drafter=dr, draft=draft, params=params)
    except (RuntimeMissing, RuntimeErrorLlama, ValueError) as e:
        fail(e)
    if as_json:
        click.echo(json.dumps({"text": g.text, "tokens": g.tokens, "stats": g.stats.as_dict()}, indent=2))
        return
    click.echo(prompt + g.text)
    print_stats(g.stats)

@click.command()
@click.option("--outtype", type=click.Choice(["f32", "f16", "q8_0", "q4_0", "q4_k_m"]), default="q4_0",
              show_default=True, help="Quant level of the default model's trunk (the MTP head stays at q8_0).")
@click.option("-n", "--n-predict", "n_predict", type=int, default=64, show_default=True,
              help="Tokens to generate per prompt.")
@click.option("--drafts", default="1,2,3", show_default=True, help="Draft lengths to compare, comma-separated.")
@click.option("--repeats", type=int, default=2, show_default=True, help="Interleaved repeats per prompt.")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None,
              help="Layers to offload to a GPU (default: $GGUF_MTP_N_GPU_LAYERS or 0).")
def demo(outtype, n_predict, drafts, repeats, threads, n_gpu_layers):
    """The whole job on the embedded default Qwen3.5+MTP model: convert it to
    one GGUF, give its MTP head a draft vocabulary, and compare plain decoding
    with what to run (--drafter auto: drafter and draft length chosen per pass)
    and with the MTP head at fixed draft lengths, over the draft vocabulary and
    the full vocabulary.

    Prints tokens/s, the speedup, tau (tokens per target pass), the acceptance
    per draft position, and whether each output equals plain decoding's."""
    from ..gguf.inspect import human_bytes
    from ..models.default import DEFAULT_PROMPTS, default_gguf
    from ..models.demo import format_table, run_demo

    ks = tuple(int(k) for k in drafts.split(",") if k.strip())
    click.echo("==> default model: materialize, convert, quantize (cached after the first run)", err=True)
    files = {"draft-vocab": default_gguf(outtype, draft_vocab=True), "full-vocab": default_gguf(outtype)}
    for p in files.values():
        click.echo(f"    {p} ({human_bytes(p.stat().st_size)})", err=True)
    click.echo(f"==> greedy, {len(DEFAULT_PROMPTS)} prompts x {n_predict} tokens x {repeats} repeats, interleaved",
               err=True)
    rows = run_demo({k: str(v) for k, v in files.items()}, DEFAULT_PROMPTS, n_predict=n_predict, drafts=ks,
                    repeats=repeats, n_threads=threads, n_gpu_layers=n_gpu_layers)
    click.echo(format_table(rows))
    if not all(r.lossless for r in rows):
        raise click.ClickException("a speculative output differs from plain decoding (lossless invariant broken)")
