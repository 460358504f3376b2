"""Micro-batching: images of requests that arrive close together go through the model at once.

Request threads decode their uploads themselves (in parallel), then hand the images to
`MicroBatcher.run` and wait. One worker thread takes what is waiting, keeps gathering for up to
`window` seconds while other requests are still decoding (never when none is, so a lone client
waits for nothing), up to `max_batch` images, runs the model once on all of them and gives each
request its own rows. A request is never split: one larger than `max_batch` runs on its own.
``max_batch=1`` turns batching off (every request's images in a model call of their own).

Batched rows equal one-at-a-time rows to within float rounding (the backend may choose another
kernel for another batch size); on a CPU they agree to about 1e-7 relative.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass

import torch


@dataclass
class _Job:
    images: torch.Tensor  # uint8 [n, C, H, W]
    answer: Future[torch.Tensor]


class MicroBatcher:
    """Runs `model_call` (uint8 ``[N, C, H, W]`` -> ``[N, D]``) on the images of many requests
    at once, in one worker thread, under `lock` (held for each model call)."""

    def __init__(
        self,
        model_call: Callable[[torch.Tensor], torch.Tensor],
        window: float,
        max_batch: int,
        lock: threading.Lock | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch {max_batch}: expected at least 1")
        if not window >= 0:
            raise ValueError(f"window {window}: expected seconds, 0 or more")
        self.model_call = model_call
        self.window = window
        self.max_batch = max_batch
        self.lock = lock if lock is not None else threading.Lock()
        self._jobs: deque[_Job] = deque()
        self._arriving = 0  # requests decoding their images, about to call `run`
        self._unanswered = 0  # requests that called `run` and have no answer yet
        self._changed = threading.Condition()
        self._worker: threading.Thread | None = None
        #: Model calls made and images they embedded (for tests and the benchmark).
        self.calls = 0
        self.images = 0

    @contextmanager
    def arriving(self) -> Iterator[Callable[[torch.Tensor], torch.Tensor]]:
        """Mark a request that is preparing its images; yields its `run`. Until it runs (or
        leaves), the worker waits for it, within the window, rather than start a batch
        without it."""
        ticket = [True]  # still arriving
        with self._changed:
            self._arriving += 1

        def run(images: torch.Tensor) -> torch.Tensor:
            return self._run(images, ticket)

        try:
            yield run
        finally:
            with self._changed:
                if ticket[0]:
                    ticket[0] = False
                    self._arriving -= 1
                    self._changed.notify_all()

    def run(self, images: torch.Tensor) -> torch.Tensor:
        """The model's rows ``[n, D]`` for images uint8 ``[n, C, H, W]``; waits for the batch
        they go in. Raises whatever the model call raised."""
        return self._run(images, [False])

    def _run(self, images: torch.Tensor, ticket: list[bool]) -> torch.Tensor:
        if len(images) == 0:
            raise ValueError("no images to embed")
        job = _Job(images, Future())
        with self._changed:
            if ticket[0]:
                ticket[0] = False
                self._arriving -= 1
            self._start_worker()
            self._jobs.append(job)
            self._unanswered += 1
            self._changed.notify_all()
        return job.answer.result()

    def waiting(self) -> int:
        """Requests whose images wait for (or are in) a model call."""
        with self._changed:
            return self._unanswered

    # --- the worker ------------------------------------------------------------------------

    def _start_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._worker = threading.Thread(target=self._work, name="siamnet-batcher", daemon=True)
            self._worker.start()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            try:
                with self.lock, torch.inference_mode():
                    rows = self.model_call(torch.cat([job.images for job in batch]))
                self.calls += 1
                self.images += len(rows)
            except BaseException as exc:  # every request of the batch gets the model's error
                rows = exc
            with self._changed:
                self._unanswered -= len(batch)
            start = 0
            for job in batch:
                if isinstance(rows, BaseException):
                    job.answer.set_exception(rows)
                else:
                    job.answer.set_result(rows[start : start + len(job.images)])
                    start += len(job.images)

    def _next_batch(self) -> list[_Job]:
        """Wait for a job, gather more within the window, and take those that fit."""
        with self._changed:
            self._changed.wait_for(lambda: bool(self._jobs))
            deadline = time.monotonic() + self.window
            while self._arriving and self._fitting() < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            batch = [self._jobs.popleft()]
            count = len(batch[0].images)
            while self._jobs and count + len(self._jobs[0].images) <= self.max_batch:
                count += len(self._jobs[0].images)
                batch.append(self._jobs.popleft())
            return batch

    def _fitting(self) -> int:
        """Images of the waiting jobs that one batch would take (in arrival order)."""
        count = 0
        for job in self._jobs:
            if count and count + len(job.images) > self.max_batch:
                break
            count += len(job.images)
        return count
