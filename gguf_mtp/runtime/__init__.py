"""The speculative runtime on the patched llama.cpp (via llama-cpp-python).

    from gguf_mtp.runtime import Engine, generate
    with Engine("model.gguf") as eng:
        g = generate(eng, "def fib(n):", max_tokens=64, drafter="mtp", draft=3)
        print(g.text, g.stats.tau)
"""

from __future__ import annotations

from ..upstream import RuntimeMissing, installed_runtime
from .engine import Engine, RuntimeErrorLlama, RuntimeOptions
from .speculative import Generation, GenerationStats, generate_mtp, generate_plain

DRAFTERS = ("mtp", "none")


def generate(eng: Engine, prompt: str | list[int], max_tokens: int = 64, *,
             drafter: str = "mtp", draft: int = 3, add_special: bool = True) -> Generation:
    """Greedy generation from a text (or token) prompt with the chosen drafter."""
    tokens = eng.tokenize(prompt, add_special=add_special) if isinstance(prompt, str) else list(prompt)
    if not tokens:
        raise ValueError("empty prompt")
    if drafter == "none":
        out, st = generate_plain(eng, tokens, max_tokens)
    elif drafter == "mtp":
        out, st = generate_mtp(eng, tokens, max_tokens, draft)
    else:
        raise ValueError(f"unknown drafter {drafter!r}; choose one of {', '.join(DRAFTERS)}")
    return Generation(out, eng.detokenize(out), st)


def info() -> dict:
    """What `gguf-mtp runtime info` prints: the build marker plus live backend facts."""
    from . import native

    rt = installed_runtime()
    out = dict(rt.build)
    out["package_dir"] = str(rt.package_dir)
    out.update(native.system_info())
    native.load()  # also checks the patch symbols are present
    return out


__all__ = ["Engine", "RuntimeOptions", "RuntimeErrorLlama", "RuntimeMissing", "Generation",
           "GenerationStats", "generate", "generate_plain", "generate_mtp", "info", "DRAFTERS"]
