"""One thread that runs the model: requests wait in a bounded queue and are batched.

Requests for the same signature that arrive together (within `max_delay` of the first) are
concatenated along the batch axis, up to `max_batch` rows, and run as one call; the outputs are
split back. If a combined call fails (one request's bad image fails the whole batch), each
request is re-run alone, so every request gets its own answer and error message. When more than
`max_pending` requests wait, `submit` refuses at once (HTTP 503) instead of queueing forever.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from typing import Callable

import numpy as np

from ugatit_tf.serve.models import PredictError


class _Job:
    __slots__ = ("signature", "inputs", "rows", "future")

    def __init__(self, signature: str, inputs: dict):
        self.signature = signature
        self.inputs = inputs
        self.rows = len(next(iter(inputs.values()))) if inputs else 0
        self.future = Future()


class Batcher:
    def __init__(self, predict: Callable[[str, dict], dict], max_batch: int = 16,
                 max_delay: float = 0.005, max_pending: int = 64):
        self.predict = predict
        self.max_batch = max_batch
        self.max_delay = max_delay
        self.max_pending = max_pending
        self.calls = 0  # model calls made (a batch counts once)
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-batcher", daemon=True)
        self._thread.start()

    def submit(self, signature: str, inputs: dict, timeout: float | None = 300) -> dict:
        """Run `signature` on `inputs` (arrays with a batch axis); blocks until done."""
        if self._queue.qsize() >= self.max_pending:
            raise PredictError(503, f"the server is busy ({self._queue.qsize()} requests "
                                    f"waiting); try again in a moment")
        job = _Job(signature, {k: np.asarray(v) for k, v in inputs.items()})
        self._queue.put(job)
        return job.future.result(timeout)

    def close(self) -> None:
        self._stop.set()
        self._queue.put(None)
        self._thread.join(timeout=10)

    # -- worker -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._queue.get()
            if first is None:
                break
            jobs = self._gather(first)
            for group in self._groups(jobs):
                self._run_group(group)

    def _gather(self, first: _Job) -> list[_Job]:
        jobs, deadline = [first], time.monotonic() + self.max_delay
        while True:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return jobs
            if job is None:
                self._stop.set()
                return jobs
            jobs.append(job)

    def _groups(self, jobs: list[_Job]) -> list[list[_Job]]:
        """Jobs of one signature and input names, in arrival order, up to max_batch rows."""
        groups: list[list[_Job]] = []
        for job in jobs:
            for group in groups:
                head = group[0]
                if (head.signature == job.signature and set(head.inputs) == set(job.inputs)
                        and sum(j.rows for j in group) + job.rows <= self.max_batch):
                    group.append(job)
                    break
            else:
                groups.append([job])
        return groups

    def _run_group(self, group: list[_Job]) -> None:
        if len(group) == 1:
            return self._run_one(group[0])
        try:
            inputs = {k: np.concatenate([j.inputs[k] for j in group]) for k in group[0].inputs}
            outputs = self._call(group[0].signature, inputs)
        except Exception:  # one bad request: answer each alone, with its own message
            for job in group:
                self._run_one(job)
            return
        start = 0
        for job in group:
            job.future.set_result({k: v[start:start + job.rows] for k, v in outputs.items()})
            start += job.rows

    def _run_one(self, job: _Job) -> None:
        try:
            job.future.set_result(self._call(job.signature, job.inputs))
        except Exception as e:  # noqa: BLE001 - handed to the waiting request
            job.future.set_exception(e)

    def _call(self, signature: str, inputs: dict) -> dict:
        self.calls += 1
        return self.predict(signature, inputs)
