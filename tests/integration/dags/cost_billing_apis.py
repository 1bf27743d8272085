"""The whole bill of three clouds from their APIs (Cost Explorer, Cost Management, the Cloud Billing
export in BigQuery), then reconciled with the BigQuery jobs' slot time from INFORMATION_SCHEMA."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag

from airflow_cost_provider.operators.reconcile import ReconcileBillingOperator
from airflow_cost_provider.operators.storage import ImportBillingCostsOperator

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
def cost_billing_apis():
    aws = ImportBillingCostsOperator(
        task_id="import_aws", source="aws-cost-explorer", bucket_tag_key="bucket"
    )
    azure = ImportBillingCostsOperator(
        task_id="import_azure", source="azure-cost-management", scope="{{ var.value.cost_azure_scope }}"
    )
    gcp = ImportBillingCostsOperator(
        task_id="import_gcp", source="gcp-billing-export", table="{{ var.value.cost_gcp_table }}"
    )
    reconcile = ReconcileBillingOperator(task_id="reconcile", bigquery_jobs=["acme-data:US"])
    [aws, azure, gcp] >> reconcile


cost_billing_apis()
