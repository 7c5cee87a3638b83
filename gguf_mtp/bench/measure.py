"""Timing one file: plain decoding and each drafter, interleaved, in one process.

For a file, :func:`measure_file` opens one :class:`~gguf_mtp.runtime.Engine`,
measures the target's batch-cost curve c(n) = time(n-token pass) / time(1-token
pass) and the MTP draft step d (:func:`gguf_mtp.runtime.autodraft.cost_model`),
warms every configuration up once (not timed), then for every repeat and
every prompt runs plain decoding followed by each drafter configuration (their
order rotated per repeat), so that every speculative run sits next to a plain
run of the same prompt. Every speculative output must equal the plain output
token for token (greedy); a mismatch is recorded, not hidden.

Speeds are decode tokens/s (prefill excluded). Each repeat gives a ratio
(speculative over plain speed of that repeat); a row reports the median and
interquartile range of the speeds and of the ratios over repeats, on all
prompts and separately on the selection and report halves of the prompts
(:func:`gguf_mtp.bench.stats.halves`: the best K is chosen on one and reported
on the other). tau, acceptance per position and the rows verified per pass
are pooled over the prompts (the runs are deterministic); the bound is
:func:`gguf_mtp.bench.stats.run_bound`.

:func:`measure_lcp_ngram` times llama-cpp-python's own prompt-lookup decoding
(``LlamaPromptLookupDecoding`` through ``llama_cpp.Llama``) against the same
class without a draft model, and :func:`measure_upstream` llama.cpp's
draft-mtp (``llama-speculative-simple`` of the pinned commit).
"""

from __future__ import annotations

import time

import numpy as np
from dataclasses import dataclass

from .config import BenchConfig
from .stats import Timing, halves, ratios, run_bound, speed, spread


@dataclass(frozen=True)
class Run:
    """One drafter configuration measured on a file."""

    key: str            # bench drafter name (config.DRAFTERS)
    drafter: str        # runtime drafter
    draft: int          # draft length (tree depth for trees; 0 for auto, which picks its own)
    tree: str | None = None

    @property
    def generate_draft(self) -> int | str:
        return "auto" if self.drafter == "auto" else self.draft


def _acceptance(drafted: list[int], accepted: list[int], k: int) -> list[float]:
    from ..runtime.loop import acceptance_per_position

    return acceptance_per_position(drafted, accepted, k)


def measure_file(path, runs: list[Run], prompts: list[tuple[str, str]], cfg: BenchConfig, tick=None,
                 depth: int = 0) -> dict:
    """Plain decoding and every run on ``path``, each prompt after ``depth``
    tokens of real text; see the module docstring."""
    from ..runtime import Engine, RuntimeOptions, generate, make_drafter
    from ..runtime.autodraft import cost_model, measure_cost_model
    from ..runtime.drafters import configure_for
    from .prompt_sets import with_depth

    drafters = {r: _make(r, make_drafter) for r in runs}
    opts = RuntimeOptions(n_ctx=1024 + depth, n_threads=cfg.threads,
                          draft_max=max([8, *(r.draft for r in runs)]))
    if cfg.n_gpu_layers is not None:
        opts.n_gpu_layers = cfg.n_gpu_layers
    # one engine for every run: the union of what the drafters need (configuring them one
    # after another left load_mtp as the LAST drafter wanted it: with n-grams last, an
    # upstream-converted MTP file measured without its MTP context and every MTP run failed)
    opts = configure_for(list(drafters.values()), opts)
    n_p = len(prompts)
    sel, rep_idx = halves(n_p)
    out: dict = {"file": str(path), "runs": {}, "halves": {"select": sel, "report": rep_idx}, "depth": depth}
    with Engine(path, opts) as eng:
        prompts = [(name, with_depth(eng, p, depth)) for name, p in prompts]
        # the batch-cost curve where the passes run: past the depth prefix
        cm = cost_model(eng, n_max=cfg.cost_n_max) if depth == 0 else \
            measure_cost_model(eng, cfg.cost_n_max, context=depth + 64)
        out["cost"] = {"c": [round(x, 4) for x in cm.c], "t1_ms": round(1e3 * cm.t1_s, 4),
                       "mtp_step": round(cm.draft, 4)}
        # past a depth prefix every generation prefills only what follows it (reuse is
        # bit-exact; prefill is not timed): at depth 2048 SmolLM2 spent 13 s of each 14 s
        # generation re-reading the same 2048 tokens
        reuse = depth > 0
        # warm-up, not timed: graph allocation for every batch size a configuration uses
        generate(eng, prompts[0][1], 8, drafter="none", reuse=reuse)
        for r in runs:
            generate(eng, prompts[0][1], 8, drafter=drafters[r], draft=r.generate_draft, reuse=reuse)
        plain_t: list[list[Timing]] = []
        plain_texts: dict = {}
        plain_compute = plain_decode = 0.0
        spec = {r: {"t": [], "drafted": [], "accepted": [], "rows": [], "produced": 0, "passes": 0, "nodes": 0,
                    "draft_s": 0.0, "all_passes": 0, "draft_rep": [], "lossless": True, "per_set": {}} for r in runs}
        for rep in range(cfg.repeats):
            plain_t.append([])
            for r in runs:
                spec[r]["t"].append([])
                spec[r]["draft_rep"].append([0.0, 0])
            order = runs[rep % len(runs):] + runs[:rep % len(runs)] if runs else []
            for i, (set_name, prompt) in enumerate(prompts):
                plain = generate(eng, prompt, cfg.n_tokens, drafter="none", reuse=reuse)
                plain_texts.setdefault(i, plain.text)
                plain_t[-1].append(Timing(plain.stats.n_generated - 1, plain.stats.decode_s))
                plain_compute += plain.stats.compute_s
                plain_decode += plain.stats.decode_s
                if tick:
                    tick()
                for r in order:
                    g = generate(eng, prompt, cfg.n_tokens, drafter=drafters[r], draft=r.generate_draft, reuse=reuse)
                    s = spec[r]
                    s["lossless"] &= g.tokens == plain.tokens
                    s["t"][-1].append(Timing(g.stats.n_generated - 1, g.stats.decode_s))
                    s["draft_s"] += g.stats.draft_s
                    s["all_passes"] += g.stats.target_passes
                    s["draft_rep"][-1][0] += g.stats.draft_s
                    s["draft_rep"][-1][1] += g.stats.target_passes
                    # pooled over every timed repeat: auto learns across generations, so its
                    # first repeat's tau is not the tau of the runs timed (that bound was beaten)
                    s["drafted"] += g.stats.drafted
                    s["accepted"] += g.stats.accepted
                    s["rows"] += g.stats.rows
                    s["produced"] += g.stats.n_generated - 1
                    s["passes"] += g.stats.target_passes
                    s["nodes"] += g.stats.tree_nodes
                    if rep == 0:
                        ps = s["per_set"].setdefault(set_name, [0, 0])
                        ps[0] += g.stats.n_generated - 1
                        ps[1] += g.stats.target_passes
                    if tick:
                        tick()
        every = list(range(n_p))
        plain_speeds = [speed(t, every) for t in plain_t]
        out.update(spread("plain_tokens_per_s", plain_speeds))
        out["plain_repeats"] = plain_speeds
        n_plain_tokens = sum(t.n for ts in plain_t for t in ts)
        token_s = plain_decode / max(1, n_plain_tokens)
        compute_s = plain_compute / max(1, n_plain_tokens)
        out["plain_ms_per_token"] = 1e3 * token_s
        out["plain_host_share"] = max(0.0, 1 - compute_s / token_s) if token_s else 0.0
        for r, s in spec.items():
            tau = s["produced"] / max(1, s["passes"])
            # the drafter's time per pass: the median over repeats (one stalled generation
            # had put a mean of 5.8 ms per pass on a drafter that takes 1.2-3.3, and its
            # bound at 0.38 under a measured 0.61)
            draft_s = float(np.median([d / max(1, n) for d, n in s["draft_rep"]])) if s["draft_rep"] else 0.0
            speeds = [speed(t, every) for t in s["t"]]
            out["runs"][_label(r)] = {
                "drafter": r.key, "draft": r.draft, "tree": r.tree,
                **spread("tokens_per_s", speeds), "repeats": speeds,
                **spread("speedup", ratios(plain_t, s["t"], every)),
                **spread("speedup_select", ratios(plain_t, s["t"], sel)),
                **spread("speedup_report", ratios(plain_t, s["t"], rep_idx)),
                "tau": tau,
                "bound": run_bound(tau, s["rows"], draft_s, cm.c_at, token_s, compute_s),
                "acceptance_per_position": _acceptance(s["drafted"], s["accepted"], r.draft or max(s["drafted"], default=0)),
                "acceptance_rate": sum(s["accepted"]) / max(1, sum(s["drafted"])),
                "rows_per_pass": sum(s["rows"]) / max(1, len(s["rows"])),
                "tree_nodes_per_pass": s["nodes"] / max(1, s["passes"]),
                "draft_ms_per_pass": 1e3 * draft_s,
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
    # interleaved like measure_file: per repeat and prompt, plain then each draft length
    speeds = {k: [] for k in models}
    agree = {k: True for k in models}
    for _ in range(cfg.repeats):
        n_tot = {k: 0 for k in models}
        t_tot = {k: 0.0 for k in models}
        for i, (_, prompt) in enumerate(prompts):
            for k, llm in models.items():
                llm.reset()
                toks, t_first, t_last = [], None, None
                for chunk in llm.create_completion(prompt, max_tokens=cfg.n_tokens, temperature=0.0, top_k=1,
                                                   stream=True):
                    now = time.perf_counter()
                    t_first = t_first or now
                    t_last = now
                    toks.append(chunk["choices"][0]["text"])
                if len(toks) > 1:
                    n_tot[k] += len(toks) - 1
                    t_tot[k] += t_last - t_first
                if reference is not None and i in reference:
                    agree[k] &= "".join(toks) == reference[i]
                if tick:
                    tick()
        for k in models:
            speeds[k].append(n_tot[k] / t_tot[k] if t_tot[k] else 0.0)
    out.update(spread("plain_tokens_per_s", speeds[0]))
    out["matches_plain"] = agree[0]
    for k in drafts:
        rat = [s / p if p else 0.0 for s, p in zip(speeds[k], speeds[0])]
        out["runs"][f"lcp-ngram@{k}"] = {"drafter": "lcp-ngram", "draft": k, **spread("tokens_per_s", speeds[k]),
                                         "repeats": speeds[k], **spread("speedup", rat),
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
    try:
        return _upstream_runs(upstream_mtp, tool, path, drafts, prompts, cfg, reference, tick, out, threads)
    except upstream_mtp.UpstreamRunError as e:
        # the pristine build may not run this file's MTP layers at all (llama-arch
        # heads come from our patches): a reported failure, not the bench's end
        out["error"] = str(e).splitlines()[0]
        return out


def _upstream_runs(upstream_mtp, tool, path, drafts, prompts, cfg, reference, tick, out, threads) -> dict:
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
        out["runs"][f"upstream@{k}"] = {"drafter": "upstream", "draft": k, **spread("tokens_per_s", speeds),
                                        "repeats": speeds,
                                        "acceptance_rate": accepted / max(1, drafted), "drafted": drafted,
                                        "accepted": accepted, "matches_plain": agree}
    return out


def _cores() -> int:
    import os

    return os.cpu_count() or 1
