"""A synthetic month: the sample bill of three clouds in their own export formats (AWS CUR 2.0
Parquet, the GCP billing export, Azure's FocusCost), imported with `import-billing`, against a ledger
of the tries that used its resources each day (Glue and BigQuery jobs billed under their runs' tags,
an Athena workgroup, an EMR cluster, the worker instances of a `billing_resources` rule). Where the
bill is at list price, each reconciled line equals its estimate; every billed dollar is in a pool;
attributed + unattributed = billed to the nano-unit; a re-run and a restated delivery keep it so."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider import conf
from airflow_cost_provider.billing import samples
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import billing_costs, lines, reconciliations
from tests.support.billing_rows import priced_line, store_try
from tests.unit.reconcile.test_reconcile import cli

START = dt.date(2026, 10, 1)
DAYS = 30
# the AWS worker instances (the sample's Azure VM is tagged too, but billed in EUR: apart)
RULES = [
    {
        "name": "workers",
        "source": "airflow_worker",
        "match": {"resource_id": "i-*", "tags": {"airflow-component": "worker"}},
    }
]


def store_day(engine, day: dt.date) -> None:
    """What the day's tasks used of the sample bill's resources, estimated at its list prices."""
    at = dt.datetime.combine(day, dt.time(6), dt.timezone.utc)
    used = {
        # tagged jobs: all of the job's bill is its try's
        "glue_job": (
            ("glue", "23400", "DPU-second", "2.86", "orders_etl"),
            samples.sample_run_id("glue", day),
        ),
        "bq_job": (
            ("bigquery", "1099511627776", "byte", "6.249953946", "acme-data/US"),
            samples.sample_run_id("bigquery", day),
        ),
        # half of the workgroup's scanned terabytes
        "athena_query": (("athena", "210000000000", "byte", "1.05", "analytics"), None),
        # three quarters of the cluster's instance-hours, at list price
        "emr_step": (("emr", "54", "instance-hour", "2.592", "j-2AXXXXXXGAPLF"), None),
        # a fifth of the worker instance
        "extract": (("airflow_worker", "40000", "vCPU-second", "0.3456", None), None),
        "load": (("airflow_worker", "10000", "vCPU-second", "0.1152", None), None),
    }
    for task, (spec, run_id) in used.items():
        line = priced_line(*spec, at)
        store_try(
            engine,
            "monthly",
            task,
            [line],
            ol_run_id=run_id,
            run_id=f"scheduled__{day}",
            start=at,
            minutes=20,
        )


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    folder = tmp_path_factory.mktemp("month")
    url = f"sqlite:///{folder / 'ledger.db'}"
    engine = store.get_engine(url)
    store.ensure_schema(engine)
    for offset in range(DAYS):
        store_day(engine, START + dt.timedelta(days=offset))
    charges = samples.sample_charges(START, DAYS)
    exports = {
        "aws-cur": samples.write_cur([c for c in charges if c.provider == "aws"], folder / "cur.parquet"),
        "gcp-billing-export": samples.write_gcp_export(
            [c for c in charges if c.provider == "gcp"], folder / "gcp.jsonl"
        ),
        "azure-export": samples.write_azure_focus(charges, folder / "azure.csv"),
    }
    for file_format, path in exports.items():
        cli("import-billing", "--ledger", url, "--format", file_format, "--path", str(path))
    return url, folder


@pytest.fixture
def rules(monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", json.dumps(RULES))
    conf.clear_cache()
    yield
    conf.clear_cache()


PERIOD = ("--since", str(START), "--until", str(START + dt.timedelta(days=DAYS)))


def reconcile(url: str) -> dict:
    code, out, err = cli("reconcile", "--ledger", url, *PERIOD, "-o", "json")
    assert code == 0, err
    return json.loads(out)


def check_every_dollar(url: str) -> None:
    engine = store.get_engine(url)
    with engine.connect() as conn:
        billed = dict(
            conn.execute(
                sa.select(billing_costs.c.currency, sa.func.sum(billing_costs.c.amount_nanos)).group_by(
                    billing_costs.c.currency
                )
            ).all()
        )
        pooled = dict(
            conn.execute(
                sa.select(reconciliations.c.currency, sa.func.sum(reconciliations.c.billed_nanos)).group_by(
                    reconciliations.c.currency
                )
            ).all()
        )
        unbalanced = conn.execute(
            sa.select(sa.func.count()).where(
                reconciliations.c.attributed_nanos + reconciliations.c.unattributed_nanos
                != reconciliations.c.billed_nanos
            )
        ).scalar()
    assert pooled == billed and unbalanced == 0


def test_a_month_of_three_clouds_reconciles_to_the_nano_unit(month, rules):
    url, _ = month
    document = reconcile(url)
    check_every_dollar(url)
    engine = store.get_engine(url)
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(lines.c.source, lines.c.amount_nanos, lines.c.reconciled_nanos, lines.c.status)
        ).all()
    assert len(found) == DAYS * 6 and {row.status for row in found} == {"reconciled"}
    for source, estimate, reconciled, _ in found:
        assert abs(reconciled - estimate) <= estimate * Decimal("0.005"), (source, estimate, reconciled)
    providers = {row["provider"]: row for row in document["rows"]}
    for row in providers.values():
        assert Decimal(row["attributed"]) + Decimal(row["unattributed"]) == Decimal(row["billed"])
    # the worker instance: a fifth used, the rest idle; RDS, storage, the Azure VM: untouched
    aws = providers["aws"]
    assert Decimal(aws["untouched"]) > 0 and Decimal(aws["coverage"]) < 1
    (workers,) = [pool for pool in document["idle"] if pool["pool"] == "rule:workers"]
    assert Decimal(workers["idle"]) == Decimal(workers["billed"]) * Decimal("0.8")
    accuracy = {row["source"]: row["ratio"] for row in document["accuracy"]}
    assert set(accuracy) == {"glue", "bigquery", "athena", "emr", "airflow_worker"}
    assert all(Decimal(ratio) == 1 for ratio in accuracy.values())


def test_a_rerun_and_a_restated_delivery_keep_every_dollar(month, rules):
    url, folder = month
    first = reconcile(url)
    assert reconcile(url)["rows"] == first["rows"]
    restated = samples.write_cur(
        [c for c in samples.sample_charges(START, DAYS, version=2) if c.provider == "aws"],
        folder / "cur-v2.parquet",
    )
    cli("import-billing", "--ledger", url, "--format", "aws-cur", "--path", str(restated), "--replace-days")
    again = reconcile(url)
    check_every_dollar(url)
    before = {row["provider"]: row for row in first["rows"]}["aws"]
    after = {row["provider"]: row for row in again["rows"]}["aws"]
    assert after["attributed"] == before["attributed"]  # the restated charges are storage: untouched
    assert after["untouched"] != before["untouched"]
