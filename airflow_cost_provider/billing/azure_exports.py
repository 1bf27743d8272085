"""Azure Cost Management exports of type FocusCost (CSV, gzip CSV or Parquet) in a storage account.

An export writes `<container>/<directory>/<export-name>/<YYYYMMDD-YYYYMMDD>/<run-id>/part_*` plus a
manifest; each run of the export adds a run folder, and the one written last is current. The files
are FOCUS 1.0 with Azure's `x_` columns; a storage account's charges are those whose resource is a
`Microsoft.Storage/storageAccounts` resource (its bandwidth is booked under the Bandwidth service).

Azure bills a storage account, not a container: put costs on container datasets with an allocation
(see `billing.allocation`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from airflow_cost_provider.billing.aws_cur import latest_deliveries, months_of
from airflow_cost_provider.billing.files import RemoteObject, store_for
from airflow_cost_provider.billing.formats import FocusFormat
from airflow_cost_provider.billing.scan import DateWindow

_RUN_MONTH = re.compile(r"/(\d{4})(\d{2})01-\d{8}/")


def export_month(url: str) -> tuple[int, int] | None:
    match = _RUN_MONTH.search(url)
    return (int(match[1]), int(match[2])) if match else None


class AzureExportFormat(FocusFormat):
    name = "azure-export"
    description = "Azure Cost Management FocusCost export (CSV, gzip CSV or Parquet)"

    def __init__(self) -> None:
        super().__init__(provider="azure")


def storage_account_of(resource_id: str) -> str | None:
    """The account name of a storage account resource id (any case)."""
    match = re.search(r"/providers/microsoft\.storage/storageaccounts/([^/]+)", resource_id or "", re.I)
    return match[1].lower() if match else None


def list_export(
    path: str, window: DateWindow, conn_id: str | None, accepts: Callable[[str], bool]
) -> list[RemoteObject]:
    """The files of the latest run of each month of the window, under the export's folder
    (abfss://container@account.dfs.core.windows.net/directory/export-name/)."""
    objects = store_for(path, conn_id).list(path)
    return latest_deliveries(objects, months_of(window), accepts, month_of=export_month)
