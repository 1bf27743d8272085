"""Attribution end to end: a real `airflow dags test` of a DAG with an owner, team tags and cost labels;
the ledger rows each try gets, the statements' tags, and `airflow-cost report --by team|label:KEY`."""

from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.support.airflow_env import ledger_rows

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def attribution_run(airflow_env, tmp_path_factory):
    comment = tmp_path_factory.mktemp("attribution") / "comment.txt"
    run = airflow_env.dags_test(
        "cost_attribution",
        env={
            "COST_ATTRIBUTION_COMMENT": str(comment),
            # the DAG's team tag comes before the mapping: the mapping must not win
            "AIRFLOW__COST_PROVIDER__TEAM_MAPPING": json.dumps({"cost_*": "platform"}),
        },
    )
    assert run.process.returncode == 0, run.output[-4000:]
    return run, comment


def cli(*args: str) -> subprocess.CompletedProcess:
    binary = Path(sys.executable).with_name("airflow-cost")
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=60, check=False)


def test_each_try_carries_its_owner_team_tags_and_labels(attribution_run):
    run, _ = attribution_run
    runs = {
        r["task_id"]: r
        for r in ledger_rows(run.ledger_url, "SELECT id, task_id, owner, team FROM cost_task_runs")
    }
    assert {task: (r["owner"], r["team"]) for task, r in runs.items()} == {
        "extract": ("ana", "marketing"),
        "load": ("bob", "finance"),
    }
    labels = ledger_rows(
        run.ledger_url,
        "SELECT r.task_id, l.kind, l.key, l.value FROM cost_task_run_labels l "
        "JOIN cost_task_runs r ON l.task_run_id = r.id ORDER BY r.task_id, l.kind, l.key",
    )
    assert [tuple(r.values()) for r in labels] == [
        ("extract", "label", "product", "crm"),
        ("extract", "tag", "pii", ""),
        ("extract", "tag", "team:marketing", ""),
        ("load", "label", "env", "prod"),
        ("load", "label", "product", "erp"),
        ("load", "tag", "pii", ""),
        ("load", "tag", "team:marketing", ""),
    ]


def test_the_tags_sent_to_platforms_carry_team_and_labels(attribution_run):
    _, comment = attribution_run
    text = comment.read_text()
    assert text.startswith("/*airflow_dag_id='cost_attribution'")
    assert "airflow_team='marketing'" in text and "cost_label_product='crm'" in text


def test_daily_totals_equal_the_lines(attribution_run):
    run, _ = attribution_run
    lines = ledger_rows(
        run.ledger_url,
        "SELECT r.task_id, r.owner, r.team, l.source, l.currency, SUM(l.amount_nanos) AS nanos, COUNT(*) AS n "
        "FROM cost_lines l JOIN cost_task_runs r ON l.task_run_id = r.id "
        "GROUP BY r.task_id, r.owner, r.team, l.source, l.currency",
    )
    totals = ledger_rows(
        run.ledger_url,
        "SELECT task_id, owner, team, source, currency, amount_nanos, lines FROM cost_daily_totals",
    )
    assert lines and {
        (r["task_id"], r["owner"], r["team"], r["source"], r["currency"] or "", r["nanos"] or 0, r["n"])
        for r in lines
    } == {tuple(r.values()) for r in totals}


def test_report_by_team_and_by_label(attribution_run):
    run, _ = attribution_run
    nanos = {
        r["team"]: r["nanos"]
        for r in ledger_rows(
            run.ledger_url,
            "SELECT r.team, SUM(l.amount_nanos) AS nanos FROM cost_lines l JOIN cost_task_runs r "
            "ON l.task_run_id = r.id WHERE l.currency = 'USD' GROUP BY r.team",
        )
    }
    assert set(nanos) == {"marketing", "finance"} and all(nanos.values())
    period = ("--since", "2000-01-01", "--until", "2100-01-01")
    by_team = cli("report", "--ledger", run.ledger_url, *period, "--by", "team", "-o", "json")
    assert by_team.returncode == 0, by_team.stderr
    rows = json.loads(by_team.stdout)["rows"]
    assert {r["team"]: Decimal(r["amount"]) for r in rows if r["currency"] == "USD"} == {
        team: Decimal(n).scaleb(-9) for team, n in nanos.items()
    }
    by_label = cli("report", "--ledger", run.ledger_url, *period, "--by", "label:product,task")
    assert by_label.returncode == 0, by_label.stderr
    table = by_label.stdout
    assert "grouped by: label:product, dag_id, task_id" in table
    assert any(" crm " in f" {line} " and "extract" in line for line in table.splitlines()), table
    assert any(" erp " in f" {line} " and "load" in line for line in table.splitlines()), table
