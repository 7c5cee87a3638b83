"""Does draft="auto" pay where drafting pays, and stay out of the way where it
does not?

For one GGUF: plain decoding, fixed draft lengths and draft="auto", greedy, on
fixed prompts, same process, back to back, median of repeats. Also prints the
measured batch-cost curve c(n) and the speed bound tau / (c(K+1) + K*d) that it
implies for each fixed K.

    python benchmarks/auto_draft.py                       # the embedded default model (q8_0)
    python benchmarks/auto_draft.py --gguf model.gguf --drafter ngram
    python benchmarks/auto_draft.py --random-head         # a head that accepts nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter
from gguf_mtp.runtime.autodraft import cost_model

PROMPTS = [
    'def read_config(path):\n    """Read a configuration file and return a dict."""\n',
    "class Stack:\n    def __init__(self):\n",
    "import os\nimport sys\n\n\ndef main(argv=None):\n",
]


def run(eng, drafter: str, draft, n: int) -> tuple[float, float, float]:
    toks = secs = passes = drafted = 0
    for p in PROMPTS:
        g = generate(eng, p, n, drafter=drafter, draft=draft)
        toks += g.stats.n_generated - 1
        secs += g.stats.decode_s
        passes += g.stats.target_passes
        drafted += sum(g.stats.drafted)
    return toks / secs, toks / passes, drafted / max(1, passes)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", type=Path, help="model (default: the embedded default model)")
    ap.add_argument("--outtype", default="q8_0", help="type of the default model (default q8_0)")
    ap.add_argument("--random-head", action="store_true", help="a tiny random Qwen3.5 whose head accepts nothing")
    ap.add_argument("--drafter", default="mtp", choices=["mtp", "ngram", "ngram-tree"])
    ap.add_argument("--drafts", default="1,2,3,4")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args(argv)

    if a.random_head:
        from gguf_mtp.convert.core import ConvertOptions, convert
        from gguf_mtp.testing.tiny_qwen35 import make_qwen35_checkpoint

        tmp = Path(tempfile.mkdtemp())
        path = tmp / "random.gguf"
        convert(make_qwen35_checkpoint(tmp / "ck", hidden_size=256, intermediate_size=768, head_dim=64),
                path, ConvertOptions(outtype="q8_0"))
    elif a.gguf:
        path = a.gguf
    else:
        from gguf_mtp.models.default import default_gguf

        path = default_gguf(outtype=a.outtype)

    ks = [int(k) for k in a.drafts.split(",")]
    rows = []
    opts = make_drafter(a.drafter).configure(RuntimeOptions(n_threads=a.threads, draft_max=max(8, *ks)))
    with Engine(path, opts) as eng:
        cm = cost_model(eng, n_max=max(8, *ks) + 1)
        dr = make_drafter(a.drafter)
        cm = cm.for_drafter(dr.step_cost(cm.draft), dr.max_branches)
        generate(eng, PROMPTS[0], 8, drafter=a.drafter, draft=1)  # warm-up
        configs = [("none", 0)] + [(a.drafter, k) for k in ks] + [(a.drafter, "auto")]
        for drafter, k in configs:
            speeds, taus, means = [], [], []
            for _ in range(a.repeats):
                s, t, m = run(eng, drafter, k, a.n)
                speeds.append(s)
                taus.append(t)
                means.append(m)
            rows.append({"drafter": drafter, "draft": k, "tok_s": statistics.median(speeds),
                         "tau": statistics.median(taus), "mean_draft": statistics.median(means),
                         "bound": cm.speedup_bound(statistics.median(taus), k) if isinstance(k, int) else None})
    base = rows[0]["tok_s"]
    print(f"model {path}")
    print("c(n) = " + " ".join(f"{c:.2f}" for c in cm.c) + f"   (1-token pass {cm.t1_s * 1e3:.2f} ms, "
          f"draft step {cm.draft:.2f})")
    print(f"{'drafter':>8} {'K':>5} {'tok/s':>8} {'speedup':>8} {'tau':>5} {'bound':>6} {'mean K':>7}")
    for r in rows:
        bound = f"{r['bound']:.2f}" if r["bound"] is not None else "-"
        print(f"{r['drafter']:>8} {str(r['draft']):>5} {r['tok_s']:8.1f} {r['tok_s'] / base:7.2f}x "
              f"{r['tau']:5.2f} {bound:>6} {r['mean_draft']:7.2f}")
    if a.json:
        a.json.write_text(json.dumps({"model": str(path), "cost": cm.__dict__, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
