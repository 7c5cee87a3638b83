"""The speculative runtime on the patched llama.cpp (via llama-cpp-python).

    from gguf_mtp.runtime import Engine, generate
    with Engine("model.gguf") as eng:
        g = generate(eng, "def fib(n):", max_tokens=64, drafter="mtp", draft=3)
        print(g.text, g.stats.tau)

:class:`SpeculativeLlama` (``gguf_mtp.runtime.api``) offers the same through
llama-cpp-python's completion API shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..upstream import RuntimeMissing, installed_runtime
from .drafters import (
    DRAFTERS,
    Drafter,
    EagleTreeDrafter,
    MTPDrafter,
    NgramDrafter,
    NgramTreeDrafter,
    Proposal,
    make_drafter,
)
from .engine import Engine, RuntimeErrorLlama, RuntimeOptions
from .loop import GenerationStats, decode
from .sampling import SamplingParams
from .tree import DraftTree, verify_tree, verify_tree_greedy


@dataclass
class Generation:
    tokens: list[int]
    text: str
    stats: GenerationStats


def generate(eng: Engine, prompt: str | list[int], max_tokens: int = 64, *,
             drafter: str | Drafter = "auto", draft: int | str = "auto", params: SamplingParams | None = None,
             add_special: bool = True, reuse: bool = False) -> Generation:
    """Generate from a text (or token) prompt with the chosen drafter
    (greedy unless ``params`` sets a temperature). ``reuse``: prefill only what
    follows the prefix this prompt shares with the previous ``reuse=True``
    call's (bit-exact; see ``loop.decode``)."""
    tokens = eng.tokenize(prompt, add_special=add_special) if isinstance(prompt, str) else list(prompt)
    dr = make_drafter(drafter)
    st = GenerationStats(dr.name, draft)
    out: list[int] = []
    for chunk in decode(eng, tokens, max_tokens, drafter=dr, draft=draft, params=params, stats=st, reuse=reuse):
        out += chunk
    return Generation(out, eng.detokenize(out), st)


def info() -> dict:
    """What `gguf-mtp runtime info` prints: the build marker plus live backend
    facts (compiled CPU features, active extra buffer types) and whether the
    runtime passed its smoke test on this CPU."""
    from . import cpu, native, smoke

    rt = installed_runtime()
    out = dict(rt.build)
    out["package_dir"] = str(rt.package_dir)
    out["this_cpu"] = cpu.describe()
    out["verified_here"] = smoke.verified(out.get("key", "")) is not None
    out.update(native.system_info())
    native.load()  # also checks the patch symbols are present
    return out


__all__ = ["Engine", "RuntimeOptions", "RuntimeErrorLlama", "RuntimeMissing", "Generation", "GenerationStats",
           "SamplingParams", "Drafter", "MTPDrafter", "NgramDrafter", "NgramTreeDrafter", "EagleTreeDrafter", "Proposal", "DraftTree",
           "verify_tree", "verify_tree_greedy", "DRAFTERS", "make_drafter",
           "generate", "decode", "info"]
