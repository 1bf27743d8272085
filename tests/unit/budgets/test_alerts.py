"""Budget alerts in the ledger: once per (budget, period, threshold, channel), delivered, failures kept
with their attempts and error and retried at a later evaluation, never raised."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time

import pytest

from airflow_cost_provider.budgets import alerts
from airflow_cost_provider.budgets.evaluate import evaluate
from airflow_cost_provider.ledger.store import get_engine
from tests.support.alert_notifiers import HangingNotifier
from tests.support.budget_ledger import add_spend, alert_rows, budgets
from tests.support.http_recorder import recording_server

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
NOTIFIERS = "tests.support.alert_notifiers"


def budget_file(webhook: str | None = None, notifier: str | None = None, period: str = "monthly"):
    targets = []
    if notifier:
        targets.append(f"{{notifier: {notifier}}}")
    if webhook:
        targets.append(f"{{webhook: '{webhook}'}}")
    (budget,) = budgets(
        f"""
        budgets:
          - name: sales-dags
            scope: {{dag_id: daily_sales}}
            period: {period}
            amount: "100.00"
            currency: USD
            thresholds: [{{actual: 50%}}, {{actual: 80%}}, {{forecast: 100%}}]
            notify: [{", ".join(targets)}]
        """
    )
    return budget


@pytest.fixture
def engine():
    return get_engine(os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])


def run_evaluation(engine, budget, now, seconds=10.0):
    return alerts.record_and_deliver(engine, [evaluate(engine, budget, now)], now, time.monotonic() + seconds)


def test_each_crossed_threshold_alerts_once_in_its_period(engine):
    add_spend(engine, NOW.date(), "60")
    with recording_server(status=200) as server:
        budget = budget_file(webhook=server.url + "/hook/secret")
        outcomes = run_evaluation(engine, budget, NOW)
        assert [(o.threshold, o.status) for o in outcomes] == [("actual:50%", "sent")]
        add_spend(engine, NOW.date(), "25")  # 85: the 80% threshold now, the 50% one again
        later = NOW + dt.timedelta(hours=1)
        outcomes = run_evaluation(engine, budget, later)
        assert [(o.threshold, o.status) for o in outcomes] == [("actual:80%", "sent")]
        assert run_evaluation(engine, budget, later + dt.timedelta(hours=1)) == []
        posted = [body for _, body in server.requests]
    assert [body["threshold"] for body in posted] == ["actual:50%", "actual:80%"]
    rows = alert_rows(engine)
    assert [(r["threshold"], r["status"], r["attempts"], r["last_error"]) for r in rows] == [
        ("actual:50%", "sent", 1, None),
        ("actual:80%", "sent", 1, None),
    ]
    first = rows[0]
    assert first["budget"] == "sales-dags" and first["kind"] == "actual"
    assert (first["period_start"], first["period_end"]) == (dt.date(2026, 12, 1), dt.date(2027, 1, 1))
    assert first["channel"].startswith("webhook:127.0.0.1#") and "secret" not in first["channel"]
    assert (first["spent_nanos"], first["currency"]) == (60 * 10**9, "USD")
    assert first["payload"] == posted[0]  # the alert as sent
    assert first["created_at"] == NOW and first["sent_at"] is not None


def test_a_new_period_alerts_again(engine):
    with recording_server(status=200) as server:
        budget = budget_file(webhook=server.url + "/hook", period="daily")
        add_spend(engine, NOW.date(), "60")
        run_evaluation(engine, budget, NOW)
        tomorrow = NOW + dt.timedelta(days=1)
        assert run_evaluation(engine, budget, tomorrow) == []  # nothing spent yet in the new day
        add_spend(engine, tomorrow.date(), "55")
        assert [o.status for o in run_evaluation(engine, budget, tomorrow)] == ["sent"]
        posted = [body for _, body in server.requests]
    assert [(b["period_start"], b["threshold"]) for b in posted] == [
        ("2026-12-04", "actual:50%"),
        ("2026-12-05", "actual:50%"),
    ]
    assert [r["period_start"] for r in alert_rows(engine)] == [dt.date(2026, 12, 4), dt.date(2026, 12, 5)]


def test_a_failed_delivery_is_retried_at_the_next_evaluation_then_sent_once(engine):
    add_spend(engine, NOW.date(), "60")
    with recording_server(status=500) as server:
        budget = budget_file(webhook=server.url + "/hook/T000/secret-token")
        (outcome,) = run_evaluation(engine, budget, NOW)
        assert (outcome.status, outcome.attempts) == ("failed", 1)
        (row,) = alert_rows(engine)
        assert (row["status"], row["attempts"], row["sent_at"]) == ("failed", 1, None)
        assert row["last_error"] == "webhook answered HTTP 500 Internal Server Error"
        # within its back-off (a minute after the first attempt) a failed alert waits
        assert run_evaluation(engine, budget, NOW + dt.timedelta(seconds=30)) == []
        server.status = 200
        (outcome,) = run_evaluation(engine, budget, NOW + dt.timedelta(minutes=2))
        assert (outcome.status, outcome.attempts) == ("sent", 2)
        assert run_evaluation(engine, budget, NOW + dt.timedelta(minutes=30)) == []
        assert len(server.requests) == 2  # the failed attempt and the one that was sent
    (row,) = alert_rows(engine)
    assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 2, None)


def test_a_notifier_that_raises_leaves_the_alert_failed_and_raises_nothing(engine):
    add_spend(engine, NOW.date(), "60")
    budget = budget_file(notifier=f"{NOTIFIERS}.RaisingNotifier")
    (outcome,) = run_evaluation(engine, budget, NOW)
    assert outcome.status == "failed"
    (row,) = alert_rows(engine)
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["last_error"] == "RuntimeError: chat service refused sales-dags: https://chat.example.com/…"
    assert row["channel"].startswith(f"{NOTIFIERS}.RaisingNotifier#")


def test_an_unimportable_notifier_is_a_clear_error_on_the_alert(engine):
    add_spend(engine, NOW.date(), "60")
    budget = budget_file(notifier="acme_notifications.chat.ChatNotifier")
    run_evaluation(engine, budget, NOW)
    (row,) = alert_rows(engine)
    assert row["status"] == "failed"
    assert row["last_error"] == (
        "notifier 'acme_notifications.chat.ChatNotifier' cannot be imported: no module named 'acme_notifications'"
    )


def test_a_hanging_notifier_holds_the_evaluation_no_longer_than_its_deadline(engine):
    add_spend(engine, NOW.date(), "60")
    HangingNotifier.release.clear()
    try:
        with recording_server(status=200) as server:
            budget = budget_file(notifier=f"{NOTIFIERS}.HangingNotifier", webhook=server.url + "/hook")
            started = time.monotonic()
            outcomes = run_evaluation(engine, budget, NOW, seconds=0.5)
            assert time.monotonic() - started < 1.5
            by_channel = {o.channel.split("#")[0]: o for o in outcomes}
            hanging = by_channel[f"{NOTIFIERS}.HangingNotifier"]
            assert hanging.status == "failed" and hanging.error.startswith("not done within 0.")
            # the webhook found no time left: left pending for the next evaluation, which sends it
            assert by_channel["webhook:127.0.0.1"].status == "pending" and not server.requests
            HangingNotifier.release.set()
            outcomes = run_evaluation(engine, budget, NOW + dt.timedelta(seconds=1))
            assert [(o.channel.split("#")[0], o.status) for o in outcomes] == [("webhook:127.0.0.1", "sent")]
            assert len(server.requests) == 1
    finally:
        HangingNotifier.release.set()


def test_two_evaluations_at_once_deliver_an_alert_once(ledger_url):
    engine = get_engine(ledger_url)
    add_spend(engine, NOW.date(), "60")
    with recording_server(status=200) as server:
        budget = budget_file(webhook=server.url + "/hook")
        statuses = [evaluate(engine, budget, NOW)]
        barrier = threading.Barrier(4)

        def evaluation():
            barrier.wait()
            alerts.record_and_deliver(engine, statuses, NOW, time.monotonic() + 10)

        threads = [threading.Thread(target=evaluation) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        assert len(server.requests) == 1
    (row,) = alert_rows(engine)
    assert (row["status"], row["attempts"]) == ("sent", 1)


def test_a_budget_without_notify_targets_keeps_its_alerts_and_logs_them(engine, caplog):
    add_spend(engine, NOW.date(), "60")
    (budget,) = budgets(
        """
        budgets:
          - {name: quiet, period: monthly, amount: "10", currency: USD}
        """
    )
    assert [(o.channel, o.status) for o in run_evaluation(engine, budget, NOW)] == [("log", "sent")]
    assert run_evaluation(engine, budget, NOW + dt.timedelta(hours=1)) == []
    (row,) = alert_rows(engine)
    assert (row["budget"], row["threshold"], row["channel"], row["status"]) == (
        "quiet",
        "actual:100%",
        "log",
        "sent",
    )
    assert "budget alert (no notify target):\n:warning: Budget quiet (everything): " in caplog.text


def test_a_ledger_that_fails_is_logged_and_never_raised(engine, caplog):
    add_spend(engine, NOW.date(), "60")
    with recording_server(status=200) as server:
        budget = budget_file(webhook=server.url + "/hook")
        status = evaluate(engine, budget, NOW)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE cost_budget_alerts")
        assert alerts.record_and_deliver(engine, [status], NOW, time.monotonic() + 5) == []
        assert not server.requests
    assert "recording the alerts of budget 'sales-dags' failed" in caplog.text
    assert "no impact on the task" in caplog.text


def test_retry_back_off_doubles_up_to_an_hour():
    row = {"status": "failed", "created_at": NOW}
    waits = []
    for attempts in range(1, 10):
        row["attempts"] = attempts
        minutes = next(m for m in range(0, 600) if alerts.due(row, NOW + dt.timedelta(minutes=m)))
        waits.append(minutes)
    assert waits == [1, 3, 7, 15, 31, 63, 123, 183, 243]
    assert alerts.due({"status": "pending", "attempts": 0, "created_at": NOW}, NOW)
    assert not alerts.due({"status": "sent", "attempts": 1, "created_at": NOW}, NOW + dt.timedelta(days=1))


# ------------------------------------------------------------------------------------- at task end


@pytest.fixture(autouse=True)
def _no_instrumentation_left():
    """A task end here instruments the installed providers' hooks: undo it, as a process exit would."""
    yield
    from airflow_cost_provider.instrumentation.registry import uninstrument_all

    uninstrument_all()


def run_task(ti) -> float:
    """A task try that scans 2 TB with Athena (10 USD), through the cost listener; the seconds its
    end (finalize) took."""
    from decimal import Decimal

    from airflow_cost_provider.capture.session import record_usage
    from airflow_cost_provider.listener import make_listener
    from airflow_cost_provider.pricing import Usage

    listener = make_listener("first")
    listener.on_task_instance_running(previous_state=None, task_instance=ti)
    record_usage(Usage("athena", "data_scanned", Decimal(2 * 10**12), "byte"))
    started = time.monotonic()
    listener.on_task_instance_success(previous_state=None, task_instance=ti)
    return time.monotonic() - started


@pytest.fixture
def budgets_path(tmp_path, monkeypatch):
    """Write the budgets file and point [cost_provider] budgets_path at it."""
    from airflow_cost_provider import conf

    def configure(text: str) -> None:
        path = tmp_path / "budgets.yaml"
        path.write_text(text)
        monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
        conf.clear_cache()

    return configure


def test_a_task_end_that_crosses_a_budget_alerts_once_and_the_task_goes_on(engine, budgets_path):
    from tests.support.fake_ti import FakeTaskInstance

    with recording_server(status=200) as server:
        budgets_path(
            f"""
budgets:
  - name: tiny
    scope: {{dag_id: sales_daily}}
    period: daily
    amount: "0.000000001"
    currency: USD
    thresholds: [{{actual: 100%}}]
    notify:
      - webhook: {server.url}/hook
      - notifier: {NOTIFIERS}.RaisingNotifier
  - name: other-dag
    scope: {{dag_id: not_this_one}}
    period: daily
    amount: "0.000000001"
    currency: USD
    notify: [{{webhook: {server.url}/other}}]
"""
        )
        first = FakeTaskInstance()
        run_task(first)
        run_task(FakeTaskInstance())  # the same day: nothing new
        posted = list(server.requests)
    assert [path for path, _ in posted] == ["/hook"]
    alert = posted[0][1]
    assert alert["budget"] == "tiny" and alert["threshold"] == "actual:100%"
    assert alert["task_try"]["run_id"] == first.run_id
    assert f"/dags/sales_daily/runs/{first.run_id}/tasks/load_orders" in alert["links"]["task"]
    rows = {row["channel"].split("#")[0]: row for row in alert_rows(engine)}
    assert rows["webhook:127.0.0.1"]["status"] == "sent"
    assert rows[f"{NOTIFIERS}.RaisingNotifier"]["status"] == "failed"
    assert len(alert_rows(engine)) == 2


def test_a_hanging_notifier_holds_a_task_end_no_longer_than_finalize_timeout(
    engine, budgets_path, monkeypatch
):
    from tests.support.fake_ti import FakeTaskInstance

    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "1.0")
    budgets_path(
        f"""
budgets:
  - name: tiny
    period: daily
    amount: "0.000000001"
    currency: USD
    notify: [{{notifier: {NOTIFIERS}.HangingNotifier}}]
"""
    )
    HangingNotifier.release.clear()
    try:
        assert run_task(FakeTaskInstance()) < 1.6
    finally:
        HangingNotifier.release.set()
    (row,) = alert_rows(engine)
    assert row["status"] == "failed" and row["last_error"].startswith("not done within 0.")


def test_without_a_budgets_file_a_task_end_reads_no_budgets(monkeypatch, engine):
    from airflow_cost_provider.budgets import model
    from tests.support.fake_ti import FakeTaskInstance

    def never(*args, **kwargs):
        raise AssertionError("budgets read without a budgets file")

    monkeypatch.setattr(model, "configured_budgets", never)
    monkeypatch.setattr(model, "load_budgets", never)
    run_task(FakeTaskInstance())
    assert alert_rows(engine) == []
