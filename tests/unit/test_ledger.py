"""The ledger on SQLite and on a real PostgreSQL server: idempotent writes, nothing half-written."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.ledger import schema, store
from airflow_cost_provider.ledger.schema import SCHEMA_REVISION, VERSION_TABLE
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult
from tests.support.airflow_env import ledger_rows
from tests.support.http_recorder import closed_port

T0 = dt.datetime(2026, 11, 20, 6, 0, tzinfo=dt.timezone.utc)
PRICE = Price(
    "athena",
    "data_scanned",
    "TB",
    Decimal("5"),
    "USD",
    "2026.11.0",
    source_url="https://aws.amazon.com/athena/pricing/",
)


def make_result(capture_id="c1", task_id="load", try_number=1, amounts=("0.123456789",), unpriced=1, end=T0):
    usage = Usage(
        "athena", "data_scanned", Decimal(10**9), "byte", external_id="q-1", attributes={"n": Decimal("1.5")}
    )
    lines = tuple(CostLine(usage, Decimal(a), "USD", "list_price", PRICE) for a in amounts)
    missing = tuple(
        Unpriced(Usage("postgres", "queries", Decimal(1), "query"), "no price") for _ in range(unpriced)
    )
    return CostResult(
        TaskTry("sales", task_id, "manual__1", try_number, -1, "01a1-run"),
        capture_id,
        "success",
        end - dt.timedelta(minutes=5),
        end,
        "worker-1",
        lines,
        missing,
    )


def test_schema_is_migrated_with_its_own_version_table(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.schema_revision(engine) == SCHEMA_REVISION
    inspector = sa.inspect(engine)
    assert {"cost_task_runs", "cost_usage", "cost_lines", VERSION_TABLE} <= set(inspector.get_table_names())
    fks = {fk["referred_table"] for fk in inspector.get_foreign_keys("cost_lines")}
    assert fks == {"cost_task_runs", "cost_usage"}
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("cost_task_runs")}
    assert ("end_time",) in indexed and ("dag_id", "end_time") in indexed
    store.ensure_schema(engine)  # a second call is a no-op


def test_store_writes_exact_amounts_and_keeps_unpriced_as_null(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.store(engine, make_result(amounts=("0.123456789", "7")))
    lines = ledger_rows(
        ledger_url,
        "SELECT amount_nanos, currency, status, price_ref, unpriced_reason FROM cost_lines ORDER BY id",
    )
    assert [r["amount_nanos"] for r in lines] == [123456789, 7_000_000_000, None]
    assert lines[2]["status"] == "unpriced" and lines[2]["unpriced_reason"] == "no price"
    assert lines[0]["price_ref"] == "2026.11.0:athena/data_scanned"
    usage = ledger_rows(ledger_url, "SELECT quantity, unit, external_id FROM cost_usage ORDER BY id")
    assert usage[0] == {"quantity": "1000000000", "unit": "byte", "external_id": "q-1"}
    run = ledger_rows(ledger_url, "SELECT status, ol_run_id, end_time FROM cost_task_runs")[0]
    assert run["status"] == "partial" and run["ol_run_id"] == "01a1-run"


def test_same_capture_twice_is_a_no_op_and_a_new_capture_replaces(ledger_url):
    engine = store.get_engine(ledger_url)
    assert store.store(engine, make_result("c1", amounts=("1",)))
    assert not store.store(engine, make_result("c1", amounts=("99",)))
    assert ledger_rows(ledger_url, "SELECT amount_nanos FROM cost_lines WHERE amount_nanos IS NOT NULL") == [
        {"amount_nanos": 10**9}
    ]
    assert store.store(engine, make_result("c2", amounts=("2", "3"), unpriced=0))
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_task_runs")) == 1
    amounts = sorted(
        r["amount_nanos"] for r in ledger_rows(ledger_url, "SELECT amount_nanos FROM cost_lines")
    )
    assert amounts == [2 * 10**9, 3 * 10**9]
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_usage")) == 2  # old usage gone with its lines


def test_a_failure_mid_write_leaves_nothing_half_written(ledger_url, monkeypatch):
    engine = store.get_engine(ledger_url)
    store.store(engine, make_result("c1", amounts=("1",)))

    def broken_line_values(_line):
        raise ValueError("disk full")

    monkeypatch.setattr(store, "_line_values", broken_line_values)
    with pytest.raises(ValueError):
        store.store(engine, make_result("c2", task_id="other"))
    with pytest.raises(ValueError):
        store.store(engine, make_result("c3"))  # a replacement of the first try fails too
    assert [r["capture_id"] for r in ledger_rows(ledger_url, "SELECT capture_id FROM cost_task_runs")] == [
        "c1"
    ]
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_lines")) == 2


def test_unreachable_postgres_gives_a_clear_error_without_the_password():
    url = f"postgresql+psycopg2://cost:hunter2@127.0.0.1:{closed_port()}/ledger"
    with pytest.raises(store.LedgerError) as raised:
        store.get_engine(url, timeout=2)
    message = str(raised.value)
    assert "unreachable" in message and "127.0.0.1" in message and "hunter2" not in message


def test_connection_id_is_resolved_through_airflow(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_COST_LEDGER", "postgres://cost:pw@db.internal:5432/ledger")
    assert store.resolve_url("cost_ledger", "sqlite://") == "postgresql://cost:pw@db.internal:5432/ledger"
    assert store.resolve_url("", "sqlite:///x.db") == "sqlite:///x.db"
    with pytest.raises(store.LedgerError, match="no_such_conn"):
        store.resolve_url("no_such_conn", "sqlite://")


# ---------------------------------------------------------------- attribution and daily totals (0004)


def attributed(result: CostResult, **attribution) -> CostResult:
    return dataclasses.replace(result, task_try=dataclasses.replace(result.task_try, **attribution))


def daily_totals(url: str) -> dict[tuple, tuple[int, int, int]]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(schema.daily_totals)).all()
    finally:
        engine.dispose()
    return {tuple(row[:7]): (row.amount_nanos, row.lines, row.unpriced) for row in rows}


def totals_from_lines(url: str) -> dict[tuple, tuple[int, int, int]]:
    """The daily totals as they must be: every line summed by its try's UTC end day and attribution."""
    engine = sa.create_engine(url)
    runs, lines = schema.task_runs, schema.lines
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(
                    runs.c.end_time,
                    runs.c.dag_id,
                    runs.c.task_id,
                    runs.c.owner,
                    runs.c.team,
                    lines.c.source,
                    lines.c.currency,
                    lines.c.amount_nanos,
                ).select_from(lines.join(runs, lines.c.task_run_id == runs.c.id))
            ).all()
    finally:
        engine.dispose()
    sums: dict[tuple, list[int]] = {}
    for end, dag_id, task_id, owner, team, source, currency, nanos in rows:
        key = (end.date(), dag_id, task_id, owner or "", team or "", source, currency or "")
        total = sums.setdefault(key, [0, 0, 0])
        total[0] += nanos or 0
        total[1] += 1
        total[2] += nanos is None
    return {key: tuple(values) for key, values in sums.items()}


def test_the_new_tables_and_indexes_exist(ledger_url):
    engine = store.get_engine(ledger_url)
    inspector = sa.inspect(engine)
    assert {"cost_task_run_labels", "cost_daily_totals", "cost_budget_alerts"} <= set(
        inspector.get_table_names()
    )
    assert {"owner", "team"} <= {c["name"] for c in inspector.get_columns("cost_task_runs")}
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes("cost_task_runs")}
    assert ("team", "end_time") in indexed and ("owner", "end_time") in indexed
    label_indexes = {tuple(ix["column_names"]) for ix in inspector.get_indexes("cost_task_run_labels")}
    assert ("kind", "key", "value") in label_indexes and ("task_run_id",) in label_indexes
    assert inspector.get_pk_constraint("cost_daily_totals")["constrained_columns"] == [
        "day",
        "dag_id",
        "task_id",
        "owner",
        "team",
        "source",
        "currency",
    ]
    unique = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("cost_budget_alerts")}
    assert ("budget", "period_start", "threshold", "channel") in unique


def test_each_try_carries_owner_team_tags_and_labels(ledger_url):
    engine = store.get_engine(ledger_url)
    tagged = attributed(
        make_result("c1"),
        owner="ana",
        team="marketing",
        dag_tags=("pii", "team:marketing"),
        labels=(("env", "prod"), ("product", "crm")),
    )
    assert store.store(engine, tagged)
    assert ledger_rows(ledger_url, "SELECT owner, team FROM cost_task_runs") == [
        {"owner": "ana", "team": "marketing"}
    ]
    labels = "SELECT kind, key, value FROM cost_task_run_labels ORDER BY kind, key"
    assert [tuple(r.values()) for r in ledger_rows(ledger_url, labels)] == [
        ("label", "env", "prod"),
        ("label", "product", "crm"),
        ("tag", "pii", ""),
        ("tag", "team:marketing", ""),
    ]
    # another capture of the same try replaces its attribution with the rest
    assert store.store(engine, attributed(make_result("c2"), owner="bob", labels=(("product", "erp"),)))
    assert ledger_rows(ledger_url, "SELECT owner, team FROM cost_task_runs") == [
        {"owner": "bob", "team": None}
    ]
    assert [tuple(r.values()) for r in ledger_rows(ledger_url, labels)] == [("label", "product", "erp")]


def test_daily_totals_mix_currencies_and_unpriced_lines_exactly(ledger_url):
    engine = store.get_engine(ledger_url)
    eur = CostLine(
        Usage("bigquery", "bytes_billed", Decimal(1), "byte"),
        Decimal("0.000000001"),
        "EUR",
        "list_price",
        PRICE,
    )
    mixed = make_result("c1", amounts=("0.123456789", "4611686018.427387903"), unpriced=2)
    mixed = attributed(dataclasses.replace(mixed, lines=(*mixed.lines, eur)), owner="ana", team="marketing")
    store.store(engine, mixed)
    # a try that ends at the last nano-second of the day and one at midnight fall on their own UTC days
    late = make_result(
        "c2", task_id="late", end=dt.datetime(2026, 11, 20, 23, 59, 59, 999999, dt.timezone.utc)
    )
    store.store(engine, late)
    store.store(
        engine,
        make_result(
            "c3", task_id="late", try_number=2, end=dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc)
        ),
    )
    day, next_day = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    assert daily_totals(ledger_url) == {
        (day, "sales", "load", "ana", "marketing", "athena", "USD"): (4611686018550844692, 2, 0),
        (day, "sales", "load", "ana", "marketing", "bigquery", "EUR"): (1, 1, 0),
        (day, "sales", "load", "ana", "marketing", "postgres", ""): (0, 2, 2),
        (day, "sales", "late", "", "", "athena", "USD"): (123456789, 1, 0),
        (day, "sales", "late", "", "", "postgres", ""): (0, 1, 1),
        (next_day, "sales", "late", "", "", "athena", "USD"): (123456789, 1, 0),
        (next_day, "sales", "late", "", "", "postgres", ""): (0, 1, 1),
    }
    assert daily_totals(ledger_url) == totals_from_lines(ledger_url)


def test_daily_totals_stay_exact_when_a_try_is_replaced(ledger_url):
    engine = store.get_engine(ledger_url)
    other = attributed(make_result("o1", task_id="other", amounts=("5",)), team="marketing")
    store.store(engine, other)
    first = attributed(make_result("c1", amounts=("0.123456789", "7"), unpriced=1), team="marketing")
    store.store(engine, first)
    before = daily_totals(ledger_url)
    assert not store.store(engine, first)  # the same capture again adds nothing
    assert daily_totals(ledger_url) == before
    # the replacement moves the try to another day, team and set of lines: nothing of it stays behind
    moved = make_result("c2", amounts=("2.000000001",), unpriced=0, end=T0 + dt.timedelta(days=1))
    store.store(engine, attributed(moved, team="finance"))
    day = T0.date()
    assert daily_totals(ledger_url) == {
        (day, "sales", "other", "", "marketing", "athena", "USD"): (5 * 10**9, 1, 0),
        (day, "sales", "other", "", "marketing", "postgres", ""): (0, 1, 1),
        (day + dt.timedelta(days=1), "sales", "load", "", "finance", "athena", "USD"): (2_000_000_001, 1, 0),
    }
    # and back, with the same key as the other try's rows: they add up
    store.store(engine, attributed(make_result("c3", amounts=("1",), unpriced=3), team="marketing"))
    assert daily_totals(ledger_url) == totals_from_lines(ledger_url)
    assert daily_totals(ledger_url)[(day, "sales", "load", "", "marketing", "postgres", "")] == (0, 3, 3)


def migrate_to(url: str, revision: str, down: bool = False) -> None:
    """Upgrade the ledger to `revision` (`down`: downgrade it)."""
    from pathlib import Path

    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            (command.downgrade if down else command.upgrade)(config, revision)
    finally:
        engine.dispose()


def test_migrating_a_0003_ledger_keeps_old_rows_as_none_and_backfills_exact_daily_totals(ledger_url):
    from airflow_cost_provider import report

    migrate_to(ledger_url, "0003")
    engine = sa.create_engine(ledger_url)
    big = 2**62 - 1  # sums near the 64-bit limit stay exact
    old_tries = [
        # (task, run, end, [(source, nanos, currency)])
        (
            "extract",
            "r1",
            dt.datetime(2026, 11, 20, 23, 59, 59, 999999, dt.timezone.utc),
            [
                ("athena", big, "USD"),
                ("athena", 123456789, "USD"),
                ("bigquery", 7, "EUR"),
                ("postgres", None, None),
                ("postgres", None, None),
            ],
        ),
        ("extract", "r2", dt.datetime(2026, 11, 21, tzinfo=dt.timezone.utc), [("athena", 1, "USD")]),
        ("vacuum", "r1", T0, [("postgres", None, None)]),
    ]
    with engine.begin() as conn:
        for task_id, run_id, end, items in old_tries:
            run = conn.execute(
                sa.insert(schema.task_runs).values(
                    dag_id="sales",
                    task_id=task_id,
                    run_id=run_id,
                    map_index=-1,
                    try_number=1,
                    capture_id=f"old-{task_id}-{run_id}",
                    state="success",
                    status="estimated",
                    start_time=end,
                    end_time=end,
                    recorded_at=end,
                )
            ).inserted_primary_key[0]
            for source, nanos, currency in items:
                usage_id = conn.execute(
                    sa.insert(schema.usage).values(
                        task_run_id=run, source=source, metric="m", quantity="1", unit="u", attributes={}
                    )
                ).inserted_primary_key[0]
                conn.execute(
                    sa.insert(schema.lines).values(
                        task_run_id=run,
                        usage_id=usage_id,
                        source=source,
                        metric="m",
                        amount_nanos=nanos,
                        currency=currency,
                        status="unpriced" if nanos is None else "estimated",
                    )
                )
    engine.dispose()

    engine = store.open_existing(ledger_url)  # what a report or a worker does with an older ledger
    assert store.schema_revision(engine) == SCHEMA_REVISION == "0011"
    day, next_day = dt.date(2026, 11, 20), dt.date(2026, 11, 21)
    assert daily_totals(ledger_url) == {
        (day, "sales", "extract", "", "", "athena", "USD"): (big + 123456789, 2, 0),
        (day, "sales", "extract", "", "", "bigquery", "EUR"): (7, 1, 0),
        (day, "sales", "extract", "", "", "postgres", ""): (0, 2, 2),
        (next_day, "sales", "extract", "", "", "athena", "USD"): (1, 1, 0),
        (day, "sales", "vacuum", "", "", "postgres", ""): (0, 1, 1),
    }
    assert ledger_rows(ledger_url, "SELECT DISTINCT owner, team FROM cost_task_runs") == [
        {"owner": None, "team": None}
    ]
    assert ledger_rows(ledger_url, "SELECT id FROM cost_task_run_labels") == []
    # reports show the old tries under (none), with the money they always had
    since, until = (
        dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc),
        dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc),
    )
    for by in ("team", "owner", "tag", "label:product"):
        result = report.cost_report(engine, by, since, until)
        key = by
        assert {(row.keys[key], row.currency, row.amount) for row in result.rows} == {
            ("(none)", "USD", store.from_nanos(big + 123456789 + 1)),
            ("(none)", "EUR", store.from_nanos(7)),
        }, by
    # a new capture of an old try takes the backfilled contribution back out exactly
    replacement = CostResult(
        TaskTry("sales", "extract", "r1", 1, -1, None, team="data"),
        "new",
        "success",
        T0,
        T0,
        "w",
        (),
        (),
    )
    assert store.store(engine, replacement)
    assert daily_totals(ledger_url) == totals_from_lines(ledger_url)
    assert (day, "sales", "extract", "", "", "athena", "USD") not in daily_totals(ledger_url)


def _migrate_in_a_worker(url: str, start, warnings) -> None:
    """One worker process: wait for the others, then open the ledger as a task's first write does."""
    import logging

    class Keep(logging.Handler):
        def emit(self, record):
            warnings.put(record.getMessage())

    logging.getLogger(store.__name__).addHandler(Keep(logging.WARNING))
    start.wait()
    store.get_engine(url, timeout=30)


def _fresh_mariadb_ledger(server, name: str) -> str:
    admin = sa.create_engine(f"mysql+pymysql://tester:tester@127.0.0.1:{server.port}/shop")
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return f"mysql+pymysql://tester:tester@127.0.0.1:{server.port}/{name}"


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_eight_workers_migrating_a_fresh_ledger_at_once_do_not_race(kind, tmp_path, request):
    import multiprocessing

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.db'}"
    elif kind == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = _fresh_mariadb_ledger(request.getfixturevalue("mariadb_server"), "ledger_migration_race")
    # spawned, not forked: a fork copies the locks that the suite's other threads may hold
    context = multiprocessing.get_context("spawn")
    start, warnings = context.Barrier(8), context.Queue()
    workers = [context.Process(target=_migrate_in_a_worker, args=(url, start, warnings)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0] * 8
    raced = []
    while not warnings.empty():
        raced.append(warnings.get())
    assert raced == []  # no worker hit the other's tables and recovered by luck
    assert ledger_rows(url, f"SELECT version_num FROM {VERSION_TABLE}") == [{"version_num": SCHEMA_REVISION}]


def test_an_older_package_writes_on_a_newer_schema(ledger_url):
    store.store(store.get_engine(ledger_url), make_result(capture_id="before"))
    store.dispose_engines()
    engine = sa.create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
        conn.execute(sa.text("CREATE TABLE cost_from_the_future (id INTEGER PRIMARY KEY)"))
    engine.dispose()
    assert store.store(store.get_engine(ledger_url), make_result(capture_id="after", task_id="next"))
    assert len(ledger_rows(ledger_url, "SELECT id FROM cost_task_runs")) == 2
    assert ledger_rows(ledger_url, f"SELECT version_num FROM {VERSION_TABLE}") == [{"version_num": "0099"}]


def test_a_newer_schema_without_a_table_this_package_writes_is_a_clear_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    store.get_engine(url)
    store.dispose_engines()
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '0099'"))
        conn.execute(sa.text("DROP TABLE cost_deferred_captures"))
    engine.dispose()
    with pytest.raises(store.LedgerError, match="at schema 0099, newer .* has no cost_deferred_captures"):
        store.get_engine(url)


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_server_connection_is_pinged_after_an_idle_while_not_at_each_checkout(kind, request, monkeypatch):
    """A connection idle for PING_AFTER_IDLE_SECONDS is pinged at checkout, and one the server dropped
    is replaced before use; one used a moment ago (a finalize's write, then its budgets) is not."""
    if kind == "postgresql":
        url, whoami, kill = (
            request.getfixturevalue("postgres_url"),
            "SELECT pg_backend_pid()",
            "pg_terminate_backend",
        )
    else:
        url = _fresh_mariadb_ledger(request.getfixturevalue("mariadb_server"), "ledger_idle_ping")
        whoami, kill = "SELECT CONNECTION_ID()", "KILL"
    engine = store.get_engine(url)
    admin = sa.create_engine(url, poolclass=sa.pool.NullPool)

    def backend() -> int:
        with engine.connect() as conn:
            return conn.execute(sa.text(whoami)).scalar()

    def drop(pid: int) -> None:  # what a server restart or an idle timeout does to the pooled connection
        with admin.connect() as conn:
            conn.execute(sa.text(f"SELECT {kill}({pid})" if kind == "postgresql" else f"KILL {pid}"))

    try:
        first = backend()
        drop(first)
        monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 0.0)  # idle for longer than that
        second = backend()  # the ping found it dropped: a new connection, and no error
        assert second != first
        monkeypatch.setattr(store, "PING_AFTER_IDLE_SECONDS", 60.0)
        drop(second)
        with pytest.raises(sa.exc.DBAPIError) as error:  # used a moment ago: sent without a ping
            backend()
        assert error.value.connection_invalidated
        assert backend() not in (first, second)  # and replaced at once
    finally:
        admin.dispose()
        store.dispose_engines()


def test_a_read_connection_runs_no_transaction_and_goes_back_to_the_pool_as_it_came(ledger_url):
    engine = store.get_engine(ledger_url)
    with store.read_connection(engine) as conn:
        raw = conn.connection.dbapi_connection
        if engine.dialect.name == "postgresql":  # the driver's flag: no BEGIN, and no SET to set it
            assert raw.autocommit is True
        assert conn.execute(sa.text("SELECT count(*) FROM cost_task_runs")).scalar() == 0
    with engine.connect() as conn:  # the same pooled connection, transactional again
        if engine.dialect.name == "postgresql":
            assert conn.connection.dbapi_connection is raw and raw.autocommit is False
        conn.execute(sa.text("DELETE FROM cost_budget_settled"))
        conn.rollback()
    store.dispose_engines()
