"""The bounded queue in front of the model and the one worker thread that drives it.

Requests wait in a queue of ``queue_size``; a full queue refuses at once (the app answers 429 with
Retry-After) instead of letting callers hang. The worker keeps up to ``max_active`` requests in
hand and, step by step, renders at most ``batch_size`` chunks (the Synthesizer's ``max_batch``)
taken from them: first the opening chunk of every streaming request (so its audio starts after
one chunk), then the others' chunks in arrival order. Chunks of several requests that arrive
together therefore share one padded batch where batching pays. Between steps it drops requests
that were cancelled (client gone) or ran past their deadline, so their synthesis stops there.

The worker thread talks to the event loop only through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from f5app.inference.chunking import CrossFadeStream

log = logging.getLogger(__name__)


class QueueFull(Exception):
    def __init__(self, retry_after: int):
        super().__init__(f"the server is busy: {retry_after} s is a fair wait before retrying")
        self.retry_after = retry_after


class Cancelled(Exception):
    """The request was cancelled (its client went away) or ran out of time."""


class SpeechJob:
    """One request's chunks and the events the worker sends back: ("audio", wav) pieces when
    streaming, ("done", Synthesis | None), or ("error", exception)."""

    def __init__(self, plan: Any, *, stream: bool, sample_rate: int, deadline: float, loop: asyncio.AbstractEventLoop):
        self.plan = plan
        self.stream = stream
        self.sample_rate = sample_rate
        self.deadline = deadline
        self.events: asyncio.Queue = asyncio.Queue()
        self.next_chunk = 0
        self._loop = loop
        self._cancelled = threading.Event()
        self._rendered: list[Any] = []
        self._joiner = CrossFadeStream(sample_rate, plan.settings.cross_fade)
        self.finished = False

    # ------------------------------------------------------------- either side
    def cancel(self) -> None:
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    @property
    def remaining(self) -> int:
        return len(self.plan.chunks) - self.next_chunk

    # ------------------------------------------------------------- worker side
    def _emit(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is gone (server stopped): nobody is listening
            pass

    def deliver(self, rendered: Sequence[Any]) -> None:
        self.next_chunk += len(rendered)
        done = self.remaining == 0
        if self.stream:
            for chunk in rendered:
                piece = self._joiner.push(chunk.wave)
                if len(piece):
                    self._emit("audio", piece)
            if done:
                self._emit("audio", self._joiner.finish())
                self._emit("done", None)
        else:
            self._rendered += rendered
            if done:
                self._emit("done", self.plan.assemble(self._rendered, self.sample_rate))
        self.finished = done

    def fail(self, error: BaseException) -> None:
        self.finished = True
        self._emit("error", error)


class SynthesisQueue:
    def __init__(
        self,
        render: Callable[[list[Any]], list[Any]],
        *,
        batch_size: int = 1,
        queue_size: int = 16,
        max_active: int = 8,
        seconds_per_request: float = 5.0,
    ):
        self._render = render
        self.batch_size = max(1, batch_size)
        self.queue_size = queue_size
        self.max_active = max(1, max_active)
        self._seconds_per_request = seconds_per_request  # learnt as requests finish; feeds Retry-After
        self._waiting: collections.deque[SpeechJob] = collections.deque()
        self._active: list[SpeechJob] = []
        self._condition = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    # ------------------------------------------------------------- callers
    def submit(self, job: SpeechJob) -> None:
        with self._condition:
            if self._stopping:
                raise QueueFull(retry_after=self.retry_after())
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(retry_after=self.retry_after())
            self._waiting.append(job)
            self._condition.notify()

    def depth(self) -> int:
        return len(self._waiting)

    def active(self) -> int:
        return len(self._active)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the requests ahead times a typical request's time."""
        ahead = (len(self._waiting) + len(self._active)) / self.max_active
        return max(1, round(ahead * self._seconds_per_request))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="f5app-synthesis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish what is queued, then end the worker."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------- worker
    def _run(self) -> None:
        while True:
            with self._condition:
                while not self._waiting and not self._active and not self._stopping:
                    self._condition.wait()
                if not self._waiting and not self._active:
                    return
                while self._waiting and len(self._active) < self.max_active:
                    self._active.append(self._waiting.popleft())
            self._drop_abandoned()
            step = self._next_step()
            if step:
                started = time.perf_counter()
                self._run_step(step)
                if any(job.finished for job, _ in step):
                    seconds = (time.perf_counter() - started) * len(step)
                    self._seconds_per_request = 0.8 * self._seconds_per_request + 0.2 * seconds
            with self._condition:
                self._active = [job for job in self._active if not job.finished]

    def _drop_abandoned(self) -> None:
        now = time.monotonic()
        for job in self._active:
            if job.cancelled:
                job.fail(Cancelled("the request was cancelled"))
            elif now > job.deadline:
                job.fail(Cancelled("the request ran past its time limit"))
        with self._condition:
            self._active = [job for job in self._active if not job.finished]

    def _next_step(self) -> list[tuple[SpeechJob, int]]:
        """(job, chunk count) pairs for the next render call, at most ``batch_size`` chunks."""
        budget = self.batch_size
        step: dict[SpeechJob, int] = {}
        for job in self._active:  # a stream's first chunk before anyone's later chunks
            if budget and job.stream and job.next_chunk == 0:
                step[job] = 1
                budget -= 1
        for job in self._active:
            if budget and job not in step and job.remaining:
                step[job] = min(job.remaining, budget)
                budget -= step[job]
        return list(step.items())

    def _run_step(self, step: list[tuple[SpeechJob, int]]) -> None:
        chunks = [c for job, n in step for c in job.plan.chunks[job.next_chunk : job.next_chunk + n]]
        try:
            rendered = self._render(chunks)
        except Exception as error:  # noqa: BLE001 - one request's failure must not end the worker
            if len(step) == 1:
                log.exception("synthesis failed")
                step[0][0].fail(error)
                return
            # Which request broke the batch? Each alone, so only that one gets the error.
            for job, n in step:
                self._run_step([(job, n)])
            return
        position = 0
        for job, n in step:
            job.deliver(rendered[position : position + n])
            position += n


class Engine:
    """The Synthesizer once it is loaded, and the queue in front of it (both None until then)."""

    def __init__(self, *, queue_size: int = 16, max_active: int = 8, reference_cache_size: int = 16):
        self.queue_size = queue_size
        self.max_active = max_active
        self.reference_cache_size = reference_cache_size
        self.synthesizer: Any = None
        self.queue: Optional[SynthesisQueue] = None
        self.load_error: Optional[BaseException] = None

    @property
    def ready(self) -> bool:
        return self.queue is not None

    def attach(self, synthesizer: Any) -> None:
        queue = SynthesisQueue(synthesizer.render, batch_size=synthesizer.max_batch, queue_size=self.queue_size, max_active=self.max_active)
        queue.start()
        synthesizer.set_reference_cache_size(self.reference_cache_size)
        self.synthesizer, self.queue = synthesizer, queue

    def forget_reference(self, ref_audio: Any) -> None:
        """A voice was deleted: its prepared reference must not outlive it in the Synthesizer's cache."""
        if self.synthesizer is not None and ref_audio is not None:
            self.synthesizer.forget_reference(ref_audio)

    def reference_cache_entries(self) -> int:
        return self.synthesizer.reference_cache_entries() if self.synthesizer is not None else 0

    def depth(self) -> int:
        return self.queue.depth() if self.queue else 0

    def active(self) -> int:
        return self.queue.active() if self.queue else 0

    def close(self, timeout: float = 10.0) -> None:
        if self.queue is not None:
            self.queue.stop(timeout)
