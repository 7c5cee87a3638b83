"""``SpeculativeLlama``: llama-cpp-python's completion API over the speculative
runtime, so code written for ``llama_cpp.Llama`` can switch by changing the
class (and gain ``drafter``/``draft``).

    llm = SpeculativeLlama("model.gguf", n_ctx=4096, drafter="mtp", draft="auto")
    out = llm.create_completion("def fib(n):", max_tokens=64, temperature=0)
    for chunk in llm("Once upon a time", max_tokens=32, stream=True): ...
    llm.create_chat_completion([{"role": "user", "content": "hi"}])

Responses have the same shapes as llama-cpp-python's (``text_completion`` and
``chat.completion`` objects, or iterators of chunks when ``stream=True``);
``llm.last_stats`` holds the speculative statistics of the last call. The
final response (or chunk) also carries llama-server's ``timings`` object
(``prompt_n``, ``cache_n``, ``predicted_per_second``, ``draft_n``,
``draft_n_accepted``, ...) and ``gguf_mtp`` (tau, acceptance per draft
position, the drafter and draft length used).

A call may pick another drafter than the instance's among ``drafters`` (the
engine is configured for all of them). With ``cache_prompt`` (the default,
as llama-cpp-python and llama-server do) a prompt reuses the cache of the
previous prompt's common prefix: a chat's next turn prefills only what is new
(``decode(reuse=True)``: bit-exact, see ``loop.PREFILL_CHUNK``).
"""

from __future__ import annotations

import time
import uuid
from typing import Iterator

from .drafters import DRAFTERS, configure_for
from .engine import Engine, RuntimeOptions
from .loop import GenerationStats, decode
from .sampling import SamplingParams


class SpeculativeLlama:
    def __init__(self, model_path: str, *, n_ctx: int = 4096, n_batch: int = 512, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, seed: int | None = None, drafter: str = "auto",
                 draft: int | str = "auto", draft_max: int = 8, exact: bool = True, verbose: bool = False,
                 drafters: tuple[str, ...] | list[str] | None = None, cache_prompt: bool = True):
        opts = RuntimeOptions(n_ctx=n_ctx, n_batch=n_batch, n_threads=n_threads, draft_max=draft_max,
                              exact=exact, verbose=verbose)
        if n_gpu_layers is not None:
            opts.n_gpu_layers = n_gpu_layers
        #: the drafters a call may choose (``drafter=`` per call); the engine is configured for all
        self.drafters = tuple(dict.fromkeys([drafter, "none", *(drafters or ())]))
        for name in self.drafters:
            if name not in DRAFTERS:
                raise ValueError(f"unknown drafter {name!r}; choose one of {', '.join(DRAFTERS)}")
        self.engine = Engine(model_path, configure_for(self.drafters, opts))
        self.cache_prompt = cache_prompt
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
                          drafter: str | None = None, draft: int | str | None = None, exact: bool | None = None,
                          cache_prompt: bool | None = None, **_ignored):
        """Like ``llama_cpp.Llama.create_completion`` (same defaults); extra knobs:
        ``drafter`` and ``draft`` override the instance's for this call (``drafter``
        among ``self.drafters``), ``exact`` the batch-invariant verification,
        ``cache_prompt`` the prefix reuse."""
        drafter = drafter or self.drafter
        if drafter not in self.drafters:
            raise ValueError(f"drafter {drafter!r} is not configured on this model; choose one of "
                             f"{', '.join(self.drafters)} (or load it with drafters=[..., {drafter!r}])")
        if seed is None and self.seed is not None:
            seed = self.seed + self._calls
        self._calls += 1
        # a seed means "this text again": drafts are then the heads' most likely tokens
        # (match rule), so the text does not depend on the drafter or what auto learned
        params = SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                repeat_penalty=repeat_penalty, seed=seed, match_drafts=seed is not None)
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        if max_tokens is None or max_tokens <= 0:
            max_tokens = self.n_ctx() - len(tokens)
        if len(tokens) + max_tokens > self.n_ctx():
            max_tokens = self.n_ctx() - len(tokens)
            if max_tokens <= 0:
                raise ValueError(f"prompt of {len(tokens)} tokens does not fit in n_ctx={self.n_ctx()}")
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        chunks = self._stream(tokens, max_tokens, params, stops, drafter, self.draft if draft is None else draft,
                              self.engine.opts.exact if exact is None else bool(exact),
                              self.cache_prompt if cache_prompt is None else bool(cache_prompt))
        return chunks if stream else _collect(chunks)

    __call__ = create_completion

    def _stream(self, tokens, max_tokens, params, stops, drafter, draft, exact, reuse) -> Iterator[dict]:
        cid = f"cmpl-{uuid.uuid4()}"
        created = int(time.time())
        st = GenerationStats(drafter, draft)
        self.last_stats = st
        out: list[int] = []
        eng = self.engine
        was_exact, eng.opts.exact = eng.opts.exact, exact
        gen = decode(eng, tokens, max_tokens, drafter=drafter, draft=draft, params=params, stats=st, reuse=reuse)
        try:
            finish = yield from self._pieces(gen, out, stops, cid, created)
        finally:
            gen.close()
            eng.opts.exact = was_exact
        final = _chunk(cid, created, self.model_path, "", finish)
        final["usage"] = {"prompt_tokens": len(tokens), "completion_tokens": len(out),
                          "total_tokens": len(tokens) + len(out)}
        final["timings"] = timings(st)
        final["gguf_mtp"] = st.as_dict()
        yield final

    def _pieces(self, gen, out, stops, cid, created):
        """Yield text chunks of a generation as they become safe to send (a stop
        string could still complete), up to a stop string or the end of generation;
        the tokens go to ``out``; returns the finish reason."""
        sent, text, finish = 0, "", "length"
        data = b""                  # bytes of the generated text (end-of-generation token excluded)
        hold = max((len(s) for s in stops), default=0)
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
        return finish

    # -- chat ----------------------------------------------------------------

    def chat_formatter(self):
        return chat_formatter(self.engine, self.model_path)

    def create_chat_completion(self, messages: list[dict], max_tokens: int | None = None, temperature: float = 0.2,
                               top_p: float = 0.95, min_p: float = 0.05, top_k: int = 40,
                               repeat_penalty: float = 1.0, stop: str | list[str] | None = None,
                               stream: bool = False, seed: int | None = None, **kw):
        """Like ``llama_cpp.Llama.create_chat_completion``: the prompt is rendered
        with the chat template stored in the GGUF."""
        fmt = self.chat_formatter()(messages=messages)
        stops = ([stop] if isinstance(stop, str) else list(stop or [])) + (
            [fmt.stop] if isinstance(fmt.stop, str) else list(fmt.stop or []))
        tokens = self.tokenize(fmt.prompt, add_bos=not fmt.added_special, special=True)
        res = self.create_completion(tokens, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                                     min_p=min_p, top_k=top_k, repeat_penalty=repeat_penalty, stop=stops,
                                     stream=stream, seed=seed, **kw)
        return _chat_chunks(res) if stream else _chat_response(res)

    def chat_prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The tokens a chat request's prompt has (the server checks they fit first)."""
        fmt = self.chat_formatter()(messages=messages)
        return self.tokenize(fmt.prompt, add_bos=not fmt.added_special, special=True)


def timings(st: GenerationStats) -> dict:
    """llama-server's ``timings`` object for one generation (tools that read
    llama-server's speculative statistics read these names)."""
    n_new = max(0, st.n_prompt - st.n_reused)
    n_pred = max(0, st.n_generated - 1)
    return {
        "cache_n": st.n_reused, "prompt_n": n_new, "prompt_ms": 1000 * st.prompt_s,
        "prompt_per_token_ms": 1000 * st.prompt_s / n_new if n_new else 0.0,
        "prompt_per_second": n_new / st.prompt_s if st.prompt_s > 0 else 0.0,
        "predicted_n": st.n_generated, "predicted_ms": 1000 * st.decode_s,
        "predicted_per_token_ms": 1000 * st.decode_s / n_pred if n_pred else 0.0,
        "predicted_per_second": st.tokens_per_s,
        "draft_n": sum(st.drafted), "draft_n_accepted": sum(st.accepted),
    }


_EXTRA = ("usage", "timings", "gguf_mtp")


def _chat_response(res: dict) -> dict:
    choice = res["choices"][0]
    out = {"id": "chat" + res["id"], "object": "chat.completion", "created": res["created"], "model": res["model"],
           "choices": [{"index": 0, "message": {"role": "assistant", "content": choice["text"]},
                        "logprobs": None, "finish_reason": choice["finish_reason"]}]}
    out.update({k: res[k] for k in _EXTRA if k in res})
    return out


def _chat_chunks(chunks: Iterator[dict]) -> Iterator[dict]:
    first = True
    for c in chunks:
        choice = c["choices"][0]
        base = {"id": "chat" + c["id"], "object": "chat.completion.chunk", "created": c["created"],
                "model": c["model"]}
        if first:
            yield {**base, "choices": [{"index": 0, "delta": {"role": "assistant"},
                                        "logprobs": None, "finish_reason": None}]}
            first = False
        delta = {"content": choice["text"]} if choice["text"] else {}
        if delta or choice["finish_reason"]:
            out = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                        "finish_reason": choice["finish_reason"]}]}
            out.update({k: c[k] for k in _EXTRA if k in c})
            yield out


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
