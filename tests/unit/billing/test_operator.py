"""ImportStorageCostsOperator run in-process on a task context: window, ledger, facets."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pendulum
import pytest
from openlineage.client.serde import Serde

from airflow_cost_provider.billing import samples
from airflow_cost_provider.operators.storage import ImportStorageCostsOperator
from tests.support.airflow_env import ledger_rows
from tests.support.storage_billing import FACET, validate_storage_facet


def context(day: dt.date):
    start = pendulum.datetime(day.year, day.month, day.day, tz="UTC")
    return {
        "data_interval_start": start,
        "data_interval_end": start.add(days=1),
        "logical_date": start,
        "ti": SimpleNamespace(dag_id="storage", task_id="import", run_id="scheduled__x"),
    }


def test_a_run_imports_its_window_and_puts_the_billing_day_on_the_buckets(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    charges = samples.sample_charges(dt.date(2026, 8, 10), 12)
    samples.write_focus(charges, tmp_path / "exports" / "focus.csv")
    operator = ImportStorageCostsOperator(
        task_id="import",
        source="focus",
        path=str(tmp_path / "exports"),
        ledger_conn=ledger,
        allocation={"s3://acme-raw-events/events/": 10**12},
    )
    summary = operator.execute(context(dt.date(2026, 8, 20)))
    # the billing day and the 5 days before it: 2026-08-15 .. 2026-08-20
    days = {r["day"] for r in ledger_rows(ledger, "SELECT DISTINCT day FROM cost_storage_costs")}
    assert days == {f"2026-08-{d}" for d in range(15, 21)}
    assert summary["first_day"] == "2026-08-15" and summary["last_day"] == "2026-08-20"
    assert summary["rows_skipped"]["outside_window"] > 0
    lineage = operator.get_openlineage_facets_on_complete(None)
    names = {(d.namespace, d.name) for d in lineage.outputs}
    assert ("s3://acme-raw-events", "/") in names and ("gs://acme-lake-us", "/") in names
    assert ("s3://acme-raw-events", "events") in names  # the allocated prefix
    for dataset in lineage.outputs:
        facet = Serde.to_dict(dataset.facets[FACET])
        validate_storage_facet(facet)
        assert facet["period"] == {"start": "2026-08-20", "end": "2026-08-21"}
        assert facet["status"] == "final"  # long past: no scheduled run reads 2026-08-20 again
    imports = ledger_rows(
        ledger, "SELECT dag_id, task_id, run_id, window_start, window_end FROM cost_storage_imports"
    )
    assert imports == [
        {
            "dag_id": "storage",
            "task_id": "import",
            "run_id": "scheduled__x",
            "window_start": "2026-08-15",
            "window_end": "2026-08-21",
        }
    ]


def test_a_billing_day_without_data_gets_no_facet_and_no_row(tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    samples.write_focus(samples.sample_charges(dt.date(2026, 8, 10), 3), tmp_path / "focus.csv")
    operator = ImportStorageCostsOperator(
        task_id="import", source="focus", path=str(tmp_path / "focus.csv"), ledger_conn=ledger
    )
    operator.execute(context(dt.date(2026, 8, 14)))  # the export ends on the 12th
    assert operator.get_openlineage_facets_on_complete(None).outputs == []
    days = {r["day"] for r in ledger_rows(ledger, "SELECT DISTINCT day FROM cost_storage_costs")}
    assert days == {"2026-08-10", "2026-08-11", "2026-08-12"}


def test_arguments_are_checked_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="unknown billing source 'aws-curr'"):
        ImportStorageCostsOperator(task_id="x", source="aws-curr", path="s3://b/")
    with pytest.raises(ValueError, match="needs table="):
        ImportStorageCostsOperator(task_id="x", source="gcp-billing-export")
    with pytest.raises(ValueError, match="needs scope="):
        ImportStorageCostsOperator(task_id="x", source="azure-cost-management")
