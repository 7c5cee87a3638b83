"""What a target pass of 1..N rows costs, for one or more runtimes side by side:
the batch-cost curve c(n) that bounds every drafter's speedup.

    python benchmarks/pass_costs.py                                  # the installed runtime
    python benchmarks/pass_costs.py --runtime /tmp/rt_a --runtime -  # a cached wheel against it

Each (round, model, runtime) runs in its own process, the runtimes taking turns
within a round, so that a busy stretch of the machine falls on all of them; a
process measures greedy passes of 1..``--rows`` rows after a ``--context``-token
prompt with the cost model's own timing (each timed pass follows an untimed
pass of its size, median of ``--repeats``), in exact mode (the runtime's
default). The table gives the range over the rounds.

A runtime is ``-`` (the one installed in this environment) or a directory
holding a cached wheel unpacked with ``python -m zipfile -e WHEEL DIR``
(``~/.cache/gguf-mtp/wheels/<key>/``), imported first with ``PYTHONPATH=DIR``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def _worker(path: str, rows: int, repeats: int, context: int, threads: int) -> dict:
    import llama_cpp

    from gguf_mtp.runtime import Engine, RuntimeOptions
    from gguf_mtp.runtime.autodraft import measure_cost_model

    with Engine(path, RuntimeOptions(n_threads=threads, n_ctx=max(1024, 2 * context), load_mtp=False)) as eng:
        cm = measure_cost_model(eng, rows, repeats, context)
    return {"runtime": os.path.dirname(llama_cpp.__file__), "t_ms": [1e3 * cm.t1_s * c for c in cm.c]}


def _models(names: list[str]) -> dict[str, str]:
    from gguf_mtp.models.default import default_gguf
    from gguf_mtp.models.fetch import GEMMA3, SMOLLM2

    known = {"smollm2": lambda: SMOLLM2.fetch(), "gemma3": lambda: GEMMA3.fetch(),
             "default-q4_0": lambda: default_gguf("q4_0"), "default-q8_0": lambda: default_gguf("q8_0")}
    out = {}
    for n in names:
        out[n] = str(known[n]() if n in known else n)
    return out


def _span(xs: list[float], fmt: str) -> str:
    lo, hi = min(xs), max(xs)
    return fmt.format(lo) if fmt.format(lo) == fmt.format(hi) else f"{fmt.format(lo)}-{fmt.format(hi)}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smollm2,gemma3,default-q4_0",
                    help="comma-separated: smollm2, gemma3, default-q4_0, default-q8_0 or GGUF paths")
    ap.add_argument("--runtime", action="append", default=None,
                    help="an unpacked runtime wheel directory, or - for the installed one (repeatable)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--context", type=int, default=160)
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(_worker(a.worker, a.rows, a.repeats, a.context, a.threads)))
        return 0
    runtimes = a.runtime or ["-"]
    models = _models(a.models.split(","))
    runs: dict[tuple[str, str], list[list[float]]] = {}
    for r in range(a.rounds):
        for name, path in models.items():
            for rt in runtimes:
                env = dict(os.environ)
                if rt != "-":
                    env["PYTHONPATH"] = os.pathsep.join(p for p in (rt, env.get("PYTHONPATH")) if p)
                proc = subprocess.run([sys.executable, __file__, "--worker", path, "--rows", str(a.rows),
                                       "--repeats", str(a.repeats), "--context", str(a.context),
                                       "-t", str(a.threads)], env=env, capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{name} under runtime {rt}: {proc.stderr.strip()[-2000:]}")
                t = json.loads(proc.stdout.strip().splitlines()[-1])["t_ms"]
                runs.setdefault((name, rt), []).append(t)
                print(f"round {r + 1}/{a.rounds} {name} runtime {rt}: "
                      + " ".join(f"{x:.2f}" for x in t) + " ms", file=sys.stderr)
    if a.json:
        print(json.dumps([{"model": m, "runtime": rt, "t_ms": ts} for (m, rt), ts in runs.items()], indent=1))
        return 0
    cols = list(range(2, a.rows + 1))
    shown = sorted({1, min(2, a.rows), a.rows})
    print("| model | runtime | " + " | ".join(f"{n}-row pass" for n in shown)
          + " | " + " | ".join(f"c({n})" for n in cols) + " |")
    print("|---|---|" + "---|" * (len(shown) + len(cols)))
    for (m, rt), ts in runs.items():
        passes = [_span([t[n - 1] for t in ts], "{:.2f}") + " ms" for n in shown]
        cs = [_span([t[n - 1] / t[0] for t in ts], "{:.2f}") for n in cols]
        print(f"| {m} | {rt} | " + " | ".join(passes + cs) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
