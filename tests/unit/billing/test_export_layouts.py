"""Which files of an export a scheduled import reads: the latest delivery of each month it needs."""

from __future__ import annotations

import datetime as dt

from airflow_cost_provider.billing.aws_cur import latest_deliveries, months_of
from airflow_cost_provider.billing.azure_exports import export_month, storage_account_of
from airflow_cost_provider.billing.files import RemoteObject
from airflow_cost_provider.billing.formats import FocusFormat
from airflow_cost_provider.billing.scan import DateWindow

T = dt.datetime(2026, 2, 1, tzinfo=dt.timezone.utc)


def obj(url, hours):
    return RemoteObject(url, 100, T + dt.timedelta(hours=hours))


def test_the_months_a_window_touches():
    window = DateWindow(dt.date(2025, 12, 28), dt.date(2026, 2, 2))
    assert months_of(window) == [dt.date(2025, 12, 1), dt.date(2026, 1, 1), dt.date(2026, 2, 1)]


def test_aws_data_exports_overwritten_or_versioned():
    root = "s3://b/cur2/exp/data"
    objects = [
        obj(f"{root}/BILLING_PERIOD=2025-12/exp-00001.snappy.parquet", 1),
        obj(f"{root}/BILLING_PERIOD=2025-12/exp-00002.snappy.parquet", 1),
        obj(f"{root}/BILLING_PERIOD=2026-01/20260103T0100Z/exp-00001.snappy.parquet", 2),
        obj(f"{root}/BILLING_PERIOD=2026-01/20260104T0100Z/exp-00001.snappy.parquet", 5),
        obj(f"{root}/BILLING_PERIOD=2026-01/20260104T0100Z/exp-00002.snappy.parquet", 5),
        obj(f"{root}/BILLING_PERIOD=2026-02/exp-00001.snappy.parquet", 9),
    ]
    chosen = latest_deliveries(objects, [dt.date(2025, 12, 1), dt.date(2026, 1, 1)], FocusFormat().accepts)
    assert [o.url.split("data/")[1] for o in chosen] == [
        "BILLING_PERIOD=2025-12/exp-00001.snappy.parquet",
        "BILLING_PERIOD=2025-12/exp-00002.snappy.parquet",
        "BILLING_PERIOD=2026-01/20260104T0100Z/exp-00001.snappy.parquet",
        "BILLING_PERIOD=2026-01/20260104T0100Z/exp-00002.snappy.parquet",
    ]


def test_azure_exports_keep_a_folder_per_run_and_the_last_one_counts():
    root = "abfss://exports@acct.dfs.core.windows.net/cost/focus-daily"
    objects = [
        obj(f"{root}/20260101-20260131/run-a/part_0_0001.csv.gz", 1),
        obj(f"{root}/20260101-20260131/run-a/manifest.json", 1),
        obj(f"{root}/20260101-20260131/run-b/part_0_0001.csv.gz", 3),
        obj(f"{root}/20260101-20260131/run-b/part_1_0001.csv.gz", 3),
        obj(f"{root}/20251201-20251231/run-z/part_0_0001.parquet", 0),
    ]
    assert export_month(objects[0].url) == (2026, 1)
    chosen = latest_deliveries(objects, [dt.date(2026, 1, 1)], FocusFormat().accepts, month_of=export_month)
    assert [o.url.rsplit("/", 2)[1:] for o in chosen] == [
        ["run-b", "part_0_0001.csv.gz"],
        ["run-b", "part_1_0001.csv.gz"],
    ]


def test_storage_account_names_from_resource_ids_in_any_case():
    assert (
        storage_account_of(
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/AcmeLake"
        )
        == "acmelake"
    )
    assert (
        storage_account_of("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/x")
        is None
    )


def test_deliveries_written_in_the_same_second_are_told_apart_by_name():
    root = "s3://b/cur2/exp/data/BILLING_PERIOD=2026-01"
    objects = [
        obj(f"{root}/20260111T0600Z/exp-00001.parquet", 1),
        obj(f"{root}/20260110T0600Z/exp-00001.parquet", 1),
    ]
    (chosen,) = latest_deliveries(objects, [dt.date(2026, 1, 1)], FocusFormat().accepts)
    assert "20260111T0600Z" in chosen.url
