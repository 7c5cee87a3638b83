"""One model, one generation at a time, behind a bounded queue.

llama.cpp contexts are not thread-safe and a speculative pass already uses
every core, so the server runs generations one after another on a single
worker thread, in arrival order. A request waits in a queue of at most
``max_queue`` entries (more: :class:`Busy`, HTTP 503); a client that goes away
sets its job's ``cancelled`` flag and the worker stops that generation after
the pass in flight. Each job is one :class:`SpeculativeLlama` call with its own
sampler and seed: nothing of one request reaches another except the prompt
cache, which is exact (``decode(reuse=True)``).

The worker thread also *loads* the model: llama.cpp's CPU backend runs its
thread team through OpenMP, and a process whose main thread has already
entered a parallel region (model loading does) runs another thread's regions
with throttled spinning: SmolLM2-135M decoded at 27 tok/s from a second thread
against 184 tok/s from the thread that loaded it (2 threads, 2 cores).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from ..runtime.api import SpeculativeLlama

_END = object()


class Busy(RuntimeError):
    """The queue is full."""


@dataclass
class Job:
    run: Callable[[], Iterator[dict]]      # the SpeculativeLlama call (a chunk iterator)
    loop: asyncio.AbstractEventLoop
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def put(self, item: Any) -> None:
        self.loop.call_soon_threadsafe(self.out.put_nowait, item)


class Worker:
    """Loads the model with ``make_llm()`` on its own thread and runs every generation there."""

    def __init__(self, make_llm: Callable[[], SpeculativeLlama], max_queue: int = 16):
        if isinstance(make_llm, SpeculativeLlama):
            raise TypeError("Worker takes a function that makes the SpeculativeLlama (it must be loaded on the "
                            "worker's thread), not a loaded one")
        self.max_queue = max_queue
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0                   # jobs submitted and not finished (the running one included)
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._llm: SpeculativeLlama | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, args=(make_llm,), name="gguf-mtp-worker", daemon=True)
        self._thread.start()

    @property
    def llm(self) -> SpeculativeLlama:
        """The loaded model (waits for the worker to load it; raises what loading raised)."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        return self._llm

    @property
    def waiting(self) -> int:
        return self._waiting

    def submit(self, run: Callable[[], Iterator[dict]]) -> Job:
        """Queue a generation; its chunks arrive on ``job.out``, then the end marker
        (or the exception it raised)."""
        with self._lock:
            if self._waiting > self.max_queue:
                raise Busy(f"{self._waiting} requests are running or queued (--max-queue {self.max_queue})")
            self._waiting += 1
        job = Job(run, asyncio.get_running_loop())
        self._jobs.put(job)
        return job

    async def chunks(self, job: Job):
        """The job's chunks as they come; raises what the generation raised.
        Leaving early (the client went away) cancels the job."""
        try:
            while True:
                item = await job.out.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            job.cancelled.set()

    def _main(self, make_llm) -> None:
        try:
            self._llm = make_llm()
        except BaseException as e:          # reported by .llm
            self._error = e
            return
        finally:
            self._ready.set()
        while True:
            job = self._jobs.get()
            if job is None:
                return
            try:
                if not job.cancelled.is_set():
                    it = job.run()
                    try:
                        for chunk in it:
                            if job.cancelled.is_set():
                                break
                            job.put(chunk)
                    finally:
                        close = getattr(it, "close", None)
                        if close:
                            close()
                job.put(_END)
            except BaseException as e:      # to the request; the worker goes on
                job.put(e)
            finally:
                with self._lock:
                    self._waiting -= 1

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=30)
        if self._llm is not None:
            self._llm.close()
