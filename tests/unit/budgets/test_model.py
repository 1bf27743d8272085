"""The budgets file: every key validated, each bad input one message naming the file, the budget and
the field; the shipped example and the README's load; scopes match task tries; `airflow-cost check`
reports a bad file and warns about a currency the ledger never saw."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from airflow_cost_provider import checks, conf
from airflow_cost_provider.budgets.model import (
    BudgetError,
    NotifyTarget,
    Scope,
    Threshold,
    configured_budgets,
    load_budgets,
    load_budgets_cached,
    matching_budgets,
    parse_budgets,
)
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from tests.support.airflow_env import REPO
from tests.unit.budgets.conftest import cost, keep, line

BASE = {"name": "b", "period": "monthly", "amount": "100", "currency": "USD"}


def problem(**changes) -> str:
    """The error of a one-budget file: BASE with `changes` (None removes a key)."""
    budget = {**BASE, **changes}
    budget = {key: value for key, value in budget.items() if value is not None}
    with pytest.raises(BudgetError) as excinfo:
        parse_budgets(yaml.safe_dump({"budgets": [budget]}, sort_keys=False), "budgets.yaml")
    return str(excinfo.value)


def text_problem(text: str) -> str:
    with pytest.raises(BudgetError) as excinfo:
        parse_budgets(text, "budgets.yaml")
    return str(excinfo.value)


def one(**changes):
    (budget,) = parse_budgets(yaml.safe_dump({"budgets": [{**BASE, **changes}]}), "budgets.yaml")
    return budget


# ---------------------------------------------------------------- what loads


def test_the_shipped_example_loads_every_kind_of_key():
    budgets = load_budgets(REPO / "dags" / "cost_budgets.example.yaml")
    by_name = {budget.name: budget for budget in budgets}
    marketing = by_name["marketing-dags"]
    assert marketing.scope == Scope(team="marketing")
    assert (marketing.period, marketing.amount, marketing.currency) == ("monthly", Decimal("1200.00"), "USD")
    assert marketing.timezone == "Europe/Berlin" and marketing.week_start == 0
    assert [t.key for t in marketing.thresholds] == [
        "actual:80%",
        "forecast:100%",
        "anomaly:run_cost_vs_median=3,last_runs=10",
    ]
    assert marketing.notify == (
        NotifyTarget("webhook", url="https://hooks.example.com/cost"),
        NotifyTarget(
            "notifier",
            path="airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier",
            args={"slack_webhook_conn_id": "slack_cost"},
        ),
    )
    assert [target.channel for target in marketing.notify] == [
        "webhook:hooks.example.com",
        "airflow.providers.slack.notifications.slack_webhook.SlackWebhookNotifier",
    ]
    weekly = by_name["daily-sales-bigquery"]
    assert weekly.scope == Scope(dag_id="daily_sales", source="bigquery")
    assert weekly.week_start_name == "sunday"
    assert [t.key for t in weekly.thresholds] == [
        "actual:250.00 USD",
        "forecast:110%",
        "anomaly:daily_mad=4,last_days=28",
    ]
    assert by_name["all-airflow"].scope.everything and by_name["all-airflow"].enforce == "skip"
    assert by_name["prod-label"].scope == Scope(label=("env", "prod")) and by_name["prod-label"].notify == ()
    assert by_name["prod-label"].thresholds == (Threshold("actual", percent=Decimal(100)),)
    assert by_name["finance-tagged"].scope.describe() == "owner=ana, tag=finance"
    raw = by_name["raw-buckets"].scope
    assert raw == Scope(storage="raw-*") and raw.storage_glob == "raw-*" and not raw.counts_tasks


def test_the_readme_examples_load():
    readme = (REPO / "README.md").read_text()
    blocks = [b for b in re.findall(r"```yaml\n(.*?)```", readme, re.S) if "budgets:" in b]
    assert blocks, "the README's Budgets section shows a budgets file"
    for block in blocks:
        assert parse_budgets(block, "README.md")


def test_defaults_apply_unless_a_budget_says_otherwise():
    first, second = parse_budgets(
        """
defaults: {timezone: Asia/Tokyo, week_start: wednesday, forecast_days: 14}
budgets:
  - {name: a, period: weekly, amount: "1", currency: JPY}
  - {name: b, period: weekly, amount: "1", currency: JPY, timezone: UTC, week_start: Sunday, forecast_days: 60}
""",
        "budgets.yaml",
    )
    assert (first.timezone, first.week_start_name, first.forecast_days) == ("Asia/Tokyo", "wednesday", 14)
    assert (second.timezone, second.week_start_name, second.forecast_days) == ("UTC", "sunday", 60)


def test_without_defaults_periods_are_utc_weeks_start_on_monday_and_a_spent_budget_alerts():
    budget = one()
    assert (budget.timezone, budget.week_start, budget.forecast_days) == ("UTC", 0, 28)
    assert [t.key for t in budget.thresholds] == ["actual:100%"]
    assert one(thresholds=[]).thresholds == ()  # an empty list: status only, never an alert


def test_an_empty_notify_list_and_an_empty_budget_list_are_allowed():
    assert one(notify=[]).notify == ()
    assert parse_budgets("budgets: []", "budgets.yaml") == []


def test_threshold_keys_are_canonical():
    budget = one(
        thresholds=[
            {"actual": "80.0%"},
            {"forecast": " 100 %"},
            {"actual": "1000 USD"},
            {"forecast": "0.125 USD"},
            {"anomaly": {"run_cost_vs_median": 2.5}},
            {"anomaly": {"daily_mad": "3", "last_days": 14}},
        ]
    )
    assert [t.key for t in budget.thresholds] == [
        "actual:80%",
        "forecast:100%",
        "actual:1000.00 USD",
        "forecast:0.125 USD",
        "anomaly:run_cost_vs_median=2.5,last_runs=10",
        "anomaly:daily_mad=3,last_days=14",
    ]
    assert budget.thresholds[0].limit(Decimal("1200")) == Decimal("960")
    assert budget.thresholds[2].limit(Decimal("1200")) == Decimal("1000")


def test_one_anomaly_entry_may_hold_both_rules():
    budget = one(thresholds=[{"anomaly": {"run_cost_vs_median": 3, "last_runs": 5, "daily_mad": 2}}])
    assert [t.key for t in budget.thresholds] == [
        "anomaly:run_cost_vs_median=3,last_runs=5",
        "anomaly:daily_mad=2,last_days=28",
    ]


def test_scope_values_are_text_and_a_label_is_one_pair():
    budget = one(scope={"team": " marketing ", "dag_id": 2026, "label": {"cost_center": 42}})
    assert budget.scope == Scope(team="marketing", dag_id="2026", label=("cost_center", "42"))
    assert budget.scope.as_dict() == {"team": "marketing", "dag_id": "2026", "label": {"cost_center": "42"}}


# ---------------------------------------------------------------- each bad input, one message


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"scope": {"colour": "red"}},
            "budgets.yaml budget 'b': scope.colour: unknown scope key: use team, owner, dag_id, task_id, tag, "
            "label, source (several combine) or storage",
        ),
        ({"amount": "-5"}, "budgets.yaml budget 'b': amount: '-5' must be greater than zero"),
        ({"amount": 0}, "budgets.yaml budget 'b': amount: '0' must be greater than zero"),
        ({"amount": "ten"}, "budgets.yaml budget 'b': amount: 'ten' is not a number like '1200.00'"),
        ({"amount": 12.5}, "budgets.yaml budget 'b': amount: 12.5 must be quoted ('12.5') so it stays exact"),
        ({"amount": "NaN"}, "budgets.yaml budget 'b': amount: 'NaN' is not a number like '1200.00'"),
        ({"amount": "1e30"}, "budgets.yaml budget 'b': amount: '1e30' does not fit the ledger's 64-bit"),
        (
            {"period": "yearly"},
            "budgets.yaml budget 'b': period: 'yearly' is not a period: use daily, weekly, monthly, quarterly",
        ),
        (
            {"thresholds": [{"actual": 80}]},
            "budgets.yaml budget 'b': thresholds #1 actual: 80 has no unit: write 80% for a percentage of "
            "the amount or '80 USD'",
        ),
        (
            {"thresholds": [{"actual": "80%"}, {"forecast": "-5%"}]},
            "budgets.yaml budget 'b': thresholds #2 forecast: '-5%' must be above 0%",
        ),
        ({"thresholds": [{"actual": "0%"}]}, "thresholds #1 actual: '0%' must be above 0%"),
        ({"thresholds": [{"actual": "eighty%"}]}, "thresholds #1 actual: 'eighty%' is not a percentage"),
        ({"thresholds": [{"actual": "lots"}]}, "thresholds #1 actual: 'lots' is not a threshold"),
        ({"thresholds": [{"actual": "20000%"}]}, "thresholds #1 actual: '20000%' is more than 10000%"),
        (
            {"thresholds": [{"actual": "80 EUR"}]},
            "thresholds #1 actual: '80 EUR' is in EUR, the budget in USD: amounts are never converted",
        ),
        ({"thresholds": [{"actual": "-1 USD"}]}, "thresholds #1 actual: '-1 USD' must be greater than zero"),
        ({"thresholds": "80%"}, "budgets.yaml budget 'b': thresholds: must be a list like"),
        ({"thresholds": [{"actual": "80%", "forecast": "90%"}]}, "thresholds #1: must be one of actual: 80%"),
        (
            {"thresholds": [{"spent": "80%"}]},
            "thresholds #1: unknown kind 'spent': use actual, forecast or anomaly",
        ),
        (
            {"thresholds": [{"actual": "80%"}, {"actual": "80.00%"}]},
            "thresholds #2: repeats thresholds #1 (actual:80%)",
        ),
        (
            {"thresholds": [{"anomaly": {"run_cost_vs_median": 1}}]},
            "thresholds #1 anomaly.run_cost_vs_median: 1 must be above 1 and at most 1000",
        ),
        (
            {"thresholds": [{"anomaly": {"run_cost_vs_median": "300%"}}]},
            "thresholds #1 anomaly.run_cost_vs_median: '300%' is a factor, not a percentage",
        ),
        (
            {"thresholds": [{"anomaly": {"run_cost_vs_median": 3, "last_runs": 1}}]},
            "thresholds #1 anomaly.last_runs: 1 is out of range: use 3 to 100",
        ),
        (
            {"thresholds": [{"anomaly": {"last_runs": 10}}]},
            "thresholds #1 anomaly.last_runs: goes with run_cost_vs_median, which is missing",
        ),
        (
            {"thresholds": [{"anomaly": {"daily_mad": 0}}]},
            "thresholds #1 anomaly.daily_mad: 0 must be above 0 and at most 1000",
        ),
        (
            {"thresholds": [{"anomaly": {"daily_mad": 3, "window": 5}}]},
            "thresholds #1 anomaly.window: unknown anomaly key: use run_cost_vs_median, last_runs, daily_mad, "
            "last_days",
        ),
        (
            {"thresholds": [{"anomaly": {"daily_mad": 3, "last_days": "four weeks"}}]},
            "thresholds #1 anomaly.last_days: 'four weeks' is not a whole number: use 7 to 366",
        ),
        ({"thresholds": [{"anomaly": 3}]}, "thresholds #1 anomaly: must be a mapping like"),
        (
            {"period": "weekly", "week_start": "funday"},
            "budgets.yaml budget 'b': week_start: 'funday' is not a weekday: use monday, tuesday, wednesday, "
            "thursday, friday, saturday, sunday",
        ),
        (
            {"timezone": "Mars/Olympus"},
            "budgets.yaml budget 'b': timezone: 'Mars/Olympus' is not a time zone: use an IANA name like "
            "Europe/Berlin, America/New_York or UTC",
        ),
        ({"timezone": "America"}, "budgets.yaml budget 'b': timezone: 'America' is not a time zone"),
        (
            {"timezone": "../../etc/passwd"},
            "budgets.yaml budget 'b': timezone: '../../etc/passwd' is not a time zone",
        ),
        ({"currency": "usd"}, "budgets.yaml budget 'b': currency: 'usd' is not an ISO 4217 code"),
        ({"currency": None}, "budgets.yaml budget 'b': currency: is required"),
        (
            {"enforce": "block"},
            "budgets.yaml budget 'b': enforce: 'block' is not an enforcement: use skip or fail",
        ),
        ({"forecast_days": 3}, "budgets.yaml budget 'b': forecast_days: 3 is out of range: use 7 to 90"),
        (
            {"amout": "5"},
            "budgets.yaml budget 'b': amout: unknown key: use name, scope, period, week_start, timezone",
        ),
        ({"scope": "marketing"}, "budgets.yaml budget 'b': scope: must be a mapping like {team: marketing}"),
        ({"scope": {"team": ""}}, "budgets.yaml budget 'b': scope.team: is empty"),
        ({"scope": {"team": ["a", "b"]}}, "budgets.yaml budget 'b': scope.team: ['a', 'b'] must be text"),
        ({"scope": {"source": "x" * 65}}, "scope.source: is 65 characters long: the ledger keeps at most 64"),
        (
            {"scope": {"label": {"env": "prod", "team": "x"}}},
            "budgets.yaml budget 'b': scope.label: must be one label as a mapping, like {label: {env: prod}}",
        ),
        ({"notify": "https://x"}, "budgets.yaml budget 'b': notify: must be a list of targets"),
        (
            {"notify": [{"webhook": "https://ok.example.com/a"}, {"notifier": "not a path"}]},
            "budgets.yaml budget 'b': notify #2.notifier: 'not a path' is not an import path like "
            "package.module.NotifierClass",
        ),
        (
            {"notify": [{"webhook": "https://a.example.com", "notifier": "a.B"}]},
            "notify #1: must name exactly one of webhook or notifier",
        ),
        ({"notify": [{"notifier": "a.B", "args": ["x"]}]}, "notify #1.args: must be a mapping"),
        (
            {"notify": [{"webhook": "https://a.example.com", "args": {}}]},
            "notify #1.args: unknown key: use webhook",
        ),
        ({"name": "x" * 251}, "budgets.yaml budget 'xxxx"),
        ({"name": None}, "budgets.yaml budget #1: name: is required"),
        ({"name": "a\x1b[2Jb"}, "name: 'a\\x1b[2Jb' holds control characters"),
    ],
)
def test_each_bad_input_is_one_message_naming_the_file_budget_and_field(changes, message):
    found = problem(**changes)
    assert found.startswith("budgets.yaml budget "), found
    assert message in found, found
    assert "\n" not in found


def test_a_webhook_url_is_never_repeated_in_a_message():
    # a webhook's path often is its token
    found = problem(notify=[{"webhook": "ftp://hooks.example.com/T000/B000/s3cr3t"}])
    assert (
        found == "budgets.yaml budget 'b': notify #1.webhook: must be an http:// or https:// URL with a host"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("budgets: [", "budgets.yaml: not valid YAML: "),
        ("", "budgets.yaml: the budgets file is empty: write a 'budgets:' list"),
        ("- name: a", "budgets.yaml: must be a mapping with a 'budgets' list"),
        ("budgets: {name: a}", "budgets.yaml: budgets must be a list of budgets, got dict"),
        ("budgets: []\nalerts: []", "budgets.yaml: unknown key(s) alerts: use budgets and defaults"),
        ("budgets: [5]", "budgets.yaml budget #1: budget: must be a mapping"),
        (
            "defaults: {timezone: Nowhere}\nbudgets: []",
            "budgets.yaml defaults: timezone: 'Nowhere' is not a time zone",
        ),
        ("defaults: {currency: USD}\nbudgets: []", "budgets.yaml defaults: currency: is not a default"),
        (
            "budgets:\n  - {name: a, period: daily, amount: '1', currency: USD}\n"
            "  - {name: a, period: weekly, amount: '2', currency: USD}",
            "budgets.yaml budget 'a': name: repeats budget #1: budget names must be unique",
        ),
    ],
)
def test_a_file_that_is_not_a_budgets_file(text, message):
    assert text_problem(text).startswith(message)


def test_a_missing_file_names_its_path(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(
        BudgetError, match=f"^{re.escape(str(path))}: the budgets file cannot be read: No such file"
    ):
        load_budgets(path)


# ---------------------------------------------------------------- matching task tries


def test_a_scope_matches_a_try_when_every_key_does():
    tt = TaskTry(
        "daily_sales",
        "load",
        "r1",
        1,
        -1,
        owner="ana",
        team="marketing",
        dag_tags=("finance", "team:marketing"),
        labels=(("env", "prod"),),
    )
    assert Scope().matches(tt)
    assert Scope(team="marketing", dag_id="daily_sales", task_id="load", owner="ana").matches(tt)
    assert Scope(tag="finance", label=("env", "prod")).matches(tt)
    assert Scope(source="bigquery").matches(tt, {"bigquery", "airflow_worker"})
    assert not Scope(source="bigquery").matches(tt, {"airflow_worker"})
    assert not Scope(team="finance").matches(tt)
    assert not Scope(team="marketing", owner="bob").matches(tt)
    assert not Scope(label=("env", "dev")).matches(tt)
    assert not Scope(tag="marketing").matches(tt)
    budgets = parse_budgets(
        """
budgets:
  - {name: all, period: daily, amount: "1", currency: USD}
  - {name: mkt, scope: {team: marketing}, period: daily, amount: "1", currency: USD}
  - {name: bq, scope: {source: bigquery}, period: daily, amount: "1", currency: USD}
""",
        "b.yaml",
    )
    assert [b.name for b in matching_budgets(budgets, tt, {"airflow_worker"})] == ["all", "mkt"]


# ---------------------------------------------------------------- the configured file


def test_the_configured_file_is_read_again_only_when_it_changes(tmp_path, monkeypatch):
    assert configured_budgets() == []  # no budgets_path: no budgets
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {name: a, period: daily, amount: '1', currency: USD}\n")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    conf.clear_cache()
    assert [b.name for b in configured_budgets()] == ["a"]
    assert load_budgets_cached(path)[0] is configured_budgets()[0]  # parsed once
    path.write_text("budgets:\n  - {name: b, period: daily, amount: '1', currency: USD}\n")
    os.utime(path, ns=(1, 1))
    assert [b.name for b in configured_budgets()] == ["b"]


def test_check_reports_a_bad_budgets_file_once(tmp_path, monkeypatch):
    path = tmp_path / "budgets.yaml"
    path.write_text("budgets:\n  - {name: a, period: daily, amount: '-5', currency: USD}\n")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    conf.clear_cache()
    assert checks.configuration_problems() == [f"{path} budget 'a': amount: '-5' must be greater than zero"]


def test_check_warns_about_a_currency_the_ledger_never_saw(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    keep(
        store.get_engine(url),
        cost("d", "t", "r", dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc), [line("x", "1")]),
    )
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "budgets:\n"
        "  - {name: dollars, period: daily, amount: '1', currency: USD}\n"
        "  - {name: yen, period: daily, amount: '1', currency: JPY}\n"
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "True")
    conf.clear_cache()
    result = checks.check_all()
    assert result.problems == ()
    assert result.warnings == (
        f"{path} budget 'yen': currency: JPY never appears in the ledger, whose costs are in USD: amounts "
        "are never converted, so this budget's spend stays 0",
    )
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        assert main(["check"]) == 0
    assert f"warning: {path} budget 'yen': currency: JPY never appears" in err.getvalue()


def test_check_reports_a_notifier_path_that_does_not_import(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.get_engine(url)
    path = tmp_path / "budgets.yaml"
    path.write_text(
        "budgets:\n"
        "  - name: a\n"
        "    period: daily\n"
        "    amount: '1'\n"
        "    currency: USD\n"
        "    notify:\n"
        "      - notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier\n"
        "      - notifier: airflow.providers.smtp.notifications.smtp.SmptNotifier\n"
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "True")
    conf.clear_cache()
    assert checks.check_all().problems == (
        f"{path} budget 'a': notify #2.notifier: notifier "
        "'airflow.providers.smtp.notifications.smtp.SmptNotifier' cannot be imported: module "
        "airflow.providers.smtp.notifications.smtp has no 'SmptNotifier'",
    )


def test_the_option_is_documented_and_validated_with_the_others():
    from airflow_cost_provider.get_provider_info import CONFIG_OPTIONS

    assert CONFIG_OPTIONS["budgets_path"]["default"] == ""
    assert "budgets_path" in conf.GETTERS
    assert "`budgets_path`" in Path(REPO / "README.md").read_text()
