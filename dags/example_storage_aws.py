"""S3 storage costs from an AWS Data Export (CUR 2.0), daily.

Reads the export's Parquet or gzip CSV files from S3 through the `aws_default` connection: the
latest delivery of each month the run needs, under
`s3://<bucket>/<prefix>/<export-name>/data/BILLING_PERIOD=YYYY-MM/`. Set the Airflow Variable
`cost_aws_data_export_path` to `s3://<bucket>/<prefix>/<export-name>/`. Every service is imported
(`ImportBillingCostsOperator`) per day, resource, SKU and tag set into the whole bill
(`cost_billing_costs`, with each row's `resource_tags`); S3 and S3 Glacier line items (storage,
requests, retrieval, data transfer out, across regions and to other services) also become the storage
costs per bucket, usage type and day, credits and refunds included.

The data interval is the billing day. Each run also re-imports the 5 days before it, and the whole
previous month until the 10th, because AWS keeps revising them; restated rows replace the earlier
ones. Each bucket then carries the `costProvider_storageCost` facet in Marquez (dataset
`s3://<bucket>`).

For a "FOCUS 1.0 with AWS columns" export, use `source="aws-focus"`. Without a Data Export, use
`source="aws-cost-explorer"` (Cost Explorer API, USD 0.01 per request; buckets and other resources
for the last 14 days, a cost allocation tag on the buckets, `bucket_tag_key`, before that; the
other services' costs per service and `openlineage_run_id` tag).
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
    tags=["cost-provider", "example", "storage", "aws"],
)
def example_storage_aws():
    ImportBillingCostsOperator(
        task_id="import_s3_costs",
        source="aws-cur",
        path="{{ var.value.get('cost_aws_data_export_path', 's3://my-billing-exports/cur2/storage-costs/') }}",
        retries=2,
    )


example_storage_aws()
