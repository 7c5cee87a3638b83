"""Benchmark results as Markdown and PNG plots."""

from __future__ import annotations

from pathlib import Path

from .config import BENCH_DRAFTERS, SOURCE
from .config import QUANTS as _QUANTS

QUANTS = (*_QUANTS, SOURCE)

#: how each drafter is named in tables and plots
NAMES = {
    "none": "plain",
    "lcp-ngram": "llama-cpp-python prompt lookup",
    "ngram": "n-gram (gguf-mtp)",
    "upstream": "llama.cpp draft-mtp",
    "mtp": "native MTP",
    "mtp-cv": "native MTP, draft vocab",
    "fastmtp": "FastMTP-tuned MTP",
    "eagle": "EAGLE (chain)",
    "eagle-tree": "EAGLE-2 tree",
    "medusa": "Medusa tree",
}


def _order(row: dict) -> tuple:
    q = QUANTS.index(row["quant"]) if row["quant"] in QUANTS else len(QUANTS)
    return q, row["head_type"], BENCH_DRAFTERS.index(row["drafter"]), row["draft"]


def _acc(row: dict) -> str:
    acc = row.get("acceptance_per_position")
    if acc:
        return " / ".join(f"{a:.2f}" for a in acc)
    if "acceptance_rate" in row:
        return f"{row['acceptance_rate']:.2f} (rate)"
    return "-"


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def best_rows(results: dict) -> list[dict]:
    """Per quant level (heads at the run's main type) and drafter, the draft length with the best speed."""
    main_head = results["config"]["head_type"]
    best: dict = {}
    for r in results["rows"]:
        if r["head_type"] != main_head:
            continue
        key = (r["quant"], r["drafter"])
        if key not in best or r["tokens_per_s"] > best[key]["tokens_per_s"]:
            best[key] = r
    return sorted(best.values(), key=_order)


def headline(results: dict) -> str:
    """The compact table: plain and each drafter at its best draft length, per quant level."""
    rows = best_rows(results)
    quants = [q for q in QUANTS if any(r["quant"] == q for r in rows)]
    drafters = [d for d in BENCH_DRAFTERS if any(r["drafter"] == d for r in rows)]
    plain = {q: results["baselines"].get(q, {}).get("plain_tokens_per_s") for q in quants}
    head = "| drafter (best K) | " + " | ".join(quants) + " |"
    lines = [head, "|---|" + "---|" * len(quants)]
    lines.append("| plain decoding, tok/s | " + " | ".join(_f(plain[q], ".0f") for q in quants) + " |")
    for d in drafters:
        cells = []
        for q in quants:
            r = next((x for x in rows if x["quant"] == q and x["drafter"] == d), None)
            if r is None:
                cells.append("-")
                continue
            tau = f", τ {r['tau']:.2f}" if r.get("tau") else ""
            flag = "" if r.get("lossless", True) else " ⚠"
            cells.append(f"{r['speedup']:.2f}× (K={r['draft']}{tau}){flag}")
        lines.append(f"| {NAMES[d]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def full_table(results: dict) -> str:
    lines = ["| quant | heads | drafter | K | tok/s | plain tok/s | speedup | τ | acceptance per position | bound "
             "| lossless |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=_order):
        lines.append(
            f"| {r['quant']} | {r['head_type']} | {NAMES[r['drafter']]} | {r['draft']} | {r['tokens_per_s']:.0f} "
            f"| {r['plain_tokens_per_s']:.0f} | {r['speedup']:.2f}× | {_f(r.get('tau'), '.2f')} | {_acc(r)} "
            f"| {_f(r.get('bound'), '.2f')} | {'yes' if r.get('lossless', True) else 'NO'} |")
    return "\n".join(lines) + "\n"


def cost_table(results: dict) -> str:
    quants = [q for q in QUANTS if q in results["cost"]] + [q for q in results["cost"] if q not in QUANTS]
    if not quants:
        return ""
    n = max(len(results["cost"][q]["c"]) for q in quants)
    lines = ["| quant | 1-token pass (ms) | MTP step (passes) | " + " | ".join(f"c({i})" for i in range(1, n + 1))
             + " |", "|---|---|---|" + "---|" * n]
    for q in quants:
        c = results["cost"][q]
        lines.append(f"| {q} | {c['t1_ms']:.2f} | {c['mtp_step']:.2f} | "
                     + " | ".join(f"{x:.2f}" for x in c["c"]) + " |")
    return "\n".join(lines) + "\n"


def markdown(results: dict) -> str:
    cfg, m = results["config"], results["machine"]
    gpu = f", GPU {m['gpu']}" if m.get("gpu") else ""
    parts = [
        "# gguf-mtp bench",
        "",
        f"Target `{Path(results['target']).name}`; machine: {m.get('cpu')}, {m.get('cores')} cores{gpu}; "
        f"{cfg['threads'] or m.get('cores')} threads; greedy, {cfg['n_tokens']} tokens per prompt, "
        f"{len(results['prompts'])} prompts ({', '.join(cfg['prompt_sets'])}), median of {cfg['repeats']} "
        f"repeats{' (quick mode: checks the pipeline, not the numbers)' if cfg.get('quick') else ''}.",
        "",
    ]
    if results.get("command"):
        parts += ["```", results["command"], "```", ""]
    notes = []
    for q, b in results.get("baselines", {}).items():
        if b.get("lcp_error"):
            notes.append(f"- {q}: llama-cpp-python's prompt lookup failed ({b['lcp_error']}): its `Llama` "
                         "removes rejected draft tokens from the cache, which recurrent layers cannot do")
        if isinstance(b.get("upstream"), str):
            notes.append(f"- {q}: llama.cpp draft-mtp {b['upstream']}")
    parts += ["## Best draft length per drafter (speedup over plain decoding of the same file)", "",
              headline(results), "", *notes, "" if notes else None,
              "## Every run", "",
              "Speedup: against plain decoding of the same file in the same process (llama-cpp-python's "
              "prompt lookup: against its own `Llama` without a draft model; llama.cpp draft-mtp: against "
              "gguf-mtp's plain decoding of the same file, a separate process). Bound: τ / (c(1 + K·branches) "
              "+ K·d) from the measured batch-cost curve. Lossless: every speculative output equal to plain "
              "greedy decoding.", "",
              full_table(results), "",
              "## Batch-cost curve c(n) = time(n-token pass) / time(1-token pass)", "",
              cost_table(results)]
    return "\n".join(p for p in parts if p is not None)


# ---------------------------------------------------------------------------- plots

def _finish(plt, fig, ax, path: Path, xlabel: str, ylabel: str, title: str, ncol: int = 1) -> Path:
    """Label, save and close one plot; returns its path."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=ncol)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plots(results: dict, out: Path) -> list[Path]:
    """tokens/s vs quant level per drafter; τ vs draft length; measured speedup vs bound."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    written = []
    rows = best_rows(results)
    quants = [q for q in QUANTS if any(r["quant"] == q for r in rows)]

    fig, ax = plt.subplots(figsize=(7, 4.2))
    xs = range(len(quants))
    plain = [results["baselines"].get(q, {}).get("plain_tokens_per_s") for q in quants]
    if all(p is not None for p in plain):
        ax.plot(xs, plain, "k--", marker="o", label="plain")
    for d in BENCH_DRAFTERS:
        ys = [next((r["tokens_per_s"] for r in rows if r["quant"] == q and r["drafter"] == d), None) for q in quants]
        if any(y is not None for y in ys):
            ax.plot([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None], marker="o",
                    label=NAMES[d])
    ax.set_xticks(list(xs), quants)
    written.append(_finish(plt, fig, ax, out / "tokens_per_s.png", "trunk quantization", "decode tokens/s (best K)",
                           "Tokens/s by quant level and drafter", ncol=2))

    main_head = results["config"]["head_type"]
    q_tau = "q8_0" if "q8_0" in quants else (quants[0] if quants else None)
    fig, ax = plt.subplots(figsize=(6, 4))
    for d in BENCH_DRAFTERS:
        pts = sorted((r["draft"], r["tau"]) for r in results["rows"]
                     if r["drafter"] == d and r["quant"] == q_tau and r["head_type"] == main_head and r.get("tau"))
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=NAMES[d])
    written.append(_finish(plt, fig, ax, out / "tau_vs_draft.png", "draft length K", "τ (tokens per target pass)",
                           f"τ vs draft length ({q_tau})"))

    fig, ax = plt.subplots(figsize=(5, 5))
    pts = [(r["bound"], r["speedup"], r["drafter"]) for r in results["rows"] if r.get("bound")]
    for d in BENCH_DRAFTERS:
        sel = [(b, s) for b, s, dd in pts if dd == d]
        if sel:
            ax.scatter([p[0] for p in sel], [p[1] for p in sel], label=NAMES[d], s=18)
    if pts:
        hi = max(max(p[0] for p in pts), max(p[1] for p in pts)) * 1.05
        ax.plot([0, hi], [0, hi], "k:", lw=1, label="measured = bound")
        ax.axhline(1.0, color="grey", lw=0.8)
    written.append(_finish(plt, fig, ax, out / "speedup_vs_bound.png", "bound τ / (c(1+K·b) + K·d)",
                           "measured speedup", "Measured speedup vs cost-model bound"))
    return written
