"""Cloud Storage costs from the Cloud Billing export to BigQuery, daily.

Runs one query on the detailed (resource-level) export table through the `google_cloud_default`
connection: every service's rows of the days to import, summed per day, service, resource, SKU, cost
type and resource labels in BigQuery, credits included (`ImportBillingCostsOperator`: the whole bill,
in `cost_billing_costs`, with BigQuery jobs' `openlineage_run_id` label); Cloud Storage rows also
become the storage costs per bucket. Set the Airflow Variable `cost_gcp_billing_export_table` to
`<project>.<dataset>.gcp_billing_export_resource_v1_<BILLING_ACCOUNT_ID>` (the standard table works
too, but has no buckets: its costs are per project; a FOCUS export table works as well).

The data interval is the billing day. Each run also re-imports the 5 days before it, and the whole
previous month until the 10th. Each bucket then carries the `costProvider_storageCost` facet in
Marquez (dataset `gs://<bucket>`). The query is billed like any BigQuery job and shows up in this
task's own cost.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_cost_provider.operators.storage import ImportBillingCostsOperator

try:
    from airflow.sdk import CronDataIntervalTimetable
except ImportError:  # Airflow < 3.2
    from airflow.timetables.interval import CronDataIntervalTimetable


@dag(
    schedule=CronDataIntervalTimetable("0 6 * * *", timezone="UTC"),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "example", "storage", "gcp"],
)
def example_storage_gcp():
    ImportBillingCostsOperator(
        task_id="import_gcs_costs",
        source="gcp-billing-export",
        table="{{ var.value.get('cost_gcp_billing_export_table', "
        "'my-project.billing_export.gcp_billing_export_resource_v1_000000_000000_000000') }}",
        location="{{ var.value.get('cost_gcp_billing_export_location', 'US') }}",
        retries=2,
    )


example_storage_gcp()
