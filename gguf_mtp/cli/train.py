"""The training commands (``distill-data``, ``finetune``, ``stitch``): thin
click wrappers over :mod:`gguf_mtp.train`, registered on the ``gguf-mtp``
group; ``python -m gguf_mtp.train`` (and ``accelerate launch -m
gguf_mtp.train``) runs ``finetune``."""

from __future__ import annotations

import json

import click


class _RunByDefault(click.Group):
    """``distill-data TARGET ...`` runs; ``distill-data merge OUT DIR...`` merges."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


class _Part(click.ParamType):
    name = "i/n"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            i, n = (int(x) for x in str(value).split("/"))
        except ValueError:
            self.fail(f"{value!r}: expected i/n, e.g. 0/4", param, ctx)
        if not (n >= 1 and 0 <= i < n):
            self.fail(f"{value!r}: need 0 <= i < n", param, ctx)
        return i, n


@click.group("distill-data", cls=_RunByDefault)
def distill_data():
    """Self-distillation data. 'distill-data TARGET --out DIR' (the run
    command) records the target's own answers; 'distill-data TARGET --out
    PART_i --shard i/n' on n processes or machines splits the work, and
    'distill-data merge OUT PART_0 ... PART_n-1' joins the parts.
    'distill-data text TARGET --out DIR' has the target read local text
    instead (one batched pass per window, ~12x faster per token)."""


@distill_data.command("run")
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--prompts", default=None, type=click.Path(exists=True, path_type=str),
              help="Prompt file (.jsonl / .txt) or directory (default: the prompt set shipped with gguf-mtp).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Output directory.")
@click.option("-n", "--max-tokens", type=int, default=128, show_default=True, help="Response tokens per prompt.")
@click.option("--temp", type=float, default=0.0, show_default=True, help="Sampling temperature (0 = greedy).")
@click.option("--top-p", type=float, default=1.0, show_default=True)
@click.option("--top-k", type=int, default=0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed (prompt i uses seed + i).")
@click.option("-k", "--topk-logits", type=int, default=32, show_default=True, help="Target logits kept per position.")
@click.option("--shard-size", type=int, default=64, show_default=True, help="Sequences per shard.")
@click.option("--max-prompts", type=int, default=None, help="Use the first N prompts only.")
@click.option("--hidden-dtype", type=click.Choice(["f16", "f32"]), default="f16", show_default=True)
@click.option("--n-ctx", type=int, default=2048, show_default=True)
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-ngl", "--n-gpu-layers", type=int, default=None, help="Layers offloaded to a GPU.")
@click.option("--shard", "part", type=_Part(), default=None,
              help="i/n: distill a deterministic 1/n of the prompts (shards s with s mod n = i); run every i "
                   "from 0 to n-1 (any machines sharing the target file), then 'distill-data merge'.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def distill_run(target, prompts, out, max_tokens, temp, top_p, top_k, seed, topk_logits, shard_size, max_prompts,
                hidden_dtype, n_ctx, threads, n_gpu_layers, part, quiet):
    """Self-distillation data: TARGET answers the prompts itself (greedy or
    sampled, at its own quantization); per position the tokens, the target's
    post-norm hidden states and its top-k logits go to safetensors shards with
    a manifest. Rerunning with the same --out resumes."""
    from ..train.distill import DistillConfig, distill
    from ..train.prompts import DEFAULT_PROMPTS_DIR

    cfg = DistillConfig(target=target, prompts=prompts or str(DEFAULT_PROMPTS_DIR), out=out,
                        max_tokens=max_tokens, temperature=temp, top_p=top_p, top_k=top_k, seed=seed,
                        topk_logits=topk_logits, shard_size=shard_size, max_prompts=max_prompts,
                        hidden_dtype=hidden_dtype, n_ctx=n_ctx, n_threads=threads, n_gpu_layers=n_gpu_layers,
                        progress=not quiet, part=part)
    from ..runtime.engine import RuntimeErrorLlama

    try:
        r = distill(cfg)
    except (ValueError, OSError, RuntimeErrorLlama) as e:
        raise click.ClickException(str(e))
    click.echo(f"{r.out}: {r.n_sequences} sequences, {r.n_tokens} tokens "
               f"({len(r.shards)} shard(s) written, {r.skipped_shards} already there)"
               + (f"; part {part[0]}/{part[1]}: merge the parts with 'gguf-mtp distill-data merge'" if part else ""))


@distill_data.command("text")
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Output directory.")
@click.option("--windows", type=int, default=4000, show_default=True,
              help="Windows of text to record (~250 tokens each).")
@click.option("--window", type=int, default=256, show_default=True, help="Tokens per window, BOS included.")
@click.option("--seed", type=int, default=0, show_default=True, help="Which documents, and where in them.")
@click.option("-k", "--topk-logits", type=int, default=32, show_default=True, help="Target logits kept per position.")
@click.option("--shard-size", type=int, default=64, show_default=True, help="Windows per shard.")
@click.option("--hidden-dtype", type=click.Choice(["f16", "f32"]), default="f16", show_default=True)
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def distill_text_cmd(target, out, windows, window, seed, topk_logits, shard_size, hidden_dtype, threads, quiet):
    """Teacher-forced data: TARGET reads windows of the text already on this
    machine (the Python standard library and packages, the Linux man-pages, the
    C headers: gguf_mtp.train.corpus) and records, per position, the hidden
    state and its own top-k logits. Training learns the target's winner at each
    position, not the text's next token. Mix it with 'distill-data run' data:
    'finetune RUN_DIR TARGET --data TEXT_DIR'. Rerunning with the same --out resumes."""
    from ..runtime.engine import RuntimeErrorLlama
    from ..train.distill_text import TextDistillConfig, distill_text

    cfg = TextDistillConfig(target=target, out=out, n_windows=windows, window=window, seed=seed,
                            topk_logits=topk_logits, shard_size=shard_size, hidden_dtype=hidden_dtype,
                            n_threads=threads, progress=not quiet)
    try:
        r = distill_text(cfg)
    except (ValueError, OSError, RuntimeErrorLlama) as e:
        raise click.ClickException(str(e))
    click.echo(f"{r.out}: {r.n_sequences} windows, {r.n_tokens} tokens "
               f"({len(r.shards)} shard(s) written, {r.skipped_shards} already there)")


@distill_data.command("merge")
@click.argument("out", type=click.Path(file_okay=False, path_type=str))
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False, path_type=str))
def distill_merge(out, parts):
    """Join the PARTS of a sharded run (--shard i/n) into OUT: one manifest, the
    shards hard-linked (copied across file systems). Every part must come from
    the same target file and settings."""
    from ..train.distill import merge

    try:
        r = merge(out, list(parts))
    except (ValueError, OSError) as e:
        raise click.ClickException(str(e))
    note = "complete" if r.complete else f"INCOMPLETE: shards {r.missing} missing (run their part again)"
    click.echo(f"{r.out}: {r.n_shards} shards, {r.n_sequences} sequences, {r.n_tokens} tokens; {note}")
    if not r.complete:
        raise SystemExit(1)


@click.command("finetune")
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=str), help="Heads directory.")
@click.option("--data", "more_data", multiple=True, type=click.Path(exists=True, file_okay=False, path_type=str),
              help="Another data directory to train on as well (repeatable), e.g. 'distill-data text' output.")
@click.option("--method", type=click.Choice(["fastmtp", "mtp-d", "eagle", "medusa"]), default="fastmtp",
              show_default=True,
              help="fastmtp: shared layer over K recursive steps, CE; mtp-d: plus KL(target || head) on top-k "
                   "logits; eagle: the MTP block as an EAGLE drafter, plus smooth-L1 regression of its "
                   "predicted feature onto the target's post-norm state; medusa: TARGET's Medusa heads "
                   "(convert --heads medusa), per-head CE + KL.")
@click.option("--feature-weight", type=float, default=1.0, show_default=True,
              help="eagle: weight of the feature regression.")
@click.option("--steps", type=int, default=200, show_default=True, help="Optimizer steps.")
@click.option("-K", "--n-predict", type=int, default=3, show_default=True, help="Recursive steps per position.")
@click.option("--beta", type=float, default=0.6, show_default=True,
              help="Step weights alpha_k proportional to beta^(k-1).")
@click.option("--kl-weight", type=float, default=1.0, show_default=True,
              help="mtp-d, eagle and medusa: weight of the KL term (0 = CE only).")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per step and process.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Window length in tokens.")
@click.option("--lr", type=float, default=1e-4, show_default=True)
@click.option("--warmup", type=int, default=20, show_default=True, help="Warmup steps (then cosine decay).")
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--response-only", is_flag=True, help="Loss only on response tokens (not the prompt).")
@click.option("--train-vocab", type=int, default=0, show_default=True,
              help="MTP methods: softmax over the N most frequent tokens of DATA only (the draft vocabulary "
                   "'compress-vocab -N' selects); 0 = the whole vocabulary.")
@click.option("--chain-attention", is_flag=True,
              help="MTP methods, one shared layer: draft step k attends to what the runtime's MTP cache holds "
                   "when it runs (the target's states up to the chain's start, then the chain's own steps), "
                   "not to step k at earlier positions. K(K+1)/2 layer passes per window instead of K.")
@click.option("--init-heads", default=None, type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="MTP methods: start from this GGUF's MTP block (a heads file such as the shipped "
                   "benchmarks/results/*_heads_*.gguf, or a full file) instead of TARGET's: continue a "
                   "training with more data or steps.")
@click.option("--save-every", type=int, default=100, show_default=True, help="Checkpoint interval in steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-resume", is_flag=True, help="Start over even if OUT holds checkpoints.")
@click.option("--cpu", is_flag=True, help="Train on the CPU even if a GPU is there.")
@click.option("--mixed-precision", type=click.Choice(["no", "fp16", "bf16"]), default="no", show_default=True)
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def finetune_cmd(data, target, out, more_data, method, feature_weight, steps, n_predict, beta, kl_weight, batch_size, seq_len, lr, warmup,
                 weight_decay, response_only, train_vocab, chain_attention, init_heads, save_every, seed, no_resume,
                 cpu, mixed_precision, quiet):
    """Fine-tune TARGET's MTP heads on DATA (from distill-data) with FastMTP,
    MTP-D or as an EAGLE drafter (--method eagle: plus regression of its
    predicted feature onto the target's), or its Medusa heads (--method
    medusa: head k reads the target's hidden state h_t and learns token
    t+k+2, weighted beta^k); the heads are
    read from TARGET, its embedding and LM head stay
    frozen. Writes OUT/heads.safetensors, OUT/heads.json, OUT/train_log.jsonl
    and checkpoints (rerun to resume). Several GPUs:
    accelerate launch -m gguf_mtp.train DATA TARGET --out OUT ..."""
    from ..train.finetune import FinetuneConfig, finetune

    try:
        cfg = FinetuneConfig(data=[data, *more_data] if more_data else data, target=target, out=out,
                             method=method, feature_weight=feature_weight, steps=steps, n_predict=n_predict,
                             beta=beta, kl_weight=kl_weight, batch_size=batch_size, seq_len=seq_len, lr=lr,
                             warmup_steps=warmup, weight_decay=weight_decay, response_only=response_only,
                             train_vocab=train_vocab, chain_attention=chain_attention, init_heads=init_heads,
                             save_every=save_every, seed=seed, resume=not no_resume, cpu=cpu,
                             mixed_precision=mixed_precision, progress=not quiet)
        r = finetune(cfg)
    except (ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    last = r.last
    acc = "/".join(f"{a:.3f}" for a in last.get("acc", []))
    click.echo(f"{r.out}: {r.steps} steps (resumed at {r.resumed_from}); last loss "
               f"{last.get('loss', float('nan')):.4f}, accuracy per step {acc}")


@click.command("stitch")
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("heads", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--head-type", type=click.Choice(["f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1"]),
              default=None, help="Type of the stitched head matrices (default: each tensor's type in TARGET).")
@click.option("--json", "as_json", is_flag=True, help="Print what was replaced as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def stitch_cmd(target, heads, out, head_type, as_json, quiet):
    """Write trained HEADS (a finetune output directory) into TARGET as OUT,
    without re-converting the trunk: key/values and trunk tensors are copied,
    the MTP tensors replaced (the converter's transforms applied again, e.g.
    Qwen's 1 + w norms or DeepSeek's kv_b split; matrices quantized to
    --head-type)."""
    from ..heads.stitch import stitch

    try:
        r = stitch(target, heads, out, head_type=head_type, progress=not quiet)
    except (ValueError, OSError) as e:       # StitchError, HeadsError, GGUFError; unreadable files
        raise click.ClickException(str(e))
    if as_json:
        click.echo(json.dumps({"path": str(r.path), "types": r.types}, indent=2))
    else:
        kinds = sorted(set(r.types.values()))
        click.echo(f"{r.path}: {len(r.replaced)} MTP tensors replaced (matrices at {', '.join(kinds)})")


@click.command("compress-vocab")
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("-N", "--size", type=int, required=True,
              help="Tokens in the draft vocabulary (e.g. 4096 or 16384; the full vocabulary is 151,936 "
                   "for Qwen).")
@click.option("--responses-only", is_flag=True, help="Count only response tokens, not the prompts.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
def compress_vocab_cmd(target, data, out, size, responses_only, quiet):
    """Let the MTP head of TARGET draft over the SIZE most frequent tokens of
    self-distilled DATA (from 'gguf-mtp distill-data'), writing OUT.

    Each draft step then computes SIZE logits instead of the whole vocabulary
    (the LM head dominates a small model's draft step). Verification stays
    over the full vocabulary, so output is unchanged; only tokens outside the
    set can no longer be drafted. The rows are copied from TARGET's head at
    their stored type; the token ids go into the key gguf_mtp.draft_vocab.
    Running it on an already compressed file replaces the set."""
    from ..train.vocab import compress_vocab

    try:
        r = compress_vocab(target, data, out, size, responses_only=responses_only, progress=not quiet)
    except (ValueError, OSError) as e:          # VocabError, GGUFError, a bad manifest or shard; unreadable files
        raise click.ClickException(str(e))
    click.echo(f"{r.path}: draft vocabulary of {r.size} tokens covering {r.coverage:.1%} of the data's tokens "
               f"(MTP blocks {', '.join(map(str, r.blocks))})")


@click.command("retrofit")
@click.argument("target", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--steps", type=int, default=300, show_default=True, help="FastMTP optimizer steps.")
@click.option("--prompts", default=None, type=click.Path(exists=True, path_type=str),
              help="Prompt file (.jsonl / .txt) or directory (default: the prompt set shipped with gguf-mtp).")
@click.option("--max-prompts", type=int, default=256, show_default=True, help="Distill the first N prompts.")
@click.option("-n", "--max-tokens", type=int, default=128, show_default=True, help="Response tokens per prompt.")
@click.option("--lr", type=float, default=3e-4, show_default=True)
@click.option("--batch-size", type=int, default=8, show_default=True, help="Windows per step.")
@click.option("--seq-len", type=int, default=128, show_default=True, help="Window length in tokens.")
@click.option("--head-type", type=click.Choice(["f32", "f16", "bf16", "q8_0", "q5_0", "q5_1", "q4_0", "q4_1"]),
              default="q8_0", show_default=True,
              help="Type of the MTP block's matrices (F16 where a row does not fit the type's blocks).")
@click.option("--work", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Keep the stages here (init.gguf, data/, heads/); rerunning reuses finished stages. "
                   "Default: a temporary directory, removed at the end.")
@click.option("--train-vocab", type=int, default=0, show_default=True,
              help="Train over the N most frequent distilled tokens only (0 = the whole vocabulary); "
                   "for large vocabularies (Gemma 3: 262,144), with 'compress-vocab -N' for drafting.")
@click.option("--draft-vocab", type=int, default=8192, show_default=True,
              help="OUT's head drafts over the N most frequent distilled tokens (compress-vocab: a draft step "
                   "computes N logits, not the whole vocabulary; verification, hence the output, is unchanged); "
                   "0 = the full head. With --work the full-head file is kept there as retrofit-full.gguf.")
@click.option("--text-windows", type=int, default=0, show_default=True,
              help="Also have TARGET read N windows of this machine's text (distill-data text, ~1,000 tokens/s "
                   "on a 2-core CPU for a 135M model) and train on both: heads that learn the target, not the "
                   "prompts. 0 = its answers to the prompts only.")
@click.option("--text-rounds", type=int, default=1, show_default=True,
              help="Record --text-windows windows this many times, each with its own documents and places "
                   "(seed, seed + 1, ...): more text without re-recording what a run already has.")
@click.option("--answers-weight", type=int, default=1, show_default=True,
              help="Sample the windows of TARGET's answers N times per epoch against the text's once: the "
                   "answers are what a draft meets at run time, and a small share of the tokens next to text.")
@click.option("--method", type=click.Choice(["fastmtp", "mtp-d"]), default="fastmtp", show_default=True,
              help="fastmtp: CE over K recursive steps; mtp-d: plus KL(target || head) on the target's top-k.")
@click.option("--chain-attention", is_flag=True,
              help="Draft step k attends to what the runtime's MTP cache holds when it runs (finetune "
                   "--chain-attention).")
@click.option("--init-heads", default=None, type=click.Path(exists=True, dir_okay=False, path_type=str),
              help="Train from this GGUF's MTP block (a heads file, or a retrofitted file) instead of the "
                   "initial block: continue a training with more text or steps.")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads for distilling (default: all cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars.")
def retrofit_cmd(target, out, steps, prompts, max_prompts, max_tokens, lr, batch_size, seq_len, head_type, work,
                 train_vocab, draft_vocab, text_windows, text_rounds, answers_weight, method, chain_attention,
                 init_heads, threads, quiet):
    """Give a dense llama / qwen2 / qwen3 / gemma3 GGUF without MTP layers a trained
    MTP head, writing OUT. TARGET's trunk is copied unchanged; one MTP block
    is appended (initialised from the trunk's last layer), trained with
    FastMTP on TARGET's own answers (distill-data at its quantization) and
    stitched in. Stages: init -> distill-data -> finetune -> stitch."""
    from ..heads.mtp import HeadsError
    from ..heads.stitch import StitchError
    from ..train.retrofit import RetrofitConfig, RetrofitError, retrofit

    cfg = RetrofitConfig(target=target, out=out, work=work, prompts=prompts, max_prompts=max_prompts,
                         max_tokens=max_tokens, steps=steps, lr=lr, batch_size=batch_size, seq_len=seq_len,
                         head_type=head_type, train_vocab=train_vocab, draft_vocab=draft_vocab,
                         text_windows=text_windows, text_rounds=text_rounds, answers_weight=answers_weight,
                         method=method, chain_attention=chain_attention, init_heads=init_heads, n_threads=threads,
                         progress=not quiet)
    try:
        r = retrofit(cfg)
    except (RetrofitError, HeadsError, StitchError, ValueError, FileNotFoundError) as e:
        raise click.ClickException(str(e))
    acc = "/".join(f"{a:.3f}" for a in r.last.get("acc", []))
    reused = f"; reused {', '.join(r.reused)}" if r.reused else ""
    click.echo(f"{r.path}: MTP block trained on {r.n_sequences} sequences ({r.n_tokens} tokens), {r.steps} steps, "
               f"last accuracy per step {acc or 'n/a'}{reused}")


COMMANDS = (distill_data, finetune_cmd, stitch_cmd, compress_vocab_cmd, retrofit_cmd)
