"""The attribution identity of a task try, and its OpenLineage run id."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

TryKey = tuple[str, str, str, int, int]  # dag_id, task_id, run_id, map_index, try_number


@dataclass(frozen=True)
class TaskTry:
    dag_id: str
    task_id: str
    run_id: str
    try_number: int
    map_index: int
    ol_run_id: str | None = None
    # attribution (capture/attribution.py): who the cost belongs to, for reports and budgets
    owner: str | None = None
    team: str | None = None
    dag_tags: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # (key, value), sorted by key

    @property
    def key(self) -> TryKey:
        return (self.dag_id, self.task_id, self.run_id, self.map_index, self.try_number)

    def tags(self) -> dict[str, str]:
        """The identity as tag values, for the carriers each platform has (comments, labels, ...)."""
        tags = {
            "airflow_dag_id": self.dag_id,
            "airflow_task_id": self.task_id,
            "airflow_run_id": self.run_id,
            "airflow_try_number": str(self.try_number),
            "airflow_map_index": str(self.map_index),
        }
        if self.ol_run_id:
            tags["openlineage_run_id"] = self.ol_run_id
        # the platforms' own bills can then be split by team and label too
        if self.team:
            tags["airflow_team"] = self.team
        for key, value in self.labels:
            tags[f"cost_label_{key}"] = value
        return tags


def try_key(ti: Any) -> TryKey:
    map_index = getattr(ti, "map_index", -1)
    return (ti.dag_id, ti.task_id, ti.run_id, -1 if map_index is None else int(map_index), int(ti.try_number))


def _dag_run(ti: Any) -> Any:
    # The Task SDK keeps the run it was started with; get_template_context() would re-validate the
    # DAG's params on every call to return the same object.
    from_server = getattr(ti, "_ti_context_from_server", None)
    if from_server is not None and getattr(from_server, "dag_run", None) is not None:
        return from_server.dag_run
    if hasattr(ti, "get_template_context"):
        return ti.get_template_context().get("dag_run")
    return getattr(ti, "dag_run", None)


def _logical_date(ti: Any) -> dt.datetime | None:
    """The date the OpenLineage provider uses for the run id: the logical date, else run_after."""
    dag_run = _dag_run(ti)
    if dag_run is None:
        return None
    return getattr(dag_run, "logical_date", None) or getattr(dag_run, "run_after", None)


def openlineage_run_id(ti: Any) -> str | None:
    """The deterministic run id the OpenLineage provider gives this task try; None when OpenLineage is
    not installed or not enabled (then no event carries it, and importing the adapter would cost the
    task process most of a second)."""
    try:
        from airflow.providers.openlineage import conf as openlineage_conf

        if openlineage_conf.is_disabled():
            return None
        from airflow.providers.openlineage.plugins.adapter import OpenLineageAdapter
    except ImportError:
        return None
    try:
        logical_date = _logical_date(ti)
        if logical_date is None:
            return None
        return OpenLineageAdapter.build_task_instance_run_id(
            dag_id=ti.dag_id,
            task_id=ti.task_id,
            try_number=ti.try_number,
            logical_date=logical_date,
            map_index=ti.map_index,
        )
    except Exception:
        log.debug("cost provider: no OpenLineage run id for %s", try_key(ti), exc_info=True)
        return None


def task_try_from_ti(ti: Any) -> TaskTry:
    from airflow_cost_provider.capture.attribution import attribution_of

    dag_id, task_id, run_id, map_index, try_number = try_key(ti)
    attribution = attribution_of(ti)
    return TaskTry(
        dag_id,
        task_id,
        run_id,
        try_number,
        map_index,
        openlineage_run_id(ti),
        owner=attribution.owner,
        team=attribution.team,
        dag_tags=attribution.dag_tags,
        labels=attribution.labels,
    )
