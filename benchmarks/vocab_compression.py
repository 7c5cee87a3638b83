"""Vocabulary-compressed drafting on the default model: tau, acceptance per
position, draft cost and decode tokens/s for several draft-vocabulary sizes N,
against the full 151,936-token head and plain decoding, measured in llama.cpp.

    python benchmarks/vocab_compression.py [--sizes 1024,4096,16384] [--heads HEADS_DIR] [--out results/x.json]

Stages: distill-data (the target answers the first --train-prompts shipped
prompts) -> compress-vocab -N for each size. ``--heads`` (a finetune output
directory) stitches fine-tuned heads in first, to measure compression on top
of FastMTP. Evaluation prompts are not among the distilled ones; every
speculative generation is checked against plain greedy decoding. Decode
speed is the median of --repeats runs per prompt; run on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path


def measure(path, prompts, n_tokens, threads, repeats, draft):
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate
    from gguf_mtp.runtime.loop import acceptance_per_position

    out = {}
    with Engine(path, RuntimeOptions(n_ctx=1024, n_threads=threads)) as eng:
        for drafter, k in (("none", 0), ("mtp", draft)):
            drafted, accepted, produced, passes, speeds, draft_s, lossless = [], [], 0, 0, [], 0.0, True
            for p in prompts:
                runs = [generate(eng, p, n_tokens, drafter=drafter, draft=k) for _ in range(repeats)]
                plain = generate(eng, p, n_tokens, drafter="none", draft=0) if drafter != "none" else runs[0]
                g = runs[0]
                lossless &= all(r.tokens == plain.tokens for r in runs)
                speeds.append(statistics.median(r.stats.tokens_per_s for r in runs))
                drafted += g.stats.drafted
                accepted += g.stats.accepted
                produced += g.stats.n_generated - 1
                passes += g.stats.target_passes
                draft_s += g.stats.draft_s
            out[drafter] = {"tokens_per_s": statistics.mean(speeds), "tau": produced / max(1, passes),
                            "lossless": lossless}
            if drafter == "mtp":
                out[drafter].update(
                    acceptance_per_position=acceptance_per_position(drafted, accepted, draft),
                    acceptance_rate=sum(accepted) / max(1, sum(drafted)),
                    draft_ms_per_token=1000 * draft_s / max(1, sum(drafted)))
    out["speedup"] = out["mtp"]["tokens_per_s"] / out["none"]["tokens_per_s"]
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outtype", default="q8_0")
    ap.add_argument("--sizes", default="1024,4096,16384")
    ap.add_argument("--heads", default=None, help="finetune output directory to stitch in first")
    ap.add_argument("--train-prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--draft", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "vocab_compression_default_q8_0.json"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

    from gguf_mtp.models.default import DEFAULT_PROMPTS, default_gguf
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts
    from gguf_mtp.train.vocab import compress_vocab

    work = Path(a.work or tempfile.mkdtemp(prefix="gguf-mtp-vocab-"))
    target = default_gguf(a.outtype)
    if a.heads:
        from gguf_mtp.heads.stitch import stitch

        target = stitch(target, a.heads, work / "stitched.gguf", head_type=a.outtype, progress=False).path
    eval_prompts = list(DEFAULT_PROMPTS) + load_prompts(DEFAULT_PROMPTS_DIR)[200:204]
    res = {"target": str(target.name), "settings": vars(a), "eval_prompts": len(eval_prompts), "runs": {}}

    t = time.time()
    d = distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(work / "data"),
                              max_tokens=a.max_tokens, max_prompts=a.train_prompts, shard_size=16,
                              n_threads=a.threads, progress=False))
    res["distill"] = {"sequences": d.n_sequences, "tokens": d.n_tokens, "seconds": time.time() - t}

    res["runs"]["full"] = measure(target, eval_prompts, a.eval_tokens, a.threads, a.repeats, a.draft)
    print("full", json.dumps(res["runs"]["full"]), flush=True)
    for n in (int(x) for x in a.sizes.split(",")):
        c = compress_vocab(target, work / "data", work / f"draft{n}.gguf", n, progress=False)
        r = measure(c.path, eval_prompts, a.eval_tokens, a.threads, a.repeats, a.draft)
        r["coverage"] = c.coverage
        res["runs"][str(n)] = r
        print(n, json.dumps(r), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
