"""Host overhead of the decoding loop: the share of decode time spent outside
llama.cpp's compute (Python, ctypes, batch filling, logit reads, cache roll-backs,
the drafters' own host work), for plain decoding and for speculative decoding.

    python benchmarks/overhead.py                        # default model q4_0 + draft vocabulary
    python benchmarks/overhead.py --gguf model.gguf --drafter mtp --draft 1 --repeats 7

Plain and speculative generations are interleaved on the same prompt; the
medians over repeats are reported with the spread (min-max). ``compute`` is the
time inside ``llama_process`` (the target's and the MTP head's passes; greedy passes pick
each row's winner in the graph, so that argmax is compute);
``rollback`` is the time inside ``llama_memory_seq_rm`` (counted as overhead).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from gguf_mtp.runtime import Engine, RuntimeOptions, generate

PROMPT = 'def read_config(path):\n    """Read a configuration file and return a dict."""\n'


def _timed_rollbacks(eng) -> list[float]:
    """Wrap the engine's cache roll-back so that its time is known (one list cell)."""
    box = [0.0]
    inner = eng._truncate

    def timed(mem, pos, what):
        t = time.perf_counter()
        try:
            inner(mem, pos, what)
        finally:
            box[0] += time.perf_counter() - t

    eng._truncate = timed
    return box


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None, help="model (default: the default model at q4_0 with its draft vocabulary)")
    ap.add_argument("--drafter", default="mtp")
    ap.add_argument("--draft", type=int, default=1)
    ap.add_argument("-n", "--n-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.gguf is None:
        from gguf_mtp.models.default import default_gguf

        a.gguf = str(default_gguf("q4_0", draft_vocab=True))
    rows: dict[str, list[dict]] = {"plain": [], "spec": []}
    with Engine(a.gguf, RuntimeOptions(n_threads=a.threads, n_ctx=1024)) as eng:
        rb = _timed_rollbacks(eng)
        runs = (("plain", "none", 0), ("spec", a.drafter, a.draft))
        for name, dr, k in runs:                        # warm-up, not counted
            generate(eng, PROMPT, 16, drafter=dr, draft=k)
        for _ in range(a.repeats):
            for name, dr, k in runs:
                rb[0] = 0.0
                g = generate(eng, PROMPT, a.n_tokens, drafter=dr, draft=k)
                s = g.stats
                rows[name].append({"tokens_per_s": s.tokens_per_s, "overhead_share": s.overhead_share,
                                   "overhead_us_per_pass": 1e6 * s.overhead_s / max(1, s.target_passes),
                                   "rollback_us_per_pass": 1e6 * rb[0] / max(1, s.target_passes),
                                   "tau": s.tau})
    out = {"gguf": a.gguf, "drafter": a.drafter, "draft": a.draft, "n_tokens": a.n_tokens, "repeats": a.repeats,
           "threads": a.threads, "runs": {}}
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        spread = {k: [min(r[k] for r in rs), max(r[k] for r in rs)] for k in rs[0]}
        out["runs"][name] = {"median": med, "min_max": spread}
    if a.json:
        print(json.dumps(out, indent=1))
        return 0
    print(f"{a.gguf}: {a.repeats} interleaved repeats x {a.n_tokens} tokens, {a.threads} threads")
    for name, r in out["runs"].items():
        m, s = r["median"], r["min_max"]
        label = "plain" if name == "plain" else f"{a.drafter} K={a.draft}"
        print(f"  {label:12s} {m['tokens_per_s']:7.0f} tok/s  tau {m['tau']:.2f}  overhead "
              f"{100 * m['overhead_share']:.1f}% [{100 * s['overhead_share'][0]:.1f}-{100 * s['overhead_share'][1]:.1f}]"
              f"  {m['overhead_us_per_pass']:.0f} us/pass (of which roll-backs {m['rollback_us_per_pass']:.0f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
