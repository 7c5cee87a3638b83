"""What a benchmark run measures: :class:`BenchConfig`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

#: drafters the bench knows, in table order
#:   none        plain decoding (every row's baseline)
#:   auto        gguf-mtp's default: drafter and K chosen per pass from measured costs and acceptance
#:   lcp-ngram   llama-cpp-python's LlamaPromptLookupDecoding through llama_cpp.Llama
#:   ngram       gguf-mtp's prompt-lookup n-gram chain
#:   ngram-tree  the n-gram drafter's tree (several continuations per pass)
#:   upstream    llama.cpp's own draft-mtp (llama-speculative-simple of the pinned commit)
#:   mtp         the native MTP head, full vocabulary (the file upstream runs too)
#:   mtp-cv      the native MTP head with the compressed draft vocabulary
#:   mtp-tree    the native MTP head driving an EAGLE-2 dynamic tree (no training)
#:   fastmtp     the MTP head fine-tuned with FastMTP (shared recursive head, beta-decay)
#:   eagle       the MTP block recycled into an EAGLE drafter and trained (chain)
#:   eagle-tree  the same drafter, EAGLE-2 dynamic tree
#:   medusa      Medusa heads recycled from the MTP layer and trained (static tree)
BENCH_DRAFTERS = ("none", "auto", "lcp-ngram", "ngram", "ngram-tree", "upstream", "mtp", "mtp-cv", "mtp-tree",
                  "fastmtp", "eagle", "eagle-tree", "medusa")

#: drafter -> the file family it runs on
FAMILY = {"none": "base", "auto": "base", "lcp-ngram": "base", "ngram": "base", "ngram-tree": "base",
          "upstream": "base", "mtp": "base", "mtp-cv": "mtp", "mtp-tree": "base", "fastmtp": "fastmtp",
          "eagle": "eagle", "eagle-tree": "eagle", "medusa": "medusa"}

#: drafters timed on the file `gguf-mtp convert` gives by default: the MTP head with a draft
#: vocabulary when the target has one and the bench makes one (``draft_vocab`` > 0), else ``FAMILY``'s
ON_DEFAULT_FILE = {"auto"}

#: drafters whose heads are trained by the bench
TRAINED = {"fastmtp", "eagle", "eagle-tree", "medusa"}

#: drafters that need an MTP layer in the target
NEEDS_MTP = {"upstream", "mtp", "mtp-cv", "mtp-tree", *TRAINED}

#: drafters measured at one draft setting only (trees: their own shape; auto: its own K, 0 in tables)
FIXED_DRAFT = {"eagle-tree": 3, "mtp-tree": 3, "medusa": 3, "auto": 0}

QUANTS = ("f16", "q8_0", "q4_k_m", "q4_0")
#: the quant level "source": the target file as it is (an already quantized GGUF,
#: e.g. a retrofitted Q4_1), heads included
SOURCE = "source"
HEAD_TYPES = ("f16", "q8_0", "q4_0")


@dataclass
class BenchConfig:
    """One benchmark run.

    ``target`` is a GGUF with an MTP layer at high precision (f32/f16/bf16),
    the source of every quant level; ``None`` means the embedded default model.
    """

    target: str | None = None
    #: quant levels are made from ``target`` with llama.cpp's quantizer; ``source``
    #: measures the target itself
    out: str = "bench-results"
    work: str | None = None                     # default: the gguf-mtp cache, keyed by the target
    quants: tuple[str, ...] = QUANTS
    drafters: tuple[str, ...] = BENCH_DRAFTERS
    drafts: tuple[int, ...] = (1, 2, 3, 4)
    head_types: tuple[str, ...] = HEAD_TYPES    # swept for mtp-cv at draft ``head_sweep_draft``
    head_type: str = "q8_0"                     # the heads' type everywhere else
    head_sweep_draft: int = 3
    prompt_sets: tuple[str, ...] = ("code", "prose", "chat")
    prompts_per_set: int = 3
    n_tokens: int = 64
    #: context depths (tokens of real text before each prompt, like llama-bench -d); 0 = the main tables
    depths: tuple[int, ...] = (0,)
    repeats: int = 5                            # interleaved; medians and IQRs over them
    threads: int | None = None
    n_gpu_layers: int | None = None
    draft_vocab: int = 4096                     # compressed draft vocabulary of the trained/cv files (0: off)
    train_steps: int = 200                      # per trained drafter
    train_prompts: int = 192                    # self-distillation prompts
    train_max_tokens: int = 96
    # c(n) measured for n = 1..cost_n_max: as many rows as a tree verifies (22-24 at K = 3), since
    # c(n) past the measured points is extrapolated: from c(9) the f16 curve (which jumps at 5 rows)
    # put c(23) at 16.5 and the EAGLE-2 tree's bound at 0.15 under a measured 0.27
    cost_n_max: int = 32
    quick: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)

    @classmethod
    def quick_config(cls, **kw) -> "BenchConfig":
        """The CI mode: every stage and every drafter runs, on as little as shows the
        pipeline works (one quant, two head types, short generations, a few training steps)."""
        base = dict(quants=("q8_0",), drafters=BENCH_DRAFTERS,
                    drafts=(2,), head_types=("q8_0", "q4_0"), head_sweep_draft=2, prompts_per_set=1,
                    n_tokens=16, repeats=1, depths=(0, 48), draft_vocab=1024, train_steps=2, train_prompts=8,
                    train_max_tokens=24, cost_n_max=4, quick=True)
        base.update(kw)
        return cls(**base)

    def validate(self) -> None:
        bad = [d for d in self.drafters if d not in BENCH_DRAFTERS]
        if bad:
            raise ValueError(f"unknown drafter(s) {', '.join(bad)}; choose from {', '.join(BENCH_DRAFTERS)}")
        from ..convert.quantize import FTYPES
        from ..convert.quantize import HEAD_TYPES as QHEAD

        bad = [q for q in self.quants if q not in FTYPES and q != SOURCE]
        if bad:
            raise ValueError(f"unknown quant level(s) {', '.join(bad)}; choose from {', '.join(FTYPES)}")
        bad = [h for h in (*self.head_types, self.head_type) if h not in QHEAD]
        if bad:
            raise ValueError(f"unknown head type(s) {', '.join(bad)}; choose from {', '.join(QHEAD)}")
        if not self.drafts or min(self.drafts) < 1:
            raise ValueError("draft lengths must be >= 1")
        if not self.depths or min(self.depths) < 0:
            raise ValueError("context depths must be >= 0")
        if self.repeats < 1 or self.n_tokens < 2:
            raise ValueError("repeats must be >= 1 and n_tokens >= 2")

    def as_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    def out_dir(self) -> Path:
        return Path(self.out)
