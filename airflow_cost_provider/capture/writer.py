"""A long-lived background thread that runs ledger writes with a deadline.

Starting a thread per task costs more than the write itself. The thread is per process: a forked
child (the OpenLineage listener emits from one) starts its own, and a thread stuck past a deadline
is abandoned for a fresh one so later tasks are not queued behind it.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable


class _Job:
    __slots__ = ("done", "error", "work")

    def __init__(self, work: Callable[[], None]) -> None:
        self.work = work
        self.done = threading.Event()
        self.error: BaseException | None = None


class BackgroundWriter:
    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Job] | None = None
        self._pid: int | None = None

    def _jobs(self) -> queue.SimpleQueue[_Job]:
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue = queue.SimpleQueue()
                self._pid = os.getpid()
                threading.Thread(
                    target=self._serve, args=(self._queue,), name=self._name, daemon=True
                ).start()
            return self._queue

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = jobs.get()
            try:
                job.work()
            except BaseException as error:  # handed to the waiting caller
                job.error = error
            finally:
                job.done.set()

    def run(self, work: Callable[[], None], timeout: float) -> tuple[bool, BaseException | None]:
        """Run `work` on the thread; (finished in time, its exception or None)."""
        job = _Job(work)
        jobs = self._jobs()
        jobs.put(job)
        if job.done.wait(timeout):
            return True, job.error
        with self._lock:
            if self._queue is jobs:  # stuck: the next write gets a fresh thread
                self._queue = None
        return False, None


ledger_writer = BackgroundWriter("cost-ledger-writer")
