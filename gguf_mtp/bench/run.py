"""Run a whole benchmark: build the files, time them, write JSON, Markdown and plots."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from .config import FAMILY, FIXED_DRAFT, NEEDS_MTP, ON_DEFAULT_FILE, SOURCE, TRAINED, BenchConfig
from .measure import Run, measure_file, measure_lcp_ngram, measure_upstream
from .stats import spread
from .variants import Workspace

#: runtime drafter behind each bench drafter measured through gguf-mtp's runtime
RUNTIME_DRAFTER = {"auto": "auto", "mtp": "mtp", "mtp-cv": "mtp", "mtp-tree": "eagle", "fastmtp": "mtp",
                   "eagle": "mtp", "eagle-tree": "eagle", "ngram": "ngram", "ngram-tree": "ngram-tree",
                   "medusa": "medusa"}


def skipped(cfg: BenchConfig, n_nextn: int = 1) -> dict[str, str]:
    """Asked-for drafters that do not apply to a target with ``n_nextn`` MTP layers, with the reason."""
    out = {}
    for d in cfg.drafters:
        if d in NEEDS_MTP and not n_nextn:
            out[d] = "the target has no MTP layer"
        elif d == "mtp-tree" and n_nextn > 1:
            out[d] = f"the EAGLE-2 tree drafts with one MTP layer; the target chains {n_nextn}"
        elif d in TRAINED and cfg.quants == (SOURCE,):
            out[d] = (f"trains heads on a high-precision target; quant level {SOURCE!r} measures the file as "
                      "it is (give the f16/bf16 GGUF and quant levels to include it)")
        elif d == "mtp-cv" and cfg.draft_vocab <= 0:
            out[d] = "--draft-vocab 0"
    return out


def plan(cfg: BenchConfig, n_nextn: int = 1) -> list[dict]:
    """The files to time, in order: ``{"quant", "head_type", "family", "runs"}``."""
    items = []
    skip = skipped(cfg, n_nextn)
    runtime_drafters = [d for d in cfg.drafters if d in RUNTIME_DRAFTER and d not in skip]
    for quant in cfg.quants:
        by_family: dict[str, list[Run]] = {}
        for d in runtime_drafters:
            if quant == SOURCE and d in TRAINED:
                continue
            ks = [FIXED_DRAFT[d]] if d in FIXED_DRAFT else list(cfg.drafts)
            tree = "default" if d == "medusa" else None
            fam = "mtp" if d in ON_DEFAULT_FILE and n_nextn and cfg.draft_vocab > 0 else FAMILY[d]
            by_family.setdefault(fam, []).extend(Run(d, RUNTIME_DRAFTER[d], k, tree) for k in ks)
        if "base" not in by_family and ({"lcp-ngram", "upstream"} & set(cfg.drafters) or "none" in cfg.drafters):
            by_family["base"] = []
        for family, runs in by_family.items():
            items.append({"quant": quant, "head_type": cfg.head_type, "family": family, "runs": runs})
        if n_nextn and ("mtp-cv" in cfg.drafters or "mtp" in cfg.drafters):
            fam = "mtp" if cfg.draft_vocab > 0 and "mtp-cv" in cfg.drafters else "base"
            key = "mtp-cv" if fam == "mtp" else "mtp"
            for h in cfg.head_types:
                if h == cfg.head_type or quant == SOURCE:
                    continue
                items.append({"quant": quant, "head_type": h, "family": fam,
                              "runs": [Run(key, "mtp", cfg.head_sweep_draft)]})
    return items


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}
    try:
        from ..runtime import info as runtime_info

        rt = runtime_info()
        info["runtime"] = {k: rt[k] for k in ("key", "llama_cpp_python", "llama_cpp_commit", "cmake_args")
                           if k in rt}
    except Exception:  # the report still says what it can
        pass
    try:
        import subprocess

        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        if gpu.returncode == 0 and gpu.stdout.strip():
            info["gpu"] = gpu.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def run_bench(cfg: BenchConfig, command: str | None = None) -> dict:
    """Build, time and report; returns the results dict (also written to
    ``cfg.out``/results.json, results.md and the plots)."""
    from tqdm import tqdm

    from . import report

    cfg.validate()
    t_start = time.perf_counter()
    if cfg.target:
        target = Path(cfg.target)
        if not target.is_file():
            raise FileNotFoundError(f"{target}: no such GGUF")
    else:
        from ..models.default import default_gguf

        target = default_gguf("f32")
    ws = Workspace.for_target(cfg, target)
    from ..gguf.constants import Keys, arch_key
    from ..gguf.inspect import read_header

    kv = read_header(target).kv
    n_nextn = int(kv.get(arch_key(Keys.LLM.NEXTN_PREDICT_LAYERS, kv.get("general.architecture", "")), 0))
    items = plan(cfg, n_nextn)

    # 1. files
    needed = []
    for it in items:
        needed.append((it["family"], it["quant"], it["head_type"]))
    if any(it["family"] != "base" for it in items):
        q = SOURCE if SOURCE in cfg.quants else "q8_0"
        needed.insert(0, ("base", q, cfg.head_type))  # the distillation target comes first
    files = {}
    bar = tqdm(needed, desc="build files", unit="file", disable=not cfg.progress)
    for fam, quant, head in bar:
        bar.set_postfix_str(f"{fam} {quant}/{head}")
        files[(fam, quant, head)] = ws.variant(fam, quant, head)
    bar.close()

    # 2. prompts, rendered once (the chat template of the target)
    from ..runtime import Engine, RuntimeOptions
    from .prompt_sets import render

    with Engine(files[(items[0]["family"], items[0]["quant"], items[0]["head_type"])],
                RuntimeOptions(n_ctx=256, n_threads=cfg.threads, load_mtp=False)) as eng:
        prompts = render(eng, cfg.prompt_sets, cfg.prompts_per_set)

    # 3. timing
    n_p = len(prompts)
    skip = skipped(cfg, n_nextn)
    lcp_ks = list(cfg.drafts) if "lcp-ngram" in cfg.drafters else []
    up_ks = list(cfg.drafts) if "upstream" in cfg.drafters and "upstream" not in skip else []
    total = sum(cfg.repeats * n_p * (1 + len(it["runs"])) for it in items)
    total += len(cfg.quants) * cfg.repeats * n_p * ((1 + len(lcp_ks)) if lcp_ks else 0)
    total += len(cfg.quants) * cfg.repeats * n_p * len(up_ks)
    n_depth = sum(1 for d in cfg.depths if d > 0)
    total += n_depth * sum(cfg.repeats * n_p * (1 + len(it["runs"])) for it in items if it["head_type"] == cfg.head_type)
    bar = tqdm(total=total, desc="measure", unit="gen", disable=not cfg.progress)
    results = {"config": cfg.as_dict(), "command": command, "machine": machine(), "target": str(target),
               "work": str(ws.root), "prompts": [{"set": s, "prompt": p} for s, p in prompts],
               "files": {}, "rows": [], "cost": {}, "baselines": {}, "skipped": skip}
    for it in items:
        path = files[(it["family"], it["quant"], it["head_type"])]
        bar.set_postfix_str(f"{it['family']} {it['quant']}/{it['head_type']}")
        m = measure_file(path, it["runs"], prompts, cfg, tick=bar.update)
        fkey = path.name
        results["files"][fkey] = {"family": it["family"], "quant": it["quant"], "head_type": it["head_type"],
                                  "bytes": path.stat().st_size, "cost": m["cost"],
                                  "plain_tokens_per_s": m["plain_tokens_per_s"]}
        if it["family"] == "base" or it["quant"] not in results["cost"]:
            results["cost"][it["quant"]] = m["cost"]
        for label, r in m["runs"].items():
            results["rows"].append({"quant": it["quant"], "head_type": it["head_type"], "file": fkey,
                                    "plain_tokens_per_s": m["plain_tokens_per_s"], **r})
        if it["family"] == "base":
            ref = m["plain_texts"]
            base = {"file": fkey, **{k: m[k] for k in ("plain_tokens_per_s", "plain_tokens_per_s_q1",
                                                       "plain_tokens_per_s_q3", "plain_host_share")}}
            if lcp_ks:
                bar.set_postfix_str(f"lcp-ngram {it['quant']}")
                lcp = measure_lcp_ngram(path, lcp_ks, prompts, cfg, reference=ref, tick=bar.update)
                if "error" in lcp:
                    base["lcp_error"] = lcp["error"]
                else:
                    base["lcp_plain_tokens_per_s"] = lcp["plain_tokens_per_s"]
                    base["lcp_plain_matches"] = lcp.get("matches_plain")
                for label, r in lcp["runs"].items():
                    results["rows"].append({"quant": it["quant"], "head_type": it["head_type"], "file": fkey,
                                            "plain_tokens_per_s": lcp["plain_tokens_per_s"], **r,
                                            "lossless": r["matches_plain"]})
            if up_ks:
                bar.set_postfix_str(f"upstream {it['quant']}")
                up = measure_upstream(path, up_ks, prompts, cfg, reference=ref, tick=bar.update)
                if up is None:
                    bar.update(cfg.repeats * n_p * len(up_ks))
                    base["upstream"] = "not built (python -m gguf_mtp.bench.upstream_mtp build)"
                elif "error" in up:
                    base["upstream"] = f"failed on this file: {up['error']}"
                else:
                    for label, r in up["runs"].items():
                        # a separate process: each repeat's speed against gguf-mtp's plain speed of that repeat
                        rat = [u / p for u, p in zip(r["repeats"], m["plain_repeats"]) if p]
                        results["rows"].append({
                            "quant": it["quant"], "head_type": it["head_type"], "file": fkey,
                            "plain_tokens_per_s": m["plain_tokens_per_s"], **r, **spread("speedup", rat),
                            "lossless": r["matches_plain"]})
            results["baselines"][it["quant"]] = base
    # 4. context depth: the main head type's files again, each prompt after `depth` tokens of real text
    results["depth_rows"] = []
    for depth in (d for d in cfg.depths if d > 0):
        for it in items:
            if it["head_type"] != cfg.head_type:
                continue
            path = files[(it["family"], it["quant"], it["head_type"])]
            bar.set_postfix_str(f"depth {depth}: {it['family']} {it['quant']}")
            m = measure_file(path, it["runs"], prompts, cfg, tick=bar.update, depth=depth)
            for label, r in m["runs"].items():
                results["depth_rows"].append({"quant": it["quant"], "head_type": it["head_type"], "file": path.name,
                                              "depth": depth, "plain_tokens_per_s": m["plain_tokens_per_s"], **r})
            if it["family"] == "base":
                results["baselines"][it["quant"]].setdefault("plain_by_depth", {})[str(depth)] = \
                    spread("plain_tokens_per_s", m["plain_repeats"])
    bar.close()
    results["build_log"] = ws.log
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    out = cfg.out_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    (out / "results.md").write_text(report.markdown(results))
    results["plots"] = [str(p) for p in report.plots(results, out)]
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    return results
