"""example_dbt_local under real `airflow dags test`: dbt (its own environment) builds the cost_demo
project on DuckDB in a BashOperator; the task's facet and the ledger get one line per node from
dbt's artifacts. A second run with nothing changed builds nothing (state:modified), its nodes are
recorded as reused, and `airflow-cost report savings` prices that reuse from the first run's builds.

DuckDB has no shipped price: a user price book gives it one here, as a user with a rate would."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from decimal import Decimal

import pytest

from airflow_cost_provider.cli import main
from airflow_cost_provider.pricing.money import quantize_amount
from tests.support.airflow_env import REPO, ledger_rows
from tests.support.dbt_tool import MATERIALIZED, MODELS, PER_HOUR, SEED, TESTS, dbt_binary, duckdb_price_book
from tests.support.openlineage import validate_event

pytestmark = pytest.mark.integration

FACET = "costProvider_cost"


@pytest.fixture(scope="module")
def dbt_runs(airflow_env, tmp_path_factory):
    dbt_binary()  # made before the DAG runs, as scripts/setup.sh does
    shutil.rmtree(airflow_env.home / "dbt_cost_demo", ignore_errors=True)
    book = duckdb_price_book(tmp_path_factory.mktemp("dbt-prices"))
    ledger = f"sqlite:///{tmp_path_factory.mktemp('dbt-ledger') / 'ledger.db'}"
    env = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH": str(book),
    }
    runs = [airflow_env.dags_test("example_dbt_local", ledger_url=ledger, env=env) for _ in range(2)]
    for run in runs:
        assert run.process.returncode == 0, run.output[-4000:]
        assert "(no impact on the task)" not in run.output
    return runs, ledger


def node_lines(ledger: str, run_id: str) -> dict[str, dict]:
    rows = ledger_rows(
        ledger,
        "SELECT u.resource, u.quantity, u.attributes, l.amount_nanos, l.source, l.metric, l.unpriced_reason "
        "FROM cost_lines l JOIN cost_usage u ON u.id = l.usage_id JOIN cost_task_runs t ON t.id = l.task_run_id "
        f"WHERE t.run_id = '{run_id}' AND l.source = 'duckdb'",
    )
    return {row["resource"]: {**row, "attributes": json.loads(row["attributes"])} for row in rows}


def completed_facet(run) -> dict:
    events = run.events()
    for event in events:
        validate_event(event)
    [complete] = [
        e
        for e in events
        if e["eventType"] == "COMPLETE" and e["job"]["name"] == "example_dbt_local.dbt_build"
    ]
    return complete["run"]["facets"][FACET]


def run_id_of(ledger: str, index: int) -> str:
    """The run id of the first (0) or second (1) run: `dags test` names runs by the time they start."""
    return ledger_rows(ledger, "SELECT run_id FROM cost_task_runs ORDER BY id")[index]["run_id"]


def test_the_first_run_has_a_line_per_node_in_the_ledger_and_the_facet(dbt_runs):
    (first, _), ledger = dbt_runs
    lines = node_lines(ledger, run_id_of(ledger, 0))
    assert sorted(lines) == sorted(SEED + MODELS + TESTS)
    for node, line in lines.items():
        attributes = line["attributes"]
        assert attributes["status"] == "success"
        assert attributes["dbt_unique_id"] == node
        assert line["metric"] == "instance_time"
        assert line["unpriced_reason"] is None
        assert Decimal(line["quantity"]) == Decimal(attributes["execution_time"]) > 0
        assert line["amount_nanos"] == int(
            quantize_amount(Decimal(line["quantity"]) * PER_HOUR / 3600).scaleb(9)
        )
        if node in MATERIALIZED:
            assert attributes["dbt_materialization"] == MATERIALIZED[node]
            assert attributes["dbt_relation"].endswith(f'"main"."{node.split(".")[-1]}"')
    facet = completed_facet(first)
    facet_lines = {line["resource"]: line for line in facet["lines"] if line["source"] == "duckdb"}
    assert sorted(facet_lines) == sorted(lines)
    for node, line in facet_lines.items():
        assert Decimal(str(line["amount"])) == Decimal(lines[node]["amount_nanos"]).scaleb(-9)
        assert line["method"] == "runtime_rate"
    # dbt's own process is the task's child: the worker lines carry its CPU time
    assert {line["source"] for line in facet["lines"]} == {"duckdb", "airflow_worker"}


def test_a_second_run_with_nothing_changed_reuses_every_model(dbt_runs):
    (first, second), ledger = dbt_runs
    lines = node_lines(ledger, run_id_of(ledger, 1))
    assert sorted(lines) == sorted(SEED + MODELS)  # data tests are not reused: they did not run
    assert {line["attributes"]["status"] for line in lines.values()} == {"reused"}
    assert {line["amount_nanos"] for line in lines.values()} == {0}
    facet = completed_facet(second)
    assert sorted(line["resource"] for line in facet["lines"] if line["source"] == "duckdb") == sorted(lines)


def test_the_savings_report_prices_the_reuse_from_the_first_build(dbt_runs):
    (first, _), ledger = dbt_runs
    built = node_lines(ledger, run_id_of(ledger, 0))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert (
            main(
                [
                    "report",
                    "savings",
                    "--by",
                    "model",
                    "--since",
                    "2026-01-01",
                    "--ledger",
                    ledger,
                    "-o",
                    "json",
                ]
            )
            == 0
        )
    report = json.loads(out.getvalue())
    rows = {row["model"]: row for row in report["rows"]}
    assert set(rows) == set(SEED + MODELS + TESTS)
    for node in TESTS:  # built, never reused
        assert (rows[node]["reuses"], rows[node]["builds"], rows[node]["saved"]) == (0, 1, None)
    for node in SEED + MODELS:
        row = rows[node]
        assert (row["reuses"], row["builds"], Decimal(row["reuse_rate"])) == (1, 1, Decimal("0.5"))
        assert Decimal(row["saved"]) == Decimal(built[node]["amount_nanos"]).scaleb(-9)
    [total] = report["total"]
    assert Decimal(total["saved"]) == sum(
        Decimal(built[node]["amount_nanos"]).scaleb(-9) for node in SEED + MODELS
    )
    assert report["unestimated_reuses"] == 0
