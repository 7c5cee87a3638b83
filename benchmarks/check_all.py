"""The full exactness check: `gguf-mtp check` on every real target, every drafter
the file supports, K = 1..8, 12 held-out prompts x 256 tokens (exact mode).

    .venv/bin/python benchmarks/check_all.py [--out benchmarks/results/check] [--n-tokens 256]

Targets: the default model at f16 / q8_0 / q4_k_m / q4_0 (MTP head at q8_0), the
default model at q4_0 with its shipped trained Medusa heads stitched in
(`results/default_medusa_heads`, `tools/train_medusa_default.py`), SmolLM2-135M
Q4_1 with the shipped retrofit heads grafted, Gemma 3 270M Q4_K_M. Writes one JSON per target
(with the runtime key and seconds) and SUMMARY.md, rebuilt from every JSON of the
current runtime after each target; a rerun skips the targets already checked
with the same runtime and settings (``--force`` reruns them). Exits 1 on any
divergence.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def targets(work: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    from common import smollm2_with_heads
    from gguf_mtp.heads.medusa import init_recycled, write_heads
    from gguf_mtp.heads.stitch import stitch
    from gguf_mtp.models.default import default_gguf
    from gguf_mtp.models.fetch import GEMMA3

    every = ("mtp", "eagle", "ngram", "ngram-tree")
    # the quantized targets first (where exactness was lost), the high-precision ones last
    out = [(f"default-{q}", default_gguf(q), every) for q in ("q4_0", "q4_k_m")]
    medusa = work / "default-q4_0-medusa.gguf"
    if not medusa.is_file():
        recycled = work / "default-q4_0-medusa-recycled.gguf"
        write_heads(default_gguf("q4_0"), init_recycled(default_gguf("f32"), 3), recycled, head_type="q8_0",
                    progress=False)
        stitch(recycled, HERE / "results" / "default_medusa_heads", medusa, head_type="q8_0", progress=False)
        recycled.unlink()
    out.append(("default-q4_0-medusa", medusa, ("medusa",)))
    smol = smollm2_with_heads(work)
    out.append(("smollm2-q4_1", smol, every))
    out.append(("gemma3-270m-q4_k_m", GEMMA3.fetch(), ("ngram", "ngram-tree")))
    out += [(f"default-{q}", default_gguf(q), every) for q in ("q8_0", "f16")]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(HERE / "results" / "check"))
    ap.add_argument("--n-tokens", type=int, default=256)
    ap.add_argument("--n-prompts", type=int, default=12)
    ap.add_argument("--drafts", default="1,2,3,4,5,6,7,8")
    ap.add_argument("--only", default=None, help="comma-separated target names")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("--force", action="store_true", help="rerun targets already checked with this runtime")
    a = ap.parse_args()
    from gguf_mtp.bench.check import CheckReport, heldout_prompts, run_check
    from gguf_mtp.runtime import info as runtime_info

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    drafts = tuple(int(k) for k in a.drafts.split(","))
    settings = {"runtime": runtime_info().get("key"), "n_tokens": a.n_tokens, "n_prompts": a.n_prompts,
                "drafts": list(drafts), "threads": a.threads}
    names = []
    ok = True
    for name, path, drafters in targets(out):
        if a.only and name not in a.only.split(","):
            continue
        names.append(name)
        jf = out / f"{name}.json"
        if not a.force and jf.is_file() and json.loads(jf.read_text()).get("settings") == settings:
            print(f"{name}: checked already with runtime {settings['runtime']} (--force reruns)", flush=True)
            ok &= _ours_ok(CheckReport.from_dict(json.loads(jf.read_text())))
            continue
        t0 = time.time()
        rep = run_check(path, heldout_prompts(a.n_prompts), n_tokens=a.n_tokens, drafts=drafts, drafters=drafters,
                        threads=a.threads, upstream=name.startswith("default-q8_0"),
                        progress=lambda m: print(f"  {name}: {m}", file=sys.stderr, flush=True))
        secs = round(time.time() - t0)
        jf.write_text(json.dumps({**rep.as_dict(), "settings": settings, "seconds": secs}, indent=1) + "\n")
        ok &= _ours_ok(rep)
        (out / "SUMMARY.md").write_text(summary(out, names, settings))
        print(f"{name}: {'all exact' if _ours_ok(rep) else 'DIVERGED'} ({secs} s)", flush=True)
    (out / "SUMMARY.md").write_text(summary(out, names, settings))
    return 0 if ok else 1


def _ours_ok(rep) -> bool:
    """Every row of gguf-mtp's own drafters exact (llama.cpp's draft-mtp is reported, not held to it)."""
    return rep.ok


def summary(out: Path, names: list[str], settings: dict) -> str:
    """SUMMARY.md from every target's JSON checked with ``settings``."""
    from gguf_mtp.bench.check import CheckReport, format_table

    drafts = ",".join(str(k) for k in settings["drafts"])
    lines = ["# gguf-mtp check: every target, every drafter, K = " + drafts, "",
             f"Command: `.venv/bin/python benchmarks/check_all.py --n-tokens {settings['n_tokens']} --n-prompts "
             f"{settings['n_prompts']} --drafts {drafts}` (exact mode, {settings['threads']} threads, CPU, "
             f"runtime {settings['runtime']}).", ""]
    for name in names:
        jf = out / f"{name}.json"
        d = json.loads(jf.read_text()) if jf.is_file() else {}
        if d.get("settings") != settings:
            lines += [f"## {name}", "", "not checked with these settings yet", ""]
            continue
        lines += [f"## {name}", "", "```", format_table(CheckReport.from_dict(d)), "```", f"({d['seconds']} s)", ""]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
