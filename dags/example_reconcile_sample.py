"""Reconciliation on a made-up bill (not a bill: no cloud account): from estimates to billed amounts
and named idle.

A first task writes a FOCUS export that bills today's worker time of this Airflow's task tries the
way a cloud would bill the instances they ran on: two EC2 instances tagged
`airflow-component=worker`, at list price, made up so that the tries used a quarter of them. The
export is imported with `airflow-cost import-billing` (run in a task), then `ReconcileBillingOperator`
splits each billed resource of the last two days over the ledger lines that used it, with the
`billing_resources` rule given here: each worker line gets its share (at list price, its estimate),
the other three quarters are the pool's idle amount. `example_storage_sample`'s synthetic bill, if it
ran, is reconciled too: its resources no task used stay apart as untouched, and its sample jobs,
billed under run ids this ledger does not have, are unattributed.

Run it after DAGs that ran tasks today: the demo runs it last. See it with
`airflow-cost report coverage --by service` and `airflow-cost report --by task` (estimated and
reconciled side by side).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
from decimal import Decimal
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

from airflow_cost_provider.operators.reconcile import ReconcileBillingOperator

WORKERS = [
    {"name": "workers", "source": "airflow_worker", "match": {"tags": {"airflow-component": "worker"}}}
]
USED = Decimal("0.25")  # the share of the instances' time the tries used, in this made-up bill
INSTANCES = ("i-0a1b2c3d4e5f60001", "i-0a1b2c3d4e5f60002")


@dag(
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["cost-provider", "example", "reconcile", "local"],
    doc_md=__doc__,
)
def example_reconcile_sample():
    @task
    def write_sample_bill() -> str:
        """A FOCUS export of today's worker instances, priced from the ledger's worker lines."""
        import sqlalchemy as sa

        from airflow_cost_provider import conf
        from airflow_cost_provider.ledger.schema import lines, task_runs
        from airflow_cost_provider.ledger.store import get_engine, resolve_url

        engine = get_engine(resolve_url(conf.ledger_conn(), conf.default_ledger_url()))
        today = dt.datetime.now(dt.timezone.utc).date()
        start = dt.datetime.combine(today, dt.time(), dt.timezone.utc)
        with engine.connect() as conn:
            worker = conn.execute(
                sa.select(lines.c.currency, sa.func.sum(lines.c.amount_nanos))
                .join(task_runs, task_runs.c.id == lines.c.task_run_id)
                .where(lines.c.source == "airflow_worker", task_runs.c.start_time >= start)
                .where(lines.c.amount_nanos.is_not(None))
                .group_by(lines.c.currency)
            ).all()
        rows = [
            _charge(today, f"arn:aws:ec2:us-east-1:123456789012:instance/{instance}", cost, currency)
            for currency, nanos in worker
            if (cost := Decimal(nanos).scaleb(-9) / USED / len(INSTANCES))
            for instance in INSTANCES
        ]
        home = Path(os.environ.get("AIRFLOW_HOME", "~/airflow")).expanduser()
        path = home / "cost-provider-sample-bill" / "focus.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        return str(path)

    @task
    def import_bill(path: str) -> None:
        """`airflow-cost import-billing --format focus --path ...`, as a user runs it."""
        from airflow_cost_provider.cli import main

        if main(["import-billing", "--format", "focus", "--path", path, "--no-progress"]) != 0:
            raise RuntimeError("import-billing failed: see the log above")

    reconcile = ReconcileBillingOperator(task_id="reconcile", last_days=2, billing_resources=WORKERS)
    import_bill(write_sample_bill()) >> reconcile


COLUMNS = [
    "BilledCost",
    "BillingAccountId",
    "BillingCurrency",
    "ChargeCategory",
    "ChargePeriodStart",
    "ChargePeriodEnd",
    "ConsumedQuantity",
    "ConsumedUnit",
    "EffectiveCost",
    "ListCost",
    "ProviderName",
    "RegionId",
    "ResourceId",
    "ServiceCategory",
    "ServiceName",
    "SkuId",
    "Tags",
]


def _charge(day: dt.date, resource_id: str, cost: Decimal, currency: str) -> dict[str, str]:
    start = dt.datetime.combine(day, dt.time(), dt.timezone.utc)
    amount = str(cost.quantize(Decimal("1e-12")))
    return {
        "BilledCost": amount,
        "BillingAccountId": "123456789012",
        "BillingCurrency": currency,
        "ChargeCategory": "Usage",
        "ChargePeriodStart": start.isoformat(),
        "ChargePeriodEnd": (start + dt.timedelta(days=1)).isoformat(),
        "ConsumedQuantity": "24",
        "ConsumedUnit": "Hrs",
        "EffectiveCost": amount,
        "ListCost": amount,
        "ProviderName": "AWS",
        "RegionId": "us-east-1",
        "ResourceId": resource_id,
        "ServiceCategory": "Compute",
        "ServiceName": "Amazon Elastic Compute Cloud",
        "SkuId": "BoxUsage:m7g.large",
        "Tags": '{"airflow-component": "worker"}',
    }


example_reconcile_sample()
