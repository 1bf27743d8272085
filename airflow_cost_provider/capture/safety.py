"""Failure isolation: nothing the cost provider does may raise into a task or another listener.

`guarded` logs a failure once as a warning that says the task is not affected, and counts it.
`suppress` marks work the provider does itself (statistics look-ups) so instrumentations skip it.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import ParamSpec, TypeVar

log = logging.getLogger("airflow_cost_provider")

P = ParamSpec("P")
R = TypeVar("R")

failures: Counter[str] = Counter()
_suppressed: ContextVar[bool] = ContextVar("cost_provider_suppressed", default=False)


def report_failure(step: str, error: BaseException, once: bool = False) -> None:
    """Count the failure and log it; with `once`, only its first occurrence in this process is a
    warning (a wrapper that fails on every statement must not flood the task log)."""
    failures[step] += 1
    level = logging.WARNING if not once or failures[step] == 1 else logging.DEBUG
    log.log(
        level,
        "cost provider: %s failed: %s: %s (no impact on the task)",
        step,
        type(error).__name__,
        error,
        exc_info=log.isEnabledFor(logging.DEBUG),
    )


def guarded(step: str, default: R | None = None) -> Callable[[Callable[P, R]], Callable[P, R | None]]:
    """Run the function; on any exception log one warning, count it, and return `default`."""

    def decorate(function: Callable[P, R]) -> Callable[P, R | None]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | None:
            try:
                return function(*args, **kwargs)
            except Exception as error:
                report_failure(step, error)
                return default

        return wrapper

    return decorate


@contextlib.contextmanager
def suppress() -> Iterator[None]:
    """Work done inside is the provider's own and must not be captured as the task's."""
    token = _suppressed.set(True)
    try:
        yield
    finally:
        _suppressed.reset(token)


def is_suppressed() -> bool:
    return _suppressed.get()
