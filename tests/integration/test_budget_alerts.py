"""Budget alerts end to end: real `airflow dags test` runs whose worker compute crosses a tiny daily
budget deliver one webhook POST and one e-mail (SmtpNotifier to a real SMTP server), once per period;
a notifier that raises leaves the task successful and its alert `failed` in the ledger; a guard
first in a DAG skips or fails the run once its budget is spent."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest
import sqlalchemy as sa

from tests.support.airflow_env import REPO, ledger_rows
from tests.support.budget_ledger import smtp_connection, smtp_server
from tests.support.http_recorder import recording_server

pytestmark = pytest.mark.integration

SMTP_NOTIFIER = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
RAISING_NOTIFIER = "tests.support.alert_notifiers.RaisingNotifier"


def midday_zone() -> str:
    """A fixed-offset zone where it is about noon now, so the day cannot end during the test."""
    offset = 12 - dt.datetime.now(dt.timezone.utc).hour  # -11 .. +12
    return "UTC" if offset == 0 else f"Etc/GMT{-offset:+d}"  # Etc/GMT-3 is UTC+3


def channel_of(row: dict) -> str:
    return row["channel"].split("#")[0]


def shift_to_yesterday(url: str) -> None:
    """Move everything the runs left in the ledger one day back, as if they had run yesterday."""
    engine = sa.create_engine(url)
    day = dt.timedelta(days=1)
    try:
        with engine.begin() as conn:
            for row in conn.execute(
                sa.text("SELECT id, period_start, period_end FROM cost_budget_alerts")
            ).all():
                start, end = (dt.date.fromisoformat(str(value)[:10]) for value in row[1:])
                conn.execute(
                    sa.text(
                        "UPDATE cost_budget_alerts SET period_start = :s, period_end = :e WHERE id = :id"
                    ),
                    {"s": start - day, "e": end - day, "id": row[0]},
                )
            for row in conn.execute(sa.text("SELECT DISTINCT day FROM cost_daily_totals ORDER BY day")).all():
                moved = dt.date.fromisoformat(str(row[0])[:10]) - day
                conn.execute(
                    sa.text("UPDATE cost_daily_totals SET day = :m WHERE day = :d"), {"m": moved, "d": row[0]}
                )
            for row in conn.execute(sa.text("SELECT id, start_time, end_time FROM cost_task_runs")).all():
                start, end = (dt.datetime.fromisoformat(str(value)) for value in row[1:])
                conn.execute(
                    sa.text("UPDATE cost_task_runs SET start_time = :s, end_time = :e WHERE id = :id"),
                    {"s": start - day, "e": end - day, "id": row[0]},
                )
    finally:
        engine.dispose()


def wait_for(condition, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_run_crossing_a_budget_alerts_once_per_period_and_the_task_succeeds(airflow_env, tmp_path):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    with recording_server(status=200) as webhook, smtp_server() as (inbox, smtp_port):
        budgets = tmp_path / "budgets.yaml"
        budgets.write_text(
            f"""
budgets:
  - name: finops-tiny
    scope: {{team: finops}}
    period: daily
    timezone: {midday_zone()}
    amount: "0.000000001"
    currency: USD
    thresholds: [{{actual: 100%}}]
    notify:
      - webhook: {webhook.url}/cost-alerts/T000/token
      - notifier: {SMTP_NOTIFIER}
        args: {{to: finops@example.com, from_email: airflow@example.com, smtp_conn_id: cost_alerts_smtp}}
      - notifier: {RAISING_NOTIFIER}
"""
        )
        env = {
            "AIRFLOW__COST_PROVIDER__BUDGETS_PATH": str(budgets),
            "AIRFLOW_CONN_COST_ALERTS_SMTP": smtp_connection(smtp_port),
        }

        def run():
            result = airflow_env.dags_test("cost_budget_alerts", ledger_url=ledger, env=env)
            assert result.process.returncode == 0, result.output[-4000:]
            return result

        first = run()
        wait_for(lambda: len(inbox.messages) >= 1)
        assert [path for path, _ in webhook.requests] == ["/cost-alerts/T000/token"]
        assert len(inbox.messages) == 1
        alert = webhook.requests[0][1]
        assert alert["budget"] == "finops-tiny" and alert["scope"] == {"team": "finops"}
        assert alert["threshold"] == "actual:100%" and alert["task_try"]["task_id"] == "crunch"
        assert "/dags/cost_budget_alerts/runs/" in alert["links"]["task"]
        mail = inbox.messages[0]
        assert mail["To"] == "finops@example.com"
        assert mail["Subject"].startswith("Budget finops-tiny: actual:100% crossed, ")
        assert "finops-tiny" in mail.get_body(("html",)).get_content()

        # the task succeeded, its cost is in the ledger, the raising notifier's alert is failed
        (task_run,) = ledger_rows(ledger, "SELECT task_id, state, team FROM cost_task_runs")
        assert task_run == {"task_id": "crunch", "state": "success", "team": "finops"}
        rows = {channel_of(r): r for r in ledger_rows(ledger, "SELECT * FROM cost_budget_alerts")}
        assert {c: r["status"] for c, r in rows.items()} == {
            "webhook:127.0.0.1": "sent",
            SMTP_NOTIFIER: "sent",
            RAISING_NOTIFIER: "failed",
        }
        assert rows[RAISING_NOTIFIER]["last_error"].startswith(
            "RuntimeError: chat service refused finops-tiny"
        )
        assert "s3cr3t" not in rows[RAISING_NOTIFIER]["last_error"]
        assert "delivering a budget alert failed" in first.output and "no impact on the task" in first.output

        # a second run in the same period sends nothing new
        run()
        time.sleep(0.5)
        assert len(webhook.requests) == 1 and len(inbox.messages) == 1
        assert len(ledger_rows(ledger, "SELECT id FROM cost_budget_alerts")) == 3

        # a run in a new period alerts again
        shift_to_yesterday(ledger)
        run()
        wait_for(lambda: len(inbox.messages) >= 2)
        assert len(webhook.requests) == 2 and len(inbox.messages) == 2
        periods = ledger_rows(
            ledger, "SELECT DISTINCT period_start FROM cost_budget_alerts ORDER BY period_start"
        )
        assert len(periods) == 2


@pytest.mark.parametrize("enforce", ["skip", "fail"])
def test_a_guard_first_in_a_dag_stops_it_once_its_budget_is_spent(airflow_env, tmp_path, enforce):
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    budgets = tmp_path / "budgets.yaml"
    budgets.write_text(
        f"""
budgets:
  - name: guarded
    scope: {{dag_id: cost_budget_guard}}
    period: daily
    timezone: {midday_zone()}
    amount: "0.000000001"
    currency: USD
    enforce: {enforce}
"""
    )
    env = {"AIRFLOW__COST_PROVIDER__BUDGETS_PATH": str(budgets)}
    first = airflow_env.dags_test("cost_budget_guard", ledger_url=ledger, env=env)
    assert first.process.returncode == 0, first.output[-4000:]
    second = airflow_env.dags_test("cost_budget_guard", ledger_url=ledger, env=env)
    runs: dict[str, dict[str, str]] = {}
    for row in ledger_rows(ledger, "SELECT run_id, task_id, state FROM cost_task_runs ORDER BY start_time"):
        runs.setdefault(row["run_id"], {})[row["task_id"]] = row["state"]
    first_run, second_run = runs.values()
    assert first_run == {"guard": "success", "spend": "success"}
    assert "budget 'guarded' is spent: " in second.output and f"enforce: {enforce}" in second.output
    if enforce == "skip":
        assert second_run == {"guard": "skipped"}  # the task after it never ran
    else:
        assert second_run == {"guard": "failed"}


def test_the_scheduled_example_dag_alerts_on_a_forecast(airflow_env, tmp_path):
    """example_cost_budgets evaluates every budget: a forecast crossing that no task end sees (the
    scope's DAG has not run today) alerts from the scheduled run, and so does a budget of imported
    storage costs, which no task end ever evaluates."""
    from airflow_cost_provider.billing.importer import CollectedCosts
    from airflow_cost_provider.ledger.store import dispose_engines, get_engine, write_storage_import
    from tests.support.budget_ledger import add_spend
    from tests.unit.budgets.test_storage import storage_cost

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = get_engine(ledger)
    today = dt.datetime.now(dt.timezone.utc).date()
    for days_ago in range(1, 15):
        add_spend(engine, today - dt.timedelta(days=days_ago), "10.00", dag_id="daily_sales")
    # the bucket's bill of today (in the period whatever the day), as an import writes it
    costs = [storage_cost(today, "raw-events", "12.50")]
    write_storage_import(engine, CollectedCosts("focus", costs, rows_read=1, rows_imported=1))
    dispose_engines()
    with recording_server(status=200) as webhook:
        budgets = tmp_path / "budgets.yaml"
        budgets.write_text(
            f"""
budgets:
  - name: daily-sales
    scope: {{dag_id: daily_sales}}
    period: daily
    timezone: {midday_zone()}
    amount: "5.00"
    currency: USD
    thresholds: [{{actual: 100%}}, {{forecast: 100%}}]
    notify: [{{webhook: {webhook.url}/forecasts}}]
  - name: raw-buckets
    scope: {{storage: "raw-*"}}
    period: quarterly
    amount: "10.00"
    currency: USD
    notify: [{{webhook: {webhook.url}/storage}}]
"""
        )
        run = airflow_env.dags_test(
            "example_cost_budgets",
            ledger_url=ledger,
            env={
                "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
                "AIRFLOW__COST_PROVIDER__BUDGETS_PATH": str(budgets),
            },
        )
        assert run.process.returncode == 0, run.output[-4000:]
        posted = [body for _, body in webhook.requests]
    assert sorted((a["budget"], a["threshold"], a["kind"]) for a in posted) == [
        ("daily-sales", "forecast:100%", "forecast"),
        ("raw-buckets", "actual:100%", "actual"),
    ]
    posted.sort(key=lambda alert: alert["budget"])
    assert posted[0]["spent"] == "0.00" and Decimal(posted[0]["forecast"]) >= Decimal(
        "5.00"
    )  # crossed: reached the amount
    assert posted[1]["spent"] == "12.50"
    assert posted[1]["top_contributors"][0]["name"] == "storage raw-events"
    assert posted[0]["task_try"] is None  # a scheduled evaluation, not a task's end
    assert "budget 'daily-sales' (dag_id=daily_sales): spent 0.00 of 5.00 USD" in run.output
