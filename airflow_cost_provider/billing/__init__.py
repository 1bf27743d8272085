"""Storage costs from billing data: AWS Data Exports and Cost Explorer, the Cloud Billing export in
BigQuery, Azure Cost Management queries and exports, and FOCUS files, all read into FOCUS-shaped rows
and imported into the ledger per bucket, day, SKU and usage class."""

from airflow_cost_provider.billing.errors import BillingDataError, BillingSourceError
from airflow_cost_provider.billing.registry import FILE_FORMATS, SOURCES, file_format

__all__ = ["FILE_FORMATS", "SOURCES", "BillingDataError", "BillingSourceError", "file_format"]
