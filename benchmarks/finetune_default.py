"""tau and acceptance per draft position of the default model's MTP head,
before and after a short FastMTP fine-tune on self-distilled data, measured in
llama.cpp (gguf_mtp.runtime.generate, drafter="mtp", draft=3, greedy).

    python benchmarks/finetune_default.py [--train-prompts 32] [--steps 40] [--out results/x.json]

Stages: distill-data (the q8_0 target answers the first N code prompts of the
shipped set) -> finetune --method fastmtp -> stitch --head-type q8_0. The
evaluation prompts are the default model's demo prompts plus shipped prompts
that the fine-tune did not see. Every generation is also checked against plain
greedy decoding (lossless).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))


def measure(path, prompts, n_tokens, threads):
    from common import measure_tau

    m = measure_tau(path, prompts, n_tokens, threads)
    m.pop("tree_nodes_per_pass")
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--outtype", default="q8_0")
    ap.add_argument("--train-prompts", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--eval-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "finetune_default_q8_0.json"))
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.models.default import DEFAULT_PROMPTS, default_gguf
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import FinetuneConfig, finetune
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts

    work = Path(a.work or tempfile.mkdtemp(prefix="gguf-mtp-ft-"))
    target = default_gguf(a.outtype)
    shipped = load_prompts(DEFAULT_PROMPTS_DIR)
    eval_prompts = list(DEFAULT_PROMPTS) + shipped[200:204]     # not among the training prompts
    res = {"target": target.name, "settings": vars(a), "eval_prompts": len(eval_prompts)}

    t = time.time()
    res["before"] = measure(target, eval_prompts, a.eval_tokens, a.threads)
    res["before"]["seconds"] = time.time() - t
    t = time.time()
    d = distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(work / "data"),
                              max_tokens=a.max_tokens, max_prompts=a.train_prompts, shard_size=16,
                              n_threads=a.threads, progress=False))
    res["distill"] = {"sequences": d.n_sequences, "tokens": d.n_tokens, "seconds": time.time() - t}
    t = time.time()
    f = finetune(FinetuneConfig(data=str(work / "data"), target=str(target), out=str(work / "heads"),
                                method="fastmtp", steps=a.steps, batch_size=a.batch_size, seq_len=a.seq_len,
                                lr=a.lr, warmup_steps=max(1, a.steps // 10), save_every=0, cpu=True,
                                resume=False, progress=False))
    log = [json.loads(x) for x in (work / "heads" / "train_log.jsonl").read_text().splitlines()]
    k = max(1, len(log) // 5)
    mean = lambda rows, key: [sum(r[key][i] for r in rows) / len(rows) for i in range(3)]  # noqa: E731
    res["finetune"] = {"steps": f.steps, "seconds": time.time() - t,
                       "train_acc_first": mean(log[:k], "acc"), "train_acc_last": mean(log[-k:], "acc"),
                       "train_ce_first": mean(log[:k], "ce"), "train_ce_last": mean(log[-k:], "ce")}
    stitched = work / "stitched.gguf"
    stitch(target, work / "heads", stitched, head_type="q8_0", progress=False)
    t = time.time()
    res["after"] = measure(stitched, eval_prompts, a.eval_tokens, a.threads)
    res["after"]["seconds"] = time.time() - t
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
