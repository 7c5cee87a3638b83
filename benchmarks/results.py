"""RESULTS.md from one command: `gguf-mtp bench` on every real target, in one run.

    .venv/bin/python benchmarks/results.py [--repeats 5] [--n-tokens 64] [--only default,smollm2,gemma3,depth,projection]

Targets (each its own `gguf-mtp bench` run, same protocol: interleaved repeats,
median [IQR], best K chosen on half the prompts and reported on the other):

- ``default``: the embedded default model at f16 / q8_0 / q4_k_m / q4_0 with
  every drafter (heads trained by the bench in its work directory);
- ``smollm2``: SmolLM2-135M Q4_1 with the shipped retrofit heads grafted,
  ``--quants source`` (every drafter that applies);
- ``gemma3``: Gemma 3 270M Q4_K_M as published, ``--quants source`` (no MTP
  layer: the n-gram drafters and auto);
- ``depth``: SmolLM2 again at context depths 0 / 512 / 2048 (its context is
  8192), the drafters that need no training;
- ``projection``: ``benchmarks/projection.py``: random-weight models of real
  shapes (0.6B / 1.7B / 4B, hybrid and dense, Q4_K_M and Q8_0) measured here
  and projected with published MTP acceptance (a projection, labelled so).

Each run writes ``results/bench/<name>/`` (results.json, results.md, plots);
this script then writes ``benchmarks/RESULTS.md`` from those JSON files, so a
rerun of one target (``--only``) keeps the others.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "bench"


def runs(a) -> dict:
    """name -> (BenchConfig keyword arguments, target path or None, title)."""
    from common import smollm2_with_heads
    from gguf_mtp.models.fetch import GEMMA3

    common = dict(threads=a.threads, repeats=a.repeats, n_tokens=a.n_tokens, prompts_per_set=a.prompts_per_set)
    work = OUT / "work"
    work.mkdir(parents=True, exist_ok=True)
    smol = smollm2_with_heads(work)
    return {
        "default": (dict(common, drafts=(1, 2, 3), train_steps=150,
                         **({"quants": tuple(a.default_quants.split(","))} if a.default_quants else {})), None,
                    "Default model (5M-parameter Qwen3.5 hybrid with its MTP head)"
                    + (f", {a.default_quants}" if a.default_quants else ", every quant level")),
        "smollm2": (dict(common, quants=("source",), drafts=(1, 2, 3)), smol,
                    "SmolLM2-135M-Instruct Q4_1 + the shipped retrofit MTP head (q8_0)"),
        "gemma3": (dict(common, quants=("source",), drafts=(1, 2, 3)), GEMMA3.fetch(),
                   "Gemma 3 270M-it Q4_K_M as published (no MTP layer)"),
        "depth": (dict(common, quants=("source",), drafts=(1, 2), depths=(0, 512, 2048),
                       drafters=("none", "auto", "ngram", "mtp", "mtp-cv")), smol,
                  "SmolLM2-135M Q4_1 + heads against context depth"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n-tokens", type=int, default=64)
    ap.add_argument("--prompts-per-set", type=int, default=2)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--default-quants", default=None,
                    help="quant levels of the default model (comma-separated; default: the bench's four)")
    ap.add_argument("--only", default=None, help="comma-separated run names; the others keep their last results")
    ap.add_argument("--report-only", action="store_true", help="rewrite RESULTS.md from the JSON files, run nothing")
    a = ap.parse_args()
    from gguf_mtp.bench import BenchConfig, run_bench

    command = "python benchmarks/results.py " + " ".join(shlex.quote(x) for x in sys.argv[1:])
    table = runs(a)
    for name, (kw, target, _) in table.items():
        if a.report_only or (a.only and name not in a.only.split(",")):
            continue
        print(f"==> {name}", file=sys.stderr, flush=True)
        cfg = BenchConfig(target=str(target) if target else None, out=str(OUT / name), work=str(OUT / "work" / name),
                          **kw)
        res = run_bench(cfg, command=command)
        print(f"{name}: {res['seconds']:.0f} s", file=sys.stderr, flush=True)
    if not a.report_only and (not a.only or "projection" in a.only.split(",")):
        import subprocess

        print("==> projection", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, str(HERE / "projection.py"), "-t", str(a.threads)], check=True)
    (HERE / "RESULTS.md").write_text(write_results(table, command))
    print(f"wrote {HERE / 'RESULTS.md'}")
    return 0


def write_results(table: dict, command: str) -> str:
    from gguf_mtp.bench import report

    parts = ["# Benchmark results", "",
             "Made by one command; every table below is generated from the JSON files it writes "
             "(`results/bench/<run>/results.json`, each with the command that made it). How the bench "
             "measures: [docs/bench.md](../docs/bench.md).", "",
             "```", ".venv/bin/python benchmarks/results.py        # --only RUN,... reruns some, --report-only none",
             "```", ""]
    bound_rows = []
    for name, (_, _, title) in table.items():
        f = OUT / name / "results.json"
        if not f.is_file():
            parts += [f"## {title}", "", "Not run with this protocol yet."
                      + (" The previous run (2 repeats, best K as the maximum, before exact mode), with its "
                         "reading: [`results/bench/previous.md`](results/bench/previous.md)." if name == "default"
                         else ""), ""]
            continue
        res = json.loads(f.read_text())
        m, cfg = res["machine"], res["config"]
        rt = m.get("runtime", {})
        parts += [f"## {title}", "",
                  f"{m.get('cpu')}, {m.get('cores')} cores, {cfg['threads']} threads, runtime {rt.get('key')}"
                  f"{', GPU ' + m['gpu'] if m.get('gpu') else ''}; {len(res['prompts'])} prompts × "
                  f"{cfg['n_tokens']} tokens, {cfg['repeats']} interleaved repeats, {res['seconds']:.0f} s. "
                  f"Files: [`results/bench/{name}/`](results/bench/{name}/); made by `{res.get('command')}`.", ""]
        if name == "depth":
            parts += [report.depth_table(res), "", f"![speedup against depth](results/bench/{name}/speedup_vs_depth.png)",
                      ""]
            continue
        parts += ["Best K per drafter, chosen on half the prompts, speedup on the other half, median [IQR]:", "",
                  report.headline(res), ""]
        for d, why in res.get("skipped", {}).items():
            parts.append(f"- {report.NAMES.get(d, d)}: not measured ({why})")
        parts += ["", "<details><summary>every row</summary>", "", report.full_table(res), "", "</details>", "",
                  f"![measured vs bound](results/bench/{name}/speedup_vs_bound.png)", ""]
        bound_rows += [(name, r) for r in res["rows"] if r.get("bound")]
    if bound_rows:
        over = [(n, r) for n, r in bound_rows if r["speedup"] - r["bound"] > r["speedup_q3"] - r["speedup_q1"]]
        parts += ["## Measured against the bound", "",
                  f"{len(bound_rows)} rows with a bound; {len(over)} measure above it by more than their IQR"
                  + (":" if over else "."), ""]
        parts += [f"- {n}: {r['drafter']} K={r['draft']} {r['quant']}: {r['speedup']:.2f}× "
                  f"[{r['speedup_q1']:.2f}–{r['speedup_q3']:.2f}] vs bound {r['bound']:.2f}" for n, r in over]
    proj = HERE / "results" / "projection.json"
    if proj.is_file():
        from gguf_mtp.bench.projection import markdown

        doc = json.loads(proj.read_text())
        m = doc["meta"]
        parts += ["## Projection to real model sizes (a projection, not a measurement)", "",
                  "Random-weight models of real shapes (Qwen3 0.6B / 1.7B / 4B widths and depths, vocabulary "
                  "151,936, tied embeddings; *hybrid*: Qwen3.5-style, every 4th layer full attention, the others "
                  "gated delta-net, one MTP layer; *llama*: dense, one appended MTP layer), quantized with "
                  "llama.cpp's quantizer and timed here: c(n) and the MTP step d in 1-token passes, the LM head's "
                  "share of the bytes a pass reads. The projected speedup is the bound τ(K) / (c(K+1) + K·d) at "
                  "the best K, with τ published for real MTP heads or reached by our own; random weights give "
                  "speed, never acceptance. "
                  f"{m['machine'].get('cpu')}, {m['threads']} threads, {m['seconds']} s; made by `{m['command']}` "
                  "([`results/projection.json`](results/projection.json)).", "", markdown(doc)]
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    sys.exit(main())
