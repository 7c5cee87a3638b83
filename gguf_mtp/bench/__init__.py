"""``gguf-mtp bench``: tokens/s of every drafter across quant levels, draft
lengths and head types, against plain decoding, llama.cpp's own draft-mtp and
llama-cpp-python's prompt-lookup decoding.

Three stages, each usable on its own:

1. :mod:`.variants` builds the files: the target's drafter families (native
   MTP, FastMTP-tuned, EAGLE, Medusa; heads trained by self-distillation
   through :mod:`gguf_mtp.train`) quantized to every level with the heads at
   every head type, in a work directory that later runs reuse;
2. :mod:`.measure` times them: one process, one file at a time, plain and
   speculative back to back on the shipped prompt sets, median of repeats,
   greedy (every speculative output is checked against plain decoding), with
   the target's batch-cost curve c(n) and the speed bound it implies;
3. :mod:`.report` turns the JSON into a Markdown table and PNG plots.

:func:`run_bench` runs all three for a :class:`BenchConfig`.
"""

from .config import BenchConfig
from .run import run_bench

__all__ = ["BenchConfig", "run_bench"]
