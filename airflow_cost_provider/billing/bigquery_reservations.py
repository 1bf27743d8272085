"""BigQuery editions: each job's slot time per reservation and day, from INFORMATION_SCHEMA.

On demand, a job is billed by the bytes it read and its bill row carries the job's labels (the try's
run id). On an edition, the bill is a reservation's slot-hours (SKUs such as "BigQuery Enterprise
Edition for US (multi-region)", per reservation in the detailed export's `resource.name`,
`projects/<admin>/locations/<location>/reservations/<name>`), not jobs: `reconcile` splits it over
the BigQuery lines of the jobs that ran on the reservation, each weighted by its slot-ms, and keeps
the slots no task used as the reservation's idle amount.

A job's slot-ms per day come from `INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT` (`period_slot_ms`
per job per second, with `reservation_id`), read with one query per project and location through the
Google provider's BigQueryHook; without it, from the job's own statistics read when its task ended
(`totalSlotMs` and `reservation_id` of jobs.get), all on the day the job started. A script (a
multi-statement query) runs each statement as a child job, and the view gives the script's own rows
the total of its children's: the children's slot time is counted once, as the script's (the job the
task ran), and the script's own rows are left out.

The export also has an "Analysis Slots Attribution" line per project that used a reservation: slot
hours at no cost, so it changes no amount here.

https://cloud.google.com/bigquery/docs/information-schema-jobs-timeline
https://cloud.google.com/bigquery/docs/reservations-monitoring
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from airflow_cost_provider.billing.scan import DateWindow

log = logging.getLogger(__name__)

QUERY_TIMEOUT_SECONDS = 300
# jobs are partitioned by their creation time: a job that used slots in the window was created at
# most this long before it (BigQuery stops a query job after 6 hours)
CREATION_MARGIN = dt.timedelta(days=1)

_TIMELINE_QUERY = """
SELECT job_id, project_id, reservation_id, usage_day, SUM(period_slot_ms) AS slot_ms
FROM (
  SELECT
    -- a script's statements run as child jobs: their slot time is the script's, the job a task ran
    COALESCE(parent_job_id, job_id) AS job_id,
    project_id,
    reservation_id,
    DATE(period_start) AS usage_day,
    period_slot_ms
  FROM `region-{location}`.INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT
  WHERE job_creation_time >= @creation_start
    AND period_start >= @window_start
    AND period_start < @window_end
    AND reservation_id IS NOT NULL
    AND period_slot_ms > 0
    -- the script's own rows repeat its children's slot time
    AND (statement_type IS NULL OR statement_type != 'SCRIPT')
)
GROUP BY job_id, project_id, reservation_id, usage_day
"""


@dataclass(frozen=True)
class JobSlots:
    """The slot-ms a job used of a reservation on one day."""

    job_id: str
    project: str
    reservation_id: str  # as BigQuery writes it: `<admin project>:<LOCATION>.<reservation>`
    day: dt.date
    slot_ms: int


def parse_projects(values: list[str] | tuple[str, ...] | str) -> list[tuple[str, str]]:
    """`project:location` items (e.g. `acme-data:US`, `acme-eu:europe-west1`) -> (project, location)."""
    items = [values] if isinstance(values, str) else list(values)
    parsed = []
    for item in items:
        project, _, location = str(item).partition(":")
        if not project.strip() or not location.strip() or any(c in item for c in "`'\" "):
            raise ValueError(
                f"bigquery_jobs item {item!r}: give the project that ran the jobs and its location, "
                "as PROJECT:LOCATION, e.g. acme-data:US"
            )
        parsed.append((project.strip(), location.strip()))
    return parsed


def timeline_query(location: str) -> str:
    return _TIMELINE_QUERY.format(location=location.lower())


def _parameter(name: str, value: dt.datetime) -> dict[str, Any]:
    return {
        "name": name,
        "parameterType": {"type": "TIMESTAMP"},
        "parameterValue": {"value": value.strftime("%Y-%m-%d %H:%M:%S+00:00")},
    }


def query_configuration(location: str, window: DateWindow) -> dict[str, Any]:
    start = dt.datetime.combine(window.start, dt.time(), dt.timezone.utc)
    end = dt.datetime.combine(window.end, dt.time(), dt.timezone.utc)
    return {
        "query": {
            "query": timeline_query(location),
            "useLegacySql": False,
            "parameterMode": "NAMED",
            "queryParameters": [
                _parameter("creation_start", start - CREATION_MARGIN),
                _parameter("window_start", start),
                _parameter("window_end", end),
            ],
        }
    }


def _day(value: Any) -> dt.date:
    return dt.date.fromisoformat(value) if isinstance(value, str) else value


def read_job_slots(
    window: DateWindow,
    projects: list[tuple[str, str]],
    *,
    gcp_conn_id: str = "google_cloud_default",
    timeout: float = QUERY_TIMEOUT_SECONDS,
) -> list[JobSlots]:
    """Each job's slot-ms per reservation and day of the window, for every (project, location)."""
    from airflow_cost_provider.billing.gcp_billing_export import run_query

    found: list[JobSlots] = []
    for project, location in projects:
        rows, job = run_query(
            query_configuration(location, window),
            f"reading INFORMATION_SCHEMA.JOBS_TIMELINE_BY_PROJECT of project {project} in {location}",
            gcp_conn_id=gcp_conn_id,
            project_id=project,
            location=location,
            timeout=timeout,
        )
        found += [
            JobSlots(
                job_id=row["job_id"],
                project=row["project_id"] or project,
                reservation_id=row["reservation_id"],
                day=_day(row["usage_day"]),
                slot_ms=int(row["slot_ms"]),
            )
            for row in rows
        ]
        log.info(
            "BigQuery %s (%s): %d job-days on reservations in %s (job %s)",
            project,
            location,
            len(rows),
            window,
            job.job_id,
        )
    return found
