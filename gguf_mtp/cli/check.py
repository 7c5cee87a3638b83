"""``gguf-mtp check``: does speculative decoding give exactly plain decoding's tokens on this file?"""

from __future__ import annotations

import json

import click

from .common import fail


def _ints(ctx, param, value):
    try:
        return tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: comma-separated integers") from None


@click.command("check")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=str),
              default=None, help="Prompt file (.jsonl, .json or blank-line separated text); default: the "
                                 "built-in held-out set (C, JSON, SQL, Markdown, shell, Q&A, prose, Python).")
@click.option("--n-prompts", type=int, default=12, show_default=True, help="Use the first N prompts.")
@click.option("-n", "--n-tokens", type=int, default=256, show_default=True, help="Tokens generated per prompt.")
@click.option("--drafts", callback=_ints, default="1,3,8", show_default=True,
              help="Draft lengths, comma-separated (1,2,3,4,5,6,7,8 for the full check).")
@click.option("--drafters", default="mtp,eagle,medusa,ngram,ngram-tree", show_default=True,
              help="Drafters to check, comma-separated; those the file does not support are left out.")
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Exact mode (batch-invariant verification); --no-exact measures how often the "
                   "default kernels leave plain decoding.")
@click.option("--upstream/--no-upstream", default=True, show_default=True,
              help="Also check llama.cpp's own draft-mtp (files with MTP layers, when its tool is built).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Write the full report as JSON to this file.")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None, help="Layers to offload to a GPU.")
@click.option("-q", "--quiet", is_flag=True, help="No progress lines.")
def check(model, prompts_file, n_prompts, n_tokens, drafts, drafters, exact, upstream, json_out, threads,
          n_gpu_layers, quiet):
    """Run plain greedy decoding and every drafter MODEL supports at each draft
    length over a prompt set, and report per drafter and K whether the output
    is exactly plain decoding's: exact prompts, the first divergent token and
    plain decoding's top-2 logit margin there. Exits 1 on any divergence of
    gguf-mtp's drafters (llama.cpp's own draft-mtp, checked when its tool is
    built, is reported but not held to exactness: its kernels are not ours)."""
    from ..bench.check import format_table, heldout_prompts, load_prompts, run_check
    from ..runtime import RuntimeErrorLlama, RuntimeMissing

    prompts = (load_prompts(prompts_file) if prompts_file else heldout_prompts())[:n_prompts]
    if not prompts:
        fail(ValueError("no prompts"))
    log = None if quiet else (lambda m: click.echo(f"  {m}", err=True))
    try:
        rep = run_check(model, prompts, n_tokens=n_tokens, drafts=drafts,
                        drafters=tuple(d.strip() for d in drafters.split(",") if d.strip()), exact=exact,
                        threads=threads, n_gpu_layers=n_gpu_layers, upstream=upstream, progress=log)
    except (RuntimeMissing, RuntimeErrorLlama, ValueError) as e:
        fail(e)
    click.echo(format_table(rep))
    if json_out:
        with open(json_out, "w") as f:
            json.dump(rep.as_dict(), f, indent=1)
    if not rep.ok:
        raise SystemExit(1)
