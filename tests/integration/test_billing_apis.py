"""The whole bill from the clouds' APIs, end to end under `airflow dags test`: Cost Explorer (moto and
the front answering both operations from the sample bill with its tags), Cost Management (its Query
API with two groupings), the Cloud Billing export in BigQuery with a reservation's edition SKU, then
ReconcileBillingOperator with the jobs' slot time read from INFORMATION_SCHEMA through the hook.
Every billed dollar of the window is in a pool, attributed + unattributed = billed to the nano-unit,
the Glue job's tagged bill is its try's, and the reservation's slot-hours are split by slot-ms with
the unused slots named idle."""

from __future__ import annotations

import datetime as dt
import json
import shutil

import pytest

from airflow_cost_provider.billing import samples
from airflow_cost_provider.ledger import store
from tests.support import fake_aws
from tests.support.airflow_env import TEST_DAGS, AirflowEnv, ledger_rows
from tests.support.billing_rows import nanos, priced_line, store_try
from tests.support.fake_bigquery_billing import fake_bigquery_billing
from tests.support.fake_cost_explorer import cost_explorer_front, records_of, reset_moto
from tests.support.fake_cost_management import (
    azure_connection,
    fake_cost_management,
    identity_environment,
)
from tests.support.fake_cost_management import records_of as records_of_azure
from tests.unit.reconcile.test_month import check_every_dollar

pytestmark = pytest.mark.integration

START = dt.date(2026, 1, 10)
DAYS = 15
LOGICAL_DATE = "2026-01-20"
SCOPE = f"/subscriptions/{samples.AZURE_SUBSCRIPTION}"
TABLE = "billing-admin.billing_export.gcp_billing_export_resource_v1_01A2B3_C4D5E6_F7A8B9"
RESERVATION = "projects/acme-admin/locations/US/reservations/etl"
CHARGES = [c for c in samples.sample_charges(START, DAYS) if c.category == "Usage"]
DAY_LIST = [START + dt.timedelta(days=n) for n in range(DAYS)]


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> AirflowEnv:
    dags = tmp_path_factory.mktemp("billing-api-dags")
    shutil.copy(TEST_DAGS / "cost_billing_apis.py", dags)
    airflow = AirflowEnv(tmp_path_factory.mktemp("airflow-home-billing-apis"), dags_folder=dags)
    airflow.migrate()
    return airflow


def reservation_records() -> list[dict]:
    """The reservation's bill in the detailed export: 100 slot-hours a day at USD 0.06, in seconds."""
    (template,) = samples.gcp_export_records([c for c in CHARGES if c.service_name == "BigQuery"][:1])
    records = []
    for day in DAY_LIST:
        start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
        records.append(
            template
            | {
                "sku": {
                    "id": "3A0D-7DD5-0B73",
                    "description": "BigQuery Enterprise Edition for US (multi-region)",
                },
                "usage_start_time": start.isoformat(),
                "usage_end_time": (start + dt.timedelta(days=1)).isoformat(),
                "export_time": (start + dt.timedelta(days=1, hours=6)).isoformat(),
                "project": {"id": "acme-admin", "number": "987654321", "name": "acme-admin"},
                "labels": [],
                "cost": 6.0,
                "usage": {
                    "amount": 360000.0,
                    "unit": "seconds",
                    "amount_in_pricing_units": 100.0,
                    "pricing_unit": "hour",
                },
                "credits": [],
                "resource": {"name": RESERVATION, "global_name": None},
            }
        )
    return records


def timeline_rows() -> list[dict]:
    """Each day's job: 72 s at 1,000 slots, 20 slot-hours of the reservation's 100."""
    rows = []
    for day in DAY_LIST:
        start = dt.datetime.combine(day, dt.time(6), dt.timezone.utc)
        rows += [
            {
                "period_start": (start + dt.timedelta(seconds=n)).isoformat(),
                "period_slot_ms": 1_000_000,
                "project_id": "acme-data",
                "job_id": f"bq_{day:%Y%m%d}",
                "job_creation_time": start.isoformat(),
                "reservation_id": "acme-admin:US.etl",
                "edition": "ENTERPRISE",
            }
            for n in range(72)
        ]
    return rows


def fill_ledger(url: str) -> None:
    """The tries of the sample days: the Glue job each day (tagged with its run id) and a BigQuery
    job whose line knows nothing of its reservation (INFORMATION_SCHEMA tells)."""
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    for day in DAY_LIST:
        at = dt.datetime.combine(day, dt.time(6), dt.timezone.utc)
        glue = priced_line("glue", "23400", "DPU-second", "2.86", "orders_etl", at)
        store_try(
            engine,
            "etl",
            "glue_job",
            [glue],
            ol_run_id=samples.sample_run_id("glue", day),
            run_id=f"r{day}",
            start=at,
        )
        query = priced_line(
            "bigquery",
            str(20 * 3_600_000),
            "slot-ms",
            "1.20",
            "acme-data:US",
            at,
            metric="slot_time",
            external_id=f"bq_{day:%Y%m%d}",
        )
        store_try(engine, "etl", "report", [query], run_id=f"r{day}", start=at)


def test_three_clouds_whole_bill_from_their_apis_reconciles_with_reservations(env, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    fill_ledger(ledger)
    with (
        fake_aws.moto_server() as moto,
        cost_explorer_front(moto, days_per_page=4) as explorer,
        fake_cost_management(page_size=20) as azure,
        fake_bigquery_billing(page_size=40) as bigquery,
    ):
        reset_moto(moto)
        explorer.answer_cost_and_usage = True
        explorer.records += records_of([c for c in CHARGES if c.provider == "aws"])
        azure.records += records_of_azure([c for c in CHARGES if c.provider == "azure"])
        times = ("usage_start_time", "usage_end_time", "export_time")
        bigquery.load_table(TABLE, samples.gcp_export_records(CHARGES) + reservation_records(), times)
        bigquery.load_jobs_timeline("US", timeline_rows())
        run = env.dags_test(
            "cost_billing_apis",
            ledger_url=ledger,
            logical_date=LOGICAL_DATE,
            env={
                **fake_aws.airflow_env(moto, {"ce": explorer.url}),
                "AIRFLOW_CONN_AZURE_DEFAULT": azure_connection(azure),
                **identity_environment(azure),
                "AIRFLOW_VAR_COST_AZURE_SCOPE": SCOPE,
                "AIRFLOW_VAR_COST_GCP_TABLE": TABLE,
                "BIGQUERY_EMULATOR_HOST": bigquery.url,
                "AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT": json.dumps(
                    {
                        "conn_type": "google_cloud_platform",
                        "extra": {"is_anonymous": True, "project": "acme-data"},
                    }
                ),
            },
        )
        assert run.process.returncode == 0, run.output[-4000:]
        timeline_queries = [
            body
            for body in bigquery.inserted()
            if "JOBS_TIMELINE_BY_PROJECT" in body["configuration"]["query"]["query"]
        ]
        ce_operations = {r.target.rsplit(".", 1)[-1] for r in explorer.requests}
    assert len(timeline_queries) == 1 and "GetCostAndUsage" in ce_operations
    days = sorted(
        dt.date.fromisoformat(str(r["day"]))
        for r in ledger_rows(ledger, "SELECT DISTINCT day FROM cost_billing_costs")
    )
    assert len(days) == 6 and days[-1] <= dt.date(2026, 1, 21)
    providers = {
        r["provider"] for r in ledger_rows(ledger, "SELECT DISTINCT provider FROM cost_billing_costs")
    }
    assert providers == {"aws", "azure", "gcp"}
    # every billed dollar of the window in a pool, each pool balanced
    check_every_dollar(ledger)
    pools = ledger_rows(
        ledger,
        "SELECT day, pool, pool_kind, basis, billed_nanos, attributed_nanos, unattributed_nanos "
        "FROM cost_reconciliations",
    )
    glue = [p for p in pools if p["pool_kind"] == "try" and p["attributed_nanos"]]
    assert {str(p["day"]) for p in glue} == {str(d) for d in days}
    assert all(p["attributed_nanos"] == p["billed_nanos"] for p in glue)
    reservation = [p for p in pools if p["pool"] == RESERVATION]
    assert len(reservation) == len(days)
    for pool in reservation:
        assert pool["basis"] == "quantity" and pool["billed_nanos"] == nanos("6")
        assert pool["attributed_nanos"] == nanos("1.20") and pool["unattributed_nanos"] == nanos("4.80")
    reconciled = ledger_rows(
        ledger,
        "SELECT l.reconciled_nanos, r.start_time FROM cost_lines AS l JOIN cost_task_runs AS r "
        "ON r.id = l.task_run_id WHERE l.source = 'bigquery' AND l.status = 'reconciled'",
    )
    assert len(reconciled) == len(days) and {r["reconciled_nanos"] for r in reconciled} == {nanos("1.20")}
