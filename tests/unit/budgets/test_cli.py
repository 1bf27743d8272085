"""`airflow-cost budgets [status|list|check]`: per budget its period, spent, forecast, amount, percent
and thresholds crossed, in every output format; the file's budgets; the check; bad input as one line."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import io
import json

import pytest
import yaml

from airflow_cost_provider import conf
from airflow_cost_provider.cli import budgets as budgets_command
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from tests.unit.budgets.conftest import UTC, cost, keep, line

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
DAY = dt.timedelta(days=1)

BUDGETS = """
budgets:
  - name: marketing-dags
    scope: {team: marketing}
    period: monthly
    amount: "1200.00"
    currency: USD
    thresholds: [{actual: 80%}, {forecast: 100%}, {anomaly: {run_cost_vs_median: 3, last_runs: 10}}]
    notify:
      - webhook: https://hooks.example.com/T0/B0/secret-token
  - name: ops-weekly
    scope: {team: ops, source: airflow_worker}
    period: weekly
    week_start: sunday
    timezone: Europe/Berlin
    amount: "50"
    currency: USD
    enforce: fail
"""


@pytest.fixture
def setup(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    engine = store.get_engine(url)
    for offset in range(1, 31):  # November and December: 30 a day, then a run of 400 today
        end = NOW - DAY * offset
        keep(
            engine,
            cost("daily_sales", "extract", f"r{offset}", end, [line("bigquery", "30")], team="marketing"),
        )
    keep(
        engine,
        cost(
            "daily_sales",
            "extract",
            "big",
            NOW - dt.timedelta(hours=1),
            [line("bigquery", "400")],
            team="marketing",
        ),
    )
    keep(engine, cost("vacuum", "run", "r1", NOW - DAY, [line("airflow_worker", "0.5")], team="ops"))
    path = tmp_path / "cost_budgets.yaml"
    path.write_text(BUDGETS)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH", str(path))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    conf.clear_cache()
    monkeypatch.setattr(budgets_command, "_now", lambda: NOW)
    return path, url


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def ok(*args: str) -> str:
    code, out, err = run("budgets", *args)
    assert code == 0, err
    return out


def test_status_table(setup):
    path, _ = setup
    assert ok() == ok("status")
    shortened = ok().split("\n\n")[1]
    assert "…" in shortened and "secret-token" not in shortened  # long cells shortened in the middle
    assert max(len(line) for line in shortened.splitlines()) <= 100
    assert "week of 2026-12-20 CET" in shortened  # the period is never cut
    out = ok("--wide")
    lines = out.splitlines()
    assert lines[0].startswith("ledger: sqlite:///")
    # both budgets are in USD: said once above the table, not in a column
    assert lines[1:4] == [f"budgets: {path}", "evaluated at: 2026-12-20 12:00 UTC", "currency: USD"]
    header = lines[5].split()
    assert header == ["budget", "period", "spent", "forecast", "amount", "percent", "crossed"]
    marketing = next(line for line in lines if line.startswith("marketing-dags"))
    # 19 December days of 30 and the 400 run; forecast: 11 more days of 30 (today already spent more)
    assert marketing.split() == [
        "marketing-dags",
        "2026-12",
        "UTC",
        "970.00",
        "1,300.00",
        "1,200.00",
        "80.8",
        "actual:80%,",
        "forecast:100%,",
        "1",
        "anomaly",
    ]
    ops = next(line for line in lines if line.startswith("ops-weekly"))
    assert ops.split()[:8] == [
        "ops-weekly",
        "week",
        "of",
        "2026-12-20",
        "CET",
        "0.00",
        "-",
        "50.00",
    ]
    notes = out.split("\n\n")[-1]
    assert (
        "marketing-dags:\n  scope: team=marketing\n  crossed: actual:80%, forecast:100%\n"
        "  top contributors: daily_sales 970.00"
    ) in notes
    assert (
        "  run daily_sales/big cost 400.00 USD, more than 3 x the median 30.00 of its DAG's last 10 runs"
        in notes
    )
    assert (
        "ops-weekly:\n  scope: team=ops, source=airflow_worker\n  no forecast yet: it needs 7 days of spend history, the scope has 1"
        in notes
    )
    assert "secret-token" not in out


def test_status_json_is_exact_and_complete(setup):
    document = json.loads(ok("-o", "json"))
    assert document["evaluated_at"] == NOW.isoformat() and document["budgets_file"] == str(setup[0])
    first, second = document["rows"]
    assert first == {
        "budget": "marketing-dags",
        "scope": {"team": "marketing"},
        "period": "monthly",
        "period_start": "2026-12-01T00:00:00+00:00",
        "period_end": "2027-01-01T00:00:00+00:00",
        "timezone": "UTC",
        "week_start": "monday",
        "spent": "970.00",
        "forecast": "1300.00",
        "amount": "1200.00",
        "currency": "USD",
        "percent": "80.8",
        "crossed": ["actual:80%", "forecast:100%", "anomaly:run:daily_sales/big"],
    }
    assert (second["period_start"], second["period_end"], second["week_start"]) == (
        "2026-12-20T00:00:00+01:00",
        "2026-12-27T00:00:00+01:00",
        "sunday",
    )
    assert second["forecast"] is None and second["crossed"] == []
    details = document["details"][0]
    assert details["top_contributors"] == [{"name": "daily_sales", "amount": "970.00"}]
    assert details["anomalies"][0]["key"] == "anomaly:run:daily_sales/big"
    assert details["anomalies"][0]["median"] == "30.00" and details["forecast_judged"] is True
    assert document["total"] == []


def test_status_yaml_csv_and_plain(setup):
    assert yaml.safe_load(ok("-o", "yaml"))["rows"][0]["spent"] == "970.00"
    rows = list(csv.DictReader(io.StringIO(ok("-o", "csv"))))
    assert rows[0]["crossed"] == "actual:80%; forecast:100%; anomaly:run:daily_sales/big"
    assert rows[1]["scope"] == "team=ops, source=airflow_worker" and rows[1]["forecast"] == ""
    plain = ok("-o", "plain").splitlines()
    assert plain[0].split()[0] == "budget" and plain[1].startswith("marketing-dags") and len(plain) == 3


def test_status_of_one_budget_and_of_the_previous_period(setup):
    assert [row["budget"] for row in json.loads(ok("--budget", "ops-weekly", "-o", "json"))["rows"]] == [
        "ops-weekly"
    ]
    (november,) = json.loads(ok("--budget", "marketing-dags", "--period", "previous", "-o", "json"))["rows"]
    assert (november["period_start"], november["spent"], november["forecast"]) == (
        "2026-11-01T00:00:00+00:00",
        "330.00",  # 11 November days of 30
        "330.00",
    )


def test_list_shows_the_file_without_the_ledger(setup, monkeypatch):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", "sqlite:////nonexistent/ledger.db")
    conf.clear_cache()
    out = ok("list", "--wide")
    assert "webhook:hooks.example.com" in out and "secret-token" not in out
    rows = json.loads(ok("list", "-o", "json"))["rows"]
    assert rows[0] == {
        "budget": "marketing-dags",
        "scope": {"team": "marketing"},
        "period": "monthly",
        "week_start": "monday",
        "timezone": "UTC",
        "amount": "1200.00",
        "currency": "USD",
        "thresholds": ["actual:80%", "forecast:100%", "anomaly:run_cost_vs_median=3,last_runs=10"],
        "notify": ["webhook:hooks.example.com"],
        "enforce": None,
    }
    assert rows[1]["enforce"] == "fail" and rows[1]["thresholds"] == ["actual:100%"]


def test_check_validates_and_warns_about_unseen_currencies(setup, tmp_path):
    path, _ = setup
    code, out, err = run("budgets", "check")
    assert (code, out, err) == (0, f"{path}: 2 budgets, valid\n", "")
    path.write_text(BUDGETS.replace("currency: USD\n    enforce", "currency: CHF\n    enforce"))
    code, out, err = run("budgets", "check")
    assert code == 0
    assert err == (
        f"warning: {path} budget 'ops-weekly': currency: CHF never appears in the ledger, whose costs are in "
        "USD: amounts are never converted, so this budget's spend stays 0\n"
    )
    path.write_text(BUDGETS.replace('amount: "50"', 'amount: "-50"'))
    code, out, err = run("budgets", "check")
    assert (code, out) == (1, "")
    assert err == f"error: {path} budget 'ops-weekly': amount: '-50' must be greater than zero\n"


def test_check_names_a_notifier_that_cannot_be_imported(setup):
    path, _ = setup
    path.write_text(
        BUDGETS.replace(
            "      - webhook: https://hooks.example.com/T0/B0/secret-token\n",
            "      - webhook: https://hooks.example.com/T0/B0/secret-token\n"
            "      - notifier: airflow.providers.nowhere.notifications.NoNotifier\n"
            "      - notifier: airflow_cost_provider.budgets.notify.DeliveryError\n",
        )
    )
    code, out, err = run("budgets", "check")
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        f"error: {path} budget 'marketing-dags': notify #2.notifier: notifier "
        "'airflow.providers.nowhere.notifications.NoNotifier' cannot be imported: no module named "
        "'airflow.providers.nowhere'",
        f"error: {path} budget 'marketing-dags': notify #3.notifier: notifier "
        "'airflow_cost_provider.budgets.notify.DeliveryError' is not an Airflow BaseNotifier subclass",
    ]
    assert "secret-token" not in err


def test_bad_input_is_one_line_with_status_2(setup, monkeypatch):
    path, _ = setup
    path.write_text(BUDGETS.replace("period: weekly", "period: fortnightly"))
    code, out, err = run("budgets")
    assert (code, out) == (2, "")
    assert err == (
        f"airflow-cost budgets: error: {path} budget 'ops-weekly': period: 'fortnightly' is not a period: use "
        "daily, weekly, monthly, quarterly\n"
    )
    path.write_text(BUDGETS)
    code, _, err = run("budgets", "--budget", "nope")
    assert code == 2 and "--budget 'nope' is not in the budgets file" in err
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH")
    conf.clear_cache()
    code, _, err = run("budgets", "list")
    assert (code, err) == (
        2,
        "airflow-cost budgets: error: no budgets file: set [cost_provider] budgets_path or give --budgets PATH\n",
    )
    code, _, err = run("budgets", "frobnicate")
    assert code == 2 and "invalid choice: 'frobnicate'" in err


def test_an_explicit_file_and_ledger(setup, tmp_path, monkeypatch):
    path, url = setup
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BUDGETS_PATH")
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN")
    conf.clear_cache()
    rows = json.loads(ok("--budgets", str(path), "--ledger", url, "-o", "json"))["rows"]
    assert rows[0]["spent"] == "970.00"
    empty = tmp_path / "none.yaml"
    empty.write_text("budgets: []\n")
    assert "(no budgets in " in ok("--budgets", str(empty), "--ledger", url)
