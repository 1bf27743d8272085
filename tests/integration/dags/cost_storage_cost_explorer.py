"""S3 storage costs from the Cost Explorer API (for accounts without a Data Export), daily."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_cost_provider.operators.storage import ImportStorageCostsOperator

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow < 3.2
    from airflow.timetables.interval import CronDataIntervalTimetable


@dag(
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "test"],
)
def cost_storage_cost_explorer():
    ImportStorageCostsOperator(task_id="import_s3_costs", source="aws-cost-explorer", bucket_tag_key="bucket")


cost_storage_cost_explorer()
