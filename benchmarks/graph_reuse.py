"""What a change of batch shape costs a pass, and how often the decode loop
runs a kept graph (patch 0014).

    python benchmarks/graph_reuse.py                     # SmolLM2-135M Q4_1, 2 threads
    python benchmarks/graph_reuse.py --gguf model.gguf --rows 3 --repeats 9

Three kinds of blocks, interleaved in one process and repeated (median and
min-max over the repeats): 1-row passes alone, ``--rows``-row passes alone, and
the two taking turns, every pass at the same position after a prompt (rolled
back after each). With one graph per context (llama.cpp as vendored) each pass
of the alternating block rebuilds its graph; with kept graphs neither does.
Then plain, n-gram and MTP generations (when the file has an MTP head) report
how many graph runs used a kept graph (``llama_perf_context``'s ``n_reused``,
prefill chunks included), for the target context and the MTP context.

To compare two runtimes, run this once per runtime: a cached wheel unpacked
with ``python -m zipfile -e WHEEL DIR`` is imported first with ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _block(eng, pos: int, shapes: list[int], passes: int) -> dict[int, float]:
    """Median seconds per pass of each shape over ``passes`` rounds of ``shapes``."""
    times: dict[int, list[float]] = {n: [] for n in shapes}
    for _ in range(passes):
        for n in shapes:
            t = time.perf_counter()
            eng.target_decode(list(range(500, 500 + n)), pos, [True] * n)
            eng.target_truncate(pos)
            times[n].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def _spread(xs: list[float]) -> str:
    return f"{1e3 * statistics.median(xs):.2f} ms [{1e3 * min(xs):.2f}-{1e3 * max(xs):.2f}]"


def main() -> int:
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate
    from gguf_mtp.bench.check import heldout_prompts

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", default=None, help="model (default: SmolLM2-135M-Instruct Q4_1 with the shipped heads grafted)")
    ap.add_argument("--rows", type=int, default=2, help="the other batch size [default: 2]")
    ap.add_argument("--context", type=int, default=160, help="tokens before the timed passes [default: 160]")
    ap.add_argument("--passes", type=int, default=15, help="passes of each shape per block [default: 15]")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.gguf is None:
        from common import smollm2_with_heads
        from gguf_mtp.upstream import cache_dir

        a.gguf = str(smollm2_with_heads(cache_dir() / "bench"))
    n = a.rows
    with Engine(a.gguf, RuntimeOptions(n_threads=a.threads, exact=True, n_ctx=1024)) as eng:
        eng.greedy_target = True
        prompt = [int(t) % eng.n_vocab for t in range(100, 100 + a.context)]
        eng.target_decode(prompt, 0, [False] * (a.context - 1) + [True], prefill=True)
        pos = a.context
        blocks = {"1 alone": [1], f"{n} alone": [n], f"1 and {n} in turn": [1, n]}
        for shapes in blocks.values():                 # warm-up
            _block(eng, pos, shapes, 2)
        got: dict[str, dict[int, list[float]]] = {k: {s: [] for s in v} for k, v in blocks.items()}
        for _ in range(a.repeats):
            for name, shapes in blocks.items():
                for s, t in _block(eng, pos, shapes, a.passes).items():
                    got[name][s].append(t)
        eng.greedy_target = False
        L = eng.L
        loops = [("plain", "none", 0), ("n-gram K=1", "ngram", 1)]
        if eng.has_mtp:
            loops += [("MTP K=1", "mtp", 1), ("MTP K=3", "mtp", 3)]
        reuse = {}
        for label, drafter, k in loops:
            r = [0, 0, 0]
            for p in heldout_prompts(3):
                t0 = L.llama_perf_context(eng.ctx).n_reused
                m0 = L.llama_perf_context(eng.mtp_ctx).n_reused if eng.mtp_ctx else 0
                g = generate(eng, p, 64, drafter=drafter, draft=k)
                r[0] += L.llama_perf_context(eng.ctx).n_reused - t0
                r[1] += g.stats.target_passes
                r[2] += (L.llama_perf_context(eng.mtp_ctx).n_reused - m0) if eng.mtp_ctx else 0
            reuse[label] = {"target_reused": r[0], "target_passes": r[1], "mtp_reused": r[2]}
    if a.json:
        print(json.dumps({"gguf": a.gguf, "passes": {k: {str(s): v for s, v in d.items()} for k, d in got.items()},
                          "loops": reuse}, indent=1))
        return 0
    print(f"{a.gguf}, {a.threads} threads, {a.context}-token context; median [min-max] of {a.repeats} blocks")
    print("| block | 1-row pass | " + f"{n}-row pass |")
    print("|---|---|---|")
    for name, d in got.items():
        cells = [_spread(d[s]) if s in d else "" for s in (1, n)]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print()
    # llama.cpp counts every graph run on a kept graph, prefill chunks included: the target
    # column can exceed the decode passes by the prompts' chunks
    print("| generation (3 prompts x 64 tokens) | target: runs on a kept graph / decode passes "
          "| MTP context: runs on a kept graph |")
    print("|---|---|---|")
    for label, r in reuse.items():
        print(f"| {label} | {r['target_reused']} / {r['target_passes']} | {r['mtp_reused']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
