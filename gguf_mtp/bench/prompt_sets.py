"""The benchmark's fixed prompt sets (``gguf_mtp/data/bench_prompts.json``):
code, prose and chat. Chat prompts are rendered with the GGUF's own chat
template (llama-cpp-python's Jinja2 formatter); a file without one gets a
plain ``User:`` / ``Assistant:`` transcript."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

PROMPTS_FILE = Path(__file__).resolve().parents[1] / "data" / "bench_prompts.json"
SETS = ("code", "prose", "chat")


@lru_cache(maxsize=1)
def load_sets() -> dict:
    return json.loads(PROMPTS_FILE.read_text())


def render(eng, sets, per_set: int) -> list[tuple[str, str]]:
    """``(set name, prompt text)`` for the first ``per_set`` prompts of each set."""
    data = load_sets()
    out = []
    for name in sets:
        if name not in data:
            raise ValueError(f"unknown prompt set {name!r}; choose from {', '.join(data)}")
        for item in data[name][:per_set]:
            out.append((name, item if isinstance(item, str) else render_chat(eng, item)))
    return out


def render_chat(eng, messages: list[dict]) -> str:
    from ..runtime.api import chat_formatter

    try:
        fmt = chat_formatter(eng)
    except ValueError:
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
        return "\n".join(lines) + "\nAssistant:"
    return fmt(messages=messages).prompt
