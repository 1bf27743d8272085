"""Billing sources by name: the file formats `airflow-cost import-storage --format` reads, and the
sources `ImportStorageCostsOperator(source=...)` imports from."""

from __future__ import annotations

from airflow_cost_provider.billing.aws_cur import AwsCurFormat
from airflow_cost_provider.billing.azure_exports import AzureExportFormat
from airflow_cost_provider.billing.formats import FileFormat, FocusFormat
from airflow_cost_provider.billing.gcp_billing_export import GcpBillingExportFormat

FILE_FORMATS: dict[str, type[FileFormat]] = {
    "focus": FocusFormat,
    "aws-cur": AwsCurFormat,
    "gcp-billing-export": GcpBillingExportFormat,
    "azure-export": AzureExportFormat,
}

# source -> (provider, what it reads)
SOURCES: dict[str, tuple[str | None, str]] = {
    "aws-cur": ("aws", "CUR 2.0 / Data Exports files (Parquet or gzip CSV) under an S3 path"),
    "aws-focus": ("aws", "Data Exports FOCUS files under an S3 path"),
    "aws-cost-explorer": ("aws", "the Cost Explorer API"),
    "gcp-billing-export": ("gcp", "the Cloud Billing export table in BigQuery"),
    "azure-cost-management": ("azure", "the Cost Management Query API"),
    "azure-export": ("azure", "FocusCost exports in a storage account"),
    "snowflake-metering": ("snowflake", "ACCOUNT_USAGE warehouse metering through a Snowflake connection"),
    "databricks-usage": ("databricks", "system.billing.usage through a Databricks SQL warehouse"),
    "focus": (None, "FOCUS files (local, s3://, gs:// or abfss://)"),
}


def file_format(name: str) -> FileFormat:
    try:
        return FILE_FORMATS[name]()
    except KeyError:
        raise ValueError(f"unknown billing file format {name!r}; known: {', '.join(FILE_FORMATS)}") from None


def source_provider(name: str) -> str | None:
    if name not in SOURCES:
        raise ValueError(f"unknown billing source {name!r}; known: {', '.join(SOURCES)}")
    return SOURCES[name][0]
