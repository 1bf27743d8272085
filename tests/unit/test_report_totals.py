"""Reports read a period's whole UTC days from cost_daily_totals (and cost_daily_unpriced) and only
the hours at its edges from lines. On random ledgers (two currencies, unpriced lines of many causes,
re-captured tries, Snowflake lines reconciled against a bill, reconciled again after a restated day,
a reconciled try captured again), the daily totals equal the lines' sums column for column, and
every report equals the report read from lines alone, row for row: amounts, statuses, line counts,
reconciled amounts, totals, unpriced causes."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import random
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from airflow_cost_provider import conf, report
from airflow_cost_provider.capture.identity import TaskTry
from airflow_cost_provider.cli import main
from airflow_cost_provider.ledger import store
from airflow_cost_provider.ledger.schema import daily_totals, daily_unpriced, lines, reason_key, task_runs
from airflow_cost_provider.pricing import CostLine, Price, Unpriced, Usage
from airflow_cost_provider.result import CostResult
from tests.support.billing_rows import add_billed, set_billed_amount

UTC = dt.timezone.utc
DAY = dt.timedelta(days=1)
FIRST = dt.datetime(2026, 11, 17, tzinfo=UTC)
DAYS = 5
WAREHOUSES = ("WH_ETL", "WH_BI")
REASONS = ("no price for postgres/instance_time", "", "unknown unit 'slot-hour'", "a long reason " * 30)
GROUPINGS = (
    "dag",
    "task",
    "source",
    "day",
    "owner",
    "team",
    "dag,day",
    "team,source",
    "task,day",
    "owner,team",
)


def _amount(rng: random.Random) -> Decimal:
    return Decimal(rng.randrange(1, 10**10)).scaleb(-9)


def _line(rng: random.Random, at: dt.datetime) -> CostLine:
    kind = rng.random()
    if kind < 0.45:  # a warehouse's credits, which the bill below reconciles
        credits = Decimal(rng.randint(1, 20))
        usage = Usage(
            "snowflake", "credits", credits, "credit", resource=rng.choice(WAREHOUSES), start_time=at
        )
        amount, currency = credits * 3, "USD"
    elif kind < 0.8:
        usage = Usage(
            "airflow_worker", "cpu_time", Decimal(rng.randint(1, 900)), "vCPU-second", start_time=at
        )
        amount, currency = _amount(rng), rng.choice(("USD", "USD", "EUR"))
    else:
        usage = Usage("bigquery", "bytes_billed", Decimal(rng.randint(1, 10**12)), "byte", start_time=at)
        amount, currency = _amount(rng), "USD"
    price = Price(usage.source, usage.metric, usage.unit, amount / usage.quantity, currency, "v")
    return CostLine(usage, amount, currency, "list_price", price)


def _unpriced(rng: random.Random, at: dt.datetime) -> Unpriced:
    source, metric, unit = rng.choice(
        [
            ("postgres", "instance_time", "second"),
            ("snowflake", "credits", "credit"),
            ("trino", "cpu_time", "ms"),
        ]
    )
    resource = rng.choice(WAREHOUSES) if source == "snowflake" else None
    usage = Usage(source, metric, Decimal(rng.randint(1, 50)), unit, resource=resource, start_time=at)
    return Unpriced(usage, rng.choice(REASONS))


def _result(rng: random.Random, number: int, try_number: int = 1) -> CostResult:
    end = FIRST + dt.timedelta(minutes=rng.randrange(DAYS * 24 * 60))
    start = end - dt.timedelta(minutes=rng.randint(1, 30))
    tt = TaskTry(
        rng.choice(("sales", "ads", "ml")),
        rng.choice(("load", "merge", "score")),
        f"r{number}",
        try_number,
        -1,
        None,
        owner=rng.choice((None, "ana", "bob")),
        team=rng.choice((None, "data", "ml")),
    )
    priced = tuple(_line(rng, start) for _ in range(rng.randint(0, 3)))
    missing = tuple(_unpriced(rng, start) for _ in range(rng.choice((0, 0, 1, 2))))
    return CostResult(tt, f"{rng.getrandbits(128):032x}", "success", start, end, "w", priced, missing)


def _recaptured(rng: random.Random, result: CostResult, number: int) -> CostResult:
    """Another capture of the same try: other lines, end and attribution."""
    other = _result(rng, number, result.task_try.try_number)
    tt = TaskTry(
        result.task_try.dag_id,
        result.task_try.task_id,
        result.task_try.run_id,
        result.task_try.try_number,
        -1,
        None,
        owner=other.task_try.owner,
        team=other.task_try.team,
    )
    return CostResult(
        tt, other.capture_id, "success", other.start_time, other.end_time, "w", other.lines, other.unpriced
    )


def _cli(*args: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    assert code == 0, err.getvalue()
    return out.getvalue()


def _reconcile(url: str) -> dict:
    since, until = FIRST.date(), (FIRST + 3 * DAY).date()
    return json.loads(
        _cli("reconcile", "--ledger", url, "--since", str(since), "--until", str(until), "-o", "json")
    )


@pytest.fixture
def no_rules(monkeypatch):
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__BILLING_RESOURCES", raising=False)
    monkeypatch.delenv("AIRFLOW__COST_PROVIDER__RECONCILE_MODE", raising=False)
    conf.clear_cache()
    yield
    conf.clear_cache()
    store.dispose_engines()


def _fill(url: str, rng: random.Random, tries: int = 70, labelled=None) -> sa.Engine:
    """Random tries, some captured again; a bill of the warehouses' first three days, reconciled,
    restated and reconciled again; then tries captured again after reconciling. `labelled(rng,
    result)`, if given, gives each capture its tags and labels before it is stored."""
    engine = store.get_engine(url)
    label = labelled or (lambda _rng, result: result)
    results = []
    for number in range(tries):
        result = label(rng, _result(rng, number, try_number=rng.choice((1, 1, 2))))
        assert store.store(engine, result)
        results.append(result)
    for number, result in enumerate(results):
        if rng.random() < 0.15:
            assert store.store(engine, label(rng, _recaptured(rng, result, number)))
    for offset in range(3):
        for warehouse in WAREHOUSES:
            amount = str(rng.randint(50, 400))
            add_billed(engine, (FIRST + offset * DAY).date(), warehouse, amount, provider="snowflake", quantity="100", unit="Credits")  # fmt: skip
    assert _reconcile(url)
    set_billed_amount(engine, "WH_ETL", (FIRST + DAY).date(), "999")
    assert _reconcile(url)
    reconciled_tries = _reconciled_tries(engine)
    assert reconciled_tries, "the bill reconciled no line: the test would not test reconciled lines"
    for run_id in sorted(reconciled_tries)[:2]:
        found = next(r for r in results if r.task_try.run_id == run_id)
        assert store.store(engine, label(rng, _recaptured(rng, found, int(run_id[1:]))))
    return engine


def _reconciled_tries(engine) -> set[str]:
    with engine.connect() as conn:
        return set(
            conn.execute(
                sa.select(task_runs.c.run_id)
                .join(lines, lines.c.task_run_id == task_runs.c.id)
                .where(lines.c.reconciled_nanos.is_not(None))
            ).scalars()
        )


def _nonzero(rows: dict) -> dict:
    return {key: values for key, values in rows.items() if any(values)}


def _expected_totals(engine) -> tuple[dict, dict]:
    """cost_daily_totals and cost_daily_unpriced as they must be, summed from the lines in Python."""
    with engine.connect() as conn:
        found = conn.execute(
            sa.select(
                task_runs.c.end_time,
                task_runs.c.dag_id,
                task_runs.c.task_id,
                task_runs.c.owner,
                task_runs.c.team,
                lines.c.source,
                lines.c.metric,
                lines.c.currency,
                lines.c.amount_nanos,
                lines.c.reconciled_nanos,
                lines.c.reconciled_currency,
                lines.c.unpriced_reason,
            ).join(task_runs, lines.c.task_run_id == task_runs.c.id)
        ).all()
    totals: dict[tuple, list[int]] = {}
    causes: dict[tuple, list] = {}
    for (
        end,
        dag,
        task,
        owner,
        team,
        source,
        metric,
        currency,
        nanos,
        reconciled,
        rec_currency,
        reason,
    ) in found:
        base = (end.date(), dag, task, owner or "", team or "", source)
        own = totals.setdefault((*base, currency or ""), [0] * 6)
        own[1] += 1
        own[2] += nanos is None
        own[3] += nanos or 0
        if reconciled is not None:
            own[4] += reconciled
            own[5] += 1
            totals.setdefault((*base, rec_currency), [0] * 6)[0] += reconciled
        else:
            own[0] += nanos or 0
        if nanos is None:
            entry = causes.setdefault(
                (end.date(), dag, task, source, metric, reason_key(reason or "")), [reason or "", 0]
            )
            entry[1] += 1
    return _nonzero({k: tuple(v) for k, v in totals.items()}), {k: tuple(v) for k, v in causes.items()}


def _kept_totals(engine) -> tuple[dict, dict]:
    with engine.connect() as conn:
        totals = {
            (row.day, *row[1:7]): (
                row.amount_nanos,
                row.lines,
                row.unpriced,
                row.estimate_nanos,
                row.reconciled_nanos,
                row.reconciled_lines,
            )
            for row in conn.execute(sa.select(daily_totals))
        }
        causes = {tuple(row[:6]): (row.reason, row.lines) for row in conn.execute(sa.select(daily_unpriced))}
    return _nonzero(totals), causes


class Statements:
    """The SQL an engine sends while active."""

    def __init__(self, engine) -> None:
        self.sent: list[str] = []
        self.engine = engine

    def __enter__(self):
        sa.event.listen(self.engine, "before_cursor_execute", self._record)
        return self

    def __exit__(self, *exc):
        sa.event.remove(self.engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, *args):
        self.sent.append(statement)

    def read(self, table: str) -> bool:
        return any(f"FROM {table}" in statement for statement in self.sent)


def _periods(rng: random.Random) -> list[tuple[dt.datetime, dt.datetime]]:
    whole = [(FIRST, FIRST + DAYS * DAY), (FIRST + DAY, FIRST + 3 * DAY), (FIRST - 7 * DAY, FIRST)]
    ragged = []
    for _ in range(6):
        since = FIRST + dt.timedelta(minutes=rng.randrange(-600, DAYS * 24 * 60))
        ragged.append((since, since + dt.timedelta(minutes=rng.randrange(60, 4 * 24 * 60))))
    # within one UTC day: lines only
    ragged.append((FIRST + DAY + dt.timedelta(hours=3), FIRST + DAY + dt.timedelta(hours=20)))
    return whole + ragged


def _filters(rng: random.Random) -> dict:
    choices = [
        {},
        {"dags": ["sales"]},
        {"sources": ["snowflake", "postgres"]},
        {"tasks": ["load", "score"], "dags": ["ads", "ml"]},
        {"visible_dags": {"sales", "ml"}},
        {"visible_dags": set()},
    ]
    return rng.choice(choices)


@pytest.mark.parametrize("seed", [7, 2026])
def test_totals_equal_lines(ledger_url, no_rules, monkeypatch, seed):
    rng = random.Random(seed)
    engine = _fill(ledger_url, rng)
    assert _kept_totals(engine) == _expected_totals(engine)

    compared = read_totals = 0
    for since, until in _periods(rng):
        for by in GROUPINGS:
            filters = _filters(rng)
            with Statements(engine) as statements:
                from_totals = report.cost_report(engine, by, since, until, **filters)
            with monkeypatch.context() as patched:
                patched.setattr(report, "TOTALS_KEYS", frozenset())
                with Statements(engine) as on_lines:
                    from_lines = report.cost_report(engine, by, since, until, **filters)
            assert not on_lines.read("cost_daily_totals")
            assert from_totals == from_lines, (by, since, until, filters)
            read_totals += statements.read("cost_daily_totals")
            compared += bool(from_lines.rows)
    assert compared >= 50 and read_totals >= 30  # most reports had rows, and many read the totals

    # what the Costs page asks at once, and the period before it
    since, until = FIRST + dt.timedelta(hours=5), FIRST + 4 * DAY + dt.timedelta(hours=7)
    wanted = ["source", "day,source", "dag", "dag,day", "task", "task,day", "team", "owner"]
    tops = [None, None, 2, None, 2, None, None, None]
    overview = report.cost_reports(engine, wanted, since, until, tops=tops, listed_only=("task,day", "task"))
    before = report.period_totals(engine, since - 2 * DAY, since)
    with monkeypatch.context() as patched:
        patched.setattr(report, "TOTALS_KEYS", frozenset())
        assert overview == report.cost_reports(
            engine, wanted, since, until, tops=tops, listed_only=("task,day", "task")
        )
        assert before == report.period_totals(engine, since - 2 * DAY, since)
    assert any(row.reconciled is not None for row in overview[2].rows)
    assert any(total.currency is None for total in overview[0].totals)
    assert {total.currency for total in overview[0].totals} >= {"USD", "EUR"}


def test_a_period_with_no_costs_names_where_the_ledger_has_them(ledger_url, no_rules, monkeypatch):
    engine = _fill(ledger_url, random.Random(5), tries=20)
    empty = (FIRST + 40 * DAY, FIRST + 50 * DAY)
    found = report.cost_report(engine, "dag", *empty)
    with monkeypatch.context() as patched:
        patched.setattr(report, "TOTALS_KEYS", frozenset())
        assert found == report.cost_report(engine, "dag", *empty)
    assert found.rows == [] and found.data_range is not None
    assert found.data_range.first >= FIRST.date() and found.data_range.last < (FIRST + DAYS * DAY).date()


def test_a_ledger_migrated_to_0009_reports_as_before(ledger_url, no_rules, monkeypatch):
    """The new columns and the unpriced causes are filled from the lines (reconciled ones included)
    when a ledger of 0008 is migrated."""
    from alembic import command
    from alembic.config import Config

    engine = _fill(ledger_url, random.Random(11), tries=40)
    expected = _expected_totals(engine)
    config = Config()
    config.set_main_option("script_location", str(Path(store.__file__).with_name("migrations")))
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0008")
    assert store.schema_revision(engine) == "0008"
    assert "cost_daily_unpriced" not in sa.inspect(engine).get_table_names()
    store.dispose_engines()
    engine = store.get_engine(ledger_url)  # migrates to head
    assert store.schema_revision(engine) == "0011"
    assert _kept_totals(engine) == expected
    since, until = FIRST, FIRST + DAYS * DAY
    found = report.cost_report(engine, "dag,source", since, until)
    with monkeypatch.context() as patched:
        patched.setattr(report, "TOTALS_KEYS", frozenset())
        assert found == report.cost_report(engine, "dag,source", since, until)
    assert found.unpriced and any(row.reconciled is not None for row in found.rows)
