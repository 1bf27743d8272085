"""One CaptureSession per task try: opened when the task starts running, finalized once at its end.

Instrumentations add usage to the current session; the listener and the OpenLineage facet function
both finalize through it, and whichever comes first computes the result the other one reuses.
"""

from __future__ import annotations

import functools
import os
import threading
import uuid
from collections import OrderedDict
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from airflow_cost_provider.capture.aggregation import Pricer, UsageAggregates
from airflow_cost_provider.capture.identity import TaskTry, TryKey
from airflow_cost_provider.capture.worker import ProcessSample
from airflow_cost_provider.pricing.model import Usage

# Sessions are kept after finalize so the OpenLineage listener can still read the result; a worker
# runs one task per process, `airflow dags test` many: keep a bounded number.
MAX_SESSIONS = 256


@dataclass
class CaptureSession:
    task_try: TaskTry
    start: ProcessSample
    hook_lineage_mark: Any = None
    ti: Any = field(default=None, repr=False)
    capture_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    pid: int = field(default_factory=os.getpid)
    # the first max_lines usage records, kept whole; past them, each usage is priced as it comes and
    # summed into `aggregates` (capture/aggregation.py), so a task's memory stays bounded
    usage: list[Usage] = field(default_factory=list)
    max_lines: int | None = None
    price: Pricer | None = field(default=None, repr=False)
    aggregates: UsageAggregates = field(default_factory=UsageAggregates, repr=False)
    # statistics to fetch at finalize, batched per look-up function: {resolve: [item, ...]}
    pending: dict[Any, list[Any]] = field(default_factory=dict)
    result: Any = None  # CostResult once finalized
    # set by the first process that tried to write this capture, even if it failed: a forked child
    # must not spend a second time budget on a database that just refused or timed out
    ledger_write_attempted: bool = False
    # resumed after a deferral: a snapshot this worker spooled for the try goes once the try is kept
    resumed_from_deferral: bool = False
    # reentrant: finalize holds it while it records what arrives at the end
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def record(self, usage: Usage) -> None:
        with self.lock:
            if self.max_lines is None or self.price is None or len(self.usage) < self.max_lines:
                self.usage.append(usage)
                return
        priced = self.price(usage)  # pure, outside the lock: other threads of the task keep recording
        with self.lock:
            self.aggregates.add(priced)

    def usages(self) -> list[Usage]:
        """Everything recorded so far, aggregates as one usage each (with their count)."""
        with self.lock:
            return list(self.usage) + self.aggregates.usages()

    def defer(self, resolve: Any, item: Any) -> None:
        """Keep `item` for `resolve(items, timeout) -> list[Usage]`, called once at finalize."""
        with self.lock:
            self.pending.setdefault(resolve, []).append(item)

    def task_running(self) -> bool:
        """True while the task's own code runs. Statements run after it (the OpenLineage listener's
        schema look-ups, callbacks) are not the task's work."""
        if self.result is not None:
            return False
        state = getattr(self.ti, "state", None)
        return state is None or str(getattr(state, "value", state)).lower() == "running"

    @functools.cached_property
    def tags(self) -> dict[str, str]:
        return self.task_try.tags()

    @functools.cached_property
    def sql_comment(self) -> str:
        """The identity as a sqlcommenter comment, formatted once for all the task's statements."""
        from airflow_cost_provider.tagging import format_comment

        return format_comment(self.tags)


_sessions: OrderedDict[TryKey, CaptureSession] = OrderedDict()
_sessions_lock = threading.Lock()
_current: ContextVar[CaptureSession | None] = ContextVar("cost_provider_session", default=None)


def open_session(
    task_try: TaskTry,
    start: ProcessSample,
    hook_lineage_mark: Any = None,
    ti: Any = None,
    max_lines: int | None = None,
    price: Pricer | None = None,
) -> CaptureSession:
    session = CaptureSession(task_try, start, hook_lineage_mark, ti, max_lines=max_lines, price=price)
    with _sessions_lock:
        _sessions.pop(task_try.key, None)
        _sessions[task_try.key] = session
        while len(_sessions) > MAX_SESSIONS:
            _sessions.popitem(last=False)
    _current.set(session)
    return session


def get_session(key: TryKey) -> CaptureSession | None:
    with _sessions_lock:
        return _sessions.get(key)


def current_session() -> CaptureSession | None:
    """The session of the task running in this context, or the only one of this process."""
    session = _current.get()
    if session is not None:
        return session
    with _sessions_lock:
        unfinished = [s for s in _sessions.values() if s.result is None]
    return unfinished[0] if len(unfinished) == 1 else None


def record_usage(usage: Usage) -> bool:
    """Add usage to the running task's session; False when no task is being captured here."""
    session = current_session()
    if session is None:
        return False
    session.record(usage)
    return True


def drop_session(session: CaptureSession) -> None:
    """Forget a session that will not be finalized here (its task deferred)."""
    with _sessions_lock:
        if _sessions.get(session.task_try.key) is session:
            del _sessions[session.task_try.key]
    if _current.get() is session:
        _current.set(None)


def clear_sessions() -> None:
    with _sessions_lock:
        _sessions.clear()
    _current.set(None)
