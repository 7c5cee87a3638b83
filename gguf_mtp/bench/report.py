"""Benchmark results as Markdown and PNG plots."""

from __future__ import annotations

from pathlib import Path

from .config import BENCH_DRAFTERS, SOURCE
from .config import QUANTS as _QUANTS

QUANTS = (*_QUANTS, SOURCE)

#: how each drafter is named in tables and plots
NAMES = {
    "none": "plain",
    "auto": "auto (gguf-mtp's default)",
    "lcp-ngram": "llama-cpp-python prompt lookup",
    "ngram": "n-gram (gguf-mtp)",
    "ngram-tree": "n-gram tree (gguf-mtp)",
    "upstream": "llama.cpp draft-mtp",
    "mtp": "native MTP",
    "mtp-cv": "native MTP, draft vocab",
    "mtp-tree": "native MTP, EAGLE-2 tree",
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


def _k(row: dict) -> str:
    return "auto" if row["drafter"] == "auto" else str(row["draft"])


def _f(x, fmt: str) -> str:
    return "-" if x is None else format(x, fmt)


def _iqr(row: dict, key: str, fmt: str = ".2f", unit: str = "") -> str:
    """``median [q1–q3]`` of a measured quantity (older results without quartiles: the median)."""
    if key not in row:
        return "-"
    if f"{key}_q1" not in row:
        return f"{row[key]:{fmt}}{unit}"
    return f"{row[key]:{fmt}}{unit} [{row[key + '_q1']:{fmt}}–{row[key + '_q3']:{fmt}}]"


def best_rows(results: dict) -> list[dict]:
    """Per quant level (heads at the run's main type) and drafter, the draft
    length with the best speedup on the selection half of the prompts; its
    numbers are then read on the report half (``speedup_report``), so the pick
    does not report its own luck. Results without halves: the best speedup."""
    main_head = results["config"]["head_type"]
    best: dict = {}
    for r in results["rows"]:
        if r["head_type"] != main_head:
            continue
        key = (r["quant"], r["drafter"])
        score = r.get("speedup_select", r["speedup"])
        if key not in best or score > best[key].get("speedup_select", best[key]["speedup"]):
            best[key] = r
    return sorted(best.values(), key=_order)


def headline(results: dict) -> str:
    """The compact table: plain and each drafter at its best draft length (chosen on
    one half of the prompts, its speedup and IQR over repeats on the other), per quant level."""
    rows = best_rows(results)
    quants = [q for q in QUANTS if any(r["quant"] == q for r in rows)]
    drafters = [d for d in BENCH_DRAFTERS if any(r["drafter"] == d for r in rows)]
    base = {q: results["baselines"].get(q, {}) for q in quants}
    head = "| drafter (best K) | " + " | ".join(quants) + " |"
    lines = [head, "|---|" + "---|" * len(quants)]
    lines.append("| plain decoding, tok/s | " + " | ".join(_iqr(base[q], "plain_tokens_per_s", ".0f") for q in quants)
                 + " |")
    for d in drafters:
        cells = []
        for q in quants:
            r = next((x for x in rows if x["quant"] == q and x["drafter"] == d), None)
            if r is None:
                cells.append("-")
                continue
            tau = f", τ {r['tau']:.2f}" if r.get("tau") else ""
            flag = "" if r.get("lossless", True) else " ⚠"
            key = "speedup_report" if "speedup_report" in r else "speedup"
            cells.append(f"{_iqr(r, key, unit='×')} (K={_k(r)}{tau}){flag}")
        lines.append(f"| {NAMES[d]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def full_table(results: dict) -> str:
    lines = ["| quant | heads | drafter | K | tok/s [IQR] | plain tok/s | speedup [IQR] | τ | acceptance per position "
             "| rows/pass | bound | lossless |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results["rows"], key=_order):
        lines.append(
            f"| {r['quant']} | {r['head_type']} | {NAMES[r['drafter']]} | {_k(r)} | "
            f"{_iqr(r, 'tokens_per_s', '.0f')} | {r['plain_tokens_per_s']:.0f} | {_iqr(r, 'speedup', unit='×')} "
            f"| {_f(r.get('tau'), '.2f')} | {_acc(r)} | {_f(r.get('rows_per_pass'), '.2f')} "
            f"| {_f(r.get('bound'), '.2f')} | {'yes' if r.get('lossless', True) else 'NO'} |")
    return "\n".join(lines) + "\n"


def depth_table(results: dict) -> str:
    """Speedup against context depth, per quant level and drafter at its best K
    (the K of the main table; depth 0 is the main run)."""
    drows = results.get("depth_rows") or []
    if not drows:
        return ""
    depths = sorted({0, *(r["depth"] for r in drows)})
    lines = ["| quant | drafter | K | " + " | ".join(f"depth {d}" for d in depths) + " |",
             "|---|---|---|" + "---|" * len(depths)]
    for b in best_rows(results):
        cells = [_iqr(b, "speedup", unit="×")]
        for d in depths[1:]:
            r = next((x for x in drows if x["depth"] == d and x["quant"] == b["quant"]
                      and x["drafter"] == b["drafter"] and x["draft"] == b["draft"]), None)
            cells.append(_iqr(r, "speedup", unit="×") if r else "-")
        lines.append(f"| {b['quant']} | {NAMES[b['drafter']]} | {_k(b)} | " + " | ".join(cells) + " |")
    plain = [f"{q}: " + ", ".join(f"{d} → {v['plain_tokens_per_s']:.0f}"
                                  for d, v in {"0": b, **b["plain_by_depth"]}.items())
             for q, b in results.get("baselines", {}).items() if b.get("plain_by_depth")]
    if plain:
        lines += ["", "Plain decoding tok/s by depth: " + "; ".join(plain) + "."]
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
        f"{len(results['prompts'])} prompts ({', '.join(cfg['prompt_sets'])}); plain and speculative runs "
        f"interleaved, {cfg['repeats']} repeats after a warm-up, median [interquartile range] over repeats"
        f"{' (quick mode: checks the pipeline, not the numbers)' if cfg.get('quick') else ''}.",
        "",
    ]
    if results.get("command"):
        parts += ["```", results["command"], "```", ""]
    notes = []
    for q, b in results.get("baselines", {}).items():
        if b.get("lcp_error"):
            notes.append(f"- {q}: llama-cpp-python's prompt lookup did not run: {b['lcp_error']}")
        if isinstance(b.get("upstream"), str):
            notes.append(f"- {q}: llama.cpp draft-mtp {b['upstream']}")
    for d, why in results.get("skipped", {}).items():
        notes.append(f"- {NAMES.get(d, d)}: not measured ({why})")
    parts += ["## Best draft length per drafter (speedup over plain decoding of the same file)", "",
              "The best K is chosen on the even-numbered prompts; the speedup shown is measured on the "
              "odd-numbered ones (median [IQR] over repeats). Auto runs on the file `gguf-mtp convert` "
              "gives by default: where the target has an MTP head, the head with its draft vocabulary.", "",
              headline(results), "", *notes, "" if notes else None,
              "## Every run", "",
              "Speedup: against plain decoding of the same file in the same process (llama-cpp-python's "
              "prompt lookup: against its own `Llama` without a draft model; llama.cpp draft-mtp: against "
              "gguf-mtp's plain decoding of the same file, a separate process). Rows/pass: target rows verified "
              "per pass. Bound: τ·t_plain / (mean c(rows) · t1 + d + o), each pass priced at the rows it "
              "verified on the measured batch-cost curve, d the drafter's own measured time per pass, t1 and o "
              "plain decoding's compute and host time per token (`gguf_mtp/bench/stats.py`). Lossless: every "
              "speculative output equal to plain greedy decoding.", "",
              full_table(results), "",
              "## Batch-cost curve c(n) = time(n-token pass) / time(1-token pass)", "",
              cost_table(results)]
    if results.get("depth_rows"):
        parts += ["", "## Speedup against context depth", "",
                  "Each prompt after that many tokens of real text (the shipped distillation prompts), like "
                  "llama-bench `-d`; speedup median [IQR] over interleaved repeats, all prompts.", "",
                  depth_table(results)]
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
    pts = [(r["bound"], r["speedup"], r.get("speedup_q1", r["speedup"]), r.get("speedup_q3", r["speedup"]),
            r["drafter"]) for r in results["rows"] if r.get("bound")]
    for d in BENCH_DRAFTERS:
        sel = [p for p in pts if p[4] == d]
        if sel:
            ax.errorbar([p[0] for p in sel], [p[1] for p in sel],
                        yerr=[[p[1] - p[2] for p in sel], [p[3] - p[1] for p in sel]], fmt="o", ms=4,
                        capsize=2, label=NAMES[d])
    if pts:
        hi = max(max(p[0] for p in pts), max(p[1] for p in pts)) * 1.05
        ax.plot([0, hi], [0, hi], "k:", lw=1, label="measured = bound")
        ax.axhline(1.0, color="grey", lw=0.8)
    written.append(_finish(plt, fig, ax, out / "speedup_vs_bound.png", "bound τ·t_plain / (c̄·t1 + d + o)",
                           "measured speedup [IQR]", "Measured speedup vs cost-model bound"))
    if results.get("depth_rows"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for b in rows:
            pts = [(0, b["speedup"])] + sorted(
                (r["depth"], r["speedup"]) for r in results["depth_rows"]
                if (r["quant"], r["drafter"], r["draft"]) == (b["quant"], b["drafter"], b["draft"]))
            if len(pts) > 1:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o",
                        label=f"{NAMES[b['drafter']]} K={_k(b)} {b['quant']}")
        ax.axhline(1.0, color="grey", lw=0.8)
        written.append(_finish(plt, fig, ax, out / "speedup_vs_depth.png", "context depth (tokens)",
                               "speedup over plain", "Speedup against context depth"))
    return written


# ---------------------------------------------------------------------------- other formats

#: the columns of ``--output csv|jsonl`` (one record per measured row, depth rows included)
FIELDS = ("quant", "head_type", "drafter", "draft", "depth", "tokens_per_s", "tokens_per_s_q1", "tokens_per_s_q3",
          "plain_tokens_per_s", "speedup", "speedup_q1", "speedup_q3", "speedup_select", "speedup_report",
          "tau", "bound", "rows_per_pass", "draft_ms_per_pass", "lossless")
#: machine fields repeated in every record, so a line read alone says where it was measured
MACHINE_FIELDS = ("cpu", "cores", "gpu", "runtime_key", "cmake_args")


def records(results: dict) -> list[dict]:
    m = results.get("machine", {})
    rt = m.get("runtime", {})
    where = {"cpu": m.get("cpu"), "cores": m.get("cores"), "gpu": m.get("gpu"), "runtime_key": rt.get("key"),
             "cmake_args": rt.get("cmake_args")}
    out = []
    for r in [*results["rows"], *results.get("depth_rows", [])]:
        rec = {k: r.get(k) for k in FIELDS}
        rec["depth"] = r.get("depth", 0)
        out.append({**rec, **where})
    return out


def as_csv(results: dict) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*FIELDS, *MACHINE_FIELDS], lineterminator="\n")
    w.writeheader()
    w.writerows(records(results))
    return buf.getvalue()


def as_jsonl(results: dict) -> str:
    import json

    return "".join(json.dumps(r) + "\n" for r in records(results))


def compare(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """Rows measured in both results, with B's tokens/s over A's (like
    llama.cpp's compare-llama-bench), plain decoding first."""
    def key(r):
        return (r["quant"], r["head_type"], r["drafter"], r["draft"], r.get("depth", 0))

    ra = {key(r): r for r in [*a["rows"], *a.get("depth_rows", [])]}
    rb = {key(r): r for r in [*b["rows"], *b.get("depth_rows", [])]}
    lines = [f"| quant | heads | drafter | K | depth | {names[0]} tok/s | {names[1]} tok/s | {names[1]}/{names[0]} "
             f"| {names[0]} speedup | {names[1]} speedup |", "|---|---|---|---|---|---|---|---|---|---|"]
    for q in [q for q in QUANTS if q in a.get("baselines", {}) and q in b.get("baselines", {})]:
        pa, pb = a["baselines"][q]["plain_tokens_per_s"], b["baselines"][q]["plain_tokens_per_s"]
        lines.append(f"| {q} | - | plain | - | 0 | {pa:.0f} | {pb:.0f} | {pb / pa:.2f} | - | - |")
    common = sorted(set(ra) & set(rb), key=lambda k: (*_order(ra[k]), k[4]))
    for k in common:
        x, y = ra[k], rb[k]
        lines.append(f"| {k[0]} | {k[1]} | {NAMES.get(k[2], k[2])} | {_k(x)} | {k[4]} | {x['tokens_per_s']:.0f} "
                     f"| {y['tokens_per_s']:.0f} | {y['tokens_per_s'] / x['tokens_per_s']:.2f} "
                     f"| {_iqr(x, 'speedup', unit='×')} | {_iqr(y, 'speedup', unit='×')} |")
    only = len(set(ra) ^ set(rb))
    if only:
        lines += ["", f"{only} rows measured in only one of the two results are left out."]
    ma, mb = a.get("machine", {}), b.get("machine", {})
    lines += ["", f"{names[0]}: {ma.get('cpu')}, runtime {ma.get('runtime', {}).get('key')}; "
                  f"{names[1]}: {mb.get('cpu')}, runtime {mb.get('runtime', {}).get('key')}"]
    return "\n".join(lines) + "\n"
