"""``gguf-mtp serve``: the OpenAI-compatible server."""

from __future__ import annotations

from pathlib import Path

import click

from ..runtime.drafters import DRAFTERS
from .generate import _DraftLength


#: names FILE may also be: the embedded default model, or a model `gguf-mtp models fetch` got
MODEL_NAMES = ("default", "smollm2", "gemma3")


def resolve_model(file: str) -> str:
    """A GGUF path, or one of :data:`MODEL_NAMES` (the default model is converted on first use,
    at q8_0 with its draft vocabulary: what the demo recommends)."""
    from pathlib import Path as _P

    if _P(file).is_file() or file not in MODEL_NAMES:
        if not _P(file).is_file():
            raise click.BadParameter(f"{file}: no such GGUF file (or one of {', '.join(MODEL_NAMES)})",
                                     param_hint="FILE")
        return file
    if file == "default":
        from ..models.default import default_gguf

        return str(default_gguf("q8_0", draft_vocab=True))
    from ..models.fetch import MODELS

    m = MODELS[file]
    if not m.available():
        raise click.BadParameter(f"{file} is not fetched yet: run `gguf-mtp models fetch {file}`",
                                 param_hint="FILE")
    return str(m.path())


@click.command()
@click.argument("file", type=str)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: a free one, printed).")
@click.option("--drafter", type=click.Choice(list(DRAFTERS)), default="auto", show_default=True,
              help="Default drafter of every request.")
@click.option("--drafters", default="", help="Other drafters a request may ask for (comma-separated; the "
              "engine is configured for all of them; 'none' is always there).")
@click.option("--draft", type=_DraftLength(), default="auto", show_default=True,
              help="Default draft length K, or 'auto'.")
@click.option("--draft-max", type=int, default=8, show_default=True, help="Longest draft a request may ask for.")
@click.option("--n-ctx", "n_ctx", type=int, default=4096, show_default=True, help="Context length in tokens.")
@click.option("--n-batch", type=int, default=512, show_default=True, help="Largest batch of one pass.")
@click.option("-ngl", "--n-gpu-layers", "n_gpu_layers", type=int, default=None,
              help="Layers to offload to a GPU (CUDA/Metal builds of the runtime).")
@click.option("-t", "--threads", type=int, default=None, help="CPU threads (default: all cores).")
@click.option("--alias", default=None, help="Model id clients use (default: the file name without .gguf).")
@click.option("--api-key", default=None, envvar="GGUF_MTP_API_KEY",
              help="Require 'Authorization: Bearer KEY' on /v1/ (also $GGUF_MTP_API_KEY).")
@click.option("--max-queue", type=int, default=16, show_default=True,
              help="Requests waiting behind the running one before the server answers 503.")
@click.option("--no-cache-prompt", is_flag=True,
              help="Prefill every prompt from scratch (default: reuse the previous prompt's common prefix).")
@click.option("--seed", type=int, default=None, help="Base sampling seed of requests without one.")
@click.option("--verbose", is_flag=True, help="llama.cpp's log on stderr.")
def serve(file, host, port, drafter, drafters, draft, draft_max, n_ctx, n_batch, n_gpu_layers, threads, alias,
          api_key, max_queue, no_cache_prompt, seed, verbose):
    """Serve FILE (a GGUF, or 'default' for the embedded default model, or
    'smollm2' / 'gemma3' once fetched) with OpenAI's API (/v1/models, /v1/completions,
    /v1/chat/completions; streaming as server-sent events) and speculative
    decoding. Requests may set the extension fields 'drafter', 'draft' and
    'exact'; responses carry llama-server's 'timings' (draft_n,
    draft_n_accepted, ...) and 'gguf_mtp' (tau, acceptance per position).

    \b
    gguf-mtp serve model.gguf --port 8000
    curl localhost:8000/v1/completions -d '{"prompt": "def fib(n):", "max_tokens": 32}'
    """
    import socket

    import uvicorn

    from ..runtime.api import SpeculativeLlama
    from ..serve import create_app

    file = resolve_model(file)
    extra = [d.strip() for d in drafters.split(",") if d.strip()]
    bad = [d for d in extra if d not in DRAFTERS]
    if bad:
        raise click.BadParameter(f"unknown drafter(s) {', '.join(bad)}; choose from {', '.join(DRAFTERS)}",
                                 param_hint="--drafters")
    def make_llm():
        return SpeculativeLlama(file, n_ctx=n_ctx, n_batch=n_batch, n_threads=threads, n_gpu_layers=n_gpu_layers,
                                seed=seed, drafter=drafter, draft=draft, draft_max=draft_max, verbose=verbose,
                                drafters=extra, cache_prompt=not no_cache_prompt)

    model_id = alias or Path(file).name.removesuffix(".gguf")
    app = create_app(make_llm, model_id=model_id, api_key=api_key, max_queue=max_queue)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    click.echo(f"gguf-mtp serve: {model_id} (drafter {drafter}, draft {draft}) on "
               f"http://{host}:{sock.getsockname()[1]}/v1", err=True)
    config = uvicorn.Config(app, log_level="warning" if not verbose else "info")
    uvicorn.Server(config).run(sockets=[sock])
