"""`airflow-cost check` (checks.check_all) and the plugin's start-up check: every option, the price book,
the ledger; each problem once, naming the option, the value and what is allowed."""

from __future__ import annotations

import importlib
import sqlite3

import pytest
import sqlalchemy as sa

from airflow_cost_provider import checks, conf
from airflow_cost_provider.capture import hook_lineage
from airflow_cost_provider.instrumentation.registry import INSTRUMENTATIONS
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import SCHEMA_REVISION, VERSION_TABLE
from airflow_cost_provider.pricing.price_book import load_shipped

ALLOWED_SOURCES = (
    "airflow_worker, athena, azure_data_factory, azure_sql, bigquery, compute_engine, databricks, dataproc, "
    "dataproc_serverless, dbt, dbt_cloud, dremio, emr, emr_eks, emr_serverless, glue, kubernetes, mysql, postgres, redshift, snowflake, spark, "
    "synapse_pipelines, synapse_serverless_sql, synapse_spark, trino"
)


@pytest.fixture
def ledger(tmp_path, monkeypatch):
    """An existing, current ledger as [cost_provider] ledger_conn."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.get_engine(url)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", url)
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "True")
    conf.clear_cache()
    return url


def only_problem(**options: str) -> str:
    """The one problem check_all reports with these options set."""
    mp = pytest.MonkeyPatch()
    try:
        for option, value in options.items():
            mp.setenv(f"AIRFLOW__COST_PROVIDER__{option.upper()}", value)
        conf.clear_cache()
        result = checks.check_all()
    finally:
        mp.undo()
        conf.clear_cache()
    assert len(result.problems) == 1, result.problems
    return result.problems[0]


def test_a_good_configuration_and_ledger_pass(ledger):
    assert checks.check_all() == checks.CheckResult(problems=(), notes=())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("enabled", "maybe", "[cost_provider] enabled = 'maybe' is not a boolean: use True or False"),
        (
            "listener_order",
            "middle",
            "[cost_provider] listener_order = 'middle' is not a listener order: use first or last",
        ),
        (
            "finalize_timeout",
            "abc",
            "[cost_provider] finalize_timeout = 'abc' is not a number: use seconds from 0.1 to 60",
        ),
        (
            "finalize_timeout",
            "-5",
            "[cost_provider] finalize_timeout = '-5' is out of range: use seconds from 0.1 to 60",
        ),
        (
            "finalize_timeout",
            "1e9",
            "[cost_provider] finalize_timeout = '1e9' is out of range: use seconds from 0.1 to 60",
        ),
        (
            "finalize_timeout",
            "nan",
            "[cost_provider] finalize_timeout = 'nan' is not a number: use seconds from 0.1 to 60",
        ),
        (
            "tagging_enabled",
            "perhaps",
            "[cost_provider] tagging_enabled = 'perhaps' is not a boolean: use True or False",
        ),
        (
            "capture_hook_lineage",
            "2",
            "[cost_provider] capture_hook_lineage = '2' is not a boolean: use True or False",
        ),
        (
            "freeze_heap_for_openlineage",
            "maybe",
            "[cost_provider] freeze_heap_for_openlineage = 'maybe' is not a boolean: use True or False",
        ),
        (
            "worker_vcpu_hour_rate",
            "1e30",
            "[cost_provider] worker_vcpu_hour_rate = '1e30' is out of range: use a price per vCPU-hour above 0 "
            "and at most 100000 (in worker_rate_currency)",
        ),
        (
            "worker_memory_gib_hour_rate",
            "0",
            "[cost_provider] worker_memory_gib_hour_rate = '0' is out of range: use a price per GiB-hour above "
            "0 and at most 100000 (in worker_rate_currency)",
        ),
        (
            "worker_rate_currency",
            "usd",
            "[cost_provider] worker_rate_currency = 'usd' is not an ISO 4217 code: use three capitals like USD",
        ),
        (
            "storage_reimport_days",
            "90",
            "[cost_provider] storage_reimport_days = '90' is out of range: use a whole number of days from 0 "
            "to 62",
        ),
        (
            "storage_reimport_days",
            "2.5",
            "[cost_provider] storage_reimport_days = '2.5' is not a whole number: use a whole number of days "
            "from 0 to 62",
        ),
        (
            "storage_allocation",
            '{"s3://lake/raw/": 9223372036854775808}',
            "[cost_provider] storage_allocation['s3://lake/raw/'] = 9223372036854775808 is not a number of "
            "bytes: use a whole number from 0 to 9223372036854775807, or null to list the prefix",
        ),
        (
            "disabled_sources",
            "bigqeury, airflow_worker,databricks_sql",
            "[cost_provider] disabled_sources = 'bigqeury, airflow_worker,databricks_sql' names unknown "
            f"source(s) bigqeury, databricks_sql: use comma-separated names from {ALLOWED_SOURCES}, or the "
            "connection type of a DB-API hook",
        ),
        (
            "untagged_sources",
            "MySQL",
            "[cost_provider] untagged_sources = 'MySQL' names unknown source(s) MySQL: use comma-separated "
            f"names from {ALLOWED_SOURCES}, or the connection type of a DB-API hook",
        ),
        (
            "bigquery_pricing",
            '{"*": "flat_rate"}',
            "[cost_provider] bigquery_pricing['*'] = 'flat_rate' must be one of on_demand, standard, "
            "enterprise, enterprise_plus",
        ),
        (
            "prometheus_url",
            "http://admin:secret@prometheus:9090",
            "[cost_provider] prometheus_url = 'http://admin:secret@prometheus:9090' is not an http(s) URL "
            "without credentials: use e.g. http://prometheus-operated.monitoring.svc:9090",
        ),
        (
            "prometheus_url",
            "prometheus:9090",
            "[cost_provider] prometheus_url = 'prometheus:9090' is not an http(s) URL without credentials: use "
            "e.g. http://prometheus-operated.monitoring.svc:9090",
        ),
        (
            "prometheus_selector",
            "cluster=prod",
            "[cost_provider] prometheus_selector = 'cluster=prod' is not a list of PromQL label matchers: use "
            'e.g. cluster="prod-eu" or cluster="prod",region=~"eu-.*"',
        ),
        (
            "prometheus_selector",
            'cluster="prod"} or vector(1) or up{a="b"',
            '[cost_provider] prometheus_selector = \'cluster="prod"} or vector(1) or up{a="b"\' is not a '
            'list of PromQL label matchers: use e.g. cluster="prod-eu" or cluster="prod",region=~"eu-.*"',
        ),
    ],
)
def test_each_bad_value_is_one_message(ledger, option, value, message):
    assert only_problem(**{option: value}) == message


def test_every_problem_is_reported_once(ledger, monkeypatch):
    bad = {
        "ENABLED": "maybe",
        "LISTENER_ORDER": "middle",
        "FINALIZE_TIMEOUT": "abc",
        "TAGGING_ENABLED": "perhaps",
        "CAPTURE_HOOK_LINEAGE": "2",
        "WORKER_VCPU_HOUR_RATE": "1e30",
        "WORKER_MEMORY_GIB_HOUR_RATE": "-1",
        "WORKER_RATE_CURRENCY": "dollars",
        "DISABLED_SOURCES": "nope",
    }
    for option, value in bad.items():
        monkeypatch.setenv(f"AIRFLOW__COST_PROVIDER__{option}", value)
    conf.clear_cache()
    problems = checks.check_all().problems
    assert len(problems) == len(bad) == len(set(problems))
    for option, value in bad.items():
        assert sum(f"{option.lower()} = {value!r}" in problem for problem in problems) == 1, option


def test_a_price_book_amount_the_ledger_cannot_hold(ledger, tmp_path):
    book = tmp_path / "prices.yaml"
    book.write_text(
        'version: "x"\nprices:\n'
        '  - {source: athena, metric: data_scanned, unit: TB, amount: "1e30", currency: USD}\n'
    )
    assert only_problem(price_book_path=str(book)) == (
        f"price book {book} entry #1 (athena/data_scanned): amount 1e30 does not fit the ledger, which "
        "keeps money as 64-bit nano-units: use an amount below 9223372036.854775808"
    )


def test_a_source_added_by_the_price_book_is_known(ledger, tmp_path, monkeypatch):
    book = tmp_path / "prices.yaml"
    book.write_text(
        'version: "x"\nprices:\n'
        '  - {source: clickhouse, metric: cpu_time, unit: vCPU-hour, amount: "0.03", currency: EUR}\n'
    )
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__PRICE_BOOK_PATH", str(book))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "clickhouse,airflow_worker")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "mysql, trino")
    conf.clear_cache()
    assert checks.check_all().problems == ()


def test_connection_types_of_db_api_hooks_are_sources(ledger, monkeypatch):
    monkeypatch.setattr(checks, "connection_types", lambda: frozenset({"oracle", "sqlite"}))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "oracle")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__UNTAGGED_SOURCES", "sqlite,vertica")
    conf.clear_cache()
    assert checks.check_all().problems == (
        "[cost_provider] untagged_sources = 'sqlite,vertica' names unknown source(s) vertica: use "
        f"comma-separated names from {ALLOWED_SOURCES}, or the connection type of a DB-API hook",
    )


def test_connection_types_are_airflows_own_but_not_those_renamed():
    types = checks.connection_types()
    assert {"postgres", "mysql", "trino"} <= types  # providers installed in this environment
    assert not {"mssql", "google_cloud_platform"} & types  # their statements are azure_sql's, bigquery's


def test_every_source_the_provider_captures_is_known():
    """The known names come from the price book: it must price (or list) everything captured."""
    known = checks.known_sources(load_shipped().prices)
    captured = set()
    for target, _package in INSTRUMENTATIONS.values():
        module, name = target.split(":")
        captured |= set(getattr(importlib.import_module(module), name).sources)
    captured |= set(hook_lineage._SOURCE_BY_HOOK.values()) | set(hook_lineage._SOURCE_BY_CONN_TYPE.values())
    assert captured and captured <= known, captured - known


# ----------------------------------------------------------------------------------------- the ledger


def test_the_default_ledger_not_created_yet_is_a_note(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", "")
    monkeypatch.setenv("AIRFLOW__OPENLINEAGE__DISABLED", "True")
    conf.clear_cache()
    result = checks.check_all()
    path = tmp_path / "home" / "cost_ledger.db"
    assert result == checks.CheckResult(
        problems=(), notes=(f"the ledger {path} does not exist yet: the first task to finish creates it",)
    )
    assert not path.exists()  # checking creates nothing


def test_a_ledger_url_given_to_check_must_exist(ledger, tmp_path):
    missing = tmp_path / "elsewhere.db"
    assert checks.check_all(f"sqlite:///{missing}").problems == (
        f"ledger sqlite:///{missing} does not exist: no file {missing}",
    )
    assert checks.check_all(ledger) == checks.CheckResult()


def test_a_database_without_the_ledger_tables(ledger, tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE t (x INTEGER)")
    assert checks.check_all(f"sqlite:///{other}").problems == (
        f"sqlite:///{other} is not a cost ledger: it has no {VERSION_TABLE} table",
    )


def test_a_ledger_with_a_newer_schema(ledger):
    with store.get_engine(ledger).begin() as connection:
        connection.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    store.dispose_engines()
    assert checks.check_all().problems == (
        f"ledger {ledger} is at schema 9999, newer than this airflow-cost-provider knows ({SCHEMA_REVISION}): "
        "upgrade airflow-cost-provider",
    )


@pytest.mark.parametrize(
    ("ledger_conn", "message"),
    [
        ("sqlite:///{tmp}", "ledger sqlite:///{tmp}: {tmp} is a directory, not an SQLite file"),
        ("postgresq://cost:secret@localhost/cost", "unknown database kind 'postgresq'"),
        ("postgresql://cost:secret@127.0.0.1:1/cost", "is unreachable"),
        (
            "no_such_connection",
            "ledger_conn 'no_such_connection' is not a URL nor a usable Airflow connection",
        ),
    ],
)
def test_an_unusable_ledger_is_a_problem(ledger, monkeypatch, tmp_path, ledger_conn, message):
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", ledger_conn.format(tmp=tmp_path))
    conf.clear_cache()
    (problem,) = checks.check_all().problems
    assert message.format(tmp=tmp_path) in problem
    assert "secret" not in problem


# --------------------------------------------------------------------------- the plugin at start-up


def test_the_plugin_checks_the_configuration_but_never_the_ledger(monkeypatch):
    """It runs as every Airflow process loads the plugin: no ledger, and not Airflow's providers (so
    the source lists, harmless when wrong, are left to `airflow-cost check`)."""
    from airflow_cost_provider import plugin

    def no_ledger(*args, **kwargs):
        raise AssertionError("the plugin must not open the ledger")

    for name in ("open_existing", "get_engine", "resolve_url"):
        monkeypatch.setattr(store, name, no_ledger)
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__LEDGER_CONN", "postgresql://cost:secret@127.0.0.1:1/cost")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT", "1e9")
    monkeypatch.setenv("AIRFLOW__COST_PROVIDER__DISABLED_SOURCES", "nope")
    monkeypatch.setattr(checks, "connection_types", no_ledger)
    conf.clear_cache()
    assert plugin.check_configuration() == [
        "[cost_provider] finalize_timeout = '1e9' is out of range: use seconds from 0.1 to 60"
    ]


def test_the_check_command_prints_each_problem_once_and_exits_1(ledger, tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__COST_PROVIDER__")}
    env.update(
        AIRFLOW_HOME=str(tmp_path),
        AIRFLOW__OPENLINEAGE__DISABLED="True",
        AIRFLOW__COST_PROVIDER__LEDGER_CONN=ledger,
        AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT="-5",
        AIRFLOW__COST_PROVIDER__LISTENER_ORDER="middle",
    )
    command = [sys.executable, "-m", "airflow_cost_provider.cli", "check"]
    bad = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 1 and bad.stdout == ""
    assert sorted(bad.stderr.splitlines()) == [
        "error: [cost_provider] finalize_timeout = '-5' is out of range: use seconds from 0.1 to 60",
        "error: [cost_provider] listener_order = 'middle' is not a listener order: use first or last",
    ]
    del env["AIRFLOW__COST_PROVIDER__FINALIZE_TIMEOUT"], env["AIRFLOW__COST_PROVIDER__LISTENER_ORDER"]
    good = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert good.returncode == 0 and good.stderr == "", good.stderr
    assert good.stdout.strip() == "cost provider configuration, price book and ledger are valid"


def test_check_warns_while_captures_wait_in_the_spool(tmp_path):
    from airflow_cost_provider.capture.spool import configured_spool
    from tests.unit.test_ledger import make_result

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.get_engine(ledger)
    spool = configured_spool()
    spool.put(make_result())
    assert checks.check_all(ledger).warnings == (
        f"1 capture(s) wait in {spool.directory}: run airflow-cost replay",
    )
