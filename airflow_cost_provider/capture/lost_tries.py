"""Task tries that ended without reporting their cost: a task process killed (out of memory, SIGKILL)
or its worker lost. Airflow still records such a try, failed or up for retry, but no listener ran in
it. When a DAG run ends, the listener in the process that ends it (the scheduler) compares Airflow's
tries of the run with the ledger's and writes each missing one with its run time, unpriced and with
the reason, so the ledger holds one row per try Airflow ran. A capture that arrives later (replayed
from a worker's spool) replaces that row.

The comparison runs on a background thread, a while after the run ended (the last try's own write
may still be under way), so the scheduler never waits on the ledger.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import heapq
import logging
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.pricing.estimate import UNPRICED_HINT_ATTRIBUTE
from airflow_cost_provider.pricing.model import Unpriced, Usage
from airflow_cost_provider.result import CostResult

log = logging.getLogger("airflow_cost_provider")

SOURCE = "airflow_worker"
METRIC = "run_time"
REASON = (
    "the task's process ended without reporting its cost (killed, or its worker lost): "
    "only its run time is known"
)
# Airflow's states of a try that ran and is over; a try never started has nothing to cost
_ENDED = ("success", "failed", "up_for_retry", "skipped", "upstream_failed", "removed", "restarting")


@dataclass(frozen=True)
class AirflowTry:
    """One try of a task as Airflow's metadata database records it."""

    task_id: str
    map_index: int
    try_number: int
    state: str
    start_date: dt.datetime
    end_date: dt.datetime | None
    hostname: str | None

    @property
    def key(self) -> tuple[str, int, int]:
        return (self.task_id, self.map_index, self.try_number)


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.timezone.utc)


def airflow_tries(dag_id: str, run_id: str) -> list[AirflowTry]:
    """Every try of the run that started and ended: the current ones and those kept in the history."""
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.taskinstancehistory import TaskInstanceHistory
    from airflow.utils.session import create_session

    tries: dict[tuple, AirflowTry] = {}
    with create_session() as session:
        for model in (TaskInstanceHistory, TaskInstance):
            rows = session.execute(
                sa.select(
                    model.task_id,
                    model.map_index,
                    model.try_number,
                    model.state,
                    model.start_date,
                    model.end_date,
                    model.hostname,
                ).where(model.dag_id == dag_id, model.run_id == run_id, model.start_date.is_not(None))
            )
            for row in rows:
                state = str(getattr(row.state, "value", row.state) or "").lower()
                if state not in _ENDED:
                    continue
                found = AirflowTry(
                    row.task_id,
                    -1 if row.map_index is None else int(row.map_index),
                    int(row.try_number),
                    state,
                    _utc(row.start_date),
                    _utc(row.end_date),
                    row.hostname or None,
                )
                tries[found.key] = found
    return list(tries.values())


def missing_tries(engine: sa.Engine, dag_id: str, run_id: str, tries: list[AirflowTry]) -> list[AirflowTry]:
    """The tries the ledger does not hold (one indexed look-up: DAG, its tasks, the run)."""
    from airflow_cost_provider.ledger.schema import task_runs

    if not tries:
        return []
    c = task_runs.c
    query = sa.select(c.task_id, c.map_index, c.try_number).where(
        c.dag_id == dag_id, c.task_id.in_(sorted({t.task_id for t in tries})), c.run_id == run_id
    )
    with engine.connect() as conn:
        held = {(row.task_id, row.map_index, row.try_number) for row in conn.execute(query)}
    return [t for t in tries if t.key not in held]


def _attribution(engine: sa.Engine, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
    """The owner, team, tags and labels another try of the same task recorded, if any did."""
    from airflow_cost_provider.ledger.schema import task_run_labels, task_runs

    c = task_runs.c
    with engine.connect() as conn:
        sibling = conn.execute(
            sa.select(c.id, c.owner, c.team)
            .where(c.dag_id == dag_id, c.task_id == task_id, c.run_id == run_id)
            .order_by(c.try_number.desc())
            .limit(1)
        ).first()
        if sibling is None:
            return {}
        labels = conn.execute(
            sa.select(task_run_labels.c.kind, task_run_labels.c.key, task_run_labels.c.value).where(
                task_run_labels.c.task_run_id == sibling.id
            )
        ).all()
    return {
        "owner": sibling.owner,
        "team": sibling.team,
        "dag_tags": tuple(sorted(row.key for row in labels if row.kind == "tag")),
        "labels": tuple(sorted((row.key, row.value) for row in labels if row.kind == "label")),
    }


def _openlineage_run_id(dag_id: str, found: AirflowTry, logical_date: dt.datetime | None) -> str | None:
    from airflow_cost_provider.capture.identity import openlineage_run_id

    ti = SimpleNamespace(
        dag_id=dag_id,
        task_id=found.task_id,
        try_number=found.try_number,
        map_index=found.map_index,
        dag_run=SimpleNamespace(logical_date=logical_date, run_after=logical_date),
    )
    return openlineage_run_id(ti)


def lost_result(
    task_try: TaskTry, found: AirflowTry, state: str, now: dt.datetime | None = None
) -> CostResult:
    """The ledger row of a try that reported nothing: its run time, unpriced, with the reason."""
    end = found.end_date or now or dt.datetime.now(dt.timezone.utc)
    seconds = max(Decimal(0), Decimal(str((end - found.start_date).total_seconds())))
    usage = Usage(
        SOURCE,
        METRIC,
        seconds,
        "second",
        resource=found.hostname,
        start_time=found.start_date,
        end_time=end,
        attributes={UNPRICED_HINT_ATTRIBUTE: REASON},
    )
    key = "/".join(
        map(str, (task_try.dag_id, task_try.task_id, task_try.run_id, found.map_index, found.try_number))
    )
    return CostResult(
        task_try=task_try,
        capture_id=hashlib.md5(("lost:" + key).encode(), usedforsecurity=False).hexdigest(),
        state=state,
        start_time=found.start_date,
        end_time=end,
        hostname=found.hostname,
        lines=(),
        unpriced=(Unpriced(usage, REASON),),
    )


def record_lost_tries(
    engine: sa.Engine, dag_id: str, run_id: str, logical_date: dt.datetime | None, tries: list[AirflowTry]
) -> list[CostResult]:
    """Write every try of the run the ledger misses; a try written meanwhile is left as it is."""
    from airflow_cost_provider.ledger.store import store

    written = []
    latest = {}
    for found in tries:
        latest[(found.task_id, found.map_index)] = max(
            latest.get((found.task_id, found.map_index), 0), found.try_number
        )
    for found in missing_tries(engine, dag_id, run_id, tries):
        # the listener calls a try that Airflow retried up_for_retry; the history keeps it as failed
        retried = found.try_number < latest[(found.task_id, found.map_index)]
        state = "up_for_retry" if retried and found.state == "failed" else found.state
        task_try = TaskTry(
            dag_id,
            found.task_id,
            run_id,
            found.try_number,
            found.map_index,
            _openlineage_run_id(dag_id, found, logical_date),
            **_attribution(engine, dag_id, run_id, found.task_id),
        )
        result = lost_result(task_try, found, state)
        if store(engine, result, only_if_absent=True):
            log.warning(
                "cost provider: %s.%s try %s of run %s ended without reporting its cost; recorded with its "
                "run time, unpriced",
                dag_id,
                found.task_id,
                found.try_number,
                run_id,
            )
            written.append(result)
    return written


class LostTrySweeper:
    """One daemon thread that checks each ended DAG run once its tries' own writes are due."""

    def __init__(self, check: Any, delay: float) -> None:
        self._check = check
        self._delay = delay
        self._due: list[tuple[float, int, tuple]] = []
        self._count = 0
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None

    def submit(self, *run: Any) -> None:
        with self._wake:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + self._delay, self._count, run))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cost-lost-tries", daemon=True)
                self._thread.start()
            self._wake.notify()

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._due or self._due[0][0] > time.monotonic():
                    self._wake.wait(None if not self._due else self._due[0][0] - time.monotonic())
                _, _, run = heapq.heappop(self._due)
            try:
                self._check(*run)
            except Exception as error:  # the ledger or the metadata database is down: said, never raised
                log.warning(
                    "cost provider: checking DAG run %s for tries without a cost failed: %s", run[:2], error
                )
