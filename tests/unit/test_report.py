"""`airflow-cost report`: groupings and their combinations, filters, sorting, totals, exact money in
every format, why a report is empty, terminal safety, and bad input as one line with exit status 2."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import subprocess
import sys
from decimal import Decimal

import pytest
import yaml

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.cli.output import decimals_for, escape, shorten
from airflow_cost_provider.ledger import store
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult
from tests.support.airflow_env import REPO

T0 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
UNPRICED_REASON = (
    "no price for postgres/instance_time: connection 'analytics' has no instance in [cost_provider] "
    'connection_pricing; set e.g. {"analytics": {"instance_type": "db.r6g.large"}}'
)
HOSTILE_DAG = "evil\x1b[2J\nline\r\u202e"


def line(source, amount, currency="USD"):
    usage = Usage(source, "m", Decimal(1), "query")
    return CostLine(
        usage,
        Decimal(amount),
        currency,
        "list_price",
        Price(source, "m", "query", Decimal(amount), currency, "v"),
    )


def result(dag, task, run, lines=(), unpriced=(), end=T0, try_number=1):
    missing = tuple(
        Unpriced(Usage(s, "instance_time", Decimal(1), "second"), UNPRICED_REASON) for s in unpriced
    )
    return CostResult(
        TaskTry(dag, task, run, try_number, -1, None),
        hashlib.md5(f"{dag}{task}{run}{try_number}".encode()).hexdigest(),
        "success",
        end - dt.timedelta(minutes=1),
        end,
        "w",
        tuple(lines),
        missing,
    )


@pytest.fixture
def ledger(ledger_url):
    engine = store.get_engine(ledger_url)
    for item in [
        result("sales", "extract", "r1", [line("airflow_worker", "0.10"), line("athena", "1.25")]),
        result(
            "sales",
            "extract",
            "r2",
            [line("airflow_worker", "0.000001040")],
            unpriced=["postgres"],
            end=T0 + dt.timedelta(days=1),
        ),
        result("sales", "load", "r1", [line("snowflake", "3.00"), line("bigquery", "2.00", "EUR")]),
        result("sales", "load", "r1", [line("airflow_worker", "0.05")], try_number=2),
        result("ops", "vacuum", "r1", unpriced=["postgres", "postgres"]),
        result("old", "t", "r0", [line("athena", "100")], end=T0 - dt.timedelta(days=90)),
    ]:
        store.store(engine, item)
    return ledger_url


PERIOD = ("--since", "2026-11-01", "--until", "2026-12-01")


def run(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def report(ledger, *args):
    code, out, err = run("report", "--ledger", ledger, *PERIOD, *args)
    assert code == 0, err
    return out


def as_json(ledger, *args):
    return json.loads(report(ledger, "-o", "json", *args))


def test_json_rows_totals_and_causes_with_exact_decimal_strings(ledger):
    document = as_json(ledger, "--by", "task")
    assert (
        document["since"] == "2026-11-01T00:00:00+00:00" and document["until"] == "2026-12-01T00:00:00+00:00"
    )
    assert document["by"] == ["dag_id", "task_id"] and "ledger" in document
    # sorted by cost, descending; the group with only unpriced usage last; one precision down the column
    assert [
        (r["dag_id"], r["task_id"], r["amount"], r["currency"], r["status"]) for r in document["rows"]
    ] == [
        ("sales", "load", "3.05000000", "USD", "estimated"),
        ("sales", "load", "2.00000000", "EUR", "estimated"),
        ("sales", "extract", "1.35000104", "USD", "partial"),
        ("ops", "vacuum", None, None, "unpriced"),
    ]
    assert document["total"] == [
        {
            "dag_id": "total",
            "task_id": None,
            "amount": "2.00000000",
            "currency": "EUR",
            "status": None,
            "lines": 1,
            "unpriced": 0,
        },
        {
            "dag_id": "total",
            "task_id": None,
            "amount": "4.40000104",
            "currency": "USD",
            "status": None,
            "lines": 5,
            "unpriced": 0,
        },
        {
            "dag_id": "total",
            "task_id": None,
            "amount": None,
            "currency": None,
            "status": "unpriced",
            "lines": 3,
            "unpriced": 3,
        },
    ]
    [cause] = document["unpriced"]
    assert cause["count"] == 3 and cause["source"] == "postgres" and cause["reason"] == UNPRICED_REASON
    assert cause["fix"] == 'set e.g. {"analytics": {"instance_type": "db.r6g.large"}}'


def test_amounts_are_never_in_exponent_form():
    assert decimals_for([Decimal("0E-9"), Decimal("1.5")]) == 2
    assert decimals_for([Decimal("0.000000001"), Decimal("12")]) == 9
    assert decimals_for([Decimal("1E+3")]) == 2


def test_groupings_combine_and_day_series_read_in_time_order(ledger):
    rows = as_json(ledger, "--by", "dag,day")["rows"]
    assert [(r["day"], r["dag_id"], r["amount"]) for r in rows] == [
        ("2026-11-20", "sales", "4.40000000"),
        ("2026-11-20", "sales", "2.00000000"),
        ("2026-11-20", "ops", None),
        ("2026-11-21", "sales", "0.00000104"),
    ]
    by_source = {(r["source"], r["currency"]): r["amount"] for r in as_json(ledger, "--by", "source")["rows"]}
    assert by_source == {
        ("airflow_worker", "USD"): "0.15000104",
        ("athena", "USD"): "1.25000000",
        ("bigquery", "EUR"): "2.00000000",
        ("snowflake", "USD"): "3.00000000",
        ("postgres", None): None,
    }
    tries = as_json(ledger, "--by", "try")["rows"]
    assert {(r["task_id"], r["run_id"], r["try_number"]) for r in tries if r["currency"] == "USD"} == {
        ("extract", "r1", 1),
        ("extract", "r2", 1),
        ("load", "r1", 1),
        ("load", "r1", 2),
    }
    assert as_json(ledger, "--by", "source,dag")["by"] == ["source", "dag_id"]


def test_filters_follow_one_dag_over_time(ledger):
    document = as_json(ledger, "--by", "day", "--dag", "sales", "--source", "airflow_worker")
    assert [(r["day"], r["amount"]) for r in document["rows"]] == [
        ("2026-11-20", "0.15000000"),
        ("2026-11-21", "0.00000104"),
    ]
    assert document["filters"] == {"dag": ["sales"], "source": ["airflow_worker"]}
    only_load = as_json(ledger, "--by", "task", "--task", "load")["rows"]
    assert {r["task_id"] for r in only_load} == {"load"}


def test_top_keeps_the_costliest_rows_and_the_whole_total(ledger):
    document = as_json(ledger, "--by", "source", "--top", "2")
    assert [r["source"] for r in document["rows"]] == ["snowflake", "bigquery"]
    assert document["omitted_rows"] == 3
    assert {t["currency"]: t["amount"] for t in document["total"]}["USD"] == "4.40000104"
    table = report(ledger, "--by", "source", "--top", "2")
    assert "3 more rows not shown (--top 2); the total includes them." in table


def test_top_of_a_day_series_keeps_the_costliest_days_in_time_order(ledger):
    engine = store.get_engine(ledger)
    store.store(
        engine, result("sales", "spike", "r3", [line("athena", "9.00")], end=T0 + dt.timedelta(days=2))
    )
    document = as_json(
        ledger, "--by", "day", "--source", "athena", "--source", "airflow_worker", "--top", "2"
    )
    # 2026-11-20: 1.40, 2026-11-21: 0.00000104, 2026-11-22: 9.00
    assert [(r["day"], r["amount"]) for r in document["rows"]] == [
        ("2026-11-20", "1.40000000"),
        ("2026-11-22", "9.00000000"),
    ]
    assert document["omitted_rows"] == 1


def test_table_names_ledger_period_and_ends_with_totals_and_causes(ledger):
    table = report(ledger, "--by", "task").splitlines()
    assert (
        table[0].startswith("ledger: ")
        and table[1] == "period: 2026-11-01 to 2026-12-01 UTC (until excluded)"
    )
    header = next(i for i, text in enumerate(table) if text.startswith("dag_id"))
    assert table[header].split() == ["dag_id", "task_id", "amount", "currency", "status", "lines", "unpriced"]
    totals = [text for text in table if text.startswith("total")]
    assert [t.split()[1:3] for t in totals] == [
        ["2.00000000", "EUR"],
        ["4.40000104", "USD"],
        ["-", "unpriced"],
    ]
    # one cause, said once, with the option that fixes it
    assert sum("postgres/instance_time" in text for text in table) == 1
    assert any(text.strip().startswith("fix: set e.g.") for text in table)
    assert all(len(text) <= 100 for text in table[header:])


def test_csv_and_yaml_keep_exact_money_and_end_with_the_total(ledger):
    rows = list(csv.DictReader(io.StringIO(report(ledger, "--by", "task", "--format", "csv"))))
    assert rows[0]["amount"] == "3.05000000" and rows[3]["amount"] == "" and rows[3]["status"] == "unpriced"
    assert [(r["dag_id"], r["currency"]) for r in rows[-3:]] == [
        ("total", "EUR"),
        ("total", "USD"),
        ("total", ""),
    ]
    document = yaml.safe_load(report(ledger, "--by", "dag", "-o", "yaml"))
    assert document["rows"][0] == {
        "dag_id": "sales",
        "amount": "4.40000104",
        "currency": "USD",
        "status": "partial",
        "lines": 6,
        "unpriced": 1,
    }
    plain = report(ledger, "--by", "dag", "-o", "plain").splitlines()
    assert plain[0].split() == ["dag_id", "amount", "currency", "status", "lines", "unpriced"]
    assert not any(text.startswith(("ledger:", "----")) for text in plain)


def test_an_empty_period_says_where_the_ledger_has_data(ledger):
    code, out, _ = run("report", "--ledger", ledger, "--since", "2025-01-01", "--until", "2025-02-01")
    assert code == 0
    assert "(no task costs in this period)" in out
    assert (
        "No task costs from 2025-01-01 to 2025-02-01 UTC (until excluded); the ledger has them from "
        "2026-08-22 to 2026-11-21: try --since 2026-08-22 --until 2026-11-22"
    ) in " ".join(out.split())
    code, out, err = run(
        "report", "--ledger", ledger, "--since", "2025-01-01", "--until", "2025-02-01", "-o", "json"
    )
    assert json.loads(out)["data_range"] == {"first": "2026-08-22", "last": "2026-11-21"}
    assert "try --since 2026-08-22" in err
    code, out, _ = run("report", "--ledger", ledger, "--dag", "nothing_like_it")
    assert "none for these filters in any period" in " ".join(out.split())


def test_identities_are_escaped_and_long_ids_shortened_in_tables(ledger_url):
    engine = store.get_engine(ledger_url)
    long_task = "t" * 60 + "_middle_" + "z" * 60
    store.store(engine, result(HOSTILE_DAG, long_task, "r1", [line("athena", "1")]))
    table = report(ledger_url, "--by", "task")
    assert "\x1b" not in table and "\r" not in table and "\u202e" not in table
    assert "evil\\x1b[2J\\nline\\r\\u202e" in table
    assert all(len(text) <= 100 for text in table.splitlines() if not text.startswith("ledger: "))
    assert long_task not in table and "ttt…zzz" in table
    wide = report(ledger_url, "--by", "task", "--wide")
    assert long_task in wide
    assert json.loads(report(ledger_url, "--by", "dag", "-o", "json"))["rows"][0]["dag_id"] == HOSTILE_DAG


def test_escape_and_shorten():
    assert escape("a\tb\x00c\x7f\u2028") == "a\\tb\\x00c\\x7f\\u2028"
    assert escape("plain ünïcode") == "plain ünïcode"
    assert shorten("abcdefghij", 5) == "ab…ij" and shorten("abc", 5) == "abc"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--by", "nope"], "--by: unknown grouping 'nope': choose from dag, task, run, try, source, day"),
        (["--by", "usage-class"], "--by: unknown grouping 'usage-class'"),
        (["--since", "2026-01-05garbage"], "--since '2026-01-05garbage' is not a date (YYYY-MM-DD)"),
        (["--until", "tomorrow"], "--until 'tomorrow' is not a date"),
        (
            ["--since", "2026-02-01", "--until", "2026-01-01"],
            "--since 2026-02-01 is not before --until 2026-01-01",
        ),
        (["--top", "0"], "argument --top: '0' must be 1 or more"),
        (["-o", "xml"], "invalid choice: 'xml'"),
        (["--ledger", "not a url"], "ledger URL 'not a url' is not a database URL"),
        (
            ["--ledger", "sqlite:////nonexistent/dir/ledger.db"],
            "does not exist: no file /nonexistent/dir/ledger.db",
        ),
        (["--ledger", "sqlite:////tmp"], "/tmp is a directory, not an SQLite file"),
        (["--ledger", "nosuchdb://x/y"], "unknown database kind 'nosuchdb'"),
        (
            ["--ledger", "postgresql://u:p@ss@127.0.0.1:9/x"],
            "the user or password holds an @; URL-encode it as %40",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, args, message):
    ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.get_engine(ledger_url)
    base = [] if any(a == "--ledger" for a in args) else ["--ledger", ledger_url]
    code, out, err = run("report", *base, *args)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err
    assert "Traceback" not in err and "p@ss" not in err and ":p@" not in err


def test_storage_groupings_belong_to_report_storage(ledger):
    code, _, err = run("report", "storage", "--ledger", ledger, "--by", "task")
    assert code == 2 and "unknown grouping 'task': choose from resource, service, usage-class, day" in err


def test_an_unreachable_server_is_one_line_without_the_password(postgres_server):
    code, out, err = run("report", "--ledger", "postgresql://cost:s3cret@127.0.0.1:9/none")
    assert code == 2 and err.count("\n") == 1 and "s3cret" not in err and "unreachable" in err


def test_a_database_that_is_not_a_ledger_is_refused_and_left_alone(tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("create table t (x)").connection.commit()
    code, _, err = run("report", "--ledger", f"sqlite:///{path}")
    assert code == 2 and "is not a cost ledger" in err
    assert [r[0] for r in sqlite3.connect(path).execute("select name from sqlite_master")] == ["t"]


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__COST_PROVIDER")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "airflow_cost_provider.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=environment,
        timeout=120,
        check=False,
    )


def test_version_help_and_no_log_noise(ledger, tmp_path):
    from airflow_cost_provider.version import __version__

    assert _cli("--version").stdout.strip() == f"airflow-cost {__version__}"
    for command in (["report"], ["report", "storage"], ["check"], ["import-storage"]):
        shown = _cli(*command, "--help")
        assert shown.returncode == 0 and "usage: airflow-cost " + " ".join(command) in shown.stdout
    assert "--by GROUPING" in _cli("report", "storage", "--help").stdout
    # an old ledger is migrated without Alembic's INFO lines; nothing on stderr in normal use
    quiet = _cli("report", "--ledger", ledger, *PERIOD)
    assert quiet.returncode == 0 and quiet.stderr == ""


@pytest.mark.parametrize("kind", ["storage", "coverage"])
def test_billing_day_reports_describe_their_period_in_days(kind):
    code, out, _ = run("report", kind, "--help")
    text = " ".join(out.split())
    assert code == 0
    assert "--since WHEN first billing day (YYYY-MM-DD; default: the last 30 days, today included)" in text
    assert "offset" not in text  # billing days have no time of day, so no UTC offset either


def test_output_pipes_cleanly_into_a_reader_that_stops(ledger_url):
    engine = store.get_engine(ledger_url)
    for index in range(400):
        store.store(engine, result("dag", f"task_{index:04}", "r1", [line("athena", "1")]))
    pipeline = subprocess.run(
        f"{sys.executable} -m airflow_cost_provider.cli report --ledger '{ledger_url}' {' '.join(PERIOD)} | head -n 2",
        shell=True,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert len(pipeline.stdout.splitlines()) == 2
    assert "BrokenPipeError" not in pipeline.stderr and "Exception ignored" not in pipeline.stderr


def test_a_postgresql_ledger_is_read_with_the_url_the_docs_show(postgres_url):
    """`postgresql://` and Airflow's `postgres://`, as typed from the host, without naming a driver."""
    store.get_engine(postgres_url)
    store.store(store.get_engine(postgres_url), result("sales", "load", "r1", [line("athena", "2.5")]))
    plain = postgres_url.replace("postgresql+psycopg2://", "postgresql://")
    for url in (plain, plain.replace("postgresql://", "postgres://")):
        rows = as_json(url, "--by", "dag")["rows"]
        assert [(r["dag_id"], r["amount"]) for r in rows] == [("sales", "2.50")]


def test_the_groupings_the_cli_offers_are_the_query_layers():
    from airflow_cost_provider import report as queries
    from airflow_cost_provider.cli import imports, report

    assert report.TASK_GROUPINGS == (*queries.GROUPINGS, "label:KEY")
    assert report.STORAGE_GROUPINGS == tuple(queries.STORAGE_GROUPINGS)
    from airflow_cost_provider.billing.registry import FILE_FORMATS

    assert imports.FILE_FORMATS == tuple(FILE_FORMATS)


# ---------------------------------------------------------------- owner, team, tag and label groupings


def attributed(item: CostResult, **attribution) -> CostResult:
    return dataclasses.replace(item, task_try=dataclasses.replace(item.task_try, **attribution))


SALES_TAGS = ("pii", "team:marketing")


@pytest.fixture
def attributed_ledger(ledger_url):
    engine = store.get_engine(ledger_url)
    for item in [
        attributed(
            result("sales", "extract", "r1", [line("athena", "1.25")], unpriced=["postgres"]),
            owner="ana",
            team="marketing",
            dag_tags=SALES_TAGS,
            labels=(("product", "crm"),),
        ),
        attributed(
            result("sales", "load", "r1", [line("snowflake", "3.00"), line("bigquery", "2.00", "EUR")]),
            owner="bob",
            team="finance",
            dag_tags=SALES_TAGS,
            labels=(("env", "prod"), ("product", "erp")),
        ),
        attributed(
            result("ops", "vacuum", "r1", [line("airflow_worker", "0.50")], end=T0 + dt.timedelta(days=1)),
            owner="ana",
        ),
        # as a try recorded before attribution existed: no owner, team, tags or labels
        result("old", "t", "r0", [line("athena", "0.25")]),
    ]:
        store.store(engine, item)
    return ledger_url


def grouped(document, *keys):
    return [(*(r[k] for k in keys), r["amount"], r["currency"], r["status"]) for r in document["rows"]]


def totals(document):
    return [(t["amount"], t["currency"], t["lines"], t["unpriced"]) for t in document["total"]]


EXPECTED_TOTALS = [("2.00", "EUR", 1, 0), ("5.00", "USD", 4, 0), (None, None, 1, 1)]


def test_by_team_and_owner_with_tries_without_them_as_none(attributed_ledger):
    by_team = as_json(attributed_ledger, "--by", "team")
    assert by_team["by"] == ["team"]
    assert grouped(by_team, "team") == [
        ("finance", "3.00", "USD", "estimated"),
        ("finance", "2.00", "EUR", "estimated"),
        ("marketing", "1.25", "USD", "partial"),
        ("(none)", "0.75", "USD", "estimated"),
    ]
    assert totals(by_team) == EXPECTED_TOTALS
    by_owner = as_json(attributed_ledger, "--by", "owner")
    assert grouped(by_owner, "owner") == [
        ("bob", "3.00", "USD", "estimated"),
        ("bob", "2.00", "EUR", "estimated"),
        ("ana", "1.75", "USD", "partial"),
        ("(none)", "0.25", "USD", "estimated"),
    ]
    assert totals(by_owner) == EXPECTED_TOTALS


def test_by_tag_counts_a_try_under_each_tag_and_the_total_once(attributed_ledger):
    document = as_json(attributed_ledger, "--by", "tag")
    assert grouped(document, "tag") == [
        ("pii", "4.25", "USD", "partial"),
        ("team:marketing", "4.25", "USD", "partial"),
        # the unpriced usage of a group marks all its rows partial, whatever their currency
        ("pii", "2.00", "EUR", "partial"),
        ("team:marketing", "2.00", "EUR", "partial"),
        ("(none)", "0.75", "USD", "estimated"),
    ]
    assert totals(document) == EXPECTED_TOTALS
    table = report(attributed_ledger, "--by", "tag")
    assert "a try counts once under each of its DAG's tags" in table
    assert any(row.startswith("total") and "5.00  USD" in row for row in table.splitlines()), table


def test_by_label_key(attributed_ledger):
    by_product = as_json(attributed_ledger, "--by", "label:product")
    assert by_product["by"] == ["label:product"]
    assert grouped(by_product, "label:product") == [
        ("erp", "3.00", "USD", "estimated"),
        ("erp", "2.00", "EUR", "estimated"),
        ("crm", "1.25", "USD", "partial"),
        ("(none)", "0.75", "USD", "estimated"),
    ]
    assert totals(by_product) == EXPECTED_TOTALS
    by_env = as_json(attributed_ledger, "--by", "label:env")
    assert grouped(by_env, "label:env") == [
        ("prod", "3.00", "USD", "estimated"),
        ("(none)", "2.00", "USD", "partial"),  # equal amounts: by group
        ("prod", "2.00", "EUR", "estimated"),
    ]
    # a label nobody set: everything under (none), nothing lost
    assert grouped(as_json(attributed_ledger, "--by", "label:nope"), "label:nope") == [
        ("(none)", "5.00", "USD", "partial"),
        ("(none)", "2.00", "EUR", "partial"),
    ]


def test_attribution_groupings_combine_with_the_others_and_the_filters(attributed_ledger):
    document = as_json(attributed_ledger, "--by", "team,label:product,label:env,source", "--dag", "sales")
    assert document["by"] == ["team", "label:product", "label:env", "source"]
    assert grouped(document, "team", "label:product", "label:env", "source") == [
        ("finance", "erp", "prod", "snowflake", "3.00", "USD", "estimated"),
        ("finance", "erp", "prod", "bigquery", "2.00", "EUR", "estimated"),
        ("marketing", "crm", "(none)", "athena", "1.25", "USD", "estimated"),
        ("marketing", "crm", "(none)", "postgres", None, None, "unpriced"),
    ]
    series = as_json(
        attributed_ledger, "--by", "owner,day", "--source", "airflow_worker", "--source", "athena"
    )
    assert grouped(series, "day", "owner") == [
        ("2026-11-20", "ana", "1.25", "USD", "estimated"),
        ("2026-11-20", "(none)", "0.25", "USD", "estimated"),
        ("2026-11-21", "ana", "0.50", "USD", "estimated"),
    ]
    by_tag_and_task = as_json(attributed_ledger, "--by", "tag,task", "--task", "load")
    assert totals(by_tag_and_task) == [("2.00", "EUR", 1, 0), ("3.00", "USD", 1, 0)]
    assert len(by_tag_and_task["rows"]) == 4  # two tags x two currencies


def test_attribution_columns_in_csv_and_table(attributed_ledger):
    text = report(attributed_ledger, "--by", "team,label:product", "-o", "csv")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["team", "label:product", "amount", "currency", "status", "lines", "unpriced"]
    assert ["(none)", "(none)", "0.75", "USD", "estimated", "2", "0"] in rows
    assert rows[-1] == ["total", "", "", "", "unpriced", "1", "1"]
    table = report(attributed_ledger, "--by", "team")
    assert "grouped by: team" in table and "(none)" in table and "marketing" in table


@pytest.mark.parametrize(
    ("by", "message"),
    [
        ("label:", "--by: grouping 'label:' names no label: use label:KEY, e.g. label:product"),
        (
            "label",
            "--by: unknown grouping 'label': choose from dag, task, run, try, source, day, owner, team, tag, model, label:KEY",
        ),
    ],
    ids=["empty", "bare"],
)
def test_bad_label_grouping(attributed_ledger, by, message):
    """One line with exit status 2 (short name: the PostgreSQL database is named after the test)."""
    code, out, err = run("report", "--ledger", attributed_ledger, "--by", by)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err, err


def test_a_long_note_folds_at_words_to_100_columns_and_keeps_a_path_whole():
    from airflow_cost_provider.cli.output import Document, render_table

    path = "/a/very/long/folder/name/" + "x" * 90 + ".csv"
    note = "Left out: 8 unpriced lines (no price, so no cost; FOCUS costs cannot be null). See the report."
    doc = Document(meta={}, head={}, columns=["a"], rows=[["1"]], notes=[note + " More words here.", path])
    lines = render_table(doc).split("\n\n")[-1].splitlines()
    assert lines[:2] == [note + " More", "  words here."]  # 104 characters: folded at the last word that fits
    assert all(len(line) <= 100 for line in lines[:-1])
    assert lines[-1] == path  # longer than a line, never cut
    assert render_table(doc, wide=True).split("\n\n")[-1].splitlines()[0] == note + " More words here."
