"""EAGLE recycled from the MTP layer, measured: recycled-init vs scratch-init
tau against training steps, then tau and tokens/s of EAGLE (chain and
EAGLE-2 dynamic tree) vs the native MTP chain vs FastMTP vs Medusa on the
default model at two quant levels (q8_0, and a q4_0 trunk with q8_0 heads).

    python benchmarks/eagle_compare.py [--steps 0,50,100,200] [--threads 2]

Stages (in --work, reused when present):
  1. self-distilled data from the q8_0 default model (distill-data);
  2. per init: make_eagle (gguf_mtp.heads.eagle), finetune --method eagle extended step
     by step (constant learning rate after warmup), stitched, tau measured
     (chain, draft 3, greedy, lossless checked) at every step count;
  3. FastMTP (--method fastmtp) and Medusa (recycled, --method medusa) trained
     for the last step count on the same data;
  4. every drafter's heads stitched onto the q8_0 file and onto a q4_0 trunk
     (llama.cpp quantizer from f16, heads kept q8_0), all with a 4,096-token
     compressed draft vocabulary (compress-vocab), then tokens/s and tau
     against plain decoding of the same file in the same process, median of
     --repeats.

Writes results/eagle_compare.json and results/eagle_recycling.png.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def train(cfg_kw, work, name, target, steps):
    from gguf_mtp.train.finetune import FinetuneConfig, finetune

    return finetune(FinetuneConfig(target=str(target), out=str(work / name), steps=steps, save_every=steps,
                                   warmup_steps=10, min_lr_ratio=1.0, cpu=True, resume=True, progress=True,
                                   **cfg_kw))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train-prompts", type=int, default=192)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--steps", default="0,50,100,200")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--medusa-lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--draft-vocab", type=int, default=4096)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "gguf-mtp" / "bench-eagle"))
    ap.add_argument("--out", default=str(HERE / "results" / "eagle_compare.json"))
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from common import measure_speed, measure_tau, plot_tau_curves

    from gguf_mtp.convert.quantize import quantize
    from gguf_mtp.heads.eagle import make_eagle, set_metadata
    from gguf_mtp.heads.medusa import init_recycled, read_heads, write_heads
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.models.default import DEFAULT_PROMPTS, default_gguf
    from gguf_mtp.runtime import DRAFTERS
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts
    from gguf_mtp.train.vocab import compress_vocab

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    steps = sorted({int(s) for s in a.steps.split(",")})
    q8 = default_gguf("q8_0")
    shipped = load_prompts(DEFAULT_PROMPTS_DIR)
    eval_prompts = list(DEFAULT_PROMPTS) + shipped[400:404]
    res = {"settings": vars(a), "eval_prompts": len(eval_prompts), "curves": {}}
    common = {"data": str(work / "data"), "batch_size": a.batch_size, "seq_len": a.seq_len}

    t = time.time()
    d = distill(DistillConfig(target=str(q8), prompts=str(DEFAULT_PROMPTS_DIR), out=str(work / "data"),
                              max_tokens=a.max_tokens, max_prompts=a.train_prompts, shard_size=32,
                              n_threads=a.threads, progress=True))
    res["distill"] = {"sequences": d.n_sequences, "tokens": d.n_tokens, "seconds": time.time() - t}

    # 1. the recycling curve
    final = {}
    for init in ("recycled", "scratch"):
        start = work / f"eagle-{init}-start.gguf"
        if not start.exists():
            make_eagle(q8, start, init, seed=0)
        curve = []
        for s in steps:
            t = time.time()
            measured = start
            if s:
                measured = work / f"eagle-{init}-{s}.gguf"
                if not measured.exists():                      # (reused when present)
                    train({**common, "method": "eagle", "lr": a.lr}, work, f"eagle-{init}-heads", start, s)
                    stitch(start, work / f"eagle-{init}-heads", measured, progress=False)
            m = measure_tau(measured, eval_prompts, a.eval_tokens, a.threads)
            curve.append({"steps": s, **m, "seconds": time.time() - t})
            print(f"eagle {init:9s} steps {s:4d}: tau {m['tau']:.3f} acc "
                  + "/".join(f"{x:.2f}" for x in m["acceptance_per_position"]) + f" lossless={m['lossless']}",
                  flush=True)
            final[init] = measured
        res["curves"][init] = curve
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    plot_tau_curves(res["curves"], Path(a.out).parent / "eagle_recycling.png", label="EAGLE, {init} init",
                    title="EAGLE drafter on the default model (q8_0)",
                    ylabel="tau (tokens per target pass), chain draft 3")

    # 2. the other drafters, same data and steps
    last = steps[-1]
    train({**common, "method": "fastmtp", "lr": a.lr}, work, "fastmtp-heads", q8, last)
    medusa_start = work / "medusa-start.gguf"
    if not medusa_start.exists():
        write_heads(q8, init_recycled(q8, 3), medusa_start, head_type="q8_0", progress=False)
    train({**common, "method": "medusa", "lr": a.medusa_lr}, work, "medusa-heads", medusa_start, last)

    # 3. two quant levels, every drafter's heads on each trunk, compressed draft vocabulary
    q4 = work / "default-q4_0.gguf"
    if not q4.exists():
        quantize(default_gguf("f16"), q4, "q4_0", head_type="q8_0")
    best = max(("recycled", "scratch"), key=lambda i: res["curves"][i][-1]["tau"])
    files = {}
    for quant, trunk in (("q8_0", q8), ("q4_0", q4)):
        v = {"native MTP": trunk}
        v["FastMTP"] = work / f"fastmtp-{quant}.gguf"
        stitch(trunk, work / "fastmtp-heads", v["FastMTP"], head_type="q8_0", progress=False)
        eagle = work / f"eagle-{quant}.gguf"
        stitch(trunk, work / f"eagle-{best}-heads", work / "tmp-eagle.gguf", head_type="q8_0", progress=False)
        set_metadata(work / "tmp-eagle.gguf", eagle, "trained")
        v["EAGLE"] = eagle
        v["Medusa"] = work / f"medusa-{quant}.gguf"
        stitch(medusa_start, work / "medusa-heads", work / "tmp-medusa.gguf", progress=False)
        write_heads(trunk, read_heads(work / "tmp-medusa.gguf"), v["Medusa"], head_type="q8_0", init="trained",
                    progress=False)
        for name, path in v.items():
            comp = work / f"{name.replace(' ', '_')}-{quant}-n{a.draft_vocab}.gguf"
            compress_vocab(path, work / "data", comp, a.draft_vocab, progress=False)
            files[(quant, name)] = comp
    runs = {}
    for (quant, name), path in files.items():
        drafters = {"native MTP": ["mtp"], "FastMTP": ["mtp"], "EAGLE": ["mtp"] + (["eagle"] if "eagle" in DRAFTERS
                                                                                  else []),
                    "Medusa": ["medusa"]}[name]
        for drafter in drafters:
            kind = {"eagle": "EAGLE-2 tree", "medusa": "tree"}.get(drafter, "chain")
            label = f"{quant} | {name} ({kind})"
            runs[label] = (path, drafter)
    res["speed"] = measure_speed(runs, eval_prompts, a.eval_tokens, a.threads, a.repeats)
    res["eagle_best_init"] = best
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    for label, r in res["speed"].items():
        print(f"{label:45s} tau {r['tau']:.2f}  {r['tokens_per_s']:.0f} vs plain {r['plain_tokens_per_s']:.0f} "
              f"tok/s ({r['speedup']:.2f}x)")


if __name__ == "__main__":
    main()
