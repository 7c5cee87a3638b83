#!/usr/bin/env python
"""Train the Medusa heads that ship for the embedded default model
(``benchmarks/results/default_medusa_heads/``), the heads the Medusa lossless
tests and the full exactness check run, so that their accept path really runs.

    . .venv/bin/activate
    python tools/train_medusa_default.py                      # distil, train, measure, write the heads
    python tools/train_medusa_default.py --steps 50 --out /tmp/m   # a quick trial

What it does, in order (every step is the product's own API):

1. The default model at q8_0 with 3 recycled Medusa heads of one block each at
   q8_0 (``convert --heads medusa`` does the same).
2. Self-distillation (``distill-data``): the model's own greedy continuations
   of the shipped prompt set (``gguf_mtp/data/prompts``: standard-library code
   and docstring sentences, in the default model's training distribution),
   ``--max-tokens`` each, with its hidden states and top-32 logits.
3. ``finetune --method medusa``: head k reads the target's hidden state h_t and
   learns token t+k+2 (CE + KL to the target's next-position logits, weighted
   beta^k), the LM head frozen.
4. Stitch the heads into the q8_0 model and measure greedy Medusa drafting
   (default tree, draft 3) on the built-in held-out prompts (kept apart from
   the prompt set above): acceptance per draft position and tokens per pass,
   and that the output equals plain decoding. The numbers go to
   ``OUT/measured.json``.

``OUT`` keeps ``heads.safetensors``, ``heads.json``, ``train_log.jsonl`` and
``measured.json`` (a few hundred kB); the distilled data and checkpoints stay in
``--work``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "default_medusa_heads"))
    ap.add_argument("--work", default=None, help="distilled data and checkpoints (default: a temporary directory)")
    ap.add_argument("--max-tokens", type=int, default=256, help="distilled response tokens per prompt")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=128)
    args = ap.parse_args()

    import torch

    from gguf_mtp.heads.medusa import init_recycled, write_heads
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.models.default import default_gguf
    from gguf_mtp.train.distill import DistillConfig, distill
    from gguf_mtp.train.finetune import FinetuneConfig, finetune
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR

    torch.set_num_threads(args.threads)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="medusa-default-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    t0 = time.time()

    target = work / "medusa-q8_0.gguf"
    if not target.is_file():
        write_heads(default_gguf("q8_0"), init_recycled(default_gguf("f32"), args.heads, 1), target,
                    head_type="q8_0", progress=False)
    data = work / "data"
    d = distill(DistillConfig(target=str(target), prompts=str(DEFAULT_PROMPTS_DIR), out=str(data),
                              max_tokens=args.max_tokens, n_threads=args.threads))
    print(f"distilled {d.n_sequences} sequences, {d.n_tokens} tokens ({time.time() - t0:.0f} s)")

    heads = work / "heads"
    finetune(FinetuneConfig(data=str(data), target=str(target), out=str(heads), method="medusa",
                            steps=args.steps, n_predict=args.heads, batch_size=args.batch_size,
                            seq_len=args.seq_len, lr=args.lr, warmup_steps=min(50, args.steps // 10),
                            save_every=max(100, args.steps), cpu=True))
    print(f"trained {args.steps} steps ({time.time() - t0:.0f} s)")

    out.mkdir(parents=True, exist_ok=True)
    for name in ("heads.safetensors", "heads.json", "train_log.jsonl"):
        shutil.copy2(heads / name, out / name)
    stitched = work / "stitched.gguf"
    stitch(target, out, stitched, progress=False)
    measured = measure(stitched, args.eval_tokens, args.threads)
    measured.update(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                    distilled_sequences=d.n_sequences, distilled_tokens=d.n_tokens, max_tokens=args.max_tokens,
                    seconds=round(time.time() - t0))
    (out / "measured.json").write_text(json.dumps(measured, indent=1) + "\n")
    print(json.dumps(measured, indent=1))


def measure(path: Path, n_tokens: int, threads: int) -> dict:
    """Greedy Medusa drafting (default tree, draft 3) on the held-out prompts."""
    from gguf_mtp.bench.check import heldout_prompts
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate
    from gguf_mtp.runtime.drafters import MedusaDrafter
    from gguf_mtp.runtime.loop import acceptance_per_position

    dr = MedusaDrafter()
    drafted: list[int] = []
    accepted: list[int] = []
    exact = passes = gen = 0
    prompts = heldout_prompts()
    with Engine(path, dr.configure(RuntimeOptions(n_threads=threads))) as eng:
        for p in prompts:
            plain = generate(eng, p, n_tokens, drafter="none")
            spec = generate(eng, p, n_tokens, drafter=dr, draft=3)
            exact += spec.tokens == plain.tokens
            drafted += spec.stats.drafted
            accepted += spec.stats.accepted
            passes += spec.stats.target_passes
            gen += spec.stats.n_generated - 1
    return {"prompts": len(prompts), "tokens_per_prompt": n_tokens, "exact": exact,
            "acceptance_per_position": [round(a, 4) for a in acceptance_per_position(drafted, accepted)],
            "tokens_per_pass": round(gen / passes, 4)}


if __name__ == "__main__":
    main()
