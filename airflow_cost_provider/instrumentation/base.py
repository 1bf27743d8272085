"""What every instrumentation shares: patching that can be undone, and wrappers that cannot hurt.

An instrumentation patches a provider's classes when the provider's module is imported (never
importing it itself), and restores them on uninstrument(). Both are idempotent.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import wrapt

from airflow_cost_provider.capture.safety import is_suppressed, report_failure
from airflow_cost_provider.capture.session import CaptureSession, current_session
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Usage

log = logging.getLogger("airflow_cost_provider")


class Instrumentation:
    """Subclasses set `name`, `modules` (the modules whose import triggers `patch`) and implement
    `patch(module)` with `self.wrap(...)` calls. `sources` lists what it captures, for switching off."""

    name: str = ""
    sources: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.active = False
        self._hooks_registered = False
        self._patched: list[tuple[Any, str, Any]] = []
        self._lock = threading.RLock()

    def patch(self, module: Any) -> None:
        raise NotImplementedError

    def instrument(self) -> None:
        with self._lock:
            if self.active:
                return
            self.active = True
            for module_name in self.modules:
                if module_name in sys.modules:
                    self._apply(sys.modules[module_name])
                elif not self._hooks_registered:
                    wrapt.register_post_import_hook(self._on_import, module_name)
            self._hooks_registered = True

    def uninstrument(self) -> None:
        with self._lock:
            self.active = False
            while self._patched:
                owner, attribute, original = self._patched.pop()
                setattr(owner, attribute, original)

    def _on_import(self, module: Any) -> None:
        with self._lock:
            if self.active:
                self._apply(module)

    def _apply(self, module: Any) -> None:
        try:
            self.patch(module)
        except Exception as error:  # a provider version we do not know: capture less, never break
            report_failure(f"instrumenting {self.name}", error)

    def wrap(self, owner: Any, attribute: str, wrapper: Callable) -> None:
        """Wrap `owner.attribute` (defined on owner itself) once; uninstrument() puts it back."""
        original = owner.__dict__.get(attribute)
        if original is None or any(o is owner and a == attribute for o, a, _ in self._patched):
            return
        setattr(owner, attribute, wrapt.FunctionWrapper(original, wrapper))
        self._patched.append((owner, attribute, original))


def task_session() -> CaptureSession | None:
    """The session to record into, or None for work outside a task or done by the provider itself."""
    if is_suppressed():
        return None
    session = current_session()
    if session is None or session.pid != os.getpid() or not session.task_running():
        # a forked child (the OpenLineage listener's) is not the task: what it runs would be lost
        return None
    return session


def guarded_step(step: str, function: Callable, *args: Any, default: Any = None) -> Any:
    """Run one of our own steps around user code; a failure is reported (once) and yields `default`."""
    try:
        return function(*args)
    except Exception as error:
        report_failure(step, error, once=True)
        return default


def unresolved_usage(source: str, external_id: str | None, reason: str, **attributes: Any) -> Usage:
    """A query or job whose statistics could not be read: kept with its id and the reason, unpriced."""
    return Usage(
        source=source,
        metric="queries",
        quantity=Decimal(1),
        unit="query",
        external_id=external_id,
        end_time=dt.datetime.now(dt.timezone.utc),
        attributes={**attributes, UNPRICED_HINT_ATTRIBUTE: reason},
    )


class LookupBudget:
    """What a task's end may spend on one source's look-ups: a deadline `seconds` from now, and each
    request's timeout within it (never past the deadline)."""

    def __init__(self, seconds: float, request_timeout: float) -> None:
        self.deadline = time.monotonic() + seconds
        self.request_timeout = request_timeout

    def timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no time left within the finalize budget")
        return min(remaining, self.request_timeout)


def seconds(nanoseconds: int) -> Decimal:
    return Decimal(nanoseconds).scaleb(-9)
