"""``gguf-mtp serve``: an OpenAI-compatible HTTP server over :class:`~gguf_mtp.runtime.api.SpeculativeLlama`.

:func:`create_app` builds the FastAPI application (:mod:`.app`); :mod:`.worker`
runs the generations one at a time behind a bounded queue. Layered above the
runtime: nothing in ``gguf_mtp.runtime`` imports this package.
"""

from .app import APIError, create_app
from .worker import Busy, Worker

__all__ = ["APIError", "Busy", "Worker", "create_app"]
