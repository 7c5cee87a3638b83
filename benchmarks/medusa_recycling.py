"""The recycling thesis, measured: Medusa heads initialised from the MTP layer
("recycled") against the Medusa paper's zero start ("scratch"), trained for
the same steps on the same self-distilled data, tau measured in llama.cpp.

    python benchmarks/medusa_recycling.py [--steps 0,25,50,100,200] [--threads 2]

Stages (in --work, reused when present):
  1. the default model at --outtype; self-distilled data: the target answers the
     first --train-prompts shipped prompts (gguf-mtp distill-data);
  2. per init: convert-equivalent heads (gguf_mtp.heads.medusa.init_recycled /
     init_scratch, K heads of one block, --head-type), then finetune --method
     medusa extended step by step (a constant learning rate after a short
     warmup, so "train to 50" is "train to 25, then 25 more"), stitched and
     measured at every step count of --steps;
  3. tau and acceptance per depth with the default static tree (draft 3,
     greedy) on the demo prompts plus shipped prompts the heads never saw,
     every generation checked against plain greedy decoding (lossless); the
     heads project onto the 4,096 most used tokens (compress-vocab: every
     token the default model ever trained; over the full vocabulary the
     never-trained rows have logit exactly 0 and outrank real candidates).
  4. tokens/s of the last heads against plain decoding and the native MTP
     head (same file, same 4,096-token draft vocabulary), same process,
     median of --repeats.

Writes results/medusa_recycling_<outtype>.json and .png (tau against steps).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--outtype", default="q8_0")
    ap.add_argument("--head-type", default="q8_0")
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--train-prompts", type=int, default=192)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--steps", default="0,25,50,100,200,400")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=96)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", default=str(Path.home() / ".cache" / "gguf-mtp" / "bench-medusa"))
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from common import measure_speed, measure_tau, plot_tau_curves

    from gguf_mtp.heads.medusa import init_recycled, init_scratch, write_heads
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.models.default import DEFAULT_PROMPTS, default_gguf
    from gguf_mtp.runtime.drafters import MEDUSA_TREE, MedusaDrafter
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import FinetuneConfig, finetune
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts
    from gguf_mtp.train.vocab import compress_vocab

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    out = Path(a.out or HERE / "results" / f"medusa_recycling_{a.outtype}.json")
    steps = sorted({int(s) for s in a.steps.split(",")})
    target = default_gguf(a.outtype)
    shipped = load_prompts(DEFAULT_PROMPTS_DIR)
    if a.train_prompts > 400:
        raise SystemExit("--train-prompts must leave shipped prompts 400+ for evaluation")
    eval_prompts = list(DEFAULT_PROMPTS) + shipped[400:404]
    res = {"target": target.name, "outtype": a.outtype, "settings": vars(a), "eval_prompts": len(eval_prompts),
           "tree": [list(p) for p in MEDUSA_TREE], "tree_nodes": len(MEDUSA_TREE), "curves": {}}

    t = time.time()
    d = distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(work / "data"),
                              max_tokens=a.max_tokens, max_prompts=a.train_prompts, shard_size=32,
                              n_threads=a.threads, progress=True))
    res["distill"] = {"sequences": d.n_sequences, "tokens": d.n_tokens, "seconds": time.time() - t}

    res["native_mtp_tau"] = measure_tau(target, eval_prompts, a.eval_tokens, a.threads)["tau"]
    for init in ("recycled", "scratch"):
        start = work / f"{init}-start.gguf"
        heads = init_recycled(target, a.heads) if init == "recycled" else init_scratch(_n_embd(target), a.heads)
        write_heads(target, heads, start, head_type=a.head_type, progress=False)
        curve = []
        for s in steps:
            t = time.time()
            if s == 0:
                measured = start
                train = {}
            elif (work / f"{init}-{s}.gguf").exists():          # reused stage
                measured, train = work / f"{init}-{s}.gguf", {}
            else:
                f = finetune(FinetuneConfig(data=str(work / "data"), target=str(start), out=str(work / f"{init}-heads"),
                                            method="medusa", steps=s, batch_size=a.batch_size, seq_len=a.seq_len,
                                            lr=a.lr, warmup_steps=10, min_lr_ratio=1.0, save_every=s, cpu=True,
                                            resume=True, progress=True))
                measured = work / f"{init}-{s}.gguf"
                stitch(start, work / f"{init}-heads", measured, head_type=a.head_type, progress=False)
                log = [json.loads(x) for x in (work / f"{init}-heads" / "train_log.jsonl").read_text().splitlines()]
                tail = log[-10:]
                train = {"train_acc": [statistics.mean(r["acc"][k] for r in tail) for k in range(a.heads)],
                         "train_ce": [statistics.mean(r["ce"][k] for r in tail) for k in range(a.heads)],
                         "resumed_from": f.resumed_from}
            # heads over the 4,096 most used tokens (all the default model ever trained): the full
            # vocabulary's never-trained rows have logit exactly 0 and would outrank real candidates
            comp = work / f"{init}-{s}-n4096.gguf"
            compress_vocab(measured, work / "data", comp, 4096, progress=False)
            m = measure_tau(comp, eval_prompts, a.eval_tokens, a.threads, drafter=MedusaDrafter())
            m["acceptance_per_depth"] = m.pop("acceptance_per_position")
            curve.append({"steps": s, **m, **train, "seconds": time.time() - t})
            print(f"{init:9s} steps {s:4d}: tau {m['tau']:.3f} acc/depth "
                  + "/".join(f"{x:.2f}" for x in m["acceptance_per_depth"]) + f" lossless={m['lossless']}",
                  flush=True)
        res["curves"][init] = curve
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")

    # speed: the better-trained heads with a compressed projection, vs plain and native MTP
    best = max(("recycled", "scratch"), key=lambda i: res["curves"][i][-1]["tau"])
    comp = work / f"{best}-{steps[-1]}-n4096.gguf"
    res["speed"] = measure_speed({f"medusa tree ({best}, N=4096)": (comp, "medusa"),
                                  f"medusa chain ({best}, N=4096)": (comp, MedusaDrafter("chain")),
                                  "native MTP chain (N=4096)": (comp, "mtp")},
                                 eval_prompts, a.eval_tokens, a.threads, a.repeats)
    out.write_text(json.dumps(res, indent=2) + "\n")
    plot_tau_curves(res["curves"], out.with_suffix(".png"), hline=(res["native_mtp_tau"], "native MTP chain (draft 3)"),
                    ylabel="tau (tokens per target pass)",
                    title=f"Medusa heads on the default model ({res['outtype']}), tree of {res['tree_nodes']} nodes, "
                          "draft depth 3")
    print(json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=2))


def _n_embd(path) -> int:
    from gguf_mtp.gguf.inspect import read_header

    kv = read_header(path).kv
    return int(kv[f"{kv['general.architecture']}.embedding_length"])


if __name__ == "__main__":
    main()
