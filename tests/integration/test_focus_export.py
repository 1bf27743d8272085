"""The FOCUS export of a ledger filled by real `airflow dags test` runs and a real storage import,
checked by the FinOps Foundation's own `focus-validator` (CSV and Parquet), with the totals of
`airflow-cost report` for the same period."""

from __future__ import annotations

import csv
import datetime as dt
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from airflow_cost_provider.billing import samples
from tests.support import focus_validator
from tests.support.airflow_env import ledger_rows

pytestmark = pytest.mark.integration

TODAY = dt.datetime.now(dt.timezone.utc).date()
SINCE, UNTIL = str(TODAY - dt.timedelta(days=2)), str(TODAY + dt.timedelta(days=1))


def cli(*args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("airflow-cost")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def exported(airflow_env, postgres_server, mariadb_server, tmp_path_factory):
    """Task tries of two DAGs (owners, teams, labels, DAG tags; priced and unpriced statements) and
    three days of storage billing data in one ledger, exported as CSV and as Parquet."""
    folder = tmp_path_factory.mktemp("focus-export")
    ledger = f"sqlite:///{folder / 'ledger.db'}"
    runs = [
        airflow_env.dags_test(
            "cost_attribution",
            ledger_url=ledger,
            env={"COST_ATTRIBUTION_COMMENT": str(folder / "comment.txt")},
        ),
        airflow_env.dags_test(
            "cost_sql_local",
            ledger_url=ledger,
            env={
                "AIRFLOW_CONN_PG_SHOP": postgres_server.conn_uri(),
                "AIRFLOW_CONN_MYSQL_SHOP": mariadb_server.conn_uri(),
                "AIRFLOW__COST_PROVIDER__CONNECTION_PRICING": json.dumps(
                    {"pg_shop": {"instance_type": "db.r6g.large"}}
                ),
            },
        ),
    ]
    for run in runs:
        assert run.process.returncode == 0, run.output[-4000:]
    billing = samples.write_focus(
        samples.sample_charges(TODAY - dt.timedelta(days=2), 3), folder / "billing" / "focus.csv"
    )
    imported = cli(
        "import-storage", "--format", "focus", "--path", str(billing), "--ledger", ledger, "--no-progress"
    )
    assert imported.returncode == 0, imported.stderr
    outputs = {}
    for extension in ("csv", "parquet"):
        path = folder / f"costs.{extension}"
        done = cli(
            "export",
            "--format",
            "focus",
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--output",
            str(path),
            "--ledger",
            ledger,
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        outputs[extension] = (path, done.stdout)
    return ledger, outputs, folder


@pytest.mark.parametrize("extension", ["csv", "parquet"])
def test_focus_validator_passes_the_export(exported, extension):
    _, outputs, folder = exported
    path, _ = outputs[extension]
    verdict = focus_validator.validate(path, folder / f"validate-{extension}")
    assert verdict.failed == set(), f"{sorted(verdict.failed)}\n{verdict.output[-3000:]}"
    # the FOCUS 1.2 rule set ran, the mandatory columns' rules and the tag and usage rules among them
    assert verdict.total > 500
    for rule in (
        "BilledCost-C-000-M",
        "ContractedCost-C-000-M",
        "EffectiveCost-C-003-M",
        "ChargePeriodStart-C-000-M",
        "Tags-C-001-M",
        "ConsumedQuantity-C-006-C",
    ):
        assert rule in verdict.passed, rule


def test_focus_validator_fails_a_broken_export(exported):
    """The check above can fail: a row without a BilledCost and one in no currency are caught."""
    _, outputs, folder = exported
    with outputs["csv"][0].open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    rows[0]["BilledCost"] = ""
    rows[1]["BillingCurrency"] = "XYZ"
    broken = folder / "broken.csv"
    with broken.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    verdict = focus_validator.validate(broken, folder / "validate-broken")
    assert {"BilledCost-C-003-M", "BillingCurrency-C-006-M"} <= verdict.failed


def test_export_totals_equal_the_reports_and_unpriced_lines_are_counted(exported):
    ledger, outputs, _ = exported
    path, printed = outputs["csv"]
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    sums: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        key = (row["x_RowKind"], row["BillingCurrency"])
        sums[key] = sums.get(key, Decimal(0)) + Decimal(row["BilledCost"])
    report = json.loads(
        cli("report", "--ledger", ledger, "--since", SINCE, "--until", UNTIL, "--format", "json").stdout
    )
    task_totals = {("task", t["currency"]): Decimal(t["amount"]) for t in report["total"] if t["currency"]}
    storage = json.loads(
        cli(
            "report",
            "storage",
            "--ledger",
            ledger,
            "--since",
            SINCE,
            "--until",
            UNTIL,
            "--by",
            "day",
            "-o",
            "json",
        ).stdout
    )
    storage_totals = {("storage", t["currency"]): Decimal(t["amount"]) for t in storage["total"]}
    assert sums == {**task_totals, **storage_totals}
    assert {currency for _, currency in sums} == {"USD", "EUR"}
    # every priced line of the ledger is a row; the unpriced ones are counted in the output
    lines = ledger_rows(ledger, "SELECT amount_nanos FROM cost_lines")
    priced = sum(1 for line in lines if line["amount_nanos"] is not None)
    unpriced = len(lines) - priced
    assert sum(1 for row in rows if row["x_RowKind"] == "task") == priced
    assert unpriced > 0 and f"Left out: {unpriced} unpriced line" in printed
    teams = {row["x_Team"] for row in rows if row["x_DagId"] == "cost_attribution"}
    assert teams == {"marketing", "finance"}
    tags = [json.loads(row["Tags"]) for row in rows if row["x_TaskId"] == "load"]
    assert tags and all(t["product"] == "erp" and t["airflow-dag-tag/pii"] is True for t in tags)
