"""The OpenAI-compatible HTTP API (FastAPI + sse-starlette, as llama-cpp-python's server).

Endpoints: ``GET /v1/models``, ``POST /v1/completions``, ``POST
/v1/chat/completions`` (the GGUF's chat template), ``GET /health``. Streams are
server-sent events ending with ``data: [DONE]``. Request fields: OpenAI's
(``max_tokens``, ``temperature``, ``top_p``, ``stop``, ``seed``, ``stream``) and
llama.cpp's (``top_k``, ``min_p``, ``repeat_penalty``, ``cache_prompt``), plus the
drafting extensions ``drafter``, ``draft`` and ``exact``. Every response (the
last chunk of a stream) carries ``usage``, llama-server's ``timings``
(``draft_n``, ``draft_n_accepted``, ``cache_n``, ``predicted_per_second``, ...)
and ``gguf_mtp`` (tau, acceptance per draft position). Errors come back in
OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from typing import Any, Literal, Union

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sse_starlette.sse import EventSourceResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .worker import Busy, Worker


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


class _Sampling(BaseModel):
    # unknown fields are ignored, as OpenAI clients send fields a local server does not use
    model_config = ConfigDict(extra="ignore")

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    temperature: float = Field(default=0.8, ge=0.0, le=2.0)
    top_p: float = Field(default=0.95, gt=0.0, le=1.0)
    top_k: int = Field(default=40, ge=0)
    min_p: float = Field(default=0.05, ge=0.0, le=1.0)
    repeat_penalty: float = Field(default=1.0, gt=0.0)
    seed: int | None = None
    stop: Union[str, list[str], None] = None
    stream: bool = False
    n: int = Field(default=1, ge=1, le=1)
    # llama-server's prompt cache switch; gguf-mtp's drafting extensions
    cache_prompt: bool = True
    drafter: str | None = None
    draft: Union[int, Literal["auto"], None] = None
    exact: bool | None = None

    def knobs(self) -> dict:
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if len(stop) > 4:
            raise APIError(400, "at most 4 stop sequences", param="stop")
        return dict(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k, min_p=self.min_p,
                    repeat_penalty=self.repeat_penalty, seed=self.seed, stop=stop, drafter=self.drafter,
                    draft=self.draft, exact=self.exact, cache_prompt=self.cache_prompt)


class CompletionRequest(_Sampling):
    prompt: Union[str, list[int], list[str]]
    max_tokens: int | None = Field(default=16, ge=0)


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: Union[str, list[dict[str, Any]], None] = None

    def text(self) -> str:
        if isinstance(self.content, list):
            parts = []
            for p in self.content:
                if p.get("type") != "text" or not isinstance(p.get("text"), str):
                    raise APIError(400, "only text content parts are supported", param="messages")
                parts.append(p["text"])
            return "".join(parts)
        return self.content or ""


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)


def create_app(make_llm, *, model_id: str, api_key: str | None = None, max_queue: int = 16) -> FastAPI:
    """The FastAPI application serving the model ``make_llm()`` loads (on the
    worker thread, see :mod:`.worker`) under the name ``model_id``. Returns once
    the model is loaded (raises what loading raised)."""
    worker = Worker(make_llm, max_queue=max_queue)
    llm = worker.llm
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.close()

    app = FastAPI(title="gguf-mtp", description="OpenAI-compatible server with speculative decoding",
                  lifespan=lifespan)
    app.state.worker = worker
    app.state.llm = llm
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        msg = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ())[1:]) or 'body'}: {e.get('msg')}" for e in errs)
        return APIError(400, msg or "malformed request body", param=where).response()

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception):
        return APIError(500, f"{type(exc).__name__}: {exc}", "server_error").response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return APIError(exc.status_code, str(exc.detail), kind).response()

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            got = request.headers.get("authorization", "")
            token = got[7:] if got.lower().startswith("bearer ") else request.headers.get("x-api-key", "")
            if not secrets.compare_digest(token.encode(), api_key.encode()):
                return APIError(401, "invalid or missing API key (Authorization: Bearer KEY)",
                                "invalid_request_error", code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/health")
    def health():
        return {"status": "ok", "queued": worker.waiting}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{
            "id": model_id, "object": "model", "created": created, "owned_by": "gguf-mtp",
            "meta": {"path": llm.model_path, "n_ctx": llm.n_ctx(), "drafter": llm.drafter, "draft": llm.draft,
                     "drafters": list(llm.drafters), "mtp_layers": llm.engine.n_nextn,
                     "medusa_heads": llm.engine.n_medusa}}]}

    def check(req: _Sampling, prompt_tokens: int) -> int:
        if req.model not in (None, "", model_id):
            raise APIError(404, f"The model '{req.model}' does not exist; this server serves '{model_id}'",
                           param="model", code="model_not_found")
        if req.drafter is not None and req.drafter not in llm.drafters:
            raise APIError(400, f"drafter '{req.drafter}' is not loaded on this server; it has "
                                f"{', '.join(llm.drafters)} (start it with --drafters ...)", param="drafter")
        if isinstance(req.draft, int) and not 0 <= req.draft <= llm.engine.opts.draft_max:
            raise APIError(400, f"draft must be 'auto' or in 0..{llm.engine.opts.draft_max}", param="draft")
        n_ctx = llm.n_ctx()
        want = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if prompt_tokens >= n_ctx:
            raise APIError(400, f"This model's maximum context length is {n_ctx} tokens; the prompt has "
                                f"{prompt_tokens} tokens, which leaves no room for a completion",
                           param="messages" if isinstance(req, ChatRequest) else "prompt",
                           code="context_length_exceeded")
        if prompt_tokens == 0:
            raise APIError(400, "empty prompt", param="prompt")
        return want if want else n_ctx - prompt_tokens

    async def watch(request: Request, job) -> None:
        # a client that goes away stops its generation (streams notice on their own too)
        while not job.cancelled.is_set():
            if await request.is_disconnected():
                job.cancelled.set()
                return
            await asyncio.sleep(0.1)

    async def respond(request: Request, req: _Sampling, run, collect):
        try:
            job = worker.submit(run)
        except Busy as e:
            raise APIError(503, f"server busy: {e}; retry later", "server_error", code="server_busy") from None
        watcher = asyncio.create_task(watch(request, job))
        if req.stream:
            async def events():
                try:
                    async for chunk in worker.chunks(job):
                        chunk["model"] = model_id
                        yield {"data": json.dumps(chunk)}
                    yield {"data": "[DONE]"}
                except (ValueError, RuntimeError) as e:
                    yield {"data": json.dumps({"error": {"message": str(e), "type": "server_error",
                                                         "param": None, "code": None}})}
                finally:
                    watcher.cancel()

            return EventSourceResponse(events(), ping=15)
        try:
            chunks = [c async for c in worker.chunks(job)]
        except ValueError as e:
            raise APIError(400, str(e)) from None
        finally:
            watcher.cancel()
        return collect(chunks)

    @app.post("/v1/completions")
    async def completions(request: Request, req: CompletionRequest):
        prompt = req.prompt
        if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
            if len(prompt) != 1:
                raise APIError(400, "one prompt per request (a list of one string is accepted)", param="prompt")
            prompt = prompt[0]
        tokens = llm.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        max_tokens = check(req, len(tokens))
        kw = req.knobs()

        def run():
            return llm.create_completion(tokens, max_tokens=max_tokens, stream=True, **kw)

        return await respond(request, req, run, lambda chunks: _collect_completion(chunks, model_id))

    @app.post("/v1/chat/completions")
    async def chat(request: Request, req: ChatRequest):
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in req.messages]
        try:
            tokens = llm.chat_prompt_tokens(messages)
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        max_tokens = check(req, len(tokens))
        kw = req.knobs()

        def run():
            return llm.create_chat_completion(messages, max_tokens=max_tokens, stream=True, **kw)

        return await respond(request, req, run, lambda chunks: _collect_chat(chunks, model_id))

    return app


def _collect_completion(chunks: list[dict], model_id: str) -> dict:
    last = dict(chunks[-1])
    last["model"] = model_id
    last["choices"] = [{"text": "".join(c["choices"][0]["text"] for c in chunks), "index": 0, "logprobs": None,
                        "finish_reason": last["choices"][0]["finish_reason"]}]
    return last


def _collect_chat(chunks: list[dict], model_id: str) -> dict:
    last = chunks[-1]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    out = {"id": last["id"], "object": "chat.completion", "created": last["created"], "model": model_id,
           "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                        "finish_reason": last["choices"][0]["finish_reason"]}]}
    out.update({k: last[k] for k in ("usage", "timings", "gguf_mtp") if k in last})
    return out
