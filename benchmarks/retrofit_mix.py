"""Retrofit MTP heads trained on the diverse prompt mix, evaluated on held-out prompts.

    python benchmarks/retrofit_mix.py --model smollm2 [--steps 900] [--save-heads PATH]
    python benchmarks/retrofit_mix.py --model gemma3 --train-vocab 16384

The SmolLM2 / Gemma 3 retrofit scripts train on the shipped Python-stdlib set;
this one trains on :mod:`gguf_mtp.train.prompt_mix` (C, C++, Rust, Go, Java,
JavaScript, TypeScript, Python, SQL, JSON, YAML, Markdown, HTML, chat turns,
letters, prose) and evaluates on ``gguf_mtp/data/heldout_prompts.json``, which
no training prompt shares a first 40 characters with. Shell scripts and the
``Question:/Answer:`` format are not in the mix at all: the report gives tau per
held-out kind, so kinds never seen sit next to kinds seen through other prompts.

Stages live in --work and a rerun reuses the finished ones (``gguf_mtp.train.retrofit``:
initial block -> distill-data, greedy, --max-tokens per prompt -> FastMTP
--steps, resumable from its checkpoints -> stitch). Then, on the retrofitted
file and its compressed-vocabulary copies: plain greedy decoding and MTP chains
of 1..--max-draft over every held-out prompt, each speculative output compared
with plain (``lossless``), tau (tokens per target pass) and acceptance per
draft position overall and per kind. CPU time of each stage is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

UNSEEN_KINDS = ("shell", "qa")      # not in the training mix in any form


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def evaluate(path, prompts, n_tokens, threads, max_draft):
    """tau and acceptance per position, overall and per held-out kind, for K = 1..max_draft."""
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate
    from gguf_mtp.runtime.loop import acceptance_per_position

    def summary(runs, k):
        drafted, accepted, produced, passes = [], [], 0, 0
        for g in runs:
            drafted += g.stats.drafted
            accepted += g.stats.accepted
            produced += g.stats.n_generated - 1
            passes += g.stats.target_passes
        if not passes:      # every prompt of the kind answered by end-of-text at once (SmolLM2 on Q&A)
            return {"tau": None, "acceptance_per_position": None, "tokens": 0}
        return {"tau": round(produced / passes, 3),
                "acceptance_per_position": [round(x, 3) for x in acceptance_per_position(drafted, accepted, k)],
                "tokens": produced}

    out = {}
    with Engine(path, RuntimeOptions(n_ctx=1024, n_threads=threads)) as eng:
        plain = {p["text"]: generate(eng, p["text"], n_tokens, drafter="none", draft=0) for p in prompts}
        out["plain_tokens_per_s"] = round(statistics.median(g.stats.tokens_per_s for g in plain.values()), 1)
        for k in range(1, max_draft + 1):
            runs = {p["text"]: generate(eng, p["text"], n_tokens, drafter="mtp", draft=k) for p in prompts}
            r = summary(runs.values(), k)
            r["lossless"] = all(runs[t].tokens == plain[t].tokens for t in runs)
            ratios = [runs[t].stats.tokens_per_s / plain[t].stats.tokens_per_s for t in runs
                      if plain[t].stats.tokens_per_s > 0]      # a prompt answered by end-of-text at once has none
            r["speedup_median"] = round(statistics.median(ratios), 3) if ratios else None
            kinds = sorted({p["kind"] for p in prompts})
            r["per_kind"] = {kind: summary([runs[p["text"]] for p in prompts if p["kind"] == kind], k)
                             for kind in kinds}
            seen = [runs[p["text"]] for p in prompts if p["kind"] not in UNSEEN_KINDS]
            unseen = [runs[p["text"]] for p in prompts if p["kind"] in UNSEEN_KINDS]
            r["seen_kinds"], r["unseen_kinds"] = summary(seen, k), summary(unseen, k)
            out[f"mtp{k}"] = r
            print(f"  {Path(path).name} K={k}: tau {r['tau']} acc/pos {r['acceptance_per_position']} "
                  f"lossless {r['lossless']} (seen kinds tau {r['seen_kinds']['tau']}, "
                  f"unseen {r['unseen_kinds']['tau']})", flush=True)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=("smollm2", "gemma3"), default="smollm2")
    ap.add_argument("--target", default=None, help="target GGUF (default: gguf-mtp models path MODEL)")
    ap.add_argument("--work", default=None, help="stage directory (default: <model cache>/retrofit-mix-work)")
    ap.add_argument("--mix", type=int, default=None, help="use the first N prompts of the mix (default: all)")
    ap.add_argument("--max-tokens", type=int, default=192, help="response tokens per training prompt")
    ap.add_argument("--steps", type=int, default=900)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=192)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--train-vocab", type=int, default=8192, help="0: train over the whole vocabulary")
    ap.add_argument("--text-windows", type=int, default=0,
                    help="also train on N windows of local text the target reads (distill-data text)")
    ap.add_argument("--text-rounds", type=int, default=1,
                    help="record --text-windows this many times, seeds 0, 1, ... (RetrofitConfig.text_rounds)")
    ap.add_argument("--answers-weight", type=int, default=1,
                    help="sample the answers' windows N times per epoch (RetrofitConfig.answers_weight)")
    ap.add_argument("--init-heads", default=None,
                    help="train from this heads file (e.g. the shipped one) instead of the initial block")
    ap.add_argument("--method", choices=("fastmtp", "mtp-d"), default="fastmtp")
    ap.add_argument("--chain-attention", action="store_true",
                    help="draft step k attends to what the runtime's MTP cache holds (FinetuneConfig.chain_attention)")
    ap.add_argument("--head-type", default="q8_0")
    ap.add_argument("--sizes", default="8192", help="compressed draft vocabularies to evaluate")
    ap.add_argument("--vocab-from-text", action="store_true",
                    help="pick the draft vocabularies from the recorded text as well as the answers (the default: "
                         "the answers only, as the recorded results did)")
    ap.add_argument("--eval-tokens", type=int, default=96)
    ap.add_argument("--max-draft", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="runtime and torch threads")
    ap.add_argument("--save-heads", default=None, help="write the trained MTP block as a heads-only GGUF here")
    ap.add_argument("--out", default=None, help="JSON (default: results/retrofit_mix_MODEL.json)")
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

    import torch

    torch.set_num_threads(a.threads)
    from retrofit_smollm2 import save_heads_gguf

    from gguf_mtp.bench.check import HELDOUT_FILE
    from gguf_mtp.models.fetch import gemma3_path, smollm2_path
    from gguf_mtp.train.prompt_mix import write_mix
    from gguf_mtp.train.retrofit import RetrofitConfig, retrofit
    from gguf_mtp.train.vocab import compress_vocab

    target = Path(a.target) if a.target else (smollm2_path() if a.model == "smollm2" else gemma3_path())
    if not target.is_file():
        raise SystemExit(f"{target}: absent; run gguf-mtp models fetch {a.model} first")
    work = Path(a.work) if a.work else target.parent / "retrofit-mix-work"
    work.mkdir(parents=True, exist_ok=True)
    out_path = Path(a.out) if a.out else HERE / "results" / f"retrofit_mix_{a.model}.json"
    prompts_file = work / "mix.jsonl"
    counts = write_mix(prompts_file, a.mix)
    heldout = json.loads(HELDOUT_FILE.read_text())["prompts"]

    res = {"target": target.name, "settings": vars(a), "train_mix": counts,
           "heldout": {k: sum(p["kind"] == k for p in heldout) for k in sorted({p["kind"] for p in heldout})},
           "unseen_kinds": list(UNSEEN_KINDS), "runs": {}}
    t, c = time.time(), cpu_s()
    # draft_vocab=0: the full head; the draft vocabularies are measured below
    r = retrofit(RetrofitConfig(target=str(target), out=str(work / "retrofit.gguf"), work=str(work / "stages"),
                                prompts=str(prompts_file), max_prompts=None, max_tokens=a.max_tokens, steps=a.steps,
                                lr=a.lr, batch_size=a.batch_size, seq_len=a.seq_len, head_type=a.head_type,
                                train_vocab=a.train_vocab, n_threads=a.threads, draft_vocab=0,
                                text_windows=a.text_windows, text_rounds=a.text_rounds, init_heads=a.init_heads,
                                answers_weight=a.answers_weight, method=a.method, chain_attention=a.chain_attention))
    res["retrofit"] = {"seconds": round(time.time() - t, 1), "cpu_seconds_this_run": round(cpu_s() - c, 1),
                       "reused_stages": r.reused, "sequences": r.n_sequences, "tokens": r.n_tokens, "steps": r.steps,
                       "last_step": r.last}
    log = work / "stages" / "heads" / "train_log.jsonl"
    if log.is_file():
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        every = max(1, len(lines) // 20)
        res["train_curve"] = [{"step": x["step"], "loss": round(x["loss"], 4), "acc": [round(v, 3) for v in x["acc"]]}
                              for x in lines if x["step"] % every == 0 or x["step"] == 1]
    print(json.dumps(res["retrofit"]), flush=True)
    if a.save_heads:
        p = save_heads_gguf(r.path, Path(a.save_heads))
        res["saved_heads"] = {"path": str(p), "bytes": p.stat().st_size}

    files = {"retrofit": r.path}
    counted = [work / "stages" / "data"]
    if a.vocab_from_text:      # the target's picks in every recorded round, with the answers' tokens
        counted += sorted((work / "stages").glob("text*"))
        res["vocab_counted_from"] = [d.name for d in counted]
    for n in (int(x) for x in a.sizes.split(",") if x):
        cv = compress_vocab(r.path, counted, work / f"retrofit-{n}.gguf", n, progress=False)
        files[f"retrofit, vocab {n}"] = cv.path
        res.setdefault("coverage", {})[str(n)] = cv.coverage
    for name, path in files.items():
        res["runs"][name] = evaluate(path, heldout, a.eval_tokens, a.threads, a.max_draft)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
