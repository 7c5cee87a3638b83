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


#: real text before the prompt at context depth (``--depth``): the shipped
#: distillation prompts (standard-library docstrings and code), prose first
DEPTH_CORPUS = Path(__file__).resolve().parents[1] / "data" / "prompts"


@lru_cache(maxsize=1)
def depth_corpus() -> str:
    prose = (DEPTH_CORPUS / "prose.txt").read_text().splitlines()
    code = [json.loads(line) for line in (DEPTH_CORPUS / "code.jsonl").read_text().splitlines() if line.strip()]
    return "\n".join(prose) + "\n\n" + "\n\n".join(code)


def with_depth(eng, prompt: str, depth: int) -> str | list[int]:
    """``prompt`` after ``depth`` tokens of real text (like llama-bench ``-d``), as
    tokens: the prompt's own leading special token (BOS), the depth text, then the
    prompt. The corpus repeats when the target's tokenizer needs more than it has
    (about 10k tokens)."""
    if depth <= 0:
        return prompt
    text = eng.tokenize(depth_corpus(), add_special=False)
    pre = (text * (depth // max(1, len(text)) + 1))[:depth]
    toks = eng.tokenize(prompt)
    lead = eng.tokenize("", add_special=True)
    n_lead = len(lead) if toks[:len(lead)] == lead else 0
    return toks[:n_lead] + pre + toks[n_lead:]
