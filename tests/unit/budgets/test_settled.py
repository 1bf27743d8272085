"""The settled-spend cache: what ended more than a quarter of an hour ago is read once and kept (in
memory and in the ledger, where other task processes and workers read it), the recent days read again every hour and all days
every day; today is always read live; and evaluating a try's budgets together equals evaluating each."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from decimal import Decimal

import pytest
import sqlalchemy as sa

from airflow_cost_provider.budgets import evaluate as evaluation
from airflow_cost_provider.budgets import settled
from airflow_cost_provider.budgets.evaluate import evaluate, evaluate_all
from airflow_cost_provider.budgets.model import parse_budgets
from airflow_cost_provider.ledger.schema import budget_settled
from tests.unit.budgets.conftest import UTC, cost, keep, line

NOW = dt.datetime(2026, 12, 20, 12, tzinfo=UTC)
DAY = dt.timedelta(days=1)


def budget(scope: str = "{}"):
    (parsed,) = parse_budgets(
        f"budgets:\n  - {{name: b, scope: {scope}, period: monthly, amount: '1000', currency: USD}}", "b.yaml"
    )
    return parsed


@pytest.fixture
def reads(monkeypatch):
    """How many times the ledger was asked for sums."""
    counted = {"queries": 0}
    original = evaluation._sums_many

    def counting(conn, requests, windows=(), runs=(), now=None, unread=()):
        if any(ranges or pieces for _, ranges, pieces in requests):
            counted["queries"] += 1
        return original(conn, requests, windows, runs, now, unread)

    monkeypatch.setattr(evaluation, "_sums_many", counting)
    return counted


@pytest.fixture
def clock(monkeypatch):
    """The cache's wall clock, moved by hand."""
    moment = {"now": 1_000_000.0}
    monkeypatch.setattr(settled, "_wall_clock", lambda: moment["now"])
    return moment


def test_settled_days_are_read_once_and_today_every_time(engine, reads, clock):
    keep(engine, cost("d", "t", "old", NOW - 5 * DAY, [line("x", "5")]))
    assert evaluate(engine, budget(), NOW).spent_amount == 5
    assert reads["queries"] == 2  # the settled days (kept), then today
    keep(engine, cost("d", "t", "now", NOW - dt.timedelta(minutes=1), [line("x", "1")]))
    assert evaluate(engine, budget(), NOW).spent_amount == 6  # today: always read
    assert reads["queries"] == 3


def test_a_past_day_changed_later_shows_within_the_hour_or_the_day(engine, clock):
    keep(engine, cost("d", "t", "recent", NOW - 2 * DAY, [line("x", "5")]))
    keep(engine, cost("d", "t", "older", NOW - 10 * DAY, [line("x", "7")]))
    assert evaluate(engine, budget(), NOW).spent_amount == 12
    # both captures replaced (a new capture of the same tries)
    keep(engine, cost("d", "t", "recent", NOW - 2 * DAY, [line("x", "50")], capture="again"))
    keep(engine, cost("d", "t", "older", NOW - 10 * DAY, [line("x", "70")], capture="again"))
    assert evaluate(engine, budget(), NOW).spent_amount == 12  # kept
    clock["now"] += settled.MAX_AGE_SECONDS + 1
    assert evaluate(engine, budget(), NOW).spent_amount == 50 + 7  # the last three days again
    clock["now"] += settled.FULL_AGE_SECONDS
    assert evaluate(engine, budget(), NOW).spent_amount == 50 + 70  # every day again


def test_a_new_task_process_reads_the_kept_days_from_the_ledger(engine, reads):
    keep(engine, cost("d", "t", "old", NOW - 5 * DAY, [line("x", "5")]))
    evaluate(engine, budget(), NOW)
    with engine.connect() as conn:
        (kept,) = conn.execute(sa.select(budget_settled.c.cache_key, budget_settled.c.payload)).all()
    assert len(kept.cache_key) == 32 and json.loads(kept.payload)[4][str((NOW - 5 * DAY).date())]
    settled.clear()  # what a new process starts with
    reads["queries"] = 0
    assert evaluate(engine, budget(), NOW).spent_amount == 5
    assert reads["queries"] == 1  # today only


def test_processes_share_one_row_per_scope_and_a_broken_row_costs_a_read(engine, reads):
    keep(engine, cost("d", "t", "old", NOW - 5 * DAY, [line("x", "5")]))
    evaluate(engine, budget(), NOW)
    settled.clear()
    evaluate(engine, budget(), NOW)  # read from the row, written again only when it changes
    with engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(budget_settled)).scalar() == 1
        conn.execute(sa.update(budget_settled).values(payload="{not json"))
    settled.clear()
    reads["queries"] = 0
    assert evaluate(engine, budget(), NOW).spent_amount == 5
    assert reads["queries"] == 2  # the settled days again, then today
    with engine.connect() as conn:
        assert conn.execute(sa.select(budget_settled.c.payload)).scalar().startswith("[")  # repaired


def test_today_by_the_hour_on_the_lines_path(engine, reads, clock):
    tag = "{tag: t}"
    keep(engine, cost("d", "t", "morning", NOW - dt.timedelta(hours=5), [line("x", "2")], tags=("t",)))
    assert evaluate(engine, budget(tag), NOW).spent_amount == 2
    keep(engine, cost("d", "t", "noon", NOW - dt.timedelta(minutes=2), [line("x", "3")], tags=("t",)))
    reads["queries"] = 0
    assert evaluate(engine, budget(tag), NOW).spent_amount == 5
    assert reads["queries"] == 1  # the settled hours kept: only the last ones read


def test_a_period_in_another_zone_keeps_its_settled_edge(engine, clock):
    berlin = dataclasses.replace(budget("{}"), timezone="Europe/Berlin")
    keep(engine, cost("d", "t", "edge", dt.datetime(2026, 11, 30, 23, 30, tzinfo=UTC), [line("x", "4")]))
    keep(engine, cost("d", "t", "before", dt.datetime(2026, 11, 30, 22, 30, tzinfo=UTC), [line("x", "100")]))
    assert evaluate(engine, berlin, NOW).spent_amount == 4
    assert evaluate(engine, berlin, NOW).spent_amount == 4  # from the kept edge


def test_evaluating_together_equals_evaluating_each(engine):
    budgets = parse_budgets(
        """
budgets:
  - {name: all, period: monthly, amount: '100', currency: USD, thresholds: [{actual: 1%}, {forecast: 50%}]}
  - {name: team, scope: {team: a}, period: weekly, timezone: America/New_York, amount: '10', currency: USD,
     thresholds: [{anomaly: {run_cost_vs_median: 2, last_runs: 3}}, {anomaly: {daily_mad: 2}}]}
  - {name: tag, scope: {tag: t}, period: daily, timezone: Asia/Kolkata, amount: '5', currency: USD}
  - {name: dag, scope: {dag_id: d, source: x}, period: quarterly, amount: '500', currency: USD,
     thresholds: [{anomaly: {run_cost_vs_median: 3}}]}
""",
        "b.yaml",
    )
    for offset in range(12, 0, -1):
        end = NOW - offset * DAY
        keep(
            engine, cost("d", "t", f"r{offset}", end, [line("x", "1"), line("y", "2")], team="a", tags=("t",))
        )
    keep(
        engine,
        cost("d", "t", "today", NOW - dt.timedelta(minutes=3), [line("x", "9")], team="a", tags=("t",)),
    )
    run = ("d", "today")
    together = evaluate_all(engine, budgets, NOW, run=run)
    settled.clear()
    each = [evaluate(engine, b, NOW, run=run) for b in budgets]
    assert together == each
    assert [s.spent_amount for s in together] == [
        Decimal(12 * 3 + 9),
        Decimal(6 * 3 + 9),
        Decimal(9),
        Decimal(12 + 9),
    ]
    assert [a.key for a in together[1].anomalies] == ["anomaly:day:2026-12-20", "anomaly:run:d/today"]


def test_a_task_end_reads_spend_storage_and_runs_in_one_statement_and_one_round_trip(engine, clock, request):
    """Once the settled days are kept, the budgets of a try cost one statement (top contributors
    aside, read when something is crossed): today's spend, the imported storage costs of an
    everything budget and the run rule's latest runs together, sent without BEGIN or ROLLBACK; and
    it answers as evaluating each budget alone does."""
    text = (
        "budgets:\n"
        "  - {name: all, period: monthly, amount: '1000', currency: USD}\n"
        "  - name: runs\n    scope: {dag_id: d}\n    period: monthly\n    amount: '1000'\n    currency: USD\n"
        "    thresholds: [{anomaly: {run_cost_vs_median: 2, last_runs: 5}}]\n"
    )
    budgets = parse_budgets(text, "b.yaml")
    for n in range(5):
        keep(engine, cost("d", "t", f"r{n}", NOW - (5 - n) * DAY, [line("x", "1")]))
    keep(engine, cost("d", "t", "now", NOW - dt.timedelta(minutes=1), [line("x", "9")]))
    first = evaluate_all(engine, budgets, NOW, run=("d", "now"), contributors=False)
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()).upper())

    server = request.getfixturevalue("postgres_server") if engine.dialect.name == "postgresql" else None
    logged = len(server.statements()) if server else 0
    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        again = evaluate_all(engine, budgets, NOW, run=("d", "now"), contributors=False)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    if server is not None:  # what the server received: no ping (the connection was used a moment
        # ago), no BEGIN or ROLLBACK, no SET of an isolation level: the statement alone
        received = [" ".join(s.split()).upper() for s in server.statements()[logged:]]
        assert len(received) == 1 and "UNION ALL" in received[0], received
    assert len(sent) == 1 and "UNION ALL" in sent[-1]
    assert "COST_STORAGE_COSTS" in sent[-1] and "LATEST_0" in sent[-1]
    assert [(s.spent, s.anomalies) for s in again] == [(s.spent, s.anomalies) for s in first]
    assert again[0].spent_amount == 14 and [a.subject for a in again[1].anomalies] == ["d/now"]
    with engine.connect() as conn:  # the statements one by one
        alone = [evaluate(conn, budget, NOW, run=("d", "now"), contributors=False) for budget in budgets]
    assert [(s.spent, s.anomalies) for s in again] == [(s.spent, s.anomalies) for s in alone]


LATER_BUDGETS = """
budgets:
  - {name: all-berlin, period: monthly, timezone: Europe/Berlin, amount: '1000', currency: USD,
     thresholds: [{actual: 50%}, {forecast: 100%}]}
  - {name: team-ny, scope: {team: a}, period: weekly, timezone: America/New_York, amount: '100', currency: USD,
     thresholds: [{anomaly: {run_cost_vs_median: 2, last_runs: 3}}, {anomaly: {daily_mad: 2}}]}
  - {name: tag, scope: {tag: t}, period: monthly, amount: '100', currency: USD}
  - {name: label-tokyo, scope: {label: {env: prod}}, period: quarterly, timezone: Asia/Tokyo, amount: '100',
     currency: USD}
  - {name: tag-kolkata, scope: {tag: t, team: a}, period: daily, timezone: Asia/Kolkata, amount: '5', currency: USD}
  - {name: dag-source, scope: {dag_id: d, source: x}, period: quarterly, amount: '500', currency: USD}
"""


@pytest.mark.parametrize("later", [False, True], ids=["none", "later"])
def test_parts_after_now_are_exact(engine, reads, monkeypatch, later):
    """The parts a task end would read after its moment (the days after today of a tag or label
    scope, the end of a period in another time zone) are left out of its statement; the latest end
    of a try decides whether they are read after all. Either way every scope and period spends what
    reading all of them gives, and what evaluating each budget alone gives."""
    _parts_after_now(engine, reads, monkeypatch, later)


def test_parts_after_now_on_mariadb(mariadb_server, reads, monkeypatch):
    from airflow_cost_provider.ledger import store
    from tests.unit.test_ledger import _fresh_mariadb_ledger

    engine = store.get_engine(_fresh_mariadb_ledger(mariadb_server, "ledger_budget_parts_after_now"))
    try:
        _parts_after_now(engine, reads, monkeypatch, later=True)
    finally:
        store.dispose_engines()


def _parts_after_now(engine, reads, monkeypatch, later: bool) -> None:
    budgets = parse_budgets(LATER_BUDGETS, "b.yaml")
    who = {"team": "a", "tags": ("t",), "labels": (("env", "prod"),)}
    for offset in range(12, 0, -1):
        keep(
            engine, cost("d", "t", f"r{offset}", NOW - offset * DAY, [line("x", "1"), line("y", "2")], **who)
        )
    keep(engine, cost("d", "t", "today", NOW - dt.timedelta(minutes=3), [line("x", "9")], **who))
    if later:  # a worker whose clock runs ahead, or a status asked for a past moment
        keep(engine, cost("d", "t", "ahead", NOW + 5 * DAY, [line("x", "20")], **who))  # a later UTC day
        keep(engine, cost("e", "t", "edge", dt.datetime(2026, 12, 31, 22, tzinfo=UTC), [line("x", "300")]))
    run = ("d", "today")
    evaluate_all(engine, budgets, NOW, run=run)  # the settled days kept
    reads["queries"] = 0
    fast = evaluate_all(engine, budgets, NOW, run=run)
    assert reads["queries"] == (2 if later else 1)  # the parts after now read only when a try is there
    each = [evaluate(engine, b, NOW, run=run) for b in budgets]
    settled.clear()
    monkeypatch.setattr(  # the reference: every part read in the one statement, nothing kept
        evaluation,
        "_split_later",
        lambda requests, now: (requests, [(s, [], []) for s, _, _ in requests], None),
    )
    everything = evaluate_all(engine, budgets, NOW, run=run)
    assert fast == everything == each
    spent = {status.budget.name: status.spent_amount for status in fast}
    extra = 20 if later else 0
    assert spent == {
        "all-berlin": Decimal(12 * 3 + 9) + extra + (300 if later else 0),
        "team-ny": Decimal(6 * 3 + 9),  # the week from Monday 2026-12-14, New York time
        "tag": Decimal(12 * 3 + 9) + extra,
        "label-tokyo": Decimal(12 * 3 + 9) + extra,
        "tag-kolkata": Decimal(9),
        "dag-source": Decimal(12 + 9) + extra,
    }


def test_budgets_of_one_scope_read_its_days_once(engine):
    """Budgets of the same scope over other periods and time zones share one read of its days (one
    part of the statement per scope), and each still spends what it spends alone."""
    budgets = parse_budgets(
        """
budgets:
  - {name: all-month, period: monthly, amount: '1000', currency: USD}
  - {name: all-day-kolkata, period: daily, timezone: Asia/Kolkata, amount: '1000', currency: USD}
  - {name: all-quarter-berlin, period: quarterly, timezone: Europe/Berlin, amount: '1000', currency: USD}
  - {name: team-week, scope: {team: a}, period: weekly, amount: '100', currency: USD}
  - {name: team-day, scope: {team: a}, period: daily, amount: '100', currency: USD,
     thresholds: [{anomaly: {daily_mad: 2}}]}
""",
        "b.yaml",
    )
    for offset in range(40, 0, -1):
        team = "a" if offset % 2 else "b"
        keep(engine, cost("d", "t", f"r{offset}", NOW - offset * DAY, [line("x", str(offset))], team=team))
    keep(engine, cost("d", "t", "today", NOW - dt.timedelta(minutes=3), [line("x", "100")], team="a"))
    keep(engine, cost("d", "t", "night", NOW - dt.timedelta(hours=11), [line("x", "1000")], team="b"))
    evaluate_all(engine, budgets, NOW)
    sent: list[str] = []

    def record(conn, cursor, statement, *args):
        sent.append(" ".join(statement.split()).upper())

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        together = evaluate_all(engine, budgets, NOW, contributors=False)
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
    assert len(sent) == 1 and sent[0].count("FROM COST_DAILY_TOTALS") == 2  # everything, team a
    settled.clear()
    each = [evaluate(engine, b, NOW, contributors=False) for b in budgets]
    assert together == each
    assert [s.spent_amount for s in together] == [
        Decimal(sum(range(1, 20)) + 100 + 1000),  # December to the 20th
        Decimal(100 + 1000),  # the Kolkata day from 18:30 UTC on the 19th
        Decimal(sum(range(1, 41)) + 100 + 1000),  # the quarter from 22:00 UTC on 30 September
        Decimal(1 + 3 + 5 + 100),  # team a, the week from Monday the 14th
        Decimal(100),
    ]


SAME_KEYS = """
budgets:
  - {{name: team, scope: {{team: {team}}}, period: monthly, amount: '1000', currency: USD}}
  - {{name: tag, scope: {{tag: {tag}}}, period: monthly, timezone: Europe/Berlin, amount: '1000', currency: USD}}
  - {{name: label, scope: {{label: {{env: {env}}}}}, period: weekly, amount: '1000', currency: USD}}
  - {{name: runs, scope: {{dag_id: {dag}}}, period: monthly, amount: '1000', currency: {currency},
     thresholds: [{{anomaly: {{run_cost_vs_median: 2, last_runs: 5}}}}]}}
  - {{name: bucket, scope: {{storage: '{bucket}'}}, period: monthly, amount: '1000', currency: USD}}
"""


def test_a_second_budgets_file_of_the_same_keys_reads_its_own_values(engine):
    """The batch's SQL text is kept per dialect and shape (which scope keys, how many ranges): the
    values of a scope, a run rule's currency and a storage glob are its parameters. A second budgets
    file whose scopes have the same keys and other values reuses the first file's text, and reads
    its own scopes, as a process that never saw the first file does."""
    from tests.unit.budgets.test_storage import import_storage, storage_cost

    who = {
        "a": {"team": "a", "tags": ("t",), "labels": (("env", "prod"),)},
        "b": {"team": "b", "tags": ("u",), "labels": (("env", "dev"),)},
    }
    for offset in range(5, 0, -1):
        keep(engine, cost("d", "t", f"a{offset}", NOW - offset * DAY, [line("x", "1")], **who["a"]))
        keep(engine, cost("e", "t", f"b{offset}", NOW - offset * DAY, [line("x", "10")], **who["b"]))
    keep(engine, cost("d", "t", "a-now", NOW - dt.timedelta(minutes=3), [line("x", "5")], **who["a"]))
    keep(
        engine,
        cost(
            "e",
            "t",
            "b-now",
            NOW - dt.timedelta(minutes=3),
            [line("x", "50"), line("y", "7", "EUR")],
            **who["b"],
        ),
    )
    import_storage(
        engine,
        [storage_cost(dt.date(2026, 12, 3), "raw-a", "2"), storage_cost(dt.date(2026, 12, 3), "raw-b", "3")],
    )
    first_file = parse_budgets(
        SAME_KEYS.format(team="a", tag="t", env="prod", dag="d", currency="USD", bucket="raw-a*"), "a.yaml"
    )
    second_file = parse_budgets(
        SAME_KEYS.format(team="b", tag="u", env="dev", dag="e", currency="EUR", bucket="raw-b*"), "b.yaml"
    )
    evaluation._part_sql.cache_clear()
    evaluation._sums_statement.cache_clear()
    first = evaluate_all(engine, first_file, NOW, run=("d", "a-now"), contributors=False)
    compiled = evaluation._part_sql.cache_info().misses
    second = evaluate_all(engine, second_file, NOW, run=("e", "b-now"), contributors=False)
    assert evaluation._part_sql.cache_info().misses == compiled  # nothing compiled for the second file
    assert evaluation._sums_statement.cache_info().hits >= 1
    spent = [(s.budget.name, s.spent) for s in first]
    assert spent == [
        ("team", {"USD": Decimal(10)}),
        ("tag", {"USD": Decimal(10)}),
        ("label", {"USD": Decimal(10)}),  # the week from Monday the 14th: the last five days and today
        ("runs", {"USD": Decimal(10)}),
        ("bucket", {"USD": Decimal(2)}),
    ]
    assert [(s.budget.name, s.spent) for s in second] == [
        ("team", {"EUR": Decimal(7), "USD": Decimal(100)}),
        ("tag", {"EUR": Decimal(7), "USD": Decimal(100)}),
        ("label", {"EUR": Decimal(7), "USD": Decimal(100)}),
        ("runs", {"EUR": Decimal(7), "USD": Decimal(100)}),
        ("bucket", {"USD": Decimal(3)}),
    ]
    # run d/a-now: 5 against a median of 1 in USD; run e/b-now: no earlier run in EUR to judge by
    assert [a.key for a in first[3].anomalies] == ["anomaly:run:d/a-now"]
    assert second[3].anomalies == []
    evaluation._part_sql.cache_clear()
    evaluation._sums_statement.cache_clear()
    settled.clear()
    assert evaluate_all(engine, second_file, NOW, run=("e", "b-now"), contributors=False) == second


def test_a_new_task_process_takes_the_statement_from_the_cache_folder(engine, tmp_path, monkeypatch):
    """What one process compiled, the next reads from the cache folder: it compiles nothing and
    answers the same. A file written by other code (another stamp of the files that write the
    statement) or a torn one is compiled again and written over."""
    folder = tmp_path / "cost_cache"
    monkeypatch.setattr(evaluation, "_sql_cache_dir", lambda: str(folder))
    budgets = parse_budgets(LATER_BUDGETS, "b.yaml")  # tags, labels, zones, storage and a run rule
    who = {"team": "a", "tags": ("t",), "labels": (("env", "prod"),)}
    for offset in range(8, 0, -1):
        keep(
            engine, cost("d", "t", f"r{offset}", NOW - offset * DAY, [line("x", "1"), line("y", "2")], **who)
        )
    keep(engine, cost("d", "t", "today", NOW - dt.timedelta(minutes=3), [line("x", "9")], **who))
    run = ("d", "today")
    compiled: list[tuple] = []
    original = evaluation._compiled_part
    monkeypatch.setattr(
        evaluation, "_compiled_part", lambda *shape: compiled.append(shape) or original(*shape)
    )

    def new_process():
        settled.clear()
        compiled.clear()
        for cached in (evaluation._part_sql, evaluation._sums_statement, evaluation._kept_parts):
            cached.cache_clear()

    new_process()
    first = evaluate_all(engine, budgets, NOW, run=run)
    assert compiled and [path.name for path in folder.iterdir()] == [
        f"budget_sql-{engine.dialect.name}-{engine.dialect.driver}.json"
    ]
    new_process()
    assert evaluate_all(engine, budgets, NOW, run=run) == first
    assert compiled == []
    monkeypatch.setattr(evaluation, "_code_stamp", lambda: "evaluate.py:1:2")  # the code changed
    new_process()
    assert evaluate_all(engine, budgets, NOW, run=run) == first
    assert compiled
    new_process()
    assert evaluate_all(engine, budgets, NOW, run=run) == first
    assert compiled == []  # written over for the new code
    next(folder.iterdir()).write_text('{"key": ')
    new_process()
    assert evaluate_all(engine, budgets, NOW, run=run) == first
    assert compiled
    # team-ny: the week from Monday the 14th, New York time; tag-kolkata: today; dag-source: x only
    assert [status.spent_amount for status in first] == [33, 6 * 3 + 9, 33, 33, 9, 8 + 9]
