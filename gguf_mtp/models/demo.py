"""``gguf-mtp demo``: the main job end to end on the embedded default model.

Materialize the default Qwen3.5+MTP checkpoint, convert and quantize it to one
GGUF (trunk + MTP head), give the head the model's used vocabulary as its draft
vocabulary, then generate greedily on fixed prompts with plain decoding, with
the configuration a user should run (``drafter="auto"``: the drafter and draft
length that pay, per pass) and with the MTP head at fixed draft lengths, over
the draft vocabulary and over the full vocabulary. Every speculative output is
checked against plain decoding; the table shows speed, the speedup, tau and the
acceptance per draft position. Runs are interleaved (plain, then each row, per
prompt and repeat) so that they share the machine's state alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..runtime import Engine, RuntimeOptions, generate, make_drafter
from ..runtime.loop import acceptance_per_position


@dataclass
class DemoRow:
    label: str
    drafter: str
    draft: int | str
    file: str = "draft-vocab"          # which engine: "draft-vocab" or "full-vocab"
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

    def acceptance(self, k_max: int) -> list[float]:
        return acceptance_per_position(self.drafted, self.accepted, k_max)


def demo_rows(drafts=(1, 2, 3)) -> list[DemoRow]:
    rows = [DemoRow("plain", "none", 0), DemoRow("auto (recommended)", "auto", "auto")]
    rows += [DemoRow("mtp, draft vocabulary", "mtp", k) for k in drafts]
    rows += [DemoRow("mtp, full vocabulary", "mtp", k, file="full-vocab") for k in drafts]
    return rows


def run_demo(files: dict[str, str], prompts, *, n_predict: int = 64, drafts=(1, 2, 3), repeats: int = 2,
             n_threads: int | None = None, n_gpu_layers: int | None = None, progress=None) -> list[DemoRow]:
    """Plain vs auto vs MTP at each draft length; ``files`` maps "draft-vocab" /
    "full-vocab" to GGUF paths. One warm-up generation per engine is discarded."""
    opts = make_drafter("auto").configure(RuntimeOptions(n_threads=n_threads, draft_max=max(8, *drafts)))
    if n_gpu_layers is not None:
        opts.n_gpu_layers = n_gpu_layers
    rows = demo_rows(drafts)
    engines = {name: Engine(path, opts) for name, path in files.items()}
    try:
        for eng in engines.values():
            generate(eng, prompts[0], 8, drafter="mtp", draft=max(drafts))       # warm-up
            generate(eng, prompts[0], 8, drafter="auto")                         # measures the cost model once
        for _ in range(repeats):
            for prompt in prompts:
                plain = None
                for row in rows:
                    g = generate(engines[row.file], prompt, n_predict, drafter=row.drafter, draft=row.draft)
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
    finally:
        for eng in engines.values():
            eng.close()
    return rows


def format_table(rows: list[DemoRow]) -> str:
    base = rows[0].tokens_per_s or 1.0
    k_max = max((r.draft for r in rows if isinstance(r.draft, int)), default=0)
    head = ["configuration", "K", "tok/s", "speedup", "tau"] + [f"acc@{i}" for i in range(1, k_max + 1)] + ["== plain"]
    lines = [head]
    for r in rows:
        acc = r.acceptance(k_max)
        lines.append([r.label, str(r.draft), f"{r.tokens_per_s:.1f}", f"{r.tokens_per_s / base:.2f}x",
                      f"{r.tau:.2f}"] + [f"{acc[i]:.2f}" if i < len(acc) and r.drafter != "none" else "-"
                                         for i in range(k_max)]
                     + ["yes" if r.lossless else "NO"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(line, widths)))
                     for line in lines)
