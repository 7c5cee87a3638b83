"""Helpers the benchmark scripts share: tau and acceptance of a drafter in the
runtime (every generation checked against plain decoding), tokens/s against
plain decoding in the same process, and the tau-against-steps plot."""

from __future__ import annotations

import statistics
from pathlib import Path


#: the shipped SmolLM2-135M retrofit MTP heads (q8_0), grafted onto the Q4_1 trunk by the scripts
SMOLLM2_HEADS = Path(__file__).resolve().parent / "results" / "smollm2_135m_mtp_heads_q8_0.gguf"


def smollm2_with_heads(work: Path) -> Path:
    """SmolLM2-135M-Instruct Q4_1 with the shipped heads grafted, made once in ``work``; named
    by the heads' hash, so shipping new heads makes a new file."""
    from gguf_mtp.convert.graft import graft
    from gguf_mtp.models.fetch import SMOLLM2
    from gguf_mtp.upstream import sha256_file

    out = Path(work) / f"smollm2-q4_1-heads-{sha256_file(SMOLLM2_HEADS)[:12]}.gguf"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        graft(SMOLLM2.fetch(), SMOLLM2_HEADS, out, progress=False)
    return out


def measure_tau(path, prompts, n_tokens: int, threads: int, drafter="mtp", draft: int = 3) -> dict:
    """Pooled tau (tokens per target pass), acceptance per draft position and
    losslessness of ``drafter`` (a name or a Drafter) on ``path``."""
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter
    from gguf_mtp.runtime.loop import acceptance_per_position

    dr = make_drafter(drafter)
    drafted, accepted, produced, passes, nodes, lossless = [], [], 0, 0, 0, True
    with Engine(path, dr.configure(RuntimeOptions(n_ctx=1024, n_threads=threads))) as eng:
        for p in prompts:
            g = generate(eng, p, n_tokens, drafter=dr, draft=draft)
            plain = generate(eng, p, n_tokens, drafter="none")
            lossless &= g.tokens == plain.tokens
            drafted += g.stats.drafted
            accepted += g.stats.accepted
            produced += g.stats.n_generated - 1
            passes += g.stats.target_passes
            nodes += g.stats.tree_nodes
    return {"tau": produced / passes, "acceptance_per_position": acceptance_per_position(drafted, accepted, draft),
            "acceptance_rate": sum(accepted) / max(1, sum(drafted)), "target_passes": passes,
            "tokens": produced, "tree_nodes_per_pass": nodes / passes, "lossless": lossless}


def measure_speed(runs: dict, prompts, n_tokens: int, threads: int, repeats: int, draft: int = 3) -> dict:
    """label -> (path, drafter): decode tokens/s of the drafter and of plain
    decoding of the same file, alternating in one process; medians over
    ``repeats`` passes over the prompt set; pooled tau; asserts losslessness."""
    from gguf_mtp.runtime import Engine, RuntimeOptions, generate, make_drafter

    out = {}
    for label, (path, drafter) in runs.items():
        dr = make_drafter(drafter)
        with Engine(path, dr.configure(RuntimeOptions(n_ctx=1024, n_threads=threads))) as eng:
            spec, plain, produced, passes, draft_s = [], [], 0, 0, 0.0
            for _ in range(repeats):
                t_spec = t_plain = 0.0
                n = 0
                for p in prompts:
                    g = generate(eng, p, n_tokens, drafter="none")
                    s = generate(eng, p, n_tokens, drafter=dr, draft=draft)
                    assert s.tokens == g.tokens, f"{label}: not lossless"
                    t_plain += g.stats.decode_s
                    t_spec += s.stats.decode_s
                    produced += s.stats.n_generated - 1
                    passes += s.stats.target_passes
                    draft_s += s.stats.draft_s
                    n += g.stats.n_generated - 1
                plain.append(n / t_plain)                    # decode tokens/s over the prompt set
                spec.append(n / t_spec)
        out[label] = {"tokens_per_s": statistics.median(spec), "plain_tokens_per_s": statistics.median(plain),
                      "speedup": statistics.median(spec) / statistics.median(plain), "tau": produced / passes,
                      "draft_ms_per_pass": 1e3 * draft_s / passes}
    return out


def plot_tau_curves(curves: dict, path, *, title: str, ylabel: str, label: str = "{init} init",
                    hline: tuple[float, str] | None = None) -> None:
    """tau against training steps, one line per init (``curves[init]`` = [{"steps", "tau"}, ...])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for init, style in (("recycled", "o-"), ("scratch", "s--")):
        pts = curves[init]
        ax.plot([p["steps"] for p in pts], [p["tau"] for p in pts], style, label=label.format(init=init))
    if hline is not None:
        ax.axhline(hline[0], color="grey", lw=1, ls=":", label=hline[1])
    ax.set_xlabel("training steps (same data, same schedule)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
