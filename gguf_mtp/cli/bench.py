"""``gguf-mtp bench``: tokens/s across quant levels, drafters and draft lengths."""

from __future__ import annotations

import sys

import click

from ..bench.config import BENCH_DRAFTERS
from .common import fail

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


@click.command("compare")
@click.argument("a", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("b", type=click.Path(exists=True, dir_okay=False, path_type=str))
def compare_cmd(a, b):
    """Compare two bench results (results.json): B's tokens/s over A's per row
    measured in both, and both speedups with their IQR."""
    import json
    from pathlib import Path

    from ..bench.report import compare

    try:
        ra, rb = json.loads(Path(a).read_text()), json.loads(Path(b).read_text())
        click.echo(compare(ra, rb, (Path(a).parent.name or "A", Path(b).parent.name or "B")), nl=False)
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        fail(f"not a gguf-mtp bench results.json: {e}")


class _BenchCommand(click.Command):
    """``gguf-mtp bench [TARGET] [OPTIONS]`` runs the bench; ``gguf-mtp bench
    compare A.json B.json`` compares two results (a TARGET named "compare" is
    given as ./compare)."""

    def make_context(self, info_name, args, parent=None, **extra):
        if args[:1] == ["compare"]:
            return compare_cmd.make_context(f"{info_name} compare", list(args[1:]), parent=parent, **extra)
        return super().make_context(info_name, args, parent=parent, **extra)


@click.command("bench", cls=_BenchCommand)
@click.argument("target", required=False, type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("-o", "--out", default="bench-results", show_default=True,
              help="Directory for results.json, results.md and the plots.")
@click.option("--quick", is_flag=True,
              help="CI mode: every stage on a tiny setting (one quant, short generations, 2 training steps).")
@click.option("--quants", callback=_csv(str), default=None, metavar="LIST",
              help="Trunk quant levels [default: f16,q8_0,q4_k_m,q4_0].")
@click.option("--drafters", callback=_csv(str), default=None, metavar="LIST",
              help=f"Drafters [default: all: {','.join(BENCH_DRAFTERS)}].")
@click.option("--drafts", callback=_csv(int), default=None, metavar="LIST",
              help="Draft lengths for the chain drafters [default: 1,2,3,4].")
@click.option("--head-types", callback=_csv(str), default=None, metavar="LIST",
              help="Head types swept for the MTP head (draft-vocabulary file) at draft 3 [default: f16,q8_0,q4_0].")
@click.option("--head-type", default=None, help="The heads' type in every other run [default: q8_0].")
@click.option("-n", "--n-tokens", type=int, default=None, help="Tokens generated per prompt [default: 64].")
@click.option("--repeats", type=int, default=None, help="Interleaved repeats (plain, spec, plain, spec, ...); speeds and ratios are medians with their interquartile range [default: 5].")
@click.option("--prompts-per-set", type=int, default=None, help="Prompts from each of code/prose/chat [default: 3].")
@click.option("--train-steps", type=int, default=None,
              help="Training steps of FastMTP, EAGLE and Medusa heads [default: 200].")
@click.option("--draft-vocab", type=int, default=None,
              help="Compressed draft vocabulary of the trained and mtp-cv files, 0 = off [default: 4096].")
@click.option("--depth", "depths", callback=_csv(int), default=None, metavar="LIST",
              help="Context depths: tokens of real text before each prompt, like llama-bench -d; the main tables "
                   "are depth 0, the others get a speedup-against-depth table and plot [default: 0].")
@click.option("--output", "output", type=click.Choice(["md", "csv", "json", "jsonl"]), default="md",
              show_default=True, help="What to print: the headline table, or every row as CSV / JSON / JSON lines "
                                      "(results.json, results.md and the plots are written either way).")
@click.option("--work", default=None, help="Work directory for the built files, one subdirectory per target file (by its contents) [default: in the gguf-mtp cache].")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None, help="Layers offloaded to a GPU.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def bench_cmd(target, out, quick, quants, drafters, drafts, head_types, head_type, n_tokens, repeats,
              prompts_per_set, train_steps, draft_vocab, depths, output, work, threads, n_gpu_layers, quiet):
    """Tokens/s of every drafter across quant levels, draft lengths and head types.

    TARGET is a high-precision GGUF with an MTP layer (default: the embedded
    default model at f32), or with --quants source any GGUF as it is (e.g.
    SmolLM2 Q4_1 with grafted heads, Gemma 3 Q4_K_M): then every drafter that
    applies to the file runs, the others are listed with the reason. The
    bench quantizes the target to every level, trains the FastMTP, EAGLE and
    Medusa heads by self-distillation (once, kept in --work), then times
    plain decoding and each drafter in one process, interleaved (plain,
    spec, plain, spec, ... on the same prompt) after a warm-up, greedy, every
    speculative output checked against plain decoding. Speeds and speedups
    are medians with their interquartile range over --repeats; the best K
    is chosen on half of the prompts and reported on the other half.
    `gguf-mtp bench compare A/results.json B/results.json` compares two runs. Besides gguf-mtp's drafters it times
    llama-cpp-python's prompt-lookup decoding and llama.cpp's own draft-mtp
    (when its tool is built: python -m gguf_mtp.bench.upstream_mtp build).
    Writes results.json, results.md (tables, batch-cost curve c(n) and the speed
    bound per drafter) and three plots to --out.
    """
    import shlex

    from ..bench import BenchConfig, run_bench

    given = {"quants": quants, "drafters": drafters, "drafts": drafts, "head_types": head_types,
             "head_type": head_type, "n_tokens": n_tokens, "repeats": repeats, "prompts_per_set": prompts_per_set,
             "train_steps": train_steps, "draft_vocab": draft_vocab, "depths": depths}
    given = {k: v for k, v in given.items() if v is not None}
    common = dict(target=target, out=out, work=work, threads=threads, n_gpu_layers=n_gpu_layers,
                  progress=not quiet)
    cfg = BenchConfig.quick_config(**common, **given) if quick else BenchConfig(**common, **given)
    command = "gguf-mtp " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else None
    try:
        res = run_bench(cfg, command=command)
    except (ValueError, FileNotFoundError) as e:
        fail(e)
    from ..bench import report

    if output == "md":
        click.echo(report.headline(res))
    elif output == "json":
        import json

        click.echo(json.dumps(report.records(res), indent=1))
    else:
        click.echo(report.as_csv(res) if output == "csv" else report.as_jsonl(res), nl=False)
    # with --output csv/json/jsonl stdout is the data alone (pipeable); the rest goes to stderr
    click.echo(f"wrote {cfg.out_dir() / 'results.json'}, results.md and {len(res['plots'])} plots "
               f"({res['seconds']:.0f} s)", err=output != "md")
    # other projects' drafters (llama.cpp's draft-mtp, built pristine and without our patches, and
    # llama-cpp-python's prompt lookup) are compared and reported, not held to our exactness
    foreign = ("upstream", "lcp-ngram")
    rows = [r for r in res["rows"] if not r.get("lossless", True)]
    for r in rows:
        if r["drafter"] in foreign:
            click.echo(f"note: {r['drafter']}@{r['draft']} {r['quant']} leaves plain greedy output", err=True)
    bad = [f"{r['drafter']}@{r['draft']} {r['quant']}" for r in rows if r["drafter"] not in foreign]
    if bad:
        raise click.ClickException("output differs from plain decoding: " + ", ".join(bad))
