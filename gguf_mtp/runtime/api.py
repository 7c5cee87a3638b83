"""``SpeculativeLlama``: llama-cpp-python's completion API over the speculative
runtime, so code written for ``llama_cpp.Llama`` can switch by changing the
class (and gain ``drafter``/``draft``).

    llm = SpeculativeLlama("model.gguf", n_ctx=4096, drafter="mtp", draft="auto")
    out = llm.create_completion("def fib(n):", max_tokens=64, temperature=0)
    for chunk in llm("Once upon a time", max_tokens=32, stream=True): ...
    llm.create_chat_completion([{"role": "user", "content": "hi"}])

Responses have the same shapes as llama-cpp-python's (``text_completion`` and
``chat.completion`` objects, or iterators of chunks when ``stream=True``);
``llm.last_stats`` holds the speculative statistics of the last call.
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from .drafters import make_drafter
from .engine import Engine, RuntimeOptions
from .loop import GenerationStats, decode
from .sampling import SamplingParams


class SpeculativeLlama:
    def __init__(self, model_path: str, *, n_ctx: int = 4096, n_batch: int = 512, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, seed: int | None = None, drafter: str = "auto",
                 draft: int | str = "auto", draft_max: int = 8, exact: bool = True, verbose: bool = False):
        opts = RuntimeOptions(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, draft_max=draft_max,
                              exact=exact, verbose=verbose)
        if n_gpu_layers is not None:
            opts.n_gpu_layers = n_gpu_layers
        self.engine = Engine(model_path, make_drafter(drafter).configure(opts))
        self.model_path = str(model_path)
        self.seed = seed
        self.drafter = drafter
        self.draft = draft
        self.last_stats: GenerationStats | None = None
        self._calls = 0

    # -- llama_cpp.Llama-compatible helpers ----------------------------------

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode()
        return self.engine.tokenize(text, add_special=add_bos, parse_special=special)

    def detokenize(self, tokens) -> bytes:
        return b"".join(self.engine.token_bytes(t) for t in tokens)

    def n_ctx(self) -> int:
        return self.engine.opts.n_ctx

    def close(self) -> None:
        self.engine.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- completion ----------------------------------------------------------

    def create_completion(self, prompt: str | list[int], max_tokens: int | None = 16, temperature: float = 0.8,
                          top_p: float = 0.95, min_p: float = 0.05, top_k: int = 40, repeat_penalty: float = 1.0,
                          stop: str | list[str] | None = None, stream: bool = False, seed: int | None = None,
                          drafter: str | None = None, draft: int | str | None = None, **_ignored):
        """Like ``llama_cpp.Llama.create_completion`` (same defaults); extra knobs:
        ``drafter`` and ``draft`` override the instance's for this call."""
        if seed is None and self.seed is not None:
            seed = self.seed + self._calls
        self._calls += 1
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, seed=seed)
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if max_tokens is None or max_tokens <= 0:
            max_tokens = self.n_ctx() - len(tokens)
        if len(tokens) + max_tokens > self.n_ctx():
            max_tokens = self.n_ctx() - len(tokens)
            if max_tokens <= 0:
                raise ValueError(f"prompt of {len(tokens)} tokens does not fit in n_ctx={self.n_ctx()}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        chunks = self._stream(tokens, max_tokens, params, stops, drafter or self.drafter,
                              self.draft if draft is None else draft)
        return chunks if stream else _collect(chunks)

    __call__ = create_completion

    def _stream(self, tokens, max_tokens, params, stops, drafter, draft) -> Iterator[dict]:
        cid = f"cmpl-{uuid.uuid4()}"
        created = int(time.time())
        st = GenerationStats(drafter, draft)
        self.last_stats = st
        out: list[int] = []
        sent = 0                    # characters of text already yielded
        text = ""
        finish = "length"
        hold = max((len(s) for s in stops), default=0)
        gen = decode(self.engine, tokens, max_tokens, drafter=drafter, draft=draft, params=params, stats=st)
        data = b""                  # bytes of the generated text (end-of-generation token excluded)
        for new in gen:
            out += new
            eog = self.engine.is_eog(out[-1])
            data += self.detokenize(new[:-1] if eog else new)
            text = data.decode("utf-8", errors="ignore")
            cut = _first_stop(text, stops)
            if cut is not None:
                text = text[:cut]
                finish = "stop"
                gen.close()
                break
            if eog:
                finish = "stop"
                break
            # hold back what could still grow into a stop string
            safe = len(text) - hold if hold else len(text)
            if safe > sent:
                yield _chunk(cid, created, self.model_path, text[sent:safe], None)
                sent = safe
        if len(text) > sent:
            yield _chunk(cid, created, self.model_path, text[sent:], None)
        final = _chunk(cid, created, self.model_path, "", finish)
        final["usage"] = {"prompt_tokens": len(tokens), "completion_tokens": len(out),
                          "total_tokens": len(tokens) + len(out)}
        final["gguf_mtp"] = st.as_dict()
        yield final

    # -- chat ----------------------------------------------------------------

    def chat_formatter(self):
        return chat_formatter(self.engine, self.model_path)

    def create_chat_completion(self, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.2,
                               top_p: float = 0.95, min_p: float = 0.05, top_k: int = 40,
                               repeat_penalty: float = 1.0, stop: str | list[str] | None = None,
                               stream: bool = False, seed: int | None = None, **kw):
        """Like ``llama_cpp.Llama.create_chat_completion``: the prompt is rendered
        with the chat template stored in the GGUF."""
        from llama_cpp.llama_chat_format import (
            _convert_completion_to_chat,
            _convert_text_completion_chunks_to_chat,
        )

        fmt = self.chat_formatter()(messages=messages)
        stops = ([stop] if isinstance(stop, str) else list(stop or [])) + (
            [fmt.stop] if isinstance(fmt.stop, str) else list(fmt.stop or []))
        tokens = self.tokenize(fmt.prompt, add_bos=not fmt.added_special, special=True)
        res = self.create_completion(tokens, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                     min_p=min_p, top_k=top_k, repeat_penalty=repeat_penalty, stop=stops,
                                     stream=stream, seed=seed, **kw)
        if stream:
            return _convert_text_completion_chunks_to_chat(res)
        return _convert_completion_to_chat(res)


def chat_formatter(eng, name=None):
    """llama-cpp-python's Jinja2 formatter for the chat template stored in the
    GGUF behind ``eng`` (raises ValueError when it has none)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = eng.meta("tokenizer.chat_template")
    if not template:
        raise ValueError(f"{name or 'the model'} has no chat template (tokenizer.chat_template)")

    def piece(key):
        tid = eng.meta(key)
        return eng.token_bytes(int(tid)).decode(errors="ignore") if tid not in (None, "") else ""

    return Jinja2ChatFormatter(template, eos_token=piece("tokenizer.ggml.eos_token_id"),
                               bos_token=piece("tokenizer.ggml.bos_token_id"))


def _first_stop(text: str, stops: list[str]) -> int | None:
    hits = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(hits) if hits else None


def _chunk(cid, created, model, text, finish) -> dict:
    return {"id": cid, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}]}


def _collect(chunks: Iterator[dict]) -> dict:
    text = ""
    last = None
    for c in chunks:
        text += c["choices"][0]["text"]
        last = c
    last = dict(last)
    last["choices"] = [{"text": text, "index": 0, "logprobs": None,
                        "finish_reason": last["choices"][0]["finish_reason"]}]
    return last
