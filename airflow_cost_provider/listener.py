"""Thin task-instance hookimpls. Each is guarded: pluggy stops calling the remaining listeners when one
raises, which would silence the OpenLineage listener, so nothing escapes from here.

Ordering with the OpenLineage listener: by default these hookimpls are `tryfirst`, so the cost is
finalized (and the ledger written) before the OpenLineage listener forks to emit COMPLETE/FAIL, and
its `get_cost_run_facets` call reuses the result. With `listener_order = last` the OpenLineage child
finalizes first, measuring this process by pid and writing the ledger itself; this listener's own
finalize then finds that capture already stored and leaves it, so ledger and facet still agree. When
the child could not write it, the capture waits in the spool and this finalize leaves it there: a
dead ledger costs the try one time budget, not two.

Where the OpenLineage listener forks, a tryfirst and a trylast listener freeze the heap around the
other task listeners and unfreeze it after them (capture.fork_heap).
"""

from __future__ import annotations

from typing import Any

from airflow.providers.common.compat.sdk import hookimpl

from airflow_cost_provider import tracker
from airflow_cost_provider.capture import fork_heap
from airflow_cost_provider.capture.safety import guarded


@guarded("finalizing the cost capture")
def _finalize(task_instance: Any, state: str) -> None:
    tracker.finalize(task_instance, tracker.terminal_state(task_instance, state))


def _listener_class(name: str, **order: bool) -> type:
    class CostListener:
        @hookimpl(**order)
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            tracker.start(task_instance)

        @hookimpl(**order)
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            _finalize(task_instance, "success")

        @hookimpl(**order)
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            _finalize(task_instance, "failed")

        @hookimpl(**order)
        def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
            _finalize(task_instance, "skipped")

        @hookimpl(**order)
        def on_dag_run_success(self, dag_run: Any, msg: str) -> None:
            tracker.dag_run_ended(dag_run)

        @hookimpl(**order)
        def on_dag_run_failed(self, dag_run: Any, msg: str) -> None:
            tracker.dag_run_ended(dag_run)

        @hookimpl(**order)
        def before_stopping(self, component: Any) -> None:
            # a deferring task gets no other call: keep its capture for the process that resumes it
            tracker.suspend_if_deferred()

    CostListener.__name__ = CostListener.__qualname__ = name
    return CostListener


RunsFirstCostListener = _listener_class("RunsFirstCostListener", tryfirst=True)
RunsLastCostListener = _listener_class("RunsLastCostListener", trylast=True)


def make_listener(order: str) -> Any:
    return (RunsLastCostListener if order == "last" else RunsFirstCostListener)()


@guarded("freezing the heap for the OpenLineage child")
def _freeze() -> None:
    fork_heap.freeze()


@guarded("unfreezing the heap after the OpenLineage child")
def _release() -> None:
    fork_heap.release()


def _heap_listener_class(name: str, action: Any, doc: str, **order: bool) -> type:
    class HeapListener:
        @hookimpl(**order)
        def on_task_instance_running(self, previous_state: Any, task_instance: Any) -> None:
            action()

        @hookimpl(**order)
        def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
            action()

        @hookimpl(**order)
        def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
            action()

        @hookimpl(**order)
        def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
            action()

    HeapListener.__name__ = HeapListener.__qualname__ = name
    HeapListener.__doc__ = doc
    return HeapListener


HeapFreezer = _heap_listener_class(
    "HeapFreezer",
    _freeze,
    "Freezes the heap before the other task listeners run (see capture.fork_heap).",
    tryfirst=True,
)
HeapReleaser = _heap_listener_class(
    "HeapReleaser", _release, "Unfreezes it once they have run, before the task goes on.", trylast=True
)


def make_listeners(order: str, freeze_heap: bool) -> list[Any]:
    """The cost listener and, with freeze_heap, the pair that keeps the OpenLineage listener's forked
    children off the heap."""
    listener = make_listener(order)
    return [HeapFreezer(), listener, HeapReleaser()] if freeze_heap else [listener]
