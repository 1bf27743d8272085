"""Delivering a budget alert: a webhook server on 127.0.0.1 receiving the Slack-shaped JSON, a real
SMTP server receiving SmtpNotifier's mail, and notifiers that raise, hang or cannot be imported."""

from __future__ import annotations

import datetime as dt
import os
import socket
import time

import pytest

from airflow_cost_provider.budgets import message, notify
from airflow_cost_provider.budgets.alerts import crossings
from airflow_cost_provider.budgets.evaluate import evaluate
from airflow_cost_provider.budgets.model import NotifyTarget
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.ledger.store import get_engine
from tests.support.alert_notifiers import HangingNotifier, RecordingNotifier
from tests.support.budget_ledger import add_spend, budgets, smtp_connection, smtp_server
from tests.support.http_recorder import closed_port, recording_server

NOW = dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.timezone.utc)
SECRET_PATH = "/services/T000/B000/XXXXSECRETXXXX"
NOTIFIERS = "tests.support.alert_notifiers"
SMTP_NOTIFIER = "airflow.providers.smtp.notifications.smtp.SmtpNotifier"
TRY = TaskTry(
    "daily_sales",
    "load",
    "scheduled__2026-12-04T00:00:00+00:00",
    1,
    -1,
    "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
)


@pytest.fixture
def alert(monkeypatch) -> dict:
    """The alert of a budget that spent 90 of 100 USD, crossing actual 80%."""
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com/")
    monkeypatch.setenv("OPENLINEAGE_URL", "http://lineage:pw@marquez.example.com:5000")
    engine = get_engine(os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])
    for task_id, amount in (("load", "50"), ("transform", "30"), ("export", "8"), ("check", "2")):
        add_spend(engine, NOW.date(), amount, task_id=task_id)
    (budget,) = budgets(
        """
        budgets:
          - name: sales-dags
            scope: {dag_id: daily_sales}
            period: monthly
            amount: "100.00"
            currency: USD
            thresholds: [{actual: 80%}]
        """
    )
    status = evaluate(engine, budget, NOW)
    (crossing,) = crossings(status)
    return message.compose(status, crossing, NOW, TRY)


def webhook(url: str) -> NotifyTarget:
    return NotifyTarget("webhook", url=url)


def notifier(path: str, **args) -> NotifyTarget:
    return NotifyTarget("notifier", path=path, args=args)


# ---------------------------------------------------------------------------------------- the alert


def test_the_alert_says_budget_scope_period_spend_threshold_contributors_and_links(alert):
    assert alert["budget"] == "sales-dags"
    assert alert["scope"] == {"dag_id": "daily_sales"} and alert["scope_text"] == "dag_id=daily_sales"
    assert (alert["period"], alert["period_start"], alert["period_end"]) == (
        "monthly",
        "2026-12-01",
        "2027-01-01",
    )
    assert (alert["spent"], alert["amount"], alert["currency"], alert["percent"]) == (
        "90.00",
        "100.00",
        "USD",
        "90.0",
    )
    assert alert["threshold"] == "actual:80%" and alert["kind"] == "actual"
    assert alert["top_contributors"] == [
        {"name": "load", "amount": "50.00"},
        {"name": "transform", "amount": "30.00"},
        {"name": "export", "amount": "8.00"},
    ]
    assert alert["links"] == {
        "airflow": "https://airflow.example.com/dags/daily_sales",
        "task": "https://airflow.example.com/dags/daily_sales/runs/scheduled__2026-12-04T00%3A00%3A00%2B00%3A00"
        "/tasks/load?try_number=1",
        # the lineage backend's credentials stay out of the link
        "marquez_run": "http://marquez.example.com:5000/api/v1/jobs/runs/0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    }
    assert alert["text"].splitlines() == [
        ":warning: Budget sales-dags (dag_id=daily_sales): " + alert["crossed"],
        "Monthly period 2026-12-01 to 2026-12-31 (UTC)",
        "Spent 90.00 USD of 100.00 USD (90.0%)",
        "Top contributors: load 50.00 USD, transform 30.00 USD, export 8.00 USD",
        "Airflow: https://airflow.example.com/dags/daily_sales",
        "Task: " + alert["links"]["task"],
        "Marquez run: " + alert["links"]["marquez_run"],
    ]
    assert "80%" in alert["crossed"]


# -------------------------------------------------------------------------------------- the webhook


def test_webhook_receives_the_slack_shaped_json(alert):
    with recording_server(status=200) as server:
        notify.deliver(webhook(server.url + SECRET_PATH), alert, timeout=5)
        requests = list(server.requests)
    assert requests == [(SECRET_PATH, alert)]
    body = requests[0][1]
    assert isinstance(body["text"], str) and body["text"].startswith(":warning: Budget sales-dags")
    assert body["spent"] == "90.00" and body["threshold"] == "actual:80%"


@pytest.mark.parametrize("failure", ["http_500", "nothing_listening"])
def test_webhook_failure_is_a_delivery_error_without_the_url(alert, failure):
    if failure == "http_500":
        with recording_server(status=500) as server, pytest.raises(notify.DeliveryError) as error:
            notify.deliver(webhook(server.url + SECRET_PATH), alert, timeout=5)
        assert str(error.value) == "webhook answered HTTP 500 Internal Server Error"
    else:
        with pytest.raises(notify.DeliveryError) as error:
            notify.deliver(webhook(f"http://127.0.0.1:{closed_port()}{SECRET_PATH}"), alert, timeout=5)
        assert str(error.value).startswith("webhook unreachable: ")
    assert "SECRET" not in str(error.value)


def test_a_webhook_that_never_answers_is_bounded_by_the_timeout(alert):
    with socket.socket() as listening:  # accepts connections into its backlog, never answers
        listening.bind(("127.0.0.1", 0))
        listening.listen(1)
        url = f"http://127.0.0.1:{listening.getsockname()[1]}/hook"
        started = time.monotonic()
        with pytest.raises(notify.DeliveryError, match="did not answer within 0.5s|not done within 0.5s"):
            notify.deliver(webhook(url), alert, timeout=0.5)
        assert time.monotonic() - started < 1.5


# ------------------------------------------------------------------------------------- the notifiers


def test_a_notifier_is_called_with_the_alert_in_its_template_context(alert):
    RecordingNotifier.received.clear()
    target = notifier(
        f"{NOTIFIERS}.RecordingNotifier", subject="{{ budget }} at {{ percent }}% of {{ amount }}"
    )
    notify.deliver(target, alert, timeout=5)
    (received,) = RecordingNotifier.received
    assert received["subject"] == "sales-dags at 90.0% of 100.00"
    assert received["text"] == alert["text"]  # left out: the alert's own text
    assert received["channel"] == "#cost"
    assert received["context"]["alert"] == alert
    assert received["context"]["top_contributors"][0] == {"name": "load", "amount": "50.00"}


def test_the_alert_text_is_never_parsed_as_a_template(alert):
    RecordingNotifier.received.clear()
    alert = {**alert, "text": "a team named {{ 7 * 7 }}"}
    notify.deliver(notifier(f"{NOTIFIERS}.RecordingNotifier"), alert, timeout=5)
    assert RecordingNotifier.received[0]["text"] == "a team named {{ 7 * 7 }}"


def test_a_notifier_that_raises_is_a_delivery_error_without_its_credentials(alert):
    with pytest.raises(notify.DeliveryError) as error:
        notify.deliver(notifier(f"{NOTIFIERS}.RaisingNotifier", token="s3cr3t-token"), alert, timeout=5)
    assert str(error.value) == "RuntimeError: chat service refused sales-dags: https://chat.example.com/…"


def test_a_hanging_notifier_is_bounded_by_the_timeout(alert):
    HangingNotifier.release.clear()
    started = time.monotonic()
    try:
        with pytest.raises(notify.DeliveryError, match=r"^not done within 0.5s$"):
            notify.deliver(notifier(f"{NOTIFIERS}.HangingNotifier"), alert, timeout=0.5)
        assert time.monotonic() - started < 1.5
        assert HangingNotifier.started.is_set()
    finally:
        HangingNotifier.release.set()


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("no_such_package.notifiers.Notifier", "cannot be imported: no module named 'no_such_package'"),
        (f"{NOTIFIERS}.NoSuchNotifier", f"cannot be imported: module {NOTIFIERS} has no 'NoSuchNotifier'"),
        (f"{NOTIFIERS}.NotANotifier", "is not an Airflow BaseNotifier subclass"),
        ("SmtpNotifier", "is not an import path like package.module.NotifierClass"),
    ],
)
def test_a_notifier_path_that_cannot_be_used_is_a_clear_error(alert, path, problem):
    with pytest.raises(notify.DeliveryError) as error:
        notify.deliver(notifier(path), alert, timeout=5)
    assert str(error.value) == f"notifier {path!r} {problem}"


def test_smtp_notifier_mail_arrives_at_a_real_smtp_server(alert, monkeypatch):
    with smtp_server() as (inbox, port):
        monkeypatch.setenv("AIRFLOW_CONN_COST_ALERTS_SMTP", smtp_connection(port))
        target = notifier(
            SMTP_NOTIFIER,
            to="finops@example.com",
            from_email="airflow@example.com",
            smtp_conn_id="cost_alerts_smtp",
        )
        notify.deliver(target, alert, timeout=10)
        deadline = time.monotonic() + 5
        while not inbox.messages and time.monotonic() < deadline:
            time.sleep(0.05)
    (mail,) = inbox.messages
    assert mail["To"] == "finops@example.com" and mail["From"] == "airflow@example.com"
    assert mail["Subject"] == "Budget sales-dags: actual:80% crossed, 90.00 USD of 100.00 USD (90.0%)"
    html = mail.get_body(("html",)).get_content()
    for expected in (
        "<td>Budget</td><td>sales-dags</td>",
        "<td>Scope</td><td>dag_id=daily_sales</td>",
        "<td>Period</td><td>monthly 2026-12-01 to 2026-12-31 (UTC)</td>",
        "<td>Spent</td><td>90.00 USD of 100.00 USD (90.0%)</td>",
        "<td>Top contributor 1</td><td>load 50.00 USD</td>",
        "<td>Top contributor 3</td><td>export 8.00 USD</td>",
        '<a href="https://airflow.example.com/dags/daily_sales">',
    ):
        assert expected in html, html


# ----------------------------------------------------------------------------------- the channels


def test_a_channel_names_the_host_never_the_path_and_tells_two_targets_apart():
    first = notify.channel(webhook("https://hooks.slack.com/services/T0/B0/first-secret"))
    second = notify.channel(webhook("https://hooks.slack.com/services/T0/B1/second-secret"))
    assert first.startswith("webhook:hooks.slack.com#") and second.startswith("webhook:hooks.slack.com#")
    assert first != second and "secret" not in first + second
    assert notify.channel(notifier(SMTP_NOTIFIER, to="a@example.com")).startswith(SMTP_NOTIFIER + "#")
    assert notify.channel(notifier(SMTP_NOTIFIER, to="a@example.com")) != notify.channel(
        notifier(SMTP_NOTIFIER, to="b@example.com")
    )


# ----------------------------------------------------------------------------------- the README


def test_the_readme_shows_a_real_alert(monkeypatch):
    """The README's example alert is what the code composes for the README's example budget."""
    import json
    import re
    from decimal import Decimal

    from airflow_cost_provider.ledger.schema import daily_totals
    from tests.support.airflow_env import REPO

    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.example.com")
    monkeypatch.setenv("OPENLINEAGE_URL", "http://marquez.example.com:5000")
    engine = get_engine(os.environ["AIRFLOW__COST_PROVIDER__LEDGER_CONN"])
    rows = []
    for day in range(1, 25):  # three DAGs of team marketing, each day of November to the 24th
        for dag_id, amount in (("daily_sales", "26.40"), ("ads_sync", "10.85"), ("crm_export", "4.95")):
            spent = Decimal(amount) / (2 if day == 24 else 1)  # the 24th until 14:05
            rows.append(
                {
                    "day": dt.date(2026, 11, day),
                    "dag_id": dag_id,
                    "task_id": "t",
                    "owner": "ana",
                    "team": "marketing",
                    "source": "bigquery",
                    "currency": "USD",
                    "amount_nanos": int(spent * 10**9),
                    "lines": 3,
                    "unpriced": 0,
                }
            )
    with engine.begin() as conn:
        conn.execute(daily_totals.insert(), rows)
    (budget,) = budgets(
        """
        budgets:
          - name: marketing-dags
            scope: {team: marketing}
            period: monthly
            amount: "1200.00"
            currency: USD
            thresholds: [{actual: 80%}, {forecast: 100%}]
        """
    )
    now = dt.datetime(2026, 11, 24, 14, 5, tzinfo=dt.timezone.utc)
    task_try = TaskTry(
        "daily_sales",
        "load_orders",
        "scheduled__2026-11-24T00:00:00+00:00",
        1,
        -1,
        "019a5f2e-7c41-7d2b-9e0f-3b8d6c1a2e47",
        owner="ana",
        team="marketing",
    )
    status = evaluate(engine, budget, now)
    alert = message.compose(status, crossings(status)[0], now, task_try)

    section = (REPO / "README.md").read_text().split("### Alerts: where they go and what they say", 1)[1]
    shown = json.loads(section.split("```json\n", 1)[1].split("```", 1)[0])
    assert shown == alert
    assert f"```\n{alert['text']}\n```" in section
    subject = re.search(r"has the subject `([^`]+)`", section.replace("\n", " ")).group(1)
    assert subject == message.subject(alert)
