"""Projection to real model sizes (a projection, not a measurement of real models).

    .venv/bin/python benchmarks/projection.py [--sizes 0.6b,1.7b,4b] [--archs qwen35,llama] [--quants q4_k_m,q8_0]

Builds random-weight models of real shapes (Qwen3 0.6B / 1.7B / 4B widths and
depths; a Qwen3.5-style hybrid with one MTP layer, and a dense llama with one
appended MTP layer), quantizes them, measures c(n), the MTP step and the LM
head's share of a pass on this machine (`gguf_mtp.bench.projection`), and
projects the speedup with the tokens per pass published for real MTP heads and
reached by our own trained heads. Random weights give speed, never acceptance.
Writes results/projection.json and results/projection.md. The models are cached
in <gguf-mtp cache>/projection (about 10 GB for the default set; --no-keep
removes each after measuring). --reproject measures nothing: it prices the
rows already in the file again with today's acceptance (after retraining a head).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def our_heads() -> dict:
    """τ(K) our own trained heads reach, from the benchmark files that measured them."""
    out = {}
    bench = HERE / "results" / "bench" / "default" / "results.json"
    if bench.is_file():
        rows = [r for r in json.loads(bench.read_text())["rows"] if r["drafter"] == "mtp" and r["quant"] == "q4_0"]
        taus = [round(r["tau"], 3) for r in sorted(rows, key=lambda r: r["draft"])]
        if taus:
            out["our default model head"] = {
                "tau": taus, "source": "benchmarks/RESULTS.md: the embedded default model's trained MTP head, "
                                       "native MTP at q4_0, K = 1..3 (τ pooled over the bench prompts)"}
    mix = HERE / "results" / "retrofit_mix_smollm2_round3.json"      # the run that made the shipped heads
    if mix.is_file():
        r = json.loads(mix.read_text())["runs"]["retrofit"]
        taus = [r[f"mtp{k}"]["tau"] for k in (1, 2, 3) if f"mtp{k}" in r]
        out["our SmolLM2 retrofit head"] = {
            "tau": taus, "source": "benchmarks/results/retrofit_mix_smollm2_round3.json: the shipped SmolLM2-135M "
                                   "retrofit head on held-out prompts, K = 1..3"}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.6b,1.7b,4b")
    ap.add_argument("--archs", default="qwen35,llama")
    ap.add_argument("--quants", default="q4_k_m,q8_0")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--work", default=None, help="model cache (default: <gguf-mtp cache>/projection)")
    ap.add_argument("--no-keep", action="store_true", help="delete each model after measuring it")
    ap.add_argument("--out", default=str(HERE / "results" / "projection.json"))
    ap.add_argument("--reproject", action="store_true",
                    help="measure nothing: price the rows of --out again with today's acceptance "
                         "(after retraining a head)")
    a = ap.parse_args()
    from gguf_mtp.bench import projection
    from gguf_mtp.bench.run import machine as machine_info

    acceptance = {**projection.PUBLISHED, **our_heads()}
    out = Path(a.out)
    if a.reproject:
        doc = projection.reproject(json.loads(out.read_text()), acceptance)
        out.write_text(json.dumps(doc, indent=1) + "\n")
        out.with_suffix(".md").write_text(projection.markdown(doc))
        print(projection.markdown(doc))
        return 0
    t0 = time.time()
    command = "python benchmarks/projection.py " + " ".join(sys.argv[1:])
    rows = []
    for size in a.sizes.split(","):          # smallest first; the files are rewritten after every size
        for arch in a.archs.split(","):
            rows += projection.run(acceptance, sizes=[size], archs=[arch], quants=a.quants.split(","),
                                   threads=a.threads, work=a.work, keep=not a.no_keep,
                                   log=lambda *x: print(*x, file=sys.stderr, flush=True))
            meta = {"command": command, "threads": a.threads, "machine": machine_info(),
                    "seconds": round(time.time() - t0), "python": platform.python_version()}
            doc = projection.to_json(rows, acceptance, meta)
            out.write_text(json.dumps(doc, indent=1) + "\n")
            out.with_suffix(".md").write_text(projection.markdown(doc))
    print(projection.markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
