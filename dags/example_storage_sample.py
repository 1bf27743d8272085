"""Storage costs from synthetic billing exports (made-up buckets, not a bill): the whole storage-cost path with no cloud account.

A first task writes a FOCUS 1.0 export of three made-up clouds' buckets for the run's billing day and
the days the import reads again (the same sample data `scripts/generate_billing_exports.py` writes);
`ImportBillingCostsOperator` then imports it like any FOCUS export: every service, storage included,
goes into the whole bill (`cost_billing_costs`) per resource, SKU and tag set (EC2 workers tagged
`airflow-component=worker`, Glue, Athena and EMR, BigQuery with the job's labels), and S3, Cloud
Storage and Azure storage account charges also become daily costs per bucket, SKU and usage class
(storage, requests, retrieval, data transfer out, across regions and to other services), credits and
corrections included. Each bucket gets the `costProvider_storageCost` facet on the task's OpenLineage
COMPLETE event, and two prefixes and an Azure container get their share of storage by bytes (method
`allocated`).

See it with `airflow-cost report storage --by usage-class`, or in Marquez on the datasets
`s3://acme-raw-events`, `gs://acme-lake-us`, ... The data interval is the billing day.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_cost_provider.operators.storage import ImportBillingCostsOperator

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow < 3.2
    from airflow.timetables.interval import CronDataIntervalTimetable

# Bytes under a few prefixes, as an inventory report would give them; the rest stays with the bucket.
ALLOCATION = {
    "s3://acme-raw-events/events/clicks/": 600 * 10**9,
    "s3://acme-raw-events/events/orders/": 250 * 10**9,
    "gs://acme-lake-us/curated/": 900 * 10**9,
    "abfss://raw@acmelake.dfs.core.windows.net": 3 * 10**12,
}


@dag(
    schedule=CronDataIntervalTimetable("@daily", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "example", "storage", "local"],
)
def example_storage_sample():
    @task
    def write_sample_exports(data_interval_start=None, data_interval_end=None) -> str:
        from airflow_cost_provider.billing import samples, window

        period = window.billing_period(
            {"data_interval_start": data_interval_start, "data_interval_end": data_interval_end}
        )
        days = window.import_window(period)
        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
        directory = home / "cost-provider-sample-exports" / period.start.isoformat()
        shutil.rmtree(directory, ignore_errors=True)
        charges = samples.sample_charges(days.start, (days.end - days.start).days)
        samples.write_focus(charges, directory / "focus.csv")
        return str(directory)

    exports = write_sample_exports()
    import_costs = ImportBillingCostsOperator(
        task_id="import_storage_costs",
        source="focus",
        path="{{ ti.xcom_pull(task_ids='write_sample_exports') }}",
        allocation=ALLOCATION,
    )
    exports >> import_costs


example_storage_sample()
