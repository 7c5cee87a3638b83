"""Timing one file: plain decoding and each drafter back to back, in one process.

For a file, :func:`measure_file` opens one :class:`~gguf_mtp.runtime.Engine`,
measures the target's batch-cost curve c(n) = time(n-token pass) / time(1-token
pass) and the MTP draft step d (:func:`gguf_mtp.runtime.autodraft.cost_model`),
then for every repeat and every prompt runs plain decoding followed by each
drafter configuration. Every speculative output must equal the plain output
token for token (greedy); a mismatch is recorded, not hidden. Speeds are decode
tokens/s over the whole prompt set (prefill excluded), median over repeats;
τ and acceptance per position are pooled over the prompts of one repeat (the
runs are deterministic). The bound is τ / (c(1 + K·branches) + K·d).

:func:`measure_lcp_ngram` times llama-cpp-python's own prompt-lookup decoding
(``LlamaPromptLookupDecoding`` through ``llama_cpp.Llama``) against the same
class without a draft model, and :func:`measure_upstream` llama.cpp's
draft-mtp (``llama-speculative-simple`` of the pinned commit).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from .config import BenchConfig


@dataclass(frozen=True)
class Run:
    """One drafter configuration measured on a file."""

    key: str            # bench drafter name (config.DRAFTERS)
    drafter: str        # runtime drafter
    draft: int          # draft length (tree depth for trees)
    tree: str | None = None


def _acceptance(drafted: list[int], accepted: list[int], k: int) -> list[float]:
    from ..runtime.loop import acceptance_per_position

    return acceptance_per_position(drafted, accepted, k)


def measure_file(path, runs: list[Run], prompts: list[tuple[str, str]], cfg: BenchConfig, tick=None) -> dict:
    """Plain decoding and every run on ``path``; see the module docstring."""
    from ..runtime import Engine, RuntimeOptions, generate, make_drafter
    from ..runtime.autodraft import cost_model

    drafters = {r: _make(r, make_drafter) for r in runs}
    opts = RuntimeOptions(n_ctx=1024, n_threads=cfg.threads,
                          draft_max=max([8, *(r.draft for r in runs)]))
    if cfg.n_gpu_layers is not None:
        opts.n_gpu_layers = cfg.n_gpu_layers
    for dr in drafters.values():
        opts = dr.configure(opts)
    out: dict = {"file": str(path), "runs": {}}
    with Engine(path, opts) as eng:
        cm = cost_model(eng, n_max=cfg.cost_n_max)
        out["cost"] = {"c": [round(x, 4) for x in cm.c], "t1_ms": round(1e3 * cm.t1_s, 4),
                       "mtp_step": round(cm.draft, 4)}
        generate(eng, prompts[0][1], 4, drafter="none")  # warm-up
        plain_speed, plain_texts = [], {}
        spec = {r: {"speed": [], "drafted": [], "accepted": [], "produced": 0, "passes": 0, "nodes": 0,
                    "draft_s": 0.0, "lossless": True, "per_set": {}} for r in runs}
        for rep in range(cfg.repeats):
            n_plain, t_plain = 0, 0.0
            n_spec = {r: 0 for r in runs}
            t_spec = {r: 0.0 for r in runs}
            for i, (set_name, prompt) in enumerate(prompts):
                plain = generate(eng, prompt, cfg.n_tokens, drafter="none")
                plain_texts.setdefault(i, plain.text)
                n_plain += plain.stats.n_generated - 1
                t_plain += plain.stats.decode_s
                if tick:
                    tick()
                for r in runs:
                    g = generate(eng, prompt, cfg.n_tokens, drafter=drafters[r], draft=r.draft)
                    s = spec[r]
                    s["lossless"] &= g.tokens == plain.tokens
                    n_spec[r] += g.stats.n_generated - 1
                    t_spec[r] += g.stats.decode_s
                    if rep == 0:
                        s["drafted"] += g.stats.drafted
                        s["accepted"] += g.stats.accepted
                        s["produced"] += g.stats.n_generated - 1
                        s["passes"] += g.stats.target_passes
                        s["nodes"] += g.stats.tree_nodes
                        s["draft_s"] += g.stats.draft_s
                        ps = s["per_set"].setdefault(set_name, [0, 0])
                        ps[0] += g.stats.n_generated - 1
                        ps[1] += g.stats.target_passes
                    if tick:
                        tick()
            plain_speed.append(n_plain / t_plain)
            for r in runs:
                spec[r]["speed"].append(n_spec[r] / t_spec[r])
        plain_med = statistics.median(plain_speed)
        out["plain_tokens_per_s"] = plain_med
        out["plain_repeats"] = plain_speed
        for r, s in spec.items():
            dr = drafters[r]
            tau = s["produced"] / max(1, s["passes"])
            bound = cm.for_drafter(dr.step_cost(cm.draft), dr.max_branches).speedup_bound(tau, r.draft)
            med = statistics.median(s["speed"])
            out["runs"][_label(r)] = {
                "drafter": r.key, "draft": r.draft, "tree": r.tree,
                "tokens_per_s": med, "repeats": s["speed"], "speedup": med / plain_med,
                "tau": tau, "bound": bound,
                "acceptance_per_position": _acceptance(s["drafted"], s["accepted"], r.draft),
                "acceptance_rate": sum(s["accepted"]) / max(1, sum(s["drafted"])),
                "tree_nodes_per_pass": s["nodes"] / max(1, s["passes"]),
                "draft_ms_per_pass": 1e3 * s["draft_s"] / max(1, s["passes"]),
                "tau_per_set": {k: v[0] / max(1, v[1]) for k, v in s["per_set"].items()},
                "lossless": s["lossless"],
            }
    out["plain_texts"] = plain_texts
    return out


def _make(r: Run, make_drafter):
    if r.drafter == "medusa" and r.tree:
        from ..runtime.drafters import MedusaDrafter

        return MedusaDrafter(tree=r.tree)
    return make_drafter(r.drafter)


def _label(r: Run) -> str:
    return f"{r.key}@{r.draft}"


# ---------------------------------------------------------------------------- llama-cpp-python

def measure_lcp_ngram(path, drafts, prompts: list[tuple[str, str]], cfg: BenchConfig,
                      reference: dict | None = None, tick=None) -> dict:
    """llama-cpp-python's prompt-lookup decoding vs the same ``Llama`` class
    without a draft model: decode tokens/s (first to last streamed token),
    median over repeats. ``reference`` (prompt index -> plain greedy text from
    gguf-mtp's runtime) checks that the outputs agree."""
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    kw = dict(model_path=str(path), n_ctx=1024, n_threads=cfg.threads, seed=0, verbose=False)
    if cfg.n_gpu_layers is not None:
        kw["n_gpu_layers"] = cfg.n_gpu_layers
    out: dict = {"runs": {}}
    models = {0: Llama(**kw)}
    for k in drafts:
        models[k] = Llama(**kw, draft_model=LlamaPromptLookupDecoding(num_pred_tokens=k, max_ngram_size=2))
    try:
        return _lcp_runs(models, drafts, prompts, cfg, reference, tick, out)
    except RuntimeError as e:
        # llama-cpp-python removes rejected draft tokens with llama_memory_seq_rm,
        # which recurrent layers (Qwen3.5's Gated DeltaNet) cannot do partially:
        # the next llama_decode then fails
        out["error"] = f"{type(e).__name__}: {e}"
        return out
    finally:
        for llm in models.values():
            llm.close()


def _lcp_runs(models, drafts, prompts, cfg, reference, tick, out) -> dict:
    speeds = {k: [] for k in models}
    agree = {k: True for k in models}
    for _ in range(cfg.repeats):
        for k, llm in models.items():
            n_tot, t_tot = 0, 0.0
            for i, (_, prompt) in enumerate(prompts):
                llm.reset()
                toks, t_first, t_last = [], None, None
                for chunk in llm.create_completion(prompt, max_tokens=cfg.n_tokens, temperature=0.0, top_k=1,
                                                   stream=True):
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    toks.append(chunk["choices"][0]["text"])
                if len(toks) > 1:
                    n_tot += len(toks) - 1
                    t_tot += t_last - t_first
                if reference is not None and i in reference:
                    agree[k] &= "".join(toks) == reference[i]
                if tick:
                    tick()
            speeds[k].append(n_tot / t_tot if t_tot else 0.0)
    plain = statistics.median(speeds[0])
    out["plain_tokens_per_s"] = plain
    out["matches_plain"] = agree[0]
    for k in drafts:
        med = statistics.median(speeds[k])
        out["runs"][f"lcp-ngram@{k}"] = {"drafter": "lcp-ngram", "draft": k, "tokens_per_s": med,
                                         "repeats": speeds[k], "speedup": med / plain if plain else 0.0,
                                         "matches_plain": agree[k]}
    return out


# ---------------------------------------------------------------------------- upstream

def measure_upstream(path, drafts, prompts: list[tuple[str, str]], cfg: BenchConfig,
                     reference: dict | None = None, tick=None) -> dict | None:
    """llama.cpp's draft-mtp on ``path`` (None when its tool is not built:
    ``python -m gguf_mtp.bench.upstream_mtp build``); ``reference`` as in
    :func:`measure_lcp_ngram`."""
    try:
        from . import upstream_mtp
    except ImportError:
        return None
    tool = upstream_mtp.tool_path()
    if tool is None:
        return None
    out: dict = {"tool": str(tool), "runs": {}}
    threads = cfg.threads or _cores()
    for k in drafts:
        speeds, drafted, accepted, agree = [], 0, 0, True
        for rep in range(cfg.repeats):
            n_tot, t_tot = 0, 0.0
            for i, (_, prompt) in enumerate(prompts):
                r = upstream_mtp.run_draft_mtp(tool, path, prompt, cfg.n_tokens, k, threads)
                n_tot += r.n_predict
                t_tot += r.n_predict / r.decode_tokens_per_s if r.decode_tokens_per_s else 0.0
                if rep == 0:
                    drafted += r.n_drafted
                    accepted += r.n_accept
                    if reference is not None and i in reference:
                        agree &= r.text == reference[i]
                if tick:
                    tick()
            speeds.append(n_tot / t_tot if t_tot else 0.0)
        med = statistics.median(speeds)
        out["runs"][f"upstream@{k}"] = {"drafter": "upstream", "draft": k, "tokens_per_s": med, "repeats": speeds,
                                        "acceptance_rate": accepted / max(1, drafted), "drafted": drafted,
                                        "accepted": accepted, "matches_plain": agree}
    return out


def _cores() -> int:
    import os

    return os.cpu_count() or 1
