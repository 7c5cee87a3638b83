"""``gguf-mtp demo``: the main job end to end on the embedded default model.

Materialize the default Qwen3.5+MTP checkpoint, convert it to one GGUF, then
generate greedily on fixed prompts with plain decoding and with the native MTP
drafter at several draft lengths, check that every speculative output equals
the plain one, and tabulate speed, tau and acceptance per draft position.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime import Engine, RuntimeOptions, generate
from ..runtime.loop import acceptance_per_position


@dataclass
class DemoRow:
    drafter: str
    draft: int
    tokens: int = 0
    decode_s: float = 0.0
    passes: int = 0
    drafted: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    lossless: bool = True

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.decode_s if self.decode_s else 0.0

    @property
    def tau(self) -> float:
        return self.tokens / self.passes if self.passes else 0.0

    def acceptance(self) -> list[float]:
        return acceptance_per_position(self.drafted, self.accepted, self.draft)


def run_demo(gguf_path, prompts, *, n_predict: int = 64, drafts=(1, 2, 3),
             n_threads: int | None = None, n_gpu_layers: int | None = None, progress=None) -> list[DemoRow]:
    """Plain vs MTP on each prompt; one warm-up generation is discarded."""
    opts = RuntimeOptions(n_threads=n_threads, draft_max=max(drafts))
    if n_gpu_layers is not None:
        opts.n_gpu_layers = n_gpu_layers
    rows = [DemoRow("none", 0)] + [DemoRow("mtp", k) for k in drafts]
    with Engine(gguf_path, opts) as eng:
        generate(eng, prompts[0], 8, drafter="mtp", draft=max(drafts))  # warm-up
        for prompt in prompts:
            plain = None
            for row in rows:
                g = generate(eng, prompt, n_predict, drafter=row.drafter, draft=row.draft)
                st = g.stats
                if plain is None:
                    plain = g.tokens
                row.lossless &= g.tokens == plain
                row.tokens += st.n_generated - 1
                row.decode_s += st.decode_s
                row.passes += st.target_passes
                row.drafted += st.drafted
                row.accepted += st.accepted
                if progress:
                    progress(row, g)
    return rows


def format_table(rows: list[DemoRow]) -> str:
    base = rows[0].tokens_per_s or 1.0
    k_max = max(r.draft for r in rows)
    head = ["drafter", "K", "tok/s", "speedup", "tau"] + [f"acc@{i}" for i in range(1, k_max + 1)] + ["== plain"]
    lines = [head]
    for r in rows:
        acc = r.acceptance()
        lines.append([r.drafter, str(r.draft), f"{r.tokens_per_s:.1f}", f"{r.tokens_per_s / base:.2f}x",
                      f"{r.tau:.2f}"] + [f"{acc[i]:.2f}" if i < len(acc) else "-" for i in range(k_max)]
                     + ["yes" if r.lossless else "NO"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines)
